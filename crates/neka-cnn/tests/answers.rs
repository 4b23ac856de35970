//! A CNN that cannot answer is refused: an extreme weight or a preprocessing record that
//! blows pixels up fails at load time naming the model directory; non-finite probabilities
//! are an error, not "NaN%"; what is not a regular file is refused before it is opened.

use candle_core::{Device, Tensor};
use neka_cnn::loaded_model::LoadedModel;
use neka_testing::damage;
use std::path::{Path, PathBuf};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/mnist-cnn")
}

#[test]
fn a_cnn_with_an_extreme_weight_is_refused_naming_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cnn-extreme");
    damage::copy_model_dir(&shipped(), &dir).unwrap();
    LoadedModel::load(&dir, &Device::Cpu).expect("the copy loads");
    damage::set_weight(&dir.join("model.safetensors"), "fc2.weight", 3, 3e38).unwrap();
    damage::assert_unusable(LoadedModel::load(&dir, &Device::Cpu), &dir, "fc2.weight");
}

#[test]
fn a_tiny_normalisation_std_is_refused_naming_the_model_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cnn-std");
    damage::copy_model_dir(&shipped(), &dir).unwrap();
    damage::set_record_field(
        &dir,
        "normalize",
        serde_json::json!({"mean": [0.1307], "std": [1e-45]}),
    )
    .unwrap();
    let e = LoadedModel::load(&dir, &Device::Cpu)
        .err()
        .expect("refused");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&dir.display().to_string())
            && msg.contains("field `normalize`")
            && msg.contains("e-45 must be a finite number ≥ 1e-6")
            && msg.contains("0.3081"),
        "{msg}"
    );
    // a std that is merely small passes the record, and a blank image still answers
    damage::set_record_field(
        &dir,
        "normalize",
        serde_json::json!({"mean": [0.1307], "std": [0.01]}),
    )
    .unwrap();
    LoadedModel::load(&dir, &Device::Cpu).expect("a std of 0.01 is usable");
}

#[test]
fn non_finite_probabilities_are_an_error_not_nan_percent() {
    let m = LoadedModel::load(&shipped(), &Device::Cpu).unwrap();
    let x = Tensor::full(f32::INFINITY, (1, 1, 28, 28), &Device::Cpu).unwrap();
    for e in [
        m.top_k(&x, 3).unwrap_err(),
        m.top_class(&x).unwrap_err(),
        m.read(&x).unwrap_err(),
    ] {
        assert!(
            matches!(e, neka_common::Error::NonFiniteOutput(_))
                && e.to_string().contains("class probabilities"),
            "{e}"
        );
    }
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_before_it_is_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("digit.png");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: no mkfifo here");
        return;
    }
    let m = LoadedModel::load(&shipped(), &Device::Cpu).unwrap();
    // would block forever if the FIFO were opened (no writer)
    let r = m
        .classify_files(&[&fifo, &tmp.path().to_path_buf()], 3)
        .unwrap();
    let e0 = r[0].as_ref().unwrap_err().to_string();
    assert!(e0.contains("digit.png") && e0.contains("a FIFO"), "{e0}");
    let e1 = r[1].as_ref().unwrap_err().to_string();
    assert!(e1.contains("a directory"), "{e1}");
}
