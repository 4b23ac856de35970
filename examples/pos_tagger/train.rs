//! `pos_tagger train`: train a tagger on EWT, keep the best epoch by dev UPOS accuracy (or
//! the weight average of the last epochs, `--average-last`), score it on EWT test.

use anyhow::Result;
use clap::Args;
use neka::cli::TrainArgs;
use neka_common::checkpoint::CheckpointInfo;
use neka_common::data::conllu;
use neka_common::data::tagging::{TaggingDataset, TaggingVocabConfig, TaggingVocabs};
use neka_common::data::Dataset;
use neka_lstm::tagger::{self, Config, Tagger};
use neka_lstm::CellType;
use std::path::PathBuf;

#[derive(Args)]
pub struct Train {
    /// Sentence network: lstm (BiLSTM), rnn (Elman, tanh), rnn-relu or gru.
    #[arg(long, default_value = "lstm")]
    cell: CellType,
    /// Character network cell (default: the same as --cell).
    #[arg(long)]
    char_cell: Option<CellType>,
    /// Data root holding ud-english-ewt/ (default: $NEKA_DATA_DIR, else the Hugging Face Hub).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    model: TaggerFlags,
    /// Words seen fewer times in training map to <unk>.
    #[arg(long, default_value_t = 2)]
    min_word_freq: usize,
    /// Keep the case of words for the word embedding (default: lowercase them; the
    /// character model always sees the case).
    #[arg(long)]
    cased: bool,
    /// Train on the first N training sentences only (smoke runs).
    #[arg(long)]
    train_sentences: Option<usize>,
    #[command(flatten)]
    run: TrainArgs,
}

/// The tagger's shape; each flag left out keeps `tagger::Config::default()`.
#[derive(Args, serde::Serialize)]
struct TaggerFlags {
    /// Word embedding size [default: 100].
    #[arg(long)]
    word_dim: Option<usize>,
    /// Character embedding size [default: 50].
    #[arg(long)]
    char_dim: Option<usize>,
    /// Hidden size per direction of the char network, 0 = no char features [default: 50].
    #[arg(long)]
    char_hidden: Option<usize>,
    // the sentence network: --hidden per direction (200), --layers (2), --dropout (0.33)
    #[command(flatten)]
    #[serde(flatten)]
    rnn: neka::cli::RnnFlags,
    /// Probability of replacing any word by <unk> in training [default: 0].
    #[arg(long)]
    word_dropout: Option<f32>,
    /// Frequency-aware word dropout α/(α + count(w)), 0 = off [default: 0.25].
    #[arg(long)]
    word_dropout_alpha: Option<f32>,
    /// Label smoothing of the training loss [default: 0].
    #[arg(long)]
    label_smoothing: Option<f64>,
}

pub fn run(a: Train) -> Result<()> {
    let device = a.run.start()?;
    let mut bank = conllu::load_ewt(a.data_dir.as_deref())?;
    if let Some(n) = a.train_sentences {
        bank.train.truncate(n);
    }
    let vocab_cfg = TaggingVocabConfig {
        min_word_freq: a.min_word_freq,
        lowercase: !a.cased,
    };
    let vocabs = TaggingVocabs::build(&bank.train, vocab_cfg);
    let train_ds = TaggingDataset::new(&bank.train, &vocabs, &device)?;
    let dev_ds = TaggingDataset::new(&bank.dev, &vocabs, &device)?;
    let test_ds = TaggingDataset::new(&bank.test, &vocabs, &device)?;
    let base = Config {
        cell: a.cell,
        char_cell: a.char_cell.unwrap_or(a.cell),
        ..Config::default()
    };
    let cfg = neka::cli::config_with(base, &a.model)?.with_vocabs(&vocabs);
    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, candle_core::DType::F32, &device);
    let mut model = Tagger::new(cfg, vb)?;
    model.set_word_counts(&vocabs.word_counts(&bank.train));
    println!(
        "UD English EWT ({}): {} train / {} dev / {} test sentences ({} / {} / {} tokens); vocab {} words, {} chars; \
         {} tagger, {} parameters; device {}",
        bank.source,
        train_ds.len(),
        dev_ds.len(),
        test_ds.len(),
        train_ds.tokens(),
        dev_ds.tokens(),
        test_ds.tokens(),
        vocabs.words.len(),
        vocabs.chars.len(),
        a.cell,
        neka::cli::param_count(&varmap),
        neka_common::device::device_name(&device)
    );
    let mut info = CheckpointInfo::new(tagger::MODEL_NAME, &cfg, "ud-english-ewt")?;
    info.classes = vocabs.tags.tokens().to_vec();
    info.files = vocabs.files();
    info.data.insert(
        "train_sentences".into(),
        serde_json::to_value(a.train_sentences)?,
    );
    let train_cfg = a.run.to_train_config(tagger::default_train_config())?;
    let default_out = format!("runs/pos_tagger/{}", a.cell);
    let mut trainer = a.run.trainer(train_cfg, &varmap, info, default_out)?;
    let out = trainer.out_dir().to_path_buf();
    let (report, test) =
        neka::cli::fit_and_test(&mut trainer, &model, &train_ds, &dev_ds, &test_ds)?;
    let (dev, kept, seconds) = (
        report.kept_val_accuracy(),
        report.kept(),
        report.train_seconds(),
    );
    let (dev_pct, test_pct) = (100.0 * dev.unwrap_or(f64::NAN), 100.0 * test.accuracy);
    let (tokens, epochs) = (test.count, trainer.epochs_done());
    println!(
        "dev UPOS {dev_pct:.2}% ({kept}), test UPOS {test_pct:.2}% ({tokens} tokens) after {epochs} epochs \
         in {seconds:.0} s; model in {}",
        out.display()
    );
    neka::cli::print_json(
        &serde_json::json!({"model": tagger::MODEL_NAME, "cell": a.cell, "dataset": "ud-english-ewt",
            "dev_upos_accuracy": dev, "test_upos_accuracy": test.accuracy, "test_tokens": test.count,
            "best_epoch": report.best_epoch, "kept": kept, "epochs": trainer.epochs_done(), "train_seconds": seconds, "out": out}),
    );
    Ok(())
}
