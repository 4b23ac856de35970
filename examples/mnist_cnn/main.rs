//! The main job: train a CNN on MNIST or Fashion-MNIST, evaluate it, classify your images.
//!
//! ```text
//! cargo run --example mnist_cnn -- [--model mnist-net|lenet5|resnet] [--dataset mnist|fashion-mnist]
//!     [--data-dir D] [--epochs N] [--batch-size B] [--lr X] [--optimizer adamw|sgd|adadelta]
//!     [--schedule constant|step[:N[:GAMMA]]|cosine] [--seed S] [--device D] [--out DIR] [--resume DIR] [--dry-run]
//! cargo run --example mnist_cnn -- eval --model DIR [--dataset …] [--data-dir D]
//! cargo run --example mnist_cnn -- predict [--model DIR | --model-id ORG/NAME] img.png …
//! ```
//!
//! The program is split as burn's examples are: `main.rs` parses the command line,
//! [`train`] trains, [`infer`] evaluates and uses a saved model.

mod infer;
mod train;

use anyhow::Result;
use clap::Subcommand;

neka::use_mimalloc!();

/// `mnist_cnn [train flags]` or `mnist_cnn eval|predict|inspect …`.
type Cli = neka::cli::TrainOr<train::Train, Command>;

#[derive(Subcommand)]
enum Command {
    /// Test-set accuracy of a saved model; the last line printed is JSON.
    Eval(infer::Eval),
    /// Classify image files (PNG/JPEG, any size) and print the top 3 classes.
    Predict(infer::Predict),
    /// Draw conv1's learned filters and the feature maps of one image after each layer.
    Inspect(infer::Inspect),
}

fn main() -> std::process::ExitCode {
    neka::cli::main(run)
}

fn run() -> Result<()> {
    let cli = Cli::parse_about("Train, evaluate and use CNNs on MNIST / Fashion-MNIST");
    match cli.command {
        None => train::run(cli.train),
        Some(Command::Eval(a)) => infer::eval(a),
        Some(Command::Predict(a)) => infer::predict(a),
        Some(Command::Inspect(a)) => infer::inspect(a),
    }
}
