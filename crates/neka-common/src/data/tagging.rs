//! Sequence-tagging data: vocabularies for words, characters and tags, encoded sentences,
//! and padded batches with masks, lengths and per-word character sequences.
//!
//! ```text
//! sentences ──TaggingVocabs::encode──▶ EncodedSentence { words, chars, tags }
//!           ──TaggingDataset (bucketed by length)──▶ TagBatch {
//!               words (B·T) host ids, tags (B, T), mask (B, T), lengths (B),
//!               chars (N, L) of the N distinct words in the batch, char_lengths (N),
//!               word_index (B·T) → row of chars }
//! ```
//!
//! The character sequences are built once per distinct word form in a batch (not per token),
//! which is what a character-level word model needs to run on.

use super::conllu::{TaggedSentence, UPOS_TAGS};
use super::dataset::{bucketed_plan, Dataset};
use crate::rng::DataRng;
use crate::vocab::{Vocab, PAD, UNK};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Words longer than this many characters keep their first and last `MAX_WORD_CHARS / 2`
/// characters (prefixes and suffixes carry the part-of-speech evidence; the middle of a URL
/// does not).
pub const MAX_WORD_CHARS: usize = 24;

/// The word vocabulary's file name in a model directory.
pub const WORDS_FILE: &str = "words.json";
/// The character vocabulary's file name.
pub const CHARS_FILE: &str = "chars.json";
/// The tag vocabulary's file name.
pub const TAGS_FILE: &str = "tags.json";

/// How words are mapped to ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaggingVocabConfig {
    /// Words seen fewer times in training map to `<unk>`.
    pub min_word_freq: usize,
    /// Lowercase words before the word lookup (characters keep their case).
    pub lowercase: bool,
}

impl Default for TaggingVocabConfig {
    fn default() -> Self {
        Self {
            min_word_freq: 2,
            lowercase: true,
        }
    }
}

/// The three vocabularies of a tagger, saved as JSON next to its weights.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggingVocabs {
    /// `<pad>` = 0, `<unk>` = 1, then the training words seen at least `cfg.min_word_freq`
    /// times (lowercased if `cfg.lowercase`).
    pub words: Vocab,
    /// `<pad>` = 0, `<unk>` = 1, then every character of the training words (case kept).
    pub chars: Vocab,
    /// The 17 UPOS tags, in the order of the UD guidelines.
    pub tags: Vocab,
    /// How words were mapped to ids when the vocabularies were built.
    pub cfg: TaggingVocabConfig,
}

/// A sentence as ids. `tags` is empty for untagged input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedSentence {
    /// Word ids, one per word.
    pub words: Vec<u32>,
    /// Character ids of each word (long words cut to [`MAX_WORD_CHARS`]).
    pub chars: Vec<Vec<u32>>,
    /// Tag ids, one per word (empty for untagged input).
    pub tags: Vec<u32>,
}

impl EncodedSentence {
    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }
    /// True for a sentence without words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

impl TaggingVocabs {
    /// Builds the vocabularies from training sentences. Tags are the 17 UPOS tags in UD order;
    /// words and characters get `<pad>` = 0 and `<unk>` = 1.
    pub fn build(train: &[TaggedSentence], cfg: TaggingVocabConfig) -> Self {
        let norm = |w: &str| {
            let w = super::text::nfc(w);
            if cfg.lowercase {
                w.to_lowercase()
            } else {
                w.into_owned()
            }
        };
        let words = Vocab::build(
            train.iter().flat_map(|s| s.forms.iter().map(|w| norm(w))),
            cfg.min_word_freq,
            &[PAD, UNK],
        );
        let chars = Vocab::build(
            train.iter().flat_map(|s| {
                s.forms.iter().flat_map(|w| {
                    super::text::nfc(w)
                        .chars()
                        .map(String::from)
                        .collect::<Vec<_>>()
                })
            }),
            1,
            &[PAD, UNK],
        );
        let tags = Vocab::from_tokens(UPOS_TAGS.iter().map(|t| t.to_string()).collect(), None)
            .expect("UPOS tags are distinct");
        Self {
            words,
            chars,
            tags,
            cfg,
        }
    }

    /// How often each word id occurs in `sentences` (after lowercasing; `<unk>` counts the
    /// words outside the vocabulary), indexed by id.
    pub fn word_counts(&self, sentences: &[TaggedSentence]) -> Vec<usize> {
        let mut counts = vec![0; self.words.len()];
        for f in sentences.iter().flat_map(|s| &s.forms) {
            counts[self.word_id(f) as usize] += 1;
        }
        counts
    }

    /// Writes `words.json`, `chars.json`, `tags.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        self.words.save(&dir.join(WORDS_FILE))?;
        self.chars.save(&dir.join(CHARS_FILE))?;
        self.tags.save(&dir.join(TAGS_FILE))
    }

    /// The three vocabularies as companion files of a model's record
    /// ([`crate::checkpoint::CheckpointInfo::files`]): written inside the weights file and
    /// beside it when the trainer saves the model, never before.
    pub fn files(&self) -> std::collections::BTreeMap<String, String> {
        [
            (WORDS_FILE, &self.words),
            (CHARS_FILE, &self.chars),
            (TAGS_FILE, &self.tags),
        ]
        .into_iter()
        .map(|(f, v)| (f.to_string(), v.to_json()))
        .collect()
    }

    /// Reads the vocabularies of the tagger in `dir` whose record is `info` (the copies in
    /// its weights file, else `words.json`, `chars.json`, `tags.json`); `cfg` comes from the
    /// model's config.
    pub fn load(
        dir: &Path,
        info: &crate::checkpoint::CheckpointInfo,
        cfg: TaggingVocabConfig,
    ) -> Result<Self> {
        let load = |f: &str| {
            let p = dir.join(f);
            if !info.files.contains_key(f) && !p.is_file() {
                return Err(Error::checkpoint(
                    &p,
                    "vocabulary file is missing: a tagger directory holds model.safetensors, config.json, \
                     words.json, chars.json and tags.json",
                ));
            }
            Vocab::load_companion(dir, info, f)
        };
        let v = Self {
            words: load(WORDS_FILE)?,
            chars: load(CHARS_FILE)?,
            tags: load(TAGS_FILE)?,
            cfg,
        };
        for (f, voc) in [(WORDS_FILE, &v.words), (CHARS_FILE, &v.chars)] {
            if voc.get(PAD) != Some(0) || voc.unk_id().is_none() {
                return Err(Error::checkpoint(
                    dir.join(f),
                    "expected <pad> at id 0 and an <unk> token",
                ));
            }
        }
        Ok(v)
    }

    /// The word id of a form (NFC-normalised, [`super::text::nfc`], and lowercased if
    /// configured; `<unk>` if unseen).
    pub fn word_id(&self, form: &str) -> u32 {
        let form = super::text::nfc(form);
        let form = form.as_ref();
        let w = if self.cfg.lowercase {
            self.words.id(&form.to_lowercase())
        } else {
            self.words.id(form)
        };
        w.expect("word vocabulary has <unk>")
    }

    /// The character ids of a form (NFC-normalised, [`super::text::nfc`]), shortened to
    /// [`MAX_WORD_CHARS`].
    pub fn char_ids(&self, form: &str) -> Vec<u32> {
        let ids: Vec<u32> = super::text::nfc(form)
            .chars()
            .map(|c| {
                let mut buf = [0u8; 4];
                self.chars
                    .id(c.encode_utf8(&mut buf))
                    .expect("char vocabulary has <unk>")
            })
            .collect();
        if ids.len() <= MAX_WORD_CHARS {
            ids
        } else {
            let half = MAX_WORD_CHARS / 2;
            [&ids[..half], &ids[ids.len() - half..]].concat()
        }
    }

    /// Encodes untagged words.
    pub fn encode_words<S: AsRef<str>>(&self, forms: &[S]) -> EncodedSentence {
        EncodedSentence {
            words: forms.iter().map(|f| self.word_id(f.as_ref())).collect(),
            chars: forms.iter().map(|f| self.char_ids(f.as_ref())).collect(),
            tags: Vec::new(),
        }
    }

    /// Encodes a tagged sentence; a tag outside the tag vocabulary is an error.
    pub fn encode(&self, s: &TaggedSentence) -> Result<EncodedSentence> {
        let mut e = self.encode_words(&s.forms);
        e.tags = s
            .upos
            .iter()
            .map(|t| {
                self.tags
                    .get(t)
                    .ok_or_else(|| Error::config("tag", format!("`{t}` is not a UPOS tag")))
            })
            .collect::<Result<_>>()?;
        Ok(e)
    }
}

/// A padded batch of sentences (see the module docs).
#[derive(Debug, Clone)]
pub struct TagBatch {
    /// Word ids `(B·T)` row-major on the host, `<pad>` = 0 past each length (the model may
    /// apply word dropout before the lookup).
    pub words: Vec<u32>,
    /// Gold tags `(B, T)` u32 (0 at padding); `None` for untagged input.
    pub tags: Option<Tensor>,
    /// `(B, T)` f32: 1 at real tokens, 0 at padding.
    pub mask: Tensor,
    /// Sentence lengths `(B)`.
    pub lengths: Vec<usize>,
    /// Character ids `(N, L)` u32 of the N distinct words of the batch.
    pub chars: Tensor,
    /// Length of each of the N words.
    pub char_lengths: Vec<usize>,
    /// `(B·T)` u32: the row of `chars` for each token (0 at padding).
    pub word_index: Tensor,
    /// `B` and `T`.
    pub shape: (usize, usize),
}

impl TagBatch {
    /// Pads and stacks `sentences` on `device`.
    pub fn new(sentences: &[&EncodedSentence], device: &Device) -> Result<Self> {
        let b = sentences.len();
        let t = sentences.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let lengths: Vec<usize> = sentences.iter().map(|s| s.len()).collect();
        if let Some(i) = lengths.iter().position(|&l| l == 0) {
            return Err(Error::config(
                "batch",
                format!("sentence {i} of the batch is empty"),
            ));
        }
        let mut words = vec![0u32; b * t];
        let mut tags = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        let mut word_index = vec![0u32; b * t];
        let mut distinct: HashMap<&[u32], u32> = HashMap::new();
        let mut forms: Vec<&[u32]> = Vec::new();
        let tagged = sentences.iter().all(|s| s.tags.len() == s.len());
        for (i, s) in sentences.iter().enumerate() {
            for j in 0..s.len() {
                let k = i * t + j;
                words[k] = s.words[j];
                mask[k] = 1.0;
                if tagged {
                    tags[k] = s.tags[j];
                }
                let cs: &[u32] = &s.chars[j];
                let cs = if cs.is_empty() { &[1u32][..] } else { cs };
                word_index[k] = *distinct.entry(cs).or_insert_with(|| {
                    forms.push(cs);
                    forms.len() as u32 - 1
                });
            }
        }
        let l = forms.iter().map(|f| f.len()).max().unwrap_or(1);
        let mut chars = vec![0u32; forms.len() * l];
        for (n, f) in forms.iter().enumerate() {
            chars[n * l..n * l + f.len()].copy_from_slice(f);
        }
        Ok(Self {
            words,
            tags: if tagged {
                Some(Tensor::from_vec(tags, (b, t), device)?)
            } else {
                None
            },
            mask: Tensor::from_vec(mask, (b, t), device)?,
            lengths,
            chars: Tensor::from_vec(chars, (forms.len(), l), device)?,
            char_lengths: forms.iter().map(|f| f.len()).collect(),
            word_index: Tensor::from_vec(word_index, b * t, device)?,
            shape: (b, t),
        })
    }

    /// Number of real tokens.
    pub fn tokens(&self) -> usize {
        self.lengths.iter().sum()
    }
}

/// Encoded tagged sentences, batched by similar length ([`bucketed_plan`]).
#[derive(Debug, Clone)]
pub struct TaggingDataset {
    /// The sentences as ids, in corpus order.
    pub sentences: Vec<EncodedSentence>,
    device: Device,
}

/// The longest sentence a tagging dataset or tagger accepts, in words (EWT's longest has
/// 159): memory grows with the longest sentence of a batch, and a "sentence" of 100,000
/// words is a file without sentence breaks, not a sentence.
pub const MAX_SENTENCE_WORDS: usize = 1000;

impl TaggingDataset {
    /// Encodes `sentences` with `vocabs`. A sentence longer than [`MAX_SENTENCE_WORDS`] is an
    /// error naming it (by position and first words).
    pub fn new(
        sentences: &[TaggedSentence],
        vocabs: &TaggingVocabs,
        device: &Device,
    ) -> Result<Self> {
        if let Some((i, s)) = sentences
            .iter()
            .enumerate()
            .find(|(_, s)| s.len() > MAX_SENTENCE_WORDS)
        {
            let start: Vec<&str> = s.forms.iter().take(5).map(String::as_str).collect();
            return Err(Error::config(
                "tagging data",
                format!(
                    "sentence {} (`{} …`) has {} words, more than the {MAX_SENTENCE_WORDS} a sentence may have: \
                     is a blank line between sentences missing? Split it into sentences",
                    i + 1,
                    start.join(" "),
                    s.len()
                ),
            ));
        }
        Ok(Self {
            sentences: sentences
                .iter()
                .map(|s| vocabs.encode(s))
                .collect::<Result<_>>()?,
            device: device.clone(),
        })
    }

    /// Number of tokens over all sentences.
    pub fn tokens(&self) -> usize {
        self.sentences.iter().map(EncodedSentence::len).sum()
    }
}

impl Dataset for TaggingDataset {
    type Batch = TagBatch;

    fn len(&self) -> usize {
        self.sentences.len()
    }

    fn batch(&self, indices: &[usize]) -> Result<TagBatch> {
        let picked: Vec<&EncodedSentence> = indices.iter().map(|&i| &self.sentences[i]).collect();
        TagBatch::new(&picked, &self.device)
    }

    fn epoch_plan(&self, batch_size: usize, rng: Option<&mut DataRng>) -> Vec<Vec<usize>> {
        let lengths: Vec<usize> = self.sentences.iter().map(EncodedSentence::len).collect();
        bucketed_plan(&lengths, batch_size, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(words: &str, tags: &str) -> TaggedSentence {
        let forms: Vec<String> = words.split(' ').map(String::from).collect();
        TaggedSentence {
            xpos: vec!["_".into(); forms.len()],
            forms,
            upos: tags.split(' ').map(String::from).collect(),
        }
    }

    #[test]
    fn vocabs_round_trip_and_batches_pad_and_share_words() -> Result<()> {
        let train = vec![
            sent("The cat sat .", "DET NOUN VERB PUNCT"),
            sent("the cat", "DET NOUN"),
        ];
        let v = TaggingVocabs::build(&train, TaggingVocabConfig::default());
        assert_eq!(v.words.tokens(), [PAD, UNK, "cat", "the"]);
        assert_eq!(v.tags.len(), 17);
        assert_eq!(v.word_id("CAT"), 2);
        assert_eq!(v.word_id("dog"), 1);
        assert_eq!(v.word_counts(&train), [0, 2, 2, 2]); // "sat" and "." are below min_freq
        let long = "x".repeat(40) + "ing";
        assert_eq!(v.char_ids(&long).len(), MAX_WORD_CHARS);
        let dir = tempfile::tempdir().unwrap();
        v.save(dir.path())?;
        // files beside the weights (a directory without a record) …
        let bare = crate::checkpoint::CheckpointInfo::new("t", &serde_json::json!({}), "d")?;
        assert_eq!(TaggingVocabs::load(dir.path(), &bare, v.cfg)?, v);
        // … or the copies in the record, which win over the files
        let mut info = bare.clone();
        info.files = v.files();
        std::fs::write(
            dir.path().join(WORDS_FILE),
            "{\"tokens\": [\"<pad>\", \"<unk>\", \"the\", \"cat\"]}",
        )
        .unwrap();
        assert_eq!(TaggingVocabs::load(dir.path(), &info, v.cfg)?, v);

        let ds = TaggingDataset::new(&train, &v, &Device::Cpu)?;
        let b = ds.batch(&[0, 1])?;
        assert_eq!(b.shape, (2, 4));
        assert_eq!(b.lengths, [4, 2]);
        assert_eq!(b.words, [3, 2, 1, 1, 3, 2, 0, 0]);
        assert_eq!(
            b.mask.to_vec2::<f32>()?,
            [[1., 1., 1., 1.], [1., 1., 0., 0.]]
        );
        // "The", "cat", "sat", ".", "the": 5 distinct forms ("cat" shared).
        assert_eq!(b.char_lengths, [3, 3, 3, 1, 3]);
        assert_eq!(b.word_index.to_vec1::<u32>()?, [0, 1, 2, 3, 4, 1, 0, 0]);
        assert_eq!(b.tags.unwrap().to_vec2::<u32>()?[1], [5, 7, 0, 0]);
        let e = TaggingDataset::new(&[sent("x", "NOPE")], &v, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("NOPE"), "{e}");
        Ok(())
    }

    #[test]
    fn a_sentence_beyond_the_cap_is_refused_naming_it() {
        let ok = sent("The cat sat .", "DET NOUN VERB PUNCT");
        let long = TaggedSentence {
            forms: vec!["word".to_string(); MAX_SENTENCE_WORDS + 1],
            upos: vec!["NOUN".to_string(); MAX_SENTENCE_WORDS + 1],
            xpos: Vec::new(),
        };
        let v = TaggingVocabs::build(std::slice::from_ref(&ok), TaggingVocabConfig::default());
        let e = TaggingDataset::new(&[ok, long], &v, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sentence 2") && e.contains("1001 words"), "{e}");
    }
}
