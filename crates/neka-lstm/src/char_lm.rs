//! A character-level language model — the lecture's one-to-many generation:
//!
//! ```text
//! training (many-to-many):  x_t = embed(c_t) → RNN/LSTM/GRU → ŷ_t = softmax(V h_t) ≈ P(c_{t+1} | c_≤t)
//! generation (one-to-many): feed a prompt, then repeatedly sample c ~ softmax(V h / τ) and feed it back
//! ```
//!
//! Trained with truncated BPTT ([`Tbptt`]): the text is read in chunks of `T` characters and
//! the state is carried from chunk to chunk but *detached*, so gradients flow back at most
//! `T` steps. Tensor names: `embed.weight`, `rnn.*` (PyTorch's names), `fc.*` (`V`).

use crate::{AnyRecurrent, CellType, ManyToMany, RecurrentConfig, SeqInput};
use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Embedding, Module, VarBuilder};
use neka_common::data::StreamBatch;
use neka_common::train::{StepContext, StepOutput, TrainModel};
use neka_common::vocab::Vocab;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// The character model's shape. Defaults: LSTM, 100 characters, 64-dim embeddings, one layer
/// of 256 units, no dropout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Cell of the recurrent network (`rnn`, `rnn-relu`, `lstm` or `gru`).
    pub cell: CellType,
    /// Characters in the vocabulary: rows of `embed.weight` and outputs of `fc`.
    pub vocab_size: usize,
    /// Size of a character embedding, the recurrent network's input features `F`.
    pub embed_dim: usize,
    /// `H`, hidden units of each recurrent layer (unidirectional).
    pub hidden_size: usize,
    /// `L`, stacked recurrent layers.
    pub num_layers: usize,
    /// Dropout between recurrent layers.
    pub dropout: f32,
}

/// How the character model trains unless told otherwise (`char_rnn`'s defaults): 1 epoch
/// over 32 parallel streams, AdamW at 2e-3, gradient norm clipped to 1.
pub fn default_train_config() -> neka_common::train::TrainConfig {
    let adamw = neka_common::optim::OptimizerConfig::adamw(2e-3);
    neka_common::train::TrainConfig::new(1, 32, adamw)
        .eval_batch(32)
        .clip(1.0)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cell: CellType::Lstm,
            vocab_size: 100,
            embed_dim: 64,
            hidden_size: 256,
            num_layers: 1,
            dropout: 0.0,
        }
    }
}

/// The recurrent state carried between chunks or generation steps: `h` (and `C`), `(L, B, H)`.
#[derive(Debug, Clone)]
pub struct State {
    /// Hidden state `h`, `(L, B, H)`.
    pub h: Tensor,
    /// Cell state `C`, `(L, B, H)` (LSTM only).
    pub c: Option<Tensor>,
}

impl State {
    /// The same values with the autograd history cut (truncated BPTT).
    pub fn detach(&self) -> State {
        State {
            h: self.h.detach(),
            c: self.c.as_ref().map(Tensor::detach),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct CharLm {
    embed: Embedding,
    net: ManyToMany<AnyRecurrent>,
    cfg: Config,
}

/// The vocabulary file of a character model's directory.
pub const VOCAB_FILE: &str = "vocab.json";

impl CharLm {
    /// Loads a model directory written by training (`model.safetensors`, `config.json`,
    /// [`VOCAB_FILE`]), strictly: the model and its character vocabulary. A model that loads
    /// but cannot answer (its next-character scores for the first characters of its
    /// vocabulary are not finite: finite but extreme weights) is refused with an error naming
    /// `dir` ([`neka_common::finite::probe`]).
    pub fn load(
        dir: &std::path::Path,
        device: &candle_core::Device,
    ) -> crate::Result<(Self, Vocab)> {
        let p = neka_common::checkpoint::Pretrained::load(
            dir,
            device,
            None,
            "model.safetensors, config.json, vocab.json",
            |info, source, vb| {
                let cfg: Config = info.model_config(source)?;
                let vocab = Vocab::load_companion(dir, info, VOCAB_FILE)?;
                if vocab.len() != cfg.vocab_size {
                    return Err(neka_common::Error::checkpoint(
                        source,
                        format!(
                            "config vocab_size {} differs from the {} characters of {VOCAB_FILE}",
                            cfg.vocab_size,
                            vocab.len()
                        ),
                    ));
                }
                Ok((Self::new(cfg, vb)?, vocab))
            },
        )?;
        let (model, vocab) = p.model;
        let probe: Vec<u32> = (0..vocab.len().min(8) as u32).collect();
        if !probe.is_empty() {
            let ids = Tensor::from_vec(probe.clone(), (1, probe.len()), device)?;
            let (logits, _) = model.forward_seq(&ids, None, false)?;
            neka_common::finite::probe(
                dir,
                &p.varmap,
                &logits,
                &format!("the next-character scores after the probe ids {probe:?}"),
            )?;
        }
        Ok((model, vocab))
    }

    /// Creates (or loads) the weights under `vb`: `embed.weight (vocab, E)`, `rnn.*` (PyTorch's
    /// names), `fc.weight (vocab, H)`, `fc.bias`.
    pub fn new(cfg: Config, vb: VarBuilder) -> crate::Result<Self> {
        let embed = candle_nn::embedding(cfg.vocab_size, cfg.embed_dim, vb.pp("embed"))?;
        let rcfg = RecurrentConfig {
            input_size: cfg.embed_dim,
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_layers,
            bias: true,
            bidirectional: false,
            dropout: cfg.dropout,
        };
        let rnn = AnyRecurrent::new(cfg.cell, rcfg, vb.pp("rnn"))?;
        Ok(Self {
            embed,
            net: ManyToMany::new(rnn, cfg.vocab_size, vb)?,
            cfg,
        })
    }

    /// The shape the model was built with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// `ids (B, T)` u32 → logits `(B, T, vocab)` and the state after the last step.
    pub fn forward_seq(
        &self,
        ids: &Tensor,
        state: Option<&State>,
        train: bool,
    ) -> Result<(Tensor, State)> {
        let x = self.embed.forward(ids)?;
        let input = SeqInput {
            lengths: None,
            h0: state.map(|s| &s.h),
            c0: state.and_then(|s| s.c.as_ref()),
        };
        let (logits, out) = self.net.forward_seq(&x, input, train)?;
        Ok((
            logits,
            State {
                h: out.h_n,
                c: out.c_n,
            },
        ))
    }

    /// Continues `prompt` by `len` characters sampled from `softmax(logits / temperature)`
    /// (neka's seeded RNG; `temperature → 0` approaches greedy decoding). The prompt is
    /// NFC-normalised first; characters of it missing from the vocabulary are an error.
    pub fn sample(
        &self,
        vocab: &Vocab,
        prompt: &str,
        len: usize,
        temperature: f64,
    ) -> Result<String> {
        let dev = self.embed.embeddings().device().clone();
        let mut ids = Vec::new();
        // NFC, as the training text was read ([`neka_common::data::CharCorpus::read`])
        let normalised = neka_common::data::text::nfc(prompt);
        let prompt: &str = &normalised;
        for ch in prompt.chars() {
            match vocab.get(&ch.to_string()) {
                Some(i) => ids.push(i),
                None => candle_core::bail!(
                    "the prompt's character {ch:?} is not in the model's vocabulary"
                ),
            }
        }
        if ids.is_empty() {
            candle_core::bail!("the prompt is empty: give at least one character")
        }
        let temperature = temperature.max(1e-4);
        let mut out = prompt.to_string();
        let mut state: Option<State> = None;
        let mut input = Tensor::from_vec(ids.clone(), (1, ids.len()), &dev)?;
        for _ in 0..len {
            let (logits, st) = self.forward_seq(&input, state.as_ref(), false)?;
            state = Some(st);
            let last = logits.get(0)?.get(logits.dim(1)? - 1)?; // (vocab)
            let probs: Vec<f32> =
                candle_nn::ops::softmax_last_dim(&(last.to_dtype(DType::F64)? / temperature)?)?
                    .to_dtype(DType::F32)?
                    .to_vec1()?;
            if let Some(p) = probs.iter().find(|p| !p.is_finite()) {
                candle_core::bail!(
                    "the next-character probabilities are not finite ({p}): the model's \
                     weights are extreme or corrupt; retrain it"
                )
            }
            let next = neka_common::rng::with_rng(|r| {
                use rand::Rng;
                let u: f32 = r.random();
                let mut acc = 0.0;
                probs
                    .iter()
                    .position(|p| {
                        acc += p;
                        u < acc
                    })
                    .unwrap_or(probs.len() - 1) as u32
            });
            out.push_str(vocab.token(next).unwrap_or("?"));
            input = Tensor::from_vec(vec![next], (1, 1), &dev)?;
        }
        Ok(out)
    }
}

/// Trains a [`CharLm`] with truncated BPTT on a [`neka_common::data::TokenStream`]: the state
/// from chunk `k` (detached) starts chunk `k + 1`; it resets at chunk 0. Training and
/// evaluation carry separate states. A checkpoint saved in the middle of an epoch keeps the
/// training state ([`TrainModel::carried_state`]), so `--resume` continues the chunks with it.
pub struct Tbptt<'a> {
    model: &'a CharLm,
    state: RefCell<[Option<State>; 2]>,
}

impl<'a> Tbptt<'a> {
    /// Truncated BPTT over `model`, starting from a zero state for training and evaluation.
    pub fn new(model: &'a CharLm) -> Self {
        Self {
            model,
            state: RefCell::new([None, None]),
        }
    }
}

impl TrainModel for Tbptt<'_> {
    type Batch = StreamBatch;
    fn count_unit(&self) -> &'static str {
        "tokens"
    }

    /// The training state carried to the next chunk: `h` (and `c` for an LSTM), `(L, B, H)`.
    fn carried_state(&self) -> Vec<(String, Tensor)> {
        let st = self.state.borrow();
        let Some(s) = &st[1] else {
            return Vec::new();
        };
        let mut out = vec![("h".to_string(), s.h.clone())];
        if let Some(c) = &s.c {
            out.push(("c".to_string(), c.clone()));
        }
        out
    }

    fn restore_carried_state(&self, state: Vec<(String, Tensor)>) -> Result<()> {
        let mut h = None;
        let mut c = None;
        for (name, t) in state {
            match name.as_str() {
                "h" => h = Some(t),
                "c" => c = Some(t),
                other => candle_core::bail!("truncated BPTT: unknown carried state `{other}`"),
            }
        }
        let Some(h) = h else {
            candle_core::bail!("truncated BPTT: the carried state has no `h`")
        };
        self.state.borrow_mut()[1] = Some(State { h, c });
        Ok(())
    }

    /// Mean cross-entropy of the next character over all `B·T` positions; `correct` counts
    /// argmax hits.
    fn step(&self, batch: &StreamBatch, ctx: &StepContext) -> Result<StepOutput> {
        let train = ctx.train;
        let slot = usize::from(train);
        let prev = if batch.chunk == 0 {
            None
        } else {
            self.state.borrow()[slot].clone()
        };
        let (logits, st) = self.model.forward_seq(&batch.x, prev.as_ref(), train)?;
        self.state.borrow_mut()[slot] = Some(st.detach());
        let v = logits.dim(D::Minus1)?;
        let flat = logits.reshape(((), v))?;
        let y = batch.y.flatten_all()?;
        let loss = neka_common::loss::cross_entropy(&flat, &y)?;
        Ok(StepOutput {
            correct: neka_common::loss::correct(&flat, &y)?,
            loss,
            count: y.dim(0)?,
        })
    }
}
