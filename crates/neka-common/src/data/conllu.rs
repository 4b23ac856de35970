//! CoNLL-U treebanks (Universal Dependencies) for part-of-speech tagging.
//!
//! A CoNLL-U file holds one token per line with ten tab-separated columns
//! (`ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC`), `#` comment lines, and a blank
//! line after each sentence. The reader keeps FORM, UPOS and XPOS of every syntactic word and
//! skips comments, multiword-token ranges (`3-4`, the surface form of `3` + `4`) and empty
//! nodes (`8.1`). A malformed line is an [`Error::BadLine`] naming `file:line` and what is
//! wrong, never a panic.
//!
//! [`load_ewt`] finds UD English EWT in a data directory (`--data-dir`, `NEKA_DATA_DIR`) or,
//! with the `hub` feature, downloads it from the Hugging Face Hub.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The 17 Universal POS tags (UD v2), in the order of the UD guidelines.
pub const UPOS_TAGS: [&str; 17] = [
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
    "PUNCT", "SCONJ", "SYM", "VERB", "X",
];

/// One sentence: its words with their universal (UPOS) and language-specific (XPOS) tags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaggedSentence {
    /// The words as written (FORM), one per syntactic word.
    pub forms: Vec<String>,
    /// The universal POS tag (UPOS) of each word, e.g. `NOUN`.
    pub upos: Vec<String>,
    /// The language-specific POS tag (XPOS) of each word, as the file gives it (e.g. `NN`).
    pub xpos: Vec<String>,
}

impl TaggedSentence {
    /// Number of words.
    pub fn len(&self) -> usize {
        self.forms.len()
    }
    /// True for a sentence without words.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }
}

/// Reads a CoNLL-U file (plain or gzip).
pub fn read_conllu(path: &Path) -> Result<Vec<TaggedSentence>> {
    parse_conllu(&super::text::read_to_string(path)?, path)
}

/// [`read_conllu`], with the 1-based line of each sentence's first word, so that errors about
/// a sentence (too long for a model) can name `file:line`.
pub fn read_conllu_with_lines(path: &Path) -> Result<Vec<(usize, TaggedSentence)>> {
    parse_conllu_with_lines(&super::text::read_to_string(path)?, path)
}

/// [`read_conllu`] on any reader (plain or gzip, detected from the bytes); `path` names the
/// source in errors.
pub fn read_conllu_from(reader: impl std::io::Read, path: &Path) -> Result<Vec<TaggedSentence>> {
    parse_conllu(&super::text::read_to_string_from(reader, path)?, path)
}

/// Parses CoNLL-U text; `path` names the source in errors. A leading UTF-8 byte order mark
/// is accepted and dropped; a carriage return that does not end a `\r\n` pair (old Mac
/// CR-only line endings) is an error naming `file:line`.
///
/// The ID column must be a positive integer (a word), a range `N-M` with `0 < N < M`
/// (a multiword token, skipped) or a decimal `N.M` with `N ≥ 0`, `M ≥ 1` (an empty node,
/// skipped); anything else (`-3`, `x-y`, `..`, `1-`, `3.x`, `0`) is an error naming
/// `file:line`, never silently skipped.
///
/// Word IDs count 1, 2, 3, … within each sentence, as the CoNLL-U format requires: a
/// repeated, missing or descending ID (a lost or duplicated line, or two sentences without
/// the blank line between them) is an error naming `file:line` and the ID expected. A
/// range `N-M` must start at the next word's ID, and an empty node `N.M` follow word `N`
/// (`0.M` before the first word).
pub fn parse_conllu(text: &str, path: &Path) -> Result<Vec<TaggedSentence>> {
    Ok(parse_conllu_with_lines(text, path)?
        .into_iter()
        .map(|(_, s)| s)
        .collect())
}

/// [`parse_conllu`], with the 1-based line of each sentence's first word.
pub fn parse_conllu_with_lines(text: &str, path: &Path) -> Result<Vec<(usize, TaggedSentence)>> {
    let text = text.strip_prefix(super::text::UTF8_BOM).unwrap_or(text);
    let mut sentences = Vec::new();
    let mut cur = TaggedSentence::default();
    // 1-based line of the current sentence's first word, and the ID its next word must have
    let mut start = 0;
    let mut next_id: u64 = 1;
    for (i, line) in super::text::split_lines(text, path)?
        .into_iter()
        .enumerate()
    {
        let bad = |msg: String| Error::bad_line(path, i + 1, msg);
        if line.trim().is_empty() {
            if !cur.is_empty() {
                sentences.push((start, std::mem::take(&mut cur)));
            }
            next_id = 1;
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() != 10 {
            return Err(bad(format!(
                "expected 10 tab-separated columns (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC), found {}",
                cols.len()
            )));
        }
        let out_of_order = |what: &str, expected: String| {
            bad(format!(
                "{what} `{}` where {expected} was expected: word IDs count 1, 2, 3, … within a \
                 sentence, so a repeated, missing or descending ID means a line was lost or \
                 duplicated, or two sentences lack the blank line between them. Fix the IDs, or \
                 add the blank line that ends the sentence before",
                cols[0]
            ))
        };
        match classify_id(cols[0]) {
            Some(IdKind::Word(n)) => {
                if n != next_id {
                    return Err(out_of_order("word ID", format!("{next_id}")));
                }
                next_id += 1;
            }
            Some(IdKind::Range(n)) => {
                if n != next_id {
                    return Err(out_of_order(
                        "multiword range",
                        format!("a range starting at {next_id}"),
                    ));
                }
                continue;
            }
            Some(IdKind::EmptyNode(n)) => {
                if n + 1 != next_id {
                    return Err(out_of_order(
                        "empty node",
                        format!("an empty node {}.M after word {}", next_id - 1, next_id - 1),
                    ));
                }
                continue;
            }
            None => {
                return Err(bad(format!(
                    "ID `{}` is not a positive integer, a range `N-M` (0 < N < M) or an empty node `N.M` (M ≥ 1)",
                    cols[0]
                )))
            }
        }
        let (form, upos, xpos) = (cols[1], cols[3], cols[4]);
        if form.is_empty() {
            return Err(bad("empty FORM (column 2)".into()));
        }
        if !UPOS_TAGS.contains(&upos) {
            return Err(bad(format!(
                "unknown UPOS `{upos}` (column 4); expected one of {}",
                UPOS_TAGS.join(" ")
            )));
        }
        if cur.is_empty() {
            start = i + 1;
        }
        cur.forms.push(form.to_string());
        cur.upos.push(upos.to_string());
        cur.xpos.push(xpos.to_string());
    }
    if !cur.is_empty() {
        sentences.push((start, cur));
    }
    Ok(sentences)
}

/// What a CoNLL-U ID column names, with its (first) number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdKind {
    /// `N`, N ≥ 1: a syntactic word.
    Word(u64),
    /// `N-M`, 1 ≤ N < M: a multiword token (its words follow on their own lines).
    Range(u64),
    /// `N.M`, N ≥ 0, M ≥ 1: an empty node of the enhanced graph.
    EmptyNode(u64),
}

/// Classifies an ID column; `None` when it is none of the three forms. Numbers are ASCII
/// digits only (no sign, no spaces).
fn classify_id(id: &str) -> Option<IdKind> {
    fn num(s: &str) -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
    if let Some((a, b)) = id.split_once('-') {
        let (n, m) = (num(a)?, num(b)?);
        (n >= 1 && n < m).then_some(IdKind::Range(n))
    } else if let Some((a, b)) = id.split_once('.') {
        let (n, m) = (num(a)?, num(b)?);
        (m >= 1).then_some(IdKind::EmptyNode(n))
    } else {
        let n = num(id)?;
        (n >= 1).then_some(IdKind::Word(n))
    }
}

/// A treebank's train / dev / test splits.
#[derive(Debug, Clone)]
pub struct Treebank {
    /// The training split.
    pub train: Vec<TaggedSentence>,
    /// The development (validation) split.
    pub dev: Vec<TaggedSentence>,
    /// The test split.
    pub test: Vec<TaggedSentence>,
    /// Where the files came from, for logs and model cards.
    pub source: String,
}

/// The folder of UD English EWT under a data root.
pub const EWT_FOLDER: &str = "ud-english-ewt";
/// The Hub dataset repository and folder the `hub` feature downloads EWT from (UD v2.5).
pub const EWT_HUB_REPO: (&str, &str) = ("FrancophonIA/IWPT_2020", "UD_English-EWT");

/// Path of an EWT split (`train`, `dev`, `test`) in `dir`: `en_ewt-ud-{split}.conllu[.gz]`.
pub fn ewt_file(dir: &Path, split: &str) -> Option<PathBuf> {
    super::text::find_file(dir, &format!("en_ewt-ud-{split}.conllu"))
}

/// The splits of UD English EWT.
pub const EWT_SPLITS: [&str; 3] = ["train", "dev", "test"];

/// Loads UD English EWT: from `data_dir` (flag) or `NEKA_DATA_DIR` when given, looking in
/// `DIR/ud-english-ewt/` and `DIR/`; else from the Hugging Face Hub (feature `hub`); else
/// fails saying how to provide it.
pub fn load_ewt(data_dir: Option<&Path>) -> Result<Treebank> {
    let (train, source) = load_ewt_split(data_dir, "train")?;
    Ok(Treebank {
        train,
        dev: load_ewt_split(data_dir, "dev")?.0,
        test: load_ewt_split(data_dir, "test")?.0,
        source,
    })
}

/// One split of UD English EWT (`train`, `dev` or `test`), found as [`load_ewt`] finds the
/// treebank. Returns the sentences and where they came from.
pub fn load_ewt_split(
    data_dir: Option<&Path>,
    split: &str,
) -> Result<(Vec<TaggedSentence>, String)> {
    if !EWT_SPLITS.contains(&split) {
        return Err(Error::config(
            "split",
            format!("`{split}`: UD English EWT has train, dev and test"),
        ));
    }
    if let Some(root) = super::vision::data_root(data_dir) {
        let dir = [root.join(EWT_FOLDER), root.clone()]
            .into_iter()
            .find(|d| ewt_file(d, "train").is_some() || ewt_file(d, split).is_some())
            .ok_or_else(|| {
                Error::DataNotFound(format!(
                    "UD English EWT not found: {} holds no {EWT_FOLDER}/en_ewt-ud-{split}.conllu. Download \
                     UD_English-EWT from https://universaldependencies.org and put the three \
                     en_ewt-ud-{{train,dev,test}}.conllu files into {}",
                    root.display(),
                    root.join(EWT_FOLDER).display()
                ))
            })?;
        let p = ewt_file(&dir, split).ok_or_else(|| {
            Error::DataNotFound(format!(
                "{}: en_ewt-ud-{split}.conllu is missing",
                dir.display()
            ))
        })?;
        return Ok((read_conllu(&p)?, dir.display().to_string()));
    }
    load_ewt_from_hub(split)
}

#[cfg(feature = "hub")]
fn load_ewt_from_hub(split: &str) -> Result<(Vec<TaggedSentence>, String)> {
    let (repo, folder) = EWT_HUB_REPO;
    let file = format!("{folder}/en_ewt-ud-{split}.conllu");
    let p = crate::hub::dataset_file(repo, &file).map_err(|e| {
        Error::DataNotFound(format!(
            "no data directory given for UD English EWT and the Hub has not given it: {e}. Or pass \
             --data-dir DIR (or set {}=DIR) with DIR/{EWT_FOLDER}/en_ewt-ud-{{train,dev,test}}.conllu",
            super::vision::DATA_DIR_ENV
        ))
    })?;
    Ok((
        read_conllu(&p)?,
        format!("Hugging Face Hub dataset {repo} ({folder}, IWPT 2020 = UD v2.5)"),
    ))
}

#[cfg(not(feature = "hub"))]
fn load_ewt_from_hub(_split: &str) -> Result<(Vec<TaggedSentence>, String)> {
    Err(Error::DataNotFound(format!(
        "no data directory given for UD English EWT: give a data directory DIR (`data_dir`, or set {}=DIR) with \
         DIR/{EWT_FOLDER}/en_ewt-ud-{{train,dev,test}}.conllu, or build with the `hub` feature to \
         download it from the Hugging Face Hub",
        super::vision::DATA_DIR_ENV
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# sent_id = 1\n# text = I don't know.\n\
1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t_\t_\n\
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n\
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_\n\
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_\n\
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_\n\
4.1\tknows\t_\t_\t_\t_\t_\t_\t_\t_\n\
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_\n\
\n\
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n";

    #[test]
    fn skips_comments_ranges_and_empty_nodes() {
        let s = parse_conllu(GOOD, Path::new("x.conllu")).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].forms, ["I", "do", "n't", "know", "."]);
        assert_eq!(s[0].upos, ["PRON", "AUX", "PART", "VERB", "PUNCT"]);
        assert_eq!(s[0].xpos[2], "RB");
        assert_eq!(s[1].forms, ["Hi"]);
    }

    #[test]
    fn malformed_lines_name_file_line_and_problem() {
        let cases = [
            (
                "1\tI\tI\tPRON\tPRP\t_\t0\n",
                ":1: expected 10 tab-separated columns",
            ),
            (
                "# c\n1\t\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n",
                ":2: empty FORM",
            ),
            (
                "1\tI\tI\tPRONOUN\tPRP\t_\t0\troot\t_\t_\n",
                ":1: unknown UPOS `PRONOUN`",
            ),
            ("x\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n", ":1: ID `x`"),
        ];
        for (text, want) in cases {
            let e = parse_conllu(text, Path::new("bad.conllu"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("bad.conllu:") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn malformed_ids_are_errors_not_skipped() {
        for id in [
            "-3", "x-y", "..", "1-", "3.x", "0", "3-3", "4-2", "1.0", "+1", "1-2-3", "1.2.3", " 1",
        ] {
            let text = format!(
                "1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n{id}\tx\tx\tX\tX\t_\t1\tdep\t_\t_\n"
            );
            let e = parse_conllu(&text, Path::new("ids.conllu"))
                .expect_err(id)
                .to_string();
            assert!(e.starts_with("ids.conllu:2: ID `"), "{id}: {e}");
        }
        for (id, kind) in [
            ("7", IdKind::Word(7)),
            ("1-2", IdKind::Range(1)),
            ("10-12", IdKind::Range(10)),
            ("0.1", IdKind::EmptyNode(0)),
            ("8.12", IdKind::EmptyNode(8)),
        ] {
            assert_eq!(classify_id(id), Some(kind), "{id}");
        }
    }

    /// One sentence with these IDs (one line each), words `w1`, `w2`, …
    fn with_ids(ids: &[&str]) -> String {
        ids.iter()
            .enumerate()
            .map(|(i, id)| format!("{id}\tw{i}\tw\tX\tX\t_\t0\tdep\t_\t_\n"))
            .collect()
    }

    #[test]
    fn repeated_missing_or_descending_word_ids_are_errors_naming_file_line_and_fix() {
        for (ids, line, expected) in [
            (&["1", "2", "2", "3"][..], 3, "`2` where 3 was expected"),
            (&["1", "3"][..], 2, "`3` where 2 was expected"),
            (&["1", "2", "3", "1"][..], 4, "`1` where 4 was expected"),
            (&["2", "3"][..], 1, "`2` where 1 was expected"),
            (
                &["1", "3-4", "2"][..],
                2,
                "range `3-4` where a range starting at 2",
            ),
            (
                &["1", "2.1", "2"][..],
                2,
                "empty node `2.1` where an empty node 1.M",
            ),
        ] {
            let e = parse_conllu(&with_ids(ids), Path::new("ids.conllu"))
                .expect_err(&format!("{ids:?}"))
                .to_string();
            assert!(
                e.starts_with(&format!("ids.conllu:{line}: ")) && e.contains(expected),
                "{ids:?}: {e}"
            );
            assert!(e.contains("blank line") && e.contains("Fix the IDs"), "{e}");
        }
        // ranges, empty nodes (also 0.M before the first word) and a new sentence after a
        // blank line keep working; lines of each sentence's first word are kept
        let ok = format!(
            "# sent_id = a\n{}\n{}",
            with_ids(&["0.1", "1-2", "1", "2", "2.1", "2.2", "3"]),
            with_ids(&["1", "2"])
        );
        let s = parse_conllu_with_lines(&ok, Path::new("ok.conllu")).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].1.forms, ["w2", "w3", "w6"]);
        assert_eq!((s[0].0, s[1].0), (4, 10));
        assert_eq!(parse_conllu(GOOD, Path::new("x.conllu")).unwrap().len(), 2);
    }

    #[test]
    fn a_bom_is_accepted_and_cr_only_line_endings_are_an_error() {
        let with_bom = format!("\u{feff}{GOOD}");
        assert_eq!(
            parse_conllu(&with_bom, Path::new("bom.conllu")).unwrap(),
            parse_conllu(GOOD, Path::new("x.conllu")).unwrap()
        );
        let crlf = GOOD.replace('\n', "\r\n");
        assert_eq!(
            parse_conllu(&crlf, Path::new("crlf.conllu")).unwrap().len(),
            2
        );
        let mac = GOOD.replace('\n', "\r");
        let e = parse_conllu(&mac, Path::new("mac.conllu"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("mac.conllu:1:") && e.contains("CR-only"),
            "{e}"
        );
    }
}
