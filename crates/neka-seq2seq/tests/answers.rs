//! The shipped translator (`models/seq2seq-multi30k-de-en`) translates composed and
//! decomposed Unicode alike, refuses to load with an extreme weight, refuses non-finite
//! scores as answers, and caps the beam.

use candle_core::{Device, Tensor};
use neka_seq2seq::{DecodeConfig, Translator, MAX_BEAM};
use neka_testing::damage;
use std::path::{Path, PathBuf};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/seq2seq-multi30k-de-en")
}

#[test]
fn the_readme_example_typed_decomposed_translates_as_composed() -> neka_seq2seq::Result<()> {
    let t = Translator::load(&shipped(), &Device::Cpu)?;
    let composed = "ein mann fährt fahrrad .".to_string();
    let decomposed = "ein mann fa\u{308}hrt fahrrad .".to_string();
    assert_ne!(composed, decomposed);
    for beam in [1, 5] {
        let cfg = DecodeConfig {
            beam,
            ..DecodeConfig::default()
        };
        let (sa, ha) = t.translate(std::slice::from_ref(&composed), &cfg)?;
        let (sb, hb) = t.translate(std::slice::from_ref(&decomposed), &cfg)?;
        assert_eq!(sa, sb);
        assert_eq!(ha, hb);
        let words = t.tokens(&ha[0]);
        assert!(!words.contains(&"<unk>".to_string()), "{words:?}");
    }
    // pre-tokenised input meets the vocabulary normalised too
    let cfg = DecodeConfig::default();
    let a = t.translate_tokens(&[vec!["ein", "mann", "fährt", "fahrrad", "."]], &cfg)?;
    let b = t.translate_tokens(&[vec!["ein", "mann", "fa\u{308}hrt", "fahrrad", "."]], &cfg)?;
    assert_eq!(a, b);
    Ok(())
}

#[test]
fn a_translator_with_an_extreme_weight_is_refused_naming_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("seq2seq-extreme");
    damage::copy_model_dir(&shipped(), &dir).unwrap();
    damage::set_weight(&dir.join("model.safetensors"), "out.bias", 7, 3e38).unwrap();
    damage::assert_unusable(Translator::load(&dir, &Device::Cpu), &dir, "out.bias");
}

#[test]
fn non_finite_scores_are_an_error_not_a_translation() -> neka_seq2seq::Result<()> {
    let mut t = Translator::load(&shipped(), &Device::Cpu)?;
    t.varmap
        .set_one("out.bias", Tensor::full(f32::NAN, 5976, &Device::Cpu)?)?;
    let s = vec!["ein mann fährt fahrrad .".to_string()];
    for beam in [1, 3] {
        let cfg = DecodeConfig {
            beam,
            ..DecodeConfig::default()
        };
        let e = t.translate(&s, &cfg).unwrap_err();
        assert!(
            matches!(e, neka_common::Error::NonFiniteOutput(_))
                && e.to_string().contains("sentence 1"),
            "beam {beam}: {e}"
        );
    }
    Ok(())
}

#[test]
fn a_beam_wider_than_the_cap_is_a_typed_error_before_any_work() -> neka_seq2seq::Result<()> {
    let t = Translator::load(&shipped(), &Device::Cpu)?;
    let cfg = DecodeConfig {
        beam: 5976,
        ..DecodeConfig::default()
    };
    let e = t.translate(&["ein mann .".to_string()], &cfg).unwrap_err();
    assert!(
        matches!(&e, neka_common::Error::Config { field, .. } if field == "beam")
            && e.to_string().contains(&format!("at most {MAX_BEAM}")),
        "{e}"
    );
    // the search functions refuse it too
    let e = neka_seq2seq::beam_search_batch(&t.model, &[&[5u32, 6, 3][..]], &cfg).unwrap_err();
    assert!(e.to_string().contains("wider than the 64"), "{e}");
    Ok(())
}
