//! The Elman RNN of the lecture:
//!
//! ```text
//! h_t = ψ(W h_{t-1} + U x_t + b)        ψ = tanh (default) or ReLU
//! ŷ_t = φ(V h_t)                        φ = softmax, in a head (see [`crate::heads`])
//! ```
//!
//! | lecture | tensor (PyTorch name) | shape |
//! |---|---|---|
//! | `U` | `weight_ih_l{k}` | `(H, F)` (`(H, D·H)` for layers `k > 0`) |
//! | `W` | `weight_hh_l{k}` | `(H, H)` |
//! | `b` | `bias_ih_l{k}`, `bias_hh_l{k}` | `(H)` each (PyTorch keeps two) |
//! | `V` | the head's `fc.weight` | `(classes, D·H)` |
//!
//! Weights load unchanged into `torch.nn.RNN(input_size, hidden_size, num_layers,
//! nonlinearity, bias, batch_first=True, bidirectional=…)` and back.
//!
//! **BPTT.** Training unrolls the network over the `T` steps and backpropagates through the
//! unrolled graph. Since `∂h_t/∂h_{t-1} = diag(ψ'(·)) W`, the gradient reaching step `t` from
//! step `T` is a product of `T − t` such matrices: with `‖W‖ < 1` and `|tanh'| ≤ 1` it
//! vanishes geometrically, with large `W` (or ReLU) it can explode — which is what the LSTM's
//! additive cell state and gradient clipping address (see the `vanishing_gradients` example).

use crate::cell::{Elman, Nonlinearity};
use crate::recurrent::{Recurrent, RecurrentConfig, RecurrentOutput, SeqInput, SequenceEncoder};
use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// `torch.nn.RNN`'s arguments.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Layers, sizes, directions, bias and dropout (flattened into this config in JSON).
    #[serde(flatten)]
    pub shape: RecurrentConfig,
    /// ψ: `tanh` (default) or `relu`.
    pub nonlinearity: Nonlinearity,
}

impl Config {
    /// A one-layer, unidirectional tanh RNN with `F = input_size`, `H = hidden_size`, bias.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        Self {
            shape: RecurrentConfig::new(input_size, hidden_size),
            nonlinearity: Nonlinearity::Tanh,
        }
    }
}

/// A multi-layer, optionally bidirectional Elman RNN (`torch.nn.RNN`, batch-first).
#[derive(Debug, Clone)]
pub struct Rnn {
    inner: Recurrent<Elman>,
    cfg: Config,
}

impl Rnn {
    /// Creates (or loads) the weights under `vb` with PyTorch's names
    /// (`weight_ih_l{k}[_reverse]`, …) and init U(−1/√H, 1/√H).
    pub fn new(cfg: Config, vb: VarBuilder) -> crate::Result<Self> {
        let cell = Elman {
            nonlinearity: cfg.nonlinearity,
        };
        Ok(Self {
            inner: Recurrent::new(cell, cfg.shape, vb)?,
            cfg,
        })
    }

    /// `x (B, T, F)` → `output (B, T, D·H)`, `h_n (L·D, B, H)`. See [`SeqInput`] for lengths
    /// and the initial state `h0`.
    pub fn forward_seq(&self, x: &Tensor, input: SeqInput, train: bool) -> Result<RecurrentOutput> {
        self.inner.forward_seq(x, input, train)
    }
}

impl SequenceEncoder for Rnn {
    fn encode(&self, x: &Tensor, input: SeqInput, train: bool) -> Result<RecurrentOutput> {
        self.inner.forward_seq(x, input, train)
    }
    fn config(&self) -> &RecurrentConfig {
        &self.cfg.shape
    }
}

impl ModuleT for Rnn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.inner.forward_t(x, train)
    }
}
