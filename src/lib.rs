#![doc = include_str!("../README.md")]

pub use neka_cnn as cnn;
pub use neka_common as common;
pub use neka_lstm as lstm;
pub use neka_rnn as rnn;
pub use neka_seq2seq as seq2seq;
