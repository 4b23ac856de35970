//! `translate eval | run`: score a saved translator with BLEU, translate sentences.

use anyhow::{bail, Result};
use clap::Args;
use neka::cli::ModelArgs;
use neka_common::data::parallel::prepare;
use neka_common::metrics::plot_heatmap;
use neka_seq2seq::{DecodeConfig, Translator};
use std::path::PathBuf;

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
    pub fn load(&self) -> Result<(Translator, DecodeConfig)> {
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
pub struct Run {
    #[command(flatten)]
    decoding: Decoding,
    /// Write the attention heatmap of the first sentence here.
    #[arg(long)]
    attention_png: Option<PathBuf>,
    /// Sentences; none = one per line from stdin.
    sentences: Vec<String>,
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
