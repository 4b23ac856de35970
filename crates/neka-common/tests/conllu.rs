//! The CoNLL-U reader and EWT loader on real EWT sentences (fixture) and malformed files.

use neka_common::data::conllu::{self, UPOS_TAGS};
use neka_common::data::tagging::{TaggingDataset, TaggingVocabConfig, TaggingVocabs};
use neka_common::data::Dataset;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ud")
        .join(name)
}

#[test]
fn reads_real_ewt_sentences() {
    let s = conllu::read_conllu(&fixture("en_ewt-sample.conllu")).unwrap();
    assert_eq!(s.len(), 56);
    assert_eq!(s.iter().map(|s| s.len()).sum::<usize>(), 1387);
    assert_eq!(s[0].forms[..4], ["Al", "-", "Zaman", ":"]);
    assert_eq!(s[0].upos[..4], ["PROPN", "PUNCT", "PROPN", "PUNCT"]);
    assert!(s
        .iter()
        .all(|s| s.upos.iter().all(|t| UPOS_TAGS.contains(&t.as_str()))));
    // Multiword tokens (the last 6 sentences hold some) keep their syntactic words only.
    let text = std::fs::read_to_string(fixture("en_ewt-sample.conllu")).unwrap();
    assert!(text
        .lines()
        .any(|l| l.split('\t').next().is_some_and(|id| id.contains('-'))));
    assert!(s.iter().flat_map(|s| &s.forms).all(|f| !f.is_empty()));
}

#[test]
fn malformed_files_name_file_and_line() {
    let e = conllu::read_conllu(&fixture("malformed-columns.conllu"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("malformed-columns.conllu:3:")
            && e.contains("expected 10 tab-separated columns")
            && e.ends_with("found 8"),
        "{e}"
    );
    let e = conllu::read_conllu(&fixture("malformed-upos.conllu"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("malformed-upos.conllu:2:") && e.contains("unknown UPOS `NOUNS`"),
        "{e}"
    );
    let e = conllu::read_conllu(&fixture("missing.conllu"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.conllu"), "{e}");
}

#[test]
fn loads_ewt_from_a_data_dir_and_explains_a_missing_one() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ud-english-ewt");
    std::fs::create_dir_all(&dir).unwrap();
    for split in ["train", "dev", "test"] {
        std::fs::copy(
            fixture("en_ewt-sample.conllu"),
            dir.join(format!("en_ewt-ud-{split}.conllu")),
        )
        .unwrap();
    }
    let bank = conllu::load_ewt(Some(root.path())).unwrap();
    assert_eq!(
        (bank.train.len(), bank.dev.len(), bank.test.len()),
        (56, 56, 56)
    );
    let v = TaggingVocabs::build(&bank.train, TaggingVocabConfig::default());
    let ds = TaggingDataset::new(&bank.dev, &v, &candle_core::Device::Cpu).unwrap();
    assert_eq!(ds.tokens(), 1387);
    let plan = ds.epoch_plan(8, None);
    assert_eq!(plan.concat().len(), 56);

    let empty = tempfile::tempdir().unwrap();
    let e = conllu::load_ewt(Some(empty.path()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("UD English EWT not found") && e.contains("en_ewt-ud-train.conllu"),
        "{e}"
    );
}
