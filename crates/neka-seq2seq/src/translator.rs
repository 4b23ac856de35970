//! A trained translator loaded from a model directory: weights, config and vocabularies.

use crate::data::{Seq2SeqVocabs, SourceBatch};
use crate::decode::{beam_search_batch, greedy, DecodeConfig, Hypothesis};
use crate::model::{Config, Seq2Seq};
use candle_core::Device;
use candle_nn::VarMap;
use neka_common::checkpoint::{self, CheckpointInfo};
use neka_common::data::parallel::prepare;
use neka_common::metrics::{corpus_bleu, Bleu};
use std::path::Path;

/// The model name in `config.json`.
pub const MODEL_NAME: &str = "seq2seq";

/// The source sentence [`Translator::load`] runs the model on to check that it answers in
/// finite numbers ([`neka_common::finite::probe`]).
pub const PROBE_SENTENCE: [&str; 4] = ["ein", "mann", "läuft", "."];

/// See the module docs.
pub struct Translator {
    /// The encoder–decoder.
    pub model: Seq2Seq,
    /// Source and target vocabularies (`src_vocab.json`, `tgt_vocab.json`).
    pub vocabs: Seq2SeqVocabs,
    /// What the model directory says about the model (`config.json`): its name and config, the
    /// dataset and final metrics; `files` holds the vocabularies' JSON.
    pub info: CheckpointInfo,
    /// The variables behind `model`'s weights (what is saved to `model.safetensors`).
    pub varmap: VarMap,
}

impl Translator {
    /// A new, seeded, untrained model of `cfg`'s shape (vocabulary sizes taken from `vocabs`)
    /// for the dataset named `dataset`.
    pub fn fresh(
        cfg: Config,
        vocabs: Seq2SeqVocabs,
        dataset: &str,
        device: &Device,
    ) -> crate::Result<Self> {
        let cfg = Config {
            src_vocab: vocabs.src.len(),
            tgt_vocab: vocabs.tgt.len(),
            ..cfg
        };
        let varmap = VarMap::new();
        let vb = neka_common::init::seeded_var_builder(&varmap, candle_core::DType::F32, device);
        let model = Seq2Seq::new(cfg, vb)?;
        let mut info = CheckpointInfo::new(MODEL_NAME, &cfg, dataset)?;
        info.files = vocabs.files();
        Ok(Self {
            model,
            vocabs,
            info,
            varmap,
        })
    }

    /// The files a translator's model directory holds besides `model.safetensors` and
    /// `config.json` (what a Hub download fetches).
    pub const FILES: [&'static str; 2] = [crate::data::SRC_VOCAB_FILE, crate::data::TGT_VOCAB_FILE];

    /// Loads `model.safetensors`, `config.json`, `src_vocab.json` and `tgt_vocab.json` from
    /// `dir`, strictly.
    pub fn load(dir: &Path, device: &Device) -> crate::Result<Self> {
        let p = checkpoint::Pretrained::load(
            dir,
            device,
            Some(MODEL_NAME),
            "model.safetensors, config.json, src_vocab.json, tgt_vocab.json",
            |info, cfg_path, vb| {
                let cfg: Config = info.model_config(cfg_path)?;
                cfg.validate()
                    .map_err(|msg| neka_common::Error::checkpoint(cfg_path, msg))?;
                let vocabs = Seq2SeqVocabs::load(dir, info)?;
                if (vocabs.src.len(), vocabs.tgt.len()) != (cfg.src_vocab, cfg.tgt_vocab) {
                    return Err(neka_common::Error::checkpoint(
                        cfg_path,
                        format!(
                            "config vocabulary sizes ({}, {}) differ from the vocabulary files ({}, {})",
                            cfg.src_vocab,
                            cfg.tgt_vocab,
                            vocabs.src.len(),
                            vocabs.tgt.len()
                        ),
                    ));
                }
                Ok((Seq2Seq::new(cfg, vb)?, vocabs))
            },
        )?;
        let ((model, vocabs), info, varmap) = (p.model, p.info, p.varmap);
        let t = Self {
            model,
            vocabs,
            info,
            varmap,
        };
        t.probe(dir)?;
        Ok(t)
    }

    /// Refuses a model that loads but cannot answer (finite but extreme weights): one
    /// decoder step on [`PROBE_SENTENCE`] must give finite scores
    /// ([`neka_common::finite::probe`], an error naming `dir`).
    fn probe(&self, dir: &Path) -> crate::Result<()> {
        let ids = self.vocabs.encode_src(&PROBE_SENTENCE);
        let dev = self.model.device();
        let batch = SourceBatch::new(&[ids.as_slice()], &dev)?;
        let (enc, state) = self.model.encode(&batch, false)?;
        let (logits, alpha, _) =
            self.model
                .decode_step(&self.model.bos(1, &dev)?, &state, &enc, false)?;
        let what = format!(
            "the first-word scores for the probe sentence `{}`",
            PROBE_SENTENCE.join(" ")
        );
        neka_common::finite::probe(dir, &self.varmap, &logits, &what)?;
        if let Some(a) = alpha {
            let what = format!(
                "the attention over the probe sentence `{}`",
                PROBE_SENTENCE.join(" ")
            );
            neka_common::finite::probe(dir, &self.varmap, &a, &what)?;
        }
        Ok(())
    }

    /// Translates tokenized sentences: batched greedy search for `beam ≤ 1`, else beam search
    /// batched across sentences ([`beam_search_batch`]). Empty sentences give empty
    /// translations. A translation whose log-probability or attention is not finite is an
    /// [`neka_common::Error::NonFiniteOutput`] naming the sentence, never an answer.
    pub fn translate_tokens<S: AsRef<str>>(
        &self,
        sentences: &[Vec<S>],
        cfg: &DecodeConfig,
    ) -> crate::Result<Vec<Hypothesis>> {
        cfg.validate(self.vocabs.tgt.len())?;
        if let Some((i, s)) = sentences
            .iter()
            .enumerate()
            .find(|(_, s)| s.len() > cfg.max_src_len)
        {
            return Err(neka_common::Error::config(
                "sentence",
                format!(
                    "sentence {} has {} tokens, more than the {} this translator accepts \
                     (DecodeConfig::max_src_len); split it into sentences",
                    i + 1,
                    s.len(),
                    cfg.max_src_len
                ),
            ));
        }
        let ids: Vec<Vec<u32>> = sentences
            .iter()
            .map(|s| self.vocabs.encode_src(s))
            .collect();
        let empty = Hypothesis {
            ids: Vec::new(),
            log_prob: 0.0,
            attention: Vec::new(),
        };
        let mut out = vec![empty; ids.len()];
        let dev = self.model.device();
        let mut order: Vec<usize> = (0..ids.len()).filter(|&i| !ids[i].is_empty()).collect();
        // Sentences of similar length together (little padding), in chunks: 128 sentences for
        // greedy search, 64 sentences × k beams for beam search.
        order.sort_by_key(|&i| ids[i].len());
        let chunk = if cfg.beam <= 1 { 128 } else { 64 };
        for chunk in order.chunks(chunk) {
            let srcs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let hyps = if cfg.beam <= 1 {
                greedy(&self.model, &SourceBatch::new(&srcs, &dev)?, cfg)?
            } else {
                beam_search_batch(&self.model, &srcs, cfg)?
            };
            for (&i, h) in chunk.iter().zip(hyps) {
                // NaN scores would silently pick token 0 at every step: refuse them
                let scores: Vec<f64> = std::iter::once(h.log_prob)
                    .chain(h.attention.iter().flatten().map(|&a| a as f64))
                    .collect();
                neka_common::finite::check_values(
                    &scores,
                    &format!(
                        "the translation scores (log-probability, attention) of sentence {}",
                        i + 1
                    ),
                )?;
                out[i] = h;
            }
        }
        Ok(out)
    }

    /// Lowercases and tokenizes raw sentences as in training, then translates them; returns
    /// the source tokens and the hypotheses.
    pub fn translate(
        &self,
        lines: &[String],
        cfg: &DecodeConfig,
    ) -> crate::Result<(Vec<Vec<String>>, Vec<Hypothesis>)> {
        let toks: Vec<Vec<String>> = lines.iter().map(|l| prepare(l, true)).collect();
        let hyps = self.translate_tokens(&toks, cfg)?;
        Ok((toks, hyps))
    }

    /// Translates the source side of tokenized `pairs` and scores the translations against
    /// the target side: corpus BLEU-4 ([`corpus_bleu`], equal to `sacrebleu --tokenize none`
    /// on the same tokens). Returns the score and the translations' tokens, in order.
    pub fn corpus_bleu(
        &self,
        pairs: &[(Vec<String>, Vec<String>)],
        cfg: &DecodeConfig,
    ) -> crate::Result<(Bleu, Vec<Vec<String>>)> {
        let srcs: Vec<Vec<&str>> = pairs
            .iter()
            .map(|p| p.0.iter().map(String::as_str).collect())
            .collect();
        let hyps: Vec<Vec<String>> = self
            .translate_tokens(&srcs, cfg)?
            .iter()
            .map(|h| self.tokens(h))
            .collect();
        let refs: Vec<Vec<String>> = pairs.iter().map(|p| p.1.clone()).collect();
        Ok((corpus_bleu(&hyps, &refs), hyps))
    }

    /// The rows of an attention heatmap for `h`: its target tokens, plus `<eos>` when the
    /// hypothesis ended with it (the attention has a row for every step decoded).
    pub fn attention_rows(&self, h: &Hypothesis) -> Vec<String> {
        let mut rows = self.tokens(h);
        if h.ids.last() == Some(&crate::data::EOS_ID) {
            rows.push("<eos>".into());
        }
        rows
    }

    /// Target tokens of a hypothesis (without `<eos>`).
    pub fn tokens(&self, h: &Hypothesis) -> Vec<String> {
        self.vocabs.decode_tgt(&h.ids)
    }
}
