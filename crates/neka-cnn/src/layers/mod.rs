//! The layers the zoo's CNNs are built from: convolution ([`conv`]), pooling ([`pool`]) and
//! batch normalisation ([`norm`]). On CPU they run on neka's kernels ([`crate::kernels`]).

pub mod conv;
pub mod norm;
pub mod pool;
