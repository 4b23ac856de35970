//! `--resume` and the monitored metric. A test binary of its own: the trainer's stop flag is
//! process-wide, and `steering.rs` stops a run through it.

mod common;

use candle_nn::VarMap;
use common::{cfg, data, info, Mlp};
use neka_common::rng;
use neka_common::train::{Classifier, Monitor, TrainConfig, Trainer};

/// `--resume` keeps the monitored metric: another one would compare its scores with the saved
/// best of the old metric, so the trainer refuses it and names `--monitor`.
#[test]
fn resume_refuses_another_monitored_metric() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = data();
    let run = |cfg: TrainConfig, resume: bool| {
        rng::seed(5);
        let vm = VarMap::new();
        let model = Mlp::new(&vm);
        let mut t = Trainer::new(cfg, &vm, info(), dir.path()).unwrap();
        if resume {
            t.resume(dir.path()).unwrap();
        }
        t.fit(&Classifier(&model), &train, Some(&val))
    };
    run(cfg(1), false).unwrap();
    let other = TrainConfig {
        monitor: Some(Monitor::min("val_loss")),
        ..cfg(2)
    };
    let e = run(other, true).unwrap_err().to_string();
    assert!(
        e.contains("saved run val_accuracy:max, this run val_loss:min")
            && e.contains("`monitor` val_accuracy:max"),
        "{e}"
    );
    // the same metric (here the model's default) resumes
    let r = run(cfg(2), true).unwrap();
    assert_eq!(r.history.len(), 2);
}
