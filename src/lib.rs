//! # neka
//!
//! A model zoo on [candle](https://github.com/huggingface/candle): CNN, Elman RNN, LSTM and
//! seq2seq models written next to the lecture's equations. This umbrella crate re-exports
//! the member crates and owns the runnable examples (`cargo run --release --example mnist_cnn`).
//!
//! | module | crate |
//! |---|---|
//! | [`common`] | `neka-common`: devices, seeding, data, training loop, checkpoints, metrics |
//! | [`cnn`] | `neka-cnn`: convolution, pooling, receptive fields, MnistNet, LeNet-5 |

pub use neka_cnn as cnn;
pub use neka_common as common;
