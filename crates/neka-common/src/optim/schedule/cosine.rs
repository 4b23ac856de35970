//! Cosine annealing, PyTorch's `CosineAnnealingLR`.

use super::{invalid, Args, Schedule};
use crate::Result;
use serde::{Deserialize, Serialize};

/// `lr = η_min + (base − η_min)(1 + cos(π·epoch/t_max))/2` (PyTorch `CosineAnnealingLR`),
/// held at `η_min` after `t_max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cosine {
    /// Epochs from the base rate down to `η_min` (default: the whole run).
    pub t_max: usize,
    /// The lowest rate, reached at `t_max` (default 0).
    pub eta_min: f64,
}

impl Cosine {
    /// The cosine from `base` down to `eta_min` at step `t` of `t_max` (clamped to `t_max`).
    pub(super) fn anneal(base: f64, eta_min: f64, t: usize, t_max: usize) -> f64 {
        let t = (t.min(t_max) as f64) / (t_max.max(1) as f64);
        eta_min + (base - eta_min) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
    }

    /// `η_min` finite and ≥ 0, or an error saying which schedule.
    pub(super) fn check_eta_min(name: &str, eta_min: f64) -> Result<()> {
        if eta_min.is_finite() && eta_min >= 0.0 {
            Ok(())
        } else {
            Err(invalid(format!(
                "{name} eta_min {eta_min}: must be a finite number ≥ 0"
            )))
        }
    }
}

impl Schedule for Cosine {
    fn usage() -> &'static str {
        "cosine[:T_MAX]"
    }

    /// `cosine[:T_MAX]`, by default over the whole run, down to 0.
    fn parse(args: &Args) -> Result<Self> {
        Ok(Self {
            t_max: args.epochs_arg(0, "t_max")?.unwrap_or(args.epochs),
            eta_min: 0.0,
        })
    }

    fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        Self::anneal(base, self.eta_min, epoch, self.t_max)
    }

    /// `T_MAX` of at least 1 epoch, `η_min` finite and ≥ 0.
    fn validate(&self) -> Result<()> {
        if self.t_max == 0 {
            return Err(invalid("cosine:0: T_MAX is at least 1 epoch"));
        }
        Self::check_eta_min("cosine", self.eta_min)
    }

    fn span(&mut self, planned: usize, epochs: usize) {
        if self.t_max == planned {
            self.t_max = epochs;
        }
    }
}
