//! `MnistNet`: exactly the `Net` of pytorch/examples' `mnist/main.py`.
//!
//! ```text
//! input 1x28x28
//! conv1  1→32, 3x3        → 32x26x26   ReLU
//! conv2 32→64, 3x3        → 64x24x24   ReLU
//! max-pool 2              → 64x12x12   dropout 0.25
//! flatten                 → 9216
//! fc1   9216→128          → 128        ReLU, dropout 0.5
//! fc2    128→10           → 10 logits
//! ```
//!
//! Tensor names and layouts are PyTorch's (`conv1.weight (32,1,3,3)`, …, `fc2.bias (10)`), so
//! `Net().load_state_dict(safetensors.torch.load_file("model.safetensors"))` works on a neka
//! file and neka loads a file saved from PyTorch. PyTorch's `Net.forward` ends in
//! `log_softmax`; this returns the logits (the loss applies `log_softmax`), which ranks the
//! classes identically.

use crate::conv::{conv2d, Conv2d, Conv2dConfig};
use crate::pool::Pool2d;
use crate::summary::{summarize, LayerSpec, Summary};
use crate::Result;
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{Linear, VarBuilder};
use neka_common::nn::{linear, linear_forward, Dropout};
use serde::{Deserialize, Serialize};

/// Configuration of [`MnistNet`]; the defaults are the PyTorch example's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Channels of the input image (1 for grey).
    pub in_channels: usize,
    /// Height = width of the square input.
    pub image_size: usize,
    /// Output classes (logits of `fc2`).
    pub num_classes: usize,
    /// Dropout after the pooling layer.
    pub dropout1: f32,
    /// Dropout after fc1.
    pub dropout2: f32,
    /// Width of `fc1` (128 in the PyTorch example).
    pub hidden: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            in_channels: 1,
            image_size: 28,
            num_classes: 10,
            dropout1: 0.25,
            dropout2: 0.5,
            hidden: 128,
        }
    }
}

impl Config {
    fn conv1(&self) -> Conv2dConfig {
        Conv2dConfig::new(self.in_channels, 32, 3)
    }
    fn conv2(&self) -> Conv2dConfig {
        Conv2dConfig::new(32, 64, 3)
    }
    /// Features after the conv stack: `64 · ((size − 4)/2)²` (9216 for 28×28).
    pub fn flat_features(&self) -> usize {
        let s = (self.image_size.saturating_sub(4)) / 2;
        64 * s * s
    }

    /// The layer list, for [`crate::summary`].
    pub fn architecture(&self) -> Vec<(&'static str, LayerSpec)> {
        vec![
            ("conv1", LayerSpec::Conv(self.conv1())),
            ("relu", LayerSpec::Relu),
            ("conv2", LayerSpec::Conv(self.conv2())),
            ("relu", LayerSpec::Relu),
            ("pool", LayerSpec::Pool(Pool2d::max(2))),
            ("dropout1", LayerSpec::Dropout(self.dropout1)),
            ("flatten", LayerSpec::Flatten),
            (
                "fc1",
                LayerSpec::Linear {
                    in_features: self.flat_features(),
                    out_features: self.hidden,
                    bias: true,
                },
            ),
            ("relu", LayerSpec::Relu),
            ("dropout2", LayerSpec::Dropout(self.dropout2)),
            (
                "fc2",
                LayerSpec::Linear {
                    in_features: self.hidden,
                    out_features: self.num_classes,
                    bias: true,
                },
            ),
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

/// The PyTorch-examples MNIST network. See the module docs.
#[derive(Debug, Clone)]
pub struct MnistNet {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: Pool2d,
    dropout1: Dropout,
    fc1: Linear,
    dropout2: Dropout,
    fc2: Linear,
}

impl MnistNet {
    /// Creates (or loads) the weights under `vb` with PyTorch's names (`conv1`, `conv2`, `fc1`,
    /// `fc2`); fails early if `image_size` is too small for the layers.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.summary()?; // fails early if image_size is too small
        Ok(Self {
            conv1: conv2d(cfg.conv1(), vb.pp("conv1"))?,
            conv2: conv2d(cfg.conv2(), vb.pp("conv2"))?,
            pool: Pool2d::max(2),
            dropout1: Dropout::new(cfg.dropout1)?,
            fc1: linear(cfg.flat_features(), cfg.hidden, true, vb.pp("fc1"))?,
            dropout2: Dropout::new(cfg.dropout2)?,
            fc2: linear(cfg.hidden, cfg.num_classes, true, vb.pp("fc2"))?,
        })
    }
}

impl MnistNet {
    /// The first layer, `conv1` (32 filters of 1×3×3).
    pub fn conv1(&self) -> &Conv2d {
        &self.conv1
    }

    /// What each convolutional stage computes for `xs (B, 1, 28, 28)`, in inference mode:
    /// `conv1 + ReLU (B, 32, 26, 26)`, `conv2 + ReLU (B, 64, 24, 24)`, `pool (B, 64, 12, 12)` (2×2 max).
    pub fn feature_maps(&self, xs: &Tensor) -> candle_core::Result<Vec<(&'static str, Tensor)>> {
        let c1 = self.conv1.forward_relu(xs)?;
        let c2 = self.conv2.forward_relu(&c1)?;
        let p = self.pool.forward(&c2)?;
        Ok(vec![
            ("conv1 + ReLU", c1),
            ("conv2 + ReLU", c2),
            ("pool", p),
        ])
    }
}

impl ModuleT for MnistNet {
    /// `(B, 1, 28, 28)` normalised images → `(B, 10)` logits.
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let xs = self.conv1.forward_relu(xs)?;
        let xs = self.conv2.forward_relu_pool_t(&xs, &self.pool, train)?;
        let xs = self.dropout1.forward_t(&xs, train)?;
        let xs = xs.flatten_from(1)?;
        let xs = linear_forward(&self.fc1, &xs, true)?;
        let xs = self.dropout2.forward_t(&xs, train)?;
        linear_forward(&self.fc2, &xs, false)
    }
}

// `--model mnist-net`: `impl Cnn` and `impl Registered` by the zoo's conventions (see the registry).
super::cnn::register!(MnistNet, "mnist-net", forward_t);
