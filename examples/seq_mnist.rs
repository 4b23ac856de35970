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
use candle_core::DType;
use clap::Parser;
use neka_common::checkpoint::CheckpointInfo;
use neka_common::data::{vision, VisionDatasetKind};
use neka_common::device::DeviceRequest;
use neka_common::optim::{LrSchedule, OptimizerConfig};
use neka_common::train::{Classifier, TrainConfig, Trainer};
use neka_lstm::row_classifier::{Config, RowClassifier};
use neka_lstm::CellType;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Classify MNIST read row by row with an RNN, LSTM or GRU (many-to-one)")]
struct Args {
    /// rnn (Elman, tanh), rnn-relu, lstm or gru.
    #[arg(long, default_value = "lstm")]
    cell: CellType,
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    #[arg(long, default_value_t = 1)]
    layers: usize,
    #[arg(long)]
    bidirectional: bool,
    /// Dropout between recurrent layers.
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    #[arg(long, default_value = "mnist")]
    dataset: VisionDatasetKind,
    /// Data root holding mnist/ (default: $NEKA_DATA_DIR, else the Hugging Face Hub).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// constant, step[:STEP_SIZE[:GAMMA]] or cosine[:T_MAX], per epoch.
    #[arg(long, default_value = "constant")]
    schedule: String,
    /// Clip the global gradient norm to this value (0 = off).
    #[arg(long, default_value_t = 1.0, value_parser = neka::cli::clip_norm)]
    clip_grad_norm: f64,
    #[arg(long, default_value_t = 5000)]
    val_size: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// Output directory (default runs/seq_mnist/<cell>-h<hidden>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run saved in this directory.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Train on at most this many batches per epoch.
    #[arg(long)]
    max_batches: Option<usize>,
    /// A few batches end to end on small subsets, for CI.
    #[arg(long)]
    dry_run: bool,
}

fn main() -> Result<()> {
    neka::alloc::keep_freed_memory();
    let a = Args::parse();
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
    let train_ds = train_set.to_dataset(&norm, &device)?;
    let val_ds = val_set.to_dataset(&norm, &device)?;
    let test_ds = test_set.to_dataset(&norm, &device)?;

    let cfg = Config {
        cell: a.cell,
        rows: data.train.images.rows,
        cols: data.train.images.cols,
        hidden_size: a.hidden,
        num_layers: a.layers,
        bidirectional: a.bidirectional,
        dropout: a.dropout,
        num_classes: data.kind.class_names().len(),
    };
    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, &device);
    let model = RowClassifier::new(cfg, vb)?;
    let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    println!(
        "{}: {} train / {} validation / {} test images; {} {}×{} (layers {}, bidirectional {}), {} parameters; device {}",
        a.dataset,
        train_set.len(),
        val_set.len(),
        test_set.len(),
        a.cell,
        cfg.rows,
        a.hidden,
        a.layers,
        a.bidirectional,
        params,
        neka_common::device::device_name(&device)
    );
    let mut info = CheckpointInfo::new(&format!("row-{}", a.cell), &cfg, a.dataset.name())?;
    info.normalize = Some(norm);
    info.classes = data.kind.class_names();
    info.data.insert("val_size".into(), a.val_size.into());
    let train_cfg = TrainConfig {
        epochs,
        batch_size: a.batch_size,
        eval_batch_size: 1000,
        optimizer: OptimizerConfig::adamw(a.lr),
        schedule: LrSchedule::parse(&a.schedule, epochs)?,
        clip_grad_norm: (a.clip_grad_norm > 0.0).then_some(a.clip_grad_norm),
        patience: None,
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
        .unwrap_or_else(|| PathBuf::from(format!("runs/seq_mnist/{}-h{}", a.cell, a.hidden)));
    let mut trainer = Trainer::new(train_cfg, &varmap, info, &out)?;
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
    let seconds: f64 = report.history.iter().map(|m| m.seconds).sum();
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
        serde_json::json!({"model": format!("row-{}", a.cell), "hidden": a.hidden, "layers": a.layers,
            "bidirectional": a.bidirectional, "dataset": a.dataset.name(), "split": "test",
            "samples": test.count, "accuracy": test.accuracy, "epochs": trainer.epochs_done(),
            "train_seconds": seconds, "out": out})
    );
    Ok(())
}
