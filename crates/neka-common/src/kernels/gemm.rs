//! Matrix products for the kernels: strided views, one GEMM call through the `gemm` crate
//! candle itself uses, its split over candle's CPU pool, and dot products for a few rows.

use super::{parallel, threads, vectorized, KernelFloat, Vectorized};

/// A strided matrix view for [`matmul`]: entry `(i, j)` lies at `ptr + i·rs + j·cs`.
///
/// `Mat::row_major(p, ld)` is a row-major matrix with row stride `ld` (`(ld, 1)`);
/// `Mat::col_major(p, ld)` is column-major (`(1, ld)`), which is how a row-major `Aᵀ` is read.
#[derive(Debug, Clone, Copy)]
pub struct Mat<P> {
    /// The entry `(0, 0)`: a `*const` or `*mut` to the element type.
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
/// How [`matmul_slices`] reads a contiguous row-major operand: as stored (`N`) or transposed (`T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The matrix as stored.
    N,
    /// Its transpose (read column-major, never copied).
    T,
}

/// `dst (m × n) = [dst +] op(a) · op(b)` for contiguous row-major slices: the safe form of
/// [`matmul`] for whole buffers. `op(a)` is `m × k` (`a` holds `m × k`, or `k × m` with
/// [`Op::T`]); `op(b)` is `k × n` (`b` holds `k × n`, or `n × k` with [`Op::T`]).
///
/// # Panics
/// When a slice is shorter than its shape says (a bug in the caller, never input data).
pub fn matmul_slices<F: KernelFloat>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [F],
    accumulate: bool,
    (a, op_a): (&[F], Op),
    (b, op_b): (&[F], Op),
) {
    assert!(
        dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n,
        "matmul_slices: short slice"
    );
    let view = |p, op, rows, cols| match op {
        Op::N => Mat::row_major(p, cols),
        Op::T => Mat::col_major(p, rows),
    };
    // SAFETY: the lengths are checked above; `dst` is a `&mut`, so it overlaps neither input.
    unsafe {
        matmul(
            (m, n, k),
            Mat::row_major(dst.as_mut_ptr(), n),
            accumulate,
            view(a.as_ptr(), op_a, m, k),
            view(b.as_ptr(), op_b, k, n),
        )
    }
}

/// [`matmul`] with the rows of `dst` (when `m ≥ n`) or its columns split over candle's CPU pool
/// when the product is large enough to pay for it (`m·n·k ≥ 2²²`); else on the calling thread.
/// Never call it from inside [`parallel()`] (the pool does not nest).
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

/// Up to this many rows, [`matmul_nt_rows`] replaces the GEMM of a dense layer or a recurrent
/// step: with so few rows the GEMM spends its time packing the weight, on every call.
pub const FEW_ROWS: usize = 8;

/// `dst (m × n) [+]= lhs (m × k) · rhsᵀ` for `rhs (n × k)` row-major (a weight in its stored
/// `(out, in)` layout): each output one dot product of a weight row with an input row, the
/// weight read once and never repacked. For few rows (`m ≤` [`FEW_ROWS`]: decoding steps,
/// single sentences), where a GEMM would repack the whole weight for a handful of rows.
/// `lhs` rows are `lhs_rs` apart, `dst` rows `n`. With `par` the output columns are split over
/// candle's pool (never pass `par` from inside [`parallel()`]).
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
