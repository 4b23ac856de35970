//! The geometry of one 2-D convolution and its im2col / col2im, shared by the convolution
//! kernel ([`super::conv`]).

use candle_core::Result;
use neka_common::kernels::KernelFloat;

/// Shape of one 2-D convolution (one group), per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels `C`.
    pub c: usize,
    /// Input height `H`, before padding.
    pub h: usize,
    /// Input width `W`, before padding.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride `s`, the same along height and width.
    pub stride: usize,
    /// Zero padding `(p_h, p_w)` on each side.
    pub pad: (usize, usize),
    /// Dilation `d`: the kernel covers `d(k−1) + 1` input pixels per dimension.
    pub dilation: usize,
    /// Output height, `floor((H + 2p_h − d(kh−1) − 1) / s) + 1`.
    pub oh: usize,
    /// Output width, `floor((W + 2p_w − d(kw−1) − 1) / s) + 1`.
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
    pub(crate) fn is_pointwise(&self) -> bool {
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
