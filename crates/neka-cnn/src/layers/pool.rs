//! Max and average pooling with kernel, stride and padding.
//!
//! Pooling summarises each `k × k` window by its maximum or mean: it has no parameters,
//! shrinks the feature map (`out = floor((in + 2p − k)/s) + 1`), and makes the features a
//! little invariant to small shifts. Max pooling pads with −∞ (padding never wins), average
//! pooling with zeros that count in the mean (PyTorch's `count_include_pad=True`).

use crate::arith;
use crate::kernels::{self, MaxPool2dOp};
use crate::{Error, Result};
use candle_core::{DType, DeviceLocation, Module, Tensor, D};
use serde::{Deserialize, Serialize};

/// Max or average.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// The window's maximum (−∞ padding), PyTorch's `max_pool2d`.
    Max,
    /// The window's mean, zero padding counted (PyTorch's `avg_pool2d`, `count_include_pad=True`).
    Avg,
}

/// A pooling layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool2d {
    /// Max or average.
    pub kind: PoolKind,
    /// Window size `k` (a `k × k` window).
    pub kernel: usize,
    /// Step between windows, the same along height and width (`k` by default).
    pub stride: usize,
    /// Padding on each side, at most `k/2` (default 0).
    pub padding: usize,
}

impl Pool2d {
    /// `k × k` max pooling with stride `k` (PyTorch's `max_pool2d(x, k)`).
    pub fn max(k: usize) -> Self {
        Self {
            kind: PoolKind::Max,
            kernel: k,
            stride: k,
            padding: 0,
        }
    }
    /// `k × k` average pooling with stride `k`.
    pub fn avg(k: usize) -> Self {
        Self {
            kind: PoolKind::Avg,
            kernel: k,
            stride: k,
            padding: 0,
        }
    }
    /// Sets the stride.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    /// Sets the padding on each side.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = p;
        self
    }

    /// Checks kernel, stride and padding (PyTorch requires `p ≤ k/2`).
    pub fn validate(&self) -> Result<()> {
        if self.kernel == 0 || self.stride == 0 {
            return Err(Error::config(
                "pooling",
                format!("kernel and stride must be positive: {self:?}"),
            ));
        }
        if 2 * self.padding > self.kernel {
            return Err(Error::config(
                "pooling",
                format!(
                    "padding {} must be at most half the kernel {}",
                    self.padding, self.kernel
                ),
            ));
        }
        Ok(())
    }

    /// Output `(H, W)` for an input `(H, W)`.
    pub fn output_size(&self, hw: (usize, usize)) -> Option<(usize, usize)> {
        Some((
            arith::conv_output_size(hw.0, self.kernel, self.padding, self.stride, 1)?,
            arith::conv_output_size(hw.1, self.kernel, self.padding, self.stride, 1)?,
        ))
    }
}

fn pad_with(xs: &Tensor, p: usize, value: f64) -> candle_core::Result<Tensor> {
    if p == 0 {
        return Ok(xs.clone());
    }
    let (b, c, h, w) = xs.dims4()?;
    let col = (Tensor::ones((b, c, h, p), xs.dtype(), xs.device())? * value)?;
    let xs = Tensor::cat(&[&col, xs, &col], 3)?;
    let row = (Tensor::ones((b, c, p, w + 2 * p), xs.dtype(), xs.device())? * value)?;
    Tensor::cat(&[&row, &xs, &row], 2)
}

/// Max pooling with kernel == stride as a reshape and a `max` over each window: the values of
/// candle's `max_pool2d`, with a correct gradient. candle 0.11.1's own max-pool backward
/// multiplies the gradient by `avg_pool(mask)` = 1/k² (for a single maximum) where it meant to
/// divide by the number of maxima, and, built on `upsample_nearest2d`, matches rows to the
/// wrong window when the size is not a multiple of k (both shown in tests/kernel.rs). This is
/// the path on CUDA / Metal and the plain twin of neka's CPU kernel; on ties every maximum
/// gets the gradient (candle's `max` reduction), where PyTorch and the kernel pick the first.
pub fn max_pool_by_reduction(xs: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    let (oh, ow) = (h / k, w / k);
    xs.narrow(2, 0, oh * k)?
        .narrow(3, 0, ow * k)?
        .reshape((b, c, oh, k, ow, k))?
        .permute((0, 1, 2, 4, 3, 5))?
        .reshape((b, c, oh, ow, k * k))?
        .max(D::Minus1)
}

impl Pool2d {
    /// neka's max-pool kernel applies: a CPU f32/f64 tensor under
    /// [`neka_common::kernels::KernelPath::Fused`].
    /// The one place that picks the pooling implementation.
    pub fn uses_kernel(&self, xs: &Tensor) -> bool {
        self.uses_kernel_at(xs.device().location(), xs.dtype())
    }

    /// [`Pool2d::uses_kernel`] for a device and dtype: never on CUDA or Metal
    /// ([`neka_common::kernels::fused_applies`]), which take [`Pool2d::forward_candle`].
    pub fn uses_kernel_at(&self, location: DeviceLocation, dtype: DType) -> bool {
        self.kind == PoolKind::Max && neka_common::kernels::fused_applies(location, dtype)
    }

    /// Pooling from candle's ops (padding as explicit −∞ / 0 borders; max pooling with
    /// kernel == stride through [`max_pool_by_reduction`] for a correct gradient).
    pub fn forward_candle(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self.kind {
            PoolKind::Max => {
                let xs = pad_with(xs, self.padding, f64::NEG_INFINITY)?;
                if self.kernel == self.stride {
                    max_pool_by_reduction(&xs, self.kernel)
                } else {
                    // Forward only: candle's backward refuses kernel != stride (candle#1593).
                    xs.max_pool2d_with_stride(self.kernel, self.stride)
                }
            }
            PoolKind::Avg => {
                pad_with(xs, self.padding, 0.0)?.avg_pool2d_with_stride(self.kernel, self.stride)
            }
        }
    }
}

impl Module for Pool2d {
    /// `(B, C, H, W) → (B, C, H', W')`.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        if self.uses_kernel(xs) {
            kernels::max_pool2d(
                xs,
                MaxPool2dOp {
                    kernel: self.kernel,
                    stride: self.stride,
                    padding: self.padding,
                },
            )
        } else {
            self.forward_candle(xs)
        }
    }
}
