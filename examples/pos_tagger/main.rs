//! Many-to-many on real data: part-of-speech tagging of UD English EWT with a word + char
//! BiLSTM tagger (or the same tagger with an Elman RNN / GRU).
//!
//! ```text
//! cargo run --example pos_tagger -- train [--cell lstm|rnn|gru] [--data-dir D] [--epochs N] [--out DIR] …
//! cargo run --example pos_tagger -- eval [--model DIR | --model-id ORG/NAME] (--conllu FILE | --split test [--data-dir D])
//! cargo run --example pos_tagger -- tag [--model DIR | --model-id ORG/NAME] "Sentence to tag."
//! ```
//!
//! `train` trains on EWT train, keeps the best epoch by dev UPOS accuracy (early stopping with
//! `--patience`), reports dev and test accuracy and saves weights, vocabularies, config,
//! metrics and curves. `eval` prints per-tag precision / recall / F1, writes a confusion-matrix
//! PNG, and its last line is JSON. `tag` tags sentences given as arguments or, without
//! arguments, one per line on stdin.
//!
//! `main.rs` parses the command line; [`train`] trains, [`infer`] uses a saved tagger.

mod eval;
mod infer;
mod train;

use anyhow::Result;
use clap::Parser;

neka::use_mimalloc!();

#[derive(Parser)]
#[command(about = "Part-of-speech tagging on UD English EWT with a BiLSTM (or RNN / GRU) tagger")]
enum Command {
    /// Train on EWT train, early-stop on dev, report dev and test UPOS accuracy.
    Train(Box<train::Train>),
    /// UPOS accuracy, per-tag precision / recall / F1 and a confusion matrix on a CoNLL-U file.
    Eval(eval::Eval),
    /// Tag sentences (arguments, or lines on stdin) and print word/TAG pairs.
    Tag(infer::Tag),
    /// Draw the sentence LSTM's forget / input / output gates and cell state over a sentence.
    Gates(infer::Gates),
}

fn main() -> std::process::ExitCode {
    neka::cli::main(run)
}

fn run() -> Result<()> {
    match neka::cli::parse_training::<Command>() {
        Command::Train(a) => train::run(*a),
        Command::Eval(a) => eval::eval(a),
        Command::Tag(a) => infer::tag(a),
        Command::Gates(a) => infer::gates(a),
    }
}
