//! `translate train`: train an encoder–decoder on Multi30k (or given files), validate with
//! perplexity and greedy BLEU every epoch, score the best epoch on the test set.

use crate::data::DataFlags;
use anyhow::Result;
use clap::Args;
use neka::cli::TrainArgs;
use neka_common::train::evaluate;
use neka_seq2seq::data::{Seq2SeqDataset, Seq2SeqVocabs};
use neka_seq2seq::{AttentionKind, CellType, Config, DecodeConfig, Translator};

#[derive(Args)]
pub struct Train {
    #[command(flatten)]
    data: DataFlags,
    #[arg(long, default_value = "lstm")]
    cell: CellType,
    #[arg(long, default_value = "luong")]
    attention: AttentionKind,
    #[command(flatten)]
    model: ModelFlags,
    /// A separate output matrix W_o (Hd × V) instead of sharing the target embeddings.
    #[arg(long)]
    untied: bool,
    /// Beam size for the final test score, 1 (greedy) to 64.
    #[arg(long, default_value_t = 5, value_parser = neka::cli::beam)]
    beam: usize,
    #[command(flatten)]
    run: TrainArgs,
}

/// The model's shape; each flag left out keeps `neka_seq2seq::Config::default()`.
#[derive(Args, serde::Serialize)]
struct ModelFlags {
    /// Encoder hidden size per direction [default: 256].
    #[arg(long)]
    enc_hidden: Option<usize>,
    /// Encoder layers [default: 1].
    #[arg(long)]
    enc_layers: Option<usize>,
    /// Decoder hidden size [default: 512].
    #[arg(long)]
    dec_hidden: Option<usize>,
    /// Source and target word embedding size [default: 256].
    #[arg(long = "embed")]
    embed_dim: Option<usize>,
    /// [default: 0.3]
    #[arg(long)]
    dropout: Option<f32>,
    /// [default: 0.1]
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// Teacher-forcing probability at the start of training [default: 1] …
    #[arg(long, value_parser = neka::cli::probability)]
    teacher_forcing: Option<f64>,
    /// … falling linearly to this by the end of training [default: --teacher-forcing].
    #[arg(long, value_parser = neka::cli::probability)]
    teacher_forcing_final: Option<f64>,
}

pub fn run(a: Train) -> Result<()> {
    let device = a.run.start()?;
    let c = a.data.load()?;
    let (train_c, val_c, test_c) = (&c.train, &c.val, &c.test);
    let vocabs = Seq2SeqVocabs::build(&train_c.pairs, a.data.min_freq);
    let train_ds = Seq2SeqDataset::new(&train_c.pairs, &vocabs, &device);
    let val_ds = Seq2SeqDataset::new(&val_c.pairs, &vocabs, &device);
    let train_cfg = a
        .run
        .to_train_config(neka_seq2seq::default_train_config())?;
    let steps_per_epoch = train_ds.pairs.len().div_ceil(train_cfg.batch_size);
    let steps = train_cfg
        .max_batches_per_epoch
        .unwrap_or(usize::MAX)
        .min(steps_per_epoch);
    let base = Config {
        cell: a.cell,
        attention: a.attention,
        tie_embeddings: !a.untied,
        ..Config::default()
    };
    let mut cfg = neka::cli::config_with(base, &a.model)?;
    cfg.teacher_forcing_final = a.model.teacher_forcing_final.unwrap_or(cfg.teacher_forcing);
    cfg.teacher_forcing_steps = train_cfg.epochs * steps;
    let dataset = format!("multi30k-{}-{}", a.data.src, a.data.tgt);
    let mut t = Translator::fresh(cfg, vocabs, &dataset, &device)?;
    t.info.data.insert(
        "train_pairs".into(),
        serde_json::to_value(a.data.train_pairs)?,
    );
    println!(
        "{} → {}: {} train / {} val / {} test pairs; vocab {} / {}; {} encoder-decoder, attention {}, {} parameters; device {}",
        a.data.src, a.data.tgt, train_ds.pairs.len(), val_c.pairs.len(), test_c.pairs.len(), t.vocabs.src.len(),
        t.vocabs.tgt.len(), a.cell, a.attention, neka::cli::param_count(&t.varmap),
        neka_common::device::device_name(&device)
    );
    let default_out = format!(
        "runs/translate/{}-{}-{}-{}",
        a.data.src, a.data.tgt, a.cell, a.attention
    );
    let mut trainer = a
        .run
        .trainer(train_cfg, &t.varmap, t.info.clone(), default_out)?;
    let out = trainer.out_dir().to_path_buf();
    let greedy = DecodeConfig {
        beam: 1,
        ..DecodeConfig::default()
    };
    let report = trainer.fit_with(&t.model, &train_ds, Some(&val_ds), |m| {
        let bleu = t.corpus_bleu(&val_c.pairs, &greedy)?.0.score;
        Ok(vec![
            ("perplexity".into(), m.val_loss.unwrap_or(f64::NAN).exp()),
            ("bleu".into(), bleu),
        ])
    })?;
    neka::cli::exit_if_interrupted(&report, &out);
    trainer.load_best()?;
    let test_greedy = t.corpus_bleu(&test_c.pairs, &greedy)?.0.score;
    let beam = DecodeConfig {
        beam: a.beam,
        ..DecodeConfig::default()
    };
    let test_beam = t.corpus_bleu(&test_c.pairs, &beam)?.0.score;
    let val_ppl = evaluate(&t.model, &val_ds, 256)?.loss.exp();
    trainer.save_final(&[
        ("test_bleu_greedy", test_greedy),
        ("test_bleu_beam", test_beam),
        ("val_perplexity", val_ppl),
    ])?;
    let seconds = report.train_seconds();
    println!(
        "best epoch {}: validation perplexity {val_ppl:.2}; test BLEU {test_greedy:.2} greedy, {test_beam:.2} beam {}; {seconds:.0} s; model in {}",
        report.best_epoch.unwrap_or(0), a.beam, out.display()
    );
    neka::cli::print_json(
        &serde_json::json!({"model": neka_seq2seq::translator::MODEL_NAME, "src": a.data.src, "tgt": a.data.tgt, "cell": a.cell,
            "attention": a.attention.to_string(), "val_perplexity": val_ppl, "test_bleu_greedy": test_greedy,
            "test_bleu_beam": test_beam, "beam": a.beam, "best_epoch": report.best_epoch,
            "epochs": trainer.epochs_done(), "train_seconds": seconds, "out": out}),
    );
    Ok(())
}
