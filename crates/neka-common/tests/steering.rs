//! Steering the trainer: the monitored metric and its direction, the epoch hook's metrics,
//! weight averaging inside the trainer (and across `--resume`), the step context.

mod common;

use candle_nn::VarMap;
use common::{cfg, data, info, weights, Mlp};
use neka_common::data::LabeledBatch;
use neka_common::rng;
use neka_common::train::{
    Classifier, Goal, Monitor, StepContext, StepOutput, TrainConfig, TrainModel, Trainer,
};
use std::cell::RefCell;

#[test]
fn monitor_parses_names_and_directions() {
    assert_eq!(
        Monitor::parse("val_loss").unwrap(),
        Monitor::min("val_loss")
    );
    assert_eq!(Monitor::parse("val_perplexity").unwrap().goal, Goal::Min);
    assert_eq!(
        Monitor::parse("val_bleu").unwrap(),
        Monitor::max("val_bleu")
    );
    assert_eq!(Monitor::parse("val_loss:max").unwrap().goal, Goal::Max);
    for bad in ["", "val_bleu:up", "val bleu"] {
        let e = Monitor::parse(bad).unwrap_err().to_string();
        assert!(e.starts_with("invalid monitor:"), "{bad}: {e}");
    }
    assert!(Monitor::min("val_loss").better(1.0, 2.0));
    assert!(
        !Monitor::max("val_accuracy").better(0.5, 0.5),
        "a tie is no improvement"
    );
}

/// Runs `epochs` epochs with `monitor` and a hook that reports a made-up metric `score`
/// falling by epoch (so `val_score:min` keeps the last epoch, `:max` the first).
fn run_with(cfg: TrainConfig, out: &std::path::Path) -> neka_common::train::FitReport {
    let (train, val) = data();
    rng::seed(5);
    let vm = VarMap::new();
    let model = Mlp::new(&vm);
    let mut t = Trainer::new(cfg, &vm, info(), out).unwrap();
    let seen = RefCell::new(Vec::new());
    let r = t
        .fit_with(&Classifier(&model), &train, Some(&val), |m| {
            // the hook sees the epoch's validation metrics, already measured
            seen.borrow_mut()
                .push((m.epoch, m.val_loss.is_some(), m.extra.is_empty()));
            Ok(vec![("score".into(), 10.0 - m.epoch as f64)])
        })
        .unwrap();
    assert!(seen
        .borrow()
        .iter()
        .all(|&(_, has_val, fresh)| has_val && fresh));
    r
}

#[test]
fn the_monitored_metric_picks_the_best_epoch_in_its_direction() {
    let dir = tempfile::tempdir().unwrap();
    let down = run_with(
        TrainConfig {
            monitor: Some(Monitor::min("val_score")),
            ..cfg(3)
        },
        dir.path(),
    );
    assert_eq!(down.best_epoch, Some(3));
    assert_eq!(down.best_score, Some(7.0));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(record["metrics"]["val_score"], 7.0);
    assert_eq!(record["metrics"]["epoch"], 3.0);
    // the hook's metric is a column of metrics.csv
    let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with(",val_score"), "{csv}");
    assert!(csv.lines().nth(3).unwrap().ends_with(",7"), "{csv}");

    let dir = tempfile::tempdir().unwrap();
    let patience = TrainConfig {
        monitor: Some(Monitor::max("val_score")),
        patience: Some(1),
        ..cfg(3)
    };
    let up = run_with(patience, dir.path());
    assert_eq!(up.best_epoch, Some(1));
    assert_eq!(
        up.history.len(),
        2,
        "patience 1 stops after the first epoch without a better score"
    );
    assert_eq!(up.stop, neka_common::train::StopReason::EarlyStopped);

    // A metric nobody measures is an error that names it and what was measured.
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = data();
    let vm = VarMap::new();
    let model = Mlp::new(&vm);
    let bad = TrainConfig {
        monitor: Some(Monitor::max("val_bleu")),
        ..cfg(1)
    };
    let mut t = Trainer::new(bad, &vm, info(), dir.path()).unwrap();
    let e = t
        .fit(&Classifier(&model), &train, Some(&val))
        .unwrap_err()
        .to_string();
    assert!(e.contains("val_bleu") && e.contains("val_accuracy"), "{e}");
}

#[test]
fn weight_average_is_compared_kept_if_better_and_survives_resume() {
    let averaged = TrainConfig {
        average_last: 2,
        ..cfg(3)
    };
    // straight: 3 epochs, averaging epochs 2 and 3
    let straight = tempfile::tempdir().unwrap();
    let (train, val) = data();
    rng::seed(5);
    let vm = VarMap::new();
    let model = Mlp::new(&vm);
    let mut t = Trainer::new(averaged.clone(), &vm, info(), straight.path()).unwrap();
    let r = t.fit(&Classifier(&model), &train, Some(&val)).unwrap();
    let avg = r.average.clone().expect("an average report");
    assert_eq!((avg.first_epoch, avg.last_epoch), (2, 3));
    let acc = avg.metrics.val_accuracy.unwrap();
    let best = r.best_val_accuracy.unwrap();
    assert_eq!(
        avg.kept,
        acc > best,
        "kept exactly when better ({acc} vs {best})"
    );
    assert_eq!(
        r.kept_val_accuracy(),
        Some(if avg.kept { acc } else { best })
    );
    let avg_weights = weights(&vm); // the trainer leaves the average in the varmap

    // split: 2 epochs, then resume for the third; the saved running sum continues
    let split = tempfile::tempdir().unwrap();
    rng::seed(5);
    let vm = VarMap::new();
    let model = Mlp::new(&vm);
    let mut t = Trainer::new(averaged.clone(), &vm, info(), split.path()).unwrap();
    // stop after epoch 2 of the 3, as a Ctrl-C during its validation would
    let r1 = t
        .fit_with(&Classifier(&model), &train, Some(&val), |m| {
            if m.epoch == 2 {
                neka_common::train::request_stop();
            }
            Ok(Vec::new())
        })
        .unwrap();
    assert_eq!(r1.stop, neka_common::train::StopReason::Interrupted);
    assert!(split
        .path()
        .join("checkpoint/average.safetensors")
        .is_file());
    drop(t);
    rng::seed(999);
    let vm = VarMap::new();
    let model = Mlp::new(&vm);
    let mut t = Trainer::new(averaged, &vm, info(), split.path()).unwrap();
    t.resume(split.path()).unwrap();
    let r2 = t.fit(&Classifier(&model), &train, Some(&val)).unwrap();
    assert_eq!(r2.average.unwrap().metrics.val_accuracy, Some(acc));
    assert_eq!(weights(&vm), avg_weights, "resumed average differs");
}

/// Records the step context of every training step.
struct Recorder<'a> {
    inner: Classifier<'a, Mlp>,
    seen: RefCell<Vec<StepContext>>,
}

impl TrainModel for Recorder<'_> {
    type Batch = LabeledBatch;
    fn step(&self, b: &LabeledBatch, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        if ctx.train {
            self.seen.borrow_mut().push(*ctx);
        }
        self.inner.step(b, ctx)
    }
}

#[test]
fn step_context_counts_steps_across_epochs_and_resume() {
    let (train, val) = data();
    let dir = tempfile::tempdir().unwrap();
    rng::seed(5);
    let vm = VarMap::new();
    let model = Mlp::new(&vm);
    let rec = Recorder {
        inner: Classifier(&model),
        seen: RefCell::new(Vec::new()),
    };
    let mut t = Trainer::new(cfg(1), &vm, info(), dir.path()).unwrap();
    t.fit(&rec, &train, Some(&val)).unwrap();
    let first = rec.seen.borrow().clone();
    let per_epoch = first.len();
    assert!(per_epoch > 1);
    for (i, c) in first.iter().enumerate() {
        assert_eq!((c.step, c.epoch, c.batch, c.train), (i, 1, i, true));
    }
    drop(t);
    // a new process resumes: the context goes on from the saved step
    let vm = VarMap::new();
    let model = Mlp::new(&vm);
    let rec = Recorder {
        inner: Classifier(&model),
        seen: RefCell::new(Vec::new()),
    };
    let mut t = Trainer::new(cfg(2), &vm, info(), dir.path()).unwrap();
    t.resume(dir.path()).unwrap();
    t.fit(&rec, &train, Some(&val)).unwrap();
    let second = rec.seen.borrow();
    assert_eq!(second.len(), per_epoch);
    assert_eq!(
        (second[0].step, second[0].epoch, second[0].batch),
        (per_epoch, 2, 0)
    );
}
