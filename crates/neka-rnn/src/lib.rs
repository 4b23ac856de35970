#![doc = include_str!("../README.md")]

pub mod analysis;
pub mod cell;
pub mod elman;
pub mod heads;
pub mod kernels;
pub mod runner;

pub use cell::{Cell, Elman, Nonlinearity};
pub use elman::{Config as RnnConfig, Rnn};
pub use heads::{ManyToMany, ManyToOne};
pub use runner::{Recurrent, RecurrentConfig, RecurrentOutput, SeqInput, SequenceEncoder};

/// neka's one error type (from neka-common): every library crate of the zoo returns it.
pub use neka_common::{Error, Result};
