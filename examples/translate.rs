//! seq2seq on Multi30k: train an encoder–decoder with attention, evaluate BLEU, translate.
//!
//! ```text
//! cargo run --release --example translate -- train [--src de --tgt en] [--cell lstm|gru]
//!     [--attention none|bahdanau|luong|dot] [--epochs N] [--data-dir D] [--out DIR] …
//! cargo run --release --example translate -- eval [--model DIR | --model-id ORG/NAME] --src-file F --ref-file F [--beam K] [--hyp-out F --ref-out F]
//! cargo run --release --example translate -- run [--model DIR] [--attention-png FILE] "ein mann fährt fahrrad ."
//! ```
//!
//! `train` reports validation loss, perplexity and greedy BLEU per epoch, keeps the best epoch
//! (by validation token accuracy), then scores test_2016_flickr with greedy and beam search.
//! `eval`'s last line is JSON `{"sentences": N, "bleu": x, "beam": k}`; BLEU is corpus BLEU-4
//! on lowercased tokens (equal to `sacrebleu --tokenize none` on the same token files).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use neka_common::checkpoint::CheckpointInfo;
use neka_common::data::parallel::{load_multi30k, read_parallel, ParallelConfig, ParallelCorpus};
use neka_common::device::DeviceRequest;
use neka_common::metrics::{corpus_bleu, plot_heatmap};
use neka_common::optim::{LrSchedule, OptimizerConfig};
use neka_common::train::{evaluate, TrainConfig, Trainer};
use neka_seq2seq::data::{Seq2SeqDataset, Seq2SeqVocabs, SRC_VOCAB_FILE, TGT_VOCAB_FILE};
use neka_seq2seq::translator::{self, Translator};
use neka_seq2seq::{AttentionKind, CellType, Config, DecodeConfig, Seq2Seq};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Encoder-decoder translation with attention on Multi30k")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on Multi30k (or any line-aligned files), report validation perplexity and BLEU.
    Train(Box<TrainArgs>),
    /// Corpus BLEU of a model on a source file against a reference file.
    Eval(EvalArgs),
    /// Translate sentences (arguments, or lines on stdin).
    Run(RunArgs),
}

#[derive(Args)]
struct TrainArgs {
    /// Multi30k source language (en, de, fr).
    #[arg(long, default_value = "de")]
    src: String,
    /// Multi30k target language.
    #[arg(long, default_value = "en")]
    tgt: String,
    /// Data root holding multi30k/ (default: $NEKA_DATA_DIR, else the Hugging Face Hub for en/de).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Training files instead of Multi30k (line-aligned, plain or gzip).
    #[arg(long, requires = "train_tgt")]
    train_src: Option<PathBuf>,
    #[arg(long, requires = "train_src")]
    train_tgt: Option<PathBuf>,
    /// Validation files instead of Multi30k val.
    #[arg(long, requires = "val_tgt")]
    val_src: Option<PathBuf>,
    #[arg(long, requires = "val_src")]
    val_tgt: Option<PathBuf>,
    /// Test files instead of Multi30k test_2016_flickr.
    #[arg(long, requires = "test_tgt")]
    test_src: Option<PathBuf>,
    #[arg(long, requires = "test_src")]
    test_tgt: Option<PathBuf>,
    #[arg(long, default_value = "lstm")]
    cell: CellType,
    #[arg(long, default_value = "luong")]
    attention: AttentionKind,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// constant, step[:STEP_SIZE[:GAMMA]] or cosine[:T_MAX], per epoch.
    #[arg(long, default_value = "cosine")]
    schedule: String,
    #[arg(long, default_value_t = 1.0, value_parser = neka::cli::clip_norm)]
    clip_grad_norm: f64,
    #[arg(long, default_value_t = 256)]
    embed: usize,
    /// Encoder hidden size per direction.
    #[arg(long, default_value_t = 256)]
    enc_hidden: usize,
    #[arg(long, default_value_t = 1)]
    enc_layers: usize,
    #[arg(long, default_value_t = 512)]
    dec_hidden: usize,
    #[arg(long, default_value_t = 0.3)]
    dropout: f32,
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f64,
    /// A separate output matrix W_o (Hd × V) instead of sharing the target embeddings.
    #[arg(long)]
    untied: bool,
    /// Teacher-forcing probability at the start of training …
    #[arg(long, default_value_t = 1.0, value_parser = neka::cli::probability)]
    teacher_forcing: f64,
    /// … falling linearly to this by the end of training.
    #[arg(long, value_parser = neka::cli::probability)]
    teacher_forcing_final: Option<f64>,
    /// Tokens seen fewer times map to <unk>.
    #[arg(long, default_value_t = 2)]
    min_freq: usize,
    /// Pairs with a side longer than this are skipped (and reported).
    #[arg(long, default_value_t = 50)]
    max_tokens: usize,
    /// Train on the first N pairs only (smoke runs).
    #[arg(long)]
    train_pairs: Option<usize>,
    #[arg(long)]
    max_batches: Option<usize>,
    /// Beam size for the final test score.
    #[arg(long, default_value_t = 5)]
    beam: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// Output directory (default runs/translate/<src>-<tgt>-<cell>-<attention>).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    resume: Option<PathBuf>,
}

#[derive(Args)]
struct ModelArgs {
    #[arg(long, default_value = "models/seq2seq-multi30k-de-en")]
    model: PathBuf,
    /// Hugging Face Hub model id (ORG/NAME) instead of --model.
    #[arg(long)]
    model_id: Option<String>,
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// Beam size (1 = batched greedy search).
    #[arg(long, default_value_t = 5)]
    beam: usize,
    /// α of the length normalisation log p / len^α.
    #[arg(long, default_value_t = 1.0)]
    length_penalty: f64,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    src_file: PathBuf,
    #[arg(long)]
    ref_file: PathBuf,
    /// Write the hypotheses (space-separated tokens, one per line) here, e.g. for sacreBLEU.
    #[arg(long)]
    hyp_out: Option<PathBuf>,
    /// Write the references as the model scores them (lowercased tokens) here.
    #[arg(long)]
    ref_out: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Write the attention heatmap of the first sentence here.
    #[arg(long)]
    attention_png: Option<PathBuf>,
    /// Sentences; none = one per line from stdin.
    sentences: Vec<String>,
}

fn main() -> Result<()> {
    neka::cli::quiet_broken_pipe();
    neka::alloc::keep_freed_memory();
    match Cli::parse().command {
        Command::Train(a) => train(*a),
        Command::Eval(a) => eval(a),
        Command::Run(a) => run(a),
    }
}

fn read(src: &Path, tgt: &Path, max_tokens: usize) -> Result<ParallelCorpus> {
    let c = read_parallel(
        src,
        tgt,
        ParallelConfig {
            max_tokens,
            lowercase: true,
        },
    )?;
    report_skipped(&c, &src.display().to_string());
    Ok(c)
}

/// Says how many pairs the reading rules skipped, and the first one.
fn report_skipped(c: &ParallelCorpus, source: &str) {
    if let Some((line, why)) = c.skipped.first() {
        println!(
            "{source}: skipped {} of {} pairs (first: line {line}, {why})",
            c.skipped.len(),
            c.skipped.len() + c.pairs.len()
        );
    }
}

fn bleu_of(
    t: &Translator,
    pairs: &[(Vec<String>, Vec<String>)],
    cfg: &DecodeConfig,
) -> Result<f64> {
    let srcs: Vec<Vec<String>> = pairs.iter().map(|p| p.0.clone()).collect();
    let hyps: Vec<Vec<String>> = t
        .translate_tokens(&srcs, cfg)?
        .iter()
        .map(|h| t.tokens(h))
        .collect();
    let refs: Vec<Vec<String>> = pairs.iter().map(|p| p.1.clone()).collect();
    Ok(corpus_bleu(&hyps, &refs).score)
}

fn train(a: TrainArgs) -> Result<()> {
    let device = a.device.device()?;
    neka_common::rng::seed(a.seed);
    let pcfg = |max_tokens| ParallelConfig {
        max_tokens,
        lowercase: true,
    };
    // Explicit files, else Multi30k from the data dir or the Hub.
    let load = |split: &str,
                over: (&Option<PathBuf>, &Option<PathBuf>),
                max_tokens: usize|
     -> Result<ParallelCorpus> {
        let (c, source) = match over {
            (Some(s), Some(t)) => (
                read_parallel(s, t, pcfg(max_tokens))?,
                s.display().to_string(),
            ),
            _ => load_multi30k(
                a.data_dir.as_deref(),
                split,
                &a.src,
                &a.tgt,
                pcfg(max_tokens),
            )?,
        };
        report_skipped(&c, &source);
        Ok(c)
    };
    let mut train_c = load("train", (&a.train_src, &a.train_tgt), a.max_tokens)?;
    if let Some(n) = a.train_pairs {
        train_c.pairs.truncate(n);
    }
    // Validation and test keep every pair (the limit only shapes training).
    let val_c = load("val", (&a.val_src, &a.val_tgt), usize::MAX)?;
    let test_c = load("test_2016_flickr", (&a.test_src, &a.test_tgt), usize::MAX)?;
    let vocabs = Seq2SeqVocabs::build(&train_c.pairs, a.min_freq);
    let train_ds = Seq2SeqDataset::new(&train_c.pairs, &vocabs, &device);
    let val_ds = Seq2SeqDataset::new(&val_c.pairs, &vocabs, &device);
    let steps_per_epoch = train_ds.pairs.len().div_ceil(a.batch_size);
    let cfg = Config {
        cell: a.cell,
        src_vocab: vocabs.src.len(),
        tgt_vocab: vocabs.tgt.len(),
        embed_dim: a.embed,
        enc_hidden: a.enc_hidden,
        enc_layers: a.enc_layers,
        dec_hidden: a.dec_hidden,
        attention: a.attention,
        dropout: a.dropout,
        teacher_forcing: a.teacher_forcing,
        teacher_forcing_final: a.teacher_forcing_final.unwrap_or(a.teacher_forcing),
        teacher_forcing_steps: a.epochs
            * a.max_batches
                .unwrap_or(steps_per_epoch)
                .min(steps_per_epoch),
        label_smoothing: a.label_smoothing,
        tie_embeddings: !a.untied,
    };
    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, candle_core::DType::F32, &device);
    let model = Seq2Seq::new(cfg, vb)?;
    let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    println!(
        "{} → {}: {} train / {} val / {} test pairs; vocab {} / {}; {} encoder-decoder, attention {}, {} parameters; device {}",
        a.src,
        a.tgt,
        train_ds.pairs.len(),
        val_c.pairs.len(),
        test_c.pairs.len(),
        vocabs.src.len(),
        vocabs.tgt.len(),
        a.cell,
        a.attention,
        params,
        neka_common::device::device_name(&device)
    );
    let out = a
        .out
        .clone()
        .or_else(|| a.resume.clone())
        .unwrap_or_else(|| {
            PathBuf::from(format!(
                "runs/translate/{}-{}-{}-{}",
                a.src, a.tgt, a.cell, a.attention
            ))
        });
    let mut info = CheckpointInfo::new(
        translator::MODEL_NAME,
        &cfg,
        &format!("multi30k-{}-{}", a.src, a.tgt),
    )?;
    info.files = vocabs.files();
    info.data
        .insert("train_pairs".into(), serde_json::to_value(a.train_pairs)?);
    let train_cfg = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        eval_batch_size: 256,
        optimizer: OptimizerConfig::adamw(a.lr),
        schedule: LrSchedule::parse(&a.schedule, a.epochs)?,
        clip_grad_norm: (a.clip_grad_norm > 0.0).then_some(a.clip_grad_norm),
        patience: None,
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
    let greedy_cfg = DecodeConfig {
        beam: 1,
        ..DecodeConfig::default()
    };
    let t0 = Instant::now();
    let report = {
        let view = Translator {
            model: model.clone(),
            vocabs: vocabs.clone(),
            info: trainer.info().clone(),
            varmap: varmap.clone(),
        };
        trainer.fit_with(&model, &train_ds, Some(&val_ds), |_| {
            let val = evaluate(&model, &val_ds, 256)?;
            let bleu = bleu_of(&view, &val_c.pairs, &greedy_cfg)
                .map_err(|e| neka_common::Error::config("validation BLEU", e.to_string()))?;
            Ok(vec![
                ("perplexity".into(), val.loss.exp()),
                ("bleu".into(), bleu),
            ])
        })?
    };
    if report.stop == neka_common::train::StopReason::Interrupted {
        neka::cli::exit_interrupted(); // the checkpoint is saved for --resume
    }
    let train_seconds = t0.elapsed().as_secs_f64();
    trainer.load_best()?;
    let view = Translator {
        model: model.clone(),
        vocabs: vocabs.clone(),
        info: trainer.info().clone(),
        varmap: varmap.clone(),
    };
    let test_greedy = bleu_of(&view, &test_c.pairs, &greedy_cfg)?;
    let beam_cfg = DecodeConfig {
        beam: a.beam,
        ..DecodeConfig::default()
    };
    let test_beam = bleu_of(&view, &test_c.pairs, &beam_cfg)?;
    let val = evaluate(&model, &val_ds, 256)?;
    trainer.save_final(&[
        ("test_bleu_greedy", test_greedy),
        ("test_bleu_beam", test_beam),
        ("val_perplexity", val.loss.exp()),
    ])?;
    println!(
        "best epoch {}: validation perplexity {:.2}; test BLEU {:.2} greedy, {:.2} beam {}; {:.0} s; model in {}",
        report.best_epoch.unwrap_or(0),
        val.loss.exp(),
        test_greedy,
        test_beam,
        a.beam,
        train_seconds,
        out.display()
    );
    println!(
        "{}",
        serde_json::json!({"model": translator::MODEL_NAME, "src": a.src, "tgt": a.tgt, "cell": a.cell,
            "attention": a.attention.to_string(), "val_perplexity": val.loss.exp(), "test_bleu_greedy": test_greedy,
            "test_bleu_beam": test_beam, "beam": a.beam, "best_epoch": report.best_epoch,
            "epochs": trainer.epochs_done(), "train_seconds": train_seconds, "out": out})
    );
    Ok(())
}

fn load(m: &ModelArgs) -> Result<(Translator, DecodeConfig)> {
    let device = m.device.device()?;
    let dir = match &m.model_id {
        #[cfg(feature = "hub")]
        Some(id) => neka_common::hub::model_dir_with(id, None, &[SRC_VOCAB_FILE, TGT_VOCAB_FILE])?,
        #[cfg(not(feature = "hub"))]
        Some(_) => bail!("--model-id needs the `hub` feature (on by default; you built with --no-default-features)"),
        None => m.model.clone(),
    };
    let t = Translator::load(&dir, &device)?;
    let cfg = DecodeConfig {
        beam: m.beam,
        length_penalty: m.length_penalty,
        ..DecodeConfig::default()
    };
    Ok((t, cfg))
}

fn eval(a: EvalArgs) -> Result<()> {
    let (t, cfg) = load(&a.model)?;
    let c = read(&a.src_file, &a.ref_file, usize::MAX)?;
    if c.pairs.is_empty() {
        bail!("{}: no sentence pairs", a.src_file.display());
    }
    let srcs: Vec<Vec<String>> = c.pairs.iter().map(|p| p.0.clone()).collect();
    let t0 = Instant::now();
    let hyps: Vec<Vec<String>> = t
        .translate_tokens(&srcs, &cfg)?
        .iter()
        .map(|h| t.tokens(h))
        .collect();
    let secs = t0.elapsed().as_secs_f64();
    let refs: Vec<Vec<String>> = c.pairs.iter().map(|p| p.1.clone()).collect();
    let b = corpus_bleu(&hyps, &refs);
    for (path, lines) in [(&a.hyp_out, &hyps), (&a.ref_out, &refs)] {
        if let Some(p) = path {
            let text: String = lines.iter().map(|h| h.join(" ") + "\n").collect();
            neka_common::checkpoint::write_atomic(p, text.as_bytes())?;
        }
    }
    println!(
        "BLEU {:.2} (n-gram precisions {}, brevity penalty {:.3}, {} / {} tokens); {} sentences in {:.1} s ({:.1} sentences/s)",
        b.score,
        (0..4)
            .map(|i| format!("{:.1}", 100.0 * b.matches[i] as f64 / b.totals[i].max(1) as f64))
            .collect::<Vec<_>>()
            .join("/"),
        b.brevity_penalty,
        b.hyp_len,
        b.ref_len,
        hyps.len(),
        secs,
        hyps.len() as f64 / secs.max(1e-9)
    );
    println!(
        "{}",
        serde_json::json!({"sentences": hyps.len(), "bleu": b.score, "beam": cfg.beam})
    );
    Ok(())
}

fn run(a: RunArgs) -> Result<()> {
    let (t, cfg) = load(&a.model)?;
    let lines: Vec<String> = if a.sentences.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()
            .context("reading sentences from stdin")?
    } else {
        a.sentences.clone()
    };
    let (srcs, hyps) = t.translate(&lines, &cfg)?;
    for h in &hyps {
        println!("{}", t.tokens(h).join(" "));
    }
    if let (Some(png), Some(h), Some(src)) = (&a.attention_png, hyps.first(), srcs.first()) {
        if h.attention.is_empty() {
            bail!("this model has no attention (attention: none): nothing to plot");
        }
        let mut rows = t.tokens(h);
        if h.ids.last() == Some(&neka_seq2seq::data::EOS_ID) {
            rows.push("<eos>".into());
        }
        plot_heatmap(
            png,
            "attention",
            "rows: output tokens, columns: source tokens",
            &rows,
            src,
            &h.attention,
            None,
        )?;
        println!("attention heatmap: {}", png.display());
    }
    Ok(())
}
