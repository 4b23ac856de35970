//! Training on `NEKA_TEST_DEVICE` (CPU when unset; `cuda:0` in `scripts/gpu_check.sh`) equals
//! the plain candle-op reference on CPU: MnistNet's loss, every gradient, and the weights after
//! AdamW steps, with dropout on.
//!
//! On CPU this pits neka's kernels (convolution, pooling, dense layer, loss, in-place AdamW)
//! against their twins on a whole model; on a GPU it checks the device's path, which must be
//! the candle-op one (a wrong weight gradient, as candle's Metal `conv2d` gives, fails here).
//! The reference runs under `KernelPath::CandleOps`, the device under the default path.

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::VarMap;
use neka_cnn::CnnModel;
use neka_common::device::{device_name, test_device};
use neka_common::kernels::{self, KernelPath};
use neka_common::optim::{Optimizer, OptimizerConfig};
use neka_testing::rel_diff;

const TOL: f64 = 2e-4;

/// (loss of each step, gradients of step 1, weights after the last step), all on the CPU.
type Run = (Vec<f64>, Vec<(String, Tensor)>, Vec<(String, Tensor)>);

fn train_mnist_net(dev: &Device) -> Run {
    neka_common::rng::seed(11);
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, dev);
    let (net, _) = CnnModel::from_name("mnist-net", 1, 28, 10, vb).unwrap();
    let mut opt = Optimizer::new(OptimizerConfig::adamw(1e-3), &vm).unwrap();
    let pixels: Vec<f32> = (0..6 * 28 * 28).map(|i| (i as f32 * 0.37).sin()).collect();
    let x = Tensor::from_vec(pixels, (6, 1, 28, 28), &Device::Cpu).unwrap();
    let y = Tensor::new(&[3u32, 1, 4, 1, 5, 9], &Device::Cpu).unwrap();
    let (x, y) = (x.to_device(dev).unwrap(), y.to_device(dev).unwrap());
    let host = |t: &Tensor| t.to_device(&Device::Cpu).unwrap();
    let (mut losses, mut grads1) = (Vec::new(), Vec::new());
    for step in 0..3 {
        let logits = net.forward_t(&x, true).unwrap();
        let loss = neka_common::loss::cross_entropy(&logits, &y).unwrap();
        losses.push(
            loss.to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap(),
        );
        let grads = loss.backward().unwrap();
        if step == 0 {
            for (name, var) in opt.params() {
                grads1.push((name.clone(), host(grads.get(var).unwrap())));
            }
        }
        opt.step(&grads).unwrap();
    }
    let weights = opt
        .params()
        .iter()
        .map(|(n, v)| (n.clone(), host(v.as_tensor())))
        .collect();
    (losses, grads1, weights)
}

#[test]
fn training_on_the_test_device_equals_the_candle_reference_on_cpu() {
    let dev = test_device().unwrap();
    let (want_loss, want_g, want_w) =
        kernels::with_path(KernelPath::CandleOps, || train_mnist_net(&Device::Cpu));
    let (got_loss, got_g, got_w) = train_mnist_net(&dev);
    let name = device_name(&dev);
    for (s, (a, b)) in got_loss.iter().zip(&want_loss).enumerate() {
        assert!(
            (a - b).abs() < TOL * b.abs().max(1.0),
            "{name}: loss of step {s}: {a} vs {b}"
        );
    }
    let mut worst = 0f64;
    for (what, got, want, floor) in [
        ("gradient", &got_g, &want_g, 1e-12),
        ("weight", &got_w, &want_w, 1.0),
    ] {
        assert_eq!(got.len(), want.len());
        for ((n, a), (m, b)) in got.iter().zip(want) {
            assert_eq!(n, m);
            // max |a − b| / max(floor, max |b|). Gradients take a tiny floor (relative to their
            // own scale, which is ≪ 1: a wrongly scaled gradient fails); weights take 1
            // (absolute), because AdamW moves a weight whose gradient is ~0 by ±lr on the sign
            // of rounding noise.
            let e = rel_diff(a, b, floor).unwrap();
            assert!(
                e < TOL,
                "{name}: {what} of {n} differs by {e:.2e} (relative)"
            );
            worst = worst.max(e);
        }
    }
    println!("MnistNet on {name}: losses {got_loss:?}, worst relative error {worst:.1e}");
}
