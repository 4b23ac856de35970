//! What a CNN of the zoo implements to be found by name: [`Cnn`] (what every built model
//! offers), [`Registered`] (how the registry builds, configures and summarises it) and the
//! `register!` macro that writes both for a model following the zoo's conventions. The model
//! files depend on this contract; the [registry](super::registry) depends on the model files.

use crate::summary::Summary;
use crate::{Conv2d, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What every CNN of the zoo offers once built, whatever its layers.
pub trait Cnn: std::fmt::Debug + Send + Sync {
    /// `(B, C, H, W)` normalised images → `(B, classes)` logits; `train` as in
    /// `ModuleT::forward_t` (dropout, batch statistics, whether a backward pass follows).
    fn logits(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor>;
    /// The first convolution (its weights are the filters `mnist_cnn inspect` draws).
    fn conv1(&self) -> &Conv2d;
    /// Each convolutional stage's output for `xs` (inference mode), named.
    fn feature_maps(&self, xs: &Tensor) -> candle_core::Result<Vec<(&'static str, Tensor)>>;
}

/// A CNN the registry can build by name: what its file implements (usually through
/// `register!`) to be listed in [`MODELS`](super::registry::MODELS).
pub trait Registered: Cnn + Sized + 'static {
    /// Its `--model` name and the `model` of its `config.json`.
    const NAME: &'static str;
    /// Its config, as `config.json` stores it. Its fields include the data's `in_channels`,
    /// `image_size` and `num_classes`; for new data the others keep their defaults.
    type Config: Serialize + DeserializeOwned + Default;
    /// Builds the model (its tensors from `vb`).
    fn build(cfg: &Self::Config, vb: VarBuilder) -> Result<Self>;
    /// Shapes, parameters, receptive fields and MACs per layer.
    fn summary(cfg: &Self::Config) -> Result<Summary>;
}

/// `register!(Model, "name", forward)` implements [`Cnn`] and [`Registered`] for a model that
/// follows the zoo's conventions: `Model::new(&Config, vb)`, `Model::conv1()`,
/// `Model::feature_maps(xs)`, `Config::summary()`, and `forward(xs, train)` for the logits
/// (`forward_t` of `ModuleT`, or the model's own), with `Config` the model file's.
macro_rules! register {
    ($model:ty, $name:literal, $forward:ident) => {
        impl $crate::models::cnn::Cnn for $model {
            fn logits(
                &self,
                xs: &candle_core::Tensor,
                train: bool,
            ) -> candle_core::Result<candle_core::Tensor> {
                self.$forward(xs, train)
            }
            fn conv1(&self) -> &$crate::Conv2d {
                <$model>::conv1(self)
            }
            fn feature_maps(
                &self,
                xs: &candle_core::Tensor,
            ) -> candle_core::Result<Vec<(&'static str, candle_core::Tensor)>> {
                <$model>::feature_maps(self, xs)
            }
        }

        impl $crate::models::cnn::Registered for $model {
            const NAME: &'static str = $name;
            type Config = Config;
            fn build(cfg: &Config, vb: candle_nn::VarBuilder) -> $crate::Result<Self> {
                Self::new(cfg, vb)
            }
            fn summary(cfg: &Config) -> $crate::Result<$crate::Summary> {
                cfg.summary()
            }
        }
    };
}
pub(crate) use register;
