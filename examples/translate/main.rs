//! seq2seq on Multi30k: train an encoder–decoder with attention, evaluate BLEU, translate.
//!
//! ```text
//! cargo run --example translate -- train [--src de --tgt en] [--cell lstm|gru]
//!     [--attention none|bahdanau|luong|dot] [--epochs N] [--data-dir D] [--out DIR] …
//! cargo run --example translate -- eval [--model DIR | --model-id ORG/NAME] (--src-file F --ref-file F | --split test [--data-dir D])
//!     [--beam K (1-64)] [--hyp-out F --ref-out F]
//! cargo run --example translate -- run [--model DIR] [--attention-png FILE] "ein mann fährt fahrrad ."
//! ```
//!
//! `train` reports validation loss, perplexity and greedy BLEU per epoch, keeps the best epoch
//! (by validation perplexity; `--monitor val_bleu` for BLEU), then scores test_2016_flickr with
//! greedy and beam search. `eval`'s last line is JSON `{"sentences": N, "bleu": x, "beam": k}`;
//! BLEU is corpus BLEU-4 on lowercased tokens (equal to `sacrebleu --tokenize none` on the
//! same token files).
//!
//! `main.rs` parses the command line; [`data`] reads the corpora, [`train`] trains, [`infer`]
//! uses a saved translator.

mod data;
mod eval;
mod infer;
mod train;

use anyhow::Result;
use clap::Parser;

neka::use_mimalloc!();

#[derive(Parser)]
#[command(about = "Encoder-decoder translation with attention on Multi30k")]
enum Command {
    /// Train on Multi30k (or any line-aligned files), report validation perplexity and BLEU.
    Train(Box<train::Train>),
    /// Corpus BLEU of a model on a source file against a reference file.
    Eval(eval::Eval),
    /// Translate sentences (arguments, or lines on stdin).
    Run(infer::Run),
}

fn main() -> std::process::ExitCode {
    neka::cli::main(run)
}

fn run() -> Result<()> {
    match neka::cli::parse_training::<Command>() {
        Command::Train(a) => train::run(*a),
        Command::Eval(a) => eval::eval(a),
        Command::Run(a) => infer::run(a),
    }
}
