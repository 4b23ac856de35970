//! The dense layer's CPU kernel: `y = x Wᵀ + b` (+ ReLU) as one candle op, with the weight in
//! its stored `(out, in)` layout. The layer and its candle-op twin are
//! [`crate::nn::linear_forward`].

use super::{self as cpu, CpuKernel, Input, KernelFloat, Mat};
use candle_core::{Device, Result, Shape, Tensor};

/// The dense layer as one candle op on `(x (B, I), W (O, I), b (O))` → `(B, O)`:
///
/// ```text
/// y  = x Wᵀ + b   (then ReLU)        one GEMM, b as its initial value, rows split over threads
/// dz = dy ⊙ [y > 0]                  (ReLU)
/// dx = dz W        only when x needs a gradient
/// dW = dzᵀ x       in W's own layout, rows split over threads
/// db = Σ_rows dz
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LinearOp {
    /// Apply ReLU to the output (the backward pass masks `dy` by `y > 0`).
    pub relu: bool,
}

impl LinearOp {
    fn dims(x: &candle_core::Shape, w: &candle_core::Shape) -> Result<(usize, usize, usize)> {
        let (b, i) = x.dims2()?;
        let (o, wi) = w.dims2()?;
        if wi != i {
            candle_core::bail!(
                "linear: input has {i} features, weight {:?} expects {wi}",
                w.dims()
            )
        }
        Ok((b, i, o))
    }

    fn forward<F: KernelFloat>(
        &self,
        (b, i, o): (usize, usize, usize),
        x: &[F],
        w: &[F],
        bias: &[F],
    ) -> Vec<F> {
        // y starts as the bias in every row (the GEMM's initial value): no zero-fill first.
        let mut y = Vec::with_capacity(b * o);
        for _ in 0..b {
            y.extend_from_slice(bias);
        }
        if b <= cpu::FEW_ROWS {
            // A handful of rows (decoding): dot products over W as stored, columns split over
            // the pool, instead of a GEMM that repacks all of W for them.
            cpu::matmul_nt_rows((b, o, i), &mut y, true, x, i, w, true);
            if self.relu {
                let zero = F::zero();
                y.iter_mut()
                    .for_each(|v| *v = if *v < zero { zero } else { *v });
            }
            return y;
        }
        // SAFETY: y is b×o, x b×i, Wᵀ is i×o (W is o×i row-major). Split over the pool by
        // rows or, when there are more outputs than rows, by output columns (each thread then
        // packs only its part of W).
        unsafe {
            cpu::par_matmul(
                (b, o, i),
                Mat::row_major(y.as_mut_ptr(), o),
                true,
                Mat::row_major(x.as_ptr(), i),
                Mat::col_major(w.as_ptr(), i),
            );
        }
        if self.relu {
            let zero = F::zero();
            y.iter_mut()
                .for_each(|v| *v = if *v < zero { zero } else { *v });
        }
        y
    }

    #[allow(clippy::type_complexity)]
    fn backward<F: KernelFloat>(
        &self,
        (b, i, o): (usize, usize, usize),
        (x, w, y, dy): (&[F], &[F], &[F], &[F]),
        want_dx: bool,
    ) -> (Option<Vec<F>>, Vec<F>, Vec<F>) {
        if b == 0 {
            return (
                want_dx.then(Vec::new),
                vec![F::zero(); o * i],
                vec![F::zero(); o],
            );
        }
        let dz: std::borrow::Cow<[F]> = if self.relu {
            dy.iter()
                .zip(y)
                .map(|(&g, &v)| if v > F::zero() { g } else { F::zero() })
                .collect()
        } else {
            dy.into()
        };
        let mut db = vec![F::zero(); o];
        for row in dz.chunks(o) {
            db.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
        }
        let t = cpu::threads();
        // Written whole by the GEMMs (no zero-fill first): dW = dzᵀ x.
        let mut dw: Vec<F> = Vec::with_capacity(o * i);
        let per_o = o.div_ceil(t).max(1);
        cpu::parallel(
            dw.spare_capacity_mut()[..o * i]
                .chunks_mut(per_o * i)
                .enumerate(),
            |(j, dwb)| {
                let rows = dwb.len() / i.max(1);
                let dwb: *mut F = dwb.as_mut_ptr().cast();
                // SAFETY: dwb is rows×i; dzᵀ rows o0.. are rows×b (dz is b×o row-major); x is b×i.
                unsafe {
                    cpu::matmul(
                        (rows, i, b),
                        Mat::row_major(dwb, i),
                        false,
                        Mat::col_major(dz.as_ptr().add(j * per_o), o),
                        Mat::row_major(x.as_ptr(), i),
                    );
                }
            },
        );
        // SAFETY: the GEMMs above wrote all o·i values (b ≥ 1, checked above).
        unsafe { dw.set_len(o * i) };
        let dx = want_dx.then(|| {
            let mut dx = vec![F::zero(); b * i];
            let per = b.div_ceil(t).max(1);
            cpu::parallel(
                dx.chunks_mut(per * i).zip(dz.chunks(per * o)),
                |(dxb, dzb)| {
                    let rows = dxb.len() / i.max(1);
                    // SAFETY: dxb is rows×i, dzb rows×o, W is o×i.
                    unsafe {
                        cpu::matmul(
                            (rows, i, o),
                            Mat::row_major(dxb.as_mut_ptr(), i),
                            false,
                            Mat::row_major(dzb.as_ptr(), o),
                            Mat::row_major(w.as_ptr(), i),
                        );
                    }
                },
            );
            dx
        });
        (dx, dw, db)
    }
}

impl<F: KernelFloat> CpuKernel<F, 3> for LinearOp {
    const NAME: &'static str = "neka-linear";

    fn cpu_fwd(&self, [x, w, b]: [Input<'_>; 3]) -> Result<(Vec<F>, Shape)> {
        let d = Self::dims(x.shape(), w.shape())?;
        if b.shape().dims() != [d.2] {
            candle_core::bail!("linear: bias {:?} must be [{}]", b.shape().dims(), d.2)
        }
        let what = "linear";
        let y = self.forward(d, x.slice(what)?, w.slice(what)?, b.slice(what)?);
        Ok((y, Shape::from((d.0, d.2))))
    }

    fn bwd(&self, [x, w, _]: [&Tensor; 3], y: &Tensor, dy: &Tensor) -> Result<[Option<Tensor>; 3]> {
        let d = LinearOp::dims(x.shape(), w.shape())?;
        let what = "linear backward";
        let (dx, dw, db) = cpu::with_slice::<F, _>(x, what, |xs| {
            cpu::with_slice::<F, _>(w, what, |ws| {
                cpu::with_slice::<F, _>(y, what, |ys| {
                    cpu::with_slice::<F, _>(dy, what, |dys| {
                        self.backward(d, (xs, ws, ys, dys), x.track_op())
                    })
                })
            })
        })????;
        Ok([
            dx.map(|v| Tensor::from_vec(v, x.shape(), &Device::Cpu))
                .transpose()?,
            Some(Tensor::from_vec(dw, w.shape(), &Device::Cpu)?),
            Some(Tensor::from_vec(db, d.2, &Device::Cpu)?),
        ])
    }
}
