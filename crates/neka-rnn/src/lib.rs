#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod cell;
pub mod heads;
pub mod kernels;
pub mod recurrent;
pub mod rnn;

pub use cell::{BackwardRow, Cell, Elman, Nonlinearity};
pub use heads::{ManyToMany, ManyToOne};
pub use recurrent::{Recurrent, RecurrentConfig, RecurrentOutput, SeqInput, SequenceEncoder};
pub use rnn::{Config as RnnConfig, Rnn};

/// neka's one error type (from neka-common): every library crate of the zoo returns it.
pub use neka_common::{Error, Result};
