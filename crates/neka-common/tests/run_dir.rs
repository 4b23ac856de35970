//! What a run directory guarantees: locked, repaired after a kill, atomically replaced,
//! resumable only by the same run, never overwritten by a diverged epoch.

mod common;

use candle_nn::VarMap;
use common::{cfg, data, info, weights, Mlp};
use neka_common::checkpoint::{self, CheckpointInfo};
use neka_common::data::LabeledBatch;
use neka_common::rng;
use neka_common::train::{evaluate, Classifier, StepContext, StepOutput, TrainModel, Trainer};
use neka_common::Error;
use std::path::Path;

fn train(out: &Path, epochs: usize, info: CheckpointInfo) -> Trainer {
    let (train, val) = data();
    rng::seed(5);
    let vm = VarMap::new();
    let model = Mlp::new(&vm);
    let mut t = Trainer::new(cfg(epochs), &vm, info, out).unwrap();
    t.fit(&Classifier(&model), &train, Some(&val)).unwrap();
    t
}

fn with_vocab(words: &str) -> CheckpointInfo {
    let mut i = info();
    i.files.insert("vocab.json".into(), words.into());
    i
}

/// A fresh trainer on `out` resuming from it, as a new process would.
fn resume(
    out: &Path,
    c: neka_common::train::TrainConfig,
    info: CheckpointInfo,
) -> Result<Trainer, Error> {
    rng::seed(999);
    let vm = VarMap::new();
    let _model = Mlp::new(&vm);
    let mut t = Trainer::new(c, &vm, info, out)?;
    t.resume(out)?;
    Ok(t)
}

#[test]
fn a_second_trainer_on_the_same_directory_is_refused_until_the_first_is_done() {
    let out = tempfile::tempdir().unwrap();
    let vm = VarMap::new();
    let _m = Mlp::new(&vm);
    let first = Trainer::new(cfg(1), &vm, info(), out.path()).unwrap();
    let lock = std::fs::read_to_string(out.path().join(".neka.lock")).unwrap();
    assert!(
        lock.contains(&format!("pid {}", std::process::id())),
        "{lock}"
    );
    let err = Trainer::new(cfg(1), &vm, info(), out.path()).err().unwrap();
    assert!(matches!(err, Error::RunDirInUse { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("in use by another training")
            && msg.contains(&format!("pid {}", std::process::id()))
            && msg.contains("`out_dir`"),
        "{msg}"
    );
    drop(first);
    Trainer::new(cfg(1), &vm, info(), out.path()).expect("free again after the first is dropped");
}

#[test]
fn a_stale_lock_and_temporary_files_of_a_killed_run_are_cleaned_up() {
    let out = tempfile::tempdir().unwrap();
    drop(train(out.path(), 1, info()));
    // What `kill -9` during a save leaves: a lock file naming a dead process, temp files.
    std::fs::write(
        out.path().join(".neka.lock"),
        "pid 4194303 (started at unix time 1)\n",
    )
    .unwrap();
    let junk = [
        ".model.safetensors.4194303.tmp",
        ".config.json.4194303.tmp",
        "checkpoint/.state.json.4194303.tmp",
    ];
    for f in junk {
        std::fs::write(out.path().join(f), vec![0u8; 1 << 16]).unwrap();
    }
    std::fs::create_dir(out.path().join("checkpoint.tmp-4194303")).unwrap();
    std::fs::write(
        out.path().join("checkpoint.tmp-4194303/model.safetensors"),
        b"partial",
    )
    .unwrap();

    let vm = VarMap::new();
    let _m = Mlp::new(&vm);
    let t = Trainer::new(cfg(1), &vm, info(), out.path()).unwrap();
    for f in junk.iter().chain(&["checkpoint.tmp-4194303"]) {
        assert!(!out.path().join(f).exists(), "{f} left behind");
    }
    drop(t);
    // The run itself is untouched and loads.
    checkpoint::read_info(out.path()).unwrap();
}

#[test]
fn a_kill_between_the_checkpoint_renames_falls_back_to_checkpoint_old() {
    let out = tempfile::tempdir().unwrap();
    drop(train(out.path(), 1, info()));
    // The moment between `checkpoint -> checkpoint.old` and `checkpoint.tmp -> checkpoint`.
    std::fs::rename(
        out.path().join("checkpoint"),
        out.path().join("checkpoint.old"),
    )
    .unwrap();
    let t = resume(out.path(), cfg(2), info()).unwrap();
    assert_eq!(t.epochs_done(), 1);
    assert!(
        out.path().join("checkpoint/state.json").is_file(),
        "restored"
    );
    assert!(!out.path().join("checkpoint.old").exists());
}

#[test]
fn the_weights_file_is_the_commit_point_and_stale_copies_are_rewritten() {
    let out = tempfile::tempdir().unwrap();
    drop(train(out.path(), 2, with_vocab("{\"tokens\": [\"a\"]}\n")));
    let record = checkpoint::read_info(out.path()).unwrap();
    // A kill after the weights' rename but before config.json's: an older config.json and
    // vocabulary beside the new weights.
    let cfg_path = out.path().join("config.json");
    let mut old: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    old["metrics"]["epoch"] = 1.0.into();
    std::fs::write(&cfg_path, old.to_string()).unwrap();
    std::fs::write(out.path().join("vocab.json"), "{\"tokens\": [\"b\"]}\n").unwrap();
    // Loaders read the record in the weights, never the stale copy.
    assert_eq!(checkpoint::read_info(out.path()).unwrap(), record);
    let (text, _) = checkpoint::read_companion(out.path(), &record, "vocab.json").unwrap();
    assert!(text.contains("\"a\""), "{text}");
    // The next run in the directory rewrites the copies.
    let vm = VarMap::new();
    let _m = Mlp::new(&vm);
    drop(Trainer::new(cfg(1), &vm, info(), out.path()).unwrap());
    let fixed: CheckpointInfo = checkpoint::read_json(&cfg_path).unwrap();
    assert_eq!(fixed.metrics, record.metrics);
    assert!(std::fs::read_to_string(out.path().join("vocab.json"))
        .unwrap()
        .contains("\"a\""));
}

#[test]
fn companion_files_are_written_with_the_first_saved_model_not_before() {
    let out = tempfile::tempdir().unwrap();
    let vm = VarMap::new();
    let _m = Mlp::new(&vm);
    let t = Trainer::new(
        cfg(1),
        &vm,
        with_vocab("{\"tokens\": [\"a\"]}\n"),
        out.path(),
    )
    .unwrap();
    assert!(!out.path().join("vocab.json").exists());
    assert!(!out.path().join("config.json").exists());
    drop(t);
    drop(train(out.path(), 1, with_vocab("{\"tokens\": [\"a\"]}\n")));
    assert!(out.path().join("vocab.json").is_file());
}

#[test]
fn resume_refuses_a_run_that_differs_in_what_defines_it() {
    let out = tempfile::tempdir().unwrap();
    drop(train(out.path(), 1, with_vocab("{\"tokens\": [\"a\"]}\n")));
    let before = std::fs::read(out.path().join("model.safetensors")).unwrap();
    let mismatch = |c: neka_common::train::TrainConfig, i: CheckpointInfo, needles: &[&str]| {
        let err = resume(out.path(), c, i).err().expect("should refuse");
        assert!(matches!(err, Error::ResumeMismatch { .. }), "{err}");
        let msg = err.to_string();
        for n in needles {
            assert!(msg.contains(n), "expected `{n}` in: {msg}");
        }
        assert!(msg.contains("only `epochs`"), "{msg}");
    };
    let mut other = with_vocab("{\"tokens\": [\"a\"]}\n");
    other.dataset = "fashion-mnist".into();
    mismatch(
        cfg(2),
        other,
        &["dataset: saved run mnist-sample, this run fashion-mnist"],
    );
    let mut other = with_vocab("{\"tokens\": [\"a\"]}\n");
    other.config = serde_json::json!({"hidden": 64});
    mismatch(cfg(2), other, &["config.hidden: saved run 32, this run 64"]);
    let mut other = with_vocab("{\"tokens\": [\"a\"]}\n");
    other.data.insert("val_size".into(), 500.into());
    mismatch(cfg(2), other, &["data.val_size"]);
    // a permuted vocabulary of the same size
    mismatch(
        cfg(2),
        with_vocab("{\"tokens\": [\"b\"]}\n"),
        &["vocab.json"],
    );
    let mut c = cfg(2);
    c.batch_size = 16;
    c.seed = 6;
    c.optimizer = neka_common::optim::OptimizerConfig::sgd(0.1);
    mismatch(
        c,
        with_vocab("{\"tokens\": [\"a\"]}\n"),
        &[
            "batch size: saved run 32, this run 16",
            "seed: saved run 5",
            "optimizer",
        ],
    );
    // Nothing was touched by the refused attempts.
    assert_eq!(
        std::fs::read(out.path().join("model.safetensors")).unwrap(),
        before
    );
    // What may change does: more epochs, another learning rate and patience.
    let mut c = cfg(3);
    c.optimizer = neka_common::optim::OptimizerConfig::adamw(1e-4);
    c.patience = Some(2);
    let t = resume(out.path(), c, with_vocab("{\"tokens\": [\"a\"]}\n")).unwrap();
    assert_eq!(t.epochs_done(), 1);
}

/// A model whose validation loss is NaN from epoch `from` on (training stays finite).
struct NanValidation<'a> {
    inner: Classifier<'a, Mlp>,
    evals: std::cell::Cell<usize>,
    from: usize,
}

impl TrainModel for NanValidation<'_> {
    type Batch = LabeledBatch;
    fn step(&self, b: &LabeledBatch, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let mut out = self.inner.step(b, ctx)?;
        if !ctx.train {
            self.evals.set(self.evals.get() + 1); // one validation batch per epoch
            if self.evals.get() >= self.from {
                out.loss = (out.loss * f64::NAN)?;
            }
        }
        Ok(out)
    }
}

fn nan_run(out: &Path, from: usize) -> String {
    let (train, val) = data();
    rng::seed(5);
    let vm = VarMap::new();
    let mlp = Mlp::new(&vm);
    let model = NanValidation {
        inner: Classifier(&mlp),
        evals: 0.into(),
        from,
    };
    let mut t = Trainer::new(cfg(3), &vm, info(), out).unwrap();
    t.fit(&model, &train, Some(&val)).unwrap_err().to_string()
}

#[test]
fn a_nan_validation_loss_leaves_the_last_good_state_untouched() {
    let out = tempfile::tempdir().unwrap();
    let err = nan_run(out.path(), 2);
    assert!(
        err.contains("after epoch 2 the validation loss is NaN")
            && err.contains("nothing of epoch 2 was saved")
            && err.contains("after epoch 1")
            && err.contains("`resume`"),
        "{err}"
    );
    // config.json and state.json still parse (no JSON null), and describe epoch 1.
    let saved = checkpoint::read_info(out.path()).unwrap();
    assert_eq!(saved.metrics["epoch"], 1.0);
    let on_disk: CheckpointInfo = checkpoint::read_json(&out.path().join("config.json")).unwrap();
    assert_eq!(on_disk.metrics, saved.metrics);
    let state: serde_json::Value =
        checkpoint::read_json(&out.path().join("checkpoint/state.json")).unwrap();
    assert_eq!(state["epochs_done"], 1);
    // and the run resumes from there.
    let t = resume(out.path(), cfg(3), info()).unwrap();
    assert_eq!(t.epochs_done(), 1);
}

#[test]
fn a_nan_in_epoch_one_saves_nothing_and_says_so() {
    let out = tempfile::tempdir().unwrap();
    let err = nan_run(out.path(), 1);
    assert!(err.contains("No checkpoint had been saved yet"), "{err}");
    assert!(!out.path().join("model.safetensors").exists());
    assert!(!out.path().join("checkpoint").exists());
}

#[test]
fn empty_validation_and_evaluation_sets_are_errors() {
    let out = tempfile::tempdir().unwrap();
    let (train, val) = data();
    let empty = neka_common::data::LabeledDataset {
        x: val.x.narrow(0, 0, 0).unwrap(),
        y: val.y.narrow(0, 0, 0).unwrap(),
    };
    let vm = VarMap::new();
    let mlp = Mlp::new(&vm);
    let mut t = Trainer::new(cfg(1), &vm, info(), out.path()).unwrap();
    let err = t
        .fit(&Classifier(&mlp), &train, Some(&empty))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("validation data") && err.contains("is empty"),
        "{err}"
    );
    assert!(!out.path().join("model.safetensors").exists());
    let err = evaluate(&Classifier(&mlp), &empty, 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing to score"), "{err}");
}

#[test]
fn non_finite_or_integer_weights_are_refused_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    let vm = VarMap::new();
    let _m = Mlp::new(&vm);
    let before = weights(&vm);
    let mut tensors = checkpoint::varmap_tensors(&vm);
    let w = &mut tensors[0].1;
    let mut v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    v[7] = f32::NAN;
    *w = candle_core::Tensor::from_vec(v, w.shape(), &candle_core::Device::Cpu).unwrap();
    checkpoint::save_tensors(&p, &tensors, None).unwrap();
    let err = checkpoint::load_into_varmap(&vm, &p)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("non-finite") && err.contains(&tensors[0].0),
        "{err}"
    );

    let mut tensors = checkpoint::varmap_tensors(&vm);
    tensors[1].1 = tensors[1].1.to_dtype(candle_core::DType::I64).unwrap();
    checkpoint::save_tensors(&p, &tensors, None).unwrap();
    let err = checkpoint::load_into_varmap(&vm, &p)
        .unwrap_err()
        .to_string();
    assert!(err.contains("floating point"), "{err}");
    // Nothing was assigned by the failed loads.
    assert_eq!(weights(&vm), before);
}

#[test]
fn a_config_asking_for_more_than_the_file_holds_fails_before_allocating() {
    let out = tempfile::tempdir().unwrap();
    drop(train(out.path(), 1, info()));
    // A loader whose config asks for a 2^40-element layer: refused from the header alone.
    let err = checkpoint::load_model(out.path(), &candle_core::Device::Cpu, |vb| {
        neka_common::nn::linear(784, 1 << 30, true, vb.pp("fc1")).map_err(Error::from)
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("fc1.weight") && err.contains("[1073741824, 784]"),
        "{err}"
    );
}

#[test]
fn a_kill_between_the_checkpoint_and_the_best_model_is_repaired() {
    let out = tempfile::tempdir().unwrap();
    drop(train(out.path(), 1, with_vocab("{\"tokens\": [\"a\"]}\n")));
    // An improving epoch saves its checkpoint, then the best model: a kill between the two
    // (here in the first epoch, which is always the best) leaves no best model yet.
    for f in ["model.safetensors", "config.json", "vocab.json"] {
        std::fs::remove_file(out.path().join(f)).unwrap();
    }
    let t = resume(out.path(), cfg(2), with_vocab("{\"tokens\": [\"a\"]}\n")).unwrap();
    assert_eq!(t.epochs_done(), 1);
    assert_eq!(
        std::fs::read(out.path().join("model.safetensors")).unwrap(),
        std::fs::read(out.path().join("checkpoint/model.safetensors")).unwrap(),
        "the best model is restored from the checkpoint of its epoch"
    );
    assert!(out.path().join("config.json").is_file());
    assert!(out.path().join("vocab.json").is_file());
    assert_eq!(
        checkpoint::read_info(out.path()).unwrap().metrics["epoch"],
        1.0
    );
}

#[test]
fn resume_checks_the_best_model_before_anything_changes() {
    let run = tempfile::tempdir().unwrap();
    drop(train(run.path(), 1, info()));
    let best = run.path().join("model.safetensors");
    let bytes = std::fs::read(&best).unwrap();
    std::fs::write(&best, &bytes[..bytes.len() / 2]).unwrap();
    let before = neka_testing::snapshot(run.path());
    // Resumed into another --out, so that no repair of `run` happens first.
    let other = tempfile::tempdir().unwrap();
    rng::seed(999);
    let vm = VarMap::new();
    let _model = Mlp::new(&vm);
    let untouched = checkpoint::varmap_tensors(&vm);
    let mut t = Trainer::new(cfg(2), &vm, info(), other.path()).unwrap();
    let Err(e) = t.resume(run.path()) else {
        panic!("resume accepted a truncated best model")
    };
    let msg = e.to_string();
    assert!(
        msg.contains("model.safetensors")
            && msg.contains("best model (epoch 1)")
            && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert_eq!(t.epochs_done(), 0);
    assert_eq!(
        neka_testing::snapshot(run.path()),
        before,
        "a refused resume changed the run"
    );
    assert!(!other.path().join("model.safetensors").exists());
    for ((n, a), (_, b)) in untouched.iter().zip(checkpoint::varmap_tensors(&vm)) {
        let d = (a - &b).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{n} changed");
    }
}

#[test]
fn resume_into_another_out_carries_the_best_model_over() {
    let run = tempfile::tempdir().unwrap();
    drop(train(run.path(), 1, info()));
    let other = tempfile::tempdir().unwrap();
    rng::seed(999);
    let vm = VarMap::new();
    let _model = Mlp::new(&vm);
    let mut t = Trainer::new(cfg(2), &vm, info(), other.path()).unwrap();
    t.resume(run.path()).unwrap();
    assert_eq!(
        std::fs::read(other.path().join("model.safetensors")).unwrap(),
        std::fs::read(run.path().join("model.safetensors")).unwrap()
    );
    assert!(other.path().join("config.json").is_file());
}
