//! neka's CPU kernels: the machinery every crate's kernels share, and neka-common's own.
//!
//! Every op with a CPU kernel keeps its plain candle-op twin. Where the layer builds its graph
//! it asks [`fused_applies`] (the [path decision](mod@path)): a CUDA or Metal tensor, or half
//! precision, never reaches a CPU kernel, and on the CPU the thread's [`KernelPath`] picks —
//! [`KernelPath::Fused`] (the default) or [`KernelPath::CandleOps`], switched for a scope with
//! [`use_path`] / [`with_path`] (tests and benchmarks).
//!
//! | file | what |
//! |---|---|
//! | [`path`](mod@path) | [`KernelPath`], the scoped thread-local switch, [`kernel_applies`], [`fused_applies`] |
//! | [`adapter`] | [`CpuKernel`] + [`Fused`] (candle's `CustomOp1/2/3`), [`InplaceKernel`] + [`InPlace`] (`InplaceOpN`): the float dispatch, once |
//! | [`float`] | [`KernelFloat`] (f32, f64) and the branch-free [`exp_f32`] |
//! | [`gemm`] | strided [`Mat`] views, [`matmul`], [`par_matmul`], [`matmul_nt_rows`], safe [`matmul_slices`] |
//! | [`parallel`](mod@parallel) | [`parallel`](fn@parallel) work on candle's CPU pool, [`threads`] |
//! | [`simd`] | [`vectorized`] (AVX-512 / AVX2 chosen at run time), a vectorising [`sum`] |
//! | [`linear`] | the dense layer `y = x Wᵀ + b` (+ ReLU) ([`crate::nn::linear_forward`]) |
//! | [`cross_entropy`] | cross-entropy and masked, label-smoothed cross-entropy ([`crate::loss`]) |
//! | [`adamw`] | the in-place AdamW update ([`crate::optim::Optimizer::step`]) |
//!
//! The model crates keep their kernels in their own `kernels` module (`neka_cnn::kernels`:
//! convolution, pooling, batch norm; `neka_rnn::kernels`: the recurrent time loop), built on
//! these pieces.

pub mod adamw;
pub mod adapter;
pub mod cross_entropy;
pub mod float;
pub mod gemm;
pub mod linear;
pub mod parallel;
pub mod path;
pub mod simd;

pub use adapter::{
    contiguous_range, contiguous_slice, with_slice, CpuKernel, Fused, Grads3, InPlace,
    InplaceKernel, Input,
};
pub use cross_entropy::{CrossEntropyOp, MaskedCrossEntropyOp};
pub use float::{exp_f32, sigmoid, KernelFloat};
pub use gemm::{matmul, matmul_nt_rows, matmul_slices, par_matmul, Mat, Op, FEW_ROWS};
pub use linear::LinearOp;
pub use parallel::{parallel, threads};
pub use path::{fused_applies, kernel_applies, path, use_path, with_path, KernelPath, PathGuard};
pub use simd::{sum, vectorized, Vectorized};
