//! `ResNet`: a small residual network in the style of He et al. (2016), "Deep Residual
//! Learning for Image Recognition", §4.2 (the CIFAR-10 nets), for 28×28 grey images.
//!
//! ```text
//! input 1x28x28
//! conv1  1→16, 3x3, pad 1, bn1, ReLU         → 16x28x28
//! layer1 BasicBlock 16→16                     → 16x28x28   shortcut: identity
//! layer2 BasicBlock 16→32, stride 2           → 32x14x14   shortcut: 1x1 conv s2 + BN (projection)
//! layer3 BasicBlock 32→64, stride 2           → 64x7x7     shortcut: 1x1 conv s2 + BN (projection)
//! avgpool (global)                            → 64x1x1
//! flatten → 64,  fc 64→10 logits
//! ```
//!
//! With `blocks = [n, n, n]` the net has `6n + 2` weight layers: n = 1 (the default) is a
//! ResNet-8 of 77,754 parameters (plus 681 batch-norm buffer values), n = 3 He et al.'s
//! ResNet-20. Only the first block of a stage strides or changes the width.
//!
//! **Residual learning.** A [`BasicBlock`] does not learn its output `H(x)` directly but the
//! residual `F(x) = H(x) − x`, and adds the input back:
//!
//! ```text
//! F(x) = BN₂(conv₂(ReLU(BN₁(conv₁(x)))))        two 3x3 convs, no bias (BN has β)
//! y    = ReLU(F(x) + S(x))                      S = identity, or BN(conv1x1_s(x)) when the shape changes
//! ```
//!
//! **Why the skip helps the gradient.** Backpropagating through `y = F(x) + x`:
//! `∂L/∂x = ∂L/∂y · (∂F/∂x + I)`. Through a plain stack the gradient is a product of one
//! Jacobian per layer and shrinks (vanishes) or grows geometrically with depth — the lecture's
//! vanishing-gradient problem, the same `ρ^k` as in an RNN unrolled over time. Through `k`
//! residual blocks it is a product of `(I + ∂F_i/∂x)`, which expands to `I + Σ ∂F_i/∂x + …`:
//! the identity term carries `∂L/∂y` to every earlier block unchanged, however small the
//! `∂F_i/∂x` are, so deep stacks still train. A block that has nothing to add can learn
//! `F ≈ 0` and pass its input through.
//!
//! **1×1 convolution as the projection shortcut.** Where a stage halves the map and doubles
//! the channels, `x` cannot be added to `F(x)` as it is. The shortcut is then the lecture's
//! 1×1 convolution with stride 2: at every second pixel a dense layer over the channels
//! (`C_in · C_out` weights, 16·32 = 512 in layer2), which chooses the channel count and
//! matches the stride, followed by batch norm (torchvision's `downsample`, He et al.'s
//! option B).
//!
//! **Receptive field.** Each 3×3 conv adds `2·jump` pixels, each stride doubles `jump`
//! ([`crate::arith::ReceptiveField`]): 3 after conv1, 7 after layer1, 13 after layer2 (jump 2),
//! 25 after layer3 (jump 4), so each unit of the final 7×7 map sees 25×25 of the 28×28 image,
//! and the global average pool sees all of it. A 1×1 shortcut adds nothing to the field: a
//! unit of the sum sees the larger window of its two branches (see [`crate::summary`]).
//!
//! Tensor names are torchvision's `ResNet` (`conv1.weight`, `bn1.{weight,bias,running_mean,
//! running_var,num_batches_tracked}`, `layer1.0.conv1.weight`, `layer1.0.bn1.*`,
//! `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.*`, …, `fc.weight`, `fc.bias`), and
//! so is the init: convs Kaiming-normal with `fan_out` and ReLU gain (std `√(2 / (C_out·k²))`),
//! γ = 1, β = 0, `fc` PyTorch's default U(±1/√fan_in). Batch norm is [`crate::norm`]: train
//! mode normalises with batch statistics and updates the running ones, eval mode uses the
//! running ones, so call `forward_t(x, false)` to classify.

use crate::conv::{conv2d, Conv2d, Conv2dConfig, Padding};
use crate::norm::{batch_norm2d, BatchNorm2d};
use crate::summary::{summarize, LayerSpec, Summary};
use crate::Result;
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, Linear, VarBuilder};
use neka_common::nn::{linear, linear_forward};
use serde::{Deserialize, Serialize};

/// Most blocks a stage may have (He et al.'s deepest CIFAR net, ResNet-1202, has 200).
pub const MAX_BLOCKS: usize = 256;
/// Widest first stage accepted.
pub const MAX_WIDTH: usize = 1024;

/// Configuration of [`ResNet`]; the defaults are the net in the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Channels of the input image (1 for grey).
    pub in_channels: usize,
    /// Height = width of the square input.
    pub image_size: usize,
    /// Output classes (logits of `fc`).
    pub num_classes: usize,
    /// Channels of the stem and of stage 1; stages 2 and 3 have twice and four times as many.
    pub width: usize,
    /// BasicBlocks in each of the three stages (`[n, n, n]`: `6n + 2` weight layers).
    pub blocks: [usize; 3],
}

impl Default for Config {
    fn default() -> Self {
        Self {
            in_channels: 1,
            image_size: 28,
            num_classes: 10,
            width: 16,
            blocks: [1, 1, 1],
        }
    }
}

/// A 3×3 convolution, padding 1, no bias (torchvision's `conv3x3`).
fn conv3x3(in_channels: usize, out_channels: usize, stride: usize) -> Conv2dConfig {
    Conv2dConfig::new(in_channels, out_channels, 3)
        .stride(stride)
        .padding(Padding::uniform(1))
        .bias(false)
}

/// A 1×1 convolution, no bias (torchvision's `conv1x1`): the projection shortcut.
fn conv1x1(in_channels: usize, out_channels: usize, stride: usize) -> Conv2dConfig {
    Conv2dConfig::new(in_channels, out_channels, 1)
        .stride(stride)
        .bias(false)
}

/// A bias-free convolution with torchvision's ResNet init, `kaiming_normal_(mode="fan_out",
/// nonlinearity="relu")`. The weight is created here first, with that init; [`conv2d`] then
/// finds it in the `VarMap` (same name and shape) instead of drawing its own U(±1/√fan_in).
fn conv_kaiming(cfg: Conv2dConfig, vb: VarBuilder) -> Result<Conv2d> {
    let (kh, kw) = cfg.kernel_size;
    let init = Init::Kaiming {
        dist: NormalOrUniform::Normal,
        fan: FanInOut::FanOut,
        non_linearity: NonLinearity::ReLU,
    };
    vb.get_with_hints(
        (cfg.out_channels, cfg.in_channels / cfg.groups, kh, kw),
        "weight",
        init,
    )?;
    conv2d(cfg, vb)
}

impl Config {
    /// Channels of stage `i` (0-based): `width · 2^i`.
    pub fn stage_width(&self, i: usize) -> usize {
        self.width << i
    }

    /// Checks the numbers before anything is allocated (an untrusted `config.json` may ask for
    /// anything): positive sizes, 1..=[`MAX_BLOCKS`] blocks per stage, width ≤ [`MAX_WIDTH`].
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, msg: String| -> crate::Error {
            neka_common::Error::config(format!("resnet {field}"), msg)
        };
        for (field, v) in [
            ("in_channels", self.in_channels),
            ("image_size", self.image_size),
            ("num_classes", self.num_classes),
        ] {
            if v == 0 {
                return Err(bad(field, "0: must be at least 1".into()));
            }
        }
        if !(1..=MAX_WIDTH).contains(&self.width) {
            return Err(bad(
                "width",
                format!("{}: must be in 1..={MAX_WIDTH}", self.width),
            ));
        }
        if let Some(n) = self.blocks.iter().find(|n| !(1..=MAX_BLOCKS).contains(*n)) {
            return Err(bad(
                "blocks",
                format!(
                    "{:?}: each stage needs 1..={MAX_BLOCKS} blocks, not {n}",
                    self.blocks
                ),
            ));
        }
        Ok(())
    }

    /// The layer list, for [`crate::summary`]: stem, one [`LayerSpec::Residual`] (+ ReLU) per
    /// block, global average pool, flatten, fc.
    pub fn architecture(&self) -> Vec<(String, LayerSpec)> {
        let w = self.width;
        let mut layers = vec![
            (
                "conv1".to_string(),
                LayerSpec::Conv(conv3x3(self.in_channels, w, 1)),
            ),
            ("bn1".to_string(), LayerSpec::BatchNorm(w)),
            ("relu".to_string(), LayerSpec::Relu),
        ];
        let mut in_c = w;
        for (stage, &n) in self.blocks.iter().enumerate() {
            let out_c = self.stage_width(stage);
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                layers.push((
                    format!("layer{}.{b}", stage + 1),
                    BasicBlock::architecture(in_c, out_c, stride),
                ));
                layers.push(("relu".to_string(), LayerSpec::Relu));
                in_c = out_c;
            }
        }
        layers.extend([
            ("avgpool".to_string(), LayerSpec::GlobalAvgPool),
            ("flatten".to_string(), LayerSpec::Flatten),
            (
                "fc".to_string(),
                LayerSpec::Linear {
                    in_features: in_c,
                    out_features: self.num_classes,
                    bias: true,
                },
            ),
        ]);
        layers
    }

    /// Shapes, parameters (buffers apart), receptive fields and MACs per layer.
    pub fn summary(&self) -> Result<Summary> {
        self.validate()?;
        summarize(
            (self.in_channels, self.image_size, self.image_size),
            &self.architecture(),
        )
    }
}

/// He et al.'s basic residual block: `y = ReLU(F(x) + S(x))` with
/// `F = BN₂ ∘ conv3x3 ∘ ReLU ∘ BN₁ ∘ conv3x3_s` and `S` the identity, or a 1×1 conv with
/// stride `s` + BN where the block changes the shape (torchvision's `BasicBlock`).
#[derive(Debug, Clone)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    /// `downsample.0` (1×1 conv) and `downsample.1` (BN): the projection shortcut.
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl BasicBlock {
    /// A block from `in_channels` to `out_channels` whose first conv has `stride`; the
    /// shortcut projects when `stride ≠ 1` or the channel count changes.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let downsample = if stride != 1 || in_channels != out_channels {
            let vb = vb.pp("downsample");
            Some((
                conv_kaiming(conv1x1(in_channels, out_channels, stride), vb.pp("0"))?,
                batch_norm2d(out_channels, vb.pp("1"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: conv_kaiming(conv3x3(in_channels, out_channels, stride), vb.pp("conv1"))?,
            bn1: batch_norm2d(out_channels, vb.pp("bn1"))?,
            conv2: conv_kaiming(conv3x3(out_channels, out_channels, 1), vb.pp("conv2"))?,
            bn2: batch_norm2d(out_channels, vb.pp("bn2"))?,
            downsample,
        })
    }

    /// The block as a [`LayerSpec::Residual`] (the ReLU after the addition not included).
    pub fn architecture(in_channels: usize, out_channels: usize, stride: usize) -> LayerSpec {
        let main = vec![
            (
                "conv1".to_string(),
                LayerSpec::Conv(conv3x3(in_channels, out_channels, stride)),
            ),
            ("bn1".to_string(), LayerSpec::BatchNorm(out_channels)),
            ("relu".to_string(), LayerSpec::Relu),
            (
                "conv2".to_string(),
                LayerSpec::Conv(conv3x3(out_channels, out_channels, 1)),
            ),
            ("bn2".to_string(), LayerSpec::BatchNorm(out_channels)),
        ];
        let shortcut = if stride != 1 || in_channels != out_channels {
            vec![
                (
                    "downsample.0".to_string(),
                    LayerSpec::Conv(conv1x1(in_channels, out_channels, stride)),
                ),
                (
                    "downsample.1".to_string(),
                    LayerSpec::BatchNorm(out_channels),
                ),
            ]
        } else {
            Vec::new()
        };
        LayerSpec::Residual { main, shortcut }
    }

    /// `F(x)`, the residual branch, `(B, C_in, H, W) → (B, C_out, H/s, W/s)`.
    pub fn residual(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let ys = self.bn1.forward_relu_t(&self.conv1.forward(xs)?, train)?;
        self.bn2.forward_t(&self.conv2.forward(&ys)?, train)
    }

    /// `S(x)`, the shortcut: `x` itself, or its projection.
    pub fn shortcut(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match &self.downsample {
            None => Ok(xs.clone()),
            Some((conv, bn)) => bn.forward_t(&conv.forward(xs)?, train),
        }
    }

    /// Whether the shortcut is a projection (1×1 conv + BN) rather than the identity.
    pub fn projects(&self) -> bool {
        self.downsample.is_some()
    }
}

impl ModuleT for BasicBlock {
    /// `y = ReLU(F(x) + S(x))`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        (self.residual(xs, train)? + self.shortcut(xs, train)?)?.relu()
    }
}

/// The residual network. See the module docs.
#[derive(Debug, Clone)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    /// `layer1`, `layer2`, `layer3`.
    stages: Vec<Vec<BasicBlock>>,
    fc: Linear,
}

impl ResNet {
    /// Creates (or loads) the weights under `vb` with torchvision's names and init; validates
    /// the config and fails early if the layers do not fit `image_size`.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.summary()?; // validates the config and fails early if the layers do not fit
        let w = cfg.width;
        let conv1 = conv_kaiming(conv3x3(cfg.in_channels, w, 1), vb.pp("conv1"))?;
        let bn1 = batch_norm2d(w, vb.pp("bn1"))?;
        let mut stages = Vec::with_capacity(cfg.blocks.len());
        let mut in_c = w;
        for (stage, &n) in cfg.blocks.iter().enumerate() {
            let out_c = cfg.stage_width(stage);
            let vb = vb.pp(format!("layer{}", stage + 1));
            let mut blocks = Vec::with_capacity(n);
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(in_c, out_c, stride, vb.pp(b.to_string()))?);
                in_c = out_c;
            }
            stages.push(blocks);
        }
        let fc = linear(in_c, cfg.num_classes, true, vb.pp("fc"))?;
        Ok(Self {
            conv1,
            bn1,
            stages,
            fc,
        })
    }

    /// The stem convolution, `conv1` (16 filters of 1×3×3 by default).
    pub fn conv1(&self) -> &Conv2d {
        &self.conv1
    }

    /// The blocks of stage `i` (0-based: `layer{i+1}`).
    pub fn stage(&self, i: usize) -> &[BasicBlock] {
        &self.stages[i]
    }

    fn stem(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn1.forward_relu_t(&self.conv1.forward(xs)?, train)
    }

    /// What each stage computes for `xs (B, 1, 28, 28)`, in inference mode:
    /// `conv1 + bn1 + ReLU (B, 16, 28, 28)`, `layer1 (B, 16, 28, 28)`, `layer2 (B, 32, 14, 14)`,
    /// `layer3 (B, 64, 7, 7)`.
    pub fn feature_maps(&self, xs: &Tensor) -> candle_core::Result<Vec<(&'static str, Tensor)>> {
        const NAMES: [&str; 3] = ["layer1", "layer2", "layer3"];
        let mut xs = self.stem(xs, false)?;
        let mut out = vec![("conv1 + bn1 + ReLU", xs.clone())];
        for (blocks, name) in self.stages.iter().zip(NAMES) {
            for block in blocks {
                xs = block.forward_t(&xs, false)?;
            }
            out.push((name, xs.clone()));
        }
        Ok(out)
    }
}

impl ModuleT for ResNet {
    /// `(B, 1, 28, 28)` normalised images → `(B, 10)` logits. `train` selects batch
    /// statistics (updating the running ones) or the running statistics in every batch norm.
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut xs = self.stem(xs, train)?;
        for block in self.stages.iter().flatten() {
            xs = block.forward_t(&xs, train)?;
        }
        let xs = xs.mean((2, 3))?; // global average pool + flatten: (B, C)
        linear_forward(&self.fc, &xs, false)
    }
}

// `--model resnet`: `impl Cnn` and `impl Registered` by the zoo's conventions (see the registry).
super::cnn::register!(ResNet, "resnet", forward_t);
