//! neka's CPU train-mode batch normalisation (+ fused ReLU): ONE candle custom op with its
//! backward pass written out. The layer, its running statistics and its candle-op twin are
//! [`crate::norm::BatchNorm2d`]:
//!
//! ```text
//! forward:   per channel μ, σ² (two passes), a = γ/√(σ² + ε), y = a·x + (β − a·μ)
//! backward:  dβ = Σ dy,  dγ = Σ dy·x̂,  dx = a · (dy − dβ/n − x̂·dγ/n),  x̂ = (x − μ)/√(σ² + ε)
//! ```

use candle_core::{Device, Shape, Tensor, WithDType};
use neka_common::kernels::{parallel, threads, with_slice, CpuKernel, Input, KernelFloat};
use std::sync::{Arc, Mutex};

/// Per-channel statistics of the batch: `(mean, biased variance, values per channel)`.
pub(crate) type Stats = Option<(Vec<f64>, Vec<f64>, usize)>;

/// Train-mode batch normalisation of `x (B, C, …)` with `γ (C)` and `β (C)` as one candle custom
/// op (CPU, f32 / f64), see the module docs. It records the batch's mean and biased variance
/// for the running-statistics update, and uses them again in its backward pass.
#[derive(Debug, Clone)]
pub struct BatchNormTrainOp {
    eps: f64,
    /// `max(0, ·)` fused after the affine map (the backward masks `dy` by `y > 0`).
    relu: bool,
    pub(crate) stats: Arc<Mutex<Stats>>,
}

impl BatchNormTrainOp {
    /// The op with `ε` added to the variance and, if `relu`, `max(0, ·)` fused after the affine
    /// map; the batch statistics are recorded by the forward pass.
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
                        .map(|p| WithDType::to_f64(neka_common::kernels::sum(p)))
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

impl<F: KernelFloat> CpuKernel<F, 3> for BatchNormTrainOp {
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
    ) -> candle_core::Result<[Option<Tensor>; 3]> {
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
        Ok([
            dx.map(|dx| Tensor::from_vec(dx, x.shape(), &cpu))
                .transpose()?,
            Some(Tensor::from_vec(dg, geo.1, &cpu)?),
            Some(Tensor::from_vec(db, geo.1, &cpu)?),
        ])
    }
}
