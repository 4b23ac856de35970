#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod conv;
pub mod figures;
pub mod gradient_flow;
pub mod plot;
pub mod vanishing;

/// neka's one error type (from neka-common).
pub use neka_common::{Error, Result};
