//! What a training returns: [`FitReport`] (history, best epoch, why it stopped), the weight
//! average's [`AverageReport`], and the per-step [`StepLog`].

use super::Monitor;
use crate::metrics::EpochMetrics;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One optimizer step, recorded when [`RunOptions::log_steps`](super::RunOptions::log_steps) is on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// 1-based optimizer step.
    pub step: usize,
    /// 1-based epoch.
    pub epoch: usize,
    /// The batch's mean loss.
    pub loss: f64,
    /// Global gradient norm before clipping (NaN for a step whose loss was not finite).
    pub grad_norm: f64,
}

/// Why [`Trainer::fit`](super::Trainer::fit) returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// All `epochs` ran.
    Completed,
    /// `patience` epochs passed without a better monitored metric.
    EarlyStopped,
    /// Ctrl-C (or [`request_stop`](super::request_stop)): the last checkpoint was saved for
    /// `--resume`.
    Interrupted,
}

/// What a [`Trainer::fit`](super::Trainer::fit) call did.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// Every epoch's metrics, resumed ones included, in order.
    pub history: Vec<EpochMetrics>,
    /// The epoch saved as the best model (for a kept weight average: the last averaged one).
    pub best_epoch: Option<usize>,
    /// The best validation accuracy of any epoch (not of the average).
    pub best_val_accuracy: Option<f64>,
    /// What picked the best model, and its value there.
    pub monitor: Monitor,
    /// The monitored metric's value at the best model (`None` if no epoch completed).
    pub best_score: Option<f64>,
    /// The weight average of the last epochs, when [`TrainConfig::average_last`](super::TrainConfig::average_last) is on.
    pub average: Option<AverageReport>,
    /// Why training stopped.
    pub stop: StopReason,
    /// The run directory: best model, checkpoint, metrics.
    pub out_dir: PathBuf,
}

/// How the weight average of the last epochs did against the best single epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct AverageReport {
    /// 1-based epochs averaged, first and last.
    pub first_epoch: usize,
    /// Last epoch averaged (1-based).
    pub last_epoch: usize,
    /// Validation metrics of the averaged weights (`epoch` = the last averaged one).
    pub metrics: EpochMetrics,
    /// Whether the average was better than the best epoch and replaced it as the best model.
    pub kept: bool,
}

impl FitReport {
    /// What was kept as the best model: `best epoch N` or `weight average of epochs A–B`.
    pub fn kept(&self) -> String {
        match &self.average {
            Some(a) if a.kept => format!(
                "weight average of epochs {}–{}",
                a.first_epoch, a.last_epoch
            ),
            _ => format!("best epoch {}", self.best_epoch.unwrap_or(0)),
        }
    }

    /// Validation accuracy of the model kept (the average's, if it was kept).
    pub fn kept_val_accuracy(&self) -> Option<f64> {
        match &self.average {
            Some(a) if a.kept => a.metrics.val_accuracy,
            _ => self.best_val_accuracy,
        }
    }

    /// Wall time of the epochs trained, seconds (over resumes too).
    pub fn train_seconds(&self) -> f64 {
        self.history.iter().map(|m| m.seconds).sum()
    }
}
