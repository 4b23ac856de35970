//! Per-epoch metrics and their files: `metrics.jsonl` and `metrics.csv`.

use crate::checkpoint::write_atomic;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What one epoch measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Optimizer steps so far.
    pub step: usize,
    /// Learning rate of the epoch (after the schedule).
    pub lr: f64,
    /// Mean training loss per counted unit (example or token) over the epoch.
    pub train_loss: f64,
    /// Fraction of training predictions correct over the epoch, in `[0, 1]`.
    pub train_accuracy: f64,
    /// Mean validation loss after the epoch (`None` without validation data).
    pub val_loss: Option<f64>,
    /// Validation accuracy after the epoch, in `[0, 1]` (`None` without validation data).
    pub val_accuracy: Option<f64>,
    /// Training throughput: [`crate::train::StepOutput::count`] per second (examples, or
    /// tokens for sequence models — see [`crate::train::TrainModel::count_unit`]), including
    /// data preparation.
    pub samples_per_sec: f64,
    /// Wall time of the epoch (training and validation), seconds.
    pub seconds: f64,
    /// Metrics added by an epoch hook ([`crate::train::Trainer::fit_with`]), e.g. BLEU.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, f64>,
}

/// Accuracy/loss over a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Mean loss per prediction.
    pub loss: f64,
    /// Fraction of predictions correct, in `[0, 1]`.
    pub accuracy: f64,
    /// Predictions scored (examples, or tokens for sequence models).
    pub count: usize,
}

/// Running sums for an epoch (kept in the resume state, so a resumed epoch reports the
/// same numbers as an uninterrupted one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Running {
    /// Sum of the batches' mean losses, each weighted by its count.
    pub loss_sum: f64,
    /// Correct predictions so far.
    pub correct: f64,
    /// Predictions so far.
    pub count: usize,
    /// Training time of the epoch so far, in seconds (carried across a resume).
    pub seconds: f64,
}

impl Running {
    /// Adds one batch: its mean loss, correct predictions and count.
    pub fn add(&mut self, mean_loss: f64, correct: f64, count: usize) {
        self.loss_sum += mean_loss * count as f64;
        self.correct += correct;
        self.count += count;
    }
    /// Mean loss per prediction so far (0 before any).
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count.max(1) as f64
    }
    /// Fraction of predictions correct so far (0 before any).
    pub fn accuracy(&self) -> f64 {
        self.correct / self.count.max(1) as f64
    }
}

/// The first columns of `metrics.csv`; the hook's extra metrics follow, sorted by name.
pub const CSV_COLUMNS: [&str; 9] = [
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "samples_per_sec",
    "seconds",
];

/// `metrics.csv`'s text: [`CSV_COLUMNS`], then one column per extra metric of any epoch
/// (`val_bleu`, `val_perplexity`, …, named `val_<name>` and sorted), empty where an epoch
/// lacks it.
pub fn history_csv(history: &[EpochMetrics]) -> String {
    let extra: std::collections::BTreeSet<&str> = history
        .iter()
        .flat_map(|m| m.extra.keys().map(String::as_str))
        .collect();
    let mut csv = CSV_COLUMNS.join(",");
    for k in &extra {
        csv.push_str(&format!(",val_{k}"));
    }
    csv.push('\n');
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for m in history {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}",
            m.epoch,
            m.step,
            m.lr,
            m.train_loss,
            m.train_accuracy,
            opt(m.val_loss),
            opt(m.val_accuracy),
            m.samples_per_sec,
            m.seconds
        ));
        for k in &extra {
            csv.push(',');
            csv.push_str(&opt(m.extra.get(*k).copied()));
        }
        csv.push('\n');
    }
    csv
}

/// Rewrites `metrics.jsonl` and `metrics.csv` ([`history_csv`]) in `dir` from the full history.
pub fn write_history(dir: &Path, history: &[EpochMetrics]) -> Result<()> {
    let mut jsonl = String::new();
    for m in history {
        jsonl.push_str(&serde_json::to_string(m).expect("metrics serialise"));
        jsonl.push('\n');
    }
    write_atomic(&dir.join("metrics.jsonl"), jsonl.as_bytes())?;
    write_atomic(&dir.join("metrics.csv"), history_csv(history).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_gets_one_column_per_extra_metric() {
        let epoch = |e: usize, extra: &[(&str, f64)]| EpochMetrics {
            epoch: e,
            step: 10 * e,
            lr: 0.1,
            train_loss: 1.0,
            train_accuracy: 0.5,
            val_loss: Some(2.0),
            val_accuracy: None,
            samples_per_sec: 3.0,
            seconds: 4.0,
            extra: extra.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        let csv = history_csv(&[
            epoch(1, &[("bleu", 12.5)]),
            epoch(2, &[("perplexity", 7.0), ("bleu", 13.0)]),
        ]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            format!("{},val_bleu,val_perplexity", CSV_COLUMNS.join(","))
        );
        assert_eq!(lines[1], "1,10,0.1,1,0.5,2,,3,4,12.5,");
        assert_eq!(lines[2], "2,20,0.1,1,0.5,2,,3,4,13,7");
        // Without extras the file is what it always was.
        assert_eq!(
            history_csv(&[epoch(1, &[])]).lines().next(),
            Some(CSV_COLUMNS.join(",").as_str())
        );
    }
}
