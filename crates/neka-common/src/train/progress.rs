//! What a run shows and logs besides the metrics files: the progress bar, one line per epoch,
//! and `steps.csv` (one row per optimizer step, with [`super::RunOptions::log_steps`]).

use super::Trainer;
use crate::checkpoint;
use crate::metrics::EpochMetrics;
use crate::Result;

/// The progress bar of an epoch: indicatif's (feature `progress`).
#[cfg(feature = "progress")]
pub(super) type Bar = indicatif::ProgressBar;

/// Without the `progress` feature there is no bar (the epoch lines still print).
#[cfg(not(feature = "progress"))]
pub(super) struct Bar;

#[cfg(not(feature = "progress"))]
impl Bar {
    pub(super) fn set_position(&self, _: u64) {}
    pub(super) fn set_message(&self, _: String) {}
    pub(super) fn inc(&self, _: u64) {}
    pub(super) fn abandon(&self) {}
    pub(super) fn finish_and_clear(&self) {}
}

impl Trainer {
    #[cfg(not(feature = "progress"))]
    pub(super) fn progress_bar(&self, _len: usize, _epoch: usize, _epochs: usize) -> Bar {
        Bar
    }

    #[cfg(feature = "progress")]
    pub(super) fn progress_bar(&self, len: usize, epoch: usize, epochs: usize) -> Bar {
        if !self.opts.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("epoch {epoch}/{epochs}"));
        bar
    }

    pub(super) fn print_epoch(&self, m: &EpochMetrics, improved: bool, unit: &str) {
        if !self.opts.verbose {
            return;
        }
        let extra: String = m
            .extra
            .iter()
            .map(|(k, v)| format!(" {k} {v:.4}"))
            .collect();
        println!(
            "epoch {}/{}  train loss {:.4} acc {:.2}%{}{extra}  lr {:.2e}  {:.0} {unit}/s  {:.1}s{}",
            m.epoch,
            self.cfg.epochs,
            m.train_loss,
            100.0 * m.train_accuracy,
            match (m.val_loss, m.val_accuracy) {
                (Some(l), Some(a)) => format!("  val loss {l:.4} acc {:.2}%", 100.0 * a),
                _ => String::new(),
            },
            m.lr,
            m.samples_per_sec,
            m.seconds,
            if improved { "  *best" } else { "" }
        );
    }

    /// Writes `steps.csv` (`step,epoch,loss,grad_norm`) atomically.
    pub(super) fn write_steps(&self) -> Result<()> {
        let mut csv = String::from("step,epoch,loss,grad_norm\n");
        for s in &self.steps {
            csv.push_str(&format!(
                "{},{},{},{}\n",
                s.step, s.epoch, s.loss, s.grad_norm
            ));
        }
        checkpoint::write_atomic(&self.out_dir.join("steps.csv"), csv.as_bytes())
    }
}
