//! Conv implementation parity, PyTorch naming, and that the models can learn.

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::VarMap;
use neka_cnn::{conv2d, CnnModel, Conv2dConfig, Padding};
use neka_common::data::vision::{self, VisionDatasetKind};
use neka_common::data::{Dataset, LabeledBatch};
use neka_common::optim::{Optimizer, OptimizerConfig};
use neka_common::train::{Classifier, StepContext, TrainModel};
use neka_testing::{max_abs_diff, vjp_pair};

type R = Result<(), Box<dyn std::error::Error>>;

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs_diff(a, b).unwrap()
}

/// neka's im2col convolution (used on CPU for stride 1) must equal candle's conv2d in the
/// forward pass and in the gradients of input, weight and bias.
#[test]
fn im2col_matches_candle_conv_forward_and_backward() -> R {
    let dev = Device::Cpu;
    for cfg in [
        Conv2dConfig::new(3, 5, 3),
        Conv2dConfig::new(3, 4, 3).padding(Padding::Same),
        Conv2dConfig::new(2, 3, 1)
            .kernel(3, 5)
            .padding(Padding::Same),
        Conv2dConfig::new(2, 3, 3)
            .dilation(2)
            .padding(Padding::uniform(1)),
        Conv2dConfig::new(2, 2, 5).bias(false),
    ] {
        neka_common::rng::seed(3);
        let vm = VarMap::new();
        let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &dev);
        let conv = conv2d(cfg, vb)?;
        let x = Var::from_tensor(&Tensor::randn(
            0f32,
            1.0,
            (2, cfg.in_channels, 9, 11),
            &dev,
        )?)?;
        let a = conv.forward_im2col(x.as_tensor())?;
        let b = conv.forward_candle(x.as_tensor())?;
        assert_eq!(a.dims(), b.dims(), "{cfg:?}");
        assert!(
            max_diff(&a, &b) < 1e-4,
            "{cfg:?}: forward differs by {}",
            max_diff(&a, &b)
        );
        let params: Vec<&Tensor> = [x.as_tensor(), conv.weight()]
            .into_iter()
            .chain(conv.bias())
            .collect();
        for (da, db) in vjp_pair(&a, &b, &params)? {
            assert!(
                max_diff(&da, &db) < 1e-3,
                "{cfg:?}: gradient differs by {}",
                max_diff(&da, &db)
            );
        }
    }
    Ok(())
}

#[test]
fn mnist_net_has_pytorch_names_and_layouts() -> R {
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
    CnnModel::from_name("mnist-net", 1, 28, 10, vb)?;
    let shapes: Vec<(String, Vec<usize>)> = neka_common::checkpoint::varmap_tensors(&vm)
        .into_iter()
        .map(|(k, t)| (k, t.dims().to_vec()))
        .collect();
    // exactly torch's `Net().state_dict()` of pytorch/examples mnist/main.py
    let expect = [
        ("conv1.bias", vec![32]),
        ("conv1.weight", vec![32, 1, 3, 3]),
        ("conv2.bias", vec![64]),
        ("conv2.weight", vec![64, 32, 3, 3]),
        ("fc1.bias", vec![128]),
        ("fc1.weight", vec![128, 9216]),
        ("fc2.bias", vec![10]),
        ("fc2.weight", vec![10, 128]),
    ];
    assert_eq!(
        shapes,
        expect
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect::<Vec<_>>()
    );
    // PyTorch default init: |w| <= 1/sqrt(fan_in)
    let w = vm.data().lock().unwrap()["fc1.weight"].as_tensor().clone();
    let max: f32 = w.abs()?.max_all()?.to_scalar()?;
    assert!(max <= 1.0 / (9216f32).sqrt() + 1e-6);
    Ok(())
}

fn fixture_batch(n: usize) -> LabeledBatch {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../neka-common/tests/fixtures/mnist-sample");
    let d = vision::load_from_dir(VisionDatasetKind::Mnist, &dir).unwrap();
    let ds = d
        .train
        .to_dataset(&d.normalize_for(&d.train), &Device::Cpu)
        .unwrap();
    ds.batch(&(0..n).collect::<Vec<_>>()).unwrap()
}

/// Overfit one batch: the loss must fall below 0.05 within 200 steps.
#[test]
fn both_models_overfit_one_batch() -> R {
    for (name, n) in [("lenet5", 32), ("mnist-net", 16)] {
        neka_common::rng::seed(0);
        let batch = fixture_batch(n);
        let vm = VarMap::new();
        let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
        let (model, _) = CnnModel::from_name(name, 1, 28, 10, vb)?;
        let mut opt = Optimizer::new(OptimizerConfig::adamw(1e-3), &vm)?;
        let mut last = f32::MAX;
        let mut steps = 0;
        while steps < 200 {
            let out = Classifier(&model).step(&batch, &StepContext::train(0))?;
            last = out.loss.to_scalar()?;
            if last < 0.05 {
                break;
            }
            opt.backward_step(&out.loss)?;
            steps += 1;
        }
        assert!(last < 0.05, "{name}: loss {last} after {steps} steps");
        let logits = model.forward_t(&batch.x, false)?;
        let acc: f32 = logits
            .argmax(1)?
            .eq(&batch.y)?
            .to_dtype(DType::F32)?
            .mean_all()?
            .to_scalar()?;
        assert_eq!(acc, 1.0, "{name}");
    }
    Ok(())
}

/// A model directory from an untrusted source is checked before use: a `normalize` that
/// would divide by nothing or by zero, a class list of the wrong length, an `image_size`
/// whose layers would need terabytes, all refused with the field named.
#[test]
fn untrusted_model_records_are_refused_naming_the_field() {
    use neka_cnn::loaded_model::LoadedModel;
    use neka_common::checkpoint::{self, CheckpointInfo};
    let dir = tempfile::tempdir().unwrap();
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
    let (_, cfg) = CnnModel::from_name("mnist-net", 1, 28, 10, vb).unwrap();
    let mut info = CheckpointInfo::new("mnist-net", &cfg, "mnist").unwrap();
    info.normalize = Some(neka_common::data::Normalize {
        mean: vec![0.1307],
        std: vec![0.3081],
    });
    info.classes = (0..10).map(|i| i.to_string()).collect();
    checkpoint::save_model(dir.path(), &vm, &info).unwrap();
    LoadedModel::load(dir.path(), &Device::Cpu).expect("the good record loads");

    let refused = |edit: &dyn Fn(&mut CheckpointInfo), needles: &[&str]| {
        let mut bad = info.clone();
        edit(&mut bad);
        checkpoint::save_model(dir.path(), &vm, &bad).unwrap();
        let e = LoadedModel::load(dir.path(), &Device::Cpu)
            .err()
            .expect("should be refused")
            .to_string();
        for n in needles {
            assert!(e.contains(n), "expected `{n}` in: {e}");
        }
    };
    refused(
        &|i| i.normalize.as_mut().unwrap().std.clear(),
        &["normalize", "1 mean(s) and 0 std(s)"],
    );
    refused(
        &|i| i.normalize.as_mut().unwrap().std[0] = 0.0,
        &["normalize", "std 0", "≥ 1e-6"],
    );
    refused(
        &|i| i.classes.truncate(9),
        &["classes", "9 classes", "10 outputs"],
    );
    refused(
        &|i| i.config["image_size"] = 100_000.into(),
        &["fc1.weight", "the file holds [128, 9216]"],
    );
    refused(
        &|i| i.config["in_channels"] = 1_000_000_000.into(),
        &["conv1.weight", "the file holds [32, 1, 3, 3]"],
    );
}
