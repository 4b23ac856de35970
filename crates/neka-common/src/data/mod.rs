//! Data: IDX files (MNIST, Fashion-MNIST), datasets, splits and batching.

pub mod dataset;
pub mod idx;
pub mod vision;

pub use dataset::{Dataset, ImageBatch};
pub use vision::{ImageDataset, ImageSet, Normalize, VisionData, VisionDatasetKind};
