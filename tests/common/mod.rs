//! Helpers shared by the command-line tests: finding (or building) an example binary, and
//! reading what it printed.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

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

/// The example `name` with `args`, offline and without `NEKA_DATA_DIR` (tests name their data).
pub fn example_cmd(name: &str, args: &[&str]) -> Command {
    let mut c = Command::new(example(name));
    c.args(args)
        .env_remove("NEKA_DATA_DIR")
        .env("HF_HUB_OFFLINE", "1");
    c
}

/// Runs [`example_cmd`] to the end.
pub fn run_example(name: &str, args: &[&str]) -> Output {
    example_cmd(name, args).output().unwrap()
}

/// Runs the example's subcommand `sub` on the model in `model`: `name sub --model DIR args…`.
pub fn with_model(name: &str, sub: &str, model: &std::path::Path, args: &[&str]) -> Output {
    let dir = model.to_str().unwrap();
    run_example(name, &[&[sub, "--model", dir], args].concat())
}

/// Each of `files` is a file in `dir`.
pub fn assert_files(dir: &std::path::Path, files: &[&str]) {
    for f in files {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
}
