//! Step decay, PyTorch's `StepLR`.

use super::{invalid, Args, Schedule};
use crate::Result;
use serde::{Deserialize, Serialize};

/// `lr = base · γ^⌊epoch / step_size⌋` (PyTorch `StepLR`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Epochs between decays (default 1).
    pub step_size: usize,
    /// `γ`, the factor applied every `step_size` epochs (default 0.7).
    pub gamma: f64,
}

impl Schedule for Step {
    fn usage() -> &'static str {
        "step[:STEP_SIZE[:GAMMA]]"
    }

    /// `step[:STEP_SIZE[:GAMMA]]`, by default every epoch, `γ = 0.7` (pytorch/examples' MNIST).
    fn parse(args: &Args) -> Result<Self> {
        Ok(Self {
            step_size: args.epochs_arg(0, "step size")?.unwrap_or(1),
            gamma: args.num(1, "gamma")?.unwrap_or(0.7),
        })
    }

    fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        base * self.gamma.powi((epoch / self.step_size.max(1)) as i32)
    }

    /// A step size of at least 1 epoch, `γ` finite and > 0.
    fn validate(&self) -> Result<()> {
        if self.step_size == 0 {
            return Err(invalid("step:0: the step size is at least 1 epoch"));
        }
        let gamma = self.gamma;
        if !(gamma.is_finite() && gamma > 0.0) {
            return Err(invalid(format!(
                "step gamma {gamma}: must be a finite number > 0"
            )));
        }
        Ok(())
    }
}
