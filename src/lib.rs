#![doc = include_str!("../README.md")]

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
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::alloc::MiMalloc = $crate::alloc::MiMalloc;
    };
}

/// The allocator's tuning (see [`use_mimalloc!`]).
pub mod alloc {
    pub use mimalloc::MiMalloc;

    /// mimalloc's `purge_delay` option (index 15 of `mi_option_e` in mimalloc 2 and 3).
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
    pub fn keep_freed_memory() {
        // SAFETY: sets one integer option; called before other threads allocate.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
}

/// The `demo` example's web server (axum and hyper on tokio; the root package's `demo` feature only).
#[cfg(feature = "demo")]
pub mod demo;
