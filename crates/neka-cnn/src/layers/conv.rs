//! 2-D convolution with the lecture's knobs: kernel size (non-square allowed), padding
//! (a number, per-dimension numbers, or `same`), stride, dilation and groups.
//!
//! For an input `x (B, C_in, H, W)` and weights `w (C_out, C_in/groups, kh, kw)`:
//!
//! ```text
//! y[b, o, i, j] = bias[o] + Σ_c Σ_m Σ_n  w[o, c, m, n] · x[b, c, s·i + d·m − p_h, s·j + d·n − p_w]
//! ```
//!
//! Every output position uses the *same* weights (parameter sharing), so the layer has
//! `C_out · C_in/groups · kh · kw + C_out` parameters whatever the image size. Like every deep
//! learning library, this computes a cross-correlation (no kernel flip); see
//! `neka_lecture::conv` (the lecture crate) for the textbook convolution and how the two relate.
//!
//! Output size per dimension: `out = floor((in + 2p − d(k−1) − 1) / s) + 1`
//! ([`crate::arith::conv_output_size`]).

use crate::arith;
use crate::kernels;
use crate::pool::{Pool2d, PoolKind};
use crate::{Error, Result};
use candle_core::{DType, DeviceLocation, Module, Tensor};
use candle_nn::{Init, VarBuilder};
use neka_common::kernels::{kernel_applies, KernelPath};
use serde::{Deserialize, Serialize};

/// Zero padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// `d(k−1)/2` on each side, so a stride-1 convolution keeps the size (odd kernels only).
    Same,
    /// This many zeros on each side: `(height, width)`.
    Explicit(usize, usize),
}

impl Padding {
    /// No padding ("valid" convolution).
    pub const VALID: Padding = Padding::Explicit(0, 0);

    /// The same padding on both dimensions.
    pub fn uniform(p: usize) -> Self {
        Padding::Explicit(p, p)
    }

    /// Resolves to `(p_h, p_w)` for a kernel and dilation.
    pub fn resolve(self, kernel: (usize, usize), dilation: usize) -> Result<(usize, usize)> {
        match self {
            Padding::Explicit(h, w) => Ok((h, w)),
            Padding::Same => match (
                arith::same_padding(kernel.0, dilation),
                arith::same_padding(kernel.1, dilation),
            ) {
                (Some(h), Some(w)) => Ok((h, w)),
                _ => Err(Error::config(
                    "padding",
                    format!(
                        "`same` = (k-1)/2 needs odd kernel sizes, got {}x{}",
                        kernel.0, kernel.1
                    ),
                )),
            },
        }
    }
}

impl std::str::FromStr for Padding {
    type Err = Error;
    /// `same`, `valid`, `N` or `H,W`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("same") {
            return Ok(Padding::Same);
        }
        if s.eq_ignore_ascii_case("valid") {
            return Ok(Padding::VALID);
        }
        let nums: std::result::Result<Vec<usize>, _> =
            s.split(',').map(|p| p.trim().parse()).collect();
        match nums.as_deref() {
            Ok([p]) => Ok(Padding::uniform(*p)),
            Ok([h, w]) => Ok(Padding::Explicit(*h, *w)),
            _ => Err(Error::config(
                "padding",
                format!("`{s}`: expected same, valid, N or H,W"),
            )),
        }
    }
}

/// Configuration of a [`Conv2d`] layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2dConfig {
    /// `C_in`, channels of the input.
    pub in_channels: usize,
    /// `C_out`, channels of the output (number of filters).
    pub out_channels: usize,
    /// `(kh, kw)`.
    pub kernel_size: (usize, usize),
    /// Stride `s`, the same along height and width (default 1).
    pub stride: usize,
    /// Zero padding (default none, "valid").
    pub padding: Padding,
    /// Dilation `d` of the kernel, the same along height and width (default 1).
    pub dilation: usize,
    /// Groups: input and output channels are split into this many independent convolutions
    /// (both must be divisible by it; default 1; `C_in` groups is a depthwise convolution).
    pub groups: usize,
    /// Whether the layer adds a learned `bias (C_out)` (default `true`).
    pub bias: bool,
}

impl Conv2dConfig {
    /// A `k × k` convolution, stride 1, no padding, no dilation, one group, with bias
    /// (PyTorch's `nn.Conv2d(in, out, k)`).
    pub fn new(in_channels: usize, out_channels: usize, k: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel_size: (k, k),
            stride: 1,
            padding: Padding::VALID,
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }

    /// A `kh × kw` kernel.
    pub fn kernel(mut self, kh: usize, kw: usize) -> Self {
        self.kernel_size = (kh, kw);
        self
    }
    /// Sets the stride.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, p: Padding) -> Self {
        self.padding = p;
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        self
    }
    /// Sets the number of groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// Sets whether the layer has a bias.
    pub fn bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }

    /// Checks that the numbers fit together.
    pub fn validate(&self) -> Result<()> {
        let c = self;
        if c.in_channels == 0 || c.out_channels == 0 || c.kernel_size.0 == 0 || c.kernel_size.1 == 0
        {
            return Err(Error::config(
                "conv2d",
                format!("channels and kernel sizes must be positive: {c:?}"),
            ));
        }
        if c.stride == 0 || c.dilation == 0 || c.groups == 0 {
            return Err(Error::config(
                "conv2d",
                format!("stride, dilation and groups must be positive: {c:?}"),
            ));
        }
        if !c.in_channels.is_multiple_of(c.groups) || !c.out_channels.is_multiple_of(c.groups) {
            return Err(Error::config(
                "conv2d",
                format!(
                    "groups {} must divide in_channels {} and out_channels {}",
                    c.groups, c.in_channels, c.out_channels
                ),
            ));
        }
        self.padding.resolve(self.kernel_size, self.dilation)?;
        Ok(())
    }

    /// `(p_h, p_w)` after resolving `same`.
    pub fn resolved_padding(&self) -> Result<(usize, usize)> {
        self.padding.resolve(self.kernel_size, self.dilation)
    }

    /// Output `(H, W)` for an input `(H, W)`; `None` if the input is too small.
    pub fn output_size(&self, hw: (usize, usize)) -> Option<(usize, usize)> {
        let (ph, pw) = self.resolved_padding().ok()?;
        Some((
            arith::conv_output_size(hw.0, self.kernel_size.0, ph, self.stride, self.dilation)?,
            arith::conv_output_size(hw.1, self.kernel_size.1, pw, self.stride, self.dilation)?,
        ))
    }

    /// Number of parameters (weights + biases).
    pub fn num_params(&self) -> usize {
        arith::conv2d_params(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.groups,
            self.bias,
        )
    }
}

/// A 2-D convolution layer. Tensor names follow PyTorch: `weight (C_out, C_in/groups, kh, kw)`
/// and `bias (C_out)`; init is PyTorch's U(±1/√fan_in) with `fan_in = C_in/groups · kh · kw`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    inner: candle_nn::Conv2d,
    /// Explicit padding applied before the convolution when height and width differ
    /// (candle's conv takes one padding for both).
    pre_pad: Option<(usize, usize)>,
    cfg: Conv2dConfig,
}

/// Builds a [`Conv2d`] under `vb` (e.g. `vb.pp("conv1")` → `conv1.weight`, `conv1.bias`).
pub fn conv2d(cfg: Conv2dConfig, vb: VarBuilder) -> Result<Conv2d> {
    cfg.validate()?;
    let (kh, kw) = cfg.kernel_size;
    let fan_in = cfg.in_channels / cfg.groups * kh * kw;
    let bound = neka_common::nn::pytorch_bound(fan_in);
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let w = vb.get_with_hints(
        (cfg.out_channels, cfg.in_channels / cfg.groups, kh, kw),
        "weight",
        init,
    )?;
    let b = if cfg.bias {
        Some(vb.get_with_hints(cfg.out_channels, "bias", init)?)
    } else {
        None
    };
    let (ph, pw) = cfg.resolved_padding()?;
    let (padding, pre_pad) = if ph == pw {
        (ph, None)
    } else {
        (0, Some((ph, pw)))
    };
    let inner = candle_nn::Conv2d::new(
        w,
        b,
        candle_nn::Conv2dConfig {
            padding,
            stride: cfg.stride,
            dilation: cfg.dilation,
            groups: cfg.groups,
            cudnn_fwd_algo: None,
        },
    );
    Ok(Conv2d {
        inner,
        pre_pad,
        cfg,
    })
}

/// A 1×1 convolution: mixes channels at each pixel (`C_in · C_out` weights), changing the
/// channel count without touching the spatial size — the cheap "bottleneck" of Inception
/// and ResNet, which cuts the MACs of the expensive conv that follows.
pub fn conv1x1(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Conv2d> {
    conv2d(Conv2dConfig::new(in_channels, out_channels, 1), vb)
}

impl Conv2d {
    /// The layer's configuration.
    pub fn config(&self) -> &Conv2dConfig {
        &self.cfg
    }
    /// `weight (C_out, C_in/groups, kh, kw)`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }
    /// `bias (C_out)`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

impl Conv2d {
    /// The convolution as im2col + one matrix product, built from differentiable candle ops:
    ///
    /// ```text
    /// cols[b, (c,m,n), (i,j)] = x_padded[b, c, s·i + d·m, s·j + d·n]   (B, C·kh·kw, H'·W')
    /// y[b, g] = W_g.reshape(C_out/G, C/G·kh·kw) · cols[b, g] + bias    (B, C_out, H'·W')
    /// ```
    ///
    /// (group `g` of `G` sees its own `C/G` input channels). Any stride, dilation, padding and
    /// groups; the same result as candle's `conv2d` (tested). Its backward pass is matrix
    /// products and slices, which is why it is the path on Metal, where candle 0.11's
    /// `conv2d` weight gradient is wrong (see [`conv_path_at`]). On CPU it is selected by
    /// [`KernelPath::Im2col`]; neka's kernel ([`Conv2d::forward_kernel`], the default) does the
    /// same arithmetic without the full-batch temporaries.
    pub fn forward_im2col(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (ph, pw) = self
            .cfg
            .resolved_padding()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let (kh, kw) = self.cfg.kernel_size;
        let (s, d, g) = (self.cfg.stride, self.cfg.dilation, self.cfg.groups);
        let (_, _, h, w) = xs.dims4()?;
        let (oh, ow) = self
            .cfg
            .output_size((h, w))
            .ok_or_else(|| candle_core::Error::Msg(format!("conv2d: input {h}x{w} too small")))?;
        // Padding, plus up to s−1 zero rows/columns so every window start row `d·m` has
        // `s·oh` rows below it: the stride is then a reshape that keeps every s-th row.
        let extra_h = (d * (kh - 1) + s * oh).saturating_sub(h + 2 * ph);
        let extra_w = (d * (kw - 1) + s * ow).saturating_sub(w + 2 * pw);
        let xs = if ph + pw + extra_h + extra_w > 0 {
            xs.pad_with_zeros(2, ph, ph + extra_h)?
                .pad_with_zeros(3, pw, pw + extra_w)?
        } else {
            xs.clone()
        };
        let (b, c, _, wp) = xs.dims4()?;
        let mut patches = Vec::with_capacity(kh * kw);
        for m in 0..kh {
            let mut rows = xs.narrow(2, d * m, s * oh)?;
            if s > 1 {
                rows = rows
                    .reshape((b, c, oh, s, wp))?
                    .narrow(3, 0, 1)?
                    .squeeze(3)?;
            }
            for n in 0..kw {
                let mut p = rows.narrow(3, d * n, s * ow)?;
                if s > 1 {
                    p = p.reshape((b, c, oh, ow, s))?.narrow(4, 0, 1)?.squeeze(4)?;
                }
                patches.push(p);
            }
        }
        let (co, k) = (self.cfg.out_channels, c / g * kh * kw);
        // (B, C, kh·kw, H', W') → (B, G, C/G·kh·kw, H'·W'): group g's rows are one block.
        let cols = Tensor::stack(&patches, 2)?.reshape((b, g, k, oh * ow))?;
        let wmat = self.inner.weight().reshape((1, g, co / g, k))?;
        let ys = wmat.broadcast_matmul(&cols)?.reshape((b, co, oh, ow))?;
        match self.inner.bias() {
            Some(bias) => ys.broadcast_add(&bias.reshape((1, co, 1, 1))?),
            None => Ok(ys),
        }
    }

    /// candle's own `conv2d` (any stride, groups, device).
    pub fn forward_candle(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self.pre_pad {
            None => self.inner.forward(xs),
            Some((ph, pw)) => self
                .inner
                .forward(&xs.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?),
        }
    }
}

/// The implementation a convolution runs ([`conv_path_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvRoute {
    /// neka's CPU kernel ([`crate::kernels::conv`]): one op, ReLU and max pool fusable.
    Kernels,
    /// The im2col graph of candle ops ([`Conv2d::forward_im2col`]).
    Im2col,
    /// candle's `conv2d` ([`Conv2d::forward_candle`]).
    Candle,
}

/// The one place that picks a convolution's implementation for an input: [`conv_path_at`]
/// for its device and dtype.
pub fn conv_path(cfg: &Conv2dConfig, xs: &Tensor) -> ConvRoute {
    conv_path_at(cfg, xs.device().location(), xs.dtype())
}

/// The implementation a convolution runs on a device:
///
/// - **CUDA**: candle's `conv2d` (cuDNN with `--features cudnn`); neka's kernel is CPU-only.
/// - **Metal**: the im2col graph ([`Conv2d::forward_im2col`]), never candle's `conv2d`.
///   candle 0.11's Metal `conv2d` reads a non-contiguous kernel wrongly (it copies the kernel
///   contiguous, then multiplies with the original buffer at the original offset:
///   huggingface/candle#3836, and #3839 for the gradient), and candle's backward pass always
///   hands `conv2d` such a kernel (`grad.transpose(0, 1)`) to form the weight gradient, so
///   training would silently diverge. The im2col graph's gradient is matrix products and
///   slices, which are right on Metal.
/// - **CPU**: by the thread's [`KernelPath`] (`neka_common::kernels::use_path`):
///   [`KernelPath::Fused`] (the default) takes neka's kernel for one group and f32/f64,
///   candle's op otherwise (groups > 1, half precision); [`KernelPath::CandleOps`] takes
///   candle's op and [`KernelPath::Im2col`] the im2col graph.
pub fn conv_path_at(cfg: &Conv2dConfig, location: DeviceLocation, dtype: DType) -> ConvRoute {
    match location {
        DeviceLocation::Cuda { .. } => ConvRoute::Candle,
        DeviceLocation::Metal { .. } => ConvRoute::Im2col,
        DeviceLocation::Cpu => match neka_common::kernels::path() {
            KernelPath::Fused if cfg.groups == 1 && kernel_applies(location, dtype) => {
                ConvRoute::Kernels
            }
            KernelPath::Fused | KernelPath::CandleOps => ConvRoute::Candle,
            KernelPath::Im2col => ConvRoute::Im2col,
        },
    }
}

impl Conv2d {
    /// neka's CPU kernel ([`crate::kernels::conv2d`]), with `relu` fused when asked.
    pub fn forward_kernel(&self, xs: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        let (ph, pw) = self
            .cfg
            .resolved_padding()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let op = kernels::Conv2dOp::new(self.cfg.stride, (ph, pw), self.cfg.dilation, relu);
        self.run_kernel(xs, op)
    }

    fn run_kernel(&self, xs: &Tensor, op: kernels::Conv2dOp) -> candle_core::Result<Tensor> {
        let zeros;
        let bias = match self.inner.bias() {
            Some(b) => b,
            None => {
                zeros = Tensor::zeros(self.cfg.out_channels, xs.dtype(), xs.device())?;
                &zeros
            }
        };
        kernels::conv2d(xs, self.inner.weight(), bias, op)
    }

    /// `ReLU(conv(x))`: on neka's kernel path one op (the ReLU's backward uses the output as
    /// its mask), elsewhere `forward` then `relu`.
    pub fn forward_relu(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match conv_path(&self.cfg, xs) {
            ConvRoute::Kernels => self.forward_kernel(xs, true),
            _ => self.forward(xs)?.relu(),
        }
    }

    /// `pool(ReLU(conv(x)))`, the lecture's conv → ReLU → pool block. On neka's kernel path,
    /// with a `k × k` max pool of stride `k` (k ≤ 16) and no padding, one op: the feature map
    /// before pooling is never materialised (see [`kernels::Conv2dOp`]); otherwise the three
    /// layers one after the other. Same values and gradients either way (tested).
    pub fn forward_relu_pool(&self, xs: &Tensor, pool: &Pool2d) -> candle_core::Result<Tensor> {
        self.forward_relu_pool_t(xs, pool, true)
    }

    /// [`Conv2d::forward_relu_pool`]; with `train = false` the fused op skips recording the
    /// pooling argmax (faster inference; a backward pass still works, by recomputing it).
    pub fn forward_relu_pool_t(
        &self,
        xs: &Tensor,
        pool: &Pool2d,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let fusable = pool.kind == PoolKind::Max
            && pool.kernel == pool.stride
            && pool.padding == 0
            && (2..=16).contains(&pool.kernel);
        match conv_path(&self.cfg, xs) {
            ConvRoute::Kernels if fusable => {
                let (ph, pw) = self
                    .cfg
                    .resolved_padding()
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                let op = kernels::Conv2dOp::new(self.cfg.stride, (ph, pw), self.cfg.dilation, true)
                    .with_pool(pool.kernel)
                    .keep_argmax(train);
                self.run_kernel(xs, op)
            }
            _ => pool.forward(&self.forward_relu(xs)?),
        }
    }
}

impl Module for Conv2d {
    /// `(B, C_in, H, W) → (B, C_out, H', W')`.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match conv_path(&self.cfg, xs) {
            ConvRoute::Kernels => self.forward_kernel(xs, false),
            ConvRoute::Im2col => self.forward_im2col(xs),
            ConvRoute::Candle => self.forward_candle(xs),
        }
    }
}
