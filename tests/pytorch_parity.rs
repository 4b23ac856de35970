//! neka's CNNs load state_dicts saved from PyTorch and reproduce PyTorch's outputs.
//! Fixtures: `scripts/make_pytorch_fixtures.py` (torch 2.15), committed in tests/fixtures/pytorch.
//! On `NEKA_TEST_DEVICE` (CPU when unset; `cuda:0` in `scripts/gpu_check.sh`), same tolerance.

use candle_core::{DType, ModuleT};
use candle_nn::VarMap;
use neka_cnn::CnnModel;
use neka_common::checkpoint;
use neka_common::kernels::KernelPath;
use neka_testing::max_abs_diff;
use std::path::Path;

fn check(name: &str, model: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch");
    let dev = neka_common::device::test_device().unwrap();
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &dev);
    let (net, _) = CnnModel::from_name(model, 1, 28, 10, vb).unwrap();
    // strict load: every PyTorch tensor has a neka parameter of the same name and shape
    checkpoint::load_into_varmap(&vm, &dir.join(format!("{name}.safetensors"))).unwrap();
    let (io, _) =
        checkpoint::load_tensors(&dir.join(format!("{name}_io.safetensors")), &dev).unwrap();
    for imp in [KernelPath::Fused, KernelPath::Im2col, KernelPath::CandleOps] {
        let _path = neka_common::kernels::use_path(imp);
        let logits = net.forward_t(&io["input"], false).unwrap();
        let log_probs = candle_nn::ops::log_softmax(&logits, 1).unwrap();
        let err = max_abs_diff(&log_probs, &io["log_probs"]).unwrap();
        let path = neka_cnn::conv::conv_path_at(
            &neka_cnn::Conv2dConfig::new(1, 1, 3),
            dev.location(),
            DType::F32,
        );
        println!("parity {name} ({imp:?} selected, {path:?} on {dev:?}): max err {err:.2e}");
        assert!(err < 1e-4, "{name}: max abs error {err} vs PyTorch");
    }
}

#[test]
fn mnist_net_matches_pytorch() {
    check("mnist_net", "mnist-net");
}

#[test]
fn lenet5_matches_pytorch() {
    check("lenet5", "lenet5");
}
