//! # neka-cnn
//!
//! Convolutional networks on candle, written next to the lecture. How to add it to a project,
//! train on your own images and use the shipped model: the
//! [README](https://github.com/neka-rs/neka/tree/main/crates/neka-cnn#readme) (its examples run
//! as doctests). The tree shows the parts:
//!
//! | module | what |
//! |---|---|
//! | [`layers`] | convolution with kernel size, padding (`same` = (k−1)/2), stride, dilation and groups ([`conv`]); max and average pooling ([`pool`]); batch normalisation ([`norm`]) |
//! | [`models`] | [`MnistNet`] (pytorch/examples' MNIST `Net`, weight-compatible with PyTorch), [`LeNet5`], a small [`ResNet`] (residual blocks with identity and 1×1-projection shortcuts, torchvision's tensor names); the [`models::registry`] that finds them by name ([`CnnModel`]) |
//! | [`arith`], [`summary`] | the output-size and receptive-field arithmetic, and a per-layer summary (shapes, parameters, MACs) |
//! | [`kernels`] | on CPU the layers run on neka's kernels (convolution with ReLU and max-pool fused, max pooling, batch norm), each with its plain candle-op twin, selected by [`neka_common::kernels::KernelPath`] |
//! | [`loaded_model`] | a trained model directory loaded for use: predict, evaluate, feature maps |
//! | `images` (feature) | image files (PNG, JPEG) decoded within bounds and made the model's input |
//! | `inspect` (feature `plot`) | drawing the first layer's filters and an image's feature maps |
//!
//! Features `images` (the `image` and `zune-jpeg` decoders) and `plot` (plotters) are on by
//! default; `default-features = false` leaves the layers, models, kernels and model loading.
//!
//! The lecture's worked examples and figures live in the `neka-lecture` crate, not here.
//!
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use neka_cnn::{mnist_net, MnistNet};
//! let cfg = mnist_net::Config::default();
//! println!("{}", cfg.summary()?);
//! let varmap = candle_nn::VarMap::new();
//! let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, &Device::Cpu);
//! let net = MnistNet::new(&cfg, vb)?;
//! let logits = net.forward_t(&Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu)?, false)?;
//! assert_eq!(logits.dims(), &[2, 10]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod arith;
#[cfg(feature = "images")]
pub mod images;
#[cfg(feature = "plot")]
pub mod inspect;
pub mod kernels;
pub mod layers;
pub mod loaded_model;
pub mod models;
pub mod summary;

// The layer and model modules by their short names (`neka_cnn::conv`, `neka_cnn::resnet`, …).
pub use layers::{conv, norm, pool};
pub use models::{lenet5, mnist_net, resnet};

pub use conv::{conv1x1, conv2d, Conv2d, Conv2dConfig, ConvRoute, Padding};
pub use lenet5::LeNet5;
pub use mnist_net::MnistNet;
pub use models::registry::{MODELS, MODEL_NAMES};
pub use models::CnnModel;
pub use norm::{batch_norm2d, BatchNorm2d};
pub use pool::{Pool2d, PoolKind};
pub use resnet::ResNet;
pub use summary::{summarize, LayerSpec, Summary};

/// neka's one error type (from neka-common): every library crate of the zoo returns it.
pub use neka_common::{Error, Result};

/// How the zoo's CNNs train unless told otherwise (`mnist_cnn`'s defaults): 3 epochs of
/// batches of 64 with AdamW at 1e-3 (PyTorch's defaults otherwise), constant rate, no
/// clipping; validation accuracy picks the best epoch.
pub fn default_train_config() -> neka_common::train::TrainConfig {
    let adamw = neka_common::optim::OptimizerConfig::adamw(1e-3);
    neka_common::train::TrainConfig::new(3, 64, adamw).eval_batch(1000)
}

/// The crate README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
