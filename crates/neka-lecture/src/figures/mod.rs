//! The lecture's CNN pictures: worked convolutions, padding / stride / dilation / pooling,
//! receptive-field growth, parameter counts.
//!
//! Every number is computed by code ([`crate::conv`], [`neka_cnn::arith`],
//! [`neka_cnn::summary`], [`neka_cnn::Pool2d`]); nothing is typed in. Regenerate all five into
//! `docs/lecture/` with
//!
//! ```text
//! cargo run --example conv_basics -- --figures docs/lecture
//! ```
//!
//! The bundled font (DejaVu Sans) has no Hangul, so the labels are in English.

use crate::conv::{self as lecture, LECTURE_F, LECTURE_G, LECTURE_INPUT, LECTURE_KERNEL};
use crate::plot::worked::{format_value, plot_worked, Highlight, Item, NumberGrid, WINDOW_COLOURS};
use candle_core::{Device, Module, Tensor};
use neka_cnn::arith::{conv_output_size, effective_kernel, same_padding};
use neka_cnn::{Pool2d, Result};
use std::path::{Path, PathBuf};

mod sizes;

pub use sizes::{param_counts, receptive_field};

/// The file names [`write_all`] writes, in the notes' order.
pub const FIGURES: [&str; 5] = [
    "conv1d_worked.png",
    "conv2d_worked.png",
    "conv_knobs.png",
    "receptive_field.png",
    "param_counts.png",
];

/// Writes every figure into `dir` (created if missing); returns the paths, in [`FIGURES`]' order.
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>> {
    let draw: [fn(&Path) -> Result<()>; 5] = [
        conv1d_worked,
        conv2d_worked,
        conv_knobs,
        receptive_field,
        param_counts,
    ];
    FIGURES
        .iter()
        .zip(draw)
        .map(|(name, f)| {
            let path = dir.join(name);
            f(&path)?;
            Ok(path)
        })
        .collect()
}

/// A cell `(row, col)` and the colour that marks it (and the window it comes from).
type Marked = ((usize, usize), (u8, u8, u8));

/// A list as the notes write it: `[9, 9, 11, 5, 2]`.
fn list(v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(|&x| format_value(x)).collect();
    format!("[{}]", items.join(", "))
}

/// `−2` with a real minus sign.
fn signed(m: isize) -> String {
    if m < 0 {
        format!("−{}", -m)
    } else {
        m.to_string()
    }
}

/// The notes' 1-D worked example `[3, 1, 2] ∗ [3, 2, 1]`: `f[m]`, then for each `n` the
/// flipped kernel `g[n−m]` slid under it with the products and their sum, then the output.
pub fn conv1d_worked(path: &Path) -> Result<()> {
    let (f, g) = (LECTURE_F, LECTURE_G);
    let t = lecture::convolution_table_1d(&f, &g);
    let mut cells = vec![t.f_row.iter().map(|&v| format_value(v)).collect::<Vec<_>>()];
    let mut labels = vec!["f[m]".to_string()];
    let mut notes = vec![String::new()];
    for s in &t.steps {
        cells.push(s.g_shifted.iter().map(|&v| format_value(v)).collect());
        labels.push(format!("g[{}−m]", s.n));
        notes.push(format!("n = {}:   {}", s.n, s.terms_text("×")));
    }
    let mut table = NumberGrid::new("", cells)
        .row_labels(labels)
        .corner("m")
        .col_labels(t.ms.iter().map(|&m| signed(m)).collect())
        .row_notes(notes)
        .highlight(Highlight::window(0, 0, 1, t.ms.len(), (120, 120, 120)).borderless());
    for (c, &m) in t.ms.iter().enumerate() {
        if m < 0 || m >= f.len() as isize {
            table = table.mute(0, c);
        }
    }
    for s in &t.steps {
        let colour = WINDOW_COLOURS[s.n % WINDOW_COLOURS.len()];
        let first = t.ms.iter().position(|&m| m == s.terms[0].0).unwrap_or(0);
        table = table.highlight(Highlight::window(s.n + 1, first, 1, s.terms.len(), colour));
        for c in (0..t.ms.len()).filter(|&c| c < first || c >= first + s.terms.len()) {
            table = table.mute(s.n + 1, c);
        }
    }
    let out = t.output();
    let mut output = NumberGrid::from_values("", std::slice::from_ref(&out))
        .row_labels(vec!["(f∗g)[n]".into()])
        .corner("n")
        .col_labels((0..out.len()).map(|n| n.to_string()).collect());
    for n in 0..out.len() {
        output = output.highlight(Highlight::cell(
            0,
            n,
            WINDOW_COLOURS[n % WINDOW_COLOURS.len()],
        ));
    }
    let flipped: Vec<f32> = g.iter().rev().copied().collect();
    let subtitle = format!(
        "(f ∗ g)[n] = Σₘ f[m]·g[n−m]: flip g ({} → {}), shift it right by n, multiply with f[m] and add up.\n\
         Outside the signals the values are 0 (grey). Each coloured window gives the output value of the same colour.",
        list(&g),
        list(&flipped)
    );
    plot_worked(
        path,
        &format!(
            "1-D convolution step by step: f = {}, g = {}",
            list(&f),
            list(&g)
        ),
        &subtitle,
        &[vec![Item::grid(table)], vec![Item::grid(output)]],
        &[format!("f ∗ g = {}", list(&out))],
    )?;
    Ok(())
}

/// The sum of the products as three lines, one per kernel row: `3×0 + 3×1 + 2×2` …
fn products_by_row(terms: &[(f32, f32)], kw: usize, total: f32) -> String {
    let rows: Vec<String> = terms
        .chunks(kw.max(1))
        .map(|r| {
            r.iter()
                .map(|&(x, k)| format!("{}×{}", format_value(x), format_value(k)))
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .collect();
    format!("{}\n= {}", rows.join("\n+ "), format_value(total))
}

/// The 5×5 input with the window of output `at` (a `kh × kw` kernel, `padding`, `stride`,
/// `dilation`) marked: the input is drawn zero-padded by `padding` (padding in grey), each
/// cell the window reads tinted in `colour` with the kernel weight in its corner.
fn input_with_window(
    title: &str,
    padding: usize,
    windows: &[Marked],
    stride: usize,
    dilation: usize,
    weights: bool,
) -> NumberGrid {
    let x = lecture::to_rows(&LECTURE_INPUT);
    let (h, w) = (x.len(), x[0].len());
    let p = padding as isize;
    let padded: Vec<Vec<f32>> = (-p..h as isize + p)
        .map(|r| {
            (-p..w as isize + p)
                .map(|c| {
                    let inside = r >= 0 && c >= 0 && (r as usize) < h && (c as usize) < w;
                    if inside {
                        x[r as usize][c as usize]
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let mut g = NumberGrid::from_values(title, &padded);
    for r in 0..padded.len() {
        for c in 0..padded[0].len() {
            if r < padding || c < padding || r >= h + padding || c >= w + padding {
                g = g.mute(r, c);
            }
        }
    }
    let k = &LECTURE_KERNEL;
    for &(at, colour) in windows {
        let taps = lecture::window_taps(at, (3, 3), padding, stride, dilation);
        let (r0, c0) = (taps[0].0 + p, taps[0].1 + p);
        if dilation == 1 {
            g = g.highlight(Highlight::window(r0 as usize, c0 as usize, 3, 3, colour));
        } else {
            let span = effective_kernel(3, dilation);
            let (r0, c0) = (r0 as usize, c0 as usize);
            g = g.highlight(Highlight::window(r0, c0, span, span, colour).unfilled());
            for &(r, c) in &taps {
                let (r, c) = ((r + p) as usize, (c + p) as usize);
                g = g.highlight(Highlight::window(r, c, 1, 1, colour).borderless());
            }
        }
        if weights {
            for (&(r, c), kv) in taps.iter().zip(k.iter().flatten()) {
                g = g.note(
                    (r + p) as usize,
                    (c + p) as usize,
                    format!("×{}", format_value(*kv)),
                );
            }
        }
    }
    g
}

/// The notes' 2-D example: the 5×5 input with the 3×3 window at two positions, the kernel,
/// and the 3×3 output with the cells those windows produce, each with its sum of products.
pub fn conv2d_worked(path: &Path) -> Result<()> {
    let x = lecture::to_rows(&LECTURE_INPUT);
    let k = lecture::to_rows(&LECTURE_KERNEL);
    let y = lecture::correlate_2d(&x, &k, 0, 1, 1);
    let mut rows = Vec::new();
    for (i, at) in [(0, 0), (1, 2)].into_iter().enumerate() {
        let colour = WINDOW_COLOURS[i];
        let terms = lecture::correlate_2d_terms(&x, &k, at, 0, 1, 1);
        let input = input_with_window(
            &format!("input x (5×5), window at ({}, {})", at.0, at.1),
            0,
            &[(at, colour)],
            1,
            1,
            true,
        );
        let kernel = NumberGrid::from_values("kernel k (3×3)", &k)
            .highlight(Highlight::window(0, 0, 3, 3, colour).borderless());
        let output = NumberGrid::from_values(format!("output y ({}×{})", y.len(), y[0].len()), &y)
            .highlight(Highlight::cell(at.0, at.1, colour))
            .caption(format!(
                "y[{}, {}] = {}",
                at.0,
                at.1,
                products_by_row(&terms, 3, y[at.0][at.1])
            ));
        rows.push(vec![
            Item::grid(input),
            Item::text("∗"),
            Item::grid(kernel),
            Item::text("="),
            Item::grid(output),
        ]);
    }
    let out = conv_output_size(5, 3, 0, 1, 1).unwrap_or(0);
    plot_worked(
        path,
        "2-D convolution on the notes' 5×5 input and 3×3 kernel",
        "y[i, j] = Σₘ Σₙ x[i+m, j+n]·k[m, n]: the kernel slides over the input without flipping (cross-correlation,\n\
         what CNN layers compute). Small red numbers: the kernel weight each input value is multiplied by.",
        &rows,
        &[format!("output size: (5 − 3)/1 + 1 = {out}, so the 3×3 kernel fits in {out}×{out} positions")],
    )?;
    Ok(())
}

/// `(1, 1, 5, 5)` tensor of the notes' input.
fn input_tensor() -> Result<Tensor> {
    Ok(Tensor::new(&LECTURE_INPUT, &Device::Cpu)?.reshape((1, 1, 5, 5))?)
}

fn output_grid(title: String, y: &[Vec<f32>], cells: &[Marked]) -> NumberGrid {
    cells
        .iter()
        .fold(NumberGrid::from_values(title, y), |g, &(at, colour)| {
            g.highlight(Highlight::cell(at.0, at.1, colour))
        })
}

/// Padding `(k−1)/2`, stride 2, dilation 2, and 2×2 max / average pooling on the notes' 5×5
/// example: each knob's input with its window(s) and the output, its shape in the title.
pub fn conv_knobs(path: &Path) -> Result<()> {
    let x = lecture::to_rows(&LECTURE_INPUT);
    let k = lecture::to_rows(&LECTURE_KERNEL);
    let (c0, c1) = (WINDOW_COLOURS[0], WINDOW_COLOURS[1]);
    let arrow = || Item::text("→");
    let shape = |y: &[Vec<f32>]| format!("{}×{}", y.len(), y.first().map_or(0, Vec::len));

    // padding (k − 1)/2: the output keeps the input's 5×5
    let p = same_padding(3, 1).unwrap_or(1);
    let padded = lecture::correlate_2d(&x, &k, p, 1, 1);
    let padding = [
        Item::grid(input_with_window(
            &format!(
                "padding p = (k − 1)/2 = {p}\ninput zero-padded to {0}×{0}",
                5 + 2 * p
            ),
            p,
            &[((0, 0), c0)],
            1,
            1,
            true,
        )),
        arrow(),
        Item::grid(output_grid(
            format!("output {}\nsame size as the input", shape(&padded)),
            &padded,
            &[((0, 0), c0)],
        )),
    ];

    // stride 2: the window jumps two cells
    let strided = lecture::correlate_2d(&x, &k, 0, 2, 1);
    let s_out = conv_output_size(5, 3, 0, 2, 1).unwrap_or(0);
    let stride = [
        Item::grid(
            input_with_window(
                "stride s = 2\nthe window moves 2 cells",
                0,
                &[((0, 0), c0), ((0, 1), c1)],
                2,
                1,
                false,
            )
            .caption("the middle column is read\nby both windows"),
        ),
        arrow(),
        Item::grid(output_grid(
            format!("output {}\n⌊(5 − 3)/2⌋ + 1 = {s_out}", shape(&strided)),
            &strided,
            &[((0, 0), c0), ((0, 1), c1)],
        )),
    ];

    // dilation 2: the 3×3 kernel spread over 5×5
    let dilated = lecture::correlate_2d(&x, &k, 0, 1, 2);
    let span = effective_kernel(3, 2);
    let dilation = [
        Item::grid(input_with_window(
            &format!("dilation d = 2\n3×3 kernel spread over {span}×{span}"),
            0,
            &[((0, 0), c0)],
            1,
            2,
            true,
        )),
        arrow(),
        Item::grid(output_grid(
            format!("output {}\nspan 2·(3 − 1) + 1 = {span}", shape(&dilated)),
            &dilated,
            &[((0, 0), c0)],
        )),
    ];

    // 2×2 pooling, stride 2: four windows, the last row and column left over
    let pool_pair = |pool: Pool2d, name: &str, what: &str| -> Result<[Item; 3]> {
        let y: Vec<Vec<f32>> = pool
            .forward(&input_tensor()?)?
            .squeeze(0)?
            .squeeze(0)?
            .to_vec2()?;
        let (oh, ow) = (y.len(), y.first().map_or(0, Vec::len));
        let left = oh * pool.stride; // the first row (and column) no window reaches
        let mut input = NumberGrid::from_values(format!("{name} 2×2, stride 2\n{what}"), &x)
            .caption(format!("row and column {left} (the last) are left over"));
        let mut cells = Vec::new();
        for i in 0..oh {
            for j in 0..ow {
                let colour = WINDOW_COLOURS[(i * ow + j) % WINDOW_COLOURS.len()];
                let (r, c) = (i * pool.stride, j * pool.stride);
                input = input.highlight(Highlight::window(r, c, pool.kernel, pool.kernel, colour));
                cells.push(((i, j), colour));
            }
        }
        for r in 0..5 {
            for c in 0..5 {
                if r >= oh * pool.stride || c >= ow * pool.stride {
                    input = input.mute(r, c);
                }
            }
        }
        let out = conv_output_size(5, pool.kernel, 0, pool.stride, 1).unwrap_or(0);
        Ok([
            Item::grid(input),
            arrow(),
            Item::grid(output_grid(
                format!("output {oh}×{ow}\n⌊(5 − 2)/2⌋ + 1 = {out}"),
                &y,
                &cells,
            )),
        ])
    };
    let max = pool_pair(Pool2d::max(2), "max-pooling", "largest value per window")?;
    let avg = pool_pair(Pool2d::avg(2), "average pooling", "mean per window")?;

    let row = |parts: Vec<[Item; 3]>| -> Vec<Item> {
        let mut out = Vec::new();
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0 {
                out.push(Item::Space(36));
            }
            out.extend(p);
        }
        out
    };
    plot_worked(
        path,
        "Padding, stride, dilation and pooling on the notes' 5×5 input",
        "The 3×3 kernel is the notes' k = [[0, 1, 2], [2, 2, 0], [0, 1, 2]]; output size ⌊(in + 2p − d(k − 1) − 1)/s⌋ + 1.\n\
         Coloured windows produce the output cells of the same colour; grey: zero padding or cells no window reaches.",
        &[row(vec![padding, stride]), row(vec![dilation, max, avg])],
        &[],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sizes::{mnist_spatial, rf_sizes};
    use super::*;

    fn non_empty_png(path: &Path) {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            bytes.len() > 1000,
            "{}: {} bytes",
            path.display(),
            bytes.len()
        );
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    }

    #[test]
    fn figures_conv1d_worked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        conv1d_worked(&p).unwrap();
        non_empty_png(&p);
    }

    #[test]
    fn figures_conv2d_worked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        conv2d_worked(&p).unwrap();
        non_empty_png(&p);
    }

    #[test]
    fn figures_conv_knobs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        conv_knobs(&p).unwrap();
        non_empty_png(&p);
    }

    #[test]
    fn figures_receptive_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        receptive_field(&p).unwrap();
        non_empty_png(&p);
        // the MnistNet bars are the summary's: 3, 5, 6
        assert_eq!(rf_sizes(&mnist_spatial()).unwrap(), vec![3., 5., 6.]);
    }

    #[test]
    fn figures_param_counts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        param_counts(&p).unwrap();
        non_empty_png(&p);
    }

    #[test]
    fn figures_write_all() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_all(&dir.path().join("lecture")).unwrap();
        assert_eq!(paths.len(), FIGURES.len());
        for p in &paths {
            non_empty_png(p);
        }
    }
}
