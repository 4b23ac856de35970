#![doc = include_str!("../README.md")]

pub mod cell;
pub mod heads;
pub mod kernel;
pub mod recurrent;
pub mod rnn;

pub use cell::{Cell, Elman, Nonlinearity};
pub use heads::{ManyToMany, ManyToOne};
pub use recurrent::{
    use_fused_cpu_kernel, Recurrent, RecurrentConfig, RecurrentOutput, SeqInput, SequenceEncoder,
};
pub use rnn::{Config as RnnConfig, Rnn};

/// neka's one error type (from neka-common): every library crate of the zoo returns it.
pub use neka_common::{Error, Result};
