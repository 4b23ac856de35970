//! The encoder–decoder: the lecture's seq2seq — a many-to-one encoder and a one-to-many
//! decoder — with attention.
//!
//! ```text
//! encoder   e_j = embed(x_j)        [h_j^→ ; h_j^←] = BiLSTM(e_1 … e_S)        (B, S, 2·He)
//! bridge    s_0 = tanh(W_b [h_S^→ ; h_1^←] + b)   (and C_0 likewise for the LSTM)   (B, Hd)
//! decoder   s_t = LSTM(embed(y_{t−1}) [; c_t for Bahdanau], s_{t−1})
//! attention α_tj = softmax_j(score(q_t, h_j)) over real source tokens only,  c_t = Σ_j α_tj h_j
//!           bahdanau (additive): score = vᵀ tanh(W_q s_{t−1} + W_k h_j),  c_t feeds the LSTM input
//!           luong (general):     score = s_tᵀ W_a h_j;   dot: score = s_tᵀ h_j (needs Hd = 2·He)
//! output    s̃_t = tanh(W_c [c_t ; s_t]),  p(y_t | y_<t, x) = softmax(W_o s̃_t)
//!           none (plain seq2seq): p(y_t | …) = softmax(W_o s_t)
//! ```
//!
//! With `tie_embeddings` (the default for new models) `s̃_t` has the embedding size E and
//! `W_o` *is* the target embedding matrix (Press & Wolf 2017): the vocabulary-sized matrix is
//! stored and learned once, and the largest matmul of a step (`E × V` instead of `Hd × V`)
//! costs half as much. Without attention, `s̃_t = tanh(W_c s_t)` then.
//!
//! With Luong / dot / no attention and full teacher forcing the decoder runs over the whole
//! target in one call of the fused recurrent kernel and attends with two batched matmuls;
//! Bahdanau attention (its context enters the LSTM input) and scheduled sampling run step by
//! step.

use crate::data::{Seq2SeqBatch, SourceBatch, BOS_ID};
use candle_core::{DType, Device, Module, ModuleT, Result, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use neka_common::loss::{masked_correct, masked_cross_entropy};
use neka_common::nn::{linear, linear_forward, Dropout};
use neka_common::train::{Monitor, StepContext, StepOutput, TrainModel};
use neka_lstm::{AnyRecurrent, CellType, RecurrentConfig, SeqInput, SequenceEncoder};
use serde::{Deserialize, Serialize};

/// How the decoder looks at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKind {
    /// The lecture's plain seq2seq: the source reaches the decoder only through `s_0`.
    None,
    /// Additive (Bahdanau et al. 2015).
    Bahdanau,
    /// Multiplicative, `s_tᵀ W_a h_j` (Luong et al. 2015, "general").
    #[default]
    Luong,
    /// `s_tᵀ h_j` (Luong "dot"); needs `dec_hidden = 2 · enc_hidden`.
    Dot,
}

impl std::str::FromStr for AttentionKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "bahdanau" | "additive" => Ok(Self::Bahdanau),
            "luong" | "general" => Ok(Self::Luong),
            "dot" => Ok(Self::Dot),
            o => Err(format!(
                "unknown attention `{o}` (none, bahdanau, luong or dot)"
            )),
        }
    }
}

impl std::fmt::Display for AttentionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Bahdanau => "bahdanau",
            Self::Luong => "luong",
            Self::Dot => "dot",
        })
    }
}

/// The model's shape and training behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `lstm` or `gru` (`rnn` works too).
    pub cell: CellType,
    /// Source vocabulary size, specials included (set from the vocabularies; at least 5).
    pub src_vocab: usize,
    /// Target vocabulary size `V`, specials included (set from the vocabularies; at least 5).
    pub tgt_vocab: usize,
    /// `E`, the size of the source and target embeddings (default 256).
    pub embed_dim: usize,
    /// Encoder hidden size per direction.
    pub enc_hidden: usize,
    /// Stacked layers of the bidirectional encoder (default 1).
    pub enc_layers: usize,
    /// `Hd`, the decoder's hidden size (default 512; `2 · enc_hidden` for dot attention).
    pub dec_hidden: usize,
    /// The attention score (default Luong's "general").
    pub attention: AttentionKind,
    /// Dropout probability on the embeddings, between encoder layers and before the output layer
    /// (training only; default 0.3).
    pub dropout: f32,
    /// Probability of feeding the gold previous token (teacher forcing) at the start of
    /// training.
    pub teacher_forcing: f64,
    /// The teacher-forcing probability reached after `teacher_forcing_steps` optimizer steps
    /// (a linear decay from `teacher_forcing`).
    pub teacher_forcing_final: f64,
    /// Optimizer steps of the linear decay; 0 (the default) keeps `teacher_forcing` throughout.
    pub teacher_forcing_steps: usize,
    /// Label smoothing ε of the training loss.
    pub label_smoothing: f64,
    /// `W_o` shares the target embedding matrix (and `s̃` has size `embed_dim`). A saved
    /// config without this field is an untied model (as saved before the option existed).
    #[serde(default)]
    pub tie_embeddings: bool,
}

/// How the translator trains unless told otherwise (`translate train`'s defaults, those of
/// the pretrained `models/seq2seq-multi30k-de-en`): 10 epochs of 64 pairs, AdamW at 2e-3, a
/// cosine schedule over the run, gradient norm clipped to 1; validation perplexity picks the
/// best epoch ([`Seq2Seq`]'s monitor).
pub fn default_train_config() -> neka_common::train::TrainConfig {
    let adamw = neka_common::optim::OptimizerConfig::adamw(2e-3);
    neka_common::train::TrainConfig::new(10, 64, adamw)
        .eval_batch(256)
        .clip(1.0)
        .cosine()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cell: CellType::Lstm,
            src_vocab: 0,
            tgt_vocab: 0,
            embed_dim: 256,
            enc_hidden: 256,
            enc_layers: 1,
            dec_hidden: 512,
            attention: AttentionKind::Luong,
            dropout: 0.3,
            teacher_forcing: 1.0,
            teacher_forcing_final: 1.0,
            teacher_forcing_steps: 0,
            label_smoothing: 0.1,
            tie_embeddings: true,
        }
    }
}

impl Config {
    /// Checks every field against its range (a config read from an untrusted file, or built
    /// from flags); the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        use neka_common::checkpoint::check;
        check::between("src_vocab", self.src_vocab, 5, 50_000_000)?;
        check::between("tgt_vocab", self.tgt_vocab, 5, 50_000_000)?;
        check::positive("embed_dim", self.embed_dim)?;
        check::positive("enc_hidden", self.enc_hidden)?;
        check::between("enc_layers", self.enc_layers, 1, 64)?;
        check::positive("dec_hidden", self.dec_hidden)?;
        check::fraction("dropout", self.dropout as f64, false)?;
        check::fraction("teacher_forcing", self.teacher_forcing, true)?;
        check::fraction("teacher_forcing_final", self.teacher_forcing_final, true)?;
        check::fraction("label_smoothing", self.label_smoothing, false)
    }
}

/// What the encoder hands the decoder.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `h_j`: `(B, S, 2·He)`.
    pub outputs: Tensor,
    /// Precomputed attention keys: `W_k h_j` (Bahdanau), `W_a h_j` (Luong), `h_j` (dot).
    pub keys: Option<Tensor>,
    /// `(B, 1, S)`: 0 at real tokens, −1e9 at padding (added to the scores).
    pub mask_bias: Tensor,
}

impl Encoded {
    /// Rows `idx` of the encoding (one per decoder row in batched searches).
    pub fn select(&self, idx: &Tensor) -> Result<Self> {
        Ok(Self {
            outputs: self.outputs.index_select(idx, 0)?,
            keys: self
                .keys
                .as_ref()
                .map(|t| t.index_select(idx, 0))
                .transpose()?,
            mask_bias: self.mask_bias.index_select(idx, 0)?,
        })
    }
}

/// The decoder's recurrent state: `s (1, B, Hd)` and, for the LSTM, `C (1, B, Hd)`.
#[derive(Debug, Clone)]
pub struct DecoderState {
    /// `s`, the hidden state `(1, B, Hd)`.
    pub h: Tensor,
    /// `C`, the cell state `(1, B, Hd)` (LSTM only).
    pub c: Option<Tensor>,
}

impl DecoderState {
    /// Rows `idx` of the state (beam search reorders hypotheses).
    pub fn select(&self, idx: &Tensor) -> Result<Self> {
        Ok(Self {
            h: self.h.index_select(idx, 1)?,
            c: self
                .c
                .as_ref()
                .map(|c| c.index_select(idx, 1))
                .transpose()?,
        })
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Seq2Seq {
    src_embed: Embedding,
    encoder: AnyRecurrent,
    bridge_h: Linear,
    bridge_c: Option<Linear>,
    tgt_embed: Embedding,
    decoder: AnyRecurrent,
    /// Bahdanau: `W_q` (query), `W_k` (keys), `v`. Luong: `W_a` as `w_k`.
    w_q: Option<Linear>,
    w_k: Option<Linear>,
    v: Option<Linear>,
    combine: Option<Linear>,
    out: Linear,
    dropout: Dropout,
    cfg: Config,
}

impl Seq2Seq {
    /// Creates (or loads) the weights under `vb` (`src_embed`, `encoder`, `bridge_h`/`bridge_c`,
    /// `tgt_embed`, `decoder`, `attention.*`, `combine`, `out`). Fails with a config error if
    /// [`Config::validate`] does, if a vocabulary size is unset, or if dot attention's
    /// `dec_hidden ≠ 2 · enc_hidden`.
    pub fn new(cfg: Config, vb: VarBuilder) -> neka_lstm::Result<Self> {
        let bad = |msg: String| neka_common::Error::config("seq2seq config", msg);
        cfg.validate().map_err(bad)?;
        if cfg.src_vocab < 5 || cfg.tgt_vocab < 5 {
            return Err(bad(format!(
                "src_vocab {} / tgt_vocab {}: set them from the vocabularies",
                cfg.src_vocab, cfg.tgt_vocab
            )));
        }
        if cfg.attention == AttentionKind::Dot && cfg.dec_hidden != 2 * cfg.enc_hidden {
            return Err(bad(format!(
                "dot attention needs dec_hidden = 2 × enc_hidden, got {} and {}",
                cfg.dec_hidden, cfg.enc_hidden
            )));
        }
        let (e, he, hd) = (cfg.embed_dim, cfg.enc_hidden, cfg.dec_hidden);
        let src_embed = candle_nn::embedding(cfg.src_vocab, e, vb.pp("src_embed"))?;
        let enc_cfg = RecurrentConfig::new(e, he)
            .num_layers(cfg.enc_layers)
            .bidirectional(true)
            .dropout(cfg.dropout);
        let encoder = AnyRecurrent::new(cfg.cell, enc_cfg, vb.pp("encoder"))?;
        let bridge_h = linear(2 * he, hd, true, vb.pp("bridge_h"))?;
        let bridge_c = if cfg.cell == CellType::Lstm {
            Some(linear(2 * he, hd, true, vb.pp("bridge_c"))?)
        } else {
            None
        };
        let tgt_embed = candle_nn::embedding(cfg.tgt_vocab, e, vb.pp("tgt_embed"))?;
        let dec_in = e + if cfg.attention == AttentionKind::Bahdanau {
            2 * he
        } else {
            0
        };
        let decoder =
            AnyRecurrent::new(cfg.cell, RecurrentConfig::new(dec_in, hd), vb.pp("decoder"))?;
        let (w_q, w_k, v) = match cfg.attention {
            AttentionKind::Bahdanau => (
                Some(linear(hd, hd, false, vb.pp("attention.w_q"))?),
                Some(linear(2 * he, hd, true, vb.pp("attention.w_k"))?),
                Some(linear(hd, 1, false, vb.pp("attention.v"))?),
            ),
            AttentionKind::Luong => (
                None,
                Some(linear(2 * he, hd, false, vb.pp("attention.w_a"))?),
                None,
            ),
            AttentionKind::Dot | AttentionKind::None => (None, None, None),
        };
        // s̃ = tanh(W_c [c ; s]): size Hd, or E when W_o is the (tied) embedding matrix.
        let ctx_dim = if cfg.attention == AttentionKind::None {
            0
        } else {
            2 * he
        };
        let out_dim = if cfg.tie_embeddings { e } else { hd };
        let combine = if ctx_dim == 0 && !cfg.tie_embeddings {
            None
        } else {
            Some(linear(ctx_dim + hd, out_dim, true, vb.pp("combine"))?)
        };
        let out = if cfg.tie_embeddings {
            let bound = 1.0 / (out_dim as f64).sqrt();
            let bias = vb.pp("out").get_with_hints(
                cfg.tgt_vocab,
                "bias",
                candle_nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?;
            Linear::new(tgt_embed.embeddings().clone(), Some(bias))
        } else {
            linear(hd, cfg.tgt_vocab, true, vb.pp("out"))?
        };
        Ok(Self {
            src_embed,
            encoder,
            bridge_h,
            bridge_c,
            tgt_embed,
            decoder,
            w_q,
            w_k,
            v,
            combine,
            out,
            dropout: Dropout::new(cfg.dropout)?,
            cfg,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.out.weight().device().clone()
    }

    /// Runs the encoder; returns what the decoder attends to and its initial state.
    pub fn encode(&self, src: &SourceBatch, train: bool) -> Result<(Encoded, DecoderState)> {
        let x = self
            .dropout
            .forward_t(&self.src_embed.forward(&src.ids)?, train)?;
        let input = SeqInput {
            lengths: Some(&src.lengths),
            ..Default::default()
        };
        let enc = self.encoder.encode(&x, input, train)?;
        let outputs = enc.output; // (B, S, 2He), zero past each length
        let last = |t: &Tensor| -> Result<Tensor> {
            // (L·2, B, He) → last layer's [→ ; ←] (B, 2He)
            let n = t.dim(0)?;
            t.narrow(0, n - 2, 2)?.transpose(0, 1)?.flatten_from(1)
        };
        let h = self
            .bridge_h
            .forward(&last(&enc.h_n)?)?
            .tanh()?
            .unsqueeze(0)?;
        let c = match (&self.bridge_c, &enc.c_n) {
            (Some(bc), Some(c_n)) => Some(bc.forward(&last(c_n)?)?.tanh()?.unsqueeze(0)?),
            _ => None,
        };
        let keys = match self.cfg.attention {
            AttentionKind::None => None,
            AttentionKind::Dot => Some(outputs.clone()),
            _ => Some(linear_forward(
                self.w_k.as_ref().expect("keys layer"),
                &outputs,
                false,
            )?),
        };
        let mask_bias = ((&src.mask - 1.0)? * 1e9)?.unsqueeze(1)?;
        Ok((
            Encoded {
                outputs,
                keys,
                mask_bias,
            },
            DecoderState { h, c },
        ))
    }

    /// Masked softmax over the source and the context: `scores (B, T, S)` → `α (B, T, S)`,
    /// `c (B, T, 2He)`.
    fn attend(&self, scores: &Tensor, enc: &Encoded) -> Result<(Tensor, Tensor)> {
        // `candle_nn::ops::softmax` (exp / sum, with a backward pass), not the fused
        // `softmax_last_dim`: that op has no backward, so the scores — W_a, W_q, W_k, v and the
        // decoder state through them — would get no gradient and the attention never learns
        // (huggingface/candle#3569; tested in `attention_parameters_get_the_finite_difference_gradient`).
        let alpha = candle_nn::ops::softmax(&scores.broadcast_add(&enc.mask_bias)?, D::Minus1)?;
        let ctx = alpha.matmul(&enc.outputs)?;
        Ok((alpha, ctx))
    }

    /// `s̃ = tanh(W_c [c ; s])` (or `s` without attention) → dropout → logits.
    fn output(&self, s: &Tensor, ctx: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let h = match (&self.combine, ctx) {
            (Some(w_c), Some(ctx)) => {
                linear_forward(w_c, &Tensor::cat(&[ctx, s], D::Minus1)?, false)?.tanh()?
            }
            (Some(w_c), None) => linear_forward(w_c, s, false)?.tanh()?,
            (None, _) => s.clone(),
        };
        linear_forward(&self.out, &self.dropout.forward_t(&h, train)?, false)
    }

    /// One decoder step: previous tokens `y (B)` → logits `(B, V)`, attention `(B, S)` (if
    /// any), next state.
    pub fn decode_step(
        &self,
        y: &Tensor,
        state: &DecoderState,
        enc: &Encoded,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>, DecoderState)> {
        let emb = self
            .dropout
            .forward_t(&self.tgt_embed.forward(y)?, train)?
            .unsqueeze(1)?; // (B, 1, E)
        let mut alpha = None;
        let mut ctx = None;
        let x = if self.cfg.attention == AttentionKind::Bahdanau {
            // score_j = vᵀ tanh(W_q s_{t−1} + W_k h_j)
            let q = self
                .w_q
                .as_ref()
                .expect("query layer")
                .forward(&state.h.transpose(0, 1)?)?; // (B, 1, Hd)
            let keys = enc.keys.as_ref().expect("keys");
            let e = keys.broadcast_add(&q)?.tanh()?; // (B, S, Hd)
            let scores = self.v.as_ref().expect("v").forward(&e)?.transpose(1, 2)?; // (B, 1, S)
            let (a, c) = self.attend(&scores, enc)?;
            let x = Tensor::cat(&[&emb, &c], D::Minus1)?;
            alpha = Some(a);
            ctx = Some(c);
            x
        } else {
            emb
        };
        let input = SeqInput {
            h0: Some(&state.h),
            c0: state.c.as_ref(),
            ..Default::default()
        };
        let r = self.decoder.encode(&x, input, train)?;
        let s = r.output; // (B, 1, Hd)
        if matches!(
            self.cfg.attention,
            AttentionKind::Luong | AttentionKind::Dot
        ) {
            let keys = enc.keys.as_ref().expect("keys");
            let scores = s.matmul(&keys.transpose(1, 2)?)?; // (B, 1, S)
            let (a, c) = self.attend(&scores, enc)?;
            alpha = Some(a);
            ctx = Some(c);
        }
        let logits = self.output(&s, ctx.as_ref(), train)?.squeeze(1)?;
        let next = DecoderState { h: r.h_n, c: r.c_n };
        Ok((logits, alpha.map(|a| a.squeeze(1)).transpose()?, next))
    }

    /// Teacher-forcing probability after `step` optimizer steps (the trainer's
    /// [`StepContext::step`], so a resumed run continues the schedule where it stopped).
    pub fn teacher_forcing_ratio(&self, step: usize) -> f64 {
        let c = &self.cfg;
        if c.teacher_forcing_steps == 0 {
            return c.teacher_forcing;
        }
        let f = (step as f64 / c.teacher_forcing_steps as f64).min(1.0);
        c.teacher_forcing + f * (c.teacher_forcing_final - c.teacher_forcing)
    }

    /// Logits `(B, T, V)` for a batch, reading `tgt_in` (teacher forcing with probability
    /// `ratio`, else the model's own previous prediction).
    pub fn forward_batch(&self, batch: &Seq2SeqBatch, ratio: f64, train: bool) -> Result<Tensor> {
        let parallel = ratio >= 1.0 && self.cfg.attention != AttentionKind::Bahdanau;
        if parallel {
            self.forward_parallel(batch, train)
        } else {
            self.forward_stepwise(batch, ratio, train)
        }
    }

    /// Full teacher forcing with the whole target in one call of the recurrent network, then
    /// attention for all steps at once (not for Bahdanau attention, whose context is an input).
    pub fn forward_parallel(&self, batch: &Seq2SeqBatch, train: bool) -> Result<Tensor> {
        if self.cfg.attention == AttentionKind::Bahdanau {
            candle_core::bail!("Bahdanau attention feeds c_t into the decoder: decode step by step")
        }
        let (enc, state) = self.encode(&batch.src, train)?;
        {
            // The whole target in one call of the recurrent network, then attention for all t.
            let emb = self
                .dropout
                .forward_t(&self.tgt_embed.forward(&batch.tgt_in)?, train)?;
            let input = SeqInput {
                lengths: Some(&batch.tgt_lengths),
                h0: Some(&state.h),
                c0: state.c.as_ref(),
            };
            let s = self.decoder.encode(&emb, input, train)?.output; // (B, T, Hd)
            let ctx = match &enc.keys {
                Some(keys) => {
                    let scores = s.matmul(&keys.transpose(1, 2)?)?; // (B, T, S)
                    Some(self.attend(&scores, &enc)?.1)
                }
                None => None,
            };
            self.output(&s, ctx.as_ref(), train)
        }
    }

    /// Step by step with [`Seq2Seq::decode_step`]: the gold previous token with probability `ratio`
    /// (teacher forcing), else the model's own prediction (scheduled sampling).
    pub fn forward_stepwise(
        &self,
        batch: &Seq2SeqBatch,
        ratio: f64,
        train: bool,
    ) -> Result<Tensor> {
        let (enc, state) = self.encode(&batch.src, train)?;
        let (b, t) = batch.tgt_in.dims2()?;
        let mut state = state;
        let mut y = batch.tgt_in.narrow(1, 0, 1)?.squeeze(1)?;
        let mut all = Vec::with_capacity(t);
        for step in 0..t {
            let (logits, _, next) = self.decode_step(&y, &state, &enc, train)?;
            state = next;
            if step + 1 < t {
                let gold = batch.tgt_in.narrow(1, step + 1, 1)?.squeeze(1)?;
                y = if ratio >= 1.0 {
                    gold
                } else {
                    // The coin flips are drawn on the host (the seeded stream) and sent as a
                    // mask; the choice itself stays on the device, so no prediction is read
                    // back per step.
                    let keep: Vec<u8> = neka_common::rng::with_rng(|r| {
                        use rand::Rng;
                        (0..b)
                            .map(|_| u8::from(r.random::<f64>() < ratio))
                            .collect()
                    });
                    let pred = logits.argmax(D::Minus1)?.to_dtype(gold.dtype())?;
                    Tensor::from_vec(keep, b, gold.device())?.where_cond(&gold, &pred)?
                };
            }
            all.push(logits);
        }
        Tensor::stack(&all, 1)
    }

    /// A `(B)` tensor of `<bos>`.
    pub fn bos(&self, b: usize, device: &Device) -> Result<Tensor> {
        Tensor::full(BOS_ID, b, device)
    }
}

impl TrainModel for Seq2Seq {
    type Batch = Seq2SeqBatch;
    fn count_unit(&self) -> &'static str {
        "tokens"
    }

    /// Validation perplexity `exp(val_loss)`, lower is better: it scores every target token
    /// under teacher forcing, and unlike token accuracy it rewards calibrated probabilities,
    /// which beam search uses. (`--monitor val_bleu` picks by greedy BLEU instead.)
    fn monitor(&self) -> Monitor {
        Monitor::min("val_perplexity")
    }

    /// Masked (label-smoothed in training) cross-entropy over the target tokens; `correct` =
    /// tokens whose argmax is the gold token.
    fn step(&self, batch: &Seq2SeqBatch, ctx: &StepContext) -> Result<StepOutput> {
        let train = ctx.train;
        let ratio = if train {
            self.teacher_forcing_ratio(ctx.step)
        } else {
            1.0
        };
        let logits = self.forward_batch(batch, ratio, train)?;
        let (b, t, v) = logits.dims3()?;
        let logits = logits.reshape((b * t, v))?;
        let tgt = batch.tgt_out.flatten_all()?;
        let mask = batch.tgt_mask.flatten_all()?.to_dtype(DType::F32)?;
        let eps = if train { self.cfg.label_smoothing } else { 0.0 };
        Ok(StepOutput {
            loss: masked_cross_entropy(&logits, &tgt, &mask, eps)?,
            correct: masked_correct(&logits, &tgt, &mask)?,
            count: batch.tgt_tokens(),
        })
    }
}
