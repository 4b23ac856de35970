//! `LeNet5`: LeCun et al. (1998), in its common modern form (ReLU, max pooling).
//!
//! ```text
//! input 1x28x28
//! conv1  1→6,  5x5, pad 2 → 6x28x28    ReLU
//! max-pool 2              → 6x14x14
//! conv2  6→16, 5x5        → 16x10x10   ReLU
//! max-pool 2              → 16x5x5
//! flatten                 → 400
//! fc1  400→120 ReLU,  fc2  120→84 ReLU,  fc3  84→10 logits
//! ```
//!
//! 61,706 parameters (vs 1.2 M for [`crate::MnistNet`]) — small and fast, ≈ 99 % on MNIST.

use crate::conv::{conv2d, Conv2d, Conv2dConfig, Padding};
use crate::pool::Pool2d;
use crate::summary::{summarize, LayerSpec, Summary};
use crate::Result;
use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use neka_common::nn::{linear, linear_forward};
use serde::{Deserialize, Serialize};

/// Configuration of [`LeNet5`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Channels of the input image (1 for grey).
    pub in_channels: usize,
    /// Height = width of the square input (28 by default).
    pub image_size: usize,
    /// Output classes (logits of `fc3`).
    pub num_classes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            in_channels: 1,
            image_size: 28,
            num_classes: 10,
        }
    }
}

impl Config {
    fn conv1(&self) -> Conv2dConfig {
        Conv2dConfig::new(self.in_channels, 6, 5).padding(Padding::uniform(2))
    }
    fn conv2(&self) -> Conv2dConfig {
        Conv2dConfig::new(6, 16, 5)
    }
    /// `16 · ((size/2 − 4)/2)²` (400 for 28×28).
    pub fn flat_features(&self) -> usize {
        let s = (self.image_size / 2).saturating_sub(4) / 2;
        16 * s * s
    }

    /// The layer list, for [`crate::summary`].
    pub fn architecture(&self) -> Vec<(&'static str, LayerSpec)> {
        let fc = |i, o| LayerSpec::Linear {
            in_features: i,
            out_features: o,
            bias: true,
        };
        vec![
            ("conv1", LayerSpec::Conv(self.conv1())),
            ("relu", LayerSpec::Relu),
            ("pool1", LayerSpec::Pool(Pool2d::max(2))),
            ("conv2", LayerSpec::Conv(self.conv2())),
            ("relu", LayerSpec::Relu),
            ("pool2", LayerSpec::Pool(Pool2d::max(2))),
            ("flatten", LayerSpec::Flatten),
            ("fc1", fc(self.flat_features(), 120)),
            ("relu", LayerSpec::Relu),
            ("fc2", fc(120, 84)),
            ("relu", LayerSpec::Relu),
            ("fc3", fc(84, self.num_classes)),
        ]
    }

    /// Shapes, parameters, receptive fields and MACs per layer.
    pub fn summary(&self) -> Result<Summary> {
        summarize(
            (self.in_channels, self.image_size, self.image_size),
            &self.architecture(),
        )
    }
}

/// LeNet-5. See the module docs.
#[derive(Debug, Clone)]
pub struct LeNet5 {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: Pool2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl LeNet5 {
    /// Creates (or loads) the weights under `vb` (`conv1`, `conv2`, `fc1`–`fc3`); fails early if
    /// `image_size` is too small for the layers.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.summary()?;
        Ok(Self {
            conv1: conv2d(cfg.conv1(), vb.pp("conv1"))?,
            conv2: conv2d(cfg.conv2(), vb.pp("conv2"))?,
            pool: Pool2d::max(2),
            fc1: linear(cfg.flat_features(), 120, true, vb.pp("fc1"))?,
            fc2: linear(120, 84, true, vb.pp("fc2"))?,
            fc3: linear(84, cfg.num_classes, true, vb.pp("fc3"))?,
        })
    }
}

impl LeNet5 {
    /// The first layer, `conv1` (6 filters of 1×5×5).
    pub fn conv1(&self) -> &Conv2d {
        &self.conv1
    }

    /// What each convolutional stage computes for `xs (B, 1, 28, 28)`: `conv1 + ReLU
    /// (B, 6, 28, 28)`, `pool1 (B, 6, 14, 14)`, `conv2 + ReLU (B, 16, 10, 10)`, `pool2 (B, 16, 5, 5)`.
    pub fn feature_maps(&self, xs: &Tensor) -> candle_core::Result<Vec<(&'static str, Tensor)>> {
        let c1 = self.conv1.forward_relu(xs)?;
        let p1 = self.pool.forward(&c1)?;
        let c2 = self.conv2.forward_relu(&p1)?;
        let p2 = self.pool.forward(&c2)?;
        Ok(vec![
            ("conv1 + ReLU", c1),
            ("pool1", p1),
            ("conv2 + ReLU", c2),
            ("pool2", p2),
        ])
    }
}

impl LeNet5 {
    /// `(B, 1, 28, 28)` → `(B, 10)` logits. LeNet-5 has no dropout, so `train` only tells the
    /// fused conv → ReLU → pool ops whether a backward pass is expected
    /// ([`crate::Conv2d::forward_relu_pool_t`]); `Module::forward` assumes it is.
    pub fn forward_with(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let xs = self.conv1.forward_relu_pool_t(xs, &self.pool, train)?;
        let xs = self.conv2.forward_relu_pool_t(&xs, &self.pool, train)?;
        let xs = xs.flatten_from(1)?;
        let xs = linear_forward(&self.fc1, &xs, true)?;
        let xs = linear_forward(&self.fc2, &xs, true)?;
        linear_forward(&self.fc3, &xs, false)
    }
}

impl Module for LeNet5 {
    /// `(B, 1, 28, 28)` → `(B, 10)` logits.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(xs, true)
    }
}

// `--model lenet5`: `impl Cnn` and `impl Registered` by the zoo's conventions (see the registry).
super::cnn::register!(LeNet5, "lenet5", forward_with);
