#![doc = include_str!("../README.md")]

pub use neka_cnn as cnn;
pub use neka_common as common;
