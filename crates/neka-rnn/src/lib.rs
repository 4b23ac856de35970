#![doc = include_str!("../README.md")]

pub mod analysis;
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
