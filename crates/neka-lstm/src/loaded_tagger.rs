//! A trained [`Tagger`] loaded from a model directory, with its vocabularies: tag sentences or
//! raw text, evaluate on CoNLL-U, give per-tag probabilities, trace the first LSTM layer's gates.

use crate::gates::{trace_lstm, LstmTrace};
use crate::tagger::{Config, Tagger};
use crate::CellType;
use candle_core::{Device, Tensor, D};
use candle_nn::VarMap;
use neka_common::checkpoint::{self, CheckpointInfo};
use neka_common::data::conllu::TaggedSentence;
use neka_common::data::tagging::{TagBatch, TaggingVocabs};
use neka_common::metrics::ConfusionMatrix;
use serde::Serialize;
use std::path::Path;

/// The longest sentence [`LoadedTagger::tag`] accepts, in words (EWT's longest has 159).
pub const MAX_SENTENCE_LEN: usize = neka_common::data::tagging::MAX_SENTENCE_WORDS;

/// The model name in `config.json`.
pub const MODEL_NAME: &str = "pos-tagger";

/// The sentence [`LoadedTagger::load`] tags to check that the model answers in finite
/// numbers ([`neka_common::finite::probe`]).
pub const PROBE_SENTENCE: [&str; 5] = ["The", "dog", "runs", "home", "."];

/// A trained tagger with its vocabularies, loaded from a model directory.
pub struct LoadedTagger {
    /// The tagger network with the trained weights.
    pub tagger: Tagger,
    /// Word, character and tag vocabularies (the model directory's JSON files).
    pub vocabs: TaggingVocabs,
    /// What the model directory says about the model (`config.json`): its name and config, the
    /// dataset and final metrics; `files` holds the vocabularies' JSON.
    pub info: CheckpointInfo,
    /// The variables behind `tagger`'s weights (what is saved to `model.safetensors`).
    pub varmap: VarMap,
}

impl LoadedTagger {
    /// The files a tagger's model directory holds besides `model.safetensors` and
    /// `config.json` (what a Hub download fetches).
    pub const FILES: [&'static str; 3] = [
        neka_common::data::tagging::WORDS_FILE,
        neka_common::data::tagging::CHARS_FILE,
        neka_common::data::tagging::TAGS_FILE,
    ];

    /// Tags raw text, one sentence per string, tokenised as EWT is
    /// ([`neka_common::data::text::tokenize_ewt`]): `(tokens, tags)` per sentence.
    pub fn tag_text<S: AsRef<str>>(
        &self,
        lines: &[S],
    ) -> crate::Result<Vec<(Vec<String>, Vec<String>)>> {
        let tokens: Vec<Vec<String>> = lines
            .iter()
            .map(|l| neka_common::data::text::tokenize_ewt(l.as_ref()))
            .collect();
        let tags = self.tag(&tokens)?;
        Ok(tokens.into_iter().zip(tags).collect())
    }

    /// Tags gold-tagged sentences (a CoNLL-U file's) and counts every token's (gold,
    /// predicted) UPOS pair: the confusion matrix over the model's tag set, which gives
    /// accuracy and per-tag precision / recall / F1 ([`ConfusionMatrix::report`]). A gold tag
    /// the model does not know is an error naming the sentence and the tag.
    pub fn evaluate(&self, sentences: &[TaggedSentence]) -> crate::Result<ConfusionMatrix> {
        let forms: Vec<Vec<&str>> = sentences
            .iter()
            .map(|s| s.forms.iter().map(String::as_str).collect())
            .collect();
        let predicted = self.tag(&forms)?;
        let tags = &self.vocabs.tags;
        let mut cm = ConfusionMatrix::new(tags.tokens().to_vec());
        for (i, (s, p)) in sentences.iter().zip(&predicted).enumerate() {
            for (gold, pred) in s.upos.iter().zip(p) {
                let g = tags.get(gold).ok_or_else(|| {
                    neka_common::Error::config(
                        "gold tag",
                        format!(
                            "sentence {}: `{gold}` is not one of the model's {} tags ({})",
                            i + 1,
                            tags.len(),
                            tags.tokens().join(" ")
                        ),
                    )
                })?;
                // `tag` only predicts tags of the set (`X` for an id it cannot name).
                let q = tags.get(pred).or_else(|| tags.get("X")).unwrap_or(0);
                cm.add(g as usize, q as usize);
            }
        }
        Ok(cm)
    }

    /// Loads `model.safetensors`, `config.json` and the vocabularies from `dir` (strictly:
    /// a missing, extra or misshaped tensor is an error naming it).
    pub fn load(dir: &Path, device: &Device) -> crate::Result<Self> {
        let p = checkpoint::Pretrained::load(
            dir,
            device,
            Some(MODEL_NAME),
            "model.safetensors, config.json, words.json, chars.json, tags.json",
            |info, cfg_path, vb| {
                let cfg: Config = info.model_config(cfg_path)?;
                cfg.validate()
                    .map_err(|msg| neka_common::Error::checkpoint(cfg_path, msg))?;
                let vocabs = TaggingVocabs::load(dir, info, cfg.vocab)?;
                if (vocabs.words.len(), vocabs.chars.len(), vocabs.tags.len())
                    != (cfg.word_vocab, cfg.char_vocab, cfg.num_tags)
                {
                    return Err(neka_common::Error::checkpoint(
                        cfg_path,
                        format!(
                            "config sizes (words {}, chars {}, tags {}) differ from the vocabulary files ({}, {}, {})",
                            cfg.word_vocab, cfg.char_vocab, cfg.num_tags,
                            vocabs.words.len(), vocabs.chars.len(), vocabs.tags.len()
                        ),
                    ));
                }
                Ok((Tagger::new(cfg, vb)?, vocabs))
            },
        )?;
        let ((tagger, vocabs), info, varmap) = (p.model, p.info, p.varmap);
        let loaded = Self {
            tagger,
            vocabs,
            info,
            varmap,
        };
        // A model that loads but cannot answer (finite but extreme weights) is refused here,
        // not discovered as NaN tags later.
        let enc = loaded.vocabs.encode_words(&PROBE_SENTENCE);
        let batch = TagBatch::new(&[&enc], device)?;
        let logits = loaded.tagger.forward_t(&batch, false)?;
        neka_common::finite::probe(
            dir,
            &loaded.varmap,
            &logits,
            &format!(
                "the tag scores of the probe sentence `{}`",
                PROBE_SENTENCE.join(" ")
            ),
        )?;
        Ok(loaded)
    }

    /// The tag logits `(B, T, tags)` of a batch, refused if any is not finite (a NaN would
    /// silently become the first tag): `what` names the sentences in the error.
    fn checked_logits(
        &self,
        batch: &TagBatch,
        what: impl FnOnce() -> String,
    ) -> crate::Result<Tensor> {
        let logits = self.tagger.forward_t(batch, false)?;
        if neka_common::finite::count_non_finite(&logits)?.0 > 0 {
            neka_common::finite::check(&logits, &format!("the tag scores of {}", what()))?;
        }
        Ok(logits)
    }

    /// Tags tokenized sentences: one UPOS tag per word. A sentence of more than
    /// [`MAX_SENTENCE_LEN`] words is an error naming it (memory grows with the longest).
    pub fn tag<S: AsRef<str>>(&self, sentences: &[Vec<S>]) -> crate::Result<Vec<Vec<String>>> {
        if let Some((i, s)) = sentences
            .iter()
            .enumerate()
            .find(|(_, s)| s.len() > MAX_SENTENCE_LEN)
        {
            return Err(neka_common::Error::config(
                "sentence",
                format!(
                    "sentence {} has {} words, more than the {MAX_SENTENCE_LEN} the tagger \
                     accepts; split it into sentences",
                    i + 1,
                    s.len()
                ),
            ));
        }
        let enc: Vec<_> = sentences
            .iter()
            .map(|s| self.vocabs.encode_words(s))
            .collect();
        let mut out = vec![Vec::new(); sentences.len()];
        let dev = self.tagger.word_embed.embeddings().device();
        // Sentences of similar length together (little padding), 64 at a time: memory stays
        // bounded by the longest chunk, not the longest sentence times the file.
        let mut order: Vec<usize> = (0..enc.len()).filter(|&i| !enc[i].is_empty()).collect();
        order.sort_by_key(|&i| enc[i].len());
        for chunk in order.chunks(64) {
            let batch = TagBatch::new(&chunk.iter().map(|&i| &enc[i]).collect::<Vec<_>>(), dev)?;
            let what = || {
                let mut ns: Vec<usize> = chunk.iter().map(|&i| i + 1).collect();
                ns.sort_unstable();
                let shown: Vec<String> = ns.iter().take(8).map(|n| n.to_string()).collect();
                let more = if ns.len() > 8 { " …" } else { "" };
                format!("sentence(s) {}{more}", shown.join(", "))
            };
            let logits = self.checked_logits(&batch, what)?;
            let ids: Vec<Vec<u32>> = logits.argmax(D::Minus1)?.to_vec2()?;
            for ((&i, ids), &len) in chunk.iter().zip(ids).zip(&batch.lengths) {
                out[i] = ids[..len]
                    .iter()
                    .map(|&t| self.vocabs.tags.token(t).unwrap_or("X").to_string())
                    .collect();
            }
        }
        Ok(out)
    }
}

/// One token's tag with its probability, and the `k` most likely tags
/// ([`LoadedTagger::tag_with_probabilities`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenTag {
    /// The predicted (most likely) tag, e.g. `NOUN`.
    pub tag: String,
    /// Softmax probability of `tag`, in `[0, 1]`.
    pub probability: f32,
    /// The most likely tags with their probabilities, best first.
    pub top: Vec<(String, f32)>,
}

impl LoadedTagger {
    /// Tags one tokenized sentence as [`LoadedTagger::tag`] does (the same tags) and gives
    /// each token's softmax probability of its tag and its `k` most likely tags. An empty
    /// sentence or one of more than [`MAX_SENTENCE_LEN`] words is an error saying so.
    pub fn tag_with_probabilities<S: AsRef<str>>(
        &self,
        words: &[S],
        k: usize,
    ) -> crate::Result<Vec<TokenTag>> {
        if words.is_empty() || words.len() > MAX_SENTENCE_LEN {
            return Err(neka_common::Error::config(
                "sentence",
                format!(
                    "{} words: the tagger takes 1 to {MAX_SENTENCE_LEN} words",
                    words.len()
                ),
            ));
        }
        let dev = self.tagger.word_embed.embeddings().device();
        let enc = self.vocabs.encode_words(words);
        let batch = TagBatch::new(&[&enc], dev)?;
        let logits = self.checked_logits(&batch, || "the sentence".to_string())?;
        let ids: Vec<u32> = logits.argmax(D::Minus1)?.squeeze(0)?.to_vec1()?;
        let probs: Vec<Vec<f32>> = candle_nn::ops::softmax_last_dim(&logits)?
            .squeeze(0)?
            .to_vec2()?;
        let name = |t: u32| self.vocabs.tags.token(t).unwrap_or("X").to_string();
        Ok(ids
            .iter()
            .zip(&probs)
            .take(words.len())
            .map(|(&id, p)| {
                let mut order: Vec<usize> = (0..p.len()).collect();
                order.sort_by(|&i, &j| p[j].total_cmp(&p[i]));
                TokenTag {
                    tag: name(id),
                    probability: p[id as usize],
                    top: order
                        .into_iter()
                        .take(k)
                        .map(|i| (name(i as u32), p[i]))
                        .collect(),
                }
            })
            .collect())
    }
}

impl LoadedTagger {
    /// What `pos_tagger gates` draws: the gates of [`LoadedTagger::gate_trace`] over `words`
    /// (labelled `word/TAG` with the predicted tags) into `out/lstm_gates.png` and
    /// `out/lstm_cell_state.png`, for the `units` units whose forget gate varies most (their
    /// indices are returned). Feature `plot`.
    #[cfg(feature = "plot")]
    pub fn draw_gates<S: AsRef<str>>(
        &self,
        words: &[S],
        units: usize,
        out: &Path,
    ) -> crate::Result<Vec<usize>> {
        let trace = self.gate_trace(words)?;
        let words: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
        let tags = self.tag(std::slice::from_ref(&words))?.remove(0);
        let labels: Vec<String> = words
            .iter()
            .zip(&tags)
            .map(|(w, t)| format!("{w}/{t}"))
            .collect();
        let units = trace.busiest_units(units);
        let title = "The tagger's sentence LSTM (layer 1, left to right): its gates per token";
        trace.plot(&labels, &units, out, title)?;
        Ok(units)
    }

    /// The gates of the sentence LSTM's first layer (forward direction) over one tokenized
    /// sentence: what `pos_tagger gates` draws. An error for a GRU or RNN tagger.
    pub fn gate_trace<S: AsRef<str>>(&self, words: &[S]) -> crate::Result<LstmTrace> {
        if self.tagger.config().cell != CellType::Lstm || words.is_empty() {
            return Err(neka_common::Error::config(
                "gates",
                format!(
                    "need an LSTM tagger and a non-empty sentence (cell {}, {} words)",
                    self.tagger.config().cell,
                    words.len()
                ),
            ));
        }
        let dev = self.tagger.word_embed.embeddings().device();
        let enc = self.vocabs.encode_words(words);
        let batch = TagBatch::new(&[&enc], dev)?;
        let x = self.tagger.features(&batch, false)?.squeeze(0)?;
        let vars = self.varmap.data().lock().unwrap();
        let get = |n: &str| {
            vars.get(&format!("rnn.{n}_l0"))
                .map(|v| v.as_tensor().clone())
        };
        let missing = || neka_common::Error::config("gates", "no rnn.weight_ih_l0 / weight_hh_l0");
        Ok(trace_lstm(
            &x,
            &get("weight_ih").ok_or_else(missing)?,
            &get("weight_hh").ok_or_else(missing)?,
            get("bias_ih").as_ref(),
            get("bias_hh").as_ref(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_come_with_the_same_tags() -> crate::Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/tagger/lstm");
        let t = LoadedTagger::load(&dir, &Device::Cpu)?;
        let words = ["the", "dog", "runs", "fast", "."];
        let tags = t.tag(&[words.to_vec()])?.remove(0);
        let got = t.tag_with_probabilities(&words, 3)?;
        assert_eq!(got.iter().map(|g| g.tag.clone()).collect::<Vec<_>>(), tags);
        for g in &got {
            assert_eq!(g.top.len(), 3);
            assert_eq!(g.top[0], (g.tag.clone(), g.probability));
            assert!(g.top[0].1 >= g.top[1].1 && g.top[1].1 >= g.top[2].1);
            assert!(g.probability > 0.0 && g.probability <= 1.0);
        }
        let e = t.tag_with_probabilities::<&str>(&[], 3).unwrap_err();
        assert!(e.to_string().contains("0 words"), "{e}");
        Ok(())
    }
}
