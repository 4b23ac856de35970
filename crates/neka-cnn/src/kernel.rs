//! neka's CPU kernels for the CNN layers: convolution (+ fused ReLU) and max pooling, each ONE
//! candle custom op with its backward pass written out.
//!
//! Built from candle ops, a convolution's im2col is `kh·kw` `narrow`s and a `stack` over the
//! whole batch, and its backward pass is the backward of each of those: full-size temporary
//! tensors and element-wise maps, with only a fifth of the time left for arithmetic. Here:
//!
//! ```text
//! forward, per image b (a block of images per thread, buffers reused within the block):
//!   cols  = im2col(x_b)                         (K = C·kh·kw, N = H'·W')
//!   y_b   = W · cols + bias                     (C_out, N)   one GEMM, bias as its initial value
//!   y_b   = max(0, y_b)                         only when ReLU is fused
//! backward, given dy:
//!   dz_b  = dy_b ⊙ [y_b > 0]                    (ReLU fused)  else dz_b = dy_b
//!   db   += Σ_n dz_b[:, n]
//!   dW   += dz_b · cols_bᵀ                      cols_b recomputed, never stored
//!   dx_b  = col2im(Wᵀ · dz_b)                   ONLY when x needs a gradient (never for the
//!                                               image that enters conv1)
//! ```
//!
//! The products go through the `gemm` crate candle itself uses for its CPU matmul. Images are
//! split into one block per thread of candle's CPU pool; per-block `dW`/`db` are summed
//! in block order, so results are deterministic for a given thread count.
//!
//! Max pooling keeps PyTorch's semantics (padding never wins; on ties the first maximum in the
//! window, row-major, gets the gradient), and its backward recomputes each window's argmax from
//! the input and scatters the gradient there: no mask tensors, any kernel / stride / padding
//! (candle's max-pool backward needs kernel == stride: huggingface/candle#1593).
//!
//! Both are CPU only and f32 / f64 only; [`crate::conv::Conv2d`] and [`crate::pool::Pool2d`]
//! choose between them and candle's ops in one place each, and the tests hold the two paths
//! equal.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Tensor};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// Which implementation the CNN layers use on CPU (other devices always take candle's ops).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuImpl {
    /// neka's kernels (this module): convolution with fused ReLU, max pooling. The default.
    #[default]
    Kernels,
    /// The convolution as an im2col graph of candle ops; candle's pooling.
    Im2col,
    /// candle's `conv2d`, `relu` and `max_pool2d`: the plain twin of the kernels.
    Candle,
}

impl std::str::FromStr for CpuImpl {
    type Err = crate::Error;
    /// `kernels` (or `kernel`), `im2col`, `candle`.
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "kernels" | "kernel" => Ok(Self::Kernels),
            "im2col" => Ok(Self::Im2col),
            "candle" => Ok(Self::Candle),
            other => Err(crate::Error::config(
                "CPU implementation",
                format!("`{other}`: expected kernels, im2col or candle"),
            )),
        }
    }
}

thread_local! {
    static CPU_IMPL: std::cell::Cell<CpuImpl> = const { std::cell::Cell::new(CpuImpl::Kernels) };
}

/// Selects the CPU implementation of the CNN layers for the calling thread (benchmarks,
/// comparisons, the twin tests): per thread, so tests running side by side do not switch
/// each other's layers. Set it on the thread that runs the model.
pub fn set_cpu_impl(i: CpuImpl) {
    CPU_IMPL.with(|c| c.set(i));
}

/// The CPU implementation in use on the calling thread ([`CpuImpl::Kernels`] unless
/// [`set_cpu_impl`] said otherwise).
pub fn cpu_impl() -> CpuImpl {
    CPU_IMPL.with(|c| c.get())
}

/// Runs `f` with the CPU implementation `i` on this thread, then restores the previous one
/// (also when `f` panics).
pub fn with_cpu_impl<T>(i: CpuImpl, f: impl FnOnce() -> T) -> T {
    struct Restore(CpuImpl);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_cpu_impl(self.0);
        }
    }
    let _restore = Restore(cpu_impl());
    set_cpu_impl(i);
    f()
}

pub use neka_common::cpu::KernelFloat;

/// Shape of one 2-D convolution (one group), per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels, height, width.
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height and width.
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    /// Zero padding `(p_h, p_w)` on each side.
    pub pad: (usize, usize),
    pub dilation: usize,
    /// Output height and width.
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeometry {
    /// The geometry for an input `(C, H, W)` and a kernel `(C_out, C, kh, kw)`; an error if the
    /// (padded) input is smaller than the dilated kernel.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        (c, h, w): (usize, usize, usize),
        (o, kh, kw): (usize, usize, usize),
        stride: usize,
        pad: (usize, usize),
        dilation: usize,
    ) -> Result<Self> {
        let out = |size: usize, k: usize, p: usize| {
            let eff = dilation * (k - 1) + 1;
            (size + 2 * p >= eff && stride > 0).then(|| (size + 2 * p - eff) / stride + 1)
        };
        match (out(h, kh, pad.0), out(w, kw, pad.1)) {
            (Some(oh), Some(ow)) if kh > 0 && kw > 0 && dilation > 0 => Ok(Self {
                c,
                h,
                w,
                o,
                kh,
                kw,
                stride,
                pad,
                dilation,
                oh,
                ow,
            }),
            _ => candle_core::bail!(
                "conv2d: input {h}x{w} with padding {pad:?} is smaller than the {kh}x{kw} kernel \
                 at dilation {dilation}"
            ),
        }
    }

    /// Rows of the im2col matrix: `C · kh · kw`.
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Columns of the im2col matrix (output pixels): `H' · W'`.
    pub fn n(&self) -> usize {
        self.oh * self.ow
    }
    /// A 1×1, stride-1, unpadded convolution: the image already *is* its im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == (0, 0)
    }

    /// For output column `j` and kernel column `n`, the input column is
    /// `s·j + d·n − p_w`; returns the `j` range where it is inside the image.
    fn valid_cols(&self, n: usize) -> (usize, usize) {
        let off = (self.dilation * n) as isize - self.pad.1 as isize;
        let s = self.stride as isize;
        // s·j + off >= 0  and  s·j + off <= W − 1
        let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
        let hi = (self.w as isize - 1 - off).div_euclid(s) + 1;
        let hi = hi.clamp(0, self.ow as isize);
        (lo.min(hi) as usize, hi as usize)
    }

    /// `cols[(c,m,n), (i,j)] = x[c, s·i + d·m − p_h, s·j + d·n − p_w]` (0 outside the image).
    pub fn im2col<F: KernelFloat>(&self, x: &[F], cols: &mut [F]) {
        let (nn, hw) = (self.n(), self.h * self.w);
        for c in 0..self.c {
            let plane = &x[c * hw..(c + 1) * hw];
            for m in 0..self.kh {
                for n in 0..self.kw {
                    let row = ((c * self.kh + m) * self.kw + n) * nn;
                    let (lo, hi) = self.valid_cols(n);
                    let x0 = (self.dilation * n) as isize - self.pad.1 as isize;
                    for i in 0..self.oh {
                        let dst = &mut cols[row + i * self.ow..row + (i + 1) * self.ow];
                        let y =
                            (self.stride * i + self.dilation * m) as isize - self.pad.0 as isize;
                        if y < 0 || y >= self.h as isize || lo >= hi {
                            dst.fill(F::zero());
                            continue;
                        }
                        let src = &plane[y as usize * self.w..(y as usize + 1) * self.w];
                        dst[..lo].fill(F::zero());
                        dst[hi..].fill(F::zero());
                        let start = (self.stride * lo) as isize + x0;
                        if self.stride == 1 {
                            dst[lo..hi]
                                .copy_from_slice(&src[start as usize..start as usize + hi - lo]);
                        } else {
                            for (k, d) in dst[lo..hi].iter_mut().enumerate() {
                                *d = src[start as usize + k * self.stride];
                            }
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`ConvGeometry::im2col`]: `dx[c, s·i + d·m − p_h, s·j + d·n − p_w] +=
    /// dcols[(c,m,n), (i,j)]` over the positions inside the image. `dx` must start zeroed.
    pub fn col2im<F: KernelFloat>(&self, dcols: &[F], dx: &mut [F]) {
        let (nn, hw) = (self.n(), self.h * self.w);
        for c in 0..self.c {
            let plane = &mut dx[c * hw..(c + 1) * hw];
            for m in 0..self.kh {
                for n in 0..self.kw {
                    let row = ((c * self.kh + m) * self.kw + n) * nn;
                    let (lo, hi) = self.valid_cols(n);
                    if lo >= hi {
                        continue;
                    }
                    let x0 = (self.dilation * n) as isize - self.pad.1 as isize;
                    for i in 0..self.oh {
                        let y =
                            (self.stride * i + self.dilation * m) as isize - self.pad.0 as isize;
                        if y < 0 || y >= self.h as isize {
                            continue;
                        }
                        let src = &dcols[row + i * self.ow + lo..row + i * self.ow + hi];
                        let start =
                            (y as usize * self.w) as isize + (self.stride * lo) as isize + x0;
                        let start = start as usize;
                        if self.stride == 1 {
                            for (d, s) in plane[start..start + hi - lo].iter_mut().zip(src) {
                                *d += *s;
                            }
                        } else {
                            for (k, s) in src.iter().enumerate() {
                                plane[start + k * self.stride] += *s;
                            }
                        }
                    }
                }
            }
        }
    }
}

use neka_common::cpu::contiguous_slice as contiguous;
use neka_common::cpu::{
    matmul, parallel, sum, threads, with_slice, CpuOp3, Fused3, Grads3, Input, Mat,
};

fn block_size(batch: usize) -> usize {
    batch.div_ceil(threads()).max(1)
}

/// Planes per parallel item for the pooling kernels: about four items per thread, each at
/// least 16 K input elements.
fn planes_per_item(planes: usize, plane_size: usize) -> usize {
    planes
        .div_ceil(4 * threads())
        .max((1usize << 14).div_ceil(plane_size))
        .max(1)
}

/// The convolution `y = conv(x, W) + bias`, optionally followed by `max(0, ·)` and by a
/// `k × k` max pool with stride `k` (the lecture's conv → ReLU → pool block), as a candle
/// custom op on `(x (B, C, H, W), W (C_out, C, kh, kw), bias (C_out))`.
///
/// With the pool fused, the full-size feature map before pooling never becomes a tensor: each
/// image's map lives in a per-thread buffer, is pooled while it is in cache, and only the
/// window argmax (one byte per pooled output) is kept for the backward pass.
#[derive(Debug, Clone)]
pub struct Conv2dOp {
    pub stride: usize,
    pub pad: (usize, usize),
    pub dilation: usize,
    /// Apply ReLU to the output (its backward uses the output as the mask).
    pub relu: bool,
    /// Max-pool the (ReLU'd) output with a `pool × pool` window and stride (`0` or `1`: none;
    /// at most 16, so a window position fits a byte).
    pub pool: usize,
    /// Record the window argmax for the backward pass (`false` in inference: the pooling loop
    /// is then about 1.4× faster; a backward pass after all recomputes the forward pass).
    pub keep_argmax: bool,
    /// The forward pass's window argmax (row-major position in the window), for `bwd`.
    argmax: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Conv2dOp {
    /// A convolution with this stride, padding `(p_h, p_w)` and dilation; `relu` fuses ReLU.
    pub fn new(stride: usize, pad: (usize, usize), dilation: usize, relu: bool) -> Self {
        Self {
            stride,
            pad,
            dilation,
            relu,
            pool: 0,
            keep_argmax: true,
            argmax: Arc::new(Mutex::new(None)),
        }
    }

    /// Fuses a `k × k`, stride-`k`, unpadded max pool after the (ReLU'd) convolution.
    pub fn with_pool(mut self, k: usize) -> Self {
        self.pool = k;
        self
    }

    /// Whether to record the pooling argmax (see [`Conv2dOp::keep_argmax`]).
    pub fn keep_argmax(mut self, keep: bool) -> Self {
        self.keep_argmax = keep;
        self
    }

    fn pooled(&self) -> bool {
        self.pool > 1
    }

    fn geometry(&self, x: &Shape, w: &Shape) -> Result<(usize, ConvGeometry)> {
        let (b, c, h, wd) = x.dims4()?;
        let (o, ci, kh, kw) = w.dims4()?;
        if ci != c {
            candle_core::bail!(
                "conv2d kernel: input has {c} channels, weight {:?} expects {ci} (groups = 1)",
                w.dims()
            )
        }
        let g = ConvGeometry::new(
            (c, h, wd),
            (o, kh, kw),
            self.stride,
            self.pad,
            self.dilation,
        )?;
        if self.pooled() && (self.pool > 16 || g.oh < self.pool || g.ow < self.pool) {
            candle_core::bail!(
                "conv2d kernel: fused {0}x{0} pool needs a window of at most 16 and an output of \
                 at least the window, got {1}x{2}",
                self.pool,
                g.oh,
                g.ow
            )
        }
        Ok((b, g))
    }

    /// Output `(H, W)` after the optional pool.
    fn out_hw(&self, g: &ConvGeometry) -> (usize, usize) {
        if self.pooled() {
            (g.oh / self.pool, g.ow / self.pool)
        } else {
            (g.oh, g.ow)
        }
    }

    /// `z (o × n) = W · cols + bias`, then ReLU if fused.
    fn conv_image<F: KernelFloat>(
        &self,
        g: &ConvGeometry,
        w: &[F],
        bias: &[F],
        cols: &[F],
        z: &mut [F],
    ) {
        let (k, n, o) = (g.k(), g.n(), g.o);
        for (row, bo) in z.chunks_mut(n).zip(bias) {
            row.fill(*bo);
        }
        // SAFETY: z is o×n, w is o×k, cols is k×n, all row-major and disjoint.
        unsafe {
            matmul(
                (o, n, k),
                Mat::row_major(z.as_mut_ptr(), n),
                true,
                Mat::row_major(w.as_ptr(), k),
                Mat::row_major(cols.as_ptr(), n),
            );
        }
        if self.relu {
            // A select, not a conditional store, so it vectorises; NaN stays NaN.
            let zero = F::zero();
            z.iter_mut()
                .for_each(|v| *v = if *v < zero { zero } else { *v });
        }
    }

    /// Pools one image's maps `z (o, oh, ow)` into `y (o, ph, pw)`, recording window argmaxes.
    fn pool_image<F: KernelFloat>(&self, g: &ConvGeometry, z: &[F], y: &mut [F], arg: &mut [u8]) {
        if arg.is_empty() {
            return self.pool_values(g, z, y);
        }
        let (k, (ph, pw)) = (self.pool, self.out_hw(g));
        let ow = g.ow;
        for ((zp, yp), ap) in z
            .chunks(g.n())
            .zip(y.chunks_mut(ph * pw))
            .zip(arg.chunks_mut(ph * pw))
        {
            for (i, (yr, ar)) in yp.chunks_mut(pw).zip(ap.chunks_mut(pw)).enumerate() {
                if k == 2 {
                    let (r0, r1) = (
                        &zp[2 * i * ow..(2 * i + 1) * ow],
                        &zp[(2 * i + 1) * ow..(2 * i + 2) * ow],
                    );
                    for (j, (yv, av)) in yr.iter_mut().zip(ar.iter_mut()).enumerate() {
                        let (best, val) = window2x2(r0, r1, 2 * j);
                        *yv = val;
                        *av = best as u8;
                    }
                    continue;
                }
                for (j, (yv, av)) in yr.iter_mut().zip(ar.iter_mut()).enumerate() {
                    let mut best = (0, zp[i * k * ow + j * k]);
                    for a in 0..k {
                        let row = &zp[(i * k + a) * ow + j * k..(i * k + a) * ow + (j + 1) * k];
                        for (c, &v) in row.iter().enumerate() {
                            if (v > best.1) | v.is_nan() {
                                best = (a * k + c, v);
                            }
                        }
                    }
                    *yv = best.1;
                    *av = best.0 as u8;
                }
            }
        }
    }

    /// [`Conv2dOp::pool_image`] without the argmax: values only, a tighter loop.
    fn pool_values<F: KernelFloat>(&self, g: &ConvGeometry, z: &[F], y: &mut [F]) {
        let (k, (ph, pw), ow) = (self.pool, self.out_hw(g), g.ow);
        for (zp, yp) in z.chunks(g.n()).zip(y.chunks_mut(ph * pw)) {
            for (i, yr) in yp.chunks_mut(pw).enumerate() {
                for (j, yv) in yr.iter_mut().enumerate() {
                    *yv = if k == 2 {
                        window2x2(&zp[2 * i * ow..], &zp[(2 * i + 1) * ow..], 2 * j).1
                    } else {
                        let mut best = zp[i * k * ow + j * k];
                        for a in 0..k {
                            let r = &zp[(i * k + a) * ow + j * k..(i * k + a) * ow + (j + 1) * k];
                            for &v in r {
                                if (v > best) | v.is_nan() {
                                    best = v;
                                }
                            }
                        }
                        best
                    };
                }
            }
        }
    }

    fn forward<F: KernelFloat>(
        &self,
        b: usize,
        g: &ConvGeometry,
        x: &[F],
        w: &[F],
        bias: &[F],
    ) -> (Vec<F>, Vec<u8>) {
        self.forward_with(b, g, x, w, bias, self.keep_argmax)
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_with<F: KernelFloat>(
        &self,
        b: usize,
        g: &ConvGeometry,
        x: &[F],
        w: &[F],
        bias: &[F],
        keep_argmax: bool,
    ) -> (Vec<F>, Vec<u8>) {
        let (k, n, o) = (g.k(), g.n(), g.o);
        let (ph, pw) = self.out_hw(g);
        let (xsz, ysz) = (g.c * g.h * g.w, o * ph * pw);
        let mut y = vec![F::zero(); b * ysz];
        let keep = self.pooled() && keep_argmax;
        let mut arg = vec![0u8; if keep { b * ysz } else { 0 }];
        let per = block_size(b);
        let arg_chunks: Vec<&mut [u8]> = if keep {
            arg.chunks_mut(per * ysz).collect()
        } else {
            (0..b.div_ceil(per)).map(|_| &mut [][..]).collect()
        };
        parallel(
            y.chunks_mut(per * ysz)
                .zip(x.chunks(per * xsz))
                .zip(arg_chunks),
            |((yb, xb), ab)| {
                let mut cols = if g.is_pointwise() {
                    Vec::new()
                } else {
                    vec![F::zero(); k * n]
                };
                let mut z = if self.pooled() {
                    vec![F::zero(); o * n]
                } else {
                    Vec::new()
                };
                for (i, (yi, xi)) in yb.chunks_mut(ysz).zip(xb.chunks(xsz)).enumerate() {
                    let cols: &[F] = if g.is_pointwise() {
                        xi
                    } else {
                        g.im2col(xi, &mut cols);
                        &cols
                    };
                    if self.pooled() {
                        self.conv_image(g, w, bias, cols, &mut z);
                        let ai = if keep {
                            &mut ab[i * ysz..(i + 1) * ysz]
                        } else {
                            &mut [][..]
                        };
                        self.pool_image(g, &z, yi, ai);
                    } else {
                        self.conv_image(g, w, bias, cols, yi);
                    }
                }
            },
        );
        (y, arg)
    }

    /// Returns `(dx if wanted, dW, db)`.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn backward<F: KernelFloat>(
        &self,
        b: usize,
        g: &ConvGeometry,
        (x, w, y, dy): (&[F], &[F], &[F], &[F]),
        arg: &[u8],
        want_dx: bool,
    ) -> (Option<Vec<F>>, Vec<F>, Vec<F>) {
        let (k, n, o) = (g.k(), g.n(), g.o);
        let (ph, pw) = self.out_hw(g);
        let (xsz, ysz) = (g.c * g.h * g.w, o * ph * pw);
        let per = block_size(b);
        let mut dx = if want_dx {
            vec![F::zero(); b * xsz]
        } else {
            Vec::new()
        };
        let block = |b0: usize, xb: &[F], yb: &[F], dyb: &[F], mut dxb: Option<&mut [F]>| {
            let mut dw = vec![F::zero(); o * k];
            let mut db = vec![F::zero(); o];
            let mut cols = if g.is_pointwise() {
                Vec::new()
            } else {
                vec![F::zero(); k * n]
            };
            let mut dz = if self.relu || self.pooled() {
                vec![F::zero(); o * n]
            } else {
                Vec::new()
            };
            let mut dcols = if want_dx && !g.is_pointwise() {
                vec![F::zero(); k * n]
            } else {
                Vec::new()
            };
            for i in 0..xb.len() / xsz {
                let (yi, dyi) = (&yb[i * ysz..(i + 1) * ysz], &dyb[i * ysz..(i + 1) * ysz]);
                let dzi: &[F] = if self.pooled() {
                    // Route each pooled gradient to its window's argmax, where ReLU was active.
                    dz.fill(F::zero());
                    let ai = &arg[(b0 + i) * ysz..(b0 + i + 1) * ysz];
                    let pk = self.pool;
                    for c in 0..o {
                        for pi in 0..ph {
                            for pj in 0..pw {
                                let q = (c * ph + pi) * pw + pj;
                                if !self.relu || yi[q] > F::zero() {
                                    let (a, e) = (ai[q] as usize / pk, ai[q] as usize % pk);
                                    dz[c * n + (pi * pk + a) * g.ow + pj * pk + e] = dyi[q];
                                }
                            }
                        }
                    }
                    &dz
                } else if self.relu {
                    for ((d, &gy), &v) in dz.iter_mut().zip(dyi).zip(yi) {
                        *d = if v > F::zero() { gy } else { F::zero() };
                    }
                    &dz
                } else {
                    dyi
                };
                for (acc, row) in db.iter_mut().zip(dzi.chunks(n)) {
                    *acc += sum(row);
                }
                let xi = &xb[i * xsz..(i + 1) * xsz];
                let cols: &[F] = if g.is_pointwise() {
                    xi
                } else {
                    g.im2col(xi, &mut cols);
                    &cols
                };
                // SAFETY: dw is o×k; dz is o×n; colsᵀ is n×k (cols is k×n row-major).
                unsafe {
                    matmul(
                        (o, k, n),
                        Mat::row_major(dw.as_mut_ptr(), k),
                        true,
                        Mat::row_major(dzi.as_ptr(), n),
                        Mat::col_major(cols.as_ptr(), n),
                    );
                }
                if let Some(dxb) = dxb.as_deref_mut() {
                    let dxi = &mut dxb[i * xsz..(i + 1) * xsz];
                    let out: &mut [F] = if g.is_pointwise() { dxi } else { &mut dcols };
                    // SAFETY: out is k×n; Wᵀ is k×o (W is o×k row-major); dz is o×n.
                    unsafe {
                        matmul(
                            (k, n, o),
                            Mat::row_major(out.as_mut_ptr(), n),
                            false,
                            Mat::col_major(w.as_ptr(), k),
                            Mat::row_major(dzi.as_ptr(), n),
                        );
                    }
                    if !g.is_pointwise() {
                        g.col2im(&dcols, &mut dxb[i * xsz..(i + 1) * xsz]);
                    }
                }
            }
            (dw, db)
        };
        let inputs = x
            .chunks(per * xsz)
            .zip(y.chunks(per * ysz).zip(dy.chunks(per * ysz)))
            .enumerate();
        let parts: Vec<(Vec<F>, Vec<F>)> = if want_dx {
            parallel(
                dx.chunks_mut(per * xsz).zip(inputs),
                |(dxb, (j, (xb, (yb, dyb))))| block(j * per, xb, yb, dyb, Some(dxb)),
            )
        } else {
            parallel(inputs, |(j, (xb, (yb, dyb)))| {
                block(j * per, xb, yb, dyb, None)
            })
        };
        let mut parts = parts.into_iter();
        let (mut dw, mut db) = parts
            .next()
            .unwrap_or_else(|| (vec![F::zero(); o * k], vec![F::zero(); o]));
        for (pw, pb) in parts {
            dw.iter_mut().zip(pw).for_each(|(a, v)| *a += v);
            db.iter_mut().zip(pb).for_each(|(a, v)| *a += v);
        }
        (want_dx.then_some(dx), dw, db)
    }
}

impl<F: KernelFloat> CpuOp3<F> for Conv2dOp {
    const NAME: &'static str = "neka-conv2d";

    fn cpu_fwd(&self, [x, w, bias]: [Input<'_>; 3]) -> Result<(Vec<F>, Shape)> {
        let (b, g) = self.geometry(x.shape(), w.shape())?;
        if bias.shape().dims() != [g.o] {
            candle_core::bail!(
                "conv2d kernel: bias {:?} must be [{}]",
                bias.shape().dims(),
                g.o
            )
        }
        let (ph, pw) = self.out_hw(&g);
        let what = "conv2d kernel";
        let (out, arg) =
            self.forward::<F>(b, &g, x.slice(what)?, w.slice(what)?, bias.slice(what)?);
        if self.pooled() && self.keep_argmax {
            *self
                .argmax
                .lock()
                .map_err(|_| candle_core::Error::Msg("conv2d kernel: lock poisoned".into()))? =
                Some(arg);
        }
        Ok((out, Shape::from((b, g.o, ph, pw))))
    }

    fn bwd(&self, [x, w, bias]: [&Tensor; 3], y: &Tensor, dy: &Tensor) -> Result<Grads3> {
        let (b, g) = self.geometry(x.shape(), w.shape())?;
        let what = "conv2d kernel backward";
        let want_dx = x.track_op();
        let mut guard = self
            .argmax
            .lock()
            .map_err(|_| candle_core::Error::Msg("conv2d kernel: lock poisoned".into()))?;
        if self.pooled() && guard.is_none() {
            // Run without recording the argmax (inference): recompute it.
            let (_, arg) = with_slice::<F, _>(x, what, |xs| {
                with_slice::<F, _>(w, what, |ws| {
                    with_slice::<F, _>(bias, what, |bs| self.forward_with(b, &g, xs, ws, bs, true))
                })
            })???;
            *guard = Some(arg);
        }
        let arg: &[u8] = match &*guard {
            Some(a) if self.pooled() => a,
            _ => &[],
        };
        let (dx, dw, db) = with_slice::<F, _>(x, what, |xs| {
            with_slice::<F, _>(w, what, |ws| {
                with_slice::<F, _>(y, what, |ys| {
                    with_slice::<F, _>(dy, what, |dys| {
                        self.backward(b, &g, (xs, ws, ys, dys), arg, want_dx)
                    })
                })
            })
        })????;
        let cpu = Device::Cpu;
        Ok((
            dx.map(|dx| Tensor::from_vec(dx, x.shape(), &cpu))
                .transpose()?,
            Some(Tensor::from_vec(dw, w.shape(), &cpu)?),
            Some(Tensor::from_vec(db, g.o, &cpu)?),
        ))
    }
}

/// Runs neka's convolution kernel: `x (B, C, H, W)`, `w (C_out, C, kh, kw)`, `bias (C_out)` →
/// `(B, C_out, H', W')` (`H'/k, W'/k` with a fused `k × k` pool), with ReLU applied when
/// `op.relu`. CPU tensors, f32 or f64.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: &Tensor, op: Conv2dOp) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &bias.contiguous()?, Fused3(op))
}

/// `k × k` max pooling with stride and padding (−∞ padding), PyTorch's `max_pool2d`, as a
/// candle custom op on `(B, C, H, W)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2dOp {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool2dOp {
    fn out_size(&self, size: usize) -> Result<usize> {
        if self.kernel == 0 || self.stride == 0 || size + 2 * self.padding < self.kernel {
            candle_core::bail!(
                "max_pool2d kernel: input size {size} with padding {} is smaller than the kernel {}",
                self.padding,
                self.kernel
            )
        }
        Ok((size + 2 * self.padding - self.kernel) / self.stride + 1)
    }

    /// The common 2×2, stride-2, unpadded case, with a branch-free inner loop.
    fn is_2x2(&self) -> bool {
        self.kernel == 2 && self.stride == 2 && self.padding == 0
    }

    /// Index (within the plane) of the first maximum of output window `(i, j)`: `None` only if
    /// the window lies entirely in the padding.
    #[inline]
    fn argmax<F: KernelFloat>(
        &self,
        plane: &[F],
        (h, w): (usize, usize),
        i: usize,
        j: usize,
    ) -> Option<usize> {
        let y0 = (i * self.stride) as isize - self.padding as isize;
        let x0 = (j * self.stride) as isize - self.padding as isize;
        let (ylo, yhi) = (
            y0.max(0) as usize,
            ((y0 + self.kernel as isize).min(h as isize)).max(0) as usize,
        );
        let (xlo, xhi) = (
            x0.max(0) as usize,
            ((x0 + self.kernel as isize).min(w as isize)).max(0) as usize,
        );
        if ylo >= yhi || xlo >= xhi {
            return None;
        }
        let (mut bi, mut bv) = (ylo * w + xlo, plane[ylo * w + xlo]);
        for y in ylo..yhi {
            let row = &plane[y * w + xlo..y * w + xhi];
            for (k, &v) in row.iter().enumerate() {
                // PyTorch's rule: a later value wins if it is larger or NaN.
                if v > bv || v.is_nan() {
                    (bi, bv) = (y * w + xlo + k, v);
                }
            }
        }
        Some(bi)
    }

    fn forward<F: KernelFloat>(
        &self,
        planes: usize,
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        x: &[F],
    ) -> Vec<F> {
        let mut y = vec![F::zero(); planes * oh * ow];
        let per = planes_per_item(planes, h * w);
        let plane = |yp: &mut [F], xp: &[F]| {
            if self.is_2x2() {
                for (i, yr) in yp.chunks_mut(ow).enumerate() {
                    let (r0, r1) = (&xp[2 * i * w..], &xp[(2 * i + 1) * w..]);
                    for (j, out) in yr.iter_mut().enumerate() {
                        *out = window2x2(r0, r1, 2 * j).1;
                    }
                }
                return;
            }
            for i in 0..oh {
                for j in 0..ow {
                    yp[i * ow + j] = match self.argmax(xp, (h, w), i, j) {
                        Some(k) => xp[k],
                        None => F::neg_infinity(),
                    };
                }
            }
        };
        parallel(
            y.chunks_mut(per * oh * ow).zip(x.chunks(per * h * w)),
            |(yb, xb)| {
                for (yp, xp) in yb.chunks_mut(oh * ow).zip(xb.chunks(h * w)) {
                    plane(yp, xp);
                }
            },
        );
        y
    }

    fn backward<F: KernelFloat>(
        &self,
        planes: usize,
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        x: &[F],
        dy: &[F],
    ) -> Vec<F> {
        let mut dx = vec![F::zero(); planes * h * w];
        let per = planes_per_item(planes, h * w);
        let plane = |dxp: &mut [F], xp: &[F], dyp: &[F]| {
            if self.is_2x2() {
                for (i, dyr) in dyp.chunks(ow).enumerate() {
                    let (r0, r1) = (&xp[2 * i * w..], &xp[(2 * i + 1) * w..]);
                    for (j, &g) in dyr.iter().enumerate() {
                        let (k, _) = window2x2(r0, r1, 2 * j);
                        // k: 0, 1 in row 2i; 2, 3 in row 2i + 1
                        dxp[(2 * i + k / 2) * w + 2 * j + k % 2] += g;
                    }
                }
                return;
            }
            for i in 0..oh {
                for j in 0..ow {
                    if let Some(k) = self.argmax(xp, (h, w), i, j) {
                        dxp[k] += dyp[i * ow + j];
                    }
                }
            }
        };
        parallel(
            dx.chunks_mut(per * h * w)
                .zip(x.chunks(per * h * w).zip(dy.chunks(per * oh * ow))),
            |(dxb, (xb, dyb))| {
                for (dxp, (xp, dyp)) in dxb
                    .chunks_mut(h * w)
                    .zip(xb.chunks(h * w).zip(dyb.chunks(oh * ow)))
                {
                    plane(dxp, xp, dyp);
                }
            },
        );
        dx
    }
}

/// The first maximum (PyTorch's rule: a later value wins if larger or NaN) of the 2×2 window
/// at column `x` of rows `r0`, `r1`, as `(0..4 in row-major order, value)`.
#[inline(always)]
fn window2x2<F: KernelFloat>(r0: &[F], r1: &[F], x: usize) -> (usize, F) {
    // `|`, not `||`: both comparisons, then selects, no branches.
    let pick = |(bk, bv): (usize, F), k: usize, v: F| {
        let take = (v > bv) | v.is_nan();
        (if take { k } else { bk }, if take { v } else { bv })
    };
    let best = pick((0, r0[x]), 1, r0[x + 1]);
    let best = pick(best, 2, r1[x]);
    pick(best, 3, r1[x + 1])
}

impl candle_core::CustomOp1 for MaxPool2dOp {
    fn name(&self) -> &'static str {
        "neka-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l.shape().dims4()?;
        let (oh, ow) = (self.out_size(h)?, self.out_size(w)?);
        let what = "max_pool2d kernel";
        let (planes, hw, ohw) = (b * c, (h, w), (oh, ow));
        let out = match s {
            CpuStorage::F32(_) => {
                CpuStorage::F32(self.forward::<f32>(planes, hw, ohw, contiguous(s, l, what)?))
            }
            CpuStorage::F64(_) => {
                CpuStorage::F64(self.forward::<f64>(planes, hw, ohw, contiguous(s, l, what)?))
            }
            _ => candle_core::bail!("max_pool2d kernel: f32 or f64 only, got {:?}", s.dtype()),
        };
        Ok((out, Shape::from((b, c, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        fn typed<F: KernelFloat>(op: &MaxPool2dOp, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
            let (b, c, h, w) = x.dims4()?;
            let (oh, ow) = (op.out_size(h)?, op.out_size(w)?);
            let what = "max_pool2d kernel backward";
            let dx = with_slice::<F, _>(x, what, |xs| {
                with_slice::<F, _>(dy, what, |dys| {
                    op.backward(b * c, (h, w), (oh, ow), xs, dys)
                })
            })??;
            Tensor::from_vec(dx, x.shape(), &Device::Cpu)
        }
        Ok(Some(match x.dtype() {
            DType::F32 => typed::<f32>(self, x, dy)?,
            DType::F64 => typed::<f64>(self, x, dy)?,
            dt => candle_core::bail!("max_pool2d kernel: f32 or f64 only, got {dt:?}"),
        }))
    }
}

/// Runs neka's max-pool kernel on a CPU tensor `(B, C, H, W)`, f32 or f64.
pub fn max_pool2d(x: &Tensor, op: MaxPool2dOp) -> Result<Tensor> {
    x.contiguous()?.apply_op1(op)
}
