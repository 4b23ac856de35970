//! `translate eval | run`: score a saved translator with BLEU, translate sentences.

use anyhow::{bail, Result};
use clap::Args;
use neka::cli::ModelArgs;
use neka_common::data::parallel::{load_multi30k, prepare, read_parallel, ParallelConfig};
use neka_common::metrics::plot_heatmap;
use neka_seq2seq::{DecodeConfig, Translator};
use std::path::PathBuf;
use std::time::Instant;

/// The pretrained translator these commands use without `--model`.
const PRETRAINED: &str = "models/seq2seq-multi30k-de-en";

#[derive(Args)]
pub struct Decoding {
    #[command(flatten)]
    model: ModelArgs,
    /// Beam size, 1 (batched greedy search) to 64.
    #[arg(long, default_value_t = 5, value_parser = neka::cli::beam)]
    beam: usize,
    /// α of the length normalisation log p / len^α.
    #[arg(long, default_value_t = 1.0)]
    length_penalty: f64,
}

impl Decoding {
    fn load(&self) -> Result<(Translator, DecodeConfig)> {
        let (dir, device) = self.model.open(PRETRAINED, &Translator::FILES)?;
        let cfg = DecodeConfig {
            beam: self.beam,
            length_penalty: self.length_penalty,
            ..DecodeConfig::default()
        };
        Ok((Translator::load(&dir, &device)?, cfg))
    }
}

#[derive(Args)]
pub struct Eval {
    #[command(flatten)]
    decoding: Decoding,
    /// Source sentences, one per line (plain or gzip), line-aligned with --ref-file.
    #[arg(
        long,
        requires = "ref_file",
        conflicts_with = "split",
        required_unless_present = "split"
    )]
    src_file: Option<PathBuf>,
    /// Reference translations, one per line.
    #[arg(long, requires = "src_file")]
    ref_file: Option<PathBuf>,
    /// A Multi30k split instead of files (train, val, test_2016_flickr; `test` is
    /// test_2016_flickr) in the model's languages, found as training finds it: --data-dir,
    /// then $NEKA_DATA_DIR, then the Hugging Face Hub.
    #[arg(long)]
    split: Option<String>,
    /// Data root holding multi30k/ for --split (default: $NEKA_DATA_DIR, else the Hub).
    #[arg(long, requires = "split")]
    data_dir: Option<PathBuf>,
    /// Write the hypotheses (space-separated tokens, one per line) here, e.g. for sacreBLEU.
    #[arg(long)]
    hyp_out: Option<PathBuf>,
    /// Write the references as the model scores them (lowercased tokens) here.
    #[arg(long)]
    ref_out: Option<PathBuf>,
}

#[derive(Args)]
pub struct Run {
    #[command(flatten)]
    decoding: Decoding,
    /// Write the attention heatmap of the first sentence here.
    #[arg(long)]
    attention_png: Option<PathBuf>,
    /// Sentences; none = one per line from stdin.
    sentences: Vec<String>,
}

pub fn eval(a: Eval) -> Result<()> {
    let (t, cfg) = a.decoding.load()?;
    let read_cfg = ParallelConfig {
        max_tokens: usize::MAX,
        lowercase: true,
    };
    let (c, source) = match (&a.src_file, &a.ref_file, &a.split) {
        (Some(src), Some(tgt), _) => (
            read_parallel(src, tgt, read_cfg)?,
            src.display().to_string(),
        ),
        (_, _, Some(split)) => {
            let split = if split == "test" {
                "test_2016_flickr"
            } else {
                split.as_str()
            };
            // the model's languages, from its dataset name `multi30k-SRC-TGT`
            let dataset = t.info.dataset.clone();
            let langs = dataset
                .strip_prefix("multi30k-")
                .and_then(|l| l.split_once('-'))
                .unwrap_or(("de", "en"));
            let (c, source) =
                load_multi30k(a.data_dir.as_deref(), split, langs.0, langs.1, read_cfg)?;
            println!(
                "Multi30k {split} ({} → {}): {} pairs from {source}",
                langs.0,
                langs.1,
                c.pairs.len()
            );
            (c, source)
        }
        _ => bail!("give --src-file FILE --ref-file FILE, or --split SPLIT"),
    };
    if let Some(s) = c.skipped_summary(&source) {
        println!("{s}");
    }
    if c.pairs.is_empty() {
        bail!("{source}: no sentence pairs");
    }
    let t0 = Instant::now();
    let (b, hyps) = t.corpus_bleu(&c.pairs, &cfg)?;
    let secs = t0.elapsed().as_secs_f64();
    let refs: Vec<Vec<String>> = c.pairs.iter().map(|p| p.1.clone()).collect();
    for (path, lines) in [(&a.hyp_out, &hyps), (&a.ref_out, &refs)] {
        if let Some(p) = path {
            let text: String = lines.iter().map(|h| h.join(" ") + "\n").collect();
            neka_common::checkpoint::write_atomic(p, text.as_bytes())?;
        }
    }
    let precisions: Vec<String> = (0..4)
        .map(|i| {
            format!(
                "{:.1}",
                100.0 * b.matches[i] as f64 / b.totals[i].max(1) as f64
            )
        })
        .collect();
    println!(
        "BLEU {:.2} (n-gram precisions {}, brevity penalty {:.3}, {} / {} tokens); {} sentences in {:.1} s ({:.1} sentences/s)",
        b.score,
        precisions.join("/"),
        b.brevity_penalty,
        b.hyp_len,
        b.ref_len,
        hyps.len(),
        secs,
        hyps.len() as f64 / secs.max(1e-9)
    );
    neka::cli::print_json(
        &serde_json::json!({"sentences": hyps.len(), "bleu": b.score, "beam": cfg.beam}),
    );
    Ok(())
}

/// Translates every sentence up to the first one that cannot be translated (a line that is
/// not UTF-8 or is too long, a sentence of too many tokens), prints the translations, then
/// fails naming that sentence's line (or argument).
pub fn run(a: Run) -> Result<()> {
    let (t, cfg) = a.decoding.load()?;
    let input = neka::cli::read_sentences(&a.sentences);
    let srcs: Vec<Vec<String>> = input.sentences.iter().map(|l| prepare(l, true)).collect();
    let long = input.first_too_long(|i| {
        (srcs[i].len() > cfg.max_src_len).then(|| {
            format!(
                "{} tokens, more than the {} the translator accepts: split it into sentences, \
                 one per line",
                srcs[i].len(),
                cfg.max_src_len
            )
        })
    });
    let stop = long.as_ref().map_or(srcs.len(), |(i, _)| *i);
    let srcs = &srcs[..stop];
    let hyps = t.translate_tokens(srcs, &cfg)?;
    for h in &hyps {
        println!("{}", t.tokens(h).join(" "));
    }
    if let Some((_, e)) = long {
        return Err(e);
    }
    if let (Some(png), Some(h), Some(src)) = (&a.attention_png, hyps.first(), srcs.first()) {
        if src.is_empty() {
            bail!(
                "{}: the sentence is empty: there is no attention to plot; give a sentence with \
                 words, e.g. \"ein mann fährt fahrrad .\"",
                input.origins[0]
            );
        }
        if h.attention.is_empty() {
            bail!("this model has no attention (attention: none): nothing to plot");
        }
        let (title, axes) = ("attention", "rows: output tokens, columns: source tokens");
        plot_heatmap(
            png,
            title,
            axes,
            &t.attention_rows(h),
            src,
            &h.attention,
            None,
        )?;
        println!("attention heatmap: {}", png.display());
    }
    input.finish()
}
