//! One-to-many: a character-level language model trained with truncated BPTT, then sampled.
//!
//! ```text
//! cargo run --example char_rnn -- [--text FILE | --data-dir D] [--cell lstm|gru|rnn]
//!     [--hidden 256] [--layers 1] [--batch-size 32] [--bptt 100] [--epochs 1] [--lr 2e-3]
//!     [--clip-grad-norm 1] [--prompt "a man"] [--temperature 0.8] [--out DIR] [--resume DIR]
//! cargo run --example char_rnn -- sample --model DIR [--prompt "two dogs"] [--length 300] [--temperature 0.8]
//! ```
//!
//! The default text is the English side of Multi30k train (`<data-dir>/multi30k/train.en.gz`);
//! the last 5 % of the text is held out for validation. Prints validation perplexity
//! (exp of the per-character loss) and a sample; saves the model, `vocab.json`, metrics and
//! curves with neka's training loop.

//!
//! `main.rs` parses the command line and samples; [`train`] trains.

mod train;

use anyhow::Result;
use clap::{Args, Subcommand};
use neka_common::device::DeviceRequest;
use neka_lstm::char_lm::CharLm;
use std::path::PathBuf;

neka::use_mimalloc!();

/// `char_rnn [train flags]` or `char_rnn sample …`.
type Cli = neka::cli::TrainOr<train::Train, Command>;

#[derive(Subcommand)]
enum Command {
    /// Generate text from a trained model.
    Sample(SampleArgs),
}

#[derive(Args)]
pub struct Sampling {
    #[arg(long, default_value = "a man")]
    pub prompt: String,
    #[arg(long, default_value_t = 300)]
    pub length: usize,
    #[arg(long, default_value_t = 0.8, value_parser = neka::cli::temperature)]
    pub temperature: f64,
}

#[derive(Args)]
struct SampleArgs {
    /// Model directory written by training.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    sample: Sampling,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
}

fn main() -> std::process::ExitCode {
    neka::cli::main(run)
}

fn run() -> Result<()> {
    let cli = Cli::parse_about(
        "Character-level RNN/LSTM language model: train with truncated BPTT, sample",
    );
    match cli.command {
        None => train::run(cli.train),
        Some(Command::Sample(a)) => {
            let device = a.device.device()?;
            neka_common::rng::seed(a.seed);
            let (model, vocab) = CharLm::load(&a.model, &device)?;
            let s = &a.sample;
            println!(
                "{}",
                model.sample(&vocab, &s.prompt, s.length, s.temperature)?
            );
            Ok(())
        }
    }
}
