//! The fused CPU kernel of the recurrent layers ([`crate::runner::Recurrent`]): the time loop of one layer (one or both directions) as ONE candle op,
//! with BPTT written out by hand.
//!
//! Built from candle ops, a sequence of `T` steps is ~10·T graph nodes, and the backward pass
//! of every `narrow` that picks `gx_t` out of the projected input allocates and adds a
//! full-size `(B, T, G)` gradient — quadratic in `T`. This op instead takes
//!
//! ```text
//! gx   (B, T, D·G)      the input projections x_t U^T + b_ih of every step, both directions
//!                       side by side (one GEMM for the layer, batch-major as the input is)
//! w    (D, G, H)        W = weight_hh, as stored (one direction: the parameter itself)
//! aux  (D·B·S0 [+ D·G]) the initial states [h_0 | C_0] of every direction, then bias_hh
//! ```
//!
//! for `D = 1` direction (forward) or `D = 2` (a
//! bidirectional layer: direction 0 forward, 1 reversed; the two are independent, so forward
//! *and* backward passes run them on two threads). Per direction it runs the recurrence with
//! one GEMM per step (`rec = h_{t-1} W^T + b_hh`) and the cell's pointwise equations
//! (vectorised for the CPU's widest SIMD, [`neka_common::kernels::vectorized`]), and returns one
//! flat tensor of `B·T·D·H + D·S·B·H` values:
//!
//! ```text
//! [ output (B, T, D·H): h_t of every step, directions side by side, zero past a length ]
//! [ final states (D, S, B, H): h_n (and C_n for the LSTM)                              ]
//! ```
//!
//! so the layer's output is a contiguous view the next layer (or the head) reads as it is: no
//! transposes, stacks or concatenations around the op. Gradients flow into all of it. What
//! the backward pass needs besides (every step's state and gate activations — cuDNN calls
//! this the reserve space) stays inside the op, so the graph never carries, slices or pads it.
//!
//! The backward pass ([`bptt`]) runs the steps in reverse (BPTT): per step the cell's pointwise backward
//! and one GEMM `dh_{t-1} += drec_t W`; after the loop `dW = Σ_t drec_t^T h_{t-1}` is one GEMM
//! over all `T·B` rows.
//!
//! Lengths follow PyTorch's packed sequences: row `b` is active at step `t` iff
//! `t < len_b`; an inactive row keeps its state and outputs zeros. Forward runs
//! `t = 0, 1, …`; reverse runs `t = T−1, …, 0`, so it starts at each row's true last token.

use crate::cell::Cell;
use candle_core::{CpuStorage, Result, Shape, Tensor};
use neka_common::kernels::{self as cpu, KernelFloat, Mat};
use std::sync::{Arc, Mutex};

mod bptt;

/// One layer of a recurrent network (one or both directions), as a candle custom op.
#[derive(Debug, Clone)]
pub struct RecurrentOp<C: Cell> {
    pub cell: C,
    pub hidden: usize,
    /// `aux` ends with bias_hh.
    pub has_bias: bool,
    /// Per-row sequence lengths (`1..=T`); `None` = all `T`.
    pub lengths: Option<Arc<Vec<usize>>>,
    /// Keep the reserve space for a backward pass (training). Without it (inference) the
    /// forward pass holds one step's activations instead of all `T`; a backward pass that
    /// comes anyway recomputes them first (right, only slower).
    pub keep_reserve: bool,
    /// The reserve space of the last forward pass, `(D, T + 1, B, saved·H)`, for `bwd`.
    pub reserve: Arc<Mutex<Option<CpuStorage>>>,
}

impl<C: Cell> RecurrentOp<C> {
    /// The op for one layer (one direction forward, or two: forward and reversed).
    pub fn new(cell: C, hidden: usize, has_bias: bool, lengths: Option<Arc<Vec<usize>>>) -> Self {
        Self {
            cell,
            hidden,
            has_bias,
            lengths,
            keep_reserve: true,
            reserve: Arc::new(Mutex::new(None)),
        }
    }

    /// Sets [`RecurrentOp::keep_reserve`].
    pub fn keep_reserve(mut self, on: bool) -> Self {
        self.keep_reserve = on;
        self
    }

    /// Values in the op's output for `(B, T, D)`: the `(B, T, D·H)` outputs, then the
    /// `(D, S, B, H)` final states.
    pub fn output_len(&self, b: usize, t: usize, dirs: usize) -> usize {
        (b * t + self.cell.states() * b) * dirs * self.hidden
    }
}

#[derive(Clone, Copy)]
struct Dims {
    /// Directions (1 or 2).
    dirs: usize,
    /// The GEMMs may use candle's thread pool (false while directions run on it).
    par: bool,
    t: usize,
    b: usize,
    g: usize,
    h: usize,
    s0: usize,
    sv: usize,
    /// Keep every step's activations (the reserve) rather than the current step's.
    keep: bool,
}

impl Dims {
    /// `(T, B, G, H, S0, SV)`: steps, rows, gate width, hidden size, the state row's and
    /// the saved row's widths.
    fn sizes(&self) -> (usize, usize, usize, usize, usize, usize) {
        (self.t, self.b, self.g, self.h, self.s0, self.sv)
    }
    /// Offset of the outputs' row `(r, t)`, direction `k`, in the flat output.
    fn out_at(&self, r: usize, t: usize, k: usize) -> usize {
        ((r * self.t + t) * self.dirs + k) * self.h
    }
    /// Offset of final state `s` of row `r`, direction `k`, in the flat output.
    fn state_at(&self, k: usize, s: usize, r: usize) -> usize {
        let states = self.s0 / self.h;
        self.b * self.t * self.dirs * self.h + ((k * states + s) * self.b + r) * self.h
    }
    /// Offset of `gx` row `(r, t)`, direction `k`.
    fn gx_at(&self, r: usize, t: usize, k: usize) -> usize {
        ((r * self.t + t) * self.dirs + k) * self.g
    }
}

/// A pointer the directions' threads write disjoint parts through.
#[derive(Clone, Copy)]
struct Shared<F>(*mut F);
// SAFETY: used only for writes to disjoint (row, direction) blocks, joined before reading.
unsafe impl<F> Send for Shared<F> {}
unsafe impl<F> Sync for Shared<F> {}

impl<C: Cell> RecurrentOp<C> {
    fn dims(&self, gx: &Shape, w: &Shape, aux: &Shape) -> Result<Dims> {
        let (b, t, dg) = gx.dims3()?;
        let dirs = w.dims().first().copied().unwrap_or(0);
        let h = self.hidden;
        let g = self.cell.gates() * h;
        let s0 = self.cell.states() * h;
        let naux = dirs * (b * s0 + if self.has_bias { g } else { 0 });
        if !(1..=2).contains(&dirs)
            || dg != dirs * g
            || w.dims() != [dirs, g, h]
            || aux.dims() != [naux]
        {
            candle_core::bail!(
                "{}: shape mismatch: gx {gx:?} (want (B, T, D·{g}) with D ≤ 2), w {w:?} (want (D, {g}, {h})), aux {aux:?} (want ({naux}))",
                self.cell.name()
            )
        }
        if let Some(l) = &self.lengths {
            if l.len() != b || l.iter().any(|&n| n == 0 || n > t) {
                candle_core::bail!(
                    "{}: lengths {l:?} must hold {b} values in 1..={t}",
                    self.cell.name()
                )
            }
        }
        Ok(Dims {
            dirs,
            par: dirs == 1,
            t,
            b,
            g,
            h,
            s0,
            sv: self.cell.saved() * h,
            keep: self.keep_reserve,
        })
    }

    /// Whether direction `k` runs `t = T−1 … 0`: the second of a bidirectional layer.
    fn reversed(&self, d: &Dims, k: usize) -> bool {
        d.dirs == 2 && k == 1
    }

    /// Runs `f(0)`, …, `f(dirs − 1)`; two directions run side by side on candle's CPU pool.
    fn per_direction<T: Send>(dirs: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        if dirs == 2 && cpu::threads() > 1 {
            cpu::parallel(0..dirs, f)
        } else {
            (0..dirs).map(f).collect()
        }
    }

    fn len(&self, b: usize, t: usize) -> usize {
        self.lengths.as_ref().map_or(t, |l| l[b])
    }

    /// Time steps in processing order.
    fn order(reverse: bool, t: usize) -> Vec<usize> {
        if reverse {
            (0..t).rev().collect()
        } else {
            (0..t).collect()
        }
    }

    /// Direction `k`'s initial state `(B, S0)` and `b_hh` `(G)` in `aux`.
    fn aux_parts<'a, F>(&self, d: &Dims, k: usize, aux: &'a [F]) -> (&'a [F], Option<&'a [F]>) {
        let ni = d.b * d.s0;
        let bias = self
            .has_bias
            .then(|| &aux[d.dirs * ni + k * d.g..d.dirs * ni + (k + 1) * d.g]);
        (&aux[k * ni..(k + 1) * ni], bias)
    }

    /// Forward pass of all directions: the flat output and the reserve `(D, T + 1, B, sv)`.
    fn forward_all<F: KernelFloat>(
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
    fn forward<F: KernelFloat>(
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

/// What both passes of direction `k` read: the op, the sizes, `k`, the direction's weights
/// `W` and its `aux` (initial states, recurrent bias).
struct Direction<'a, C: Cell, F> {
    op: &'a RecurrentOp<C>,
    d: &'a Dims,
    k: usize,
    w: &'a [F],
    aux: &'a [F],
}

/// Direction `k`'s forward pass, compiled per instruction set ([`cpu::vectorized`]).
struct Forward<'a, C: Cell, F> {
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
/// One GEMM (see [`cpu::matmul`]), split over candle's pool when `par` and large.
///
/// # Safety
/// As for [`cpu::matmul`].
unsafe fn gemm<F: KernelFloat>(
    par: bool,
    mnk: (usize, usize, usize),
    dst: Mat<*mut F>,
    accumulate: bool,
    lhs: Mat<*const F>,
    rhs: Mat<*const F>,
) {
    if par {
        cpu::par_matmul(mnk, dst, accumulate, lhs, rhs)
    } else {
        cpu::matmul(mnk, dst, accumulate, lhs, rhs)
    }
}
impl<C: Cell, F: KernelFloat> cpu::CpuKernel<F, 3> for RecurrentOp<C> {
    const NAME: &'static str = "neka-recurrent";

    fn cpu_fwd(&self, [gx, w, aux]: [cpu::Input<'_>; 3]) -> Result<(Vec<F>, Shape)> {
        let d = self.dims(gx.shape(), w.shape(), aux.shape())?;
        let shape = Shape::from(self.output_len(d.b, d.t, d.dirs));
        let what = "recurrent kernel";
        let (out, reserve) =
            self.forward_all::<F>(&d, gx.slice(what)?, w.slice(what)?, aux.slice(what)?);
        *self.reserve.lock().map_err(|_| {
            candle_core::Error::Msg("recurrent kernel: reserve lock poisoned".into())
        })? = d.keep.then(|| F::to_cpu_storage_owned(reserve));
        Ok((out, shape))
    }

    fn bwd(
        &self,
        [gx, w, aux]: [&Tensor; 3],
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 3]> {
        let (a, b, c) = self.bwd_typed::<F>(gx, w, aux, grad)?;
        Ok([Some(a), Some(b), Some(c)])
    }
}
