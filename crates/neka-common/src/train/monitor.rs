//! The metric that picks the best epoch and drives early stopping: [`Monitor`] and its
//! direction [`Goal`].

use crate::metrics::EpochMetrics;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Whether a [`Monitor`]ed metric is better larger or smaller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    /// Larger is better (accuracy, BLEU).
    Max,
    /// Smaller is better (loss, perplexity).
    Min,
}

/// The metric that picks the best epoch (the one saved as `model.safetensors`) and drives
/// early stopping, with its direction.
///
/// Names: `val_accuracy`, `val_loss`, `val_perplexity` (`exp(val_loss)`), `train_accuracy`,
/// `train_loss`, or `val_<name>` for a metric `<name>` returned by [`Trainer::fit_with`](super::Trainer::fit_with)'s
/// hook (the translator's `val_bleu`). Without validation data `val_accuracy` and `val_loss`
/// fall back to the training figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Monitor {
    /// The metric's name, one of those above, e.g. `val_accuracy`.
    pub metric: String,
    /// Whether larger or smaller is better.
    pub goal: Goal,
}

impl Default for Monitor {
    /// Validation accuracy, higher is better.
    fn default() -> Self {
        Self::max("val_accuracy")
    }
}

impl std::fmt::Display for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let goal = match self.goal {
            Goal::Max => "max",
            Goal::Min => "min",
        };
        write!(f, "{}:{goal}", self.metric)
    }
}

impl Monitor {
    /// `metric`, higher is better.
    pub fn max(metric: &str) -> Self {
        Self {
            metric: metric.into(),
            goal: Goal::Max,
        }
    }

    /// `metric`, lower is better.
    pub fn min(metric: &str) -> Self {
        Self {
            metric: metric.into(),
            goal: Goal::Min,
        }
    }

    /// Parses `METRIC[:max|:min]` (`--monitor val_bleu`, `--monitor val_loss:min`); without a
    /// direction, losses and perplexities are minimised and everything else maximised.
    pub fn parse(s: &str) -> Result<Self> {
        let (metric, goal) = match s.rsplit_once(':') {
            Some((m, "max")) => (m, Some(Goal::Max)),
            Some((m, "min")) => (m, Some(Goal::Min)),
            Some((_, g)) => {
                return Err(Error::config(
                    "monitor",
                    format!("`{s}`: the direction `{g}` is neither max nor min"),
                ))
            }
            None => (s, None),
        };
        if metric.is_empty()
            || !metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::config(
                "monitor",
                format!("`{s}`: expected a metric name such as val_accuracy, val_loss or val_bleu, optionally :max or :min"),
            ));
        }
        let lower_is_better = metric.ends_with("loss") || metric.ends_with("perplexity");
        let goal = goal.unwrap_or(if lower_is_better {
            Goal::Min
        } else {
            Goal::Max
        });
        Ok(Self {
            metric: metric.into(),
            goal,
        })
    }

    /// The monitored value in an epoch's metrics (`None` if the epoch did not measure it).
    pub fn value(&self, m: &EpochMetrics) -> Option<f64> {
        match self.metric.as_str() {
            "val_accuracy" => Some(m.val_accuracy.unwrap_or(m.train_accuracy)),
            "val_loss" => Some(m.val_loss.unwrap_or(m.train_loss)),
            "val_perplexity" => Some(m.val_loss.unwrap_or(m.train_loss).exp()),
            "train_accuracy" => Some(m.train_accuracy),
            "train_loss" => Some(m.train_loss),
            other => m
                .extra
                .get(other.strip_prefix("val_").unwrap_or(other))
                .or_else(|| m.extra.get(other))
                .copied(),
        }
    }

    /// Whether `new` beats `old` (ties do not).
    pub fn better(&self, new: f64, old: f64) -> bool {
        match self.goal {
            Goal::Max => new > old,
            Goal::Min => new < old,
        }
    }
}
