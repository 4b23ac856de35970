//! # neka-rnn
//!
//! The Elman recurrent network of the lecture, `h_t = tanh(W h_{t-1} + U x_t + b)`,
//! `ŷ_t = softmax(V h_t)`, on candle — and the sequence runner every recurrent cell of neka
//! shares (`neka-lstm` plugs its LSTM and GRU cells into it):
//!
//! - [`Rnn`] (`torch.nn.RNN`, batch-first): tanh or ReLU, `num_layers`, `bidirectional`,
//!   dropout between layers, `bias: false`, PyTorch tensor names and init, so weights move
//!   between PyTorch and neka unchanged;
//! - variable-length batches with PyTorch's packed-sequence semantics ([`SeqInput::lengths`]),
//!   initial states, final states `h_n (L·D, B, H)`;
//! - the input projection `x_t U^T` of all steps as one matmul, and on CPU a fused kernel that
//!   runs the time loop and BPTT as one candle op ([`kernel`]);
//! - heads for many-to-one and many-to-many models ([`heads`]).
//!
//! Using it from another candle project:
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use neka_rnn::{Rnn, RnnConfig, SeqInput};
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let cfg = RnnConfig::new(8, 16); // F = 8 inputs, H = 16 hidden units
//! let rnn = Rnn::new(cfg, vb.pp("rnn"))?;
//! let x = Tensor::randn(0f32, 1., (4, 10, 8), &Device::Cpu)?; // (B, T, F)
//! let lengths = [10, 7, 3, 10];
//! let out = rnn.forward_seq(&x, SeqInput { lengths: Some(&lengths), ..Default::default() }, false)?;
//! assert_eq!(out.output.dims(), &[4, 10, 16]); // (B, T, H), zero past each length
//! assert_eq!(out.h_n.dims(), &[1, 4, 16]); // (L·D, B, H)
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cell;
pub mod elman;
pub mod heads;
pub mod kernel;
pub mod runner;

pub use cell::{Cell, Elman, Nonlinearity};
pub use elman::{Config as RnnConfig, Rnn};
pub use heads::{ManyToMany, ManyToOne};
pub use runner::{
    use_fused_cpu_kernel, Recurrent, RecurrentConfig, RecurrentOutput, SeqInput, SequenceEncoder,
};

/// Errors of neka-rnn.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Common(#[from] neka_common::Error),
    /// A configuration that does not fit together; names the field.
    #[error("invalid recurrent config: {0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, Error>;
