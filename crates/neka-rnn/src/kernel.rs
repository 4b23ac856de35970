//! The fused CPU kernel: a whole direction of one layer as ONE candle op, with BPTT written
//! out by hand.
//!
//! Built from candle ops, a sequence of `T` steps is ~10·T graph nodes, and the backward pass
//! of every `narrow` that picks `gx_t` out of the projected input allocates and adds a
//! full-size `(B, T, G)` gradient — quadratic in `T`. This op instead takes
//!
//! ```text
//! gx   (T, B, G)     the input projections x_t U^T + b_ih, time-major
//! w    (G, H[+1])    W = weight_hh, with bias_hh as an extra last column when there is one
//! init (B, S0)       the initial state [h_0 | C_0]
//! ```
//!
//! runs the recurrence with one GEMM per step (`rec = h_{t-1} W^T + b_hh`) and the cell's
//! pointwise equations, and returns a `(T + 1, B, saved·H)` tensor: rows `0..T` hold each
//! step's new state (first `S0` floats; zero past a sequence's length) followed by what the
//! backward pass needs (gate activations — cuDNN calls this the reserve space); row `T` holds
//! the final state. Gradients may flow into the state part of every row; the reserve part is
//! internal and its gradient is ignored.
//!
//! The backward pass runs the steps in reverse (BPTT): per step the cell's pointwise backward
//! and one GEMM `dh_{t-1} += drec_t W`; after the loop `dW = Σ_t drec_t^T h_{t-1}` is one GEMM
//! over all `T·B` rows.
//!
//! Lengths follow PyTorch's packed sequences: row `b` is active at step `t` iff
//! `t < len_b`; an inactive row keeps its state and outputs zeros. Forward runs
//! `t = 0, 1, …`; reverse runs `t = T−1, …, 0`, so it starts at each row's true last token.

use crate::cell::{Cell, Real};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Storage, Tensor, WithDType};
use std::sync::Arc;

/// Floats the kernel can run on.
pub trait KernelFloat: WithDType + Real {}
impl KernelFloat for f32 {}
impl KernelFloat for f64 {}

/// One direction of one layer of a recurrent network, as a candle custom op.
#[derive(Debug, Clone)]
pub struct RecurrentOp<C: Cell> {
    pub cell: C,
    pub hidden: usize,
    /// Run `t = T−1 … 0`.
    pub reverse: bool,
    /// `w` has bias_hh as its last column.
    pub has_bias: bool,
    /// Per-row sequence lengths (`1..=T`); `None` = all `T`.
    pub lengths: Option<Arc<Vec<usize>>>,
}

struct Dims {
    t: usize,
    b: usize,
    g: usize,
    h: usize,
    s0: usize,
    sv: usize,
    wcols: usize,
}

impl<C: Cell> RecurrentOp<C> {
    fn dims(&self, gx: &Shape, w: &Shape, init: &Shape) -> Result<Dims> {
        let (t, b, g) = gx.dims3()?;
        let h = self.hidden;
        let gates = self.cell.gates();
        let wcols = h + usize::from(self.has_bias);
        let s0 = self.cell.states() * h;
        if g != gates * h || w.dims() != [g, wcols] || init.dims() != [b, s0] {
            candle_core::bail!(
                "{}: shape mismatch: gx {gx:?} (want (T, B, {})), w {w:?} (want ({g}, {wcols})), init {init:?} (want ({b}, {s0}))",
                self.cell.name(),
                gates * h
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
            t,
            b,
            g,
            h,
            s0,
            sv: self.cell.saved() * h,
            wcols,
        })
    }

    fn len(&self, b: usize, t: usize) -> usize {
        self.lengths.as_ref().map_or(t, |l| l[b])
    }

    /// Time steps in processing order.
    fn order(&self, t: usize) -> Vec<usize> {
        if self.reverse {
            (0..t).rev().collect()
        } else {
            (0..t).collect()
        }
    }

    fn forward<F: KernelFloat>(&self, d: &Dims, gx: &[F], w: &[F], init: &[F]) -> Vec<F> {
        let Dims {
            t: steps,
            b,
            g,
            h,
            s0,
            sv,
            ..
        } = *d;
        let mut saved = vec![F::zero(); (steps + 1) * b * sv];
        let mut state = init.to_vec();
        let mut rec = vec![F::zero(); b * g];
        let (wt, bias) = self.split_weights(d, w);
        for t in self.order(steps) {
            // rec = h_{t-1} W^T (+ b_hh)
            self.recurrent_matmul(d, &state, &wt, bias.as_deref(), &mut rec);
            for r in 0..b {
                if t >= self.len(r, steps) {
                    continue;
                }
                let out = &mut saved[(t * b + r) * sv..(t * b + r + 1) * sv];
                self.cell.forward_row(
                    h,
                    &gx[(t * b + r) * g..(t * b + r + 1) * g],
                    &rec[r * g..(r + 1) * g],
                    &state[r * s0..(r + 1) * s0],
                    out,
                );
                state[r * s0..(r + 1) * s0].copy_from_slice(&out[..s0]);
            }
        }
        for r in 0..b {
            let last = (steps * b + r) * sv;
            saved[last..last + s0].copy_from_slice(&state[r * s0..(r + 1) * s0]);
        }
        saved
    }

    /// `W^T` as a contiguous `(H, G)` matrix, and `b_hh` if `w` carries it.
    fn split_weights<F: KernelFloat>(&self, d: &Dims, w: &[F]) -> (Vec<F>, Option<Vec<F>>) {
        let Dims { g, h, wcols, .. } = *d;
        let mut wt = vec![F::zero(); h * g];
        for j in 0..g {
            for k in 0..h {
                wt[k * g + j] = w[j * wcols + k];
            }
        }
        let bias = self
            .has_bias
            .then(|| (0..g).map(|j| w[j * wcols + h]).collect());
        (wt, bias)
    }

    /// `rec (B, G) = state_h (B, H) · W^T (+ b_hh)`, with `wt = W^T` contiguous `(H, G)`.
    fn recurrent_matmul<F: KernelFloat>(
        &self,
        d: &Dims,
        state: &[F],
        wt: &[F],
        bias: Option<&[F]>,
        rec: &mut [F],
    ) {
        let Dims { b, g, h, s0, .. } = *d;
        if let Some(bias) = bias {
            for row in rec.chunks_exact_mut(g) {
                row.copy_from_slice(bias);
            }
        }
        // SAFETY: lhs rows r < b of stride s0 ≥ h inside `state` (b·s0 floats); rhs = wt
        // (h × g, row stride g); dst = rec (b × g).
        unsafe {
            matmul(
                b,
                g,
                h,
                rec.as_mut_ptr(),
                g as isize,
                1,
                bias.is_some(),
                state.as_ptr(),
                s0 as isize,
                1,
                wt.as_ptr(),
                g as isize,
                1,
            )
        }
    }

    #[allow(clippy::type_complexity)]
    fn backward<F: KernelFloat>(
        &self,
        d: &Dims,
        w: &[F],
        init: &[F],
        saved: &[F],
        grad: &[F],
    ) -> (Vec<F>, Vec<F>, Vec<F>) {
        let Dims {
            t: steps,
            b,
            g,
            h,
            s0,
            sv,
            wcols,
        } = *d;
        let mut dgx = vec![F::zero(); steps * b * g];
        let mut drec = vec![F::zero(); steps * b * g];
        let mut hprev = vec![F::zero(); steps * b * h];
        // ∂L/∂(final state) starts the recursion.
        let mut dstate: Vec<F> = (0..b)
            .flat_map(|r| {
                let at = (steps * b + r) * sv;
                grad[at..at + s0].iter().copied()
            })
            .collect();
        let mut ds = vec![F::zero(); s0];
        // W (G × H) contiguous, without the bias column
        let wm: Vec<F> = (0..g)
            .flat_map(|j| w[j * wcols..j * wcols + h].iter().copied())
            .collect();
        let mut order = self.order(steps);
        order.reverse();
        for t in order {
            for r in 0..b {
                let len = self.len(r, steps);
                if t >= len {
                    continue;
                }
                let at = (t * b + r) * sv;
                for k in 0..s0 {
                    ds[k] = dstate[r * s0 + k] + grad[at + k];
                }
                let first = if self.reverse { t + 1 == len } else { t == 0 };
                let prev = if first {
                    &init[r * s0..(r + 1) * s0]
                } else {
                    let tp = if self.reverse { t + 1 } else { t - 1 };
                    let pat = (tp * b + r) * sv;
                    &saved[pat..pat + s0]
                };
                hprev[(t * b + r) * h..(t * b + r + 1) * h].copy_from_slice(&prev[..h]);
                let gi = (t * b + r) * g;
                self.cell.backward_row(
                    h,
                    &saved[at..at + sv],
                    prev,
                    &ds,
                    &mut dgx[gi..gi + g],
                    &mut drec[gi..gi + g],
                    &mut dstate[r * s0..(r + 1) * s0],
                );
            }
            // dh_{t-1} += drec_t · W   (inactive rows have drec = 0 and keep their dstate)
            // SAFETY: lhs = drec_t (B × G, stride G), rhs = wm (G × H, row stride H),
            // dst = dstate's h-part (B × H, stride s0 ≥ H).
            unsafe {
                matmul(
                    b,
                    h,
                    g,
                    dstate.as_mut_ptr(),
                    s0 as isize,
                    1,
                    true,
                    drec[t * b * g..].as_ptr(),
                    g as isize,
                    1,
                    wm.as_ptr(),
                    h as isize,
                    1,
                )
            }
        }
        // dW (G × H) = Σ_t drec_t^T h_{t-1}: one GEMM over all T·B rows; db_hh = Σ drec.
        let mut dw = vec![F::zero(); g * wcols];
        let rows = steps * b;
        // SAFETY: lhs = drec^T read as drec[k·G + m] (m < G, k < T·B), rhs = hprev (T·B × H),
        // dst = dw (G × H, row stride wcols).
        unsafe {
            matmul(
                g,
                h,
                rows,
                dw.as_mut_ptr(),
                wcols as isize,
                1,
                false,
                drec.as_ptr(),
                1,
                g as isize,
                hprev.as_ptr(),
                h as isize,
                1,
            )
        }
        if self.has_bias {
            for k in 0..rows {
                for j in 0..g {
                    dw[j * wcols + h] += drec[k * g + j];
                }
            }
        }
        (dgx, dw, dstate)
    }
}

/// `dst (m × n) [+]= lhs (m × k) · rhs (k × n)`, all row-major with the given (row, column)
/// strides, through the `gemm` crate candle itself uses on CPU.
///
/// # Safety
/// Every `(row, col)` index in range must address memory inside the pointed-to buffers.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<F: KernelFloat>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut F,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    lhs: *const F,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const F,
    rhs_rs: isize,
    rhs_cs: isize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let threads = candle_core::utils::get_num_threads();
    // Per-step products (B × G × H) are too small to split profitably across threads.
    let parallelism = if threads > 1 && m * n * k >= 1 << 24 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs,
        dst_rs,
        accumulate,
        lhs,
        lhs_cs,
        lhs_rs,
        rhs,
        rhs_cs,
        rhs_rs,
        F::one(),
        F::one(),
        false,
        false,
        false,
        parallelism,
    )
}

fn contiguous<'a, F: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [F]> {
    let v = s.as_slice::<F>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("recurrent kernel: inputs must be contiguous"),
    }
}

fn cpu_slice<F: WithDType, R>(t: &Tensor, f: impl FnOnce(&[F]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(contiguous::<F>(s, layout)?),
        _ => candle_core::bail!("recurrent kernel: CPU tensors only"),
    }
}

impl<C: Cell> RecurrentOp<C> {
    fn bwd_typed<F: KernelFloat>(
        &self,
        gx: &Tensor,
        w: &Tensor,
        init: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let d = self.dims(gx.shape(), w.shape(), init.shape())?;
        let (dgx, dw, dinit) = cpu_slice::<F, _>(w, |w| {
            cpu_slice::<F, _>(init, |init| {
                cpu_slice::<F, _>(res, |res| {
                    cpu_slice::<F, _>(grad, |grad| Ok(self.backward(&d, w, init, res, grad)))
                })
            })
        })?;
        let cpu = Device::Cpu;
        Ok((
            Tensor::from_vec(dgx, (d.t, d.b, d.g), &cpu)?,
            Tensor::from_vec(dw, (d.g, d.wcols), &cpu)?,
            Tensor::from_vec(dinit, (d.b, d.s0), &cpu)?,
        ))
    }
}

impl<C: Cell> candle_core::CustomOp3 for RecurrentOp<C> {
    fn name(&self) -> &'static str {
        "neka-recurrent"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.dims(l1.shape(), l2.shape(), l3.shape())?;
        let shape = Shape::from((d.t + 1, d.b, d.sv));
        match s1.dtype() {
            DType::F32 => {
                let out = self.forward::<f32>(
                    &d,
                    contiguous(s1, l1)?,
                    contiguous(s2, l2)?,
                    contiguous(s3, l3)?,
                );
                Ok((CpuStorage::F32(out), shape))
            }
            DType::F64 => {
                let out = self.forward::<f64>(
                    &d,
                    contiguous(s1, l1)?,
                    contiguous(s2, l2)?,
                    contiguous(s3, l3)?,
                );
                Ok((CpuStorage::F64(out), shape))
            }
            dt => candle_core::bail!("recurrent kernel: f32 or f64 only, got {dt:?}"),
        }
    }

    fn bwd(
        &self,
        gx: &Tensor,
        w: &Tensor,
        init: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (a, b, c) = match gx.dtype() {
            DType::F32 => self.bwd_typed::<f32>(gx, w, init, res, grad)?,
            DType::F64 => self.bwd_typed::<f64>(gx, w, init, res, grad)?,
            dt => candle_core::bail!("recurrent kernel: f32 or f64 only, got {dt:?}"),
        };
        Ok((Some(a), Some(b), Some(c)))
    }
}
