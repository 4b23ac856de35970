//! One long token stream cut for truncated BPTT.
//!
//! The stream is split into `B` contiguous parallel streams (row `b` holds tokens
//! `b·N … (b+1)·N`), and each batch is the next chunk of `T` steps of all rows:
//!
//! ```text
//! chunk k:  x = stream[:, kT … kT+T]      y = stream[:, kT+1 … kT+T+1]   (B, T) each
//! ```
//!
//! so the state a model ends chunk `k` with is the right state to start chunk `k + 1` with
//! (detached: gradients stop at the chunk boundary). Batches therefore always come in order;
//! [`Dataset::epoch_plan`] never shuffles, and one "example" is one chunk.

use super::text::{find_file, read_to_string};
use super::Dataset;
use crate::vocab::{Vocab, UNK};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

/// The fewest characters [`CharCorpus::read`] accepts.
pub const MIN_CHARS: usize = 1000;

/// A text as a character stream: its character vocabulary (with `<unk>`) and the text as
/// ids, split into a training head and a held-out tail — what a character language model
/// trains on.
#[derive(Debug, Clone)]
pub struct CharCorpus {
    /// Where the text came from.
    pub path: PathBuf,
    /// The text's characters (with `<unk>`).
    pub vocab: Vocab,
    /// The whole text as character ids.
    pub ids: Vec<u32>,
    /// `ids[..split]` trains, `ids[split..]` validates.
    pub split: usize,
}

impl CharCorpus {
    /// Reads `path` (plain or gzip), normalises it to NFC ([`super::text::nfc`]), builds the
    /// vocabulary of its characters and holds out
    /// the last `held_out_percent` % of the text (rounded down) for validation. A text
    /// shorter than [`MIN_CHARS`] is an error naming the file.
    pub fn read(path: &Path, held_out_percent: usize) -> Result<Self> {
        let content = super::text::read_to_string(path)?;
        Self::from_text(&content, path, held_out_percent)
    }

    /// [`CharCorpus::read`] for a text already in memory; `path` names where it came from
    /// (in messages and [`CharCorpus::path`]).
    pub fn from_text(content: &str, path: &Path, held_out_percent: usize) -> Result<Self> {
        // NFC: `ä` is one character whether the file spells it composed or decomposed
        let chars: Vec<String> = super::text::nfc(content)
            .chars()
            .map(String::from)
            .collect();
        if chars.len() < MIN_CHARS {
            return Err(Error::bad_data(
                path,
                format!(
                    "only {} characters; give a longer text (at least {MIN_CHARS})",
                    chars.len()
                ),
            ));
        }
        let vocab = Vocab::build(&chars, 1, &[UNK]);
        let ids: Vec<u32> = chars
            .iter()
            .map(|c| vocab.id(c).expect("built from this text"))
            .collect();
        let split = ids.len() * (100 - held_out_percent.min(100)) / 100;
        Ok(Self {
            path: path.to_path_buf(),
            vocab,
            ids,
            split,
        })
    }

    /// The training and validation streams: `streams` parallel rows cut in chunks of
    /// `chunk_len` ([`TokenStream::new`]).
    pub fn streams(
        &self,
        streams: usize,
        chunk_len: usize,
        device: &Device,
    ) -> Result<(TokenStream, TokenStream)> {
        Ok((
            TokenStream::new(&self.ids[..self.split], streams, chunk_len, device)?,
            TokenStream::new(&self.ids[self.split..], streams, chunk_len, device)?,
        ))
    }
}

/// A chunk of a [`TokenStream`]: inputs, next-token targets, and which chunk it is.
#[derive(Debug, Clone)]
pub struct StreamBatch {
    /// `(B, T)` u32 token ids.
    pub x: Tensor,
    /// `(B, T)` u32: the token after each input token.
    pub y: Tensor,
    /// 0 for the first chunk of an epoch: a model resets its carried state there.
    pub chunk: usize,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct TokenStream {
    /// `(B, N + 1)` row-major.
    rows: Vec<u32>,
    streams: usize,
    per_row: usize,
    chunk_len: usize,
    device: Device,
}

impl TokenStream {
    /// Cuts `ids` into `streams` rows of equal length (the remainder is dropped) and chunks of
    /// `chunk_len` steps. Errors when there is not enough text for one chunk.
    pub fn new(ids: &[u32], streams: usize, chunk_len: usize, device: &Device) -> Result<Self> {
        if streams == 0 || chunk_len == 0 {
            return Err(Error::config(
                "stream",
                "batch size and chunk length must be at least 1",
            ));
        }
        let per_row = ids.len().saturating_sub(1) / streams;
        if per_row < 1 {
            return Err(Error::config(
                "stream",
                format!(
                    "{} tokens are too few for {streams} parallel streams",
                    ids.len()
                ),
            ));
        }
        let rows = (0..streams)
            .flat_map(|b| ids[b * per_row..b * per_row + per_row + 1].iter().copied())
            .collect();
        Ok(Self {
            rows,
            streams,
            per_row,
            chunk_len,
            device: device.clone(),
        })
    }

    /// Tokens per parallel stream (what one epoch reads per row).
    pub fn steps_per_row(&self) -> usize {
        self.per_row
    }
}

impl Dataset for TokenStream {
    type Batch = StreamBatch;

    /// Number of chunks.
    fn len(&self) -> usize {
        self.per_row.div_ceil(self.chunk_len)
    }

    fn batch(&self, indices: &[usize]) -> Result<StreamBatch> {
        let &[k] = indices else {
            return Err(Error::config(
                "stream",
                "a token-stream batch is exactly one chunk",
            ));
        };
        let start = k * self.chunk_len;
        let t = self.chunk_len.min(self.per_row - start);
        let w = self.per_row + 1;
        let mut x = Vec::with_capacity(self.streams * t);
        let mut y = Vec::with_capacity(self.streams * t);
        for b in 0..self.streams {
            x.extend_from_slice(&self.rows[b * w + start..b * w + start + t]);
            y.extend_from_slice(&self.rows[b * w + start + 1..b * w + start + t + 1]);
        }
        Ok(StreamBatch {
            x: Tensor::from_vec(x, (self.streams, t), &self.device)?,
            y: Tensor::from_vec(y, (self.streams, t), &self.device)?,
            chunk: k,
        })
    }

    /// Chunks in order, one per batch (`batch_size` is the number of streams, fixed at
    /// construction).
    fn epoch_plan(
        &self,
        _batch_size: usize,
        _rng: Option<&mut crate::rng::DataRng>,
    ) -> Vec<Vec<usize>> {
        (0..self.len()).map(|k| vec![k]).collect()
    }
}

/// Multi30k's English training text, the default text of the character language model:
/// `<root>/multi30k/train.en[.gz]` under the data root (`data_dir`, else `$NEKA_DATA_DIR`),
/// else the English side of the Hub copy's `train.jsonl` (feature `hub`, one sentence a
/// line). Returns the text and the file it came from.
pub fn multi30k_english(data_dir: Option<&Path>) -> Result<(String, PathBuf)> {
    let Some(root) = super::vision::data_root(data_dir) else {
        return multi30k_english_from_hub();
    };
    let dir = root.join("multi30k");
    let path = find_file(&dir, "train.en").ok_or_else(|| {
        Error::DataNotFound(format!(
            "{}: no train.en or train.en.gz; give a text file (`text`)",
            dir.display()
        ))
    })?;
    Ok((read_to_string(&path)?, path))
}

#[cfg(feature = "hub")]
fn multi30k_english_from_hub() -> Result<(String, PathBuf)> {
    use super::parallel::MULTI30K_HUB_REPO;
    use super::text::read_lines;
    let path = crate::hub::dataset_file(MULTI30K_HUB_REPO, "train.jsonl").map_err(|e| {
        Error::DataNotFound(format!(
            "no text to learn: no text file (`text`) and no data directory given, and the Hub \
             has not given Multi30k: {e}. Give a text file, or a data directory (`data_dir`, or \
             NEKA_DATA_DIR) holding multi30k/train.en.gz"
        ))
    })?;
    let mut text = String::new();
    for (i, line) in read_lines(&path)?.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::bad_line(&path, i + 1, format!("not JSON: {e}")))?;
        let en = v["en"]
            .as_str()
            .ok_or_else(|| Error::bad_line(&path, i + 1, "no string field `en`"))?;
        text.push_str(en.trim_end());
        text.push('\n');
    }
    Ok((text, path))
}

#[cfg(not(feature = "hub"))]
fn multi30k_english_from_hub() -> Result<(String, PathBuf)> {
    Err(Error::DataNotFound(
        "no text to learn: give a text file (`text`), or a data directory (`data_dir`, or \
         NEKA_DATA_DIR) holding multi30k/train.en.gz, or build with the `hub` feature to download Multi30k"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_continue_each_row() {
        let ids: Vec<u32> = (0..23).collect();
        let s = TokenStream::new(&ids, 2, 4, &Device::Cpu).unwrap();
        assert_eq!(s.steps_per_row(), 11);
        assert_eq!(s.len(), 3);
        let b0 = s.batch(&[0]).unwrap();
        assert_eq!(
            b0.x.to_vec2::<u32>().unwrap(),
            [[0, 1, 2, 3], [11, 12, 13, 14]]
        );
        assert_eq!(
            b0.y.to_vec2::<u32>().unwrap(),
            [[1, 2, 3, 4], [12, 13, 14, 15]]
        );
        let b2 = s.batch(&[2]).unwrap(); // the short last chunk
        assert_eq!(b2.x.to_vec2::<u32>().unwrap(), [[8, 9, 10], [19, 20, 21]]);
        assert_eq!(b2.y.to_vec2::<u32>().unwrap(), [[9, 10, 11], [20, 21, 22]]);
        assert_eq!(s.epoch_plan(99, None), vec![vec![0], vec![1], vec![2]]);
        assert!(TokenStream::new(&ids[..2], 5, 4, &Device::Cpu).is_err());
    }
}
