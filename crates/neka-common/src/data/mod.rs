//! Data: IDX files (MNIST, Fashion-MNIST), text, parallel text and CoNLL-U files, datasets, splits and
//! batching (bucketed by length for sequences).

pub mod conllu;
pub mod dataset;
pub mod idx;
pub mod parallel;
pub mod seq2seq;
pub mod stream;
pub mod tagging;
pub mod text;
pub mod vision;

pub use crate::checkpoint::Normalize;
pub use conllu::{TaggedSentence, Treebank};
pub use dataset::{bucketed_plan, Dataset, LabeledBatch, LabeledDataset};
pub use stream::{CharCorpus, StreamBatch, TokenStream};
pub use tagging::{TagBatch, TaggingDataset, TaggingVocabs};
pub use vision::{ImageSet, VisionData, VisionDatasetKind};
