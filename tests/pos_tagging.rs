//! The POS tagger: it can fit real sentences, padding changes nothing, and a saved model
//! reloads and tags identically.

use candle_core::{DType, Device};
use candle_nn::VarMap;
use neka_common::data::conllu::{read_conllu, TaggedSentence};
use neka_common::data::tagging::{TagBatch, TaggingDataset, TaggingVocabConfig, TaggingVocabs};
use neka_common::data::Dataset;
use neka_common::train::{evaluate, TrainConfig, Trainer};
use neka_lstm::tagger::{self, Config, LoadedTagger, Tagger};
use neka_lstm::CellType;
use neka_testing::{max_abs_diff, overfit_config};
use std::path::Path;

fn sample() -> Vec<TaggedSentence> {
    read_conllu(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("crates/neka-common/tests/fixtures/ud/en_ewt-sample.conllu"),
    )
    .unwrap()
}

fn small(cell: CellType, vocabs: &TaggingVocabs) -> Config {
    Config {
        cell,
        char_cell: cell,
        word_dim: 32,
        char_dim: 16,
        char_hidden: 16,
        hidden_size: 48,
        num_layers: 2,
        dropout: 0.0,
        word_dropout: 0.0,
        word_dropout_alpha: 0.0,
        ..Config::default()
    }
    .with_vocabs(vocabs)
}

#[test]
fn tagger_overfits_twenty_sentences() {
    let sents: Vec<TaggedSentence> = sample().into_iter().take(20).collect();
    let vocabs = TaggingVocabs::build(
        &sents,
        TaggingVocabConfig {
            min_word_freq: 1,
            lowercase: true,
        },
    );
    let ds = TaggingDataset::new(&sents, &vocabs, &Device::Cpu).unwrap();
    neka_common::rng::seed(1);
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
    let model = Tagger::new(small(CellType::Lstm, &vocabs), vb).unwrap();
    let cfg = TrainConfig {
        clip_grad_norm: Some(5.0),
        ..overfit_config(40, 5)
    };
    let out = tempfile::tempdir().unwrap();
    let info =
        neka_common::checkpoint::CheckpointInfo::new(tagger::MODEL_NAME, model.config(), "fixture")
            .unwrap();
    let mut t = Trainer::new(cfg, &vm, info, out.path()).unwrap();
    t.fit(&model, &ds, None::<&TaggingDataset>).unwrap();
    let m = evaluate(&model, &ds, 64).unwrap();
    assert_eq!(m.count, ds.tokens());
    assert_eq!(
        m.accuracy, 1.0,
        "training accuracy {} (loss {})",
        m.accuracy, m.loss
    );
}

#[test]
fn padding_changes_nothing_and_save_load_tags_identically() {
    let sents = sample();
    let vocabs = TaggingVocabs::build(&sents, TaggingVocabConfig::default());
    for cell in [CellType::Lstm, CellType::Rnn, CellType::Gru] {
        neka_common::rng::seed(3);
        let vm = VarMap::new();
        let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
        let model = Tagger::new(small(cell, &vocabs), vb).unwrap();
        let ds = TaggingDataset::new(&sents, &vocabs, &Device::Cpu).unwrap();
        // Sentence 1 alone, and padded in a batch after the longest sentence.
        let longest = (0..sents.len()).max_by_key(|&i| sents[i].len()).unwrap();
        assert!(sents[longest].len() > sents[1].len());
        let alone = model.forward_t(&ds.batch(&[1]).unwrap(), false).unwrap();
        let padded = model
            .forward_t(&ds.batch(&[longest, 1]).unwrap(), false)
            .unwrap();
        let n = sents[1].len();
        let a = alone.get(0).unwrap();
        let b = padded.get(1).unwrap().narrow(0, 0, n).unwrap();
        let diff = max_abs_diff(&a, &b).unwrap();
        assert!(diff < 1e-5, "{cell}: padding changed the logits by {diff}");

        // Save like the trainer does, reload, tag the same.
        let dir = tempfile::tempdir().unwrap();
        let info = neka_common::checkpoint::CheckpointInfo::new(
            tagger::MODEL_NAME,
            model.config(),
            "fixture",
        )
        .unwrap();
        let mut info = info;
        info.files = vocabs.files();
        neka_common::checkpoint::save_model(dir.path(), &vm, &info).unwrap();
        for f in ["words.json", "chars.json", "tags.json"] {
            assert!(dir.path().join(f).is_file(), "{f}: readable copy written");
        }
        let loaded = LoadedTagger::load(dir.path(), &Device::Cpu).unwrap();
        let forms: Vec<Vec<String>> = sents.iter().map(|s| s.forms.clone()).collect();
        let tags = loaded.tag(&forms).unwrap();
        let batch = TagBatch::new(&ds.sentences.iter().collect::<Vec<_>>(), &Device::Cpu).unwrap();
        let direct: Vec<Vec<String>> = model
            .predict(&batch)
            .unwrap()
            .into_iter()
            .map(|s| {
                s.iter()
                    .map(|&t| vocabs.tags.token(t).unwrap().to_string())
                    .collect()
            })
            .collect();
        assert_eq!(tags, direct);
        // The vocabularies are tied to the weights: a permuted tags.json of the same size
        // beside them changes nothing (the loader reads the copy recorded in the weights) …
        let mut permuted = vocabs.tags.tokens().to_vec();
        permuted.swap(0, 1);
        std::fs::write(
            dir.path().join("tags.json"),
            serde_json::json!({ "tokens": permuted }).to_string(),
        )
        .unwrap();
        let again = LoadedTagger::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(again.tag(&forms).unwrap(), tags);
        // … and a recorded vocabulary that does not fit the config is a named error.
        info.files
            .insert("tags.json".into(), r#"{"tokens": ["NOUN"]}"#.into());
        neka_common::checkpoint::save_model(dir.path(), &vm, &info).unwrap();
        let e = LoadedTagger::load(dir.path(), &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("vocabulary files"),
            "{e}"
        );
    }
}

/// `pos_tagger gates` reads the gates of the sentence LSTM's first layer: its step-by-step
/// trace reproduces that layer's forward-direction output, and the gates obey the equations.
#[test]
fn gate_trace_is_the_first_lstm_layer() {
    let sents = sample();
    let vocabs = TaggingVocabs::build(&sents, TaggingVocabConfig::default());
    neka_common::rng::seed(4);
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
    let cfg = Config {
        num_layers: 1,
        ..small(CellType::Lstm, &vocabs)
    };
    let model = Tagger::new(cfg, vb).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let info =
        neka_common::checkpoint::CheckpointInfo::new(tagger::MODEL_NAME, model.config(), "fixture")
            .unwrap();
    let mut info = info;
    info.files = vocabs.files();
    neka_common::checkpoint::save_model(dir.path(), &vm, &info).unwrap();
    let loaded = LoadedTagger::load(dir.path(), &Device::Cpu).unwrap();
    let words = &sents[1].forms;
    let trace = loaded.gate_trace(words).unwrap();
    assert_eq!(trace.hidden.len(), words.len());

    // The same layer through the runner, with the loaded weights.
    let batch = TagBatch::new(&[&vocabs.encode_words(words)], &Device::Cpu).unwrap();
    let x = loaded.tagger.features(&batch, false).unwrap();
    let vb = candle_nn::VarBuilder::from_varmap(&loaded.varmap, DType::F32, &Device::Cpu);
    let h = cfg.hidden_size;
    let rcfg = neka_lstm::RecurrentConfig::new(x.dim(2).unwrap(), h).bidirectional(true);
    let lstm = neka_lstm::Lstm::new(rcfg, vb.pp("rnn")).unwrap();
    let out = neka_lstm::SequenceEncoder::encode(&lstm, &x, Default::default(), false).unwrap();
    let want: Vec<Vec<f32>> = out
        .output
        .squeeze(0)
        .unwrap()
        .narrow(1, 0, h)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (t, (got, want)) in trace.hidden.iter().zip(&want).enumerate() {
        for u in 0..h {
            assert!(
                (got[u] - want[u]).abs() < 1e-5,
                "h[{t}][{u}]: {} vs {}",
                got[u],
                want[u]
            );
            assert!((0.0..=1.0).contains(&trace.forget[t][u]));
        }
    }
    let e = loaded.gate_trace::<&str>(&[]).unwrap_err().to_string();
    assert!(e.contains("non-empty sentence"), "{e}");
}
