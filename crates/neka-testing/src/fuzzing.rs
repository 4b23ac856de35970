//! Fuzzing harnesses: one function per `cargo fuzz` target in `fuzz/fuzz_targets/`, each
//! feeding arbitrary bytes to one of neka's real loaders.
//!
//! The contract every loader must keep, and every harness checks: whatever the bytes, it
//! returns (an error is fine, and must name the file it is about), it never panics or
//! aborts, and its memory stays proportional to the input rather than to what a header or a
//! config claims. A harness panics only when that contract is broken (or an invariant of a
//! successful load does not hold), which is what the fuzzer reports.
//!
//! The same functions replay the committed corpora in `tests/fuzz_corpora.rs`, so stable
//! `cargo test` checks every input the fuzzer ever kept. Not a stable API.
//!
//! Model-directory targets start from the small untrained models in `fuzz/seeds/<kind>/`
//! ([`write_seed_model_dirs`] regenerates them): the input's first byte picks a seed and a
//! file of it to replace (or delete) and the rest of the input is the new content; when the
//! directory still loads, one forward pass runs on a tiny input. The `*_config` targets
//! replace only `config.json`.

use candle_core::{Device, Tensor};
use neka_common::data::{conllu, idx, parallel, Normalize};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the committed seed model directories live.
pub const SEEDS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds");

/// A scratch directory private to this process and thread, emptied on every call.
fn scratch(name: &str) -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    let dir =
        std::env::temp_dir().join(format!("neka-fuzz-{}-{thread}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create scratch dir {}: {e}", dir.display()));
    dir
}

/// Checks that a loader's error names the file it is about.
fn check_error(e: &dyn std::fmt::Display, names: &[&str]) {
    let msg = e.to_string();
    assert!(
        names.iter().any(|n| msg.contains(n)),
        "error does not name the file ({names:?}): {msg}"
    );
}

/// IDX images and labels, raw or gzip (`idx::read_idx_from`, the reader behind
/// `read_images` / `read_labels`), with the byte length known (a file) and unknown (a pipe).
pub fn idx(data: &[u8]) {
    let path = Path::new("fuzz-input-idx3-ubyte");
    for (magic, ndims) in [(idx::IMAGES_MAGIC, 3), (idx::LABELS_MAGIC, 1)] {
        for len in [Some(data.len() as u64), None] {
            match idx::read_idx_from(data, len, path, magic) {
                Ok(d) => {
                    assert_eq!(d.dims.len(), ndims);
                    let n: u64 = d.dims.iter().map(|&x| x as u64).product();
                    assert_eq!(d.data.len() as u64, n, "data length vs header {:?}", d.dims);
                    assert!(d.data.len() <= data.len().saturating_mul(1032));
                }
                Err(e) => check_error(&e, &["fuzz-input-idx3-ubyte"]),
            }
        }
    }
}

/// A CoNLL-U treebank file (plain or gzip), through the UTF-8 check of `data::text`.
pub fn conllu(data: &[u8]) {
    let path = Path::new("fuzz.conllu");
    match conllu::read_conllu_from(data, path) {
        Ok(sentences) => {
            for s in &sentences {
                assert!(!s.is_empty());
                assert_eq!(s.forms.len(), s.upos.len());
                assert_eq!(s.forms.len(), s.xpos.len());
                assert!(s.forms.iter().all(|f| !f.is_empty()));
                assert!(s
                    .upos
                    .iter()
                    .all(|u| conllu::UPOS_TAGS.contains(&u.as_str())));
            }
        }
        Err(e) => check_error(&e, &["fuzz.conllu"]),
    }
}

/// Two line-aligned files of parallel text: the input split at its first `0xFF` byte (never
/// valid UTF-8, so never inside a well-formed file); without one, both sides are the input.
pub fn parallel(data: &[u8]) {
    let (src, tgt) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let cfg = parallel::ParallelConfig {
        max_tokens: 1 + data.len() % 20,
        lowercase: data.first().is_some_and(|b| b & 1 == 0),
    };
    let (sp, tp) = (Path::new("fuzz.de"), Path::new("fuzz.en"));
    match parallel::read_parallel_from(src, sp, tgt, tp, cfg) {
        Ok(c) => {
            for (a, b) in &c.pairs {
                assert!(!a.is_empty() && !b.is_empty());
                assert!(a.len() <= cfg.max_tokens && b.len() <= cfg.max_tokens);
            }
            let mut lines: Vec<usize> = c.skipped.iter().map(|s| s.0).collect();
            lines.dedup();
            assert_eq!(lines.len(), c.skipped.len());
        }
        Err(e) => check_error(&e, &["fuzz.de", "fuzz.en"]),
    }
}

/// A vocabulary JSON file (`Vocab::load`); a vocabulary that loads must round-trip.
pub fn vocab(data: &[u8]) {
    let dir = scratch("vocab");
    let path = dir.join("vocab.json");
    std::fs::write(&path, data).expect("write scratch file");
    match neka_common::vocab::Vocab::load(&path) {
        Ok(v) => {
            for (i, t) in v.tokens().iter().enumerate() {
                assert_eq!(v.get(t), Some(i as u32), "token {t:?}");
                assert_eq!(v.token(i as u32), Some(t.as_str()));
            }
            let again = neka_common::vocab::Vocab::from_json(&v.to_json(), &path)
                .expect("a loaded vocabulary round-trips");
            assert_eq!(again, v);
        }
        Err(e) => check_error(&e, &["vocab.json"]),
    }
}

/// An image file (PNG or JPEG) read as `mnist_cnn predict` reads it
/// (`neka_cnn::images::load_image`).
pub fn image(data: &[u8]) {
    let dir = scratch("image");
    let path = dir.join("digit.png");
    std::fs::write(&path, data).expect("write scratch file");
    let size = [28, 8, 1][data.len() % 3];
    let norm = Normalize {
        mean: vec![0.1307],
        std: vec![0.3081],
    };
    match neka_cnn::images::load_image(&path, size, &norm) {
        Ok(x) => {
            assert_eq!(x.dims(), [1, 1, size as usize, size as usize]);
            let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            assert!(v.iter().all(|p| p.is_finite()));
        }
        Err(e) => check_error(&e, &["digit.png"]),
    }
}

/// The files of one seed model directory, sorted by name.
type SeedDir = Vec<(String, Vec<u8>)>;

/// Which file of a seed directory changes: its index, and its new content (`None`: deleted).
type Change<'a> = Option<(usize, Option<&'a [u8]>)>;

/// The seed directories of `kind` (`fuzz/seeds/<kind>/*/`), read once.
fn seeds(kind: &'static str) -> &'static [SeedDir] {
    type Cache = std::sync::Mutex<Vec<(&'static str, &'static [SeedDir])>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, s)) = cache.iter().find(|(k, _)| *k == kind) {
        return s;
    }
    let root = Path::new(SEEDS_DIR).join(kind);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; regenerate the seeds with `cargo test --test fuzz_corpora -- --ignored`",
                root.display()
            )
        })
        .map(|e| e.expect("read seed dir").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let all: Vec<SeedDir> = dirs
        .iter()
        .map(|d| {
            let mut files: SeedDir = std::fs::read_dir(d)
                .expect("read seed dir")
                .map(|e| e.expect("read seed dir").path())
                .filter(|p| p.is_file())
                .map(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().to_string();
                    (name, std::fs::read(&p).expect("read seed file"))
                })
                .collect();
            files.sort();
            files
        })
        .collect();
    assert!(
        !all.is_empty(),
        "no seed model directories in {}",
        root.display()
    );
    let leaked: &'static [SeedDir] = Box::leak(all.into_boxed_slice());
    cache.push((kind, leaked));
    leaked
}

/// Writes a seed directory of `kind` with one file changed by the input: `data[0]` picks the
/// seed and the file (`sel % 2n < n`: replace file `sel % 2n` by `data[1..]`; else delete
/// file `sel % 2n − n`), or with `only` = `Some(name)`, file `name` is replaced by all of
/// `data` in seed `0`. Returns the directory.
fn mutated_model_dir(kind: &'static str, data: &[u8], only: Option<&str>) -> Option<PathBuf> {
    let seeds = seeds(kind);
    let dir = scratch(kind);
    let (seed, change): (&SeedDir, Change) = match only {
        Some(name) => {
            let seed = &seeds[0];
            let i = seed.iter().position(|(n, _)| n == name)?;
            (seed, Some((i, Some(data))))
        }
        None => {
            let (&sel, rest) = data.split_first()?;
            let sel = sel as usize;
            let seed = &seeds[(sel / 16) % seeds.len()];
            let n = seed.len();
            let k = (sel % 16) % (2 * n);
            let change = if k < n {
                (k, Some(rest))
            } else {
                (k - n, None)
            };
            (seed, Some(change))
        }
    };
    for (i, (name, bytes)) in seed.iter().enumerate() {
        let content = match change {
            Some((j, new)) if j == i => match new {
                Some(b) => b,
                None => continue,
            },
            _ => bytes.as_slice(),
        };
        std::fs::write(dir.join(name), content).expect("write scratch model file");
    }
    Some(dir)
}

fn cnn_dir(dir: &Path) {
    match neka_cnn::loaded_model::LoadedModel::load(dir, &Device::Cpu) {
        Ok(m) => {
            let size = m.image_size() as usize;
            let c = m
                .info
                .config
                .get("in_channels")
                .and_then(|v| v.as_u64())
                .unwrap_or(1) as usize;
            // The harness itself stays bounded: inputs of up to a million values.
            if c.saturating_mul(size).saturating_mul(size) <= 1 << 20 {
                let x = Tensor::zeros((1, c, size, size), candle_core::DType::F32, &Device::Cpu)
                    .unwrap();
                if let Ok((_, p)) = m.top_class(&x) {
                    assert!((0.0..=1.0).contains(&p) || p.is_nan(), "probability {p}");
                }
            }
        }
        Err(e) => check_error(&e, &[&dir.display().to_string()]),
    }
}

/// A CNN model directory (`neka_cnn::loaded_model::LoadedModel::load`) with one file replaced or
/// deleted, then one prediction.
pub fn cnn_model_dir(data: &[u8]) {
    if let Some(dir) = mutated_model_dir("cnn", data, None) {
        cnn_dir(&dir);
    }
}

/// A CNN model directory whose `config.json` is the input.
pub fn cnn_config(data: &[u8]) {
    if let Some(dir) = mutated_model_dir("cnn", data, Some("config.json")) {
        cnn_dir(&dir);
    }
}

fn tagger_dir(dir: &Path) {
    match neka_lstm::tagger::LoadedTagger::load(dir, &Device::Cpu) {
        Ok(t) => {
            let sentences = vec![
                vec!["The", "dog", "barks", "."],
                vec![],
                vec!["Ünïcödé", "x"],
            ];
            if let Ok(tags) = t.tag(&sentences) {
                assert_eq!(tags.len(), sentences.len());
                for (s, t) in sentences.iter().zip(&tags) {
                    assert_eq!(s.len(), t.len());
                }
            }
        }
        Err(e) => check_error(&e, &[&dir.display().to_string()]),
    }
}

/// A tagger model directory (`neka_lstm::tagger::LoadedTagger::load`) with one file replaced
/// or deleted, then tagging two short sentences.
pub fn tagger_model_dir(data: &[u8]) {
    if let Some(dir) = mutated_model_dir("tagger", data, None) {
        tagger_dir(&dir);
    }
}

/// A tagger model directory whose `config.json` is the input.
pub fn tagger_config(data: &[u8]) {
    if let Some(dir) = mutated_model_dir("tagger", data, Some("config.json")) {
        tagger_dir(&dir);
    }
}

fn translator_dir(dir: &Path) {
    match neka_seq2seq::translator::Translator::load(dir, &Device::Cpu) {
        Ok(t) => {
            let sentences = vec![vec!["ein", "hund", "."], vec![], vec!["xyz"]];
            for beam in [1, 2] {
                let cfg = neka_seq2seq::decode::DecodeConfig {
                    beam,
                    max_len_a: 0.0,
                    max_len_b: 4,
                    ..Default::default()
                };
                if let Ok(hyps) = t.translate_tokens(&sentences, &cfg) {
                    assert_eq!(hyps.len(), sentences.len());
                    for h in &hyps {
                        assert!(h.ids.len() <= 5, "{} tokens", h.ids.len());
                        let _ = t.tokens(h);
                    }
                }
            }
        }
        Err(e) => check_error(&e, &[&dir.display().to_string()]),
    }
}

/// A translator model directory (`neka_seq2seq::translator::Translator::load`) with one file
/// replaced or deleted, then greedy and beam-2 translation of two short sentences.
pub fn translator_model_dir(data: &[u8]) {
    if let Some(dir) = mutated_model_dir("translator", data, None) {
        translator_dir(&dir);
    }
}

/// A translator model directory whose `config.json` is the input.
pub fn translator_config(data: &[u8]) {
    if let Some(dir) = mutated_model_dir("translator", data, Some("config.json")) {
        translator_dir(&dir);
    }
}

/// Writes the seed model directories the model-directory targets start from:
/// `root/cnn/{mnist-net,lenet5}`, `root/tagger/{lstm,gru}`, `root/translator/{luong,bahdanau}`:
/// tiny untrained models saved with the libraries' own constructors and
/// `checkpoint::save_model`, a few kilobytes each.
pub fn write_seed_model_dirs(root: &Path) -> neka_common::Result<()> {
    use candle_core::DType;
    use candle_nn::VarMap;
    use neka_common::checkpoint::{save_model, CheckpointInfo};
    let cpu = Device::Cpu;

    for (name, config) in [
        (
            "mnist-net",
            serde_json::json!({"in_channels": 1, "image_size": 8, "num_classes": 3,
                "hidden": 4, "dropout1": 0.25, "dropout2": 0.5}),
        ),
        (
            "lenet5",
            serde_json::json!({"in_channels": 1, "image_size": 12, "num_classes": 3}),
        ),
    ] {
        let vm = VarMap::new();
        let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &cpu);
        neka_cnn::CnnModel::from_config(name, &config, vb)
            .map_err(|e| neka_common::Error::config("seed", e.to_string()))?;
        let mut info = CheckpointInfo::new(name, &config, "mnist")?;
        info.normalize = Some(Normalize {
            mean: vec![0.1307],
            std: vec![0.3081],
        });
        info.classes = vec!["0".into(), "1".into(), "2".into()];
        save_model(&root.join("cnn").join(name), &vm, &info)?;
    }

    let sentence = |words: &[&str], tags: &[&str]| conllu::TaggedSentence {
        forms: words.iter().map(|s| s.to_string()).collect(),
        upos: tags.iter().map(|s| s.to_string()).collect(),
        xpos: tags.iter().map(|s| s.to_string()).collect(),
    };
    let train = vec![
        sentence(
            &["The", "dog", "barks", "."],
            &["DET", "NOUN", "VERB", "PUNCT"],
        ),
        sentence(
            &["the", "dog", "runs", "."],
            &["DET", "NOUN", "VERB", "PUNCT"],
        ),
    ];
    let vcfg = neka_common::data::tagging::TaggingVocabConfig::default();
    let vocabs = neka_common::data::tagging::TaggingVocabs::build(&train, vcfg);
    for (name, cell) in [
        ("lstm", neka_lstm::CellType::Lstm),
        ("gru", neka_lstm::CellType::Gru),
    ] {
        let cfg = neka_lstm::tagger::Config {
            cell,
            char_cell: cell,
            word_dim: 4,
            char_dim: 3,
            char_hidden: if name == "lstm" { 2 } else { 0 },
            hidden_size: 3,
            num_layers: 1 + usize::from(name == "gru"),
            ..Default::default()
        }
        .with_vocabs(&vocabs);
        let vm = VarMap::new();
        let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &cpu);
        neka_lstm::tagger::Tagger::new(cfg, vb)
            .map_err(|e| neka_common::Error::config("seed", e.to_string()))?;
        let mut info = CheckpointInfo::new(neka_lstm::tagger::MODEL_NAME, &cfg, "fuzz")?;
        info.files = vocabs.files();
        save_model(&root.join("tagger").join(name), &vm, &info)?;
    }

    let pairs: Vec<(Vec<String>, Vec<String>)> = [
        ("ein hund .", "a dog ."),
        ("zwei hunde laufen .", "two dogs run ."),
    ]
    .iter()
    .map(|(a, b)| (parallel::prepare(a, true), parallel::prepare(b, true)))
    .collect();
    let vocabs = neka_seq2seq::data::Seq2SeqVocabs::build(&pairs, 1);
    for (name, attention, cell, tie) in [
        (
            "luong",
            neka_seq2seq::model::AttentionKind::Luong,
            neka_lstm::CellType::Lstm,
            true,
        ),
        (
            "bahdanau",
            neka_seq2seq::model::AttentionKind::Bahdanau,
            neka_lstm::CellType::Gru,
            false,
        ),
    ] {
        let cfg = neka_seq2seq::model::Config {
            cell,
            embed_dim: 4,
            enc_hidden: 3,
            dec_hidden: 5,
            attention,
            tie_embeddings: tie,
            ..Default::default()
        };
        let mut t = neka_seq2seq::translator::Translator::fresh(cfg, vocabs.clone(), "fuzz", &cpu)
            .map_err(|e| neka_common::Error::config("seed", e.to_string()))?;
        t.info.files = vocabs.files();
        save_model(&root.join("translator").join(name), &t.varmap, &t.info)?;
    }
    Ok(())
}
