//! Many-to-many on real data: part-of-speech tagging of UD English EWT with a word + char
//! BiLSTM tagger (or the same tagger with an Elman RNN / GRU).
//!
//! ```text
//! cargo run --release --example pos_tagger -- train [--cell lstm|rnn|gru] [--data-dir D] [--epochs N] [--out DIR] …
//! cargo run --release --example pos_tagger -- eval [--model DIR | --model-id ORG/NAME] --conllu FILE
//! cargo run --release --example pos_tagger -- tag [--model DIR | --model-id ORG/NAME] "Sentence to tag."
//! ```
//!
//! `train` trains on EWT train, keeps the best epoch by dev UPOS accuracy (early stopping with
//! `--patience`), reports dev and test accuracy and saves weights, vocabularies, config,
//! metrics and curves. `eval` prints per-tag precision / recall / F1, writes a confusion-matrix
//! PNG, and its last line is JSON. `tag` tags sentences given as arguments or, without
//! arguments, one per line on stdin.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use neka_common::checkpoint::CheckpointInfo;
use neka_common::data::conllu;
use neka_common::data::tagging::{self, TaggingDataset, TaggingVocabConfig, TaggingVocabs};
use neka_common::data::{text, Dataset};
use neka_common::device::DeviceRequest;
use neka_common::metrics::ConfusionMatrix;
use neka_common::optim::{LrSchedule, OptimizerConfig};
use neka_common::train::{evaluate, TrainConfig, Trainer, WeightAverage};
use neka_lstm::tagger::{self, Config, LoadedTagger, Tagger};
use neka_lstm::CellType;
use std::io::BufRead;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Part-of-speech tagging on UD English EWT with a BiLSTM (or RNN / GRU) tagger")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on EWT train, early-stop on dev, report dev and test UPOS accuracy.
    Train(TrainArgs),
    /// UPOS accuracy, per-tag precision / recall / F1 and a confusion matrix on a CoNLL-U file.
    Eval(EvalArgs),
    /// Tag sentences (arguments, or lines on stdin) and print word/TAG pairs.
    Tag(TagArgs),
    /// Draw the sentence LSTM's forget / input / output gates and cell state over a sentence.
    Gates(GatesArgs),
}

#[derive(Args)]
struct GatesArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The sentence.
    sentence: String,
    /// Folder for lstm_gates.png and lstm_cell_state.png.
    #[arg(long, default_value = "runs/pos_tagger/gates")]
    out: PathBuf,
    /// Units drawn one by one (those whose forget gate varies most).
    #[arg(long, default_value_t = 2)]
    units: usize,
}

#[derive(Args)]
struct TrainArgs {
    /// Sentence network: lstm (BiLSTM), rnn (Elman, tanh), rnn-relu or gru.
    #[arg(long, default_value = "lstm")]
    cell: CellType,
    /// Character network cell (default: the same as --cell).
    #[arg(long)]
    char_cell: Option<CellType>,
    /// Data root holding ud-english-ewt/ (default: $NEKA_DATA_DIR, else the Hugging Face Hub).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Sentences per batch (batches group sentences of similar length).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Adam's β₂ (0.9 as in Dozat & Manning's taggers; PyTorch's default is 0.999).
    #[arg(long, default_value_t = 0.9)]
    beta2: f64,
    /// constant, step[:STEP_SIZE[:GAMMA]] or cosine[:T_MAX], per epoch.
    #[arg(long, default_value = "cosine")]
    schedule: String,
    /// Clip the global gradient norm to this value (0 = off).
    #[arg(long, default_value_t = 5.0, value_parser = neka::cli::clip_norm)]
    clip_grad_norm: f64,
    /// Stop after this many epochs without a better dev accuracy.
    #[arg(long)]
    patience: Option<usize>,
    #[arg(long, default_value_t = 100)]
    word_dim: usize,
    #[arg(long, default_value_t = 50)]
    char_dim: usize,
    /// Hidden size per direction of the char network (0 = no char features).
    #[arg(long, default_value_t = 50)]
    char_hidden: usize,
    /// Hidden size per direction of the sentence network.
    #[arg(long, default_value_t = 200)]
    hidden: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    #[arg(long, default_value_t = 0.33)]
    dropout: f32,
    /// Probability of replacing any word by <unk> in training.
    #[arg(long, default_value_t = 0.0)]
    word_dropout: f32,
    /// Frequency-aware word dropout: replace word w by <unk> with probability α/(α + count(w)) (0 = off).
    #[arg(long, default_value_t = 0.25)]
    word_dropout_alpha: f32,
    /// Label smoothing of the training loss.
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
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
    /// Train on at most this many batches per epoch.
    #[arg(long)]
    max_batches: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// Output directory (default runs/pos_tagger/<cell>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run saved in this directory.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Also average the weights after each of the last N epochs (stochastic weight
    /// averaging); the average is kept instead of the best epoch if it is better on dev.
    #[arg(long, default_value_t = 0)]
    average_last: usize,
}

#[derive(Args)]
struct ModelArgs {
    /// Model directory (weights, config.json, words/chars/tags.json).
    #[arg(long, default_value = "models/pos-bilstm-ewt")]
    model: PathBuf,
    /// Hugging Face Hub model id (ORG/NAME) instead of --model.
    #[arg(long)]
    model_id: Option<String>,
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// CoNLL-U file with gold UPOS tags.
    #[arg(long)]
    conllu: PathBuf,
    /// Confusion-matrix PNG (default: <conllu stem>.confusion.png in the current directory).
    #[arg(long)]
    confusion_png: Option<PathBuf>,
}

#[derive(Args)]
struct TagArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Sentences to tag; none = read one sentence per line from stdin.
    sentences: Vec<String>,
}

fn main() -> Result<()> {
    neka::cli::quiet_broken_pipe();
    neka::alloc::keep_freed_memory();
    match Cli::parse().command {
        Command::Train(a) => train(a),
        Command::Eval(a) => eval(a),
        Command::Tag(a) => tag(a),
        Command::Gates(a) => gates(a),
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let device = a.device.device()?;
    neka_common::rng::seed(a.seed);
    let mut bank = conllu::load_ewt(a.data_dir.as_deref())?;
    if let Some(n) = a.train_sentences {
        bank.train.truncate(n);
    }
    let vocabs = TaggingVocabs::build(
        &bank.train,
        TaggingVocabConfig {
            min_word_freq: a.min_word_freq,
            lowercase: !a.cased,
        },
    );
    let train_ds = TaggingDataset::new(&bank.train, &vocabs, &device)?;
    let dev_ds = TaggingDataset::new(&bank.dev, &vocabs, &device)?;
    let test_ds = TaggingDataset::new(&bank.test, &vocabs, &device)?;
    let cfg = Config {
        cell: a.cell,
        char_cell: a.char_cell.unwrap_or(a.cell),
        word_dim: a.word_dim,
        char_dim: a.char_dim,
        char_hidden: a.char_hidden,
        hidden_size: a.hidden,
        num_layers: a.layers,
        dropout: a.dropout,
        word_dropout: a.word_dropout,
        word_dropout_alpha: a.word_dropout_alpha,
        label_smoothing: a.label_smoothing,
        ..Config::default()
    }
    .with_vocabs(&vocabs);
    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, candle_core::DType::F32, &device);
    let mut model = Tagger::new(cfg, vb)?;
    model.set_word_counts(&vocabs.word_counts(&bank.train));
    let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
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
        params,
        neka_common::device::device_name(&device)
    );
    let out = a
        .out
        .clone()
        .or_else(|| a.resume.clone())
        .unwrap_or_else(|| PathBuf::from(format!("runs/pos_tagger/{}", a.cell)));
    let mut info = CheckpointInfo::new(tagger::MODEL_NAME, &cfg, "ud-english-ewt")?;
    info.classes = vocabs.tags.tokens().to_vec();
    info.files = vocabs.files();
    info.data.insert(
        "train_sentences".into(),
        serde_json::to_value(a.train_sentences)?,
    );
    let optimizer = match OptimizerConfig::adamw(a.lr) {
        OptimizerConfig::AdamW {
            lr,
            beta1,
            eps,
            weight_decay,
            ..
        } => OptimizerConfig::AdamW {
            lr,
            beta1,
            beta2: a.beta2,
            eps,
            weight_decay,
        },
        other => other,
    };
    let train_cfg = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        eval_batch_size: 256,
        optimizer,
        schedule: LrSchedule::parse(&a.schedule, a.epochs)?,
        clip_grad_norm: (a.clip_grad_norm > 0.0).then_some(a.clip_grad_norm),
        patience: a.patience,
        seed: a.seed,
        max_batches_per_epoch: a.max_batches,
        progress: true,
        verbose: true,
        handle_ctrl_c: true,
        log_steps: false,
    };
    let mut trainer = Trainer::new(train_cfg, &varmap, info, &out)?;
    if let Some(dir) = &a.resume {
        trainer.resume(dir)?;
        println!(
            "resumed from {} after epoch {}",
            dir.display(),
            trainer.epochs_done()
        );
    }
    let mut average = WeightAverage::default();
    let first_averaged = a.epochs.saturating_sub(a.average_last) + 1; // 1-based
    let report = trainer.fit_with(&model, &train_ds, Some(&dev_ds), |epoch| {
        if a.average_last > 0 && epoch >= first_averaged {
            average.add(&varmap)?;
        }
        Ok(Vec::new())
    })?;
    if report.stop == neka_common::train::StopReason::Interrupted {
        neka::cli::exit_interrupted(); // the checkpoint is saved for --resume
    }
    let mut dev = report.best_val_accuracy.unwrap_or(f64::NAN);
    let mut best = format!("best epoch {}", report.best_epoch.unwrap_or(0));
    if average.count() > 0 {
        average.apply(&varmap)?;
        let d = evaluate(&model, &dev_ds, 256)?;
        println!(
            "weight average of epochs {first_averaged}–{}: dev UPOS {:.2}% (best single epoch {:.2}%)",
            a.epochs,
            100.0 * d.accuracy,
            100.0 * dev
        );
        if d.accuracy > dev {
            dev = d.accuracy;
            best = format!("weight average of epochs {first_averaged}–{}", a.epochs);
            trainer.save_final(&[
                ("val_accuracy", d.accuracy),
                ("val_loss", d.loss),
                ("averaged_epochs", average.count() as f64),
            ])?;
        }
    }
    trainer.load_best()?;
    let test = evaluate(&model, &test_ds, 256)?;
    trainer.save_final(&[("test_accuracy", test.accuracy), ("test_loss", test.loss)])?;
    let seconds: f64 = report.history.iter().map(|m| m.seconds).sum();
    println!(
        "dev UPOS {:.2}% ({best}), test UPOS {:.2}% ({} tokens) after {} epochs in {:.0} s; model in {}",
        100.0 * dev,
        100.0 * test.accuracy,
        test.count,
        trainer.epochs_done(),
        seconds,
        out.display()
    );
    println!(
        "{}",
        serde_json::json!({"model": tagger::MODEL_NAME, "cell": a.cell, "dataset": "ud-english-ewt",
            "dev_upos_accuracy": dev, "test_upos_accuracy": test.accuracy, "test_tokens": test.count,
            "best_epoch": report.best_epoch, "kept": best, "epochs": trainer.epochs_done(), "train_seconds": seconds, "out": out})
    );
    Ok(())
}

fn load(m: &ModelArgs) -> Result<LoadedTagger> {
    let device = m.device.device()?;
    let dir = match &m.model_id {
        #[cfg(feature = "hub")]
        Some(id) => neka_common::hub::model_dir_with(
            id,
            None,
            &[tagging::WORDS_FILE, tagging::CHARS_FILE, tagging::TAGS_FILE],
        )?,
        #[cfg(not(feature = "hub"))]
        Some(_) => bail!("--model-id needs the `hub` feature (on by default; you built with --no-default-features)"),
        None => m.model.clone(),
    };
    Ok(LoadedTagger::load(&dir, &device)?)
}

fn eval(a: EvalArgs) -> Result<()> {
    let loaded = load(&a.model)?;
    let sentences = conllu::read_conllu(&a.conllu)?;
    if sentences.is_empty() {
        bail!("{}: no sentences", a.conllu.display());
    }
    let forms: Vec<Vec<String>> = sentences.iter().map(|s| s.forms.clone()).collect();
    let predicted = loaded.tag(&forms)?;
    let labels = loaded.vocabs.tags.tokens().to_vec();
    let mut cm = ConfusionMatrix::new(labels);
    for (s, p) in sentences.iter().zip(&predicted) {
        for (gold, pred) in s.upos.iter().zip(p) {
            let g = loaded
                .vocabs
                .tags
                .get(gold)
                .context("gold tag outside the tag set")?;
            let q = loaded
                .vocabs
                .tags
                .get(pred)
                .context("predicted tag outside the tag set")?;
            cm.add(g as usize, q as usize);
        }
    }
    print!("{}", cm.report());
    let png = a.confusion_png.clone().unwrap_or_else(|| {
        let stem = a.conllu.file_stem().unwrap_or_default().to_string_lossy();
        PathBuf::from(format!("{stem}.confusion.png"))
    });
    let name = a.conllu.file_name().unwrap_or_default().to_string_lossy();
    cm.plot(
        &png,
        &format!(
            "UPOS confusion on {name} (accuracy {:.2}%)",
            100.0 * cm.accuracy()
        ),
    )?;
    println!("confusion matrix: {}", png.display());
    println!(
        "{}",
        serde_json::json!({"file": a.conllu, "sentences": sentences.len(), "tokens": cm.total(),
            "upos_accuracy": cm.accuracy()})
    );
    Ok(())
}

/// The simple tokenizer, plus EWT's split of English clitics: `don't` → `do n't`,
/// `it's` → `it 's` (`'s 're 've 'll 'd 'm n't`).
fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for tok in text::tokenize(line) {
        let lower = tok.to_lowercase().replace('’', "'");
        let clitic = ["n't", "'s", "'re", "'ve", "'ll", "'d", "'m"]
            .into_iter()
            .find(|c| lower.ends_with(c) && lower.len() > c.len());
        match clitic {
            Some(c) => {
                let cut = tok
                    .char_indices()
                    .rev()
                    .nth(c.chars().count() - 1)
                    .map_or(0, |(i, _)| i);
                out.push(tok[..cut].to_string());
                out.push(tok[cut..].to_string());
            }
            None => out.push(tok),
        }
    }
    out
}

fn tag(a: TagArgs) -> Result<()> {
    let loaded = load(&a.model)?;
    let lines: Vec<String> = if a.sentences.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()
            .context("reading sentences from stdin")?
    } else {
        a.sentences.clone()
    };
    let tokens: Vec<Vec<String>> = lines.iter().map(|l| tokenize(l)).collect();
    for (words, tags) in tokens.iter().zip(loaded.tag(&tokens)?) {
        let pairs: Vec<String> = words
            .iter()
            .zip(&tags)
            .map(|(w, t)| format!("{w}/{t}"))
            .collect();
        println!("{}", pairs.join(" "));
    }
    Ok(())
}

fn gates(a: GatesArgs) -> Result<()> {
    let units = load(&a.model)?.draw_gates(&tokenize(&a.sentence), a.units, &a.out)?;
    println!(
        "units {units:?}; wrote lstm_gates.png and lstm_cell_state.png in {}",
        a.out.display()
    );
    Ok(())
}
