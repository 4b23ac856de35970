//! neka-seq2seq's CPU kernels: [`log_softmax`], the decoder's log-probabilities on the host
//! (built on [`neka_common::kernels`]).

pub(crate) mod log_softmax;

pub(crate) use log_softmax::Rows;
