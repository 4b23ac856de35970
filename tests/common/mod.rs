//! Helpers shared by the command-line tests: the fixtures, finding (or building) an example
//! binary, running it as a user does, and reading what it printed or wrote.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `rel` under neka-common's test fixtures (`crates/neka-common/tests/fixtures`): `mnist-sample`,
/// `ud/en_ewt-sample.conllu`, `multi30k`, …
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/neka-common/tests/fixtures")
        .join(rel)
}

/// A `--data-dir` under `root` holding UD English EWT as the examples look for it, with the
/// fixture's sample as train, dev and test split. Returns the `--data-dir` (`root/data`).
pub fn ud_data(root: &Path) -> PathBuf {
    let data = root.join("data/ud-english-ewt");
    std::fs::create_dir_all(&data).unwrap();
    for split in ["train", "dev", "test"] {
        std::fs::copy(
            fixture("ud/en_ewt-sample.conllu"),
            data.join(format!("en_ewt-ud-{split}.conllu")),
        )
        .unwrap();
    }
    root.join("data")
}

/// A `--data-dir` under `root` holding the Multi30k fixture (`root/data/multi30k`). Returns the
/// `--data-dir` (`root/data`).
pub fn multi30k_data(root: &Path) -> PathBuf {
    let data = root.join("data/multi30k");
    std::fs::create_dir_all(&data).unwrap();
    for f in std::fs::read_dir(fixture("multi30k")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, data.join(f.file_name().unwrap())).unwrap();
    }
    root.join("data")
}

/// The example binary `name`, built by `cargo test` next to the test binaries
/// (`target/<profile>/examples`), or built now (same profile) when a single test target runs.
pub fn example(name: &str) -> PathBuf {
    // `cargo test` builds the examples next to the test binaries: target/<profile>/examples
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    let exe = p.join("examples").join(name);
    if !exe.is_file() {
        // `cargo test --test cli` alone does not build examples: build it (same profile),
        // one build at a time.
        static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        if !exe.is_file() {
            let mut c = Command::new(env!("CARGO"));
            c.args(["build", "--example", name])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if p.ends_with("release") {
                c.arg("--release");
            }
            assert!(c.status().unwrap().success(), "cannot build example {name}");
        }
    }
    assert!(exe.is_file(), "{} not built", exe.display());
    exe
}

/// stdout then stderr of a finished command.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The command failed (non-zero exit) without a panic, and its output names each of `needles`.
pub fn assert_clean_failure(o: &Output, needles: &[&str]) {
    let t = text(o);
    assert!(!o.status.success(), "should fail: {t}");
    assert!(!t.contains("panicked"), "panicked: {t}");
    for n in needles {
        assert!(t.contains(n), "expected `{n}` in: {t}");
    }
}

/// The example binary `name` with `args`, as a user runs it, but hermetic: no `NEKA_DATA_DIR`
/// from the environment, the Hugging Face Hub offline.
pub fn command(name: &str, args: &[&str]) -> Command {
    let mut c = Command::new(example(name));
    c.args(args)
        .env_remove("NEKA_DATA_DIR")
        .env("HF_HUB_OFFLINE", "1");
    c
}

/// [`command`], run to the end.
pub fn run(name: &str, args: &[&str]) -> Output {
    command(name, args).output().unwrap()
}

/// [`run`], which must succeed (else the test fails showing all the command wrote).
#[track_caller]
pub fn run_ok(name: &str, args: &[&str]) -> Output {
    let o = run(name, args);
    assert!(o.status.success(), "{name} {args:?}: {}", text(&o));
    o
}

/// What a finished command wrote to stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The last line of stdout, parsed as JSON (the examples end with a JSON summary).
#[track_caller]
pub fn last_json(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    let last = out
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output: {}", text(o)));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

/// `dir` holds a saved model (`model.safetensors`, `config.json`) and each of the white-space
/// separated `more` files.
#[track_caller]
pub fn assert_saved_model(dir: &Path, more: &str) {
    for f in ["model.safetensors", "config.json"]
        .into_iter()
        .chain(more.split_whitespace())
    {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
}

/// `EXAMPLE ARGS… --device cpu --out OUT`: a training on the CPU into `out`, which must succeed.
#[track_caller]
pub fn train_ok(example: &str, args: &[&str], out: &Path) -> Output {
    let mut all = args.to_vec();
    all.extend(["--device", "cpu", "--out", out.to_str().unwrap()]);
    run_ok(example, &all)
}

/// `pos_tagger tag --model MODEL --device cpu SENTENCE`, which must succeed: what it printed.
#[track_caller]
pub fn tag(model: &Path, sentence: &str) -> String {
    let args = [
        "tag",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "cpu",
        sentence,
    ];
    stdout(&run_ok("pos_tagger", &args))
}
