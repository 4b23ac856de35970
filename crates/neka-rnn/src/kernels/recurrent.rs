//! The fused CPU kernel of the recurrent layers ([`crate::recurrent::Recurrent`]): the time loop of one layer (one or both directions) as ONE candle op,
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
//! The forward pass is in `recurrent/forward.rs`. The backward pass runs the steps in reverse
//! (BPTT): per step the cell's pointwise backward and one GEMM `dh_{t-1} += drec_t W`; after
//! the loop `dW = Σ_t drec_t^T h_{t-1}` is one GEMM over all `T·B` rows.
//!
//! Lengths follow PyTorch's packed sequences: row `b` is active at step `t` iff
//! `t < len_b`; an inactive row keeps its state and outputs zeros. Forward runs
//! `t = 0, 1, …`; reverse runs `t = T−1, …, 0`, so it starts at each row's true last token.

use crate::cell::{BackwardRow, Cell};
use candle_core::{CpuStorage, Device, Result, Shape, Tensor};
use neka_common::kernels::{self as cpu, KernelFloat, Mat};
use std::sync::{Arc, Mutex};

mod forward;

/// One layer of a recurrent network (one or both directions), as a candle custom op.
#[derive(Debug, Clone)]
pub struct RecurrentOp<C: Cell> {
    /// The cell whose pointwise step ([`Cell::forward_row`] / [`Cell::backward_row`]) runs per row.
    pub cell: C,
    /// `H`, hidden units per direction.
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
    /// Direction `k`'s BPTT: writes `∂L/∂gx` of its rows through `dgx` and returns
    /// (`∂L/∂W` `(G, H)`, `∂L/∂init` `(B, S0)`, `∂L/∂b_hh` `(G)` or empty).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn backward<F: KernelFloat>(
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

/// What both passes of direction `k` read: the op, the sizes, `k`, the direction's weights
/// `W` and its `aux` (initial states, recurrent bias).
struct Direction<'a, C: Cell, F> {
    op: &'a RecurrentOp<C>,
    d: &'a Dims,
    k: usize,
    w: &'a [F],
    aux: &'a [F],
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

impl<C: Cell> RecurrentOp<C> {
    fn bwd_typed<F: KernelFloat>(
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
