#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

/// The translation data (it lives with the other tasks' data in `neka_common::data`).
pub use neka_common::data::seq2seq as data;
pub mod decode;
mod kernels;
pub mod model;
pub mod translator;

pub use data::{Seq2SeqBatch, Seq2SeqDataset, Seq2SeqVocabs, SourceBatch};
pub use decode::{beam_search, beam_search_batch, greedy, DecodeConfig, Hypothesis, MAX_BEAM};
pub use model::{default_train_config, AttentionKind, Config, Seq2Seq};
pub use neka_lstm::{CellType, Error, Result};
pub use translator::{Translator, PROBE_SENTENCE};
