//! The lecture's claim, measured: an Elman RNN cannot carry information over many steps
//! because BPTT multiplies `T` Jacobians `diag(tanh') W`, so ∂L/∂h_t vanishes as `t` moves
//! away from the loss; the LSTM's additive cell state keeps it alive. And: gradients can also
//! *explode*, which gradient-norm clipping tames.
//!
//! ```text
//! cargo run --example vanishing_gradients -- [--lengths 10,20,50,100,200] [--hidden 32]
//!     [--epochs 10] [--grad-length 100] [--clip-length 50] [--out runs/vanishing_gradients]
//! ```
//!
//! The task ("remember the first token"), the experiments and what they write to `--out`
//! are in [`neka_lecture::vanishing`]; this launcher parses the flags and runs them.

use anyhow::Result;
use clap::Parser;
use neka_lecture::vanishing::{self, Settings};
use neka_lstm::CellType;
use std::path::PathBuf;

neka::use_mimalloc!();

#[derive(Parser)]
#[command(about = "Vanishing and exploding gradients in RNNs vs LSTMs, measured")]
struct Args {
    /// Sequence lengths T to train on.
    #[arg(long, value_delimiter = ',', default_value = "10,20,50,100,200", value_parser = neka::cli::at_least_one)]
    lengths: Vec<usize>,
    /// Distinct distractor symbols (1 = a single "blank").
    #[arg(long, default_value_t = 6)]
    distractors: usize,
    /// Cells to compare.
    #[arg(long, value_delimiter = ',', default_value = "rnn,lstm")]
    cells: Vec<CellType>,
    #[arg(long, default_value_t = 32)]
    hidden: usize,
    /// Initial forget-gate bias of the LSTM: a number (1.0 is the remedy of Gers et al. and
    /// Jozefowicz et al.: remember by default) or `chrono` (Tallec & Ollivier 2018:
    /// b_f = log U(1, T−1), b_i = −b_f, so gate time constants span 1 … T steps). Unset:
    /// `pytorch`: PyTorch's init.
    #[arg(long, default_value = "chrono")]
    forget_bias: String,
    #[arg(long, default_value_t = 8000)]
    train_size: usize,
    #[arg(long, default_value_t = 1000)]
    test_size: usize,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// T at which ‖∂L/∂h_t‖ is measured (must be one of --lengths).
    #[arg(long, default_value_t = 100, value_parser = neka::cli::at_least_one)]
    grad_length: usize,
    /// T of the clipping experiment.
    #[arg(long, default_value_t = 50)]
    clip_length: usize,
    /// W_hh = gain · I at the start of the clipping experiment.
    #[arg(long, default_value_t = 1.0)]
    clip_gain: f64,
    /// SGD learning rate of the clipping experiment.
    #[arg(long, default_value_t = 3e-3)]
    clip_lr: f64,
    /// Epochs of the clipping experiment.
    #[arg(long, default_value_t = 4)]
    clip_epochs: usize,
    /// Which experiments: all, lengths (accuracy and gradient norms) or clipping.
    #[arg(long, default_value = "all", value_parser = ["all", "lengths", "clipping"])]
    part: String,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "runs/vanishing_gradients")]
    out: PathBuf,
}

fn main() -> std::process::ExitCode {
    neka::cli::main(run)
}

fn run() -> Result<()> {
    let a = Args::parse();
    anyhow::ensure!(a.distractors >= 1, "--distractors must be at least 1");
    let s = Settings {
        lengths: a.lengths,
        distractors: a.distractors,
        cells: a.cells,
        hidden: a.hidden,
        forget_bias: a.forget_bias,
        train_size: a.train_size,
        test_size: a.test_size,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        grad_length: a.grad_length,
        clip_length: a.clip_length,
        clip_gain: a.clip_gain,
        clip_lr: a.clip_lr,
        clip_epochs: a.clip_epochs,
        seed: a.seed,
        out: a.out,
    };
    std::fs::create_dir_all(&s.out)?;
    let mut log = |line: String| println!("{line}");
    if a.part != "clipping" {
        vanishing::lengths_experiment(&s, &mut log)?;
    }
    if a.part != "lengths" {
        vanishing::clipping_experiment(&s, &mut log)?;
    }
    println!("wrote to {}", s.out.display());
    Ok(())
}
