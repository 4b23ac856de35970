//! The fused CPU kernel: a whole direction of one layer as ONE candle op, with BPTT written
//! out by hand.
//!
//! Built from candle ops, a sequence of `T` steps is ~10·T graph nodes, and the backward pass
//! of every `narrow` that picks `gx_t` out of the projected input allocates and adds a
//! full-size `(B, T, G)` gradient — quadratic in `T`. This op instead takes
//!
//! ```text
//! gx   (D, T, B, G)     the input projections x_t U^T (without b_ih), time-major, per direction
//! w    (D, G, H[+2])    W = weight_hh, with bias_hh and bias_ih as two extra columns when
//!                       there are biases (the kernel adds b_ih to gx and sums its gradient:
//!                       cheaper than candle's broadcast-add backward, a strided reduction)
//! init (D, B, S0)       the initial state [h_0 | C_0]
//! ```
//!
//! for `D = 1` direction (forward, or reversed with [`RecurrentOp::reverse`]) or `D = 2` (a
//! bidirectional layer: direction 0 forward, 1 reversed; the two are independent, so forward
//! *and* backward passes run them on two threads). Per direction it runs the recurrence with
//! one GEMM per step (`rec = h_{t-1} W^T + b_hh`) and the cell's pointwise equations, and
//! returns a compact `(D, T + S, B, H)` tensor: rows `0..T` hold each step's `h_t` (zero past
//! a sequence's length), rows `T..T+S` the final state (`h_n`, and `C_n` for the LSTM).
//! Gradients flow into all of it. What the backward pass needs besides (every step's state
//! and gate activations — cuDNN calls this the reserve space) stays inside the op, so the
//! graph never carries, slices or pads it.
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
use std::sync::{Arc, Mutex};

/// Floats the kernel can run on.
pub trait KernelFloat: WithDType + Real + Send + Sync {}
impl KernelFloat for f32 {}
impl KernelFloat for f64 {}

/// One layer of a recurrent network (one or both directions), as a candle custom op.
#[derive(Debug, Clone)]
pub struct RecurrentOp<C: Cell> {
    pub cell: C,
    pub hidden: usize,
    /// With one direction (`D = 1`): run `t = T−1 … 0`. Ignored for `D = 2`.
    pub reverse: bool,
    /// `w` has bias_hh and bias_ih as its last two columns.
    pub has_bias: bool,
    /// Per-row sequence lengths (`1..=T`); `None` = all `T`.
    pub lengths: Option<Arc<Vec<usize>>>,
    /// The reserve space of the last forward pass, `(D, T + 1, B, saved·H)`, for `bwd`.
    pub reserve: Arc<Mutex<Option<CpuStorage>>>,
}

impl<C: Cell> RecurrentOp<C> {
    /// The op for one layer; `reverse` applies to a single direction.
    pub fn new(
        cell: C,
        hidden: usize,
        reverse: bool,
        has_bias: bool,
        lengths: Option<Arc<Vec<usize>>>,
    ) -> Self {
        Self {
            cell,
            hidden,
            reverse,
            has_bias,
            lengths,
            reserve: Arc::new(Mutex::new(None)),
        }
    }
}

struct Dims {
    /// Directions (1 or 2).
    dirs: usize,
    /// The GEMMs may use candle's thread pool (false while directions run on their own threads).
    par: bool,
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
        let (dirs, t, b, g) = gx.dims4()?;
        let h = self.hidden;
        let gates = self.cell.gates();
        let wcols = h + 2 * usize::from(self.has_bias);
        let s0 = self.cell.states() * h;
        if !(1..=2).contains(&dirs)
            || g != gates * h
            || w.dims() != [dirs, g, wcols]
            || init.dims() != [dirs, b, s0]
        {
            candle_core::bail!(
                "{}: shape mismatch: gx {gx:?} (want (D ≤ 2, T, B, {})), w {w:?} (want (D, {g}, {wcols})), init {init:?} (want (D, {b}, {s0}))",
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
            dirs,
            par: dirs == 1,
            t,
            b,
            g,
            h,
            s0,
            sv: self.cell.saved() * h,
            wcols,
        })
    }

    /// This op for direction `k` of `d.dirs`.
    fn direction(&self, d: &Dims, k: usize) -> Self {
        Self {
            reverse: if d.dirs == 2 { k == 1 } else { self.reverse },
            ..self.clone()
        }
    }

    /// Runs `f(0)`, …, `f(dirs − 1)`; two directions run on two threads when candle may use
    /// more than one.
    fn per_direction<T: Send>(dirs: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        if dirs == 2 && candle_core::utils::get_num_threads() > 1 {
            std::thread::scope(|s| {
                let rev = s.spawn(|| f(1));
                let fwd = f(0);
                vec![
                    fwd,
                    rev.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
                ]
            })
        } else {
            (0..dirs).map(f).collect()
        }
    }

    /// Forward pass of all directions: the compact output `(D, T + S, B, H)` and the reserve
    /// `(D, T + 1, B, sv)`.
    fn forward_all<F: KernelFloat>(
        &self,
        d: &Dims,
        gx: &[F],
        w: &[F],
        init: &[F],
    ) -> (Vec<F>, Vec<F>) {
        let (ng, nw, ni) = (d.t * d.b * d.g, d.g * d.wcols, d.b * d.s0);
        let saved = Self::per_direction(d.dirs, |k| {
            self.direction(d, k).forward(
                d,
                &gx[k * ng..(k + 1) * ng],
                &w[k * nw..(k + 1) * nw],
                &init[k * ni..(k + 1) * ni],
            )
        })
        .concat();
        let states = self.cell.states();
        let (b, h, sv, s0) = (d.b, d.h, d.sv, d.s0);
        let mut out = Vec::with_capacity(d.dirs * (d.t + states) * b * h);
        for k in 0..d.dirs {
            let sk = &saved[k * (d.t + 1) * b * sv..(k + 1) * (d.t + 1) * b * sv];
            for row in sk[..d.t * b * sv].chunks_exact(sv) {
                out.extend_from_slice(&row[..h]);
            }
            for s in 0..states {
                for r in 0..b {
                    let at = (d.t * b + r) * sv + s * h;
                    out.extend_from_slice(&sk[at..at + h]);
                }
            }
            debug_assert!(states * h == s0);
        }
        (out, saved)
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
        let b_ih: Option<Vec<F>> = self
            .has_bias
            .then(|| (0..g).map(|j| w[j * d.wcols + h + 1]).collect());
        let mut gxb = vec![F::zero(); g];
        let (wt, bias) = self.split_weights(d, w);
        for t in self.order(steps) {
            // rec = h_{t-1} W^T (+ b_hh)
            self.recurrent_matmul(d, &state, &wt, bias.as_deref(), &mut rec);
            for r in 0..b {
                if t >= self.len(r, steps) {
                    continue;
                }
                let out = &mut saved[(t * b + r) * sv..(t * b + r + 1) * sv];
                let gx_row = &gx[(t * b + r) * g..(t * b + r + 1) * g];
                let gx_row = match &b_ih {
                    Some(bias) => {
                        for ((o, x), bi) in gxb.iter_mut().zip(gx_row).zip(bias) {
                            *o = *x + *bi;
                        }
                        &gxb[..]
                    }
                    None => gx_row,
                };
                self.cell.forward_row(
                    h,
                    gx_row,
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
                d.par,
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
            ..
        } = *d;
        let mut dgx = vec![F::zero(); steps * b * g];
        let mut drec = vec![F::zero(); steps * b * g];
        let mut hprev = vec![F::zero(); steps * b * h];
        // ∂L/∂(final state) starts the recursion: compact grad rows T.. hold ∂L/∂h_n, ∂L/∂C_n.
        let states = s0 / h;
        let mut dstate = vec![F::zero(); b * s0];
        for s in 0..states {
            for r in 0..b {
                let at = ((steps + s) * b + r) * h;
                dstate[r * s0 + s * h..r * s0 + (s + 1) * h].copy_from_slice(&grad[at..at + h]);
            }
        }
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
                // ∂L/∂h_t from the output, plus what flows back from step t+1.
                let go = &grad[(t * b + r) * h..(t * b + r + 1) * h];
                for k in 0..h {
                    ds[k] = dstate[r * s0 + k] + go[k];
                }
                ds[h..s0].copy_from_slice(&dstate[r * s0 + h..(r + 1) * s0]);
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
                    d.par,
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
                d.par,
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
            // db_hh = Σ drec, db_ih = Σ dgx (rows of inactive steps are zero).
            let (mut dbh, mut dbi) = (vec![F::zero(); g], vec![F::zero(); g]);
            for k in 0..rows {
                for j in 0..g {
                    dbh[j] += drec[k * g + j];
                    dbi[j] += dgx[k * g + j];
                }
            }
            for j in 0..g {
                dw[j * wcols + h] = dbh[j];
                dw[j * wcols + h + 1] = dbi[j];
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
    par: bool,
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
    let parallelism = if par && threads > 1 && m * n * k >= 1 << 24 {
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
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let d = self.dims(gx.shape(), w.shape(), init.shape())?;
        let (nw, ni, nr) = (d.g * d.wcols, d.b * d.s0, (d.t + 1) * d.b * d.sv);
        let ng = (d.t + self.cell.states()) * d.b * d.h;
        let reserve = self.reserve.lock().map_err(|_| {
            candle_core::Error::Msg("recurrent kernel: reserve lock poisoned".into())
        })?;
        let Some(reserve) = reserve.as_ref() else {
            candle_core::bail!("recurrent kernel: backward before forward")
        };
        let res = reserve.as_slice::<F>()?;
        if res.len() != d.dirs * nr {
            candle_core::bail!("recurrent kernel: reserve does not match the inputs")
        }
        let parts = cpu_slice::<F, _>(w, |w| {
            cpu_slice::<F, _>(init, |init| {
                cpu_slice::<F, _>(grad, |grad| {
                    Ok(Self::per_direction(d.dirs, |k| {
                        self.direction(&d, k).backward(
                            &d,
                            &w[k * nw..(k + 1) * nw],
                            &init[k * ni..(k + 1) * ni],
                            &res[k * nr..(k + 1) * nr],
                            &grad[k * ng..(k + 1) * ng],
                        )
                    }))
                })
            })
        })?;
        let (mut dgx, mut dw, mut dinit) = (Vec::new(), Vec::new(), Vec::new());
        for (a, b, c) in parts {
            dgx.extend(a);
            dw.extend(b);
            dinit.extend(c);
        }
        let cpu = Device::Cpu;
        Ok((
            Tensor::from_vec(dgx, (d.dirs, d.t, d.b, d.g), &cpu)?,
            Tensor::from_vec(dw, (d.dirs, d.g, d.wcols), &cpu)?,
            Tensor::from_vec(dinit, (d.dirs, d.b, d.s0), &cpu)?,
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
        let shape = Shape::from((d.dirs, d.t + self.cell.states(), d.b, d.h));
        let (out, reserve) = match s1.dtype() {
            DType::F32 => {
                let (out, res) = self.forward_all::<f32>(
                    &d,
                    contiguous(s1, l1)?,
                    contiguous(s2, l2)?,
                    contiguous(s3, l3)?,
                );
                (CpuStorage::F32(out), CpuStorage::F32(res))
            }
            DType::F64 => {
                let (out, res) = self.forward_all::<f64>(
                    &d,
                    contiguous(s1, l1)?,
                    contiguous(s2, l2)?,
                    contiguous(s3, l3)?,
                );
                (CpuStorage::F64(out), CpuStorage::F64(res))
            }
            dt => candle_core::bail!("recurrent kernel: f32 or f64 only, got {dt:?}"),
        };
        *self.reserve.lock().map_err(|_| {
            candle_core::Error::Msg("recurrent kernel: reserve lock poisoned".into())
        })? = Some(reserve);
        Ok((out, shape))
    }

    fn bwd(
        &self,
        gx: &Tensor,
        w: &Tensor,
        init: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (a, b, c) = match gx.dtype() {
            DType::F32 => self.bwd_typed::<f32>(gx, w, init, grad)?,
            DType::F64 => self.bwd_typed::<f64>(gx, w, init, grad)?,
            dt => candle_core::bail!("recurrent kernel: f32 or f64 only, got {dt:?}"),
        };
        Ok((Some(a), Some(b), Some(c)))
    }
}
