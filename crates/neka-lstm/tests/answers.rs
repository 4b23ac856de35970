//! The shipped tagger (`models/pos-bilstm-ewt`) and the character model answer the same for
//! composed and decomposed Unicode, and a model that cannot answer is refused at load time
//! or at the answer, never turned into tags or text.

use candle_core::{Device, Tensor};
use neka_lstm::tagger::LoadedTagger;
use neka_testing::damage;
use std::path::{Path, PathBuf};

fn shipped_tagger() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/pos-bilstm-ewt")
}

#[test]
fn composed_and_decomposed_text_get_the_same_tags() -> neka_lstm::Result<()> {
    let t = LoadedTagger::load(&shipped_tagger(), &Device::Cpu)?;
    // é as e + U+0301, as macOS produces it
    let composed = "I had a café au lait at the Café Müller .";
    let decomposed = "I had a cafe\u{301} au lait at the Cafe\u{301} Mu\u{308}ller .";
    assert_ne!(composed, decomposed);
    let a = t.tag_text(&[composed])?;
    let b = t.tag_text(&[decomposed])?;
    assert_eq!(a, b);
    assert_eq!(a[0].0.len(), 11, "café is one token: {:?}", a[0].0);
    assert_eq!(a[0].0[3], "café");
    // pre-tokenised words meet the vocabulary normalised too (the demo and the crate API)
    let words_c = ["the", "café", "opened"];
    let words_d = ["the", "cafe\u{301}", "opened"];
    assert_eq!(t.tag(&[words_c.to_vec()])?, t.tag(&[words_d.to_vec()])?);
    let pc = t.tag_with_probabilities(&words_c, 3)?;
    let pd = t.tag_with_probabilities(&words_d, 3)?;
    assert_eq!(pc, pd);
    Ok(())
}

#[test]
fn a_tagger_with_an_extreme_weight_is_refused_naming_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pos-extreme");
    damage::copy_model_dir(&shipped_tagger(), &dir).unwrap();
    // finite, so the weight loader takes it; every tag would be ADJ
    damage::set_weight(&dir.join("model.safetensors"), "fc.weight", 0, 3e38).unwrap();
    let msg = damage::assert_unusable(LoadedTagger::load(&dir, &Device::Cpu), &dir, "fc.weight");
    assert!(msg.contains("3e38"), "{msg}");
}

#[test]
fn non_finite_tag_scores_are_an_error_not_tags() -> neka_lstm::Result<()> {
    let mut t = LoadedTagger::load(&shipped_tagger(), &Device::Cpu)?;
    // damage the loaded weights (a load-time probe would refuse the file): scores become NaN
    let bias = Tensor::full(f32::INFINITY, 17, &Device::Cpu)?;
    t.varmap.set_one("fc.bias", bias.clone())?;
    t.varmap.set_one(
        "fc.weight",
        Tensor::full(f32::NAN, (17, 400), &Device::Cpu)?,
    )?;
    let e = t
        .tag(&[vec!["the", "dog"], vec!["it", "runs", "."]])
        .unwrap_err();
    assert!(
        matches!(e, neka_common::Error::NonFiniteOutput(_))
            && e.to_string().contains("sentence(s) 1, 2"),
        "{e}"
    );
    let e = t.tag_with_probabilities(&["the", "dog"], 3).unwrap_err();
    assert!(
        e.to_string().contains("the tag scores of the sentence"),
        "{e}"
    );
    Ok(())
}

mod char_model {
    use super::*;
    use candle_nn::VarMap;
    use neka_common::checkpoint::{save_model, CheckpointInfo};
    use neka_common::vocab::{Vocab, UNK};
    use neka_lstm::char_lm::{CharLm, Config, VOCAB_FILE};

    /// A small untrained character model saved into `dir`, with a vocabulary holding `é`.
    fn save_small(dir: &Path) {
        let vocab = Vocab::from_tokens(
            [UNK, " ", "a", "c", "f", "é", "e"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            Some(UNK),
        )
        .unwrap();
        let cfg = Config {
            vocab_size: vocab.len(),
            embed_dim: 8,
            hidden_size: 8,
            ..Config::default()
        };
        neka_common::rng::seed(3);
        let varmap = VarMap::new();
        let vb =
            neka_common::init::seeded_var_builder(&varmap, candle_core::DType::F32, &Device::Cpu);
        CharLm::new(cfg, vb).unwrap();
        let mut info = CheckpointInfo::new("char-lm", &cfg, "test").unwrap();
        info.files.insert(VOCAB_FILE.to_string(), vocab.to_json());
        save_model(dir, &varmap, &info).unwrap();
    }

    #[test]
    fn a_decomposed_prompt_samples_as_the_composed_one() {
        let tmp = tempfile::tempdir().unwrap();
        save_small(tmp.path());
        let (m, vocab) = CharLm::load(tmp.path(), &Device::Cpu).unwrap();
        neka_common::rng::seed(7);
        let a = m.sample(&vocab, "café", 20, 1.0).unwrap();
        neka_common::rng::seed(7);
        let b = m.sample(&vocab, "cafe\u{301}", 20, 1.0).unwrap();
        // the same characters sampled after the same (normalised) prompt
        assert_eq!(a, b);
        assert!(a.starts_with("café"));
    }

    #[test]
    fn a_char_model_with_an_extreme_weight_is_refused_naming_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("char-extreme");
        save_small(&dir);
        damage::set_weight(&dir.join("model.safetensors"), "fc.weight", 5, 3e38).unwrap();
        damage::assert_unusable(CharLm::load(&dir, &Device::Cpu), &dir, "fc.weight");
    }
}
