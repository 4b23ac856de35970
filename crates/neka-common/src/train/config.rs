//! What defines a run ([`TrainConfig`], saved with it) and how it is shown ([`RunOptions`],
//! not saved).

use super::Monitor;
#[allow(unused_imports)] // doc links
use super::{TrainModel, Trainer, WeightAverage};
use crate::optim::{Cosine, LrSchedule, OptimizerConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// How to train: what defines the run and is saved with it. How the run is shown (progress
/// bar, epoch lines, Ctrl-C) is [`RunOptions`], not saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Epochs to train (at least 1).
    pub epochs: usize,
    /// Training examples (or sequences) per batch and optimizer step.
    pub batch_size: usize,
    /// Batch size for validation and test passes (no gradients, so it can be larger).
    pub eval_batch_size: usize,
    /// The optimizer and its hyper-parameters, including the base learning rate.
    pub optimizer: OptimizerConfig,
    /// Learning rate per epoch (default constant).
    #[serde(default)]
    pub schedule: LrSchedule,
    /// Clip the global gradient norm to this value.
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// Stop after this many epochs without a better monitored metric.
    #[serde(default)]
    pub patience: Option<usize>,
    /// Seed of the batch shuffling; seed the model RNG with it too ([`crate::rng::seed`]) before
    /// building the model, for a reproducible init and dropout.
    pub seed: u64,
    /// Train on at most this many batches per epoch (smoke tests, `--dry-run`).
    #[serde(default)]
    pub max_batches_per_epoch: Option<usize>,
    /// The metric that picks the best epoch; `None`: the model's ([`TrainModel::monitor`]).
    #[serde(default)]
    pub monitor: Option<Monitor>,
    /// Also average the weights of the last `average_last` epochs (stochastic weight
    /// averaging, [`WeightAverage`]); the average replaces the best epoch if the monitored
    /// metric says it is better on validation data. 0 = off.
    #[serde(default)]
    pub average_last: usize,
}

/// How a run is shown and controlled; not part of what defines it (never saved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Print one line per epoch to stdout.
    pub verbose: bool,
    /// Install a Ctrl-C handler: finish the batch, save a checkpoint, return.
    pub handle_ctrl_c: bool,
    /// Record every optimizer step's loss and gradient norm ([`Trainer::step_log`],
    /// `steps.csv`).
    pub log_steps: bool,
}

impl Default for RunOptions {
    /// Progress bar and epoch lines on; no Ctrl-C handler, no step log.
    fn default() -> Self {
        Self {
            progress: true,
            verbose: true,
            handle_ctrl_c: false,
            log_steps: false,
        }
    }
}

impl RunOptions {
    /// What a command-line training shows: progress, epoch lines, Ctrl-C saves a checkpoint.
    pub fn interactive() -> Self {
        Self {
            handle_ctrl_c: true,
            ..Self::default()
        }
    }

    /// Nothing printed (tests, experiments that run many trainings).
    pub fn quiet() -> Self {
        Self {
            progress: false,
            verbose: false,
            ..Self::default()
        }
    }
}

impl TrainConfig {
    /// Checks every number against its range, naming the field: at least one epoch, batch and
    /// patience epoch; a clipping norm finite and > 0; a batch cap ≥ 1; the optimizer's and the
    /// schedule's hyper-parameters ([`OptimizerConfig::validate`], [`LrSchedule::validate`]).
    /// [`Trainer::new`] calls it, so a bad value stops before anything is written.
    pub fn validate(&self) -> Result<()> {
        let at_least_one = |field: &str, v: usize, what: &str| {
            if v == 0 {
                Err(Error::config(field, format!("0: {what}")))
            } else {
                Ok(())
            }
        };
        at_least_one(
            "epochs",
            self.epochs,
            "train at least one epoch (to score a saved model, use its `eval` command)",
        )?;
        at_least_one("batch_size", self.batch_size, "must be at least 1")?;
        at_least_one(
            "eval_batch_size",
            self.eval_batch_size,
            "the evaluation batch size must be at least 1",
        )?;
        if let Some(p) = self.patience {
            at_least_one(
                "patience",
                p,
                "stop after at least one epoch without improvement, or leave it out",
            )?;
        }
        if let Some(m) = self.max_batches_per_epoch {
            at_least_one(
                "max_batches_per_epoch",
                m,
                "train on at least one batch, or leave it out",
            )?;
        }
        if let Some(c) = self.clip_grad_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::config(
                    "clip_grad_norm",
                    format!("{c}: must be a finite number > 0 (a norm to scale gradients down to)"),
                ));
            }
        }
        self.optimizer.validate()?;
        self.schedule.validate()
    }

    /// `epochs` epochs of batches of `batch_size` with `optimizer`, the rest as
    /// [`TrainConfig::default`]; with the builders below, a model's training defaults
    /// read as one line: `TrainConfig::new(10, 64, OptimizerConfig::adamw(2e-3)).clip(1.0).cosine()`.
    pub fn new(epochs: usize, batch_size: usize, optimizer: OptimizerConfig) -> Self {
        Self {
            epochs,
            batch_size,
            optimizer,
            ..Self::default()
        }
    }

    /// Validation and test batches of `n`.
    pub fn eval_batch(mut self, n: usize) -> Self {
        self.eval_batch_size = n;
        self
    }

    /// Clips the global gradient norm to `max_norm`.
    pub fn clip(mut self, max_norm: f64) -> Self {
        self.clip_grad_norm = Some(max_norm);
        self
    }

    /// A cosine learning-rate schedule over the whole run (`T_max` = the epochs).
    pub fn cosine(mut self) -> Self {
        self.schedule = LrSchedule::Cosine(Cosine {
            t_max: self.epochs,
            eta_min: 0.0,
        });
        self
    }

    /// The first 1-based epoch whose weights go into the average (`None`: averaging off).
    pub fn first_averaged_epoch(&self) -> Option<usize> {
        (self.average_last > 0).then(|| self.epochs.saturating_sub(self.average_last) + 1)
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 64,
            eval_batch_size: 1000,
            optimizer: OptimizerConfig::adamw(1e-3),
            schedule: LrSchedule::Constant,
            clip_grad_norm: None,
            patience: None,
            seed: 0,
            max_batches_per_epoch: None,
            monitor: None,
            average_last: 0,
        }
    }
}

#[cfg(test)]
mod validate_tests {
    use super::*;
    use crate::checkpoint::CheckpointInfo;
    use crate::train::Trainer;
    use candle_nn::VarMap;

    #[test]
    fn every_numeric_option_is_checked_before_training() {
        let vm = VarMap::new();
        let info = CheckpointInfo::new("m", &serde_json::json!({}), "d").unwrap();
        let err = |cfg: TrainConfig| {
            Trainer::new(cfg, &vm, info.clone(), "unused")
                .err()
                .expect("should be refused")
                .to_string()
        };
        let base = TrainConfig::default;
        assert!(err(TrainConfig {
            epochs: 0,
            ..base()
        })
        .starts_with("invalid epochs:"));
        assert!(err(TrainConfig {
            batch_size: 0,
            ..base()
        })
        .starts_with("invalid batch_size:"));
        assert!(err(TrainConfig {
            patience: Some(0),
            ..base()
        })
        .starts_with("invalid patience:"));
        assert!(err(TrainConfig {
            max_batches_per_epoch: Some(0),
            ..base()
        })
        .starts_with("invalid max_batches_per_epoch:"));
        for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = err(TrainConfig {
                clip_grad_norm: Some(c),
                ..base()
            });
            assert!(
                e.starts_with("invalid clip_grad_norm:") && e.contains("> 0"),
                "{e}"
            );
        }
        let e = err(TrainConfig {
            optimizer: OptimizerConfig::adamw(-1.0),
            ..base()
        });
        assert!(e.starts_with("invalid lr:"), "{e}");
        let e = err(TrainConfig {
            schedule: LrSchedule::Step(crate::optim::Step {
                step_size: 1,
                gamma: f64::NAN,
            }),
            ..base()
        });
        assert!(e.starts_with("invalid schedule:"), "{e}");
        base().validate().unwrap();
    }
}
