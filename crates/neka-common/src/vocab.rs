//! Vocabularies: token ↔ id maps for words, characters, tags, with special tokens, a minimum
//! frequency, a stable order, and a JSON form saved next to a model's weights so that a
//! trained model is self-contained.
//!
//! Order: the specials first (in the order given), then tokens by descending frequency, ties
//! broken alphabetically — the same corpus always gives the same ids.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The padding token, filling batch rows past a sequence's end.
pub const PAD: &str = "<pad>";
/// The unknown token, what tokens outside the vocabulary map to.
pub const UNK: &str = "<unk>";
/// The beginning-of-sequence token, the decoder's first input.
pub const BOS: &str = "<bos>";
/// The end-of-sequence token, appended to every target.
pub const EOS: &str = "<eos>";

/// A token ↔ id map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "VocabFile", into = "VocabFile")]
pub struct Vocab {
    tokens: Vec<String>,
    index: HashMap<String, u32>,
    unk: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct VocabFile {
    tokens: Vec<String>,
    /// The token unknown inputs map to, if any.
    #[serde(default)]
    unk: Option<String>,
}

impl TryFrom<VocabFile> for Vocab {
    type Error = String;
    fn try_from(f: VocabFile) -> std::result::Result<Self, String> {
        Vocab::from_tokens(f.tokens, f.unk.as_deref())
    }
}

impl From<Vocab> for VocabFile {
    fn from(v: Vocab) -> Self {
        let unk = v.unk.map(|i| v.tokens[i as usize].clone());
        VocabFile {
            tokens: v.tokens,
            unk,
        }
    }
}

impl Vocab {
    /// Counts `items` and keeps those seen at least `min_freq` times, after `specials`.
    /// If `specials` contains [`UNK`], unknown tokens map to it.
    pub fn build<I, S>(items: I, min_freq: usize, specials: &[&str]) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for it in items {
            *counts.entry(it.as_ref().to_string()).or_default() += 1;
        }
        let mut rest: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(t, c)| *c >= min_freq.max(1) && !specials.contains(&t.as_str()))
            .collect();
        rest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let tokens = specials
            .iter()
            .map(|s| s.to_string())
            .chain(rest.into_iter().map(|(t, _)| t))
            .collect();
        let unk = specials.contains(&UNK).then_some(UNK);
        Self::from_tokens(tokens, unk).expect("specials are distinct from counted tokens")
    }

    /// A vocabulary with exactly these tokens, in this order.
    pub fn from_tokens(
        tokens: Vec<String>,
        unk: Option<&str>,
    ) -> std::result::Result<Self, String> {
        let mut index = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            if index.insert(t.clone(), i as u32).is_some() {
                return Err(format!("token {t:?} appears twice"));
            }
        }
        let unk = match unk {
            Some(u) => Some(
                *index
                    .get(u)
                    .ok_or_else(|| format!("unk token {u:?} is not in the vocabulary"))?,
            ),
            None => None,
        };
        Ok(Self { tokens, index, unk })
    }

    /// Number of tokens, specials included (ids are `0..len`).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    /// True for a vocabulary without tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    /// All tokens in id order (specials first).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
    /// The id of `token`, if it is in the vocabulary.
    pub fn get(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }
    /// The id of `token`, or of the unknown token. `None` only for a vocabulary without one.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.get(token).or(self.unk)
    }
    /// The unknown token's id.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }
    /// The token with this id.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Writes `{"tokens": […], "unk": …}` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::checkpoint::write_json(path, self)
    }

    /// Reads a vocabulary written by [`Vocab::save`]; duplicate tokens or an unknown `unk`
    /// are errors that name the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses the JSON of [`Vocab::save`]; `path` names the source in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text); // a UTF-8 byte-order mark
        serde_json::from_str(text)
            .map_err(|e| Error::bad_data(path, format!("not a neka vocabulary: {e}")))
    }

    /// The JSON [`Vocab::save`] writes (what a model's record embeds).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a vocabulary serialises");
        s.push('\n');
        s
    }

    /// Reads companion file `name` of the model in `dir` (the copy recorded in its weights
    /// file, else the file beside it; see [`crate::checkpoint::read_companion`]).
    pub fn load_companion(
        dir: &Path,
        info: &crate::checkpoint::CheckpointInfo,
        name: &str,
    ) -> Result<Self> {
        let (text, path) = crate::checkpoint::read_companion(dir, info, name)?;
        Self::from_json(&text, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_order_min_freq_and_round_trip() {
        let words = "b a c a b a d".split(' ');
        let v = Vocab::build(words, 2, &[PAD, UNK]);
        assert_eq!(v.tokens(), [PAD, UNK, "a", "b"]);
        assert_eq!(v.id("a"), Some(2));
        assert_eq!(v.id("zzz"), Some(1));
        assert_eq!(v.get("zzz"), None);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vocab.json");
        v.save(&p).unwrap();
        assert_eq!(Vocab::load(&p).unwrap(), v);
        std::fs::write(&p, r#"{"tokens": ["a", "a"]}"#).unwrap();
        let e = Vocab::load(&p).unwrap_err().to_string();
        assert!(e.contains("vocab.json") && e.contains("twice"), "{e}");
        let tags = Vocab::build(["NOUN", "VERB", "NOUN"], 1, &[]);
        assert_eq!(tags.id("ADJ"), None);
    }
}
