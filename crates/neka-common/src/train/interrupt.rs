//! Ctrl-C: the process-wide stop request that the training loop checks after every batch.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs (once per process) a Ctrl-C handler: the first Ctrl-C asks the training loop to
/// stop after the current batch and save; a second one exits at once. Without the `ctrlc`
/// feature it installs nothing (Ctrl-C ends the process; [`request_stop`] still works).
pub fn install_ctrl_c_handler() {
    #[cfg(feature = "ctrlc")]
    static ONCE: std::sync::Once = std::sync::Once::new();
    #[cfg(feature = "ctrlc")]
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond Ctrl-C: exiting without saving");
                std::process::exit(130);
            }
            eprintln!(
                "\nCtrl-C: finishing this batch, saving a checkpoint (Ctrl-C again to abort)"
            );
        });
    });
}

/// Asks a running [`Trainer::fit`](super::Trainer::fit) to stop after the current batch (what Ctrl-C does).
pub fn request_stop() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested (Ctrl-C or [`request_stop`]) since the last [`clear`].
pub(super) fn requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Forgets an earlier stop request (a new [`super::Trainer::fit`] starts).
pub(super) fn clear() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}
