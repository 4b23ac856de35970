//! BPTT for [`RecurrentOp`]: the steps in reverse, per step the cell's pointwise backward and
//! one GEMM `dh_{t-1} += drec_t W`; after the loop `dW = Σ_t drec_t^T h_{t-1}` is one GEMM over
//! all `T·B` rows.

use super::{cpu, gemm, Dims, Direction, RecurrentOp, Shared};
use crate::cell::{BackwardRow, Cell};
use candle_core::{Device, Result, Tensor};
use neka_common::kernels::{KernelFloat, Mat};

impl<C: Cell> RecurrentOp<C> {
    /// Direction `k`'s BPTT: writes `∂L/∂gx` of its rows through `dgx` and returns
    /// (`∂L/∂W` `(G, H)`, `∂L/∂init` `(B, S0)`, `∂L/∂b_hh` `(G)` or empty).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn backward<F: KernelFloat>(
        &self,
        d: &Dims,
        k: usize,
        w: &[F],
        aux: &[F],
        saved: &[F],
        grad: &[F],
        dgx_out: Shared<F>,
    ) -> (Vec<F>, Vec<F>, Vec<F>) {
        let (steps, b, g, h, s0, sv) = d.sizes();
        let (init, _) = self.aux_parts(d, k, aux);
        let reverse = self.reversed(d, k);
        let mut drec = vec![F::zero(); steps * b * g];
        let mut hprev = vec![F::zero(); steps * b * h];
        // ∂L/∂(final state) starts the recursion.
        let states = s0 / h;
        let mut dstate = vec![F::zero(); b * s0];
        for s in 0..states {
            for r in 0..b {
                let at = d.state_at(k, s, r);
                dstate[r * s0 + s * h..r * s0 + (s + 1) * h].copy_from_slice(&grad[at..at + h]);
            }
        }
        let mut ds = vec![F::zero(); s0];
        let mut order = Self::order(reverse, steps);
        order.reverse();
        for t in order {
            for r in 0..b {
                let len = self.len(r, steps);
                if t >= len {
                    continue;
                }
                let at = (t * b + r) * sv;
                // ∂L/∂h_t from the output, plus what flows back from step t+1.
                let go = &grad[d.out_at(r, t, k)..d.out_at(r, t, k) + h];
                for ((a, &x), &y) in ds[..h].iter_mut().zip(&dstate[r * s0..]).zip(go) {
                    *a = x + y;
                }
                ds[h..s0].copy_from_slice(&dstate[r * s0 + h..(r + 1) * s0]);
                let first = if reverse { t + 1 == len } else { t == 0 };
                let prev = if first {
                    &init[r * s0..(r + 1) * s0]
                } else {
                    let tp = if reverse { t + 1 } else { t - 1 };
                    let pat = (tp * b + r) * sv;
                    &saved[pat..pat + s0]
                };
                hprev[(t * b + r) * h..(t * b + r + 1) * h].copy_from_slice(&prev[..h]);
                let gi = (t * b + r) * g;
                // SAFETY: gx row (r, t) of direction k: G values no other thread touches.
                let dgx =
                    unsafe { std::slice::from_raw_parts_mut(dgx_out.0.add(d.gx_at(r, t, k)), g) };
                let row = BackwardRow {
                    saved: &saved[at..at + sv],
                    prev,
                    dstate: &ds,
                    dgx,
                    drec: &mut drec[gi..gi + g],
                    dprev: &mut dstate[r * s0..(r + 1) * s0],
                };
                self.cell.backward_row(h, row);
            }
            // dh_{t-1} += drec_t · W   (inactive rows have drec = 0 and keep their dstate)
            // SAFETY: lhs = drec_t (B × G, stride G), rhs = wm (G × H, row stride H),
            // dst = dstate's h-part (B × H, stride s0 ≥ H).
            unsafe {
                gemm(
                    d.par,
                    (b, h, g),
                    Mat::row_major(dstate.as_mut_ptr(), s0),
                    true,
                    Mat::row_major(drec[t * b * g..].as_ptr(), g),
                    Mat::row_major(w.as_ptr(), h),
                )
            }
        }
        // dW (G × H) = Σ_t drec_t^T h_{t-1}: one GEMM over all T·B rows; db_hh = Σ drec.
        let mut dw = vec![F::zero(); g * h];
        let rows = steps * b;
        // SAFETY: lhs = drec^T read as drec[k·G + m] (m < G, k < T·B), rhs = hprev (T·B × H),
        // dst = dw (G × H).
        unsafe {
            gemm(
                d.par,
                (g, h, rows),
                Mat::row_major(dw.as_mut_ptr(), h),
                false,
                Mat::col_major(drec.as_ptr(), g),
                Mat::row_major(hprev.as_ptr(), h),
            )
        }
        // db_hh = Σ drec (rows of inactive steps are zero).
        let mut dbh = vec![F::zero(); if self.has_bias { g } else { 0 }];
        if self.has_bias {
            for row in drec.chunks_exact(g) {
                for (a, &v) in dbh.iter_mut().zip(row) {
                    *a += v;
                }
            }
        }
        (dw, dstate, dbh)
    }
}

/// Direction `k`'s backward pass, compiled per instruction set ([`cpu::vectorized`]).
struct Backward<'a, C: Cell, F> {
    dir: Direction<'a, C, F>,
    saved: &'a [F],
    grad: &'a [F],
    dgx: Shared<F>,
}

impl<C: Cell, F: KernelFloat> cpu::Vectorized for Backward<'_, C, F> {
    type Output = (Vec<F>, Vec<F>, Vec<F>);
    #[inline(always)]
    fn run(self) -> (Vec<F>, Vec<F>, Vec<F>) {
        let Direction { op, d, k, w, aux } = self.dir;
        op.backward(d, k, w, aux, self.saved, self.grad, self.dgx)
    }
}
impl<C: Cell> RecurrentOp<C> {
    pub(super) fn bwd_typed<F: KernelFloat>(
        &self,
        gx: &Tensor,
        w: &Tensor,
        aux: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let mut d = self.dims(gx.shape(), w.shape(), aux.shape())?;
        d.keep = true;
        let (nw, nr) = (d.g * d.h, (d.t + 1) * d.b * d.sv);
        let mut reserve = self.reserve.lock().map_err(|_| {
            candle_core::Error::Msg("recurrent kernel: reserve lock poisoned".into())
        })?;
        if reserve.is_none() {
            // Run without a reserve (inference): recompute it.
            let what = "recurrent kernel";
            let res = cpu::with_slice::<F, _>(gx, what, |gx| {
                cpu::with_slice::<F, _>(w, what, |w| {
                    cpu::with_slice::<F, _>(aux, what, |aux| self.forward_all(&d, gx, w, aux).1)
                })
            })???;
            *reserve = Some(F::to_cpu_storage_owned(res));
        }
        let Some(reserve) = reserve.as_ref() else {
            candle_core::bail!("recurrent kernel: backward before forward")
        };
        let res = reserve.as_slice::<F>()?;
        if res.len() != d.dirs * nr || grad.elem_count() != self.output_len(d.b, d.t, d.dirs) {
            candle_core::bail!("recurrent kernel: reserve or gradient does not match the inputs")
        }
        let what = "recurrent kernel";
        let mut dgx = vec![F::zero(); d.b * d.t * d.dirs * d.g];
        let out = Shared(dgx.as_mut_ptr());
        let parts = cpu::with_slice::<F, _>(w, what, |w| {
            cpu::with_slice::<F, _>(aux, what, |aux| {
                cpu::with_slice::<F, _>(grad, what, |grad| {
                    Self::per_direction(d.dirs, |k| {
                        cpu::vectorized(Backward {
                            dir: Direction {
                                op: self,
                                d: &d,
                                k,
                                w: &w[k * nw..(k + 1) * nw],
                                aux,
                            },
                            saved: &res[k * nr..(k + 1) * nr],
                            grad,
                            dgx: out,
                        })
                    })
                })
            })
        })???;
        // ∂L/∂aux = [∂L/∂init of every direction | ∂L/∂b_hh of every direction]
        let (mut dw, mut daux, mut dbias) = (Vec::new(), Vec::new(), Vec::new());
        for (a, b, c) in parts {
            dw.extend(a);
            daux.extend(b);
            dbias.extend(c);
        }
        daux.extend(dbias);
        let cpu = Device::Cpu;
        let n = daux.len();
        Ok((
            Tensor::from_vec(dgx, (d.b, d.t, d.dirs * d.g), &cpu)?,
            Tensor::from_vec(dw, (d.dirs, d.g, d.h), &cpu)?,
            Tensor::from_vec(daux, n, &cpu)?,
        ))
    }
}
