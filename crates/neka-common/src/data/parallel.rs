//! Parallel text for translation: two line-aligned files (plain or gzip), one sentence per
//! line, lowercased and tokenized with [`super::text::tokenize`].
//!
//! Rules, reported in [`ParallelCorpus::skipped`] and never applied silently:
//! * files with different line counts are an error naming both files and both counts;
//! * a pair with an empty side (after tokenizing) is skipped;
//! * a pair with a side longer than `max_tokens` tokens is skipped.

use super::text;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// How to read a parallel corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParallelConfig {
    /// Pairs with a side longer than this (in tokens) are skipped.
    pub max_tokens: usize,
    /// Lowercase before tokenizing.
    pub lowercase: bool,
}

impl Default for ParallelConfig {
    fn default() -> Self {
        Self {
            max_tokens: 100,
            lowercase: true,
        }
    }
}

/// Tokenized sentence pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParallelCorpus {
    /// `(source tokens, target tokens)` per kept line pair, in file order.
    pub pairs: Vec<(Vec<String>, Vec<String>)>,
    /// Lines skipped by the rules, as `(1-based line number, reason)`.
    pub skipped: Vec<(usize, String)>,
}

/// Lowercases (if asked) and tokenizes one sentence ([`text::tokenize`], which normalises
/// it to NFC: composed and decomposed input give the same tokens).
pub fn prepare(line: &str, lowercase: bool) -> Vec<String> {
    if lowercase {
        text::tokenize(&line.to_lowercase())
    } else {
        text::tokenize(line)
    }
}

/// Reads two line-aligned files.
pub fn read_parallel(src: &Path, tgt: &Path, cfg: ParallelConfig) -> Result<ParallelCorpus> {
    pair_lines(
        text::read_lines(src)?,
        src,
        text::read_lines(tgt)?,
        tgt,
        cfg,
    )
}

/// [`read_parallel`] on two readers (each plain or gzip, detected from the bytes); the paths
/// name the sources in errors.
pub fn read_parallel_from(
    src: impl std::io::Read,
    src_path: &Path,
    tgt: impl std::io::Read,
    tgt_path: &Path,
    cfg: ParallelConfig,
) -> Result<ParallelCorpus> {
    let s = text::read_lines_from(src, src_path)?;
    let t = text::read_lines_from(tgt, tgt_path)?;
    pair_lines(s, src_path, t, tgt_path, cfg)
}

/// Applies the module's rules to the lines of the two sides.
fn pair_lines(
    s: Vec<String>,
    src: &Path,
    t: Vec<String>,
    tgt: &Path,
    cfg: ParallelConfig,
) -> Result<ParallelCorpus> {
    if s.len() != t.len() {
        return Err(Error::config(
            "parallel files",
            format!(
                "{} has {} lines but {} has {}: the two sides must be line-aligned",
                src.display(),
                s.len(),
                tgt.display(),
                t.len()
            ),
        ));
    }
    let mut out = ParallelCorpus::default();
    for (i, (a, b)) in s.iter().zip(&t).enumerate() {
        let (a, b) = (prepare(a, cfg.lowercase), prepare(b, cfg.lowercase));
        let reason = if a.is_empty() || b.is_empty() {
            Some("empty side".to_string())
        } else if a.len().max(b.len()) > cfg.max_tokens {
            Some(format!(
                "longer than {} tokens ({} / {})",
                cfg.max_tokens,
                a.len(),
                b.len()
            ))
        } else {
            None
        };
        match reason {
            Some(r) => out.skipped.push((i + 1, r)),
            None => out.pairs.push((a, b)),
        }
    }
    Ok(out)
}

/// The Multi30k folder under a data root.
pub const MULTI30K_FOLDER: &str = "multi30k";
/// Languages of Multi30k task 1.
pub const MULTI30K_LANGS: [&str; 3] = ["en", "de", "fr"];

/// Paths of a Multi30k split (`train`, `val`, `test_2016_flickr`) for two languages in a data
/// root (`DIR/multi30k/{split}.{lang}[.gz]`).
pub fn multi30k_files(
    root: &Path,
    split: &str,
    src: &str,
    tgt: &str,
) -> Result<(PathBuf, PathBuf)> {
    for lang in [src, tgt] {
        if !MULTI30K_LANGS.contains(&lang) {
            return Err(Error::config(
                "language",
                format!("`{lang}`: Multi30k has en, de and fr"),
            ));
        }
    }
    let dir = root.join(MULTI30K_FOLDER);
    let find = |lang: &str| {
        text::find_file(&dir, &format!("{split}.{lang}")).ok_or_else(|| {
            Error::DataNotFound(format!(
                "Multi30k not found: {} holds no {split}.{lang}[.gz]. Download Multi30k task 1 \
                 (https://github.com/multi30k/dataset, data/task1/raw) into it",
                dir.display()
            ))
        })
    };
    Ok((find(src)?, find(tgt)?))
}

/// The Hub dataset the `hub` feature downloads Multi30k from (English and German only):
/// `{train,val,test}.jsonl` with one `{"en": …, "de": …}` object per line.
pub const MULTI30K_HUB_REPO: &str = "bentrevett/multi30k";

impl ParallelCorpus {
    /// "`source`: skipped N of M pairs (first: line L, why)" when the reading rules skipped
    /// any pair (too long, empty side), for the user to see.
    pub fn skipped_summary(&self, source: &str) -> Option<String> {
        self.skipped.first().map(|(line, why)| {
            format!(
                "{source}: skipped {} of {} pairs (first: line {line}, {why})",
                self.skipped.len(),
                self.skipped.len() + self.pairs.len()
            )
        })
    }
}

/// One split of a translation corpus: the line-aligned `files` (source, target) if given,
/// else Multi30k's `split` for `src → tgt` ([`load_multi30k`]). Returns the corpus and where
/// it came from.
pub fn load_split(
    files: Option<(&Path, &Path)>,
    data_dir: Option<&Path>,
    split: &str,
    (src, tgt): (&str, &str),
    cfg: ParallelConfig,
) -> Result<(ParallelCorpus, String)> {
    match files {
        Some((s, t)) => Ok((read_parallel(s, t, cfg)?, s.display().to_string())),
        None => load_multi30k(data_dir, split, src, tgt, cfg),
    }
}

/// Loads a Multi30k split (`train`, `val`, `test_2016_flickr`) for two languages: from
/// `DIR/multi30k/` when a data root is given (flag or `NEKA_DATA_DIR`), else from the Hugging
/// Face Hub (feature `hub`), else fails saying how to provide it. Returns the pairs and where
/// they came from.
pub fn load_multi30k(
    data_dir: Option<&Path>,
    split: &str,
    src: &str,
    tgt: &str,
    cfg: ParallelConfig,
) -> Result<(ParallelCorpus, String)> {
    if let Some(root) = super::vision::data_root(data_dir) {
        let (a, b) = multi30k_files(&root, split, src, tgt)?;
        let source = format!("{} + {}", a.display(), b.display());
        return Ok((read_parallel(&a, &b, cfg)?, source));
    }
    load_multi30k_from_hub(split, src, tgt, cfg)
}

#[cfg(feature = "hub")]
fn load_multi30k_from_hub(
    split: &str,
    src: &str,
    tgt: &str,
    cfg: ParallelConfig,
) -> Result<(ParallelCorpus, String)> {
    let how = format!(
        "give a data directory DIR (`data_dir`, or set {}=DIR) with DIR/{MULTI30K_FOLDER}/{split}.{{{src},{tgt}}}[.gz]",
        super::vision::DATA_DIR_ENV
    );
    if [src, tgt].iter().any(|l| !["en", "de"].contains(l)) {
        return Err(Error::DataNotFound(format!(
            "no data directory given, and the Hub copy of Multi30k ({MULTI30K_HUB_REPO}) has only en and de: {how}"
        )));
    }
    let file = match split {
        "test_2016_flickr" => "test.jsonl".to_string(),
        s => format!("{s}.jsonl"),
    };
    let path = crate::hub::dataset_file(MULTI30K_HUB_REPO, &file).map_err(|e| {
        Error::DataNotFound(format!(
            "no data directory given for Multi30k and the Hub has not given it: {e}. Or {how}"
        ))
    })?;
    let mut out = ParallelCorpus::default();
    for (i, line) in text::read_lines(&path)?.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::bad_line(&path, i + 1, format!("not JSON: {e}")))?;
        let side = |l: &str| -> Result<Vec<String>> {
            let s = v[l]
                .as_str()
                .ok_or_else(|| Error::bad_line(&path, i + 1, format!("no string field `{l}`")))?;
            Ok(prepare(s, cfg.lowercase))
        };
        let (a, b) = (side(src)?, side(tgt)?);
        if a.is_empty() || b.is_empty() {
            out.skipped.push((i + 1, "empty side".into()));
        } else if a.len().max(b.len()) > cfg.max_tokens {
            out.skipped.push((
                i + 1,
                format!(
                    "longer than {} tokens ({} / {})",
                    cfg.max_tokens,
                    a.len(),
                    b.len()
                ),
            ));
        } else {
            out.pairs.push((a, b));
        }
    }
    Ok((
        out,
        format!("Hugging Face Hub dataset {MULTI30K_HUB_REPO} ({file})"),
    ))
}

#[cfg(not(feature = "hub"))]
fn load_multi30k_from_hub(
    split: &str,
    src: &str,
    tgt: &str,
    _cfg: ParallelConfig,
) -> Result<(ParallelCorpus, String)> {
    Err(Error::DataNotFound(format!(
        "no data directory given for Multi30k: give a data directory DIR (`data_dir`, or set {}=DIR) with \
         DIR/{MULTI30K_FOLDER}/{split}.{{{src},{tgt}}}[.gz], or build with the `hub` feature to \
         download it from the Hugging Face Hub",
        super::vision::DATA_DIR_ENV
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_text_is_normalised_before_and_after_lowercasing() {
        // A + U+0308 lowercases to a + U+0308, which NFC composes to ä
        let want = ["ein", "mann", "fährt", "."];
        assert_eq!(prepare("Ein Mann FA\u{308}HRT .", true), want);
        assert_eq!(prepare("ein mann fa\u{308}hrt .", true), want);
        assert_eq!(prepare("Ein Mann fährt .", true), want);
    }

    #[test]
    fn reads_pairs_and_reports_skips() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("x.de"), dir.path().join("x.en"));
        std::fs::write(
            &a,
            "Ein Hund läuft.\n\nsehr sehr sehr sehr lang\nZwei Männer.\n",
        )
        .unwrap();
        std::fs::write(&b, "A dog runs.\nnothing\nvery long\nTwo men.\n").unwrap();
        let c = read_parallel(
            &a,
            &b,
            ParallelConfig {
                max_tokens: 4,
                lowercase: true,
            },
        )
        .unwrap();
        assert_eq!(c.pairs.len(), 2);
        assert_eq!(c.pairs[0].0, ["ein", "hund", "läuft", "."]);
        assert_eq!(c.pairs[1].1, ["two", "men", "."]);
        assert_eq!(c.skipped[0], (2, "empty side".to_string()));
        assert!(c.skipped[1].1.starts_with("longer than 4"));
        std::fs::write(&b, "A dog runs.\n").unwrap();
        let e = read_parallel(&a, &b, ParallelConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.de has 4 lines but") && e.contains("x.en has 1"),
            "{e}"
        );
    }

    #[test]
    fn readers_drop_a_bom_and_refuse_cr_only_line_endings() {
        let (a, b) = (Path::new("x.de"), Path::new("x.en"));
        let c = read_parallel_from(
            &b"\xef\xbb\xbfEin Hund.\r\nZwei.\n"[..],
            a,
            &b"A dog.\nTwo.\n"[..],
            b,
            ParallelConfig::default(),
        )
        .unwrap();
        assert_eq!(c.pairs[0].0, ["ein", "hund", "."]);
        assert_eq!(c.pairs.len(), 2);
        let e = read_parallel_from(
            &b"Ein Hund.\rZwei.\r"[..],
            a,
            &b"A dog.\rTwo.\r"[..],
            b,
            ParallelConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("x.de:1:") && e.contains("CR-only"), "{e}");
    }
}
