//! The forward pass of [`RecurrentOp`]: per direction the recurrence with one GEMM per step
//! (`rec = h_{t-1} W^T + b_hh`) and the cell's pointwise equations, vectorised for the CPU's
//! widest SIMD; the reserve space for the backward pass kept inside the op.

use super::{cpu, gemm, Dims, Direction, RecurrentOp, Shared};
use crate::cell::Cell;
use neka_common::kernels::{KernelFloat, Mat};

impl<C: Cell> RecurrentOp<C> {
    /// Forward pass of all directions: the flat output and the reserve `(D, T + 1, B, sv)`.
    pub(super) fn forward_all<F: KernelFloat>(
        &self,
        d: &Dims,
        gx: &[F],
        w: &[F],
        aux: &[F],
    ) -> (Vec<F>, Vec<F>) {
        let nw = d.g * d.h;
        let mut out = vec![F::zero(); self.output_len(d.b, d.t, d.dirs)];
        let dst = Shared(out.as_mut_ptr());
        let saved = Self::per_direction(d.dirs, |k| {
            cpu::vectorized(Forward {
                dir: Direction {
                    op: self,
                    d,
                    k,
                    w: &w[k * nw..(k + 1) * nw],
                    aux,
                },
                gx,
                out: dst,
            })
        })
        .concat();
        (out, saved)
    }

    /// Direction `k`: runs the recurrence, writes its outputs and final states through `out`
    /// and returns its reserve `(T + 1, B, sv)`.
    #[inline(always)]
    pub(super) fn forward<F: KernelFloat>(
        &self,
        d: &Dims,
        k: usize,
        gx: &[F],
        w: &[F],
        aux: &[F],
        out: Shared<F>,
    ) -> Vec<F> {
        let (steps, b, g, h, s0, sv) = d.sizes();
        let (init, bias) = self.aux_parts(d, k, aux);
        // The reserve (T + 1, B, sv), or one step's (B, sv) in inference.
        let mut saved = vec![F::zero(); if d.keep { (steps + 1) * b * sv } else { b * sv }];
        let slot = |t: usize, r: usize| if d.keep { (t * b + r) * sv } else { r * sv };
        let mut state = init.to_vec();
        let mut rec = vec![F::zero(); b * g];
        // W^T (H, G) contiguous for the GEMM once per sequence; a single step reads W as it is
        // (the GEMM packs it either way).
        let wt = (steps > 1).then(|| transpose(w, g, h));
        let (rhs, rhs_s) = match &wt {
            Some(wt) => (&wt[..], (g, 1)),
            None => (w, (1, h)),
        };
        for t in Self::order(self.reversed(d, k), steps) {
            // rec = h_{t-1} W^T (+ b_hh)
            self.recurrent_matmul(d, &state, (rhs, rhs_s), bias, &mut rec);
            for r in 0..b {
                if t >= self.len(r, steps) {
                    continue;
                }
                let row = &mut saved[slot(t, r)..slot(t, r) + sv];
                let at = d.gx_at(r, t, k);
                self.cell.forward_row(
                    h,
                    &gx[at..at + g],
                    &rec[r * g..(r + 1) * g],
                    &state[r * s0..(r + 1) * s0],
                    row,
                );
                state[r * s0..(r + 1) * s0].copy_from_slice(&row[..s0]);
                // SAFETY: row (r, t) of direction k: H values no other thread writes.
                unsafe {
                    std::ptr::copy_nonoverlapping(row.as_ptr(), out.0.add(d.out_at(r, t, k)), h);
                }
            }
        }
        for r in 0..b {
            if d.keep {
                let last = (steps * b + r) * sv;
                saved[last..last + s0].copy_from_slice(&state[r * s0..(r + 1) * s0]);
            }
            for s in 0..s0 / h {
                // SAFETY: final state s of row r, direction k: written by this thread only.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        state[r * s0 + s * h..].as_ptr(),
                        out.0.add(d.state_at(k, s, r)),
                        h,
                    );
                }
            }
        }
        saved
    }

    /// `rec (B, G) = state_h (B, H) · W^T (+ b_hh)`, with `W^T` `(H, G)` read with the
    /// given (row, column) strides.
    fn recurrent_matmul<F: KernelFloat>(
        &self,
        d: &Dims,
        state: &[F],
        (wt, wt_s): (&[F], (usize, usize)),
        bias: Option<&[F]>,
        rec: &mut [F],
    ) {
        let Dims { b, g, h, s0, .. } = *d;
        if let Some(bias) = bias {
            for row in rec.chunks_exact_mut(g) {
                row.copy_from_slice(bias);
            }
        }
        if wt_s == (1, h) && b <= cpu::FEW_ROWS {
            // One step of a few rows (decoding): dot products with W's rows as stored.
            cpu::matmul_nt_rows((b, g, h), rec, bias.is_some(), state, s0, wt, d.par);
            return;
        }
        // SAFETY: lhs rows r < b of stride s0 ≥ h inside `state` (b·s0 floats); rhs = W^T
        // (h × g) inside `wt` (g·h floats) with strides `wt_s`; dst = rec (b × g).
        unsafe {
            gemm(
                d.par,
                (b, g, h),
                Mat::row_major(rec.as_mut_ptr(), g),
                bias.is_some(),
                Mat::row_major(state.as_ptr(), s0),
                Mat::new(wt.as_ptr(), wt_s),
            )
        }
    }
}

/// `(cols, rows)` transpose of a row-major `(rows, cols)` matrix, in cache-sized tiles.
fn transpose<F: Copy + num_traits::Zero>(m: &[F], rows: usize, cols: usize) -> Vec<F> {
    const TILE: usize = 32;
    let mut out = vec![F::zero(); rows * cols];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = m[r * cols + c];
                }
            }
        }
    }
    out
}

/// Direction `k`'s forward pass, compiled per instruction set ([`cpu::vectorized`]).
pub(super) struct Forward<'a, C: Cell, F> {
    dir: Direction<'a, C, F>,
    gx: &'a [F],
    out: Shared<F>,
}

impl<C: Cell, F: KernelFloat> cpu::Vectorized for Forward<'_, C, F> {
    type Output = Vec<F>;
    #[inline(always)]
    fn run(self) -> Vec<F> {
        let Direction { op, d, k, w, aux } = self.dir;
        op.forward(d, k, self.gx, w, aux, self.out)
    }
}
