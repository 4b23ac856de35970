//! `mnist_cnn` (no subcommand): train a CNN, keep the best epoch, score it on the test set.

use anyhow::Result;
use clap::Args;
use neka::cli::TrainArgs;
use neka_cnn::CnnModel;

#[derive(Args)]
pub struct Train {
    /// The network, one of neka_cnn::MODEL_NAMES: mnist-net (pytorch/examples' Net), lenet5 or
    /// resnet (a small ResNet with batch norm and skip connections).
    #[arg(long, default_value = "mnist-net", value_parser = neka_cnn::MODEL_NAMES)]
    model: String,
    #[command(flatten)]
    data: neka::cli::VisionFlags,
    #[command(flatten)]
    run: TrainArgs,
}

pub fn run(a: Train) -> Result<()> {
    let device = a.run.start()?;
    let splits = a.data.splits(&a.run, &device)?;
    println!(
        "{}; device {}",
        splits.describe(),
        neka_common::device::device_name(&device)
    );
    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, candle_core::DType::F32, &device);
    let classes = a.data.dataset.class_names();
    let (model, cfg_json) = CnnModel::from_name(&a.model, 1, splits.rows, classes.len(), vb)?;
    println!("\n{}\n", CnnModel::summary_for(&a.model, &cfg_json)?);

    let mut info = splits.record(&a.model, &cfg_json, a.data.val_size)?;
    info.data.insert("dry_run".into(), a.run.dry_run.into());
    let cfg = a.run.to_train_config(neka_cnn::default_train_config())?;
    let default_out = format!("runs/mnist_cnn/{}-{}", a.model, a.data.dataset);
    let mut trainer = a.run.trainer(cfg, &varmap, info, default_out)?;
    let out = trainer.out_dir().to_path_buf();
    let (report, test) = neka::cli::fit_image_classifier(&mut trainer, &model, &splits)?;
    println!(
        "test accuracy {:.2}% ({} images), best validation accuracy {:.2}% at epoch {}",
        100.0 * test.accuracy,
        test.count,
        100.0 * report.best_val_accuracy.unwrap_or(f64::NAN),
        report.best_epoch.unwrap_or(0)
    );
    println!(
        "weights: {0}/model.safetensors, config: {0}/config.json, metrics: {0}/metrics.jsonl and metrics.csv, plot: {0}/curves.png",
        out.display()
    );
    neka::cli::print_json(
        &serde_json::json!({"model": a.model, "dataset": a.data.dataset.name(), "split": "test", "samples": test.count, "accuracy": test.accuracy, "out": out}),
    );
    Ok(())
}
