//! Data: IDX files (MNIST, Fashion-MNIST), text files, datasets, splits and batching.

pub mod dataset;
pub mod idx;
pub mod stream;
pub mod text;
pub mod vision;

pub use dataset::{Dataset, ImageBatch};
pub use stream::{StreamBatch, TokenStream};
pub use vision::{ImageDataset, ImageSet, Normalize, VisionData, VisionDatasetKind};
