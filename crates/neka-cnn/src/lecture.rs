//! The lecture's worked examples as plain functions, to read next to the notes and to test
//! candle's operators against.
//!
//! * [`convolve_full_1d`] — the textbook convolution `(f∗g)[n] = Σ_m f[m]·g[n−m]`: the kernel
//!   is *flipped*, and the "full" output has `len(f) + len(g) − 1` values.
//! * [`correlate_2d`] — what CNN layers (candle's `conv2d`, PyTorch's `Conv2d`) compute: a
//!   cross-correlation, the kernel slid *without* flipping:
//!   `y[i, j] = Σ_m Σ_n x[s·i + d·m − p, s·j + d·n − p] · k[m, n]`.
//!
//! The two differ only by the flip, and a learned kernel can absorb the flip, which is why
//! libraries skip it.

/// Full 1-D convolution `(f∗g)[n] = Σ_m f[m]·g[n−m]`, `n = 0 … len(f)+len(g)−2`.
///
/// ```
/// // the lecture's example
/// assert_eq!(neka_cnn::lecture::convolve_full_1d(&[3., 1., 2.], &[3., 2., 1.]), vec![9., 9., 11., 5., 2.]);
/// ```
pub fn convolve_full_1d(f: &[f32], g: &[f32]) -> Vec<f32> {
    if f.is_empty() || g.is_empty() {
        return Vec::new();
    }
    let mut out = vec![0.0; f.len() + g.len() - 1];
    for (n, o) in out.iter_mut().enumerate() {
        for (m, fm) in f.iter().enumerate() {
            if n >= m && n - m < g.len() {
                *o += fm * g[n - m];
            }
        }
    }
    out
}

/// 2-D cross-correlation of a single-channel `x` with kernel `k`, with zero `padding`,
/// `stride` and `dilation` — the reference for [`crate::conv::Conv2d`].
pub fn correlate_2d(
    x: &[Vec<f32>],
    k: &[Vec<f32>],
    padding: usize,
    stride: usize,
    dilation: usize,
) -> Vec<Vec<f32>> {
    let (h, w) = (x.len(), x.first().map_or(0, Vec::len));
    let (kh, kw) = (k.len(), k.first().map_or(0, Vec::len));
    let (Some(oh), Some(ow)) = (
        crate::arith::conv_output_size(h, kh, padding, stride, dilation),
        crate::arith::conv_output_size(w, kw, padding, stride, dilation),
    ) else {
        return Vec::new();
    };
    let at = |r: isize, c: isize| -> f32 {
        if r < 0 || c < 0 || r as usize >= h || c as usize >= w {
            0.0
        } else {
            x[r as usize][c as usize]
        }
    };
    (0..oh)
        .map(|i| {
            (0..ow)
                .map(|j| {
                    let mut s = 0.0;
                    for (m, krow) in k.iter().enumerate() {
                        for (n, kv) in krow.iter().enumerate() {
                            let r = (stride * i + dilation * m) as isize - padding as isize;
                            let c = (stride * j + dilation * n) as isize - padding as isize;
                            s += at(r, c) * kv;
                        }
                    }
                    s
                })
                .collect()
        })
        .collect()
}

/// The lecture's 5×5 input.
pub const LECTURE_INPUT: [[f32; 5]; 5] = [
    [3., 3., 2., 1., 0.],
    [0., 0., 1., 3., 1.],
    [3., 1., 2., 2., 3.],
    [2., 0., 0., 2., 2.],
    [2., 0., 0., 0., 1.],
];

/// The lecture's 3×3 kernel.
pub const LECTURE_KERNEL: [[f32; 3]; 3] = [[0., 1., 2.], [2., 2., 0.], [0., 1., 2.]];

/// A fixed-size array as nested `Vec`s.
pub fn to_rows<const R: usize, const C: usize>(a: &[[f32; C]; R]) -> Vec<Vec<f32>> {
    a.iter().map(|r| r.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lecture_2d_example() {
        let x = to_rows(&LECTURE_INPUT);
        let k = to_rows(&LECTURE_KERNEL);
        assert_eq!(
            correlate_2d(&x, &k, 0, 1, 1),
            vec![vec![12., 12., 17.], vec![10., 17., 19.], vec![9., 6., 14.]]
        );
        let padded = correlate_2d(&x, &k, 1, 1, 1);
        assert_eq!(padded.len(), 5);
        assert_eq!(padded[0], vec![6., 14., 17., 11., 3.]);
        // stride 2 picks every other output of the valid correlation
        assert_eq!(
            correlate_2d(&x, &k, 0, 2, 1),
            vec![vec![12., 17.], vec![9., 14.]]
        );
        // dilation 2: the kernel spans 5x5, one output: x at even rows/cols
        let d = correlate_2d(&x, &k, 0, 1, 2);
        let mut s = 0.0;
        for m in 0..3 {
            for n in 0..3 {
                s += LECTURE_INPUT[2 * m][2 * n] * LECTURE_KERNEL[m][n];
            }
        }
        assert_eq!(d, vec![vec![s]]);
    }
}
