//! The shared training loop: reproducibility, exact resume, NaN handling, outputs.

mod common;

use candle_core::Tensor;
use candle_nn::VarMap;
use common::{cfg, data, info, weights, Mlp};
use neka_common::data::LabeledBatch;
use neka_common::rng;
use neka_common::train::{Classifier, StepContext, StepOutput, StopReason, TrainModel, Trainer};

fn run(epochs: usize, out: &std::path::Path) -> (Vec<(String, Vec<f32>)>, Vec<f64>) {
    let (train, val) = data();
    rng::seed(5);
    let vm = VarMap::new();
    let model = Mlp::new(&vm);
    let mut t = Trainer::new(cfg(epochs), &vm, info(), out).unwrap();
    let r = t.fit(&Classifier(&model), &train, Some(&val)).unwrap();
    (
        weights(&vm),
        r.history.iter().map(|m| m.train_loss).collect(),
    )
}

#[test]
fn same_seed_same_loss_curve_and_outputs_written() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (wa, la) = run(2, a.path());
    let (wb, lb) = run(2, b.path());
    assert_eq!(la, lb);
    assert_eq!(wa, wb);
    assert!(la[1] < la[0], "loss should fall: {la:?}");
    for f in [
        "model.safetensors",
        "config.json",
        "metrics.jsonl",
        "metrics.csv",
        "curves.png",
        "checkpoint/state.json",
        "checkpoint/optimizer.safetensors",
    ] {
        assert!(a.path().join(f).is_file(), "{f} missing");
    }
    let jsonl = std::fs::read_to_string(a.path().join("metrics.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 2);
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(first["epoch"], 1);
    assert!(first["val_accuracy"].as_f64().unwrap() > 0.3);
    let csv = std::fs::read_to_string(a.path().join("metrics.csv")).unwrap();
    assert!(csv.starts_with("epoch,step,lr,train_loss"));
    let png = std::fs::read(a.path().join("curves.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(info["model"], "mlp");
    assert!(info["metrics"]["val_accuracy"].as_f64().is_some());
}

#[test]
fn resume_after_an_epoch_is_bit_exact() {
    let straight = tempfile::tempdir().unwrap();
    let (w_straight, l_straight) = run(3, straight.path());

    let split = tempfile::tempdir().unwrap();
    let _ = run(1, split.path());
    // a fresh process would start here: different seed state, fresh model
    let (train, val) = data();
    rng::seed(999);
    let vm = VarMap::new();
    let model = Mlp::new(&vm);
    let mut t = Trainer::new(cfg(3), &vm, info(), split.path()).unwrap();
    t.resume(split.path()).unwrap();
    assert_eq!(t.epochs_done(), 1);
    let r = t.fit(&Classifier(&model), &train, Some(&val)).unwrap();
    assert_eq!(r.history.len(), 3);
    assert_eq!(
        r.history.iter().map(|m| m.train_loss).collect::<Vec<_>>(),
        l_straight
    );
    assert_eq!(
        weights(&vm),
        w_straight,
        "resumed weights differ from an uninterrupted run"
    );
}

/// Returns a NaN loss from the `at`-th training step on.
struct NanAfter<'a> {
    inner: Classifier<'a, Mlp>,
    calls: std::cell::Cell<usize>,
    at: usize,
}

impl TrainModel for NanAfter<'_> {
    type Batch = LabeledBatch;
    fn step(&self, b: &LabeledBatch, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let mut out = self.inner.step(b, ctx)?;
        if ctx.train {
            self.calls.set(self.calls.get() + 1);
            if self.calls.get() >= self.at {
                out.loss = (out.loss * f64::NAN)?;
            }
        }
        Ok(out)
    }
}

#[test]
fn nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint() {
    let out = tempfile::tempdir().unwrap();
    let (train, val) = data();
    rng::seed(5);
    let vm = VarMap::new();
    let mlp = Mlp::new(&vm);
    let model = NanAfter {
        inner: Classifier(&mlp),
        calls: 0.into(),
        at: 12,
    }; // 10 batches an epoch
    let mut t = Trainer::new(cfg(3), &vm, info(), out.path()).unwrap();
    let err = t.fit(&model, &train, Some(&val)).unwrap_err().to_string();
    assert!(
        err.contains("NaN") && err.contains("epoch 2") && err.contains("checkpoint"),
        "{err}"
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("checkpoint/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["epochs_done"], 1);
    // and the saved weights are finite
    let (tensors, _) = neka_common::checkpoint::load_tensors(
        &out.path().join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    for t in tensors.values() {
        let s: f32 = t.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(s.is_finite());
    }
}

#[test]
fn early_stopping_and_keep_best() {
    let out = tempfile::tempdir().unwrap();
    let (train, val) = data();
    rng::seed(5);
    let vm = VarMap::new();
    let mlp = Mlp::new(&vm);
    let mut c = cfg(50);
    c.patience = Some(2);
    c.optimizer = neka_common::optim::OptimizerConfig::sgd(1e-9); // learns nothing: no improvement
    let mut t = Trainer::new(c, &vm, info(), out.path()).unwrap();
    let r = t.fit(&Classifier(&mlp), &train, Some(&val)).unwrap();
    assert_eq!(r.stop, StopReason::EarlyStopped);
    assert!(r.history.len() < 50);
    assert!(r.best_epoch.is_some());
    let _ = Tensor::new(0f32, &candle_core::Device::Cpu);
}
