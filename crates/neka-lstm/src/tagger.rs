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

use crate::{AnyRecurrent, CellType, ManyToMany, RecurrentConfig, SeqInput, SequenceEncoder};
use candle_core::{Module, ModuleT, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder};
use neka_common::data::tagging::{TagBatch, TaggingVocabConfig, TaggingVocabs};
use neka_common::loss::{masked_correct, masked_cross_entropy};
use neka_common::nn::Dropout;
use neka_common::train::{StepContext, StepOutput, TrainModel};
use serde::{Deserialize, Serialize};

pub use crate::loaded_tagger::{
    LoadedTagger, TokenTag, MAX_SENTENCE_LEN, MODEL_NAME, PROBE_SENTENCE,
};

/// The tagger's shape. Defaults: word 100, char BiLSTM 2×50 over 50-dim char embeddings,
/// 2-layer BiLSTM 2×200, dropout 0.33, frequency-aware word dropout with α = 0.25.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Cell of the sentence network.
    pub cell: CellType,
    /// Cell of the per-word character network.
    pub char_cell: CellType,
    /// Word vocabulary size, specials included (set by [`Config::with_vocabs`]).
    pub word_vocab: usize,
    /// Character vocabulary size, specials included (set by [`Config::with_vocabs`]).
    pub char_vocab: usize,
    /// Tags to predict: outputs of `fc` (17 UPOS tags by default).
    pub num_tags: usize,
    /// Size of a word embedding.
    pub word_dim: usize,
    /// Size of a character embedding (input of the character network).
    pub char_dim: usize,
    /// Hidden size per direction of the character network; 0 = no character features.
    pub char_hidden: usize,
    /// Hidden size per direction of the sentence network.
    pub hidden_size: usize,
    /// Stacked layers of the bidirectional sentence network.
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

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Tagger {
    pub(crate) word_embed: Embedding,
    chars: Option<(Embedding, AnyRecurrent)>,
    net: ManyToMany<AnyRecurrent>,
    dropout: Dropout,
    /// Per word id: the probability of dropping it to `<unk>` in training.
    drop_probs: Option<Vec<f32>>,
    cfg: Config,
}

impl Tagger {
    /// Creates (or loads) the weights under `vb` (`word_embed`, `char_embed`, `char_rnn`, `rnn`,
    /// `fc`). Fails with a config error if the vocabulary sizes are unset or a field is out of
    /// range ([`Config::validate`]).
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

    /// The shape the tagger was built with.
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
