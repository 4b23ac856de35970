//! The main job: train a CNN on MNIST or Fashion-MNIST, evaluate it, classify your images.
//!
//! ```text
//! cargo run --release --example mnist_cnn -- [--model mnist-net|lenet5] [--dataset mnist|fashion-mnist]
//!     [--data-dir D] [--epochs N] [--batch-size B] [--lr X] [--optimizer adamw|sgd|adadelta]
//!     [--schedule constant|step[:N[:GAMMA]]|cosine] [--seed S] [--device D] [--out DIR] [--resume DIR] [--dry-run]
//! cargo run --release --example mnist_cnn -- eval --model DIR [--dataset …] [--data-dir D]
//! cargo run --release --example mnist_cnn -- predict [--model DIR | --model-id ORG/NAME] img.png …
//! ```

use anyhow::{bail, Context, Result};

// candle allocates a fresh buffer for every tensor; glibc malloc returns large ones to the OS
// and page-faults them back in on every step. mimalloc caches them (≈1.4× faster training here).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use candle_core::DType;
use clap::{Args, Parser, Subcommand};
use neka_cnn::pipeline::LoadedModel;
use neka_cnn::CnnModel;
use neka_common::checkpoint::CheckpointInfo;
use neka_common::data::{vision, VisionDatasetKind};
use neka_common::device::DeviceRequest;
use neka_common::optim::{LrSchedule, OptimizerConfig};
use neka_common::train::{evaluate, Classifier, TrainConfig, Trainer};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    about = "Train, evaluate and use CNNs on MNIST / Fashion-MNIST",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Test-set accuracy of a saved model; the last line printed is JSON.
    Eval(EvalArgs),
    /// Classify image files (PNG/JPEG, any size) and print the top 3 classes.
    Predict(PredictArgs),
    /// Draw conv1's learned filters and the feature maps of one image after each layer.
    Inspect(InspectArgs),
}

#[derive(Args)]
struct TrainArgs {
    /// mnist-net (pytorch/examples' Net), lenet5 or resnet (a small ResNet with batch norm).
    #[arg(long, default_value = "mnist-net", value_parser = neka_cnn::MODEL_NAMES)]
    model: String,
    /// mnist or fashion-mnist.
    #[arg(long, default_value = "mnist")]
    dataset: VisionDatasetKind,
    /// Data root holding mnist/ and fashion-mnist/ (default: $NEKA_DATA_DIR, else the Hugging Face Hub).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Learning rate (default: 1e-3 for adamw, 0.05 for sgd, 1.0 for adadelta).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value = "adamw")]
    optimizer: String,
    /// constant, step[:STEP_SIZE[:GAMMA]] or cosine[:T_MAX], per epoch.
    #[arg(long, default_value = "constant")]
    schedule: String,
    /// Clip the global gradient norm to this value.
    #[arg(long)]
    clip_grad_norm: Option<f64>,
    /// Stop after this many epochs without a better validation accuracy.
    #[arg(long)]
    patience: Option<usize>,
    /// Training images held out for validation (seeded).
    #[arg(long, default_value_t = 5000)]
    val_size: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// Output directory (default runs/mnist_cnn/<model>-<dataset>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run saved in this directory (weights, optimizer, epoch, RNG state).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Run a handful of batches end to end (1 epoch, small subsets), for CI.
    #[arg(long)]
    dry_run: bool,
    /// Train on at most this many batches per epoch.
    #[arg(long)]
    max_batches: Option<usize>,
}

#[derive(Args)]
struct EvalArgs {
    /// Model directory (model.safetensors + config.json).
    #[arg(long, default_value = "models/mnist-cnn")]
    model: PathBuf,
    /// Hugging Face Hub model id (ORG/NAME) instead of --model.
    #[arg(long)]
    model_id: Option<String>,
    /// Dataset to evaluate on (default: the one the model was trained on).
    #[arg(long)]
    dataset: Option<VisionDatasetKind>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
}

#[derive(Args)]
struct PredictArgs {
    /// Model directory (model.safetensors + config.json).
    #[arg(long, default_value = "models/mnist-cnn")]
    model: PathBuf,
    /// Hugging Face Hub model id (ORG/NAME) instead of --model.
    #[arg(long)]
    model_id: Option<String>,
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// Image files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Args)]
struct InspectArgs {
    #[arg(long, default_value = "models/mnist-cnn")]
    model: PathBuf,
    #[arg(long)]
    model_id: Option<String>,
    /// An image file (PNG/JPEG); without one, test image --index of the model's dataset.
    image: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    index: usize,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Folder for conv1_filters.png and feature_maps.png.
    #[arg(long, default_value = "runs/mnist_cnn/inspect")]
    out: PathBuf,
    /// Feature maps shown per layer.
    #[arg(long, default_value_t = 8)]
    maps: usize,
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
}

fn main() -> Result<()> {
    neka::cli::quiet_broken_pipe();
    neka::alloc::keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        None => train(cli.train),
        Some(Command::Eval(a)) => eval(a),
        Some(Command::Predict(a)) => predict(a),
        Some(Command::Inspect(a)) => inspect(a),
    }
}

fn default_lr(optimizer: &str) -> f64 {
    match optimizer {
        "sgd" => 0.05,
        "adadelta" => 1.0,
        _ => 1e-3,
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let device = a.device.device()?;
    neka_common::rng::seed(a.seed);
    let data = vision::load(a.dataset, a.data_dir.as_deref())?;
    let (mut train_set, mut val_set) = data.split_validation(a.val_size, a.seed)?;
    let mut test_set = data.test.clone();
    let mut epochs = a.epochs;
    if a.dry_run {
        let take = |n: usize, len: usize| (0..n.min(len)).collect::<Vec<_>>();
        train_set = train_set.select(&take(640, train_set.len()));
        val_set = val_set.select(&take(500, val_set.len()));
        test_set = test_set.select(&take(1000, test_set.len()));
        epochs = 1;
    }
    let norm = data.normalize_for(&train_set);
    println!(
        "{}: {} train / {} validation / {} test images from {}; normalize mean {:?} std {:?}; device {}",
        a.dataset,
        train_set.len(),
        val_set.len(),
        test_set.len(),
        data.source,
        norm.mean,
        norm.std,
        neka_common::device::device_name(&device)
    );
    let train_ds = train_set.to_dataset(&norm, &device)?;
    let val_ds = val_set.to_dataset(&norm, &device)?;
    let test_ds = test_set.to_dataset(&norm, &device)?;

    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, &device);
    let (rows, classes) = (data.train.images.rows, data.kind.class_names());
    let (model, cfg_json) = CnnModel::from_name(&a.model, 1, rows, classes.len(), vb)?;
    println!("\n{}\n", CnnModel::summary_for(&a.model, &cfg_json)?);

    let mut info = CheckpointInfo::new(&a.model, &cfg_json, a.dataset.name())?;
    info.normalize = Some(norm);
    info.classes = classes;
    info.data.insert("val_size".into(), a.val_size.into());
    info.data.insert("dry_run".into(), a.dry_run.into());
    let lr = a.lr.unwrap_or_else(|| default_lr(&a.optimizer));
    let cfg = TrainConfig {
        epochs,
        batch_size: a.batch_size,
        eval_batch_size: 1000,
        optimizer: OptimizerConfig::from_name(&a.optimizer, lr)?,
        schedule: LrSchedule::parse(&a.schedule, epochs)?,
        clip_grad_norm: a.clip_grad_norm,
        patience: a.patience,
        seed: a.seed,
        max_batches_per_epoch: if a.dry_run { Some(5) } else { a.max_batches },
        progress: true,
        verbose: true,
        handle_ctrl_c: true,
        log_steps: false,
    };
    let out = a
        .out
        .clone()
        .or_else(|| a.resume.clone())
        .unwrap_or_else(|| PathBuf::from(format!("runs/mnist_cnn/{}-{}", a.model, a.dataset)));
    let mut trainer = Trainer::new(cfg, &varmap, info, &out)?;
    if let Some(dir) = &a.resume {
        trainer.resume(dir)?;
        println!(
            "resumed from {} after epoch {}",
            dir.display(),
            trainer.epochs_done()
        );
    }
    let Some((report, test)) =
        trainer.fit_and_test(&Classifier(&model), &train_ds, Some(&val_ds), &test_ds)?
    else {
        neka::cli::exit_interrupted(); // the checkpoint is saved for --resume
    };
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
    println!(
        "{}",
        serde_json::json!({"model": a.model, "dataset": a.dataset.name(), "split": "test", "samples": test.count, "accuracy": test.accuracy, "out": out})
    );
    Ok(())
}

fn model_dir(model: &Path, model_id: Option<&str>) -> Result<PathBuf> {
    match model_id {
        #[cfg(feature = "hub")]
        Some(id) => Ok(neka_common::hub::model_dir(id, None)?),
        #[cfg(not(feature = "hub"))]
        Some(_) => bail!("--model-id needs the `hub` feature (on by default; you built with --no-default-features)"),
        None => Ok(model.to_path_buf()),
    }
}

fn eval(a: EvalArgs) -> Result<()> {
    let device = a.device.device()?;
    let dir = model_dir(&a.model, a.model_id.as_deref())?;
    let loaded = LoadedModel::load(&dir, &device)?;
    let kind: VisionDatasetKind = match a.dataset {
        Some(k) => k,
        None => loaded
            .info
            .dataset
            .parse()
            .with_context(|| format!("{}: unknown dataset in config.json", dir.display()))?,
    };
    let data = vision::load(kind, a.data_dir.as_deref())?;
    let size = loaded.image_size() as usize;
    let (rows, cols) = (data.test.images.rows, data.test.images.cols);
    if (rows, cols) != (size, size) {
        bail!(
            "{} holds {rows}×{cols} images; the model in {} takes {size}×{size} (its image_size): \
             evaluate it on images of that size",
            data.source,
            dir.display()
        );
    }
    let test = data.test.to_dataset(&loaded.normalize()?, &device)?;
    let m = evaluate(&Classifier(&loaded.model), &test, a.batch_size)?;
    println!(
        "{} on {} test: loss {:.4}, accuracy {:.2}%",
        dir.display(),
        kind,
        m.loss,
        100.0 * m.accuracy
    );
    println!(
        "{}",
        serde_json::json!({"model": loaded.info.model, "dataset": kind.name(), "split": "test", "samples": m.count, "accuracy": m.accuracy})
    );
    Ok(())
}

fn predict(a: PredictArgs) -> Result<()> {
    let device = a.device.device()?;
    let dir = model_dir(&a.model, a.model_id.as_deref())?;
    let loaded = LoadedModel::load(&dir, &device)?;
    let norm = loaded.normalize()?;
    let size = loaded.image_size();
    let classes = &loaded.info.classes;
    let mut failed = false;
    for path in &a.images {
        let x = match neka_cnn::inspect::load_image(path, size, &norm) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
                continue;
            }
        };
        let probs: Vec<f32> = loaded.probabilities(&x)?.flatten_all()?.to_vec1()?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
        let top: Vec<String> = order
            .iter()
            .take(3)
            .map(|&i| {
                format!(
                    "{} {:.1}%",
                    classes.get(i).cloned().unwrap_or_else(|| i.to_string()),
                    100.0 * probs[i]
                )
            })
            .collect();
        println!("{}: {}", path.display(), top.join(", "));
    }
    if failed {
        bail!("some images could not be read");
    }
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<()> {
    let dir = model_dir(&a.model, a.model_id.as_deref())?;
    let loaded = LoadedModel::load(&dir, &a.device.device()?)?;
    let (x, what) = match &a.image {
        Some(p) => {
            let x = neka_cnn::inspect::load_image(p, loaded.image_size(), &loaded.normalize()?)?;
            (x, p.display().to_string())
        }
        None => loaded.test_image(a.index, a.data_dir.as_deref())?,
    };
    let title = neka_cnn::inspect::draw(&loaded, &x, &what, a.maps, &a.out)?;
    println!(
        "{title}\nwrote conv1_filters.png and feature_maps.png in {}",
        a.out.display()
    );
    Ok(())
}
