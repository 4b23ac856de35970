//! `translate eval`: corpus BLEU of a model on a Multi30k split or on parallel files.

use crate::infer::Decoding;
use anyhow::{bail, Result};
use clap::Args;
use neka_common::data::parallel::{load_multi30k, read_parallel, ParallelConfig};
use std::path::PathBuf;
use std::time::Instant;

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
