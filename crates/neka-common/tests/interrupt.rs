//! Ctrl-C in the middle of an epoch: finish the batch, save, and a resumed run ends with the
//! same weights as one never stopped. (Own test binary: the stop flag is process-wide.)

mod common;

use candle_nn::VarMap;
use common::{cfg, data, info, weights, Mlp};
use neka_common::data::LabeledBatch;
use neka_common::rng;
use neka_common::train::{
    request_stop, Classifier, StepContext, StepOutput, StopReason, TrainModel, Trainer,
};

struct StopAt<'a> {
    inner: Classifier<'a, Mlp>,
    calls: std::cell::Cell<usize>,
    at: usize,
}

impl TrainModel for StopAt<'_> {
    type Batch = LabeledBatch;
    fn step(&self, b: &LabeledBatch, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        if ctx.train {
            self.calls.set(self.calls.get() + 1);
            if self.calls.get() == self.at {
                request_stop(); // what the Ctrl-C handler does
            }
        }
        self.inner.step(b, ctx)
    }
}

#[test]
fn ctrl_c_mid_epoch_then_resume_is_bit_exact() {
    let (train, val) = data();
    let straight = tempfile::tempdir().unwrap();
    rng::seed(5);
    let vm = VarMap::new();
    let m = Mlp::new(&vm);
    let r = Trainer::new(cfg(2), &vm, info(), straight.path())
        .unwrap()
        .fit(&Classifier(&m), &train, Some(&val))
        .unwrap();
    let expect = weights(&vm);
    let expect_loss: Vec<f64> = r.history.iter().map(|m| m.train_loss).collect();

    let out = tempfile::tempdir().unwrap();
    rng::seed(5);
    let vm = VarMap::new();
    let m = Mlp::new(&vm);
    let model = StopAt {
        inner: Classifier(&m),
        calls: 0.into(),
        at: 14,
    }; // epoch 2, batch 4 of 10
    let r = Trainer::new(cfg(2), &vm, info(), out.path())
        .unwrap()
        .fit(&model, &train, Some(&val))
        .unwrap();
    assert_eq!(r.stop, StopReason::Interrupted);
    assert_eq!(r.history.len(), 1);

    rng::seed(12345);
    let vm = VarMap::new();
    let m = Mlp::new(&vm);
    let mut t = Trainer::new(cfg(2), &vm, info(), out.path()).unwrap();
    t.resume(out.path()).unwrap();
    let r = t.fit(&Classifier(&m), &train, Some(&val)).unwrap();
    assert_eq!(r.stop, StopReason::Completed);
    assert_eq!(
        r.history.iter().map(|m| m.train_loss).collect::<Vec<_>>(),
        expect_loss
    );
    assert_eq!(weights(&vm), expect);
}
