//! neka's CPU convolution (+ fused ReLU, + fused max pool): ONE candle custom op with its
//! backward pass written out. The layer and its candle-op twins are [`crate::conv::Conv2d`].
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

use super::geometry::ConvGeometry;
use super::pool::window2x2;
use candle_core::{Device, Result, Shape, Tensor};
use neka_common::kernels::{
    matmul_slices, parallel, sum, threads, with_slice, CpuKernel, Fused, Input, KernelFloat, Op,
};
use std::sync::{Arc, Mutex};

fn block_size(batch: usize) -> usize {
    batch.div_ceil(threads()).max(1)
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
    /// Stride `s`, the same along height and width.
    pub stride: usize,
    /// Zero padding `(p_h, p_w)` on each side.
    pub pad: (usize, usize),
    /// Dilation `d` of the kernel, the same along height and width (1 = dense kernel).
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
        // z (o×n) += w (o×k) · cols (k×n)
        matmul_slices((o, n, k), z, true, (w, Op::N), (cols, Op::N));
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

    /// One convolution (+ ReLU, + pool) over `b` images; the argmaxes recorded when
    /// `keep_argmax` (else an empty vector).
    #[allow(clippy::too_many_arguments)]
    fn forward<F: KernelFloat>(
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
                // dw (o×k) += dz (o×n) · colsᵀ (n×k)
                matmul_slices((o, k, n), &mut dw, true, (dzi, Op::N), (cols, Op::T));
                if let Some(dxb) = dxb.as_deref_mut() {
                    let dxi = &mut dxb[i * xsz..(i + 1) * xsz];
                    let out: &mut [F] = if g.is_pointwise() { dxi } else { &mut dcols };
                    // out (k×n) = Wᵀ (k×o) · dz (o×n)
                    matmul_slices((k, n, o), out, false, (w, Op::T), (dzi, Op::N));
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

impl<F: KernelFloat> CpuKernel<F, 3> for Conv2dOp {
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
        let (out, arg) = self.forward::<F>(
            b,
            &g,
            x.slice(what)?,
            w.slice(what)?,
            bias.slice(what)?,
            self.keep_argmax,
        );
        if self.pooled() && self.keep_argmax {
            *self
                .argmax
                .lock()
                .map_err(|_| candle_core::Error::Msg("conv2d kernel: lock poisoned".into()))? =
                Some(arg);
        }
        Ok((out, Shape::from((b, g.o, ph, pw))))
    }

    fn bwd(
        &self,
        [x, w, bias]: [&Tensor; 3],
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<[Option<Tensor>; 3]> {
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
                    with_slice::<F, _>(bias, what, |bs| self.forward(b, &g, xs, ws, bs, true))
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
        Ok([
            dx.map(|dx| Tensor::from_vec(dx, x.shape(), &cpu))
                .transpose()?,
            Some(Tensor::from_vec(dw, w.shape(), &cpu)?),
            Some(Tensor::from_vec(db, g.o, &cpu)?),
        ])
    }
}

/// Runs neka's convolution kernel: `x (B, C, H, W)`, `w (C_out, C, kh, kw)`, `bias (C_out)` →
/// `(B, C_out, H', W')` (`H'/k, W'/k` with a fused `k × k` pool), with ReLU applied when
/// `op.relu`. CPU tensors, f32 or f64.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: &Tensor, op: Conv2dOp) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &bias.contiguous()?, Fused(op))
}
