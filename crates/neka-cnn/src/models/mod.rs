//! The zoo's CNNs, one file each, and the [`registry`] that finds them by name.
//!
//! [`CnnModel`] is what the examples, the demo and checkpoint loading hold: a registered model
//! built by name, behind one type.

pub mod cnn;
pub mod lenet5;
pub mod mnist_net;
pub mod registry;
pub mod resnet;

use crate::summary::Summary;
use crate::{Conv2d, Result};
use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;
use registry::{Cnn, Entry};
use std::sync::Arc;

/// A CNN of the zoo chosen by name (`mnist-net`, `lenet5`, `resnet`: [`registry::MODEL_NAMES`])
/// — what the examples and checkpoints use.
#[derive(Debug, Clone)]
pub struct CnnModel {
    name: &'static str,
    net: Arc<dyn Cnn>,
}

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
        let entry = Entry::find(name)?;
        let config = entry.config_for(in_channels, image_size, num_classes)?;
        let net = entry.build(&config, vb)?;
        Ok((
            Self {
                name: entry.name,
                net,
            },
            config,
        ))
    }

    /// Builds the model `name` from a `config.json` `config` value.
    pub fn from_config(name: &str, config: &serde_json::Value, vb: VarBuilder) -> Result<Self> {
        let entry = Entry::find(name)?;
        Ok(Self {
            name: entry.name,
            net: entry.build(config, vb)?,
        })
    }

    /// The model's registry name (`mnist-net`, `lenet5`, `resnet`, …).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The first convolution (its weights are the filters `mnist_cnn inspect` draws).
    pub fn conv1(&self) -> &Conv2d {
        self.net.conv1()
    }

    /// Each convolutional stage's output for `xs` (inference mode), named.
    pub fn feature_maps(&self, xs: &Tensor) -> Result<Vec<(&'static str, Tensor)>> {
        Ok(self.net.feature_maps(xs)?)
    }

    /// The model's layer summary for a config value.
    pub fn summary_for(name: &str, config: &serde_json::Value) -> Result<Summary> {
        Entry::find(name)?.summary(config)
    }
}

impl ModuleT for CnnModel {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.net.logits(xs, train)
    }
}
