//! Many-to-one: MNIST read row by row (28 steps of 28 pixels) by an Elman RNN, LSTM or GRU.
//!
//! ```text
//! cargo run --release --example seq_mnist -- [--cell rnn|rnn-relu|lstm|gru] [--hidden 128] [--layers 1]
//!     [--bidirectional] [--dataset mnist|fashion-mnist] [--data-dir D] [--epochs 3] [--batch-size 64]
//!     [--lr 1e-3] [--clip-grad-norm 1] [--out DIR] [--resume DIR] [--dry-run]
//! ```
//!
//! Trains with neka's training loop (AdamW, validation split, keep-best, metrics, curves) and
//! reports test accuracy; the last line printed is JSON.

use anyhow::Result;
use clap::Parser;
use neka::cli::TrainArgs;
use neka_common::data::{vision, VisionDatasetKind};
use neka_common::train::Classifier;
use neka_lstm::row_classifier::{self, Config, RowClassifier};
use neka_lstm::CellType;
use std::path::PathBuf;

neka::use_mimalloc!();

#[derive(Parser)]
#[command(about = "Classify MNIST read row by row with an RNN, LSTM or GRU (many-to-one)")]
struct Args {
    /// rnn (Elman, tanh), rnn-relu, lstm or gru.
    #[arg(long, default_value = "lstm")]
    cell: CellType,
    /// Hidden size per direction [default: the model's, 128].
    #[arg(long)]
    hidden: Option<usize>,
    /// Recurrent layers [default: the model's, 1].
    #[arg(long)]
    layers: Option<usize>,
    #[arg(long)]
    bidirectional: bool,
    /// Dropout between recurrent layers [default: the model's, 0].
    #[arg(long)]
    dropout: Option<f32>,
    #[arg(long, default_value = "mnist")]
    dataset: VisionDatasetKind,
    /// Data root holding mnist/ (default: $NEKA_DATA_DIR, else the Hugging Face Hub).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 5000)]
    val_size: usize,
    #[command(flatten)]
    run: TrainArgs,
}

fn main() -> Result<()> {
    neka::cli::init();
    let a = Args::parse();
    let device = a.run.start()?;
    let data = vision::load(a.dataset, a.data_dir.as_deref())?;
    let splits = data.splits(a.val_size, a.run.seed, a.run.dry_run, &device)?;
    let d = Config::default();
    let cfg = Config {
        cell: a.cell,
        rows: splits.rows,
        cols: splits.cols,
        hidden_size: a.hidden.unwrap_or(d.hidden_size),
        num_layers: a.layers.unwrap_or(d.num_layers),
        bidirectional: a.bidirectional,
        dropout: a.dropout.unwrap_or(d.dropout),
        num_classes: a.dataset.class_names().len(),
    };
    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, candle_core::DType::F32, &device);
    let model = RowClassifier::new(cfg, vb)?;
    println!(
        "{}; {} {}×{} (layers {}, bidirectional {}), {} parameters; device {}",
        splits.counts(),
        a.cell,
        cfg.rows,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.bidirectional,
        neka::cli::param_count(&varmap),
        neka_common::device::device_name(&device)
    );
    let name = format!("row-{}", a.cell);
    let info = splits.record(&name, &cfg, a.val_size)?;
    let train_cfg = a
        .run
        .to_train_config(row_classifier::default_train_config())?;
    let out = a
        .run
        .out_dir(|| format!("runs/seq_mnist/{}-h{}", a.cell, cfg.hidden_size).into());
    let mut trainer = a.run.trainer(train_cfg, &varmap, info, &out)?;
    let model = Classifier(&model);
    let (report, test) = neka::cli::fit_and_test(
        &mut trainer,
        &model,
        &splits.train,
        &splits.val,
        &splits.test,
    )?;
    let seconds = report.train_seconds();
    println!(
        "test accuracy {:.2}% ({} images) after {} epochs in {:.0} s; weights and metrics in {}",
        100.0 * test.accuracy,
        test.count,
        trainer.epochs_done(),
        seconds,
        out.display()
    );
    println!(
        "{}",
        serde_json::json!({"model": name, "hidden": cfg.hidden_size, "layers": cfg.num_layers,
            "bidirectional": cfg.bidirectional, "dataset": a.dataset.name(), "split": "test",
            "samples": test.count, "accuracy": test.accuracy, "epochs": trainer.epochs_done(),
            "train_seconds": seconds, "out": out})
    );
    Ok(())
}
