//! The `mnist_cnn` command line, run as users run it: good paths work end to end, bad input
//! exits non-zero with a message naming the problem, never a panic.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{
    assert_clean_failure, assert_saved_model, command, fixture, last_json, multi30k_data,
    run as run_example, run_ok, stdout, tag, text, train_ok, ud_data,
};

fn mnist() -> PathBuf {
    fixture("mnist-sample")
}

/// `mnist_cnn` with `args`, and the environment variables `envs` set.
fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    command("mnist_cnn", args)
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

/// Trains a tiny model on the fixture (dry run) and returns its directory.
fn dry_run(out: &Path) {
    let o = train_ok(
        "mnist_cnn",
        &[
            "--data-dir",
            mnist().to_str().unwrap(),
            "--dry-run",
            "--val-size",
            "100",
        ],
        out,
    );
    let t = text(&o);
    assert!(
        t.contains("conv1") && t.contains("total: 1,199,882 parameters"),
        "summary missing: {t}"
    );
    assert_saved_model(out, "metrics.jsonl metrics.csv curves.png");
}

/// Numeric options out of range stop before anything is written, naming the flag and range.
#[test]
fn out_of_range_numbers_fail_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let data = mnist();
    for (flags, needle) in [
        (vec!["--epochs", "0"], "--epochs"),
        (vec!["--clip-grad-norm=-1"], "--clip-grad-norm"),
        (vec!["--clip-grad-norm", "inf"], "--clip-grad-norm"),
        (vec!["--patience", "0"], "--patience"),
        (vec!["--max-batches", "0"], "--max-batches"),
        (vec!["--lr", "nan"], "--lr"),
        (vec!["--schedule", "step:0"], "--schedule"),
        (vec!["--schedule", "cosine:0"], "--schedule"),
        (vec!["--schedule=step:1:-0.5"], "--schedule"),
    ] {
        let out = dir.path().join(flags.join("_").replace([':', '='], "-"));
        let mut args = vec!["--data-dir", data.to_str().unwrap(), "--val-size", "100"];
        args.extend(["--device", "cpu", "--out", out.to_str().unwrap()]);
        args.extend(flags.iter().copied());
        let o = run(&args, &[]);
        assert_clean_failure(&o, &[needle]);
        assert!(!out.exists(), "{flags:?} wrote {}", out.display());
    }
}

#[test]
fn missing_data_dir_fails_cleanly() {
    let o = run(&["--data-dir", "/definitely/not/here", "--dry-run"], &[]);
    assert_clean_failure(&o, &["/definitely/not/here", "does not exist"]);
    let o = run(&["--dry-run"], &[("NEKA_DATA_DIR", "/also/not/here")]);
    assert_clean_failure(&o, &["/also/not/here"]);
    // no data dir at all, offline: the error tells both ways to get the data
    let o = run(&["--dry-run"], &[]);
    assert_clean_failure(&o, &["--data-dir", "NEKA_DATA_DIR", "Hub"]);
}

#[test]
fn corrupt_file_fails_cleanly_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("mnist");
    std::fs::create_dir(&m).unwrap();
    for f in std::fs::read_dir(mnist()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), m.join(f.file_name())).unwrap();
    }
    let bytes = std::fs::read(m.join("train-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(
        m.join("train-images-idx3-ubyte.gz"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let o = run(
        &["--data-dir", d.path().to_str().unwrap(), "--dry-run"],
        &[],
    );
    assert_clean_failure(&o, &["train-images-idx3-ubyte.gz"]);
}

#[test]
fn cuda_in_a_cpu_build_names_the_feature() {
    if cfg!(feature = "cuda") {
        return;
    }
    let o = run(
        &[
            "--data-dir",
            mnist().to_str().unwrap(),
            "--device",
            "cuda",
            "--dry-run",
        ],
        &[],
    );
    assert_clean_failure(&o, &["--features cuda"]);
}

#[test]
fn train_eval_predict_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("model");
    dry_run(&model);

    // eval: the last line is JSON
    let o = run_ok(
        "mnist_cnn",
        &[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data-dir",
            mnist().to_str().unwrap(),
            "--device",
            "cpu",
        ],
    );
    let last = last_json(&o);
    assert_eq!(last["split"], "test");
    assert_eq!(last["samples"], 200);
    assert_eq!(last["dataset"], "mnist");
    // the same 200 test images the training scored: eval gives the recorded test accuracy
    let record = neka_common::checkpoint::read_info(&model).unwrap();
    assert_eq!(
        last["accuracy"].as_f64(),
        record.metrics.get("test_accuracy").copied()
    );

    // predict: a real digit, drawn black on white (gets inverted), at another size
    let data = neka_common::data::vision::load_from_dir(
        neka_common::data::VisionDatasetKind::Mnist,
        &mnist(),
    )
    .unwrap();
    let px: Vec<u8> = data.test.images.pixels[..784]
        .iter()
        .map(|p| 255 - p)
        .collect();
    let img = image::GrayImage::from_raw(28, 28, px).unwrap();
    let big = image::imageops::resize(&img, 84, 84, image::imageops::FilterType::Nearest);
    let png = d.path().join("seven.png");
    big.save(&png).unwrap();
    let jpg = d.path().join("seven.jpg");
    image::DynamicImage::ImageLuma8(img)
        .to_rgb8()
        .save(&jpg)
        .unwrap();
    let o = run_ok(
        "mnist_cnn",
        &[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            png.to_str().unwrap(),
            jpg.to_str().unwrap(),
        ],
    );
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.lines().all(|l| l.matches('%').count() == 3),
        "top 3 with probabilities: {out}"
    );

    // a file that is not an image
    let bad = d.path().join("notes.png");
    std::fs::write(&bad, b"not an image").unwrap();
    let o = run(
        &[
            "predict",
            "--model",
            model.to_str().unwrap(),
            bad.to_str().unwrap(),
        ],
        &[],
    );
    assert_clean_failure(&o, &["notes.png"]);

    // --model-id through a fake, offline Hugging Face cache
    let cache = d.path().join("hf-cache");
    let hash = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.join("models--neka-test--mnist-cnn");
    let snap = repo.join("snapshots").join(hash);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), hash).unwrap();
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(model.join(f), snap.join(f)).unwrap();
    }
    let o = run(
        &[
            "predict",
            "--model-id",
            "neka-test/mnist-cnn",
            "--device",
            "cpu",
            png.to_str().unwrap(),
        ],
        &[("HF_HUB_CACHE", cache.to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        &[
            "predict",
            "--model-id",
            "neka-test/absent",
            png.to_str().unwrap(),
        ],
        &[("HF_HUB_CACHE", cache.to_str().unwrap())],
    );
    assert_clean_failure(&o, &["neka-test/absent"]);

    // config.json is a readable copy: editing it changes nothing (the record in the weights
    // is what loaders read) …
    let cfg_path = model.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("\"hidden\": 128", "\"hidden\": 64");
    std::fs::write(&cfg_path, cfg).unwrap();
    let fx = mnist();
    let args = [
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data-dir",
        fx.to_str().unwrap(),
    ];
    run_ok("mnist_cnn", &args);
    // … and a record whose config does not fit the tensors names the tensor.
    let weights = model.join("model.safetensors");
    let (tensors, mut meta) =
        neka_common::checkpoint::load_tensors(&weights, &candle_core::Device::Cpu).unwrap();
    meta.insert(
        "config".into(),
        meta["config"].replace("\"hidden\":128", "\"hidden\":64"),
    );
    let mut tensors: Vec<(String, candle_core::Tensor)> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    neka_common::checkpoint::save_tensors(&weights, &tensors, Some(meta)).unwrap();
    let o = run(
        &[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data-dir",
            mnist().to_str().unwrap(),
        ],
        &[],
    );
    assert_clean_failure(&o, &["fc1.weight", "[128, 9216]", "model.safetensors"]);
}

#[test]
fn seq_mnist_trains_each_cell_on_the_fixture() {
    for cell in ["rnn", "lstm", "gru"] {
        let dir = tempfile::tempdir().unwrap();
        let o = train_ok(
            "seq_mnist",
            &[
                "--data-dir",
                mnist().to_str().unwrap(),
                "--dry-run",
                "--val-size",
                "100",
                "--cell",
                cell,
                "--hidden",
                "16",
                "--bidirectional",
                "--layers",
                "2",
            ],
            dir.path(),
        );
        let json = last_json(&o);
        assert_eq!(json["model"], format!("row-{cell}"));
        let acc = json["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{acc}");
        let record = neka_common::checkpoint::read_info(dir.path()).unwrap();
        assert_eq!(
            record.metrics.get("test_accuracy"),
            Some(&acc),
            "printed = saved"
        );
        // weights carry PyTorch's names under rnn. and the head as fc.
        let (t, _) = neka_common::checkpoint::load_tensors(
            &dir.path().join("model.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert!(t.contains_key("rnn.weight_hh_l1_reverse") && t.contains_key("fc.weight"));
    }
    let o = run_example("seq_mnist", &["--cell", "tcn"]);
    assert_clean_failure(&o, &["unknown cell `tcn`"]);
}

#[test]
fn char_rnn_trains_saves_and_samples() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("text.txt");
    std::fs::write(
        &txt,
        "a dog runs on the grass . a man rides a bike .\n".repeat(60),
    )
    .unwrap();
    let out = dir.path().join("run");
    let o = train_ok(
        "char_rnn",
        &[
            "--text",
            txt.to_str().unwrap(),
            "--hidden",
            "32",
            "--batch-size",
            "4",
            "--bptt",
            "20",
            "--epochs",
            "2",
            "--lr",
            "1e-2",
            "--length",
            "30",
        ],
        &out,
    );
    assert!(text(&o).contains("validation perplexity"));
    assert!(out.join("vocab.json").is_file() && out.join("model.safetensors").is_file());
    let o = run_ok(
        "char_rnn",
        &[
            "sample",
            "--model",
            out.to_str().unwrap(),
            "--prompt",
            "a dog",
            "--length",
            "10",
            "--device",
            "cpu",
        ],
    );
    assert!(stdout(&o).starts_with("a dog"));
    let o = run_example(
        "char_rnn",
        &[
            "sample",
            "--model",
            out.to_str().unwrap(),
            "--prompt",
            "ü",
            "--device",
            "cpu",
        ],
    );
    assert_clean_failure(&o, &["not in the model's vocabulary"]);
    // no text and no data dir
    let o = run_example("char_rnn", &["--device", "cpu"]);
    assert_clean_failure(&o, &["--text"]);
}

#[test]
fn pos_tagger_trains_evaluates_and_tags() {
    let root = tempfile::tempdir().unwrap();
    let data = ud_data(root.path());
    let out = root.path().join("model");
    let o = train_ok(
        "pos_tagger",
        &[
            "train",
            "--data-dir",
            data.to_str().unwrap(),
            "--epochs",
            "2",
            "--hidden",
            "32",
            "--char-hidden",
            "8",
            "--word-dim",
            "16",
            "--average-last",
            "2",
        ],
        &out,
    );
    let out_text = stdout(&o);
    assert!(
        out_text.contains("weight average of epochs 1–2: val_accuracy"),
        "{out_text}"
    );
    let json = last_json(&o);
    assert!(json["test_upos_accuracy"].as_f64().unwrap() > 0.0);
    assert_saved_model(&out, "words.json chars.json tags.json curves.png");

    let png = root.path().join("cm.png");
    let o = run_ok(
        "pos_tagger",
        &[
            "eval",
            "--model",
            out.to_str().unwrap(),
            "--conllu",
            fixture("ud/en_ewt-sample.conllu").to_str().unwrap(),
            "--confusion-png",
            png.to_str().unwrap(),
            "--device",
            "cpu",
        ],
    );
    let report = stdout(&o);
    assert!(report.contains("precision") && report.contains("PROPN"));
    let json = last_json(&o);
    assert_eq!(json["sentences"], 56);
    assert_eq!(json["tokens"], 1387);
    let acc = json["upos_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert!(png.is_file());

    let line = tag(&out, "I don't know, Al.").trim().to_string();
    let words: Vec<&str> = line
        .split(' ')
        .map(|p| p.rsplit_once('/').unwrap().0)
        .collect();
    assert_eq!(words, ["I", "do", "n't", "know", ",", "Al", "."]);

    // Bad input: a malformed CoNLL-U file, a missing model directory.
    let o = run_example(
        "pos_tagger",
        &[
            "eval",
            "--model",
            out.to_str().unwrap(),
            "--conllu",
            fixture("ud/malformed-upos.conllu").to_str().unwrap(),
        ],
    );
    assert_clean_failure(&o, &["malformed-upos.conllu:2:", "unknown UPOS `NOUNS`"]);
    let o = run_example(
        "pos_tagger",
        &["tag", "--model", "/nonexistent/tagger", "hi"],
    );
    assert_clean_failure(&o, &["/nonexistent/tagger", "model directory not found"]);
    let o = run_example(
        "pos_tagger",
        &["train", "--data-dir", root.path().to_str().unwrap()],
    );
    assert_clean_failure(&o, &["UD English EWT not found"]);
}

#[test]
fn translate_trains_evaluates_and_runs() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = multi30k_data(root.path());
    let data = data_dir.join("multi30k");
    let out = root.path().join("model");
    let o = train_ok(
        "translate",
        &[
            "train",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--epochs",
            "2",
            "--embed",
            "16",
            "--enc-hidden",
            "16",
            "--dec-hidden",
            "32",
            "--min-freq",
            "1",
            "--beam",
            "2",
        ],
        &out,
    );
    let out_text = stdout(&o);
    assert!(
        out_text.contains("bleu") && out_text.contains("perplexity"),
        "{out_text}"
    );
    let json = last_json(&o);
    let train_bleu = json["test_bleu_beam"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&train_bleu), "{train_bleu}");
    let record = neka_common::checkpoint::read_info(&out).unwrap();
    assert_eq!(record.metrics.get("test_bleu_beam"), Some(&train_bleu));
    assert_saved_model(&out, "src_vocab.json tgt_vocab.json curves.png");

    let hyp = root.path().join("hyp.txt");
    let o = run_ok(
        "translate",
        &[
            "eval",
            "--model",
            out.to_str().unwrap(),
            "--src-file",
            data.join("test_2016_flickr.de").to_str().unwrap(),
            "--ref-file",
            data.join("test_2016_flickr.en").to_str().unwrap(),
            "--beam",
            "2",
            "--hyp-out",
            hyp.to_str().unwrap(),
            "--ref-out",
            root.path().join("ref.txt").to_str().unwrap(),
            "--device",
            "cpu",
        ],
    );
    let json = last_json(&o);
    assert_eq!(json["sentences"], 50);
    assert_eq!(json["beam"], 2);
    // the same model, beam and test file as the training's final score
    let bleu = json["bleu"].as_f64().unwrap();
    assert!(
        (bleu - train_bleu).abs() < 1e-9,
        "eval {bleu} vs train {train_bleu}"
    );
    assert_eq!(std::fs::read_to_string(&hyp).unwrap().lines().count(), 50);
    let refs = std::fs::read_to_string(root.path().join("ref.txt")).unwrap();
    assert!(refs.starts_with("a man in an orange hat"), "{refs}"); // lowercased, tokenized

    let png = root.path().join("att.png");
    run_ok(
        "translate",
        &[
            "run",
            "--model",
            out.to_str().unwrap(),
            "--attention-png",
            png.to_str().unwrap(),
            "--device",
            "cpu",
            "ein mann fährt fahrrad .",
        ],
    );
    assert!(png.is_file());

    // Mismatched parallel files name both files and counts.
    let short = root.path().join("short.en");
    std::fs::write(&short, "one line\n").unwrap();
    let o = run_example(
        "translate",
        &[
            "eval",
            "--model",
            out.to_str().unwrap(),
            "--src-file",
            data.join("val.de").to_str().unwrap(),
            "--ref-file",
            short.to_str().unwrap(),
        ],
    );
    assert_clean_failure(&o, &["val.de has 50 lines", "short.en has 1"]);
    let o = run_example(
        "translate",
        &["run", "--model", "/nonexistent/model", "hallo"],
    );
    assert_clean_failure(&o, &["/nonexistent/model", "model directory not found"]);
    let o = run_example("translate", &["train", "--attention", "cosine"]);
    assert_clean_failure(&o, &["unknown attention `cosine`"]);
}
