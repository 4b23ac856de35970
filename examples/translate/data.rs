//! `translate train`'s data: Multi30k (or line-aligned files), tokenized and lowercased.

use anyhow::Result;
use clap::Args;
use neka_common::data::parallel::{load_split, ParallelConfig, ParallelCorpus};
use std::path::PathBuf;

#[derive(Args)]
pub struct DataFlags {
    /// Multi30k source language (en, de, fr).
    #[arg(long, default_value = "de")]
    pub src: String,
    /// Multi30k target language.
    #[arg(long, default_value = "en")]
    pub tgt: String,
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
    /// Tokens seen fewer times map to <unk>.
    #[arg(long, default_value_t = 2)]
    pub min_freq: usize,
    /// Pairs with a side longer than this are skipped (and reported).
    #[arg(long, default_value_t = 50)]
    max_tokens: usize,
    /// Train on the first N pairs only (smoke runs).
    #[arg(long)]
    pub train_pairs: Option<usize>,
}

/// The three splits.
pub struct Corpora {
    pub train: ParallelCorpus,
    pub val: ParallelCorpus,
    pub test: ParallelCorpus,
}

impl DataFlags {
    /// Reads the splits, saying what the reading rules skipped. Validation and test keep
    /// every pair: the length limit only shapes training.
    pub fn load(&self) -> Result<Corpora> {
        let split = |name: &str, files: (&Option<PathBuf>, &Option<PathBuf>), max_tokens| {
            let files = match files {
                (Some(s), Some(t)) => Some((s.as_path(), t.as_path())),
                _ => None,
            };
            let cfg = ParallelConfig {
                max_tokens,
                lowercase: true,
            };
            let langs = (self.src.as_str(), self.tgt.as_str());
            let (c, source) = load_split(files, self.data_dir.as_deref(), name, langs, cfg)?;
            if let Some(s) = c.skipped_summary(&source) {
                println!("{s}");
            }
            anyhow::Ok(c)
        };
        let mut train = split("train", (&self.train_src, &self.train_tgt), self.max_tokens)?;
        train.pairs.truncate(self.train_pairs.unwrap_or(usize::MAX));
        Ok(Corpora {
            train,
            val: split("val", (&self.val_src, &self.val_tgt), usize::MAX)?,
            test: split(
                "test_2016_flickr",
                (&self.test_src, &self.test_tgt),
                usize::MAX,
            )?,
        })
    }
}
