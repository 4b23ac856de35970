//! neka's CPU kernels for the CNN layers, one file per op, each ONE candle custom op with its
//! backward pass written out, through neka-common's one adapter
//! ([`neka_common::kernels::Fused`]):
//!
//! | file | op | layer (and its candle-op twin) |
//! |---|---|---|
//! | [`conv`] | convolution, + ReLU, + `k × k` max pool fused | [`crate::conv::Conv2d`] |
//! | [`geometry`] | a convolution's sizes, im2col and col2im | |
//! | [`pool`] | max pooling (any kernel / stride / padding) | [`crate::pool::Pool2d`] |
//! | [`batch_norm`] | train-mode batch norm (+ ReLU) | [`crate::norm::BatchNorm2d`] |
//!
//! All are CPU only and f32 / f64 only. Each layer picks between its kernel and candle's ops
//! in one place, from [`neka_common::kernels::fused_applies`] (the one switch,
//! [`neka_common::kernels::KernelPath`]); the tests hold the two paths equal.

pub mod batch_norm;
pub mod conv;
pub mod geometry;
pub mod pool;

pub use batch_norm::BatchNormTrainOp;
pub use conv::{conv2d, Conv2dOp};
pub use geometry::ConvGeometry;
pub use neka_common::kernels::KernelFloat;
pub use pool::{max_pool2d, MaxPool2dOp};
