//! Many-to-one on images: an image read row by row as a sequence (MNIST: `T = 28` steps of
//! `F = 28` pixels), classified from the recurrent network's final state.
//!
//! ```text
//! image (B, 1, R, C) → x (B, T = R, F = C) → RNN / LSTM / GRU → [h_T^→ ; h_1^←] → V → logits (B, classes)
//! ```
//!
//! Tensor names: `rnn.weight_ih_l0`, … (PyTorch's `nn.LSTM` names under `rnn.`) and `fc.weight`,
//! `fc.bias` (the lecture's `V`).

use crate::{AnyRecurrent, CellType, ManyToOne, RecurrentConfig, SeqInput};
use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// The row classifier's shape. Defaults: one unidirectional LSTM layer of 128 units over
/// 28 × 28 images, 10 classes, no dropout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Cell of the recurrent network.
    pub cell: CellType,
    /// Image rows = time steps.
    pub rows: usize,
    /// Image columns = features per step.
    pub cols: usize,
    /// `H`, hidden units per direction.
    pub hidden_size: usize,
    /// `L`, stacked recurrent layers.
    pub num_layers: usize,
    /// Also read the rows bottom to top (`D = 2`); the classifier sees `[h_T^→ ; h_1^←]`.
    pub bidirectional: bool,
    /// Dropout between recurrent layers.
    pub dropout: f32,
    /// Output classes (logits per image).
    pub num_classes: usize,
}

/// How the row classifier trains unless told otherwise (`seq_mnist`'s defaults): 3 epochs of
/// 64 images, AdamW at 1e-3, gradient norm clipped to 1 (recurrent nets need it).
pub fn default_train_config() -> neka_common::train::TrainConfig {
    let adamw = neka_common::optim::OptimizerConfig::adamw(1e-3);
    neka_common::train::TrainConfig::new(3, 64, adamw)
        .eval_batch(1000)
        .clip(1.0)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cell: CellType::Lstm,
            rows: 28,
            cols: 28,
            hidden_size: 128,
            num_layers: 1,
            bidirectional: false,
            dropout: 0.0,
            num_classes: 10,
        }
    }
}

impl Config {
    /// The recurrent network's arguments: `F = cols`, `H`, `L`, directions, dropout, with bias.
    pub fn recurrent(&self) -> RecurrentConfig {
        RecurrentConfig {
            input_size: self.cols,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            bias: true,
            bidirectional: self.bidirectional,
            dropout: self.dropout,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RowClassifier {
    net: ManyToOne<AnyRecurrent>,
    cfg: Config,
}

impl RowClassifier {
    /// Creates (or loads) the weights under `vb`: `rnn.*` (PyTorch's names) and
    /// `fc.weight (classes, D·H)`, `fc.bias`.
    pub fn new(cfg: Config, vb: VarBuilder) -> crate::Result<Self> {
        let rnn = AnyRecurrent::new(cfg.cell, cfg.recurrent(), vb.pp("rnn"))?;
        Ok(Self {
            net: ManyToOne::new(rnn, cfg.num_classes, vb)?,
            cfg,
        })
    }

    /// The shape the model was built with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

impl ModuleT for RowClassifier {
    /// `(B, 1, R, C)` or `(B, R, C)` images → `(B, classes)` logits.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let b = xs.dim(0)?;
        let x = xs.reshape((b, self.cfg.rows, self.cfg.cols))?;
        self.net.forward_seq(&x, SeqInput::default(), train)
    }
}
