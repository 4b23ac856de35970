//! Batch normalisation of convolutional feature maps (`torch.nn.BatchNorm2d`), on candle-nn's
//! [`candle_nn::BatchNorm`] with PyTorch's batch counter added.
//!
//! For `x (B, C, H, W)`, per channel `c`, over the `n = B·H·W` values of the batch:
//!
//! ```text
//! training:   μ = mean(x_c),  σ² = mean((x_c − μ)²)         (biased, as the forward pass uses it)
//!             y = γ_c · (x − μ) / √(σ² + ε) + β_c
//!             running_mean ← (1 − m) · running_mean + m · μ
//!             running_var  ← (1 − m) · running_var  + m · σ² · n/(n − 1)   (unbiased)
//!             num_batches_tracked ← num_batches_tracked + 1
//! inference:  y = γ_c · (x − running_mean_c) / √(running_var_c + ε) + β_c
//! ```
//!
//! with PyTorch's `ε = 1e-5` and momentum `m = 0.1`. γ (`weight`) and β (`bias`) are trained;
//! the running statistics are *buffers* ([`neka_common::optim::is_buffer`]): they live in the
//! `VarMap` next to the parameters, so checkpoints and `--resume` carry them, but no optimizer
//! touches them, only the forward pass in training mode.
//!
//! Tensor names are PyTorch's: `weight (C)`, `bias (C)`, `running_mean (C)`, `running_var (C)`,
//! `num_batches_tracked ()`. candle-nn 0.11.1's `batch_norm` creates the first four (and its
//! train-mode forward updates the running mean and variance in place); it has no batch counter,
//! so this layer adds `num_batches_tracked`. It is stored as a float scalar (the `VarMap`'s
//! dtype), not PyTorch's int64: neka's loaders accept only floating-point tensors. PyTorch's
//! `load_state_dict` takes a neka file as it is (`copy_` casts the scalar to int64); a file saved
//! by PyTorch needs `num_batches_tracked` cast to float before neka loads it. With a momentum
//! (always, here) PyTorch uses the counter for nothing but bookkeeping.

use crate::Result;
use candle_core::{ModuleT, Tensor, Var};
use candle_nn::{BatchNormConfig, Init, VarBuilder};

/// PyTorch's `BatchNorm2d` defaults.
pub const BN_EPS: f64 = 1e-5;
/// PyTorch's `BatchNorm2d` default momentum of the running statistics.
pub const BN_MOMENTUM: f64 = 0.1;

/// `torch.nn.BatchNorm2d(C)`. See the module docs.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    inner: candle_nn::BatchNorm,
    num_batches_tracked: Var,
}

/// Builds a [`BatchNorm2d`] over `num_features` channels under `vb` (e.g. `vb.pp("bn1")` →
/// `bn1.weight`, `bn1.bias`, `bn1.running_mean`, `bn1.running_var`, `bn1.num_batches_tracked`):
/// γ = 1, β = 0, running mean 0, running variance 1, count 0, as PyTorch starts.
pub fn batch_norm2d(num_features: usize, vb: VarBuilder) -> Result<BatchNorm2d> {
    let cfg = BatchNormConfig {
        eps: BN_EPS,
        remove_mean: true,
        affine: true,
        momentum: BN_MOMENTUM,
    };
    let inner = candle_nn::batch_norm(num_features, cfg, vb.clone())?;
    let count = vb.get_with_hints((), "num_batches_tracked", Init::Const(0.0))?;
    Ok(BatchNorm2d {
        inner,
        // a variable of the VarMap (so it is saved and loaded) shares its storage here
        num_batches_tracked: Var::from_tensor(&count)?,
    })
}

impl BatchNorm2d {
    /// Number of channels.
    pub fn num_features(&self) -> usize {
        self.inner.running_mean().dims()[0]
    }
    /// γ `(C)`.
    pub fn weight(&self) -> Option<&Tensor> {
        self.inner.weight_and_bias().map(|(w, _)| w)
    }
    /// β `(C)`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.weight_and_bias().map(|(_, b)| b)
    }
    /// The running mean `(C)` (a buffer).
    pub fn running_mean(&self) -> &Tensor {
        self.inner.running_mean()
    }
    /// The running (unbiased) variance `(C)` (a buffer).
    pub fn running_var(&self) -> &Tensor {
        self.inner.running_var()
    }
    /// How many training batches have gone through (a buffer).
    pub fn num_batches_tracked(&self) -> candle_core::Result<f64> {
        self.num_batches_tracked
            .as_tensor()
            .to_dtype(candle_core::DType::F64)?
            .to_scalar()
    }
}

impl ModuleT for BatchNorm2d {
    /// `(B, C, H, W) → (B, C, H, W)`: batch statistics (and an update of the running ones) when
    /// `train`, the running statistics otherwise.
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train {
            return self.inner.forward_t(xs, false);
        }
        let ys = self.inner.forward_train(xs)?;
        let count = (self.num_batches_tracked.as_detached_tensor() + 1.0)?;
        self.num_batches_tracked.set(&count)?;
        Ok(ys)
    }
}
