//! neka's CPU max pooling: ONE candle custom op with its backward pass written out. The layer
//! and its candle-op twin are [`crate::pool::Pool2d`].
//!
//! Max pooling keeps PyTorch's semantics (padding never wins; on ties the first maximum in the
//! window, row-major, gets the gradient), and its backward recomputes each window's argmax from
//! the input and scatters the gradient there: no mask tensors, any kernel / stride / padding
//! (candle's max-pool backward needs kernel == stride: huggingface/candle#1593).

use candle_core::{Device, Result, Shape, Tensor};
use neka_common::kernels::{parallel, threads, with_slice, CpuKernel, Fused, Input, KernelFloat};

/// Planes per parallel item for the pooling kernels: about four items per thread, each at
/// least 16 K input elements.
fn planes_per_item(planes: usize, plane_size: usize) -> usize {
    planes
        .div_ceil(4 * threads())
        .max((1usize << 14).div_ceil(plane_size))
        .max(1)
}

/// `k × k` max pooling with stride and padding (−∞ padding), PyTorch's `max_pool2d`, as a
/// candle custom op on `(B, C, H, W)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2dOp {
    /// Window size `k` (a `k × k` window).
    pub kernel: usize,
    /// Step between windows, the same along height and width.
    pub stride: usize,
    /// −∞ padding on each side (never the maximum).
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
pub(crate) fn window2x2<F: KernelFloat>(r0: &[F], r1: &[F], x: usize) -> (usize, F) {
    // `|`, not `||`: both comparisons, then selects, no branches.
    let pick = |(bk, bv): (usize, F), k: usize, v: F| {
        let take = (v > bv) | v.is_nan();
        (if take { k } else { bk }, if take { v } else { bv })
    };
    let best = pick((0, r0[x]), 1, r0[x + 1]);
    let best = pick(best, 2, r1[x]);
    pick(best, 3, r1[x + 1])
}

impl<F: KernelFloat> CpuKernel<F, 1> for MaxPool2dOp {
    const NAME: &'static str = "neka-max-pool2d";

    fn cpu_fwd(&self, [x]: [Input<'_>; 1]) -> Result<(Vec<F>, Shape)> {
        let (b, c, h, w) = x.shape().dims4()?;
        let (oh, ow) = (self.out_size(h)?, self.out_size(w)?);
        let xs = x.slice::<F>("max_pool2d kernel")?;
        let y = self.forward::<F>(b * c, (h, w), (oh, ow), xs);
        Ok((y, Shape::from((b, c, oh, ow))))
    }

    fn bwd(&self, [x]: [&Tensor; 1], _y: &Tensor, dy: &Tensor) -> Result<[Option<Tensor>; 1]> {
        let (b, c, h, w) = x.dims4()?;
        let (oh, ow) = (self.out_size(h)?, self.out_size(w)?);
        let what = "max_pool2d kernel backward";
        let dx = with_slice::<F, _>(x, what, |xs| {
            with_slice::<F, _>(dy, what, |dys| {
                self.backward(b * c, (h, w), (oh, ow), xs, dys)
            })
        })??;
        Ok([Some(Tensor::from_vec(dx, x.shape(), &Device::Cpu)?)])
    }
}

/// Runs neka's max-pool kernel on a CPU tensor `(B, C, H, W)`, f32 or f64.
pub fn max_pool2d(x: &Tensor, op: MaxPool2dOp) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Fused(op))
}
