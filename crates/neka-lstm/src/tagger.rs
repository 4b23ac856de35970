//! Many-to-many: a part-of-speech tagger — one tag per word, `ŷ_t = softmax(V h_t)`.
//!
//! ```text
//! word w_t ──▶ word embedding e_t (word_dim)                           ┐
//! chars of w_t ──▶ char embedding ──▶ char BiLSTM ──▶ [h_→ ; h_←] (2·char_hidden) ┘ concat
//!   ──▶ dropout ──▶ 2-layer BiLSTM over the sentence (lengths) ──▶ h_t (2·hidden)
//!   ──▶ dropout ──▶ V h_t + b ──▶ logits over the 17 UPOS tags
//! ```
//!
//! * The **character model** gives every word, seen in training or not, a vector built from its
//!   spelling (suffixes like *-ly*, *-ing*, capitals, digits), so unknown words still get
//!   sensible tags. It runs once per distinct word of a batch ([`TagBatch::chars`]).
//! * **Word dropout**: in training a word id is replaced by `<unk>`, so the `<unk>` embedding is
//!   trained and the model learns to lean on the character features for rare words: with
//!   probability `word_dropout` for every word, and/or — once the training counts are set with
//!   [`Tagger::set_word_counts`] — with probability `α / (α + count(w))` (`word_dropout_alpha`,
//!   Kiperwasser & Goldberg 2016), which drops rare words often and frequent words almost never.
//! * The sentence network is [`AnyRecurrent`]: `cell = lstm` is the BiLSTM tagger; `cell = rnn`
//!   puts the lecture's Elman RNN in its place (same sizes), to compare them on real data.
//! * The loss is [`masked_cross_entropy`]: padded positions count for nothing.
//!
//! Tensor names: `word_embed.weight`, `char_embed.weight`, `char_rnn.weight_ih_l0…`,
//! `rnn.weight_ih_l0…` (PyTorch `nn.LSTM` names), `fc.weight`, `fc.bias` (the lecture's `V`).

use crate::gates::{trace_lstm, LstmTrace};
use crate::{AnyRecurrent, CellType, ManyToMany, RecurrentConfig, SeqInput, SequenceEncoder};
use candle_core::{Device, Module, ModuleT, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder, VarMap};
use neka_common::checkpoint::{self, CheckpointInfo};
use neka_common::data::conllu::TaggedSentence;
use neka_common::data::tagging::{TagBatch, TaggingVocabConfig, TaggingVocabs};
use neka_common::loss::{masked_correct, masked_cross_entropy};
use neka_common::metrics::ConfusionMatrix;
use neka_common::nn::Dropout;
use neka_common::train::{StepContext, StepOutput, TrainModel};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The tagger's shape. Defaults: word 100, char BiLSTM 2×50 over 50-dim char embeddings,
/// 2-layer BiLSTM 2×200, dropout 0.33, frequency-aware word dropout with α = 0.25.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Cell of the sentence network.
    pub cell: CellType,
    /// Cell of the per-word character network.
    pub char_cell: CellType,
    pub word_vocab: usize,
    pub char_vocab: usize,
    pub num_tags: usize,
    pub word_dim: usize,
    pub char_dim: usize,
    /// Hidden size per direction of the character network; 0 = no character features.
    pub char_hidden: usize,
    /// Hidden size per direction of the sentence network.
    pub hidden_size: usize,
    pub num_layers: usize,
    /// Dropout on the word vectors, between recurrent layers, and before `V`.
    pub dropout: f32,
    /// Probability of replacing any word id by `<unk>` in training.
    pub word_dropout: f32,
    /// `α` of the frequency-aware word dropout `α / (α + count(w))` (0 = off).
    pub word_dropout_alpha: f32,
    /// Label smoothing ε of the training loss (0 = plain cross-entropy).
    pub label_smoothing: f64,
    /// How words map to ids (saved with the model, so tagging uses the same mapping).
    pub vocab: TaggingVocabConfig,
}

/// How the tagger trains unless told otherwise (`pos_tagger train`'s defaults, those of the
/// pretrained `models/pos-bilstm-ewt`): 30 epochs of 32 sentences, AdamW at 2e-3 with
/// β₂ = 0.9 (Dozat & Manning), a cosine schedule over the run, gradient norm clipped to 5;
/// dev accuracy picks the best epoch.
pub fn default_train_config() -> neka_common::train::TrainConfig {
    let adamw = neka_common::optim::OptimizerConfig::adamw(2e-3)
        .with_beta2(0.9)
        .expect("AdamW has a β₂");
    neka_common::train::TrainConfig::new(30, 32, adamw)
        .eval_batch(256)
        .clip(5.0)
        .cosine()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cell: CellType::Lstm,
            char_cell: CellType::Lstm,
            word_vocab: 0,
            char_vocab: 0,
            num_tags: 17,
            word_dim: 100,
            char_dim: 50,
            char_hidden: 50,
            hidden_size: 200,
            num_layers: 2,
            dropout: 0.33,
            word_dropout: 0.0,
            word_dropout_alpha: 0.25,
            label_smoothing: 0.0,
            vocab: TaggingVocabConfig::default(),
        }
    }
}

impl Config {
    /// This config with the vocabulary sizes of `vocabs`.
    pub fn with_vocabs(mut self, vocabs: &TaggingVocabs) -> Self {
        self.word_vocab = vocabs.words.len();
        self.char_vocab = vocabs.chars.len();
        self.num_tags = vocabs.tags.len();
        self.vocab = vocabs.cfg;
        self
    }

    /// Checks every field against its range (a config read from an untrusted file, or built
    /// from flags); the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        use neka_common::check;
        check::between("word_vocab", self.word_vocab, 2, 50_000_000)?;
        if self.char_hidden > 0 {
            check::between("char_vocab", self.char_vocab, 2, 50_000_000)?;
            check::positive("char_dim", self.char_dim)?;
        }
        check::between("num_tags", self.num_tags, 1, 100_000)?;
        check::positive("word_dim", self.word_dim)?;
        check::positive("hidden_size", self.hidden_size)?;
        check::between("num_layers", self.num_layers, 1, 64)?;
        check::fraction("dropout", self.dropout as f64, false)?;
        check::fraction("word_dropout", self.word_dropout as f64, false)?;
        check::non_negative("word_dropout_alpha", self.word_dropout_alpha as f64)?;
        check::fraction("label_smoothing", self.label_smoothing, false)
    }

    fn char_features(&self) -> usize {
        2 * self.char_hidden
    }
}

/// The longest sentence [`LoadedTagger::tag`] accepts, in words (EWT's longest has 159).
pub const MAX_SENTENCE_LEN: usize = neka_common::data::tagging::MAX_SENTENCE_WORDS;

/// The model name in `config.json`.
pub const MODEL_NAME: &str = "pos-tagger";

/// The sentence [`LoadedTagger::load`] tags to check that the model answers in finite
/// numbers ([`neka_common::finite::probe`]).
pub const PROBE_SENTENCE: [&str; 5] = ["The", "dog", "runs", "home", "."];

/// A trained tagger with its vocabularies, loaded from a model directory.
pub struct LoadedTagger {
    pub tagger: Tagger,
    pub vocabs: TaggingVocabs,
    pub info: CheckpointInfo,
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
    pub tag: String,
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
    /// indices are returned).
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
        if self.tagger.cfg.cell != CellType::Lstm || words.is_empty() {
            return Err(neka_common::Error::config(
                "gates",
                format!(
                    "need an LSTM tagger and a non-empty sentence (cell {}, {} words)",
                    self.tagger.cfg.cell,
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

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Tagger {
    word_embed: Embedding,
    chars: Option<(Embedding, AnyRecurrent)>,
    net: ManyToMany<AnyRecurrent>,
    dropout: Dropout,
    /// Per word id: the probability of dropping it to `<unk>` in training.
    drop_probs: Option<Vec<f32>>,
    cfg: Config,
}

impl Tagger {
    pub fn new(cfg: Config, vb: VarBuilder) -> crate::Result<Self> {
        if cfg.word_vocab < 2 || cfg.num_tags == 0 || (cfg.char_hidden > 0 && cfg.char_vocab < 2) {
            return Err(neka_common::Error::config(
                "tagger config",
                format!(
                    "word_vocab {}, char_vocab {}, num_tags {}: set them from the vocabularies (Config::with_vocabs)",
                    cfg.word_vocab, cfg.char_vocab, cfg.num_tags
                ),
            ));
        }
        cfg.validate()
            .map_err(|msg| neka_common::Error::config("tagger config", msg))?;
        if !(0.0..1.0).contains(&cfg.word_dropout) || cfg.word_dropout_alpha < 0.0 {
            return Err(neka_common::Error::config(
                "word_dropout",
                format!(
                    "word_dropout {} must be in [0, 1) and word_dropout_alpha {} ≥ 0",
                    cfg.word_dropout, cfg.word_dropout_alpha
                ),
            ));
        }
        let word_embed = candle_nn::embedding(cfg.word_vocab, cfg.word_dim, vb.pp("word_embed"))?;
        let chars = if cfg.char_hidden > 0 {
            let emb = candle_nn::embedding(cfg.char_vocab, cfg.char_dim, vb.pp("char_embed"))?;
            let rcfg = RecurrentConfig::new(cfg.char_dim, cfg.char_hidden).bidirectional(true);
            Some((
                emb,
                AnyRecurrent::new(cfg.char_cell, rcfg, vb.pp("char_rnn"))?,
            ))
        } else {
            None
        };
        let rcfg = RecurrentConfig::new(cfg.word_dim + cfg.char_features(), cfg.hidden_size)
            .num_layers(cfg.num_layers)
            .bidirectional(true)
            .dropout(cfg.dropout);
        let rnn = AnyRecurrent::new(cfg.cell, rcfg, vb.pp("rnn"))?;
        Ok(Self {
            word_embed,
            chars,
            net: ManyToMany::new(rnn, cfg.num_tags, vb)?,
            dropout: Dropout::new(cfg.dropout)?,
            drop_probs: None,
            cfg,
        })
    }

    /// Training counts of every word id (from [`TaggingVocabs::word_counts`]), for the
    /// frequency-aware word dropout: `p(w) = max(word_dropout, α / (α + count(w)))`.
    pub fn set_word_counts(&mut self, counts: &[usize]) {
        let (p, a) = (self.cfg.word_dropout, self.cfg.word_dropout_alpha);
        self.drop_probs = Some(
            counts
                .iter()
                .enumerate()
                .map(|(id, &c)| match id {
                    0 | 1 => 0.0, // <pad>, <unk>
                    _ if a > 0.0 => p.max(a / (a + c as f32)),
                    _ => p,
                })
                .collect(),
        );
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// A batch → tag logits `(B, T, num_tags)` (rows past a sentence's length are
    /// meaningless; use the batch's mask).
    pub fn forward_t(&self, batch: &TagBatch, train: bool) -> Result<Tensor> {
        let x = self.features(batch, train)?;
        let input = SeqInput {
            lengths: Some(&batch.lengths),
            ..Default::default()
        };
        let h = self.net.encoder.encode(&x, input, train)?.output;
        let h = self.dropout.forward_t(&h, train)?;
        neka_common::nn::linear_forward(&self.net.fc, &h, false)
    }

    /// What the sentence BiLSTM reads: per token, the word embedding and the character
    /// BiLSTM's summary of the word, `(B, T, word_dim + 2·char_hidden)` (after dropout).
    pub fn features(&self, batch: &TagBatch, train: bool) -> Result<Tensor> {
        let (b, t) = batch.shape;
        let dev = self.word_embed.embeddings().device();
        let mut words = batch.words.clone();
        if train && (self.cfg.word_dropout > 0.0 || self.drop_probs.is_some()) {
            let uniform = self.cfg.word_dropout;
            neka_common::rng::with_rng(|r| {
                use rand::Rng;
                for w in words.iter_mut().filter(|w| **w > 1) {
                    let p = self
                        .drop_probs
                        .as_ref()
                        .and_then(|ps| ps.get(*w as usize).copied())
                        .unwrap_or(uniform);
                    if r.random::<f32>() < p {
                        *w = 1; // <unk>
                    }
                }
            });
        }
        let words = Tensor::from_vec(words, (b, t), dev)?;
        let mut x = self.word_embed.forward(&words)?;
        if let Some((emb, rnn)) = &self.chars {
            // (N, L) chars of the distinct words → (N, 2·char_hidden) → one row per token.
            let c = emb.forward(&batch.chars)?;
            let input = SeqInput {
                lengths: Some(&batch.char_lengths),
                ..Default::default()
            };
            let per_word = rnn.encode(&c, input, train)?.last_hidden(2)?;
            let per_token = per_word.index_select(&batch.word_index, 0)?.reshape((
                b,
                t,
                self.cfg.char_features(),
            ))?;
            x = Tensor::cat(&[x, per_token], D::Minus1)?;
        }
        self.dropout.forward_t(&x, train)
    }

    /// The most likely tag id of every real token, sentence by sentence.
    pub fn predict(&self, batch: &TagBatch) -> Result<Vec<Vec<u32>>> {
        let ids: Vec<Vec<u32>> = self.forward_t(batch, false)?.argmax(D::Minus1)?.to_vec2()?;
        Ok(ids
            .into_iter()
            .zip(&batch.lengths)
            .map(|(mut row, &len)| {
                row.truncate(len);
                row
            })
            .collect())
    }
}

impl TrainModel for Tagger {
    type Batch = TagBatch;
    fn count_unit(&self) -> &'static str {
        "tokens"
    }

    /// Masked cross-entropy over the real tokens (label-smoothed in training if configured);
    /// `count` = tokens.
    fn step(&self, batch: &TagBatch, ctx: &StepContext) -> Result<StepOutput> {
        let train = ctx.train;
        let Some(tags) = &batch.tags else {
            candle_core::bail!(
                "the tagger needs gold tags to compute a loss (batch built from untagged text)"
            )
        };
        let logits = self.forward_t(batch, train)?;
        let n = batch.shape.0 * batch.shape.1;
        let logits = logits.reshape((n, self.cfg.num_tags))?;
        let tags = tags.flatten_all()?;
        let mask = batch.mask.flatten_all()?;
        Ok(StepOutput {
            loss: masked_cross_entropy(
                &logits,
                &tags,
                &mask,
                if train { self.cfg.label_smoothing } else { 0.0 },
            )?,
            correct: masked_correct(&logits, &tags, &mask)?,
            count: batch.tokens(),
        })
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
