#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod char_lm;
pub mod gates;
pub mod gru;
pub mod loaded_tagger;
pub mod lstm;
pub mod row_classifier;
pub mod tagger;

pub use gru::GruCell;
pub use loaded_tagger::LoadedTagger;
pub use lstm::LstmCell;
pub use neka_rnn::{Error, Result};
pub use neka_rnn::{
    ManyToMany, ManyToOne, Nonlinearity, Recurrent, RecurrentConfig, RecurrentOutput, Rnn,
    RnnConfig, SeqInput, SequenceEncoder,
};
pub use row_classifier::RowClassifier;
pub use tagger::Tagger;

use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// `torch.nn.LSTM`'s arguments.
pub type LstmConfig = RecurrentConfig;
/// `torch.nn.GRU`'s arguments.
pub type GruConfig = RecurrentConfig;

macro_rules! network {
    ($(#[$doc:meta])* $name:ident, $cell:expr, $cell_ty:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(Recurrent<$cell_ty>);

        impl $name {
            /// Creates (or loads) the weights under `vb` with PyTorch's names and init.
            pub fn new(cfg: RecurrentConfig, vb: VarBuilder) -> Result<Self> {
                Ok(Self(Recurrent::new($cell, cfg, vb)?))
            }
        }

        /// The layers' runner: `forward_seq` (`x (B, T, F)` → output `(B, T, D·H)` and the
        /// final states; see [`SeqInput`] for lengths and initial states), `config`, `cell`.
        impl std::ops::Deref for $name {
            type Target = Recurrent<$cell_ty>;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        impl SequenceEncoder for $name {
            fn encode(
                &self,
                x: &Tensor,
                input: SeqInput,
                train: bool,
            ) -> candle_core::Result<RecurrentOutput> {
                self.0.forward_seq(x, input, train)
            }
            fn config(&self) -> &RecurrentConfig {
                self.0.config()
            }
        }

        impl ModuleT for $name {
            fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
                self.0.forward_t(x, train)
            }
        }
    };
}

network!(
    /// A multi-layer, optionally bidirectional LSTM (`torch.nn.LSTM`, batch-first). The
    /// equations and tensor layout are in [`lstm`].
    Lstm,
    LstmCell,
    LstmCell
);
network!(
    /// A multi-layer, optionally bidirectional GRU (`torch.nn.GRU`, batch-first). The
    /// equations and tensor layout are in [`gru`].
    Gru,
    GruCell,
    GruCell
);

/// The recurrent cells of the zoo, by name: `rnn` (Elman, tanh), `rnn-relu`, `lstm`, `gru`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellType {
    /// The Elman RNN with ψ = tanh (`rnn`; also parsed from `rnn-tanh`, `elman`).
    Rnn,
    /// The Elman RNN with ψ = ReLU (`rnn-relu`).
    RnnRelu,
    /// The LSTM (`lstm`, the default).
    #[default]
    Lstm,
    /// The GRU (`gru`).
    Gru,
}

impl std::str::FromStr for CellType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "rnn" | "rnn-tanh" | "elman" => Ok(Self::Rnn),
            "rnn-relu" => Ok(Self::RnnRelu),
            "lstm" => Ok(Self::Lstm),
            "gru" => Ok(Self::Gru),
            other => Err(format!(
                "unknown cell `{other}` (rnn, rnn-relu, lstm or gru)"
            )),
        }
    }
}

impl std::fmt::Display for CellType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rnn => "rnn",
            Self::RnnRelu => "rnn-relu",
            Self::Lstm => "lstm",
            Self::Gru => "gru",
        })
    }
}

/// A recurrent network whose cell is picked at run time (`--cell rnn|lstm|gru`).
#[derive(Debug, Clone)]
pub enum AnyRecurrent {
    /// An Elman RNN (cell `rnn` or `rnn-relu`).
    Rnn(Rnn),
    /// An LSTM.
    Lstm(Lstm),
    /// A GRU.
    Gru(Gru),
}

impl AnyRecurrent {
    /// Creates (or loads) the network of cell `cell` under `vb`, with PyTorch's names and init;
    /// `rnn-relu` is the Elman RNN with ψ = ReLU.
    pub fn new(cell: CellType, cfg: RecurrentConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match cell {
            CellType::Rnn | CellType::RnnRelu => {
                let nonlinearity = if cell == CellType::Rnn {
                    Nonlinearity::Tanh
                } else {
                    Nonlinearity::Relu
                };
                Self::Rnn(Rnn::new(
                    RnnConfig {
                        shape: cfg,
                        nonlinearity,
                    },
                    vb,
                )?)
            }
            CellType::Lstm => Self::Lstm(Lstm::new(cfg, vb)?),
            CellType::Gru => Self::Gru(Gru::new(cfg, vb)?),
        })
    }
}

impl AnyRecurrent {
    /// The network inside, whichever its cell.
    pub fn encoder(&self) -> &dyn SequenceEncoder {
        match self {
            Self::Rnn(m) => m,
            Self::Lstm(m) => m,
            Self::Gru(m) => m,
        }
    }
}

impl SequenceEncoder for AnyRecurrent {
    fn encode(&self, x: &Tensor, s: SeqInput, train: bool) -> candle_core::Result<RecurrentOutput> {
        self.encoder().encode(x, s, train)
    }
    fn config(&self) -> &RecurrentConfig {
        self.encoder().config()
    }
}
