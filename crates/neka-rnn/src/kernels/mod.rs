//! neka's CPU kernels for the recurrent layers, through neka-common's one adapter
//! ([`neka_common::kernels::Fused`]):
//!
//! | file | op | layer (and its candle-op twin) |
//! |---|---|---|
//! | [`recurrent`] | the time loop of one layer (one or both directions) as one op, and its backward pass through time (BPTT) | [`crate::recurrent::Recurrent`] |
//! | `recurrent/forward.rs` | its forward pass (and the reserve space the BPTT reads) | |
//!
//! CPU only, f32 / f64 only; [`crate::recurrent::uses_fused_kernel`] picks between the kernel and
//! the time loop of candle ops, from the one switch ([`neka_common::kernels::KernelPath`]).

pub mod recurrent;

pub use neka_common::kernels::KernelFloat;
pub use recurrent::RecurrentOp;
