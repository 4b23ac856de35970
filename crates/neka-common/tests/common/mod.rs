//! Shared helpers for neka-common's integration tests: a tiny MLP on real MNIST images.
#![allow(dead_code)]

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{Linear, VarMap};
use neka_common::checkpoint::CheckpointInfo;
use neka_common::data::vision::{self, VisionDatasetKind};
use neka_common::data::LabeledDataset;
use neka_common::nn::{linear, Dropout};
use neka_common::optim::OptimizerConfig;
use neka_common::train::TrainConfig;
use std::path::Path;

pub struct Mlp {
    fc1: Linear,
    drop: Dropout,
    fc2: Linear,
}

impl Mlp {
    pub fn new(varmap: &VarMap) -> Mlp {
        let vb = neka_common::init::seeded_var_builder(varmap, DType::F32, &Device::Cpu);
        Mlp {
            fc1: linear(784, 32, true, vb.pp("fc1")).unwrap(),
            drop: Dropout::new(0.2).unwrap(),
            fc2: linear(32, 10, true, vb.pp("fc2")).unwrap(),
        }
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let h = self.fc1.forward(&xs.flatten_from(1)?)?.relu()?;
        self.fc2.forward(&self.drop.forward_t(&h, train)?)
    }
}

pub fn data() -> (LabeledDataset, LabeledDataset) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mnist-sample");
    let d = vision::load_from_dir(VisionDatasetKind::Mnist, &dir).unwrap();
    let (train, val) = d.split_validation(100, 0).unwrap();
    let norm = d.normalize_for(&train);
    (
        train.to_dataset(&norm, &Device::Cpu).unwrap(),
        val.to_dataset(&norm, &Device::Cpu).unwrap(),
    )
}

pub fn cfg(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        eval_batch_size: 100,
        optimizer: OptimizerConfig::adamw(3e-3),
        seed: 5,
        ..TrainConfig::default()
    }
}

pub fn info() -> CheckpointInfo {
    CheckpointInfo::new("mlp", &serde_json::json!({"hidden": 32}), "mnist-sample").unwrap()
}

pub fn weights(varmap: &VarMap) -> Vec<(String, Vec<f32>)> {
    neka_common::checkpoint::varmap_tensors(varmap)
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}
