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
//! [`CpuImpl::Kernels`], the default) train mode therefore runs as one custom op
//! ([`BatchNormTrainOp`]) with the backward written out:
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

use crate::kernel::{cpu_impl, CpuImpl, KernelFloat};
use crate::Result;
use candle_core::{DType, Device, ModuleT, Shape, Tensor, Var, WithDType};
use candle_nn::{BatchNormConfig, Init, VarBuilder};
use neka_common::cpu::{
    kernel_applies, parallel, threads, with_slice, CpuOp3, Fused3, Grads3, Input,
};
use std::sync::{Arc, Mutex};

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
    /// [`CpuImpl::Kernels`] selected.
    pub fn uses_kernel(xs: &Tensor) -> bool {
        kernel_applies(xs.device().location(), xs.dtype()) && cpu_impl() == CpuImpl::Kernels
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
                .apply_op3(&weight.contiguous()?, &bias.contiguous()?, Fused3(op))?;
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

/// Per-channel statistics of the batch: `(mean, biased variance, values per channel)`.
type Stats = Option<(Vec<f64>, Vec<f64>, usize)>;

/// Train-mode batch normalisation of `x (B, C, …)` with `γ (C)` and `β (C)` as one candle custom
/// op (CPU, f32 / f64), see the module docs. It records the batch's mean and biased variance
/// for the running-statistics update, and uses them again in its backward pass.
#[derive(Debug, Clone)]
pub struct BatchNormTrainOp {
    eps: f64,
    /// `max(0, ·)` fused after the affine map (the backward masks `dy` by `y > 0`).
    relu: bool,
    stats: Arc<Mutex<Stats>>,
}

impl BatchNormTrainOp {
    pub fn new(eps: f64, relu: bool) -> Self {
        Self {
            eps,
            relu,
            stats: Arc::new(Mutex::new(None)),
        }
    }

    /// `(B, C, S)` of an input of shape `(B, C, …)`: S is the product of the spatial sizes.
    fn geometry(shape: &Shape) -> candle_core::Result<(usize, usize, usize)> {
        let d = shape.dims();
        if d.len() < 2 {
            candle_core::bail!("batch-norm kernel: input {d:?} needs (B, C, …)")
        }
        let n = d[0] * d[2..].iter().product::<usize>();
        if n < 2 {
            candle_core::bail!(
                "batch-norm kernel: input {d:?} has {n} value per channel; train mode needs at least 2"
            )
        }
        Ok((d[0], d[1], d[2..].iter().product()))
    }

    /// Per channel: mean and biased variance, from the planes `x[b, c, :]` (two passes).
    fn channel_stats<F: KernelFloat>(x: &[F], (b, c, s): (usize, usize, usize)) -> Vec<(f64, f64)> {
        let n = (b * s) as f64;
        let per = c.div_ceil(2 * threads()).max(1);
        parallel((0..c).step_by(per), |c0| {
            (c0..(c0 + per).min(c))
                .map(|ch| {
                    let planes = (0..b).map(|i| &x[(i * c + ch) * s..(i * c + ch + 1) * s]);
                    let total: f64 = planes
                        .clone()
                        .map(|p| WithDType::to_f64(neka_common::cpu::sum(p)))
                        .sum();
                    let mean = total / n;
                    let mu = <F as WithDType>::from_f64(mean);
                    let sq: f64 = planes
                        .map(|p| {
                            let mut acc = [F::zero(); 8];
                            let chunks = p.chunks_exact(8);
                            let rest = chunks.remainder();
                            for ch8 in chunks {
                                for (a, &v) in acc.iter_mut().zip(ch8) {
                                    *a += (v - mu) * (v - mu);
                                }
                            }
                            let tail = rest.iter().fold(F::zero(), |a, &v| a + (v - mu) * (v - mu));
                            WithDType::to_f64(acc.iter().fold(tail, |a, &v| a + v))
                        })
                        .sum();
                    (mean, sq / n)
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect()
    }

    fn forward<F: KernelFloat>(
        &self,
        geo: (usize, usize, usize),
        x: &[F],
        gamma: &[F],
        beta: &[F],
    ) -> (Vec<F>, Vec<f64>, Vec<f64>) {
        let (_, c, s) = geo;
        let stats = Self::channel_stats(x, geo);
        // y = a·x + shift per channel
        let coef: Vec<(F, F)> = stats
            .iter()
            .enumerate()
            .map(|(ch, &(mean, var))| {
                let a = WithDType::to_f64(gamma[ch]) / (var + self.eps).sqrt();
                let shift = WithDType::to_f64(beta[ch]) - a * mean;
                (
                    <F as WithDType>::from_f64(a),
                    <F as WithDType>::from_f64(shift),
                )
            })
            .collect();
        let mut y = vec![F::zero(); x.len()];
        let relu = self.relu;
        parallel(y.chunks_mut(c * s).zip(x.chunks(c * s)), |(yb, xb)| {
            for (ch, (yp, xp)) in yb.chunks_mut(s).zip(xb.chunks(s)).enumerate() {
                let (a, shift) = coef[ch];
                for (o, &v) in yp.iter_mut().zip(xp) {
                    *o = a * v + shift;
                }
                if relu {
                    for o in yp.iter_mut() {
                        if *o < F::zero() {
                            *o = F::zero();
                        }
                    }
                }
            }
        });
        let (mean, var) = stats.into_iter().unzip();
        (y, mean, var)
    }

    /// `(dx, dγ, dβ)` from the recorded statistics; `dy` is the gradient of the affine map's
    /// output (already masked where a fused ReLU cut it off).
    #[allow(clippy::type_complexity)]
    fn backward<F: KernelFloat>(
        &self,
        (b, c, s): (usize, usize, usize),
        x: &[F],
        gamma: &[F],
        dy: &[F],
        (mean, var): (&[f64], &[f64]),
        want_dx: bool,
    ) -> (Option<Vec<F>>, Vec<F>, Vec<F>) {
        let n = (b * s) as f64;
        let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        // per channel Σ dy and Σ dy·(x − μ)
        let per = c.div_ceil(2 * threads()).max(1);
        let sums: Vec<(f64, f64)> = parallel((0..c).step_by(per), |c0| {
            (c0..(c0 + per).min(c))
                .map(|ch| {
                    let mu = <F as WithDType>::from_f64(mean[ch]);
                    let (mut sd, mut sdx) = (0f64, 0f64);
                    for i in 0..b {
                        let o = (i * c + ch) * s;
                        let (xp, dp) = (&x[o..o + s], &dy[o..o + s]);
                        let mut acc = [F::zero(); 8];
                        let mut accx = [F::zero(); 8];
                        for (xc, dc) in xp.chunks(8).zip(dp.chunks(8)) {
                            for k in 0..xc.len() {
                                acc[k] += dc[k];
                                accx[k] += dc[k] * (xc[k] - mu);
                            }
                        }
                        sd += acc.iter().fold(0.0, |a, v| a + WithDType::to_f64(*v));
                        sdx += accx.iter().fold(0.0, |a, v| a + WithDType::to_f64(*v));
                    }
                    (sd, sdx)
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
        let dbeta: Vec<F> = sums
            .iter()
            .map(|&(d, _)| <F as WithDType>::from_f64(d))
            .collect();
        let dgamma: Vec<F> = sums
            .iter()
            .zip(&inv)
            .map(|(&(_, dx), i)| <F as WithDType>::from_f64(dx * i))
            .collect();
        let dx = want_dx.then(|| {
            // dx = a·(dy − dβ/n − x̂·dγ/n) = a·dy + p·x + q with x̂ = (x − μ)·inv
            let coef: Vec<(F, F, F)> = (0..c)
                .map(|ch| {
                    let a = WithDType::to_f64(gamma[ch]) * inv[ch];
                    let (sd, sdx) = sums[ch];
                    let k = sdx * inv[ch] * inv[ch] / n; // dγ·inv/n
                    let p = -a * k;
                    let q = a * (k * mean[ch] - sd / n);
                    let f = |v: f64| <F as WithDType>::from_f64(v);
                    (f(a), f(p), f(q))
                })
                .collect();
            let mut dx = vec![F::zero(); x.len()];
            parallel(
                dx.chunks_mut(c * s)
                    .zip(x.chunks(c * s).zip(dy.chunks(c * s))),
                |(db, (xb, dyb))| {
                    for (ch, (o, (xp, dp))) in db
                        .chunks_mut(s)
                        .zip(xb.chunks(s).zip(dyb.chunks(s)))
                        .enumerate()
                    {
                        let (a, p, q) = coef[ch];
                        for (r, (&xv, &dv)) in o.iter_mut().zip(xp.iter().zip(dp)) {
                            *r = a * dv + p * xv + q;
                        }
                    }
                },
            );
            dx
        });
        (dx, dgamma, dbeta)
    }
}

/// What the kernel's errors name.
const WHAT: &str = "batch-norm kernel";

impl<F: KernelFloat> CpuOp3<F> for BatchNormTrainOp {
    const NAME: &'static str = "neka-batch-norm-train";

    fn cpu_fwd(&self, [x, weight, bias]: [Input<'_>; 3]) -> candle_core::Result<(Vec<F>, Shape)> {
        let geo = Self::geometry(x.shape())?;
        if weight.shape().dims() != [geo.1] || bias.shape().dims() != [geo.1] {
            candle_core::bail!(
                "batch-norm kernel: weight {:?} and bias {:?} must be [{}]",
                weight.shape().dims(),
                bias.shape().dims(),
                geo.1
            )
        }
        let (out, mean, var) =
            self.forward::<F>(geo, x.slice(WHAT)?, weight.slice(WHAT)?, bias.slice(WHAT)?);
        *self
            .stats
            .lock()
            .map_err(|_| candle_core::Error::Msg("batch-norm kernel: lock poisoned".into()))? =
            Some((mean, var, geo.0 * geo.2));
        Ok((out, x.shape().clone()))
    }

    fn bwd(
        &self,
        [x, gamma, _beta]: [&Tensor; 3],
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<Grads3> {
        let geo = Self::geometry(x.shape())?;
        let what = "batch-norm kernel backward";
        let guard = self
            .stats
            .lock()
            .map_err(|_| candle_core::Error::Msg("batch-norm kernel: lock poisoned".into()))?;
        // the statistics the forward pass recorded (recomputed if there are none)
        let (mean, var): (Vec<f64>, Vec<f64>) = match &*guard {
            Some((m, v, _)) => (m.clone(), v.clone()),
            None => with_slice::<F, _>(x, what, |xs| {
                Self::channel_stats(xs, geo).into_iter().unzip()
            })?,
        };
        drop(guard);
        let stats = (mean.as_slice(), var.as_slice());
        let want_dx = x.track_op();
        let (dx, dg, db) = with_slice::<F, _>(x, what, |xs| {
            with_slice::<F, _>(gamma, what, |gs| {
                with_slice::<F, _>(dy, what, |dys| {
                    if !self.relu {
                        return Ok(self.backward(geo, xs, gs, dys, stats, want_dx));
                    }
                    // the fused ReLU's backward: no gradient where it output 0
                    with_slice::<F, _>(y, what, |ys| {
                        let masked: Vec<F> = dys
                            .iter()
                            .zip(ys)
                            .map(|(&d, &v)| if v > F::zero() { d } else { F::zero() })
                            .collect();
                        self.backward(geo, xs, gs, &masked, stats, want_dx)
                    })
                })
            })
        })????;
        let cpu = Device::Cpu;
        Ok((
            dx.map(|dx| Tensor::from_vec(dx, x.shape(), &cpu))
                .transpose()?,
            Some(Tensor::from_vec(dg, geo.1, &cpu)?),
            Some(Tensor::from_vec(db, geo.1, &cpu)?),
        ))
    }
}
