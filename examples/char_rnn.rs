//! One-to-many: a character-level language model trained with truncated BPTT, then sampled.
//!
//! ```text
//! cargo run --release --example char_rnn -- [--text FILE | --data-dir D] [--cell lstm|gru|rnn]
//!     [--hidden 256] [--layers 1] [--batch-size 32] [--bptt 100] [--epochs 1] [--lr 2e-3]
//!     [--clip-grad-norm 1] [--prompt "a man"] [--temperature 0.8] [--out DIR]
//! cargo run --release --example char_rnn -- sample --model DIR [--prompt "two dogs"] [--length 300] [--temperature 0.8]
//! ```
//!
//! The default text is the English side of Multi30k train (`<data-dir>/multi30k/train.en.gz`);
//! the last 5 % of the text is held out for validation. Prints validation perplexity
//! (exp of the per-character loss) and a sample; saves the model, `vocab.json`, metrics and
//! curves with neka's training loop.

use anyhow::{bail, Context, Result};
use candle_core::DType;
use clap::{Args, Parser, Subcommand};
use neka_common::checkpoint::{self, CheckpointInfo};
use neka_common::data::{text, vision, TokenStream};
use neka_common::device::DeviceRequest;
use neka_common::optim::{LrSchedule, OptimizerConfig};
use neka_common::train::{StopReason, TrainConfig, Trainer};
use neka_common::vocab::{Vocab, UNK};
use neka_lstm::char_lm::{CharLm, Config, Tbptt};
use neka_lstm::CellType;
use std::path::{Path, PathBuf};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    about = "Character-level RNN/LSTM language model: train with truncated BPTT, sample",
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
    /// Generate text from a trained model.
    Sample(SampleArgs),
}

#[derive(Args)]
struct TrainArgs {
    /// Text file to learn (plain or gzip). Default: multi30k/train.en[.gz] in the data dir.
    #[arg(long)]
    text: Option<PathBuf>,
    /// Data root holding multi30k/ (default: $NEKA_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// rnn (Elman, tanh), rnn-relu, lstm or gru.
    #[arg(long, default_value = "lstm")]
    cell: CellType,
    #[arg(long, default_value_t = 64)]
    embed: usize,
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    #[arg(long, default_value_t = 1)]
    layers: usize,
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Parallel streams per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Truncated-BPTT chunk length: gradients flow back at most this many characters.
    #[arg(long, default_value_t = 100)]
    bptt: usize,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Clip the global gradient norm to this value (0 = off).
    #[arg(long, default_value_t = 1.0, value_parser = neka::cli::clip_norm)]
    clip_grad_norm: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// Output directory (default runs/char_rnn/<cell>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Train on at most this many chunks per epoch.
    #[arg(long)]
    max_batches: Option<usize>,
    #[arg(long, default_value = "a man")]
    prompt: String,
    #[arg(long, default_value_t = 300)]
    length: usize,
    #[arg(long, default_value_t = 0.8, value_parser = neka::cli::temperature)]
    temperature: f64,
}

#[derive(Args)]
struct SampleArgs {
    /// Model directory written by training.
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value = "a man")]
    prompt: String,
    #[arg(long, default_value_t = 300)]
    length: usize,
    #[arg(long, default_value_t = 0.8, value_parser = neka::cli::temperature)]
    temperature: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
}

fn main() -> Result<()> {
    neka::cli::quiet_broken_pipe();
    neka::alloc::keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        None => train(cli.train),
        Some(Command::Sample(a)) => sample(a),
    }
}

fn text_path(a: &TrainArgs) -> Result<PathBuf> {
    if let Some(p) = &a.text {
        return Ok(p.clone());
    }
    let Some(root) = vision::data_root(a.data_dir.as_deref()) else {
        bail!("no text to learn: pass --text FILE, or --data-dir DIR (or NEKA_DATA_DIR) holding multi30k/train.en.gz")
    };
    text::find_file(&root.join("multi30k"), "train.en").with_context(|| {
        format!(
            "{}: no train.en or train.en.gz; pass --text FILE",
            root.join("multi30k").display()
        )
    })
}

fn train(a: TrainArgs) -> Result<()> {
    let device = a.device.device()?;
    neka_common::rng::seed(a.seed);
    let path = text_path(&a)?;
    let content = text::read_to_string(&path)?;
    let chars: Vec<String> = content.chars().map(String::from).collect();
    if chars.len() < 1000 {
        bail!(
            "{}: only {} characters; give a longer text",
            path.display(),
            chars.len()
        );
    }
    let vocab = Vocab::build(&chars, 1, &[UNK]);
    let ids: Vec<u32> = chars
        .iter()
        .map(|c| vocab.id(c).expect("built from this text"))
        .collect();
    let split = ids.len() * 95 / 100;
    let train_ds = TokenStream::new(&ids[..split], a.batch_size, a.bptt, &device)?;
    let val_ds = TokenStream::new(&ids[split..], a.batch_size, a.bptt, &device)?;
    println!(
        "{}: {} characters ({} distinct), {} for training in {} streams × {} chunks of {}",
        path.display(),
        ids.len(),
        vocab.len() - 1,
        split,
        a.batch_size,
        neka_common::data::Dataset::len(&train_ds),
        a.bptt
    );
    let cfg = Config {
        cell: a.cell,
        vocab_size: vocab.len(),
        embed_dim: a.embed,
        hidden_size: a.hidden,
        num_layers: a.layers,
        dropout: a.dropout,
    };
    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, &device);
    let model = CharLm::new(cfg, vb)?;
    let mut info = CheckpointInfo::new(
        &format!("char-{}", a.cell),
        &cfg,
        &path.display().to_string(),
    )?;
    info.files.insert("vocab.json".into(), vocab.to_json());
    info.data.insert("bptt".into(), a.bptt.into());
    let train_cfg = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        eval_batch_size: a.batch_size,
        optimizer: OptimizerConfig::adamw(a.lr),
        schedule: LrSchedule::Constant,
        clip_grad_norm: (a.clip_grad_norm > 0.0).then_some(a.clip_grad_norm),
        patience: None,
        seed: a.seed,
        max_batches_per_epoch: a.max_batches,
        progress: true,
        verbose: true,
        handle_ctrl_c: true,
        log_steps: false,
    };
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/char_rnn/{}", a.cell)));
    let mut trainer = Trainer::new(train_cfg, &varmap, info, &out)?;
    let report = trainer.fit(&Tbptt::new(&model), &train_ds, Some(&val_ds))?;
    if report.stop == StopReason::Interrupted {
        neka::cli::exit_interrupted(); // the checkpoint is saved for --resume
    }
    trainer.load_best()?;
    let val_loss = report
        .history
        .iter()
        .find(|m| Some(m.epoch) == report.best_epoch)
        .and_then(|m| m.val_loss)
        .unwrap_or(f64::NAN);
    trainer.save_final(&[("val_perplexity", val_loss.exp())])?;
    let text = model.sample(&vocab, &a.prompt, a.length, a.temperature)?;
    println!(
        "validation perplexity {:.2} per character\nsample (temperature {}):\n{text}",
        val_loss.exp(),
        a.temperature
    );
    println!(
        "{}",
        serde_json::json!({"model": format!("char-{}", a.cell), "val_loss": val_loss, "val_perplexity": val_loss.exp(), "out": out})
    );
    Ok(())
}

fn load(dir: &Path, device: &candle_core::Device) -> Result<(CharLm, Vocab)> {
    let (info, source) = checkpoint::read_record(dir)?;
    let cfg: Config = info.model_config(&source)?;
    let (model, _) = checkpoint::load_model(dir, device, |vb| CharLm::new(cfg, vb))?;
    Ok((model, Vocab::load_companion(dir, &info, "vocab.json")?))
}

fn sample(a: SampleArgs) -> Result<()> {
    let device = a.device.device()?;
    neka_common::rng::seed(a.seed);
    let (model, vocab) = load(&a.model, &device)?;
    println!(
        "{}",
        model.sample(&vocab, &a.prompt, a.length, a.temperature)?
    );
    Ok(())
}
