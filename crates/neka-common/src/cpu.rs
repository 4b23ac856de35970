//! Building blocks of neka's CPU kernels: the float trait, one GEMM call, a vectorising sum,
//! and parallel work on candle's own CPU thread pool.
//!
//! Every op with a CPU kernel here (dense layer, losses, AdamW, recurrent layers, convolution,
//! pooling) keeps its plain candle-op twin, and picks between them in one path function that
//! starts from [`kernel_applies`]: a CUDA or Metal tensor never reaches a CPU kernel.

use candle_core::backend::BackendStorage;
use candle_core::{DType, DeviceLocation, WithDType};
use std::sync::Mutex;

/// Floats the kernels run on (f32, and f64 for finite-difference checks).
pub trait KernelFloat:
    WithDType + num_traits::Float + std::ops::AddAssign + Send + Sync + 'static
{
    /// e^x: [`exp_f32`] for f32 (branch-free, so loops of it vectorise), the standard
    /// library's for f64 (the finite-difference checks).
    fn exp_fast(self) -> Self;
}
impl KernelFloat for f32 {
    #[inline(always)]
    fn exp_fast(self) -> f32 {
        exp_f32(self)
    }
}
impl KernelFloat for f64 {
    #[inline(always)]
    fn exp_fast(self) -> f64 {
        self.exp()
    }
}

/// Whether neka's CPU kernels may run on a tensor at `location` with `dtype`: the CPU, f32 or
/// f64. Anything else (CUDA, Metal, half precision) takes the candle-op twin, which is what
/// candle's CUDA and Metal backends (cuBLAS, cuDNN, MPS) are for.
///
/// ```
/// use candle_core::{DType, DeviceLocation};
/// use neka_common::cpu::kernel_applies;
/// assert!(kernel_applies(DeviceLocation::Cpu, DType::F32));
/// assert!(!kernel_applies(DeviceLocation::Cuda { gpu_id: 0 }, DType::F32));
/// assert!(!kernel_applies(DeviceLocation::Metal { gpu_id: 0 }, DType::F32));
/// assert!(!kernel_applies(DeviceLocation::Cpu, DType::BF16));
/// ```
pub fn kernel_applies(location: DeviceLocation, dtype: DType) -> bool {
    matches!(location, DeviceLocation::Cpu) && matches!(dtype, DType::F32 | DType::F64)
}

/// `Σ xs` with 16 independent partial sums, so it vectorises (a plain fold is one serial chain
/// of dependent additions).
pub fn sum<F: KernelFloat>(xs: &[F]) -> F {
    let mut acc = [F::zero(); 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let tail = rest.iter().fold(F::zero(), |a, &v| a + v);
    acc.iter().fold(tail, |a, &v| a + v)
}

/// A strided matrix view for [`matmul`]: entry `(i, j)` lies at `ptr + i·rs + j·cs`.
///
/// `Mat::row_major(p, ld)` is a row-major matrix with row stride `ld` (`(ld, 1)`);
/// `Mat::col_major(p, ld)` is column-major (`(1, ld)`), which is how a row-major `Aᵀ` is read.
#[derive(Debug, Clone, Copy)]
pub struct Mat<P> {
    pub ptr: P,
    /// Row stride, in elements.
    pub rs: usize,
    /// Column stride, in elements.
    pub cs: usize,
}

impl<P> Mat<P> {
    /// The matrix at `ptr` with (row, column) strides `(rs, cs)`.
    pub fn new(ptr: P, (rs, cs): (usize, usize)) -> Self {
        Self { ptr, rs, cs }
    }
    /// Row-major with row stride `ld`: strides `(ld, 1)`.
    pub fn row_major(ptr: P, ld: usize) -> Self {
        Self::new(ptr, (ld, 1))
    }
    /// Column-major with column stride `ld`: strides `(1, ld)` (a row-major matrix's transpose).
    pub fn col_major(ptr: P, ld: usize) -> Self {
        Self::new(ptr, (1, ld))
    }
}

impl<T> Mat<*const T> {
    /// The view starting `rows` rows and `cols` columns further in.
    ///
    /// # Safety
    /// The offset must stay inside the pointed-to buffer.
    unsafe fn offset(self, rows: usize, cols: usize) -> Self {
        Self {
            ptr: self.ptr.add(rows * self.rs + cols * self.cs),
            ..self
        }
    }
}

impl<T> Mat<*mut T> {
    /// As for `Mat<*const T>::offset`.
    unsafe fn offset(self, rows: usize, cols: usize) -> Self {
        Self {
            ptr: self.ptr.add(rows * self.rs + cols * self.cs),
            ..self
        }
    }
}

/// `dst (m × n) = [dst +] lhs (m × k) · rhs (k × n)` on strided views, through the `gemm`
/// crate, on the calling thread (the kernels parallelise over images instead).
///
/// # Safety
/// Every index in range must address memory inside the pointed-to buffers, and `dst` must not
/// overlap `lhs` or `rhs`.
pub unsafe fn matmul<F: KernelFloat>(
    (m, n, k): (usize, usize, usize),
    dst: Mat<*mut F>,
    accumulate: bool,
    lhs: Mat<*const F>,
    rhs: Mat<*const F>,
) {
    if m == 0 || n == 0 {
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst.ptr,
        dst.cs as isize,
        dst.rs as isize,
        accumulate,
        lhs.ptr,
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.ptr,
        rhs.cs as isize,
        rhs.rs as isize,
        F::one(),
        F::one(),
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Threads of candle's CPU pool (its "barrier pool": the workers plus the calling thread).
pub fn threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// Runs `f` on every item on candle's CPU thread pool, the one its element-wise ops use, and
/// returns the results in item order. One pool for candle's ops and neka's kernels: with a
/// second pool (rayon's) the idle workers of each spin on the cores the other is using, which
/// costs LeNet-5's training about 15 % on 2 cores (neka-cnn's kernels).
pub fn parallel<T: Send, R: Send>(
    items: impl Iterator<Item = T>,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let items: Vec<Mutex<Option<T>>> = items.map(|t| Mutex::new(Some(t))).collect();
    let out: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let run = |i: usize| {
        let item = items[i].lock().unwrap().take().unwrap();
        *out[i].lock().unwrap() = Some(f(item));
    };
    if items.len() <= 1 {
        (0..items.len()).for_each(run);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(items.len(), |r| r.for_each(run));
    }
    out.into_iter()
        .map(|m| m.into_inner().unwrap().unwrap())
        .collect()
}

/// The elements a contiguous layout covers in its storage; an error naming `what` for a
/// strided one (the kernels read storage directly: their inputs are made contiguous first).
pub fn contiguous_range(
    l: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<std::ops::Range<usize>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(a..b),
        None => candle_core::bail!("{what}: inputs must be contiguous"),
    }
}

/// The data of a contiguous CPU storage as `&[F]` ([`contiguous_range`]); an error naming
/// `what` for another dtype or a strided layout.
pub fn contiguous_slice<'a, F: WithDType>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [F]> {
    Ok(&s.as_slice::<F>()?[contiguous_range(l, what)?])
}

/// Runs `f` on a CPU tensor's data (made contiguous first); an error for other devices.
pub fn with_slice<F: WithDType, R>(
    t: &candle_core::Tensor,
    what: &str,
    f: impl FnOnce(&[F]) -> R,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(s), Some((a, b))) => Ok(f(&s.as_slice::<F>()?[a..b])),
        _ => candle_core::bail!("{what}: contiguous CPU tensors only"),
    }
}

/// One input of a [`CpuOp3`]: a CPU storage and the layout of the tensor in it.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    pub storage: &'a candle_core::CpuStorage,
    pub layout: &'a candle_core::Layout,
}

impl<'a> Input<'a> {
    /// The tensor's shape.
    pub fn shape(&self) -> &'a candle_core::Shape {
        self.layout.shape()
    }

    /// The tensor's data as `&[T]` ([`contiguous_slice`]); an error naming `what` and both
    /// dtypes when the storage holds another type, or when the layout is strided.
    pub fn slice<T: WithDType>(&self, what: &str) -> candle_core::Result<&'a [T]> {
        if self.storage.dtype() != T::DTYPE {
            candle_core::bail!(
                "{what}: expected {:?}, got {:?} (all float inputs of a kernel share one dtype)",
                T::DTYPE,
                self.storage.dtype()
            )
        }
        contiguous_slice(self.storage, self.layout, what)
    }
}

/// Gradients of a three-input op, `(∂L/∂a, ∂L/∂b, ∂L/∂c)`: `None` for an input that takes none
/// (integer targets, a mask).
pub type Grads3 = (
    Option<candle_core::Tensor>,
    Option<candle_core::Tensor>,
    Option<candle_core::Tensor>,
);

/// The CPU half of a fused op of three inputs (dense layer, convolution, batch norm, masked
/// cross-entropy, recurrent layer): what differs between neka's kernels. [`Fused3`] turns one
/// into candle's [`CustomOp3`](candle_core::CustomOp3), with the dtype dispatch written once:
/// the first input's dtype picks the f32 or the f64 implementation.
///
/// ```
/// use candle_core::{Device, Shape, Tensor};
/// use neka_common::cpu::{CpuOp3, Fused3, Grads3, Input, KernelFloat};
///
/// /// `a·b + c`, element-wise.
/// struct MulAdd;
/// impl<F: KernelFloat> CpuOp3<F> for MulAdd {
///     const NAME: &'static str = "mul-add";
///     fn cpu_fwd(&self, [a, b, c]: [Input<'_>; 3]) -> candle_core::Result<(Vec<F>, Shape)> {
///         let (a, b, c) = (a.slice::<F>("a")?, b.slice::<F>("b")?, c.slice::<F>("c")?);
///         let y = a.iter().zip(b).zip(c).map(|((&a, &b), &c)| a * b + c).collect();
///         Ok((y, Shape::from(a.len())))
///     }
///     fn bwd(&self, [a, b, _]: [&Tensor; 3], _y: &Tensor, dy: &Tensor) -> candle_core::Result<Grads3> {
///         Ok((Some((dy * b)?), Some((dy * a)?), Some(dy.clone())))
///     }
/// }
///
/// let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
/// let y = t(&[1., 2.]).apply_op3(&t(&[3., 4.]), &t(&[0.5, 0.5]), Fused3(MulAdd))?;
/// assert_eq!(y.to_vec1::<f32>()?, [3.5, 8.5]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub trait CpuOp3<F: KernelFloat>: Send + Sync {
    /// The op's name in candle's graph.
    const NAME: &'static str;

    /// The output (contiguous, of the inputs' float type `F`) and its shape; side results for
    /// the backward pass (argmaxes, batch statistics, the recurrent reserve) go into `self`.
    fn cpu_fwd(&self, inputs: [Input<'_>; 3]) -> candle_core::Result<(Vec<F>, candle_core::Shape)>;

    /// `(∂L/∂a, ∂L/∂b, ∂L/∂c)` from the inputs, the forward output and `∂L/∂output`, all of
    /// float type `F` (the first input's); [`Fused3`] drops the gradient of an input that
    /// tracks no gradient.
    fn bwd(
        &self,
        inputs: [&candle_core::Tensor; 3],
        output: &candle_core::Tensor,
        grad: &candle_core::Tensor,
    ) -> candle_core::Result<Grads3>;
}

/// A [`CpuOp3`] (for f32 and f64) as candle's [`CustomOp3`](candle_core::CustomOp3), for
/// [`Tensor::apply_op3`](candle_core::Tensor::apply_op3). CPU only: the ops that use one pick
/// the candle-op twin elsewhere ([`kernel_applies`]).
pub struct Fused3<K>(pub K);

impl<K: CpuOp3<f32> + CpuOp3<f64>> candle_core::CustomOp3 for Fused3<K> {
    fn name(&self) -> &'static str {
        <K as CpuOp3<f32>>::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let inputs =
            [(s1, l1), (s2, l2), (s3, l3)].map(|(storage, layout)| Input { storage, layout });
        Ok(match s1.dtype() {
            DType::F32 => {
                let (y, shape) = CpuOp3::<f32>::cpu_fwd(&self.0, inputs)?;
                (candle_core::CpuStorage::F32(y), shape)
            }
            DType::F64 => {
                let (y, shape) = CpuOp3::<f64>::cpu_fwd(&self.0, inputs)?;
                (candle_core::CpuStorage::F64(y), shape)
            }
            dt => candle_core::bail!(
                "{}: f32 or f64 inputs only, got {dt:?}",
                <K as CpuOp3<f32>>::NAME
            ),
        })
    }

    fn bwd(
        &self,
        a: &candle_core::Tensor,
        b: &candle_core::Tensor,
        c: &candle_core::Tensor,
        output: &candle_core::Tensor,
        grad: &candle_core::Tensor,
    ) -> candle_core::Result<Grads3> {
        let (da, db, dc) = match a.dtype() {
            DType::F32 => CpuOp3::<f32>::bwd(&self.0, [a, b, c], output, grad)?,
            DType::F64 => CpuOp3::<f64>::bwd(&self.0, [a, b, c], output, grad)?,
            dt => candle_core::bail!(
                "{}: f32 or f64 inputs only, got {dt:?}",
                <K as CpuOp3<f32>>::NAME
            ),
        };
        let tracked =
            |t: &candle_core::Tensor, g: Option<candle_core::Tensor>| g.filter(|_| t.track_op());
        Ok((tracked(a, da), tracked(b, db), tracked(c, dc)))
    }
}

/// A piece of work to run compiled for the widest vector instructions of the CPU it runs on
/// ([`vectorized`]). Mark `run` `#[inline(always)]`, and the loops it calls too: they are then
/// compiled once per instruction set, inside [`vectorized`]'s dispatch.
pub trait Vectorized {
    type Output;
    fn run(self) -> Self::Output;
}

/// Runs `job` compiled for the widest vector instructions this CPU has (AVX-512, else AVX2 +
/// FMA, detected at run time), so the element-wise loops inlined into it use 16 or 8 lanes
/// instead of baseline x86-64's 4. The results are the same bit for bit: Rust never contracts
/// `a·b + c` into an FMA, and the loops' arithmetic is unchanged; only the lane count differs.
pub fn vectorized<J: Vectorized>(job: J) -> J::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { with_avx512(job) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            return unsafe { with_avx2(job) };
        }
    }
    job.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn with_avx512<J: Vectorized>(job: J) -> J::Output {
    job.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<J: Vectorized>(job: J) -> J::Output {
    job.run()
}

/// [`matmul`] with the rows of `dst` (when `m ≥ n`) or its columns split over candle's CPU pool
/// when the product is large enough to pay for it (`m·n·k ≥ 2²²`); else on the calling thread.
/// Never call it from inside [`parallel`] (the pool does not nest).
///
/// # Safety
/// As for [`matmul`].
pub unsafe fn par_matmul<F: KernelFloat>(
    (m, n, k): (usize, usize, usize),
    dst: Mat<*mut F>,
    accumulate: bool,
    lhs: Mat<*const F>,
    rhs: Mat<*const F>,
) {
    let t = threads();
    if t < 2 || m * n * k < 1 << 22 {
        return matmul((m, n, k), dst, accumulate, lhs, rhs);
    }
    #[derive(Clone, Copy)]
    struct P<F>(Mat<*mut F>, Mat<*const F>, Mat<*const F>);
    // SAFETY: the blocks below write disjoint parts of dst and only read lhs/rhs.
    unsafe impl<F> Send for P<F> {}
    unsafe impl<F> Sync for P<F> {}
    impl<F> P<F> {
        /// The three views (a method, so closures capture the whole `Sync` struct).
        fn get(&self) -> (Mat<*mut F>, Mat<*const F>, Mat<*const F>) {
            (self.0, self.1, self.2)
        }
    }
    let p = P(dst, lhs, rhs);
    let split_rows = m >= n;
    let len = if split_rows { m } else { n };
    let per = len.div_ceil(t).max(1);
    parallel((0..len).step_by(per), |start| {
        let (d, l, r) = p.get();
        let cnt = per.min(len - start);
        // SAFETY: block `start..start + cnt` of dst's rows (or columns) and the matching rows
        // of lhs (or columns of rhs) lie inside the buffers the caller vouched for.
        unsafe {
            if split_rows {
                matmul(
                    (cnt, n, k),
                    d.offset(start, 0),
                    accumulate,
                    l.offset(start, 0),
                    r,
                )
            } else {
                matmul(
                    (m, cnt, k),
                    d.offset(0, start),
                    accumulate,
                    l,
                    r.offset(0, start),
                )
            }
        }
    });
}

/// e^x for f32 without branches (Cephes `expf`): `x = n ln2 + r`, a degree-6 polynomial for
/// `e^r`, times `2^n` built from the exponent bits. `x` is clamped to [−87.3, 88].
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // 1.5·2²³: adding it rounds |v| < 2²² to the nearest integer, whose bits are then the low
    // bits of the sum. Pure float adds and integer bit operations, so the loop vectorises (a
    // float → int `as` cast saturates and checks NaN, element by element). NaN stays NaN.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let big = x * std::f32::consts::LOG2_E + MAGIC;
    let n = big - MAGIC; // round(x / ln 2), in [−126, 127]
    let k = (big.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits((k.wrapping_add(127) << 23) as u32)
}

/// Up to this many rows, [`matmul_nt_rows`] replaces the GEMM of a dense layer or a recurrent
/// step: with so few rows the GEMM spends its time packing the weight, on every call.
pub const FEW_ROWS: usize = 8;

/// `dst (m × n) [+]= lhs (m × k) · rhsᵀ` for `rhs (n × k)` row-major (a weight in its stored
/// `(out, in)` layout): each output one dot product of a weight row with an input row, the
/// weight read once and never repacked. For few rows (`m ≤` [`FEW_ROWS`]: decoding steps,
/// single sentences), where a GEMM would repack the whole weight for a handful of rows.
/// `lhs` rows are `lhs_rs` apart, `dst` rows `n`. With `par` the output columns are split over
/// candle's pool (never pass `par` from inside [`parallel`]).
#[allow(clippy::too_many_arguments)]
pub fn matmul_nt_rows<F: KernelFloat>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [F],
    accumulate: bool,
    lhs: &[F],
    lhs_rs: usize,
    rhs: &[F],
    par: bool,
) {
    struct Job<'a, F> {
        cols: std::ops::Range<usize>,
        m: usize,
        k: usize,
        lhs: &'a [F],
        lhs_rs: usize,
        rhs: &'a [F],
    }
    impl<F: KernelFloat> Vectorized for Job<'_, F> {
        type Output = Vec<F>;
        /// `(cols, m)` dot products, column-major.
        #[inline(always)]
        fn run(self) -> Vec<F> {
            let mut out = Vec::with_capacity(self.cols.len() * self.m);
            for j in self.cols {
                let w = &self.rhs[j * self.k..(j + 1) * self.k];
                for r in 0..self.m {
                    let x = &self.lhs[r * self.lhs_rs..r * self.lhs_rs + self.k];
                    let mut acc = [F::zero(); 16];
                    let (wc, xc) = (w.chunks_exact(16), x.chunks_exact(16));
                    let tail = wc
                        .remainder()
                        .iter()
                        .zip(xc.remainder())
                        .fold(F::zero(), |a, (&p, &q)| a + p * q);
                    for (a16, b16) in wc.zip(xc) {
                        for ((s, &p), &q) in acc.iter_mut().zip(a16).zip(b16) {
                            *s += p * q;
                        }
                    }
                    out.push(acc.iter().fold(tail, |a, &v| a + v));
                }
            }
            out
        }
    }
    let job = |cols: std::ops::Range<usize>| {
        vectorized(Job {
            cols,
            m,
            k,
            lhs,
            lhs_rs,
            rhs,
        })
    };
    let t = threads();
    let (starts, per) = if par && t > 1 && m * n * k >= 1 << 16 {
        let per = n.div_ceil(t).max(1);
        ((0..n).step_by(per).collect::<Vec<_>>(), per)
    } else {
        (vec![0], n.max(1))
    };
    let blocks = if starts.len() > 1 {
        parallel(starts.into_iter(), |s| (s, job(s..(s + per).min(n))))
    } else {
        vec![(0, job(0..n))]
    };
    for (s, vals) in blocks {
        for (c, col) in vals.chunks(m.max(1)).enumerate() {
            for (r, &v) in col.iter().enumerate() {
                let d = &mut dst[r * n + s + c];
                *d = if accumulate { *d + v } else { v };
            }
        }
    }
}
