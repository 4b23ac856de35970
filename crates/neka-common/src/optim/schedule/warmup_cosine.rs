//! Linear warm-up, then cosine annealing.

use super::cosine::Cosine;
use super::{invalid, Args, Schedule};
use crate::Result;
use serde::{Deserialize, Serialize};

/// `warmup` epochs of linear warm-up, then a cosine from the base rate down to `η_min` at
/// epoch `t_max`:
///
/// * `epoch < W`: `lr = base · (epoch + 1) / (W + 1)` (from `base/(W+1)` up to
///   `base·W/(W+1)`, so epoch `W` starts at the base rate);
/// * `epoch ≥ W`: `lr = η_min + (base − η_min)(1 + cos(π·(epoch − W)/(t_max − W)))/2`, held at
///   `η_min` after `t_max`.
///
/// Stepped once per epoch this is exactly PyTorch's
/// `SequentialLR(opt, [LinearLR(opt, start_factor=1/(W+1), end_factor=1.0, total_iters=W),
/// CosineAnnealingLR(opt, T_max=t_max−W, eta_min=η_min)], milestones=[W])` (tested against
/// PyTorch's values, `tests/optim_pytorch.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    /// Epochs of linear warm-up (`W` ≥ 1).
    pub warmup: usize,
    /// The epoch at which the cosine reaches `η_min` (> `W`), counted from the start.
    pub t_max: usize,
    /// The lowest rate, reached at `t_max` (default 0).
    pub eta_min: f64,
}

impl Schedule for WarmupCosine {
    fn usage() -> &'static str {
        "warmup-cosine:WARMUP[:T_MAX]"
    }

    /// `warmup-cosine:WARMUP[:T_MAX]`, by default over the whole run, down to 0.
    fn parse(args: &Args) -> Result<Self> {
        Ok(Self {
            warmup: args.epochs_arg(0, "warmup")?.unwrap_or(1),
            t_max: args.epochs_arg(1, "t_max")?.unwrap_or(args.epochs),
            eta_min: 0.0,
        })
    }

    fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        let w = self.warmup;
        if epoch < w {
            base * (epoch + 1) as f64 / (w + 1) as f64
        } else {
            Cosine::anneal(base, self.eta_min, epoch - w, self.t_max.saturating_sub(w))
        }
    }

    /// A warm-up of at least 1 epoch, `T_MAX` past it, `η_min` finite and ≥ 0.
    fn validate(&self) -> Result<()> {
        if self.warmup == 0 {
            return Err(invalid(
                "warmup-cosine:0: the warm-up is at least 1 epoch (or use cosine)",
            ));
        }
        if self.t_max <= self.warmup {
            return Err(invalid(format!(
                "warmup-cosine:{}:{}: T_MAX must be past the warm-up",
                self.warmup, self.t_max
            )));
        }
        Cosine::check_eta_min("warmup-cosine", self.eta_min)
    }

    fn span(&mut self, planned: usize, epochs: usize) {
        if self.t_max == planned && epochs > self.warmup {
            self.t_max = epochs;
        }
    }
}
