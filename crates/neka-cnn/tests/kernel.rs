//! neka's CPU kernels (convolution + fused ReLU, max pooling, fused cross-entropy) against
//! their plain candle-op twins, PyTorch (fixtures from `scripts/make_kernel_fixtures.py`) and
//! finite differences.

use candle_core::{CustomOp3, DType, Device, Module, Tensor, Var};
use candle_nn::VarMap;
use neka_cnn::kernels::{self as kernel, Conv2dOp, MaxPool2dOp};
use neka_cnn::{conv2d, Conv2dConfig, Padding, Pool2d};
use neka_common::kernels::{Fused, KernelPath};
use neka_testing::{cotangent, gradient_check, max_abs_diff, rel_diff, vjp, vjp_pair};
use std::collections::HashMap;
use std::path::Path;

type R = Result<(), Box<dyn std::error::Error>>;

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs_diff(a, b).unwrap()
}

/// Relative error scale: max |a − b| / max(1, max |b|).
fn rel(a: &Tensor, b: &Tensor) -> f64 {
    rel_diff(a, b, 1.0).unwrap()
}

fn fixtures() -> HashMap<String, Tensor> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kernels.safetensors");
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

/// The shapes the issue asks for: MnistNet's and LeNet-5's layers, padding 1 and 2, stride 2,
/// dilation 2, a non-square kernel, batch 1 and batches that do not split evenly over threads.
/// Strided shapes are ones where `(H + 2p − d(k−1) − 1)` is a multiple of the stride: for the
/// others candle's conv2d backward returns an input gradient of the wrong shape (its
/// `conv_transpose2d` has no output padding), so those are checked against PyTorch only.
fn configs() -> Vec<(Conv2dConfig, usize, (usize, usize))> {
    vec![
        (Conv2dConfig::new(1, 32, 3), 3, (28, 28)),
        (Conv2dConfig::new(32, 64, 3), 2, (26, 26)),
        (
            Conv2dConfig::new(1, 6, 5).padding(Padding::uniform(2)),
            5,
            (28, 28),
        ),
        (Conv2dConfig::new(6, 16, 5), 7, (14, 14)),
        (
            Conv2dConfig::new(3, 4, 3).padding(Padding::Same),
            1,
            (9, 11),
        ),
        (
            Conv2dConfig::new(2, 3, 5)
                .padding(Padding::uniform(2))
                .stride(2),
            3,
            (9, 11),
        ),
        (
            Conv2dConfig::new(2, 3, 3)
                .dilation(2)
                .padding(Padding::uniform(2)),
            5,
            (12, 12),
        ),
        (
            Conv2dConfig::new(3, 5, 1)
                .kernel(3, 2)
                .padding(Padding::Explicit(1, 0)),
            7,
            (8, 10),
        ),
        (Conv2dConfig::new(4, 6, 1), 3, (5, 7)),
        (
            Conv2dConfig::new(2, 2, 5).bias(false).stride(3),
            9,
            (11, 14),
        ),
    ]
}

/// The kernel (with and without fused ReLU) equals candle's `conv2d` (+ `relu`) in the output
/// and in the gradients of input, weight and bias.
#[test]
fn conv_kernel_matches_candle_conv2d() -> R {
    let dev = Device::Cpu;
    for (cfg, batch, (h, w)) in configs() {
        for relu in [false, true] {
            neka_common::rng::seed(5);
            let vm = VarMap::new();
            let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &dev);
            let conv = conv2d(cfg, vb)?;
            let x = Var::randn(0f32, 1.0, (batch, cfg.in_channels, h, w), &dev)?;
            let a = conv.forward_kernel(x.as_tensor(), relu)?;
            let b = conv.forward_candle(x.as_tensor())?;
            let b = if relu { b.relu()? } else { b };
            same_values_and_gradients(&conv, &x, &a, &b, &format!("{cfg:?} relu {relu}"))?;
        }
    }
    Ok(())
}

/// `a` and `b`, two computations of the same convolution of `x`, agree to 1e-5 (relative) in
/// value and in the gradients of `sum(y ⊙ g)` with respect to input, weight and bias.
fn same_values_and_gradients(
    conv: &neka_cnn::Conv2d,
    x: &Var,
    a: &Tensor,
    b: &Tensor,
    what: &str,
) -> R {
    assert!(rel(a, b) < 1e-5, "{what}: forward {}", rel(a, b));
    let params: Vec<&Tensor> = [x.as_tensor(), conv.weight()]
        .into_iter()
        .chain(conv.bias())
        .collect();
    for (n, (da, db)) in ["x", "w", "b"].iter().zip(vjp_pair(a, b, &params)?) {
        assert!(
            rel(&da, &db) < 1e-5,
            "{what}: d{n} differs by {}",
            rel(&da, &db)
        );
    }
    Ok(())
}

/// The im2col graph (the Metal path, and `KernelPath::Im2col`) equals candle's `conv2d` in the
/// output and in the gradients of input, weight and bias: every stride, dilation, padding
/// and kernel shape above, and grouped convolutions.
#[test]
fn im2col_matches_candle_conv2d() -> R {
    let dev = Device::Cpu;
    let mut cases = configs();
    cases.push((
        Conv2dConfig::new(4, 6, 3)
            .groups(2)
            .padding(Padding::uniform(1)),
        3,
        (7, 9),
    ));
    cases.push((
        Conv2dConfig::new(6, 3, 3)
            .groups(3)
            .stride(2)
            .padding(Padding::uniform(1)),
        2,
        (9, 9),
    ));
    for (cfg, batch, (h, w)) in cases {
        neka_common::rng::seed(7);
        let vm = VarMap::new();
        let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &dev);
        let conv = conv2d(cfg, vb)?;
        let x = Var::randn(0f32, 1.0, (batch, cfg.in_channels, h, w), &dev)?;
        let a = conv.forward_im2col(x.as_tensor())?;
        let b = conv.forward_candle(x.as_tensor())?;
        same_values_and_gradients(&conv, &x, &a, &b, &format!("{cfg:?}"))?;
    }
    Ok(())
}

/// A CUDA or Metal tensor never reaches a CPU kernel: CUDA takes candle's `conv2d` (cuDNN),
/// Metal the im2col graph (candle#3836 / #3839), and pooling takes candle's ops on both.
#[test]
fn gpu_devices_never_take_the_cpu_kernels() {
    use candle_core::DeviceLocation;
    use neka_cnn::conv::conv_path_at;
    use neka_cnn::ConvRoute;
    let cuda = DeviceLocation::Cuda { gpu_id: 0 };
    let metal = DeviceLocation::Metal { gpu_id: 0 };
    for cfg in [
        Conv2dConfig::new(1, 32, 3),
        Conv2dConfig::new(4, 4, 3).groups(2),
    ] {
        for dt in [DType::F32, DType::F64, DType::BF16] {
            assert_eq!(conv_path_at(&cfg, cuda, dt), ConvRoute::Candle);
            assert_eq!(conv_path_at(&cfg, metal, dt), ConvRoute::Im2col);
        }
    }
    let pool = Pool2d::max(2);
    assert!(!pool.uses_kernel_at(cuda, DType::F32));
    assert!(!pool.uses_kernel_at(metal, DType::F32));
}

/// conv → ReLU → max-pool fused in one op equals the three layers one after the other, on the
/// kernels and on candle's ops, in values and in the gradients of input, weight and bias
/// (MnistNet's and LeNet-5's blocks, odd map sizes, a 3×3 pool).
#[test]
fn fused_conv_relu_pool_matches_the_layers() -> R {
    let dev = Device::Cpu;
    for (cfg, batch, (h, w), k) in [
        (Conv2dConfig::new(32, 64, 3), 3, (26, 26), 2),
        (
            Conv2dConfig::new(1, 6, 5).padding(Padding::uniform(2)),
            5,
            (28, 28),
            2,
        ),
        (Conv2dConfig::new(6, 16, 5), 7, (14, 14), 2),
        (Conv2dConfig::new(3, 4, 3), 2, (11, 9), 2),
        (
            Conv2dConfig::new(2, 3, 3).padding(Padding::Same),
            3,
            (9, 12),
            3,
        ),
    ] {
        neka_common::rng::seed(9);
        let vm = VarMap::new();
        let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &dev);
        let conv = conv2d(cfg, vb)?;
        let pool = Pool2d::max(k);
        let x = Var::randn(0f32, 1.0, (batch, cfg.in_channels, h, w), &dev)?;
        let fused = conv.forward_relu_pool(x.as_tensor(), &pool)?;
        // Inference mode (no argmax kept): same values, and a backward pass recomputes it.
        let inference = conv.forward_relu_pool_t(x.as_tensor(), &pool, false)?;
        assert_eq!(max_diff(&fused, &inference), 0.0);
        let layers = pool.forward(&conv.forward_relu(x.as_tensor())?)?;
        let twin = pool.forward_candle(&conv.forward_candle(x.as_tensor())?.relu()?)?;
        assert!(max_diff(&fused, &layers) == 0.0, "{cfg:?}");
        assert!(rel(&fused, &twin) < 1e-5, "{cfg:?}");
        let g = cotangent(&fused)?;
        let params = [x.as_tensor(), conv.weight(), conv.bias().unwrap()];
        let grads = [&fused, &layers, &twin, &inference].map(|y| vjp(y, &g, &params).unwrap());
        for (p, d0) in grads[0].iter().enumerate() {
            for other in &grads[1..] {
                let d = &other[p];
                assert!(rel(d0, d) < 1e-5, "{cfg:?}: {}", rel(d0, d));
            }
        }
    }
    Ok(())
}

/// The layer's `forward` / `forward_relu` route through the kernel on CPU by default, and
/// the other implementations are still reachable (and equal).
#[test]
fn every_cpu_implementation_agrees() -> R {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &dev);
    let conv = conv2d(Conv2dConfig::new(3, 4, 3).padding(Padding::Same), vb)?;
    let x = Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &dev)?;
    let want = conv.forward_candle(&x)?.relu()?;
    let pool = Pool2d::max(2);
    let want_pool = pool.forward_candle(&want)?;
    assert_eq!(neka_common::kernels::path(), KernelPath::Fused);
    for (path, imp) in [
        (KernelPath::Fused, neka_cnn::ConvRoute::Kernels),
        (KernelPath::Im2col, neka_cnn::ConvRoute::Im2col),
        (KernelPath::CandleOps, neka_cnn::ConvRoute::Candle),
    ] {
        let _path = neka_common::kernels::use_path(path);
        assert_eq!(neka_cnn::conv::conv_path(conv.config(), &x), imp);
        let y = conv.forward_relu(&x)?;
        assert!(max_diff(&y, &want) < 1e-5, "{imp:?}");
        assert!(max_diff(&pool.forward(&y)?, &want_pool) < 1e-5, "{imp:?}");
    }
    // Groups > 1 and half precision take candle's op even with the kernels selected.
    let grouped = Conv2dConfig::new(4, 4, 3).groups(2);
    assert_eq!(
        neka_cnn::conv::conv_path(&grouped, &x),
        neka_cnn::ConvRoute::Candle
    );
    let half = x.to_dtype(DType::BF16)?;
    assert_eq!(
        neka_cnn::conv::conv_path(conv.config(), &half),
        neka_cnn::ConvRoute::Candle
    );
    Ok(())
}

/// Outputs and every gradient equal PyTorch's `F.conv2d` (+ `F.relu`).
#[test]
fn conv_kernel_matches_pytorch() -> R {
    let f = fixtures();
    let cases = [
        ("mnist_conv1", 1, (0, 0), 1, true),
        ("mnist_conv2", 1, (0, 0), 1, true),
        ("lenet_conv1", 1, (2, 2), 1, true),
        ("lenet_conv2", 1, (0, 0), 1, true),
        ("pad1", 1, (1, 1), 1, false),
        ("pad2_stride2", 2, (2, 2), 1, false),
        ("dilation2", 1, (2, 2), 2, true),
        ("nonsquare", 1, (1, 0), 1, false),
        ("stride2_dilation2", 2, (1, 2), 2, false),
    ];
    for (name, stride, pad, dilation, relu) in cases {
        let get = |k: &str| f[&format!("{name}.{k}")].clone();
        let (x, w, b) = (
            Var::from_tensor(&get("x"))?,
            Var::from_tensor(&get("w"))?,
            Var::from_tensor(&get("b"))?,
        );
        let op = Conv2dOp::new(stride, pad, dilation, relu);
        let y = kernel::conv2d(x.as_tensor(), w.as_tensor(), b.as_tensor(), op)?;
        assert!(
            rel(&y, &get("y")) < 1e-5,
            "{name}: y {}",
            rel(&y, &get("y"))
        );
        let grads = (&y * get("g"))?.sum_all()?.backward()?;
        for (v, k) in [(&x, "dx"), (&w, "dw"), (&b, "db")] {
            let d = grads.get(v.as_tensor()).unwrap();
            assert!(rel(d, &get(k)) < 1e-5, "{name}: {k} {}", rel(d, &get(k)));
        }
    }
    Ok(())
}

/// f64 central differences of `L = Σ y ⊙ g` against the kernel's gradients.
#[test]
fn conv_kernel_finite_differences() -> R {
    let dev = Device::Cpu;
    for (op, (c, h, w), (o, kh, kw)) in [
        (Conv2dOp::new(1, (1, 1), 1, true), (2, 5, 6), (3, 3, 3)),
        (Conv2dOp::new(2, (1, 0), 2, false), (2, 7, 6), (2, 2, 3)),
        (
            Conv2dOp::new(1, (1, 1), 1, true).with_pool(2),
            (2, 6, 7),
            (3, 3, 3),
        ),
        (
            Conv2dOp::new(1, (0, 0), 1, false).with_pool(3),
            (1, 8, 9),
            (2, 2, 2),
        ),
    ] {
        let x = Var::randn(0f64, 1.0, (3, c, h, w), &dev)?;
        let wt = Var::randn(0f64, 0.5, (o, c, kh, kw), &dev)?;
        let b = Var::randn(0f64, 1.0, o, &dev)?;
        let y = kernel::conv2d(x.as_tensor(), wt.as_tensor(), b.as_tensor(), op.clone())?;
        let g = Tensor::randn(0f64, 1.0, y.shape(), &dev)?;
        let loss = || {
            (kernel::conv2d(x.as_tensor(), wt.as_tensor(), b.as_tensor(), op.clone())? * &g)?
                .sum_all()?
                .to_scalar::<f64>()
        };
        let grads = (&y * &g)?.sum_all()?.backward()?;
        for (which, var) in [&x, &wt, &b].into_iter().enumerate() {
            let (analytic, n) = (grads.get(var.as_tensor()).unwrap(), var.elem_count());
            let sampled = (0..n).step_by(n.div_ceil(25));
            for e in gradient_check(var, analytic, sampled, 1e-6, loss)? {
                let (i, numeric) = (e.index, e.numeric);
                assert!(
                    (numeric - e.analytic).abs() < 1e-5 * (1.0 + numeric.abs()),
                    "{op:?} arg {which} [{i}]: numeric {numeric} vs analytic {}",
                    e.analytic
                );
            }
        }
    }
    Ok(())
}

/// The image entering conv1 needs no gradient, and the kernel does not compute one: its
/// backward returns `None` for an input outside the graph (and `Some` for a tracked one).
#[test]
fn conv1_input_gradient_is_not_computed() -> R {
    let dev = Device::Cpu;
    let op = Conv2dOp::new(1, (0, 0), 1, true);
    let image = Tensor::randn(0f32, 1.0, (2, 1, 6, 6), &dev)?;
    let w = Var::randn(0f32, 1.0, (3, 1, 3, 3), &dev)?;
    let b = Var::randn(0f32, 1.0, 3, &dev)?;
    let y = kernel::conv2d(&image, w.as_tensor(), b.as_tensor(), op.clone())?;
    let dy = y.ones_like()?;
    let (dx, dw, db) = Fused(op.clone()).bwd(&image, w.as_tensor(), b.as_tensor(), &y, &dy)?;
    assert!(dx.is_none(), "the image got a gradient");
    assert!(dw.is_some() && db.is_some());
    let grads = y.sum_all()?.backward()?;
    assert!(grads.get(&image).is_none());
    let tracked = Var::from_tensor(&image)?;
    let (dx, _, _) = Fused(op).bwd(tracked.as_tensor(), w.as_tensor(), b.as_tensor(), &y, &dy)?;
    assert!(dx.is_some());
    Ok(())
}

/// Max pooling: the kernel equals its candle-op twin ([`Pool2d::forward_candle`], a reshape and
/// a `max`) in values and gradients, and PyTorch: kernel 2 on even and odd sizes, kernel 3 /
/// stride 2 / padding 1, and ties go to the first maximum (PyTorch's rule).
///
/// candle 0.11.1's `max_pool2d` backward is wrong: it scales the gradient by `1/k²` (it
/// multiplies by `avg_pool(mask)` = count/k² where it meant to divide by the count) and, built
/// on `upsample_nearest2d`, compares rows with the wrong window when the size is not a
/// multiple of the kernel. The test pins the first down, so a candle upgrade that fixes it is
/// noticed.
#[test]
fn max_pool_kernel_matches_its_twin_and_pytorch() -> R {
    let dev = Device::Cpu;
    let pool = Pool2d::max(2);
    for (b, c, h, w) in [(3, 4, 8, 6), (1, 2, 7, 9)] {
        let x = Var::randn(0f32, 1.0, (b, c, h, w), &dev)?;
        let a = pool.forward(x.as_tensor())?;
        let twin = pool.forward_candle(x.as_tensor())?;
        let raw = x.as_tensor().max_pool2d(2)?;
        assert_eq!(max_diff(&a, &twin), 0.0);
        assert_eq!(max_diff(&a, &raw), 0.0);
        let g = Tensor::randn(0f32, 1.0, a.shape(), &dev)?;
        let dx = |y: &Tensor| -> candle_core::Result<Tensor> {
            Ok((y * &g)?
                .sum_all()?
                .backward()?
                .get(x.as_tensor())
                .unwrap()
                .clone())
        };
        assert_eq!(max_diff(&dx(&a)?, &dx(&twin)?), 0.0);
        if h % 2 == 0 && w % 2 == 0 {
            assert!(
                max_diff(&dx(&a)?, &(dx(&raw)? * 4.0)?) < 1e-6,
                "candle's 1/k² bug is gone?"
            );
        }
    }
    let f = fixtures();
    for (name, op) in [
        (
            "pool2",
            MaxPool2dOp {
                kernel: 2,
                stride: 2,
                padding: 0,
            },
        ),
        (
            "pool2_odd",
            MaxPool2dOp {
                kernel: 2,
                stride: 2,
                padding: 0,
            },
        ),
        (
            "pool3_s2_p1",
            MaxPool2dOp {
                kernel: 3,
                stride: 2,
                padding: 1,
            },
        ),
    ] {
        let get = |k: &str| f[&format!("{name}.{k}")].clone();
        let x = Var::from_tensor(&get("x"))?;
        let y = kernel::max_pool2d(x.as_tensor(), op)?;
        assert_eq!(max_diff(&y, &get("y")), 0.0, "{name}");
        let grads = (&y * get("g"))?.sum_all()?.backward()?;
        assert!(
            max_diff(grads.get(x.as_tensor()).unwrap(), &get("dx")) < 1e-6,
            "{name}"
        );
    }
    // Ties: PyTorch gives the gradient to the first maximum of the window (row-major).
    let x = Var::from_tensor(&Tensor::new(&[[[[1f32, 1.], [0., 1.]]]], &dev)?)?;
    let y = kernel::max_pool2d(
        x.as_tensor(),
        MaxPool2dOp {
            kernel: 2,
            stride: 2,
            padding: 0,
        },
    )?;
    let dx = y
        .sum_all()?
        .backward()?
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert_eq!(dx, [1.0, 0.0, 0.0, 0.0]);
    Ok(())
}

/// The fused cross-entropy equals candle's and PyTorch's loss and gradient.
#[test]
fn fused_cross_entropy_matches_candle_and_pytorch() -> R {
    use neka_common::loss::{cross_entropy, cross_entropy_candle};
    let dev = Device::Cpu;
    let f = fixtures();
    let z = Var::from_tensor(&f["ce.z"])?;
    for t in [f["ce.t"].clone(), f["ce.t"].to_dtype(DType::U32)?] {
        let loss = cross_entropy(z.as_tensor(), &t)?;
        let want = f["ce.loss"].reshape(())?;
        assert!(max_diff(&loss, &want) < 1e-6);
        let dz = loss.backward()?.get(z.as_tensor()).unwrap().clone();
        assert!(max_diff(&dz, &f["ce.dz"]) < 1e-6);
    }
    for dt in [DType::F32, DType::F64] {
        let z = Var::randn(0f32, 4.0, (9, 7), &dev)?;
        let z = Var::from_tensor(&z.as_tensor().to_dtype(dt)?)?;
        let t = Tensor::new(&[0u32, 6, 3, 3, 1, 2, 5, 4, 0], &dev)?;
        let a = cross_entropy(z.as_tensor(), &t)?;
        let b = cross_entropy_candle(z.as_tensor(), &t)?;
        assert!(max_diff(&a, &b) < 1e-6);
        let (ga, gb) = ((&a * 3.0)?.backward()?, (&b * 3.0)?.backward()?);
        assert!(
            max_diff(
                ga.get(z.as_tensor()).unwrap(),
                gb.get(z.as_tensor()).unwrap()
            ) < 1e-6
        );
    }
    // A target that is not a class index is an error, not a silent wrong loss.
    let z = Tensor::zeros((2, 3), DType::F32, &dev)?;
    let err = cross_entropy(&z, &Tensor::new(&[0u32, 3], &dev)?).unwrap_err();
    assert!(err.to_string().contains("target 3"), "{err}");
    Ok(())
}
