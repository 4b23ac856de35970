//! The small ResNet: shapes, torchvision's tensor names, its summary, batch norm's running
//! statistics (train vs eval mode, kept out of the optimizer), checkpoint round trip, the
//! residual block's gradients against finite differences, and that it learns.

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::VarMap;
use neka_cnn::resnet::{self, BasicBlock};
use neka_cnn::{batch_norm2d, CnnModel, ResNet};
use neka_common::optim::{count_parameters, is_buffer, Optimizer, OptimizerConfig};
use neka_testing::{cotangent, gradient_check, max_abs_diff, vjp};

type R = Result<(), Box<dyn std::error::Error>>;

fn model(vm: &VarMap, seed: u64) -> ResNet {
    neka_common::rng::seed(seed);
    let vb = neka_common::init::seeded_var_builder(vm, DType::F32, &Device::Cpu);
    ResNet::new(&resnet::Config::default(), vb).unwrap()
}

fn var(vm: &VarMap, name: &str) -> Tensor {
    vm.data().lock().unwrap()[name].as_tensor().clone()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs_diff(a, b).unwrap()
}

/// `n` synthetic 28×28 images of `classes` classes: class k is a bright horizontal bar in
/// band k (rows 2 + 6k … 5 + 6k) over Gaussian noise, normalised-looking values.
fn synthetic(n: usize, classes: usize, seed: u64) -> (Tensor, Tensor) {
    neka_common::rng::seed(seed);
    let noise = neka_common::rng::uniform_vec(n * 28 * 28, -0.5, 0.5);
    let mut x = noise;
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % classes;
        y.push(k as u32);
        for r in 2 + 6 * k..6 + 6 * k {
            for c in 4..24 {
                x[i * 784 + r * 28 + c] += 2.0;
            }
        }
    }
    (
        Tensor::from_vec(x, (n, 1, 28, 28), &Device::Cpu).unwrap(),
        Tensor::from_vec(y, n, &Device::Cpu).unwrap(),
    )
}

#[test]
fn shapes_of_the_forward_pass_and_the_feature_maps() -> R {
    let vm = VarMap::new();
    let net = model(&vm, 0);
    let x = Tensor::randn(0f32, 1.0, (3, 1, 28, 28), &Device::Cpu)?;
    assert_eq!(net.forward_t(&x, true)?.dims(), &[3, 10]);
    assert_eq!(net.forward_t(&x, false)?.dims(), &[3, 10]);
    let maps = net.feature_maps(&x)?;
    let got: Vec<(&str, Vec<usize>)> = maps.iter().map(|(n, t)| (*n, t.dims().to_vec())).collect();
    assert_eq!(
        got,
        [
            ("conv1 + bn1 + ReLU", vec![3, 16, 28, 28]),
            ("layer1", vec![3, 16, 28, 28]),
            ("layer2", vec![3, 32, 14, 14]),
            ("layer3", vec![3, 64, 7, 7]),
        ]
    );
    assert!(
        !net.stage(0)[0].projects() && net.stage(1)[0].projects() && net.stage(2)[0].projects()
    );
    // deeper stages and other sizes: ResNet-20 (n = 3) on 32×32 RGB, 7 classes
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
    let cfg = resnet::Config {
        in_channels: 3,
        image_size: 32,
        num_classes: 7,
        blocks: [3, 3, 3],
        ..Default::default()
    };
    let net20 = ResNet::new(&cfg, vb)?;
    let y = net20.forward_t(
        &Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?,
        false,
    )?;
    assert_eq!(y.dims(), &[2, 7]);
    let convs = vm
        .data()
        .lock()
        .unwrap()
        .keys()
        .filter(|k| k.ends_with("conv1.weight") || k.ends_with("conv2.weight"))
        .count();
    assert_eq!(convs + 1, 20, "6n + 2 weight layers: 19 convs + fc");
    assert!(net20.stage(1)[0].projects() && !net20.stage(1)[1].projects());
    Ok(())
}

/// Exactly the keys and shapes of torchvision's `ResNet(BasicBlock, [1, 1, 1])` adapted to
/// this stem (`conv1` 3×3 on 1 channel, 16-32-64 wide, three stages, fc 64 → 10).
#[test]
fn tensor_names_are_torchvisions() -> R {
    let vm = VarMap::new();
    model(&vm, 0);
    let got: Vec<(String, Vec<usize>)> = neka_common::checkpoint::varmap_tensors(&vm)
        .into_iter()
        .map(|(k, t)| (k, t.dims().to_vec()))
        .collect();
    let mut want: Vec<(String, Vec<usize>)> = Vec::new();
    let mut bn = |p: &str, c: usize| {
        for b in ["weight", "bias", "running_mean", "running_var"] {
            want.push((format!("{p}.{b}"), vec![c]));
        }
        want.push((format!("{p}.num_batches_tracked"), vec![]));
    };
    bn("bn1", 16);
    bn("layer1.0.bn1", 16);
    bn("layer1.0.bn2", 16);
    for (l, c) in [("layer2", 32), ("layer3", 64)] {
        bn(&format!("{l}.0.bn1"), c);
        bn(&format!("{l}.0.bn2"), c);
        bn(&format!("{l}.0.downsample.1"), c);
    }
    for (name, shape) in [
        ("conv1.weight", vec![16, 1, 3, 3]),
        ("layer1.0.conv1.weight", vec![16, 16, 3, 3]),
        ("layer1.0.conv2.weight", vec![16, 16, 3, 3]),
        ("layer2.0.conv1.weight", vec![32, 16, 3, 3]),
        ("layer2.0.conv2.weight", vec![32, 32, 3, 3]),
        ("layer2.0.downsample.0.weight", vec![32, 16, 1, 1]),
        ("layer3.0.conv1.weight", vec![64, 32, 3, 3]),
        ("layer3.0.conv2.weight", vec![64, 64, 3, 3]),
        ("layer3.0.downsample.0.weight", vec![64, 32, 1, 1]),
        ("fc.weight", vec![10, 64]),
        ("fc.bias", vec![10]),
    ] {
        want.push((name.to_string(), shape));
    }
    want.sort();
    assert_eq!(got, want);
    // torchvision's init: BN γ = 1, β = 0, mean 0, var 1, count 0; convs N(0, 2/fan_out)
    assert!(values(&var(&vm, "layer2.0.bn1.weight"))
        .iter()
        .all(|&v| v == 1.0));
    assert!(values(&var(&vm, "layer2.0.bn1.bias"))
        .iter()
        .all(|&v| v == 0.0));
    assert!(values(&var(&vm, "layer2.0.bn1.running_var"))
        .iter()
        .all(|&v| v == 1.0));
    assert_eq!(values(&var(&vm, "bn1.num_batches_tracked")), vec![0.0]);
    let w = values(&var(&vm, "layer3.0.conv2.weight"));
    let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
    let want_std = (2.0f32 / (64.0 * 9.0)).sqrt();
    assert!(
        (std / want_std - 1.0).abs() < 0.05,
        "std {std} vs {want_std}"
    );
    Ok(())
}

/// The summary walks the skips: output shapes, receptive fields through both branches, and
/// parameters equal to the VarMap's parameters without the buffers (counted apart).
#[test]
fn summary_of_the_default_config() -> R {
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
    let (_, cfg) = CnnModel::from_name("resnet", 1, 28, 10, vb)?;
    let s = CnnModel::summary_for("resnet", &cfg)?;
    let (params, buffers) = count_parameters(&vm);
    assert_eq!((s.total_params(), s.total_buffers()), (params, buffers));
    assert_eq!((params, buffers), (77_754, 681));
    let row = |n: &str| {
        s.layers
            .iter()
            .find(|l| l.name == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    assert_eq!(row("layer1.0").output_shape, vec![16, 28, 28]);
    assert_eq!(row("layer1.0").kind, "add identity");
    assert_eq!(row("layer2.0").output_shape, vec![32, 14, 14]);
    assert_eq!(row("layer2.0").kind, "add projection");
    assert_eq!(row("layer3.0").output_shape, vec![64, 7, 7]);
    assert_eq!(row("layer2.0.downsample.0").params, 16 * 32);
    assert_eq!(row("layer2.0.downsample.0").receptive_field, Some((7, 7)));
    assert_eq!(row("layer2.0.downsample.1").buffers, 2 * 32 + 1);
    // receptive field: 3 after the stem, +2·jump per 3×3 conv, jump ×2 per stride
    for (name, rf) in [
        ("conv1", 3),
        ("layer1.0", 7),
        ("layer2.0", 13),
        ("layer3.0", 25),
    ] {
        assert_eq!(row(name).receptive_field, Some((rf, rf)), "{name}");
    }
    assert_eq!(row("avgpool").output_shape, vec![64, 1, 1]);
    assert_eq!(s.output_shape(), &[10]);
    let text = s.to_string();
    println!("{text}");
    assert!(
        text.contains("layer2.0.downsample.0") && text.contains("681 buffer values"),
        "{text}"
    );
    assert!(text.contains("77,754 parameters"), "{text}");
    // a bad config is refused naming the field, before anything is built
    let bad = serde_json::json!({"blocks": [1, 0, 1]});
    let e = CnnModel::summary_for("resnet", &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("blocks"), "{e}");
    let vb = neka_common::init::seeded_var_builder(&VarMap::new(), DType::F32, &Device::Cpu);
    assert!(CnnModel::from_config("resnet", &serde_json::json!({"width": 0}), vb).is_err());
    // branches that do not fit together are an error naming the block
    let e = neka_cnn::summarize(
        (4, 8, 8),
        &[(
            "blk",
            neka_cnn::LayerSpec::Residual {
                main: vec![(
                    "c".into(),
                    neka_cnn::LayerSpec::Conv(neka_cnn::Conv2dConfig::new(4, 8, 1)),
                )],
                shortcut: vec![],
            },
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("blk") && e.contains("cannot be added"), "{e}");
    Ok(())
}

/// Batch norm on its own, against the formulas: train mode normalises with the batch's
/// statistics and moves the running ones by momentum 0.1 (the variance unbiased), eval mode
/// uses the running ones.
#[test]
fn batch_norm_matches_pytorchs_formulas() -> R {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &dev);
    let bn = batch_norm2d(2, vb.pp("bn"))?;
    let set = |n: &str, v: &[f32]| {
        vm.data().lock().unwrap()[n]
            .set(&Tensor::new(v, &dev).unwrap())
            .unwrap();
    };
    set("bn.weight", &[2.0, 3.0]);
    set("bn.bias", &[0.5, -0.5]);
    set("bn.running_mean", &[1.0, -1.0]);
    set("bn.running_var", &[4.0, 9.0]);
    // (B, C, H, W) = (2, 2, 1, 2): channel 0 holds 1, 2, 3, 4; channel 1 holds 0, 0, 0, 8
    let x = Tensor::new(&[1f32, 2., 0., 0., 3., 4., 0., 8.], &dev)?.reshape((2, 2, 1, 2))?;
    let eval = values(&bn.forward_t(&x, false)?);
    let e = |v: f32, c: usize| {
        let (m, var, w, b) = [(1.0, 4.0, 2.0, 0.5), (-1.0, 9.0, 3.0, -0.5)][c];
        w * (v - m) / (var + 1e-5f32).sqrt() + b
    };
    let want = [
        e(1., 0),
        e(2., 0),
        e(0., 1),
        e(0., 1),
        e(3., 0),
        e(4., 0),
        e(0., 1),
        e(8., 1),
    ];
    for (g, w) in eval.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{eval:?} vs {want:?}");
    }
    assert_eq!(bn.num_batches_tracked()?, 0.0, "eval mode counts nothing");
    let train = values(&bn.forward_t(&x, true)?);
    // channel 0: mean 2.5, biased var 1.25, unbiased 5/3; channel 1: mean 2, var 12, unbiased 16
    let t = |v: f32, c: usize| {
        let (m, var, w, b) = [(2.5, 1.25, 2.0, 0.5), (2.0, 12.0, 3.0, -0.5)][c];
        w * (v - m) / (var + 1e-5f32).sqrt() + b
    };
    let want = [
        t(1., 0),
        t(2., 0),
        t(0., 1),
        t(0., 1),
        t(3., 0),
        t(4., 0),
        t(0., 1),
        t(8., 1),
    ];
    for (g, w) in train.iter().zip(want) {
        assert!((g - w).abs() < 1e-4, "{train:?} vs {want:?}");
    }
    let close = |a: Vec<f32>, b: [f32; 2]| (a[0] - b[0]).abs() < 1e-5 && (a[1] - b[1]).abs() < 1e-5;
    assert!(close(values(bn.running_mean()), [0.9 + 0.25, -0.9 + 0.2]));
    assert!(close(
        values(bn.running_var()),
        [3.6 + 0.5 / 3.0, 8.1 + 1.6]
    ));
    assert_eq!(bn.num_batches_tracked()?, 1.0);
    // the layer's tensors are the VarMap's: what a checkpoint saves
    assert!(close(values(&var(&vm, "bn.running_mean")), [1.15, -0.7]));
    assert_eq!(values(&var(&vm, "bn.num_batches_tracked")), vec![1.0]);
    Ok(())
}

/// neka's train-mode batch-norm kernel equals candle-nn's ops: outputs, the gradients of
/// input, γ and β, and the running-statistics update, in f32 and f64, on maps and on (B, C).
#[test]
fn batch_norm_kernel_equals_candle_nn() -> R {
    let dev = Device::Cpu;
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::F64, 1e-10)] {
        for shape in [vec![4, 3, 5, 7], vec![6, 5], vec![2, 16, 28, 28]] {
            let c = shape[1];
            let make = || {
                let vm = VarMap::new();
                let vb = neka_common::init::seeded_var_builder(&vm, dtype, &dev);
                let bn = batch_norm2d(c, vb.pp("bn")).unwrap();
                for (n, lo, hi) in [
                    ("bn.weight", 0.5, 1.5),
                    ("bn.bias", -0.5, 0.5),
                    ("bn.running_mean", -1.0, 1.0),
                    ("bn.running_var", 0.5, 2.0),
                ] {
                    neka_common::rng::seed(c as u64 + n.len() as u64);
                    let v: Vec<f32> = neka_common::rng::uniform_vec(c, lo, hi);
                    let t = Tensor::new(v, &dev).unwrap().to_dtype(dtype).unwrap();
                    vm.data().lock().unwrap()[n].set(&t).unwrap();
                }
                (vm, bn)
            };
            let (vk, kernel) = make();
            let (vc, candle) = make();
            let x = Var::from_tensor(
                &(Tensor::randn(0f32, 2.0, shape.clone(), &dev)? + 0.7)?.to_dtype(dtype)?,
            )?;
            let relu = shape.len() == 4 && shape[0] == 4; // the fused ReLU on one shape
            let yk = kernel.forward_train_kernel(x.as_tensor(), relu)?;
            let yc = candle.forward_train_candle(x.as_tensor())?;
            let yc = if relu { yc.relu()? } else { yc };
            assert!(
                max_diff(&yk, &yc) < tol,
                "{shape:?} {dtype:?}: forward differs by {}",
                max_diff(&yk, &yc)
            );
            let r = cotangent(&yk)?;
            let (wk, bk, wc, bc) = (
                var(&vk, "bn.weight"),
                var(&vk, "bn.bias"),
                var(&vc, "bn.weight"),
                var(&vc, "bn.bias"),
            );
            let gk = vjp(&yk, &r, &[x.as_tensor(), &wk, &bk])?;
            let gc = vjp(&yc, &r, &[x.as_tensor(), &wc, &bc])?;
            let dx = max_diff(&gk[0], &gc[0]);
            assert!(dx < tol, "{shape:?} {dtype:?}: dx differs by {dx}");
            for (i, n) in [(1, "bn.weight"), (2, "bn.bias")] {
                let d = max_diff(&gk[i], &gc[i]);
                assert!(d < tol * 10.0, "{shape:?} {dtype:?}: d{n} differs by {d}");
            }
            for n in [
                "bn.running_mean",
                "bn.running_var",
                "bn.num_batches_tracked",
            ] {
                let d = max_diff(&var(&vk, n), &var(&vc, n));
                assert!(d < tol, "{shape:?} {dtype:?}: {n} differs by {d}");
            }
            assert_eq!(kernel.num_batches_tracked()?, 1.0);
        }
    }
    Ok(())
}

/// Eval mode uses the running statistics: deterministic, and an image's logits do not depend
/// on the rest of its batch. Train mode uses the batch's statistics (they do), and updates
/// the running statistics; the optimizer never touches them.
#[test]
fn eval_uses_running_stats_train_updates_them_and_the_optimizer_leaves_them() -> R {
    let vm = VarMap::new();
    let net = model(&vm, 1);
    let (x, y) = synthetic(8, 4, 7);
    let first = x.narrow(0, 0, 1)?;
    let a = net.forward_t(&x, false)?;
    assert_eq!(
        values(&a),
        values(&net.forward_t(&x, false)?),
        "eval is deterministic"
    );
    let alone = net.forward_t(&first, false)?;
    assert!(
        max_diff(&alone, &a.narrow(0, 0, 1)?) < 1e-5,
        "eval: independent of the batch"
    );
    let buffers_now = || -> Vec<(String, Vec<f32>)> {
        neka_common::checkpoint::varmap_tensors(&vm)
            .into_iter()
            .filter(|(k, _)| is_buffer(k))
            .map(|(k, t)| (k, values(&t)))
            .collect()
    };
    let before = buffers_now();
    assert_eq!(before.len(), 9 * 3);
    assert_eq!(
        buffers_now(),
        before,
        "eval mode leaves the running statistics"
    );

    let mut opt = Optimizer::new(OptimizerConfig::adamw(1e-2), &vm)?;
    assert!(opt.params().iter().all(|(n, _)| !is_buffer(n)));
    let n: usize = opt.params().iter().map(|(_, v)| v.elem_count()).sum();
    assert_eq!(n, 77_754);
    let logits = net.forward_t(&x, true)?;
    let in_batch = net.forward_t(&first, true)?; // batch statistics of one image
    assert!(
        max_diff(&in_batch, &logits.narrow(0, 0, 1)?) > 1e-3,
        "train: batch statistics"
    );
    let after_forward = buffers_now();
    for ((name, b), (_, f)) in before.iter().zip(&after_forward) {
        assert_ne!(b, f, "{name}: train mode updates every running statistic");
    }
    let nbt = after_forward
        .iter()
        .find(|(n, _)| n == "layer3.0.bn2.num_batches_tracked")
        .unwrap();
    assert_eq!(nbt.1, vec![2.0]);
    let fc_before = values(&var(&vm, "fc.weight"));
    let loss = neka_common::loss::cross_entropy(&logits, &y)?;
    opt.backward_step(&loss)?;
    assert_eq!(
        buffers_now(),
        after_forward,
        "the optimizer step leaves the buffers alone"
    );
    assert_ne!(
        values(&var(&vm, "fc.weight")),
        fc_before,
        "and updates the parameters"
    );
    assert!(opt.state_tensors().iter().all(|(n, _)| !is_buffer(n)));
    // after training steps, eval mode still answers with the (new) running statistics
    let b = net.forward_t(&x, false)?;
    assert!(max_diff(&a, &b) > 1e-4);
    assert_eq!(values(&b), values(&net.forward_t(&x, false)?));
    Ok(())
}

/// Trained a few steps (so the running statistics and counters are not the initial ones),
/// saved with `checkpoint::save_model`, loaded with `LoadedModel`: identical logits, buffers
/// included in the file.
#[test]
fn save_and_load_through_loaded_model_gives_identical_logits() -> R {
    use neka_cnn::loaded_model::LoadedModel;
    use neka_common::checkpoint::{self, CheckpointInfo};
    let dir = tempfile::tempdir()?;
    let vm = VarMap::new();
    neka_common::rng::seed(3);
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
    let (net, cfg) = CnnModel::from_name("resnet", 1, 28, 4, vb)?;
    let (x, y) = synthetic(16, 4, 5);
    let mut opt = Optimizer::new(OptimizerConfig::adamw(3e-3), &vm)?;
    for _ in 0..3 {
        let loss = neka_common::loss::cross_entropy(&net.forward_t(&x, true)?, &y)?;
        opt.backward_step(&loss)?;
    }
    let mut info = CheckpointInfo::new("resnet", &cfg, "fashion-mnist")?;
    info.normalize = Some(neka_common::data::Normalize {
        mean: vec![0.286],
        std: vec![0.353],
    });
    info.classes = ["a", "b", "c", "d"].map(String::from).to_vec();
    checkpoint::save_model(dir.path(), &vm, &info)?;
    let (saved, _) =
        checkpoint::load_tensors(&dir.path().join(checkpoint::WEIGHTS_FILE), &Device::Cpu)?;
    assert_eq!(
        saved["layer2.0.downsample.1.num_batches_tracked"].dims(),
        &[] as &[usize]
    );
    assert_eq!(values(&saved["bn1.num_batches_tracked"]), vec![3.0]);
    assert!(saved.contains_key("layer1.0.bn2.running_var"));

    let loaded = LoadedModel::load(dir.path(), &Device::Cpu)?;
    assert_eq!(loaded.model.name(), "resnet");
    let want = net.forward_t(&x, false)?;
    let got = loaded.model.forward_t(&x, false)?;
    assert_eq!(
        values(&got),
        values(&want),
        "identical logits after the round trip"
    );
    assert_eq!(
        values(&var(&loaded.varmap, "layer3.0.bn1.running_mean")),
        values(&var(&vm, "layer3.0.bn1.running_mean"))
    );
    assert_eq!(count_parameters(&loaded.varmap), count_parameters(&vm));
    Ok(())
}

/// Central differences in f64 of `L = Σ y ⊙ r` through one projection block (stride 2, 2 → 3
/// channels, train-mode batch norm) and one identity block, for the input and every parameter.
#[test]
fn basic_block_gradients_match_finite_differences() -> R {
    let dev = Device::Cpu;
    for (cin, cout, stride) in [(2, 3, 2), (3, 3, 1)] {
        neka_common::rng::seed(11);
        let vm = VarMap::new();
        let vb = neka_common::init::seeded_var_builder(&vm, DType::F64, &dev);
        let block = BasicBlock::new(cin, cout, stride, vb)?;
        assert_eq!(block.projects(), stride != 1);
        // non-trivial γ and β, so their gradients are not special
        for (name, v) in vm.data().lock().unwrap().iter() {
            let bn = name.contains("bn") || name.starts_with("downsample.1");
            if bn && name.ends_with(".weight") {
                v.set(&(v.as_tensor().rand_like(0.5, 1.5)?))?;
            }
            if bn && name.ends_with(".bias") {
                v.set(&(v.as_tensor().rand_like(-0.5, 0.5)?))?;
            }
        }
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, cin, 5, 5), &dev)?)?;
        let out = block.forward_t(x.as_tensor(), true)?;
        let r = Tensor::randn(0f64, 1.0, out.shape(), &dev)?;
        let loss = || {
            (block.forward_t(x.as_tensor(), true)? * &r)?
                .sum_all()?
                .to_scalar::<f64>()
        };
        let grads = (out * &r)?.sum_all()?.backward()?;
        // every parameter the optimizer trains (the buffers are not among them), and the input
        let mut vars = Optimizer::new(OptimizerConfig::sgd(1.0), &vm)?
            .params()
            .to_vec();
        vars.push(("x".into(), x.clone()));
        for (name, v) in &vars {
            let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("{name}"));
            let n = v.elem_count();
            for e in gradient_check(v, g, (0..n).step_by((n / 24).max(1)), 1e-6, loss)? {
                let (i, fd) = (e.index, e.numeric);
                assert!(
                    (fd - e.analytic).abs() <= 1e-5 + 1e-4 * fd.abs(),
                    "block {cin}->{cout} s{stride}: d/d{name}[{i}]: backprop {} vs finite difference {fd}",
                    e.analytic
                );
            }
        }
    }
    Ok(())
}

/// The residual add carries the gradient when the residual branch carries none: with the last
/// batch norm's γ = β = 0, `F(x) = 0`, so `y = ReLU(x)` and `∂L/∂x = r ⊙ 1[x > 0]` exactly,
/// while every weight of `F` before that γ gets a zero gradient.
#[test]
fn the_skip_carries_the_gradient_when_the_residual_branch_is_dead() -> R {
    let dev = Device::Cpu;
    neka_common::rng::seed(2);
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F64, &dev);
    let block = BasicBlock::new(3, 3, 1, vb)?;
    for n in ["bn2.weight", "bn2.bias"] {
        let v = vm.data().lock().unwrap()[n].clone();
        v.set(&v.as_tensor().zeros_like()?)?;
    }
    let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 4, 4), &dev)?)?;
    let y = block.forward_t(x.as_tensor(), true)?;
    let relu_x = x.as_tensor().relu()?;
    assert_eq!(
        y.flatten_all()?.to_vec1::<f64>()?,
        relu_x.flatten_all()?.to_vec1::<f64>()?
    );
    let r = Tensor::randn(0f64, 1.0, y.shape(), &dev)?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let gx = grads.get(x.as_tensor()).unwrap();
    let want = (&r * x.as_tensor().gt(0.0)?.to_dtype(DType::F64)?)?;
    assert!(max_diff(&gx.to_dtype(DType::F32)?, &want.to_dtype(DType::F32)?) < 1e-12);
    let conv1 = vm.data().lock().unwrap()["conv1.weight"]
        .as_tensor()
        .clone();
    let g1 = grads
        .get(&conv1)
        .unwrap()
        .abs()?
        .max_all()?
        .to_scalar::<f64>()?;
    assert_eq!(g1, 0.0, "no gradient reaches conv1 through the dead branch");
    Ok(())
}

/// A few AdamW steps on synthetic bars (4 classes) lower the loss a lot.
#[test]
fn a_few_training_steps_lower_the_loss() -> R {
    let vm = VarMap::new();
    neka_common::rng::seed(0);
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
    let (net, _) = CnnModel::from_name("resnet", 1, 28, 4, vb)?;
    let (x, y) = synthetic(64, 4, 1);
    let mut opt = Optimizer::new(OptimizerConfig::adamw(3e-3), &vm)?;
    let eval_loss = || -> f32 {
        neka_common::loss::cross_entropy(&net.forward_t(&x, false).unwrap(), &y)
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let first = eval_loss();
    let mut train_losses = Vec::new();
    for _ in 0..15 {
        let loss = neka_common::loss::cross_entropy(&net.forward_t(&x, true)?, &y)?;
        train_losses.push(loss.to_scalar::<f32>()?);
        opt.backward_step(&loss)?;
    }
    let last = eval_loss();
    assert!(
        train_losses[14] < 0.5 * train_losses[0] && last < 0.5 * first,
        "train losses {train_losses:?}; eval loss {first} -> {last}"
    );
    Ok(())
}
