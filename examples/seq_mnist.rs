//! Many-to-one: MNIST read row by row (28 steps of 28 pixels) by an Elman RNN, LSTM or GRU.
//!
//! ```text
//! cargo run --example seq_mnist -- [--cell rnn|rnn-relu|lstm|gru] [--hidden 128] [--layers 1]
//!     [--bidirectional] [--dataset mnist|fashion-mnist] [--data-dir D] [--epochs 3] [--batch-size 64]
//!     [--lr 1e-3] [--clip-grad-norm 1] [--out DIR] [--resume DIR] [--dry-run]
//! ```
//!
//! Trains with neka's training loop (AdamW, validation split, keep-best, metrics, curves) and
//! reports test accuracy; the last line printed is JSON.

use anyhow::Result;
use clap::Parser;
use neka::cli::TrainArgs;
use neka_lstm::row_classifier::{self, Config, RowClassifier};
use neka_lstm::CellType;

neka::use_mimalloc!();

#[derive(Parser)]
#[command(about = "Classify MNIST read row by row with an RNN, LSTM or GRU (many-to-one)")]
struct Args {
    /// rnn (Elman, tanh), rnn-relu, lstm or gru.
    #[arg(long, default_value = "lstm")]
    cell: CellType,
    // --hidden (128), --layers (1), --dropout between layers (0)
    #[command(flatten)]
    rnn: neka::cli::RnnFlags,
    #[arg(long)]
    bidirectional: bool,
    #[command(flatten)]
    data: neka::cli::VisionFlags,
    #[command(flatten)]
    run: TrainArgs,
}

fn main() -> std::process::ExitCode {
    neka::cli::main(run)
}

fn run() -> Result<()> {
    let a: Args = neka::cli::parse_training();
    let device = a.run.start()?;
    let splits = a.data.splits(&a.run, &device)?;
    let base = Config {
        cell: a.cell,
        rows: splits.rows,
        cols: splits.cols,
        bidirectional: a.bidirectional,
        num_classes: a.data.dataset.class_names().len(),
        ..Config::default()
    };
    let cfg = neka::cli::config_with(base, &a.rnn)?;
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
    let info = splits.record(&name, &cfg, a.data.val_size)?;
    let train_cfg = a
        .run
        .to_train_config(row_classifier::default_train_config())?;
    let default_out = format!("runs/seq_mnist/{}-h{}", a.cell, cfg.hidden_size);
    let mut trainer = a.run.trainer(train_cfg, &varmap, info, default_out)?;
    let out = trainer.out_dir().to_path_buf();
    let (report, test) = neka::cli::fit_image_classifier(&mut trainer, &model, &splits)?;
    let seconds = report.train_seconds();
    println!(
        "test accuracy {:.2}% ({} images) after {} epochs in {:.0} s; weights and metrics in {}",
        100.0 * test.accuracy,
        test.count,
        trainer.epochs_done(),
        seconds,
        out.display()
    );
    neka::cli::print_json(
        &serde_json::json!({"model": name, "hidden": cfg.hidden_size, "layers": cfg.num_layers,
            "bidirectional": cfg.bidirectional, "dataset": a.data.dataset.name(), "split": "test",
            "samples": test.count, "accuracy": test.accuracy, "epochs": trainer.epochs_done(),
            "train_seconds": seconds, "out": out}),
    );
    Ok(())
}
