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
/// assert_eq!(neka_lecture::conv::convolve_full_1d(&[3., 1., 2.], &[3., 2., 1.]), vec![9., 9., 11., 5., 2.]);
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
/// `stride` and `dilation` — the reference for [`neka_cnn::Conv2d`].
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
        neka_cnn::arith::conv_output_size(h, kh, padding, stride, dilation),
        neka_cnn::arith::conv_output_size(w, kw, padding, stride, dilation),
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

/// The notes' 1-D example: `f = [3, 1, 2]` …
pub const LECTURE_F: [f32; 3] = [3., 1., 2.];
/// … and `g = [3, 2, 1]` (`f ∗ g = [9, 9, 11, 5, 2]`).
pub const LECTURE_G: [f32; 3] = [3., 2., 1.];

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

/// One row of the notes' 1-D table: for output index `n`, the flipped kernel shifted by `n`
/// under `f`, and the products that make `(f∗g)[n]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvStep1d {
    /// The output index `n` of this row.
    pub n: usize,
    /// `g[n−m]` for every `m` of [`ConvTable1d::ms`] (0 where `n−m` is outside `g`).
    pub g_shifted: Vec<f32>,
    /// `(m, f[m], g[n−m])` for the `m` where `g[n−m]` exists, in increasing `m`; `f[m]` is 0
    /// outside `f`, as in the notes.
    pub terms: Vec<(isize, f32, f32)>,
    /// `Σ f[m]·g[n−m]` over `terms`.
    pub sum: f32,
}

impl ConvStep1d {
    /// The sum as the notes write it: `(0*1) + (0*2) + (3*3) = 9` with `times = "*"`.
    pub fn terms_text(&self, times: &str) -> String {
        let products: Vec<String> = self
            .terms
            .iter()
            .map(|(_, f, g)| format!("({f}{times}{g})"))
            .collect();
        format!("{} = {}", products.join(" + "), self.sum)
    }
}

/// The notes' tabulation of `(f∗g)[n] = Σ_m f[m]·g[n−m]`: one row of `f[m]`, one row of
/// `g[n−m]` per output `n`, over `m = −(len g − 1) … len f + len g − 2` (every `m` where
/// some `g[n−m]` is non-zero).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvTable1d {
    /// The kernel offsets `m` of the table's columns, in increasing order (may be negative).
    pub ms: Vec<isize>,
    /// `f[m]`, 0 outside `f`.
    pub f_row: Vec<f32>,
    /// One row per output `n = 0 … len f + len g − 2`.
    pub steps: Vec<ConvStep1d>,
}

impl ConvTable1d {
    /// The sums, `(f∗g)[0 …]`: equal to [`convolve_full_1d`].
    pub fn output(&self) -> Vec<f32> {
        self.steps.iter().map(|s| s.sum).collect()
    }
}

/// Builds the [`ConvTable1d`] of `f ∗ g`.
///
/// ```
/// let t = neka_lecture::conv::convolution_table_1d(&[3., 1., 2.], &[3., 2., 1.]);
/// assert_eq!(t.steps[0].terms_text("*"), "(0*1) + (0*2) + (3*3) = 9"); // the notes' n = 0
/// assert_eq!(t.output(), vec![9., 9., 11., 5., 2.]);
/// ```
pub fn convolution_table_1d(f: &[f32], g: &[f32]) -> ConvTable1d {
    if f.is_empty() || g.is_empty() {
        return ConvTable1d {
            ms: Vec::new(),
            f_row: Vec::new(),
            steps: Vec::new(),
        };
    }
    let (lf, lg) = (f.len() as isize, g.len() as isize);
    let at = |s: &[f32], i: isize| {
        if i >= 0 && i < s.len() as isize {
            s[i as usize]
        } else {
            0.0
        }
    };
    let ms: Vec<isize> = (-(lg - 1)..=lf + lg - 2).collect();
    let steps = (0..lf + lg - 1)
        .map(|n| {
            let terms: Vec<(isize, f32, f32)> = (n - (lg - 1)..=n)
                .map(|m| (m, at(f, m), at(g, n - m)))
                .collect();
            ConvStep1d {
                n: n as usize,
                g_shifted: ms.iter().map(|&m| at(g, n - m)).collect(),
                sum: terms.iter().map(|(_, a, b)| a * b).sum(),
                terms,
            }
        })
        .collect();
    ConvTable1d {
        f_row: ms.iter().map(|&m| at(f, m)).collect(),
        ms,
        steps,
    }
}

impl std::fmt::Display for ConvTable1d {
    /// The table as the notes print it, one `g[n−m]` row per `n` with its sum.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let row = |v: &[f32]| v.iter().map(|x| format!("{x:>3}")).collect::<String>();
        let ms: String = self.ms.iter().map(|m| format!("{m:>3}")).collect();
        writeln!(f, "   {:<8}{ms}", "m")?;
        write!(f, "   {:<8}{}", "f[m]", row(&self.f_row))?;
        for s in &self.steps {
            let name = format!("g[{}-m]", s.n);
            write!(
                f,
                "\n   {name:<8}{}   n={}: {}",
                row(&s.g_shifted),
                s.n,
                s.terms_text("*")
            )?;
        }
        Ok(())
    }
}

/// The input positions `(row, col)` that output `(i, j)` of [`correlate_2d`] reads, kernel tap
/// by kernel tap (row-major over the kernel); negative or too large where it reads padding.
pub fn window_taps(
    (i, j): (usize, usize),
    kernel: (usize, usize),
    padding: usize,
    stride: usize,
    dilation: usize,
) -> Vec<(isize, isize)> {
    let mut taps = Vec::with_capacity(kernel.0 * kernel.1);
    for m in 0..kernel.0 {
        for n in 0..kernel.1 {
            taps.push((
                (stride * i + dilation * m) as isize - padding as isize,
                (stride * j + dilation * n) as isize - padding as isize,
            ));
        }
    }
    taps
}

/// The products `(x, k)` that make output `(i, j)` of [`correlate_2d`] (padding reads 0), in
/// the order of [`window_taps`]; their sum is that output.
pub fn correlate_2d_terms(
    x: &[Vec<f32>],
    k: &[Vec<f32>],
    at: (usize, usize),
    padding: usize,
    stride: usize,
    dilation: usize,
) -> Vec<(f32, f32)> {
    let kw = k.first().map_or(0, Vec::len);
    let taps = window_taps(at, (k.len(), kw), padding, stride, dilation);
    taps.iter()
        .zip(k.iter().flatten())
        .map(|(&(r, c), &kv)| {
            let xv = usize::try_from(r)
                .ok()
                .zip(usize::try_from(c).ok())
                .and_then(|(r, c)| x.get(r)?.get(c).copied())
                .unwrap_or(0.0);
            (xv, kv)
        })
        .collect()
}

/// Receptive field after each layer of a stack of `(kernel, stride, dilation)` layers, from
/// one input pixel ([`ReceptiveField::after`](neka_cnn::arith::ReceptiveField::after) layer by layer).
///
/// ```
/// let rf = neka_lecture::conv::receptive_fields(&[(3, 1, 1), (3, 1, 1), (2, 2, 1)]);
/// assert_eq!(rf.iter().map(|r| r.size).collect::<Vec<_>>(), vec![3, 5, 6]); // MnistNet
/// ```
pub fn receptive_fields(layers: &[(usize, usize, usize)]) -> Vec<neka_cnn::arith::ReceptiveField> {
    let mut rf = neka_cnn::arith::ReceptiveField::default();
    layers
        .iter()
        .map(|&(k, s, d)| {
            rf = rf.after(k, s, d);
            rf
        })
        .collect()
}

/// The 1×1-convolution example: 64 channels of 28×28, a direct 3×3 conv to 64 vs a 1×1 conv
/// to 16 then the 3×3 conv to 64 (`(direct, bottleneck)` layer summaries).
pub fn bottleneck_example() -> neka_cnn::Result<(neka_cnn::Summary, neka_cnn::Summary)> {
    use neka_cnn::{Conv2dConfig, LayerSpec, Padding};
    let direct = neka_cnn::summarize(
        (64, 28, 28),
        &[(
            "conv3x3",
            LayerSpec::Conv(Conv2dConfig::new(64, 64, 3).padding(Padding::Same)),
        )],
    )?;
    let bottleneck = neka_cnn::summarize(
        (64, 28, 28),
        &[
            ("conv1x1", LayerSpec::Conv(Conv2dConfig::new(64, 16, 1))),
            (
                "conv3x3",
                LayerSpec::Conv(Conv2dConfig::new(16, 64, 3).padding(Padding::Same)),
            ),
        ],
    )?;
    Ok((direct, bottleneck))
}

/// Parameter sharing on a 28×28 image: MnistNet's conv1 (1 → 32 maps, 3×3) against a dense
/// layer with the same `32 × 26 × 26` output.
#[derive(Debug, Clone, PartialEq)]
pub struct SharingExample {
    /// The convolution: 1 → 32 channels, 3×3, stride 1, no padding, with bias.
    pub conv: neka_cnn::Conv2dConfig,
    /// The conv's output `(h, w)`.
    pub out_hw: (usize, usize),
    /// The convolution's parameters: `32 · 1 · 3 · 3 + 32 = 320`.
    pub conv_params: usize,
    /// Parameters of a dense layer from the `28 · 28` pixels to the same `32 · 26 · 26` outputs,
    /// with bias.
    pub dense_params: usize,
}

/// See [`SharingExample`].
pub fn sharing_example() -> SharingExample {
    let conv = neka_cnn::Conv2dConfig::new(1, 32, 3);
    let out_hw = conv.output_size((28, 28)).unwrap_or((0, 0));
    SharingExample {
        conv_params: neka_cnn::arith::conv2d_params(1, 32, (3, 3), 1, true),
        dense_params: neka_cnn::arith::linear_params(28 * 28, 32 * out_hw.0 * out_hw.1, true),
        conv,
        out_hw,
    }
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

    #[test]
    fn the_notes_1d_table() {
        let (f, g) = ([3f32, 1., 2.], [3f32, 2., 1.]);
        let t = convolution_table_1d(&f, &g);
        assert_eq!(t.output(), convolve_full_1d(&f, &g));
        assert_eq!(t.ms, (-2..=4).collect::<Vec<_>>());
        assert_eq!(t.f_row, vec![0., 0., 3., 1., 2., 0., 0.]);
        // the notes' five sums, word for word
        let sums: Vec<String> = t.steps.iter().map(|s| s.terms_text("*")).collect();
        assert_eq!(
            sums,
            [
                "(0*1) + (0*2) + (3*3) = 9",
                "(0*1) + (3*2) + (1*3) = 9",
                "(3*1) + (1*2) + (2*3) = 11",
                "(1*1) + (2*2) + (0*3) = 5",
                "(2*1) + (0*2) + (0*3) = 2",
            ]
        );
        assert_eq!(t.steps[1].g_shifted, vec![0., 1., 2., 3., 0., 0., 0.]);
        let text = t.to_string();
        assert!(
            text.contains("g[4-m]") && text.lines().count() == 7,
            "{text}"
        );
        assert!(convolution_table_1d(&[], &g).steps.is_empty());
    }

    #[test]
    fn terms_sum_to_the_correlation() {
        let x = to_rows(&LECTURE_INPUT);
        let k = to_rows(&LECTURE_KERNEL);
        for (p, s, d) in [(0, 1, 1), (1, 1, 1), (0, 2, 1), (0, 1, 2), (2, 2, 2)] {
            let y = correlate_2d(&x, &k, p, s, d);
            for (i, row) in y.iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    let terms = correlate_2d_terms(&x, &k, (i, j), p, s, d);
                    assert_eq!(terms.iter().map(|(a, b)| a * b).sum::<f32>(), v);
                }
            }
        }
        assert_eq!(window_taps((0, 0), (3, 3), 1, 1, 1)[0], (-1, -1));
        assert_eq!(window_taps((0, 0), (3, 3), 0, 1, 2)[8], (4, 4));
        let rf = receptive_fields(&[(3, 1, 1), (3, 1, 2), (3, 1, 4)]);
        assert_eq!(rf.last().unwrap().size, 15);
        let (direct, bottleneck) = bottleneck_example().unwrap();
        assert!(direct.total_macs() as f64 / bottleneck.total_macs() as f64 > 3.5);
        let s = sharing_example();
        assert_eq!(
            (s.conv_params, s.dense_params, s.out_hw),
            (320, 16_981_120, (26, 26))
        );
    }
}
