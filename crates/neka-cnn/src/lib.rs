//! # neka-cnn
//!
//! Convolutional networks on candle, written next to the lecture: convolution with kernel
//! size, padding (`same` = (k−1)/2), stride, dilation and groups ([`conv`]); max and average
//! pooling ([`pool`]); the output-size and receptive-field arithmetic ([`arith`]) and a
//! per-layer [`summary`]; the lecture's worked examples ([`lecture`]); batch normalisation
//! ([`norm`]); and three models, [`MnistNet`] (pytorch/examples' MNIST `Net`,
//! weight-compatible with PyTorch), [`LeNet5`] and a small [`ResNet`] (residual blocks with
//! identity and 1×1-projection shortcuts, torchvision's tensor names). On CPU the layers run on neka's [`kernels`] (convolution with ReLU and max-pool
//! fused, max pooling, batch norm), each with its plain candle-op twin, selected by
//! [`neka_common::kernels::KernelPath`].
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

pub mod arith;
pub mod conv;
pub mod figures;
pub mod inspect;
pub mod kernels;
pub mod lecture;
pub mod lenet5;
pub mod mnist_net;
pub mod norm;
pub mod pipeline;
pub mod pool;
pub mod resnet;
pub mod summary;

pub use conv::{conv1x1, conv2d, Conv2d, Conv2dConfig, ConvRoute, Padding};
pub use lenet5::LeNet5;
pub use mnist_net::MnistNet;
pub use norm::{batch_norm2d, BatchNorm2d};
pub use pool::{Pool2d, PoolKind};
pub use resnet::ResNet;
pub use summary::{summarize, LayerSpec, Summary};

use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;

/// neka's one error type (from neka-common): every library crate of the zoo returns it.
pub use neka_common::{Error, Result};

/// How the zoo's CNNs train unless told otherwise (`mnist_cnn`'s defaults): 3 epochs of
/// batches of 64 with AdamW at 1e-3 (PyTorch's defaults otherwise), constant rate, no
/// clipping; validation accuracy picks the best epoch.
pub fn default_train_config() -> neka_common::train::TrainConfig {
    let adamw = neka_common::optim::OptimizerConfig::adamw(1e-3);
    neka_common::train::TrainConfig::new(3, 64, adamw).eval_batch(1000)
}

/// The CNNs of the zoo, chosen by name (`mnist-net`, `lenet5`, `resnet`) — what the examples
/// and checkpoints use. Each variant carries its model.
#[derive(Debug, Clone)]
pub enum CnnModel {
    MnistNet(MnistNet),
    LeNet5(LeNet5),
    ResNet(ResNet),
}

/// The names [`CnnModel::from_name`] accepts.
pub const MODEL_NAMES: [&str; 3] = ["mnist-net", "lenet5", "resnet"];

impl CnnModel {
    /// Builds the model `name` for images of `in_channels × image_size²` and `num_classes`
    /// classes, returning it with its config as JSON (for `config.json`).
    pub fn from_name(
        name: &str,
        in_channels: usize,
        image_size: usize,
        num_classes: usize,
        vb: VarBuilder,
    ) -> Result<(Self, serde_json::Value)> {
        match name {
            "mnist-net" => {
                let cfg = mnist_net::Config {
                    in_channels,
                    image_size,
                    num_classes,
                    ..Default::default()
                };
                let json = serde_json::to_value(&cfg)
                    .map_err(|e| Error::config("model config", e.to_string()))?;
                Ok((Self::MnistNet(MnistNet::new(&cfg, vb)?), json))
            }
            "lenet5" => {
                let cfg = lenet5::Config {
                    in_channels,
                    image_size,
                    num_classes,
                };
                let json = serde_json::to_value(&cfg)
                    .map_err(|e| Error::config("model config", e.to_string()))?;
                Ok((Self::LeNet5(LeNet5::new(&cfg, vb)?), json))
            }
            "resnet" => {
                let cfg = resnet::Config {
                    in_channels,
                    image_size,
                    num_classes,
                    ..Default::default()
                };
                let json = serde_json::to_value(&cfg)
                    .map_err(|e| neka_common::Error::config("model config", e.to_string()))?;
                Ok((Self::ResNet(ResNet::new(&cfg, vb)?), json))
            }
            other => Err(Error::config(
                "model",
                format!("`{other}`: expected one of {MODEL_NAMES:?}"),
            )),
        }
    }

    /// Builds the model `name` from a `config.json` `config` value.
    pub fn from_config(name: &str, config: &serde_json::Value, vb: VarBuilder) -> Result<Self> {
        let bad =
            |e: serde_json::Error| Error::config(format!("config of `{name}`"), e.to_string());
        match name {
            "mnist-net" => Ok(Self::MnistNet(MnistNet::new(
                &serde_json::from_value(config.clone()).map_err(bad)?,
                vb,
            )?)),
            "lenet5" => Ok(Self::LeNet5(LeNet5::new(
                &serde_json::from_value(config.clone()).map_err(bad)?,
                vb,
            )?)),
            "resnet" => Ok(Self::ResNet(ResNet::new(
                &serde_json::from_value(config.clone()).map_err(bad)?,
                vb,
            )?)),
            other => Err(Error::config(
                "model",
                format!("`{other}`: expected one of {MODEL_NAMES:?}"),
            )),
        }
    }

    /// The first convolution (its weights are the filters `mnist_cnn inspect` draws).
    pub fn conv1(&self) -> &Conv2d {
        match self {
            Self::MnistNet(m) => m.conv1(),
            Self::LeNet5(m) => m.conv1(),
            Self::ResNet(m) => m.conv1(),
        }
    }

    /// Each convolutional stage's output for `xs` (inference mode), named.
    pub fn feature_maps(&self, xs: &Tensor) -> Result<Vec<(&'static str, Tensor)>> {
        Ok(match self {
            Self::MnistNet(m) => m.feature_maps(xs)?,
            Self::LeNet5(m) => m.feature_maps(xs)?,
            Self::ResNet(m) => m.feature_maps(xs)?,
        })
    }

    /// The model's layer summary for a config value.
    pub fn summary_for(name: &str, config: &serde_json::Value) -> Result<Summary> {
        let bad =
            |e: serde_json::Error| Error::config(format!("config of `{name}`"), e.to_string());
        match name {
            "mnist-net" => serde_json::from_value::<mnist_net::Config>(config.clone())
                .map_err(bad)?
                .summary(),
            "lenet5" => serde_json::from_value::<lenet5::Config>(config.clone())
                .map_err(bad)?
                .summary(),
            "resnet" => serde_json::from_value::<resnet::Config>(config.clone())
                .map_err(bad)?
                .summary(),
            other => Err(Error::config(
                "model",
                format!("`{other}`: expected one of {MODEL_NAMES:?}"),
            )),
        }
    }
}

impl ModuleT for CnnModel {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Self::MnistNet(m) => m.forward_t(xs, train),
            Self::LeNet5(m) => m.forward_with(xs, train),
            Self::ResNet(m) => m.forward_t(xs, train),
        }
    }
}
