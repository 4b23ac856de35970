//! Replays the committed fuzz corpora on stable: every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` goes through the same `neka_testing::fuzzing::<target>` function the
//! `cargo fuzz` target calls, and a harness panic fails the test (naming the file).
//!
//! Inputs of findings not yet fixed are listed in [`KNOWN_OPEN`] and skipped (not run: some
//! abort or exhaust memory rather than panic); remove an entry when its fix lands.

use std::path::{Path, PathBuf};

/// `(target, file name in fuzz/regressions/<target>/)` of findings whose fix is pending.
const KNOWN_OPEN: &[(&str, &str)] = &[];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.expect("read corpus dir").path();
            if p.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, harness: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no corpus for `{target}` in {}",
        fuzz_dir().display()
    );
    let mut failed = Vec::new();
    for p in &files {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if KNOWN_OPEN.contains(&(target, name.as_str())) {
            eprintln!("skipping known open finding {}", p.display());
            continue;
        }
        let data = std::fs::read(p).unwrap();
        if std::panic::catch_unwind(|| harness(&data)).is_err() {
            failed.push(p.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "`{target}` harness panicked on {} of {} inputs:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

macro_rules! corpus_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name), neka_testing::fuzzing::$name);
            }
        )*
    };
}

corpus_tests!(
    idx,
    conllu,
    parallel,
    vocab,
    image,
    cnn_model_dir,
    cnn_config,
    tagger_model_dir,
    tagger_config,
    translator_model_dir,
    translator_config,
);

/// The seed model directories still load with today's loaders (else the model-directory
/// targets only ever see errors): regenerate them if this fails after a format change.
#[test]
fn seed_model_dirs_load() {
    let cpu = candle_core::Device::Cpu;
    let seeds = fuzz_dir().join("seeds");
    let dirs = |kind: &str| {
        let mut d: Vec<PathBuf> = std::fs::read_dir(seeds.join(kind))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        d.sort();
        assert!(!d.is_empty(), "no {kind} seeds");
        d
    };
    for d in dirs("cnn") {
        neka::cnn::loaded_model::LoadedModel::load(&d, &cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    for d in dirs("tagger") {
        neka::lstm::tagger::LoadedTagger::load(&d, &cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    for d in dirs("translator") {
        neka::seq2seq::translator::Translator::load(&d, &cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
}

/// Regenerates `fuzz/seeds/` (the tiny untrained model directories the model-directory
/// targets mutate) and writes small PNG and JPEG digits of every colour type into
/// `fuzz/corpus-init/image/` (input to `cargo fuzz cmin`, see `fuzz/seed_corpora.py`):
/// `cargo test --test fuzz_corpora -- --ignored`.
#[test]
#[ignore]
fn regenerate_seed_model_dirs() {
    let root = fuzz_dir().join("seeds");
    let _ = std::fs::remove_dir_all(&root);
    neka_testing::fuzzing::write_seed_model_dirs(&root).unwrap();

    let out = fuzz_dir().join("corpus-init/image");
    std::fs::create_dir_all(&out).unwrap();
    let digit = image::RgbaImage::from_fn(12, 10, |x, y| {
        let ink = (4..=6).contains(&x) && (2..8).contains(&y);
        if ink {
            image::Rgba([20, 20, 20, 255])
        } else {
            image::Rgba([250, 250, 250, (x * 20) as u8])
        }
    });
    let img = image::DynamicImage::ImageRgba8(digit);
    let variants = [
        ("l8", img.to_luma8().into()),
        ("la8", img.to_luma_alpha8().into()),
        ("rgb8", img.to_rgb8().into()),
        ("rgba8", img.clone()),
        ("l16", img.to_luma16().into()),
        ("rgba16", img.to_rgba16().into()),
    ];
    for (name, v) in &variants {
        let v: &image::DynamicImage = v;
        v.save(out.join(format!("{name}.png"))).unwrap();
    }
    for (name, v) in &variants[..3] {
        let v: &image::DynamicImage = v;
        v.save(out.join(format!("{name}.jpg"))).unwrap();
    }
}
