//! Run directories and bad input at the command line, as a hostile but fair user meets them:
//! a resumed run that is not the same run, two trainings into one `--out`, Ctrl-C, a closed
//! pipe, an empty or mis-sized evaluation set, out-of-range flags.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{assert_clean_failure, command as cmd, fixture, run, tag, text, ud_data};

fn mnist() -> String {
    fixture("mnist-sample").display().to_string()
}

use neka_testing::snapshot;

fn mnist_train(out: &Path, extra: &[&str]) -> Output {
    let data = mnist();
    let mut args = vec![
        "--data-dir",
        &data,
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ];
    if !extra.contains(&"--val-size") {
        args.extend(["--val-size", "100"]);
    }
    args.extend_from_slice(extra);
    run("mnist_cnn", &args)
}

#[test]
fn resume_refuses_another_dataset_split_or_model_and_leaves_the_run_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = mnist_train(&out, &["--epochs", "1", "--max-batches", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let before = snapshot(&out);
    let o = mnist_train(
        &out,
        &[
            "--max-batches",
            "2",
            "--dataset",
            "fashion-mnist",
            "--resume",
            out.to_str().unwrap(),
        ],
    );
    assert_clean_failure(
        &o,
        &[
            "cannot resume",
            "dataset: saved run mnist, this run fashion-mnist",
            "--out",
        ],
    );
    let o = mnist_train(
        &out,
        &[
            "--max-batches",
            "2",
            "--val-size",
            "200",
            "--resume",
            out.to_str().unwrap(),
        ],
    );
    assert_clean_failure(&o, &["data.val_size: saved run 100, this run 200"]);
    let o = mnist_train(
        &out,
        &[
            "--max-batches",
            "2",
            "--model",
            "lenet5",
            "--resume",
            out.to_str().unwrap(),
        ],
    );
    assert_clean_failure(&o, &["model: saved run mnist-net, this run lenet5"]);
    assert_eq!(
        snapshot(&out),
        before,
        "a refused resume changed the run directory"
    );
    // what may change does: more epochs
    let o = mnist_train(
        &out,
        &[
            "--epochs",
            "2",
            "--max-batches",
            "2",
            "--lr",
            "1e-4",
            "--resume",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resumed from"), "{}", text(&o));
}

#[test]
fn a_second_training_into_the_same_out_is_refused_and_ctrl_c_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = mnist();
    let mut first = cmd(
        "mnist_cnn",
        &[
            "--data-dir",
            &data,
            "--val-size",
            "100",
            "--device",
            "cpu",
            "--epochs",
            "100000",
            "--max-batches",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Wait until the first run has finished an epoch (its Ctrl-C handler is installed).
    let t0 = std::time::Instant::now();
    while !out.join("metrics.jsonl").is_file() {
        assert!(
            t0.elapsed().as_secs() < 120,
            "the first run never finished an epoch"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let o = mnist_train(&out, &["--dry-run"]);
    assert_clean_failure(
        &o,
        &[
            "in use by another training",
            &format!("pid {}", first.id()),
            "another --out",
        ],
    );
    let kill = Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = first.wait().unwrap();
    let mut err = String::new();
    first
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "interrupted run ({status:?}): {err}"
    );
    assert!(err.contains("--resume"), "{err}");
    // the lock is free again, and the interrupted run resumes
    let o = mnist_train(
        &out,
        &[
            "--epochs",
            "2",
            "--max-batches",
            "1",
            "--resume",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn evaluating_on_images_of_another_size_or_an_empty_test_set_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let idx = neka_common::data::idx::encode_idx;
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.path().join(name), bytes).unwrap();
    for (split, n) in [("train", 20usize), ("t10k", 10)] {
        write(
            &format!("{split}-images-idx3-ubyte"),
            idx(2051, &[n, 32, 32], &vec![0u8; n * 32 * 32]),
        );
        write(
            &format!("{split}-labels-idx1-ubyte"),
            idx(2049, &[n], &vec![1u8; n]),
        );
    }
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mnist-cnn");
    let args = [
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        "--data-dir",
    ];
    let mut a = args.to_vec();
    a.push(dir.path().to_str().unwrap());
    assert_clean_failure(&run("mnist_cnn", &a), &["32×32 images", "takes 28×28"]);
    for (split, n) in [("train", 20usize), ("t10k", 0)] {
        write(
            &format!("{split}-images-idx3-ubyte"),
            idx(2051, &[n, 28, 28], &vec![0u8; n * 28 * 28]),
        );
        write(
            &format!("{split}-labels-idx1-ubyte"),
            idx(2049, &[n], &vec![1u8; n]),
        );
    }
    assert_clean_failure(&run("mnist_cnn", &a), &["nothing to score"]);
    // --val-size 0 would keep epoch 1 as "best" without looking: refused
    let out = dir.path().join("run");
    let data = mnist();
    let o = run(
        "mnist_cnn",
        &[
            "--data-dir",
            &data,
            "--val-size",
            "0",
            "--dry-run",
            "--device",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_clean_failure(&o, &["validation data", "is empty"]);
}

fn tagger_train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data-dir",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--char-hidden",
        "4",
        "--word-dim",
        "8",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run("pos_tagger", &args)
}

#[test]
fn a_refused_tagger_resume_leaves_model_and_vocabularies_loadable() {
    let root = tempfile::tempdir().unwrap();
    let data = ud_data(root.path());
    let out = root.path().join("tagger");
    let o = tagger_train(&data, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let before = snapshot(&out);
    // Another vocabulary (fewer sentences, another min frequency): refused, nothing rewritten.
    let o = tagger_train(
        &data,
        &out,
        &[
            "--train-sentences",
            "5",
            "--min-word-freq",
            "1",
            "--resume",
            out.to_str().unwrap(),
        ],
    );
    assert_clean_failure(&o, &["cannot resume", "words.json", "data.train_sentences"]);
    assert_eq!(
        snapshot(&out),
        before,
        "a refused resume changed the run directory"
    );
    tag(&out, "The dog ran .");

    // A closed pipe ends `tag` quietly (`pos_tagger tag … | head -1`).
    let mut child = cmd(
        "pos_tagger",
        &["tag", "--model", out.to_str().unwrap(), "--device", "cpu"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let writer = std::thread::spawn(move || {
        for _ in 0..20_000 {
            if writeln!(stdin, "The dog ran quickly to the house .").is_err() {
                break;
            }
        }
    });
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let status = child.wait().unwrap();
    writer.join().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            status.success() || status.signal() == Some(13),
            "{status:?}: {err}"
        );
    }
}

#[test]
fn out_of_range_flags_of_every_trainer_are_refused_with_the_range() {
    let checks: &[(&str, &[&str], &str)] = &[
        (
            "pos_tagger",
            &["train", "--clip-grad-norm=-1"],
            "finite number ≥ 0",
        ),
        (
            "pos_tagger",
            &["train", "--clip-grad-norm", "nan"],
            "finite number ≥ 0",
        ),
        ("translate", &["train", "--teacher-forcing", "2"], "[0, 1]"),
        (
            "char_rnn",
            &["sample", "--model", "m", "--temperature=-1"],
            "> 0",
        ),
        (
            "char_rnn",
            &["sample", "--model", "m", "--temperature", "nan"],
            "> 0",
        ),
        ("vanishing_gradients", &["--lengths", "10,0"], "at least 1"),
        ("seq_mnist", &["--clip-grad-norm=-0.5"], "finite number ≥ 0"),
    ];
    for (name, args, needle) in checks {
        let o = run(name, args);
        assert_clean_failure(&o, &[needle]);
        assert_eq!(o.status.code(), Some(2), "{name} {args:?}: {}", text(&o));
    }
    let o = run("conv_basics", &["--help"]);
    assert!(
        o.status.success() && text(&o).contains("--figures"),
        "{}",
        text(&o)
    );
    let o = run("conv_basics", &["--no-such-flag"]);
    assert_clean_failure(&o, &["--no-such-flag"]);
}

#[test]
fn resume_continues_the_saved_run_with_its_own_flags() {
    // The README's resume example: the first command chose the model, the optimizer and the
    // rate; `--resume DIR --epochs N` alone continues that run (flags left out are the
    // saved run's, not the defaults).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let first = [
        "--model",
        "lenet5",
        "--optimizer",
        "sgd",
        "--lr",
        "0.01",
        "--epochs",
        "1",
        "--max-batches",
        "2",
    ];
    let o = mnist_train(&out, &first);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        "mnist_cnn",
        &["--resume", out.to_str().unwrap(), "--epochs", "2"],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("resumed from")
            && t.contains("with the saved run's flags: ")
            && t.contains("--model lenet5"),
        "{t}"
    );
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "two epochs: {metrics}");
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(config.contains("lenet5"), "{config}");
    // A flag given now still wins, and one that redefines the run is refused by name.
    let o = run(
        "mnist_cnn",
        &[
            "--resume",
            out.to_str().unwrap(),
            "--epochs",
            "3",
            "--optimizer",
            "adamw",
        ],
    );
    assert_clean_failure(&o, &["optimizer: saved run sgd, this run adamw"]);
}

// ---- text input and answers (issue 29: normalisation, models that cannot answer, limits) ----

fn models(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name)
        .display()
        .to_string()
}

/// `name args…` with `input` on stdin: what it printed, and how it ended. Gives up (kills it)
/// after `secs`, so a command that hangs fails the test instead of stalling the suite.
fn run_with_stdin(name: &str, args: &[&str], input: Vec<u8>, secs: u64) -> Output {
    let mut child = cmd(name, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // the command may stop reading early (that is the point): ignore a closed pipe
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed().as_secs() >= secs {
            child.kill().unwrap(); // our own child, not yet reaped
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

#[test]
fn decomposed_unicode_translates_and_tags_as_composed() {
    let tr = models("seq2seq-multi30k-de-en");
    let args = |s: &'static str| vec!["run", "--model", &tr, "--device", "cpu", s];
    let composed = cmd("translate", &args("ein mann fährt fahrrad ."))
        .output()
        .unwrap();
    let decomposed = cmd("translate", &args("ein mann fa\u{308}hrt fahrrad ."))
        .output()
        .unwrap();
    assert!(composed.status.success(), "{}", text(&composed));
    assert_eq!(text(&composed), text(&decomposed));
    assert!(
        !text(&decomposed).contains("<unk>"),
        "{}",
        text(&decomposed)
    );
    let tg = models("pos-bilstm-ewt");
    let out = tag(Path::new(&tg), "the cafe\u{301} opened");
    assert_eq!(out.split_whitespace().count(), 3, "{out}");
    assert_eq!(out, tag(Path::new(&tg), "the café opened"));
}

#[test]
fn a_model_that_cannot_answer_is_refused_at_load_naming_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnist-extreme");
    neka_testing::damage::copy_model_dir(Path::new(&models("mnist-cnn")), &dir).unwrap();
    neka_testing::damage::set_weight(&dir.join("model.safetensors"), "fc2.weight", 0, 3e38)
        .unwrap();
    let png = tmp.path().join("x.png");
    image::GrayImage::new(28, 28).save(&png).unwrap();
    let d = dir.to_str().unwrap();
    let o = run(
        "mnist_cnn",
        &[
            "predict",
            "--model",
            d,
            "--device",
            "cpu",
            png.to_str().unwrap(),
        ],
    );
    assert_clean_failure(&o, &[d, "cannot answer", "fc2.weight"]);
    assert!(!text(&o).contains("NaN"), "{}", text(&o));
}

#[test]
fn conllu_with_repeated_or_missing_word_ids_is_refused_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("ids.conllu");
    let line = |id: &str, w: &str| format!("{id}\t{w}\t{w}\tNOUN\tNN\t_\t0\troot\t_\t_\n");
    let text_ = format!(
        "{}{}{}",
        line("1", "dogs"),
        line("2", "bark"),
        line("2", "loudly")
    );
    std::fs::write(&f, text_).unwrap();
    let tg = models("pos-bilstm-ewt");
    let args = [
        "eval",
        "--model",
        &tg,
        "--device",
        "cpu",
        "--conllu",
        f.to_str().unwrap(),
    ];
    let o = run("pos_tagger", &args);
    assert_clean_failure(
        &o,
        &[
            "ids.conllu:3:",
            "word ID `2` where 3 was expected",
            "blank line",
        ],
    );
}

#[test]
fn an_over_long_sentence_is_named_by_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("long.conllu");
    let mut t = String::from("1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n\n# a long one\n");
    for i in 1..=1001 {
        t.push_str(&format!("{i}\tword\tword\tNOUN\tNN\t_\t0\troot\t_\t_\n"));
    }
    std::fs::write(&f, t).unwrap();
    let tg = models("pos-bilstm-ewt");
    let args = [
        "eval",
        "--model",
        &tg,
        "--device",
        "cpu",
        "--conllu",
        f.to_str().unwrap(),
    ];
    let o = run("pos_tagger", &args);
    assert_clean_failure(&o, &["long.conllu:4:", "1001 words", "1000"]);
    // tag: the lines before the long one are tagged, then the error names its line
    let long = vec!["word"; 1001].join(" ");
    let input = format!("the dog barks\n{long}\nnever reached\n").into_bytes();
    let o = run_with_stdin(
        "pos_tagger",
        &["tag", "--model", &tg, "--device", "cpu"],
        input,
        120,
    );
    assert_clean_failure(&o, &["the/DET dog/NOUN", "stdin:2: 1001 words"]);
    assert!(!text(&o).contains("never"), "{}", text(&o));
}

#[test]
fn attention_of_an_empty_sentence_says_the_sentence_is_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("a.png");
    let tr = models("seq2seq-multi30k-de-en");
    let args = [
        "run",
        "--model",
        &tr,
        "--device",
        "cpu",
        "--attention-png",
        png.to_str().unwrap(),
        "",
    ];
    let o = run("translate", &args);
    assert_clean_failure(&o, &["argument 1: the sentence is empty"]);
    assert!(!text(&o).contains("has no attention"), "{}", text(&o));
}

#[test]
fn out_naming_a_file_says_out_must_be_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("model.safetensors");
    std::fs::write(&file, b"not a directory").unwrap();
    let o = mnist_train(&file, &["--dry-run"]);
    assert_clean_failure(
        &o,
        &["--out", "must be a directory", file.to_str().unwrap()],
    );
    assert!(!text(&o).contains("os error"), "{}", text(&o));
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[cfg(unix)]
#[test]
fn predict_on_a_fifo_is_refused_instead_of_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("digit.png");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let m = models("mnist-cnn");
    let args = [
        "predict",
        "--model",
        &m,
        "--device",
        "cpu",
        fifo.to_str().unwrap(),
    ];
    let o = run_with_stdin("mnist_cnn", &args, Vec::new(), 60);
    assert_clean_failure(&o, &["digit.png", "a FIFO", "not an image file"]);
}

#[test]
fn a_beam_over_64_is_refused_when_parsed() {
    let tr = models("seq2seq-multi30k-de-en");
    let runs: [(&[&str], &str); 3] = [
        (
            &["run", "--model", &tr, "--beam", "5976", "ein mann ."],
            "5976",
        ),
        (&["eval", "--beam", "5976"], "5976"),
        (&["train", "--beam", "65"], "65"),
    ];
    for (args, value) in runs {
        let o = run("translate", args);
        assert_clean_failure(&o, &[value, "between 1 (greedy) and 64"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    }
    let help = text(&run("translate", &["run", "--help"]));
    assert!(help.contains("1 (batched greedy search) to 64"), "{help}");
}

#[test]
fn an_over_long_stdin_line_is_refused_while_streaming_naming_its_line() {
    let tg = models("pos-bilstm-ewt");
    let mut input = b"the dog barks\n".to_vec();
    input.extend(std::iter::repeat_n(b'a', 50 << 20)); // a 50 MB line, never ended
    let o = run_with_stdin(
        "pos_tagger",
        &["tag", "--model", &tg, "--device", "cpu"],
        input,
        120,
    );
    assert_clean_failure(&o, &["the/DET", "stdin:2: line longer than 262144 bytes"]);
    let tr = models("seq2seq-multi30k-de-en");
    let mut input = b"ein hund .\n".to_vec();
    input.extend(std::iter::repeat_n(b'a', 1 << 20));
    let o = run_with_stdin(
        "translate",
        &["run", "--model", &tr, "--device", "cpu"],
        input,
        120,
    );
    assert_clean_failure(&o, &["dog", "stdin:2: line longer than"]);
}

#[test]
fn invalid_utf8_on_stdin_fails_on_its_line_after_the_valid_ones() {
    let tg = models("pos-bilstm-ewt");
    let input = b"the dog barks\nthe caf\xe9 opened\nnever reached\n".to_vec();
    let o = run_with_stdin(
        "pos_tagger",
        &["tag", "--model", &tg, "--device", "cpu"],
        input,
        120,
    );
    assert_clean_failure(
        &o,
        &["the/DET dog/NOUN", "stdin:2: not UTF-8", "0xe9", "iconv"],
    );
    assert!(!text(&o).contains("never"), "{}", text(&o));
}
