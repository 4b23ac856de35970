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
//!
//! **CPU kernel.** candle-nn's train-mode forward is a graph of a dozen candle ops (transpose,
//! copy, means, broadcasts), and its backward pass reduces the broadcasts over strided
//! dimensions: ≈ 60 ms for a `(64, 16, 28, 28)` map on 2 cores, 30× its forward pass, which
//! made batch norm most of the ResNet's training step. On CPU (f32, f64; with
//! [`neka_common::kernels::KernelPath::Fused`], the default) train mode therefore runs as one
//! custom op ([`BatchNormTrainOp`], in [`crate::kernels::batch_norm`]) with the backward written
//! out:
//!
//! ```text
//! forward:   per channel μ, σ² (two passes), a = γ/√(σ² + ε), y = a·x + (β − a·μ)
//! backward:  dβ = Σ dy,  dγ = Σ dy·x̂,  dx = a · (dy − dβ/n − x̂·dγ/n),  x̂ = (x − μ)/√(σ² + ε)
//! ```
//!
//! A ReLU after the norm can be fused into the op ([`BatchNorm2d::forward_relu_t`]). The
//! running statistics are updated from the op's μ and σ² with the same formulas. candle-nn's
//! path stays the twin ([`BatchNorm2d::forward_train_candle`], what CUDA and Metal run), and the
//! tests hold the two equal.

use crate::kernels::BatchNormTrainOp;
use crate::Result;
use candle_core::{DType, ModuleT, Tensor, Var};
use candle_nn::{BatchNormConfig, Init, VarBuilder};
use neka_common::kernels::{fused_applies, Fused};

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

impl BatchNorm2d {
    /// Whether train mode takes neka's kernel for `xs`: on CPU, f32 or f64, with
    /// [`neka_common::kernels::KernelPath::Fused`] selected ([`fused_applies`]).
    pub fn uses_kernel(xs: &Tensor) -> bool {
        fused_applies(xs.device().location(), xs.dtype())
    }

    fn count_batch(&self) -> candle_core::Result<()> {
        let count = (self.num_batches_tracked.as_detached_tensor() + 1.0)?;
        self.num_batches_tracked.set(&count)
    }

    /// Train mode on candle-nn's ops (any device): batch statistics, running ones updated.
    pub fn forward_train_candle(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let ys = self.inner.forward_train(xs)?;
        self.count_batch()?;
        Ok(ys)
    }

    /// Train mode on neka's CPU kernel ([`BatchNormTrainOp`]): the same values and gradients
    /// as [`BatchNorm2d::forward_train_candle`], and the same running-statistics update; with
    /// `relu`, `max(0, ·)` fused (one op, its backward masks by the output).
    pub fn forward_train_kernel(&self, xs: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        let (weight, bias) = match self.inner.weight_and_bias() {
            Some((w, b)) => (w.clone(), b.clone()),
            None => {
                let c = self.num_features();
                (
                    Tensor::ones(c, xs.dtype(), xs.device())?,
                    Tensor::zeros(c, xs.dtype(), xs.device())?,
                )
            }
        };
        let op = BatchNormTrainOp::new(self.inner.eps(), relu);
        let stats = op.stats.clone();
        let ys =
            xs.contiguous()?
                .apply_op3(&weight.contiguous()?, &bias.contiguous()?, Fused(op))?;
        let (mean, var, n) = stats
            .lock()
            .map_err(|_| candle_core::Error::Msg("batch-norm kernel: lock poisoned".into()))?
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("batch-norm kernel: no statistics".into()))?;
        let m = self.inner.momentum();
        let unbiased = n as f64 / (n as f64 - 1.0);
        let update = |running: &Tensor, batch: Vec<f64>, scale: f64| -> candle_core::Result<()> {
            let old: Vec<f64> = running.to_dtype(DType::F64)?.to_vec1()?;
            let new: Vec<f64> = old
                .iter()
                .zip(batch)
                .map(|(r, b)| (1.0 - m) * r + m * scale * b)
                .collect();
            let new = Tensor::new(new, running.device())?.to_dtype(running.dtype())?;
            Var::from_tensor(running)?.set(&new)
        };
        update(self.inner.running_mean(), mean, 1.0)?;
        update(self.inner.running_var(), var, unbiased)?;
        self.count_batch()?;
        Ok(ys)
    }
}

impl BatchNorm2d {
    /// `ReLU(BN(x))`, the pair that follows most convolutions in a ResNet: on neka's kernel
    /// path in train mode one op, otherwise [`ModuleT::forward_t`] then `relu`.
    pub fn forward_relu_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if train && Self::uses_kernel(xs) && xs.rank() >= 2 {
            self.forward_train_kernel(xs, true)
        } else {
            self.forward_t(xs, train)?.relu()
        }
    }
}

impl ModuleT for BatchNorm2d {
    /// `(B, C, H, W) → (B, C, H, W)`: batch statistics (and an update of the running ones) when
    /// `train`, the running statistics otherwise.
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train {
            self.inner.forward_t(xs, false)
        } else if Self::uses_kernel(xs) && xs.rank() >= 2 {
            self.forward_train_kernel(xs, false)
        } else {
            self.forward_train_candle(xs)
        }
    }
}
