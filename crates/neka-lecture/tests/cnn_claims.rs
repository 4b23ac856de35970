//! The lecture notes' claims about CNNs, checked on real convolutions (issue 16, §3):
//!
//! - Padding: "padding의 크기는 (커널 길이 − 1)/2 (소수면 내림)" keeps the output size — for odd
//!   kernels; rounding down for even ones loses a row and a column;
//! - Receptive field: each way the notes list to grow it (커널의 크기를 키운다: a bigger kernel,
//!   a deeper stack, dilated convolution; 이미지의 크기를 줄인다: stride, pooling) does, by the
//!   amount [`ReceptiveField::after`] computes — confirmed by back-propagating from one output
//!   pixel and finding the input pixels that receive a gradient;
//! - 1×1 convolution: "연산량을 감소시킬 수 있음" — a 1×1 bottleneck cuts the
//!   multiply-accumulates of a 3×3 block by the factor [`arith::conv2d_macs`] states (counted
//!   by running the convolution), "채널수를 마음대로 결정할 수 있음" and, followed by a ReLU,
//!   "모델을 비선형적으로".
//!
//! Already proven exactly in `tests/lecture.rs` and not repeated here: `Padding::Same` on the
//! notes' 5×5 example with its 3×3 kernel (`two_d_examples_match_the_notes_and_the_reference`),
//! and the MAC formulas of the 64 → 16 → 64 bottleneck
//! (`one_by_one_conv_cuts_macs_and_conv_shares_parameters`).
//!
//! [`ReceptiveField::after`]: neka_cnn::arith::ReceptiveField::after

use candle_core::{DType, Device, Module, Tensor, Var};
use draws::gaussian;
use neka_cnn::arith::{self, conv_output_size, ReceptiveField};
use neka_cnn::{conv2d, Conv2d, Conv2dConfig, LayerSpec, Padding, Pool2d};
use neka_lecture::conv::correlate_2d;

type R = Result<(), Box<dyn std::error::Error>>;

const DEV: Device = Device::Cpu;

/// Deterministic N(0, 1) draws without a rand dependency (SplitMix64 + Box–Muller).
mod draws {
    pub fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1234_5678;
        let mut u = move || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (a, b) = (u(), u());
                ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
            })
            .collect()
    }
}

/// A conv layer under its own varmap, with `weight` set to `w` (or left at PyTorch's init).
fn conv_with(cfg: Conv2dConfig, w: Option<Tensor>) -> candle_core::Result<Conv2d> {
    let mut varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, &DEV);
    let conv = conv2d(cfg, vb.pp("c")).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    if let Some(w) = w {
        varmap.set_one("c.weight", w)?;
    }
    Ok(conv)
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap()
}

#[test]
fn padding_k_minus_1_over_2_keeps_the_size_for_odd_kernels() -> R {
    for n in [9usize, 10] {
        let xv = gaussian(n * n, n as u64);
        let x = Tensor::from_vec(xv.clone(), (1, 1, n, n), &DEV)?;
        let x_rows: Vec<Vec<f32>> = xv.chunks(n).map(<[f32]>::to_vec).collect();
        for k in [1usize, 3, 5, 7] {
            let p = (k - 1) / 2; // the notes' formula, written out (not Padding::Same)
            let kv = gaussian(k * k, 100 + k as u64);
            let w = Tensor::from_vec(kv.clone(), (1, 1, k, k), &DEV)?;
            let cfg = Conv2dConfig::new(1, 1, k)
                .padding(Padding::uniform(p))
                .bias(false);
            let y = conv_with(cfg, Some(w.clone()))?.forward(&x)?;
            assert_eq!(y.dims(), &[1, 1, n, n], "k {k}, p {p}, input {n}");
            // a real convolution: the same numbers as the reference cross-correlation
            let k_rows: Vec<Vec<f32>> = kv.chunks(k).map(<[f32]>::to_vec).collect();
            let want = correlate_2d(&x_rows, &k_rows, p, 1, 1);
            for (a, b) in rows(&y).iter().flatten().zip(want.iter().flatten()) {
                assert!((a - b).abs() < 1e-5, "k {k}: {a} vs {b}");
            }
            // without padding the output shrinks by k − 1
            let valid = conv_with(Conv2dConfig::new(1, 1, k).bias(false), Some(w))?.forward(&x)?;
            assert_eq!(valid.dims(), &[1, 1, n + 1 - k, n + 1 - k]);
            println!(
                "k = {k}: padding {p}: {n}x{n} -> {n}x{n}; no padding: {0}x{0}",
                n + 1 - k
            );
        }
        // even k: (k − 1)/2 rounded down ("소수면 내림") is one short: the output loses 1
        for k in [2usize, 4, 6] {
            let p = (k - 1) / 2;
            let y = conv_with(
                Conv2dConfig::new(1, 1, k).padding(Padding::uniform(p)),
                None,
            )?
            .forward(&x)?;
            assert_eq!(y.dims(), &[1, 1, n - 1, n - 1], "even k {k}");
            assert_eq!(conv_output_size(n, k, p, 1, 1), Some(n - 1));
        }
    }
    Ok(())
}

/// The layers of a receptive-field experiment.
#[derive(Clone, Copy)]
enum L {
    /// kernel, stride, dilation
    Conv(usize, usize, usize),
    /// average pooling: kernel = stride
    AvgPool(usize),
}

fn specs(layers: &[L]) -> Vec<(&'static str, LayerSpec)> {
    layers
        .iter()
        .map(|l| match *l {
            L::Conv(k, s, d) => (
                "conv",
                LayerSpec::Conv(Conv2dConfig::new(1, 1, k).stride(s).dilation(d)),
            ),
            L::AvgPool(k) => ("pool", LayerSpec::Pool(Pool2d::avg(k))),
        })
        .collect()
}

/// The field measured: runs the layers (convolutions with all-ones kernels, no bias, average
/// pooling — every path has a positive weight) on a 41×41 input, back-propagates from the
/// centre output pixel and returns (side of the box of input pixels with a non-zero gradient,
/// number of such pixels).
fn measured_field(layers: &[L]) -> candle_core::Result<(usize, usize, usize)> {
    let n = 41;
    let x = Var::from_tensor(&Tensor::ones((1, 1, n, n), DType::F32, &DEV)?)?;
    let mut y = x.as_tensor().clone();
    for l in layers {
        y = match *l {
            L::Conv(k, s, d) => {
                let ones = Tensor::ones((1, 1, k, k), DType::F32, &DEV)?;
                let cfg = Conv2dConfig::new(1, 1, k).stride(s).dilation(d).bias(false);
                conv_with(cfg, Some(ones))?.forward(&y)?
            }
            L::AvgPool(k) => Pool2d::avg(k).forward(&y)?,
        };
    }
    let (_, _, oh, ow) = y.dims4()?;
    let pixel = y.narrow(2, oh / 2, 1)?.narrow(3, ow / 2, 1)?.sum_all()?;
    let g = pixel.backward()?;
    let g = rows(g.get(x.as_tensor()).expect("the input gets a gradient"));
    let hit: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .filter(|&(i, j)| g[i][j] != 0.0)
        .collect();
    let span = |f: fn(&(usize, usize)) -> usize| {
        hit.iter().map(f).max().unwrap() - hit.iter().map(f).min().unwrap() + 1
    };
    Ok((span(|p| p.0), span(|p| p.1), hit.len()))
}

/// The field computed by the crate: `summarize` (which applies `ReceptiveField::after` layer
/// by layer) and `ReceptiveField::after` directly.
fn computed_field(layers: &[L]) -> usize {
    let s = neka_cnn::summarize((1, 41, 41), &specs(layers)).unwrap();
    let (h, w) = s.layers.last().unwrap().receptive_field.unwrap();
    let direct = layers
        .iter()
        .fold(ReceptiveField::default(), |rf, l| match *l {
            L::Conv(k, st, d) => rf.after(k, st, d),
            L::AvgPool(k) => rf.after(k, k, 1),
        });
    assert_eq!((h, w), (direct.size, direct.size));
    h
}

#[test]
fn each_way_of_growing_the_receptive_field_does() -> R {
    use L::{AvgPool, Conv};
    let c3 = Conv(3, 1, 1);
    // (the notes' way, layers, receptive field)
    let cases: [(&str, Vec<L>, usize); 11] = [
        ("one 3x3", vec![c3], 3),
        ("bigger kernel: 5x5", vec![Conv(5, 1, 1)], 5),
        ("bigger kernel: 7x7", vec![Conv(7, 1, 1)], 7),
        ("deeper: 2 x 3x3", vec![c3, c3], 5),
        ("deeper: 3 x 3x3", vec![c3, c3, c3], 7),
        ("deeper: 4 x 3x3", vec![c3, c3, c3, c3], 9),
        ("dilation: 3x3, 3x3 d2", vec![c3, Conv(3, 1, 2)], 7),
        (
            "dilation: 3x3 d1, d2, d4",
            vec![c3, Conv(3, 1, 2), Conv(3, 1, 4)],
            15,
        ),
        ("stride: 3x3 s2, 3x3", vec![Conv(3, 2, 1), c3], 7),
        ("pooling: 3x3, avg-pool 2, 3x3", vec![c3, AvgPool(2), c3], 8),
        (
            "stride + pooling: 3x3 s2, pool 2, 3x3",
            vec![Conv(3, 2, 1), AvgPool(2), c3],
            13,
        ),
    ];
    let mut field = std::collections::HashMap::new();
    for (name, layers, want) in &cases {
        let computed = computed_field(layers);
        let (h, w, count) = measured_field(layers)?;
        println!("{name:40} computed {computed:2}, measured {h}x{w} ({count} pixels)");
        assert_eq!(computed, *want, "{name}: arithmetic");
        assert_eq!((h, w), (*want, *want), "{name}: measured box");
        // no holes: every pixel of the box reaches the output pixel
        assert_eq!(count, want * want, "{name}: pixels with a gradient");
        field.insert(*name, *want);
    }
    // Each way grows the field over its baseline: one 3x3, or two 3x3 (the dilated, strided
    // and pooled stacks have the same 18 weights as two plain 3x3).
    let base = field["one 3x3"];
    assert!(field["bigger kernel: 5x5"] > base && field["bigger kernel: 7x7"] > base);
    assert!(field["deeper: 2 x 3x3"] > base);
    let two = field["deeper: 2 x 3x3"];
    assert!(field["dilation: 3x3, 3x3 d2"] > two);
    assert!(field["stride: 3x3 s2, 3x3"] > two);
    assert!(field["pooling: 3x3, avg-pool 2, 3x3"] > two);
    // Stride and pooling grow the field of the layers *after* them (they multiply the jump
    // between neighbouring units); a strided 3x3 alone still sees 3x3.
    assert_eq!(measured_field(&[Conv(3, 2, 1)])?, (3, 3, 9));
    // Max pooling has the field of average pooling (the same windows; its gradient reaches
    // only each window's maximum, so the count above uses average pooling).
    let max = neka_cnn::summarize(
        (1, 41, 41),
        &[
            ("conv", LayerSpec::Conv(Conv2dConfig::new(1, 1, 3))),
            ("pool", LayerSpec::Pool(Pool2d::max(2))),
            ("conv", LayerSpec::Conv(Conv2dConfig::new(1, 1, 3))),
        ],
    )?;
    assert_eq!(max.layers[2].receptive_field, Some((8, 8)));
    // A lone dilated 3x3 spans 5x5 but sees only 9 of its pixels (holes between the taps).
    let (h, w, count) = measured_field(&[Conv(3, 1, 2)])?;
    assert_eq!((h, w, count), (5, 5, 9));
    assert_eq!(computed_field(&[Conv(3, 1, 2)]), 5);
    Ok(())
}

/// `y[o, i, j] = Σ_c Σ_m Σ_n w[o, c, m, n] · x[c, i + m − p, j + n − p]` (stride 1), counting
/// every multiply-accumulate it performs (taps that fall on the zero padding count, as in
/// [`arith::conv2d_macs`]).
fn conv_counting(
    x: &[f32],
    (c_in, h, w_): (usize, usize, usize),
    wt: &[f32],
    c_out: usize,
    k: usize,
    p: usize,
) -> (Vec<f32>, u64) {
    let (oh, ow) = (h + 2 * p + 1 - k, w_ + 2 * p + 1 - k);
    let mut y = vec![0f32; c_out * oh * ow];
    let mut macs = 0u64;
    for o in 0..c_out {
        for i in 0..oh {
            for j in 0..ow {
                let mut s = 0f32;
                for c in 0..c_in {
                    for m in 0..k {
                        for n in 0..k {
                            let (r, q) =
                                ((i + m) as isize - p as isize, (j + n) as isize - p as isize);
                            let xv = if r < 0 || q < 0 || r as usize >= h || q as usize >= w_ {
                                0.0
                            } else {
                                x[(c * h + r as usize) * w_ + q as usize]
                            };
                            s += wt[((o * c_in + c) * k + m) * k + n] * xv;
                            macs += 1;
                        }
                    }
                }
                y[(o * oh + i) * ow + j] = s;
            }
        }
    }
    (y, macs)
}

#[test]
fn one_by_one_bottleneck_cuts_the_macs_by_the_stated_factor() -> R {
    let (c, mid, n) = (64usize, 16usize, 8usize);
    let x = gaussian(c * n * n, 1);
    let w3 = gaussian(c * c * 9, 2);
    let w1 = gaussian(mid * c, 3);
    let w3b = gaussian(c * mid * 9, 4);
    // direct: 64 → 64, 3x3 (padding 1)
    let (y_direct, macs_direct) = conv_counting(&x, (c, n, n), &w3, c, 3, 1);
    // bottleneck: 64 → 16 by 1x1, then 16 → 64 by 3x3
    let (z, m1) = conv_counting(&x, (c, n, n), &w1, mid, 1, 0);
    let (y_bottle, m2) = conv_counting(&z, (mid, n, n), &w3b, c, 3, 1);
    let macs_bottle = m1 + m2;
    // the counting loops are real convolutions: the crate's layers give the same outputs
    let xt = Tensor::from_vec(x, (1, c, n, n), &DEV)?;
    let same = |cin, cout, k| {
        Conv2dConfig::new(cin, cout, k)
            .padding(Padding::Same)
            .bias(false)
    };
    let conv = |cfg, w: Vec<f32>, k| -> candle_core::Result<Conv2d> {
        let cfg: Conv2dConfig = cfg;
        let shape = (cfg.out_channels, cfg.in_channels, k, k);
        conv_with(cfg, Some(Tensor::from_vec(w, shape, &DEV)?))
    };
    let direct = conv(same(c, c, 3), w3, 3)?.forward(&xt)?;
    let bottle =
        conv(same(mid, c, 3), w3b, 3)?.forward(&conv(same(c, mid, 1), w1, 1)?.forward(&xt)?)?;
    for (got, want) in [(direct, y_direct), (bottle, y_bottle)] {
        assert_eq!(got.dims(), &[1, c, n, n]);
        for (a, b) in got.flatten_all()?.to_vec1::<f32>()?.iter().zip(&want) {
            assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
    // the counts are the crate's formula ...
    assert_eq!(macs_direct, arith::conv2d_macs(c, c, (3, 3), 1, (n, n)));
    assert_eq!(
        macs_bottle,
        arith::conv2d_macs(c, mid, (1, 1), 1, (n, n))
            + arith::conv2d_macs(mid, c, (3, 3), 1, (n, n))
    );
    // ... and the factor is 9·C / (C_mid·(1 + 9)) = 9·64 / (16·10) = 3.6, whatever the image
    // size: the 28×28 of tests/lecture.rs gives the same ratio.
    println!(
        "3x3 block on {c}x{n}x{n}: {macs_direct} MACs; 1x1 to {mid} first: {macs_bottle} MACs; \
         factor {:.3}",
        macs_direct as f64 / macs_bottle as f64
    );
    assert_eq!(macs_direct * 10, macs_bottle * 36);
    let big = |layers: &[(&str, LayerSpec)]| neka_cnn::summarize((c, 28, 28), layers).unwrap();
    let d28 = big(&[("c", LayerSpec::Conv(same(c, c, 3)))]).total_macs();
    let b28 = big(&[
        ("r", LayerSpec::Conv(same(c, mid, 1))),
        ("c", LayerSpec::Conv(same(mid, c, 3))),
    ])
    .total_macs();
    assert_eq!(d28 * 10, b28 * 36);
    Ok(())
}

#[test]
fn one_by_one_conv_is_a_per_pixel_dense_layer_and_relu_makes_it_nonlinear() -> R {
    let (cin, cout, n) = (6usize, 3usize, 5usize);
    let w = gaussian(cout * cin, 7);
    let conv = conv_with(
        Conv2dConfig::new(cin, cout, 1).bias(false),
        Some(Tensor::from_vec(w.clone(), (cout, cin, 1, 1), &DEV)?),
    )?;
    let a = Tensor::from_vec(gaussian(cin * n * n, 8), (1, cin, n, n), &DEV)?;
    let b = Tensor::from_vec(gaussian(cin * n * n, 9), (1, cin, n, n), &DEV)?;
    // the channel count is the layer's choice (6 → 3), the image size is untouched, and each
    // output pixel is W (3×6) times that pixel's 6 channels
    let y = conv.forward(&a)?;
    assert_eq!(y.dims(), &[1, cout, n, n]);
    let (yv, av) = (
        y.flatten_all()?.to_vec1::<f32>()?,
        a.flatten_all()?.to_vec1::<f32>()?,
    );
    for o in 0..cout {
        for px in 0..n * n {
            let want: f32 = (0..cin).map(|c| w[o * cin + c] * av[c * n * n + px]).sum();
            assert!((yv[o * n * n + px] - want).abs() < 1e-5);
        }
    }
    // alone it is linear: conv(a + b) = conv(a) + conv(b) ...
    let gap = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| -> candle_core::Result<f32> {
        let lhs = f(&(&a + &b)?)?;
        let rhs = (f(&a)? + f(&b)?)?;
        (lhs - rhs)?.abs()?.max_all()?.to_scalar::<f32>()
    };
    let linear = gap(&|x| conv.forward(x))?;
    // ... followed by a ReLU it is not
    let nonlinear = gap(&|x| conv.forward(x)?.relu())?;
    println!("|f(a+b) − f(a) − f(b)|: 1x1 conv {linear:.1e}, 1x1 conv + ReLU {nonlinear:.2}");
    assert!(linear < 1e-5);
    assert!(nonlinear > 0.1);
    Ok(())
}
