//! The lecture's convolution examples, computed with candle's operators.
//!
//! `cargo run --release --example conv_basics`
//!
//! Each printed result is also checked in `crates/neka-cnn/tests/lecture.rs`.

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use neka_cnn::arith::{conv_output_size, same_padding, ReceptiveField};
use neka_cnn::lecture::{self, LECTURE_INPUT, LECTURE_KERNEL};
use neka_cnn::{conv2d, Conv2dConfig, LayerSpec, Padding, Pool2d};

fn t2(a: &[[f32; 5]; 5]) -> Result<Tensor> {
    Ok(Tensor::new(a, &Device::Cpu)?.reshape((1, 1, 5, 5))?)
}

fn show(name: &str, t: &Tensor) -> Result<()> {
    let t = t.squeeze(0)?.squeeze(0)?;
    println!("{name} ({}x{}):", t.dim(0)?, t.dim(1)?);
    for row in t.to_vec2::<f32>()? {
        println!("   {row:?}");
    }
    Ok(())
}

fn main() -> Result<()> {
    neka::alloc::keep_freed_memory();
    let dev = Device::Cpu;
    println!("== 1-D convolution: (f*g)[n] = sum_m f[m] g[n-m]");
    let f = [3f32, 1., 2.];
    let g = [3f32, 2., 1.];
    println!(
        "by the definition:                f*g = {:?}",
        lecture::convolve_full_1d(&f, &g)
    );
    // candle's conv1d (like every DL library) slides the kernel WITHOUT flipping it:
    let ft = Tensor::new(&f, &dev)?.reshape((1, 1, 3))?;
    let gt = Tensor::new(&g, &dev)?.reshape((1, 1, 3))?;
    let corr = ft.conv1d(&gt, 2, 1, 1, 1)?; // padding k-1 = 2 gives the "full" length 5
    println!(
        "candle conv1d (cross-correlation): {:?}",
        corr.flatten_all()?.to_vec1::<f32>()?
    );
    let flipped = Tensor::new(&[1f32, 2., 3.], &dev)?.reshape((1, 1, 3))?;
    let conv = ft.conv1d(&flipped, 2, 1, 1, 1)?;
    println!(
        "candle conv1d with flipped kernel: {:?}  = the convolution",
        conv.flatten_all()?.to_vec1::<f32>()?
    );

    println!("\n== 2-D: 5x5 input, 3x3 kernel (cross-correlation, as CNN layers compute it)");
    let x = t2(&LECTURE_INPUT)?;
    let k = Tensor::new(&LECTURE_KERNEL, &dev)?.reshape((1, 1, 3, 3))?;
    show(
        "no padding: out = (5 - 3)/1 + 1 = 3",
        &x.conv2d(&k, 0, 1, 1, 1)?,
    )?;
    let p = same_padding(3, 1).unwrap();
    show(
        &format!("padding (k-1)/2 = {p}: out = 5 (\"same\")"),
        &x.conv2d(&k, p, 1, 1, 1)?,
    )?;
    show(
        "stride 2: out = floor((5 - 3)/2) + 1 = 2",
        &x.conv2d(&k, 0, 2, 1, 1)?,
    )?;
    show(
        "dilation 2: effective kernel 2(3-1)+1 = 5, out = 1",
        &x.conv2d(&k, 0, 1, 2, 1)?,
    )?;

    println!("\n== pooling 2x2, stride 1, on the same input");
    show("max pool", &Pool2d::max(2).stride(1).forward(&x)?)?;
    show("average pool", &Pool2d::avg(2).stride(1).forward(&x)?)?;

    println!("\n== receptive field of one output unit (in input pixels)");
    let mut rf = ReceptiveField::default();
    for depth in 1..=4 {
        rf = rf.after(3, 1, 1);
        println!("   {depth} stacked 3x3 convs: {0}x{0}", rf.size);
    }
    let rf = ReceptiveField::default()
        .after(3, 1, 1)
        .after(2, 2, 1)
        .after(3, 1, 1);
    println!(
        "   conv3, max-pool 2, conv3: {0}x{0} (pooling doubles the step of the next layer)",
        rf.size
    );
    let rf = ReceptiveField::default()
        .after(3, 1, 1)
        .after(3, 1, 2)
        .after(3, 1, 4);
    println!("   3x3 convs with dilation 1, 2, 4: {0}x{0}", rf.size);
    let rf = ReceptiveField::default().after(3, 2, 1).after(3, 2, 1);
    println!("   two 3x3 convs with stride 2: {0}x{0}", rf.size);

    println!("\n== 1x1 convolution: 64 channels -> 16, then a 3x3 conv to 64, on 28x28");
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
    println!(
        "   direct 3x3:        {} params, {} MACs",
        direct.total_params(),
        direct.total_macs()
    );
    println!(
        "   1x1 then 3x3:      {} params, {} MACs",
        bottleneck.total_params(),
        bottleneck.total_macs()
    );
    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, &dev);
    let one = neka_cnn::conv1x1(64, 16, vb.pp("c"))?;
    let y = one.forward(&Tensor::zeros((1, 64, 28, 28), DType::F32, &dev)?)?;
    println!(
        "   shape (1, 64, 28, 28) -> {:?}: channels change, H and W do not",
        y.dims()
    );

    println!("\n== parameter sharing on a 28x28 image, 32 output maps");
    let conv = Conv2dConfig::new(1, 32, 3);
    let (oh, ow) = conv.output_size((28, 28)).unwrap();
    let dense = neka_cnn::arith::linear_params(28 * 28, 32 * oh * ow, true);
    println!(
        "   conv 3x3:  {} parameters (shared by all {} positions)",
        conv.num_params(),
        oh * ow
    );
    println!(
        "   dense layer to the same {}x{}x{} output: {} parameters",
        32, oh, ow, dense
    );
    let _ = conv2d(conv, vb.pp("conv"))?;
    println!("\n== output size formula: out = floor((in + 2p - d(k-1) - 1)/s) + 1");
    for (i, k, p, s, d) in [
        (28, 3, 0, 1, 1),
        (28, 5, 2, 1, 1),
        (28, 3, 1, 2, 1),
        (28, 3, 2, 1, 2),
    ] {
        println!(
            "   in {i}, k {k}, p {p}, s {s}, d {d} -> {}",
            conv_output_size(i, k, p, s, d).unwrap()
        );
    }
    Ok(())
}
