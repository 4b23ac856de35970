//! `char_rnn` (no subcommand): learn a text with truncated BPTT, then sample from the model.

use crate::Sampling;
use anyhow::Result;
use clap::Args;
use neka::cli::TrainArgs;
use neka_common::checkpoint::CheckpointInfo;
use neka_common::data::{stream, CharCorpus, Dataset};
use neka_lstm::char_lm::{self, CharLm, Config, Tbptt};
use neka_lstm::CellType;
use std::path::PathBuf;

#[derive(Args)]
pub struct Train {
    /// Text file to learn (plain or gzip). Default: multi30k/train.en[.gz] in the data dir,
    /// else the English side of Multi30k from the Hugging Face Hub.
    #[arg(long)]
    text: Option<PathBuf>,
    /// Data root holding multi30k/ (default: $NEKA_DATA_DIR, else the Hub).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// rnn (Elman, tanh), rnn-relu, lstm or gru.
    #[arg(long, default_value = "lstm")]
    cell: CellType,
    #[command(flatten)]
    model: ModelFlags,
    /// Truncated-BPTT chunk length: gradients flow back at most this many characters.
    #[arg(long, default_value_t = 100)]
    bptt: usize,
    #[command(flatten)]
    sample: Sampling,
    // --batch-size is the number of parallel streams; --max-batches counts chunks.
    #[command(flatten)]
    run: TrainArgs,
}

/// The model's shape; each flag left out keeps `char_lm::Config::default()`.
#[derive(Args, serde::Serialize)]
struct ModelFlags {
    /// Character embedding size [default: 64].
    #[arg(long = "embed")]
    embed_dim: Option<usize>,
    // --hidden (256), --layers (1), --dropout between layers (0)
    #[command(flatten)]
    #[serde(flatten)]
    rnn: neka::cli::RnnFlags,
}

pub fn run(a: Train) -> Result<()> {
    let device = a.run.start()?;
    let (corpus, path) = match &a.text {
        Some(p) => (CharCorpus::read(p, 5)?, p.clone()),
        None => {
            let (content, path) = stream::multi30k_english(a.data_dir.as_deref())?;
            (CharCorpus::from_text(&content, &path, 5)?, path)
        }
    };
    let mut cfg = a.run.to_train_config(char_lm::default_train_config())?;
    cfg.eval_batch_size = cfg.batch_size; // one batch = all streams
    let (train_ds, val_ds) = corpus.streams(cfg.batch_size, a.bptt, &device)?;
    println!(
        "{}: {} characters ({} distinct), {} for training in {} streams × {} chunks of {}",
        path.display(),
        corpus.ids.len(),
        corpus.vocab.len() - 1,
        corpus.split,
        cfg.batch_size,
        train_ds.len(),
        a.bptt
    );
    let base = Config {
        cell: a.cell,
        vocab_size: corpus.vocab.len(),
        ..Config::default()
    };
    let model_cfg = neka::cli::config_with(base, &a.model)?;
    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, candle_core::DType::F32, &device);
    let model = CharLm::new(model_cfg, vb)?;
    let name = format!("char-{}", a.cell);
    let mut info = CheckpointInfo::new(&name, &model_cfg, &path.display().to_string())?;
    info.files
        .insert(char_lm::VOCAB_FILE.into(), corpus.vocab.to_json());
    info.data.insert("bptt".into(), a.bptt.into());
    let default_out = format!("runs/char_rnn/{}", a.cell);
    let mut trainer = a.run.trainer(cfg, &varmap, info, default_out)?;
    let out = trainer.out_dir().to_path_buf();
    let report = trainer.fit(&Tbptt::new(&model), &train_ds, Some(&val_ds))?;
    neka::cli::exit_if_interrupted(&report, &out);
    trainer.load_best()?;
    let val_loss = report
        .history
        .iter()
        .find(|m| Some(m.epoch) == report.best_epoch)
        .and_then(|m| m.val_loss)
        .unwrap_or(f64::NAN);
    trainer.save_final(&[("val_perplexity", val_loss.exp())])?;
    let s = &a.sample;
    let text = model.sample(&corpus.vocab, &s.prompt, s.length, s.temperature)?;
    println!(
        "validation perplexity {:.2} per character\nsample (temperature {}):\n{text}",
        val_loss.exp(),
        s.temperature
    );
    neka::cli::print_json(
        &serde_json::json!({"model": name, "val_loss": val_loss, "val_perplexity": val_loss.exp(), "out": out}),
    );
    Ok(())
}
