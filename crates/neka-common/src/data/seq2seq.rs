//! Translation data: sentence pairs as ids, batched by source length — what an
//! encoder–decoder (`neka-seq2seq`) trains on; the pairs come from [`super::parallel`].
//!
//! ```text
//! source  x_1 … x_S                 → src (B, S), src_lengths, src_mask (B, S)
//! target  y_1 … y_n                 → tgt_in  = <bos> y_1 … y_n   (B, T = n + 1)
//!                                     tgt_out = y_1 … y_n <eos>   (B, T), tgt_mask (B, T)
//! ```
//!
//! The decoder reads `tgt_in` and is trained to predict `tgt_out` (teacher forcing).

use super::{bucketed_plan, Dataset};
use crate::rng::DataRng;
use crate::vocab::{Vocab, BOS, EOS, PAD, UNK};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::path::Path;

/// The source vocabulary's file name in a model directory.
pub const SRC_VOCAB_FILE: &str = "src_vocab.json";
/// The target vocabulary's file name in a model directory.
pub const TGT_VOCAB_FILE: &str = "tgt_vocab.json";

/// Id of `<pad>` (the specials' ids are the same in both vocabularies).
pub const PAD_ID: u32 = 0;
/// Id of `<unk>`, what unknown tokens map to.
pub const UNK_ID: u32 = 1;
/// Id of `<bos>`, the decoder's first input.
pub const BOS_ID: u32 = 2;
/// Id of `<eos>`, the end of a target sentence.
pub const EOS_ID: u32 = 3;

/// Source and target vocabularies (`<pad> <unk> <bos> <eos>` first, in that order).
#[derive(Debug, Clone, PartialEq)]
pub struct Seq2SeqVocabs {
    /// The source-language vocabulary.
    pub src: Vocab,
    /// The target-language vocabulary.
    pub tgt: Vocab,
}

impl Seq2SeqVocabs {
    /// Builds both vocabularies from training pairs; tokens seen fewer than `min_freq` times
    /// map to `<unk>`.
    pub fn build(pairs: &[(Vec<String>, Vec<String>)], min_freq: usize) -> Self {
        let specials = [PAD, UNK, BOS, EOS];
        Self {
            src: Vocab::build(pairs.iter().flat_map(|p| &p.0), min_freq, &specials),
            tgt: Vocab::build(pairs.iter().flat_map(|p| &p.1), min_freq, &specials),
        }
    }

    /// Writes both vocabularies as JSON into `dir` ([`SRC_VOCAB_FILE`], [`TGT_VOCAB_FILE`]),
    /// creating it.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        self.src.save(&dir.join(SRC_VOCAB_FILE))?;
        self.tgt.save(&dir.join(TGT_VOCAB_FILE))
    }

    /// The two vocabularies as companion files of a model's record
    /// ([`crate::checkpoint::CheckpointInfo::files`]): written inside the weights file
    /// and beside it when the trainer saves the model, never before.
    pub fn files(&self) -> std::collections::BTreeMap<String, String> {
        [(SRC_VOCAB_FILE, &self.src), (TGT_VOCAB_FILE, &self.tgt)]
            .into_iter()
            .map(|(f, v)| (f.to_string(), v.to_json()))
            .collect()
    }

    /// Reads the vocabularies of the model in `dir` whose record is `info` (the copies in
    /// its weights file, else the files written by [`Seq2SeqVocabs::save`]).
    pub fn load(dir: &Path, info: &crate::checkpoint::CheckpointInfo) -> Result<Self> {
        let load = |f: &str| {
            let p = dir.join(f);
            let v = Vocab::load_companion(dir, info, f)?;
            let ok = [PAD, UNK, BOS, EOS]
                .iter()
                .enumerate()
                .all(|(i, s)| v.get(s) == Some(i as u32));
            if !ok {
                return Err(Error::checkpoint(
                    &p,
                    "expected <pad> <unk> <bos> <eos> as ids 0-3",
                ));
            }
            Ok(v)
        };
        Ok(Self {
            src: load(SRC_VOCAB_FILE)?,
            tgt: load(TGT_VOCAB_FILE)?,
        })
    }

    /// Source tokens → ids (NFC-normalised first, [`super::text::nfc`], as the vocabulary
    /// was built from tokenized, hence NFC, text); unknown tokens → `<unk>`.
    pub fn encode_src<S: AsRef<str>>(&self, tokens: &[S]) -> Vec<u32> {
        tokens
            .iter()
            .map(|t| {
                self.src
                    .get(&super::text::nfc(t.as_ref()))
                    .unwrap_or(UNK_ID)
            })
            .collect()
    }

    /// Target tokens → ids (looked up as given); unknown tokens → `<unk>`.
    pub fn encode_tgt<S: AsRef<str>>(&self, tokens: &[S]) -> Vec<u32> {
        tokens
            .iter()
            .map(|t| self.tgt.get(t.as_ref()).unwrap_or(UNK_ID))
            .collect()
    }

    /// Target ids → tokens, up to the first `<eos>`, without `<bos>`/`<pad>`.
    pub fn decode_tgt(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .take_while(|&&i| i != EOS_ID)
            .filter(|&&i| i != BOS_ID && i != PAD_ID)
            .map(|&i| self.tgt.token(i).unwrap_or(UNK).to_string())
            .collect()
    }
}

/// A padded batch of source sentences.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    /// `(B, S)` u32, `<pad>` past each length.
    pub ids: Tensor,
    /// `S_b`, the real tokens of each sentence (`1..=S`).
    pub lengths: Vec<usize>,
    /// `(B, S)` f32: 1 at real tokens.
    pub mask: Tensor,
}

impl SourceBatch {
    /// Pads `sentences` (ids, none empty) to the longest; an error for an empty sentence.
    pub fn new(sentences: &[&[u32]], device: &Device) -> Result<Self> {
        let (ids, lengths, mask) = pad(sentences, device)?;
        Ok(Self { ids, lengths, mask })
    }
}

fn pad(seqs: &[&[u32]], device: &Device) -> Result<(Tensor, Vec<usize>, Tensor)> {
    let b = seqs.len();
    let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
    if let Some(i) = lengths.iter().position(|&l| l == 0) {
        return Err(Error::config(
            "batch",
            format!("sequence {i} of the batch is empty"),
        ));
    }
    let t = lengths.iter().copied().max().unwrap_or(1);
    let mut ids = vec![PAD_ID; b * t];
    let mut mask = vec![0f32; b * t];
    for (i, s) in seqs.iter().enumerate() {
        ids[i * t..i * t + s.len()].copy_from_slice(s);
        mask[i * t..i * t + s.len()]
            .iter_mut()
            .for_each(|m| *m = 1.0);
    }
    Ok((
        Tensor::from_vec(ids, (b, t), device)?,
        lengths,
        Tensor::from_vec(mask, (b, t), device)?,
    ))
}

/// A training batch: sources, and targets shifted for teacher forcing.
#[derive(Debug, Clone)]
pub struct Seq2SeqBatch {
    /// The source sentences.
    pub src: SourceBatch,
    /// `(B, T)`: `<bos> y_1 … y_n`, padded.
    pub tgt_in: Tensor,
    /// `(B, T)`: `y_1 … y_n <eos>`, padded.
    pub tgt_out: Tensor,
    /// `(B, T)` f32.
    pub tgt_mask: Tensor,
    /// `n + 1` per row.
    pub tgt_lengths: Vec<usize>,
}

impl Seq2SeqBatch {
    /// Pads the sources and builds `tgt_in` / `tgt_out` from each pair `(source ids, target
    /// ids)` (targets without `<bos>`/`<eos>`); an error for an empty source.
    pub fn new(pairs: &[&(Vec<u32>, Vec<u32>)], device: &Device) -> Result<Self> {
        let srcs: Vec<&[u32]> = pairs.iter().map(|p| p.0.as_slice()).collect();
        let tin: Vec<Vec<u32>> = pairs
            .iter()
            .map(|p| std::iter::once(BOS_ID).chain(p.1.iter().copied()).collect())
            .collect();
        let tout: Vec<Vec<u32>> = pairs
            .iter()
            .map(|p| p.1.iter().copied().chain(std::iter::once(EOS_ID)).collect())
            .collect();
        let (tgt_in, tgt_lengths, tgt_mask) =
            pad(&tin.iter().map(Vec::as_slice).collect::<Vec<_>>(), device)?;
        let (tgt_out, _, _) = pad(&tout.iter().map(Vec::as_slice).collect::<Vec<_>>(), device)?;
        Ok(Self {
            src: SourceBatch::new(&srcs, device)?,
            tgt_in,
            tgt_out,
            tgt_mask,
            tgt_lengths,
        })
    }

    /// Target tokens predicted (including each `<eos>`).
    pub fn tgt_tokens(&self) -> usize {
        self.tgt_lengths.iter().sum()
    }
}

/// Encoded sentence pairs, batched by similar source length.
#[derive(Debug, Clone)]
pub struct Seq2SeqDataset {
    /// `(source ids, target ids)` per pair, targets without `<bos>`/`<eos>`.
    pub pairs: Vec<(Vec<u32>, Vec<u32>)>,
    device: Device,
}

impl Seq2SeqDataset {
    /// Encodes tokenized pairs with `vocabs` ([`Seq2SeqVocabs::encode_src`] /
    /// [`Seq2SeqVocabs::encode_tgt`]); batches are made on `device`.
    pub fn new(
        pairs: &[(Vec<String>, Vec<String>)],
        vocabs: &Seq2SeqVocabs,
        device: &Device,
    ) -> Self {
        Self {
            pairs: pairs
                .iter()
                .map(|(s, t)| (vocabs.encode_src(s), vocabs.encode_tgt(t)))
                .collect(),
            device: device.clone(),
        }
    }
}

impl Dataset for Seq2SeqDataset {
    type Batch = Seq2SeqBatch;

    fn len(&self) -> usize {
        self.pairs.len()
    }

    fn batch(&self, indices: &[usize]) -> Result<Seq2SeqBatch> {
        let picked: Vec<&(Vec<u32>, Vec<u32>)> = indices.iter().map(|&i| &self.pairs[i]).collect();
        Seq2SeqBatch::new(&picked, &self.device)
    }

    fn epoch_plan(&self, batch_size: usize, rng: Option<&mut DataRng>) -> Vec<Vec<usize>> {
        let lengths: Vec<usize> = self.pairs.iter().map(|p| p.0.len()).collect();
        bucketed_plan(&lengths, batch_size, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn vocabs_and_shifted_targets() -> Result<()> {
        let pairs = vec![
            (toks("ein hund"), toks("a dog")),
            (toks("ein mann läuft"), toks("a man runs")),
        ];
        let v = Seq2SeqVocabs::build(&pairs, 1);
        assert_eq!(&v.tgt.tokens()[..4], [PAD, UNK, BOS, EOS]);
        let dir = tempfile::tempdir().unwrap();
        v.save(dir.path())?;
        let mut info = crate::checkpoint::CheckpointInfo::new("s", &serde_json::json!({}), "d")?;
        assert_eq!(Seq2SeqVocabs::load(dir.path(), &info)?, v);
        info.files = v.files();
        std::fs::remove_file(dir.path().join(SRC_VOCAB_FILE)).unwrap();
        assert_eq!(Seq2SeqVocabs::load(dir.path(), &info)?, v);
        let ds = Seq2SeqDataset::new(&pairs, &v, &Device::Cpu);
        let b = ds.batch(&[0, 1])?;
        let a = v.tgt.get("a").unwrap();
        let dog = v.tgt.get("dog").unwrap();
        assert_eq!(b.tgt_in.to_vec2::<u32>()?[0], [BOS_ID, a, dog, PAD_ID]);
        assert_eq!(b.tgt_out.to_vec2::<u32>()?[0], [a, dog, EOS_ID, PAD_ID]);
        assert_eq!(b.tgt_mask.to_vec2::<f32>()?[0], [1., 1., 1., 0.]);
        assert_eq!(b.src.lengths, [2, 3]);
        assert_eq!(b.tgt_tokens(), 7);
        assert_eq!(v.decode_tgt(&[a, dog, EOS_ID, a]), ["a", "dog"]);
        assert_eq!(v.encode_src(&["katze"]), [UNK_ID]);
        Ok(())
    }
}
