//! # neka
//!
//! The umbrella package of the [neka](https://github.com/neka-rs/neka) model zoo on candle: the
//! library crates re-exported ([`cnn`], [`rnn`], [`lstm`], [`seq2seq`], [`common`]), the
//! command-line plumbing the examples share ([`cli`]), the allocator they run on
//! ([`use_mimalloc!`]) and the demo's web server (`demo`, feature `demo`). The examples, the
//! lecture map and the shipped models are described in the
//! [README](https://github.com/neka-rs/neka#readme); each library crate has its own README.

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod cli;

pub use neka_cnn as cnn;
pub use neka_common as common;
pub use neka_lstm as lstm;
pub use neka_rnn as rnn;
pub use neka_seq2seq as seq2seq;

/// Makes [mimalloc](https://github.com/microsoft/mimalloc) the program's allocator — what
/// every example runs on. candle allocates a fresh buffer for every tensor; glibc malloc
/// returns large ones to the OS and page-faults them back in on every step; mimalloc caches
/// them (≈1.4× faster CNN training here). Pair it with [`cli::init`] first thing in `main`.
///
/// ```ignore
/// neka::use_mimalloc!();
///
/// fn main() {
///     neka::cli::init(); // includes alloc::keep_freed_memory()
///     // …
/// }
/// ```
#[cfg(feature = "mimalloc")]
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::alloc::MiMalloc = $crate::alloc::MiMalloc;
    };
}

/// Without the `mimalloc` feature (on by default; off where mimalloc's C code cannot be
/// compiled, e.g. the Apple type-check in CI) the system allocator stays.
#[cfg(not(feature = "mimalloc"))]
#[macro_export]
macro_rules! use_mimalloc {
    () => {};
}

/// The allocator's tuning (see [`use_mimalloc!`]).
pub mod alloc {
    #[cfg(feature = "mimalloc")]
    pub use mimalloc::MiMalloc;

    /// mimalloc's `purge_delay` option (index 15 of `mi_option_e` in mimalloc 2 and 3).
    #[cfg(feature = "mimalloc")]
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

    /// Tells mimalloc to keep memory it has freed for reuse instead of returning it to the OS
    /// 10 ms later (`purge_delay = −1`; the same as `MIMALLOC_PURGE_DELAY=-1`).
    ///
    /// A training step frees and re-allocates the same tens of megabytes of activations,
    /// gradients and reserve space every few milliseconds; returned memory comes back as fresh
    /// pages the kernel must zero on first touch. On the bidirectional-LSTM benchmark that was
    /// 3,700 page faults a run and ~20 % of its CPU time (`clear_page_erms`), 250 faults with
    /// this set. Peak memory is unchanged (it is the same memory, reused); memory freed after
    /// the peak stays mapped to the process until it exits.
    ///
    /// Only meaningful with mimalloc as the global allocator; call it first thing in `main`.
    /// Without the `mimalloc` feature it does nothing.
    pub fn keep_freed_memory() {
        // SAFETY: sets one integer option; called before other threads allocate.
        #[cfg(feature = "mimalloc")]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1)
        }
    }
}

// The `demo` example's web server (axum and hyper on tokio; the root package's `demo` feature
// only); its docs are the module's own.
#[cfg(feature = "demo")]
pub mod demo;
