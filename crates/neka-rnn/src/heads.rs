//! Output heads: the lecture's `ŷ = φ(V h)` on top of any [`SequenceEncoder`], for the
//! sequence shapes of the lecture.
//!
//! - **many-to-one** ([`ManyToOne`]): read the whole sequence, classify once from the final
//!   state — `ŷ = softmax(V [h_T^→ ; h_1^←])` (e.g. MNIST read row by row, sentiment).
//! - **many-to-many** ([`ManyToMany`]): one output per step — `ŷ_t = softmax(V h_t)`
//!   (POS tagging, char-level language models).
//! - **one-to-many** is a many-to-many model run one step at a time, feeding each output back
//!   as the next input (generation; see the `char_rnn` example).
//!
//! Both heads return logits; φ = softmax is folded into the cross-entropy loss.

use crate::recurrent::{SeqInput, SequenceEncoder};
use candle_core::{Result, Tensor};
use candle_nn::{Linear, VarBuilder};

/// `ŷ = V · [final hidden state(s) of the last layer]` → `(B, classes)` logits.
#[derive(Debug, Clone)]
pub struct ManyToOne<E> {
    /// The recurrent network whose last layer's final hidden states are classified.
    pub encoder: E,
    /// `V`, stored as `fc.weight (classes, D·H)`, `fc.bias`.
    pub fc: Linear,
}

impl<E: SequenceEncoder> ManyToOne<E> {
    /// `vb` is the head's own prefix (the layer lands at `vb.pp("fc")`).
    pub fn new(encoder: E, classes: usize, vb: VarBuilder) -> Result<Self> {
        let d = encoder.config().output_size();
        let fc = neka_common::nn::linear(d, classes, true, vb.pp("fc"))?;
        Ok(Self { encoder, fc })
    }

    /// `x (B, T, F)` → logits `(B, classes)`.
    pub fn forward_seq(&self, x: &Tensor, input: SeqInput, train: bool) -> Result<Tensor> {
        let out = self.encoder.encode(x, input, train)?;
        let summary = out.last_hidden(self.encoder.config().directions())?;
        neka_common::nn::linear_forward(&self.fc, &summary, false)
    }
}

impl<E: SequenceEncoder> candle_core::ModuleT for ManyToOne<E> {
    /// `x (B, T, F)` (full-length sequences, zero initial state) → logits `(B, classes)`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_seq(x, SeqInput::default(), train)
    }
}

/// `ŷ_t = V h_t` for every step → `(B, T, classes)` logits.
#[derive(Debug, Clone)]
pub struct ManyToMany<E> {
    /// The recurrent network whose per-step outputs `(B, T, D·H)` are classified.
    pub encoder: E,
    /// `V`, stored as `fc.weight (classes, D·H)`, `fc.bias`.
    pub fc: Linear,
}

impl<E: SequenceEncoder> ManyToMany<E> {
    /// A fresh `fc (classes, D·H)` on top of `encoder`; `vb` is the head's own prefix (the layer
    /// lands at `vb.pp("fc")`).
    pub fn new(encoder: E, classes: usize, vb: VarBuilder) -> Result<Self> {
        let d = encoder.config().output_size();
        let fc = neka_common::nn::linear(d, classes, true, vb.pp("fc"))?;
        Ok(Self { encoder, fc })
    }

    /// `x (B, T, F)` → logits `(B, T, classes)` and the final states (for carrying the state
    /// across chunks in truncated BPTT, or across steps when generating).
    pub fn forward_seq(
        &self,
        x: &Tensor,
        input: SeqInput,
        train: bool,
    ) -> Result<(Tensor, crate::RecurrentOutput)> {
        let out = self.encoder.encode(x, input, train)?;
        let logits = neka_common::nn::linear_forward(&self.fc, &out.output, false)?;
        Ok((logits, out))
    }
}
