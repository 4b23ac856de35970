//! Stochastic gradient descent with (optionally Nesterov) momentum, PyTorch's `torch.optim.SGD`.

use super::{unit, ParamStep, UpdateRule};
use crate::{Error, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// SGD with (optionally Nesterov) momentum, PyTorch style:
/// `g ← g + λθ`, `b ← μb + g`, `θ ← θ − lr·b` (Nesterov: `θ ← θ − lr(g + μb)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f64,
    /// Momentum `μ` of the buffer `b`, in `[0, 1)` (default 0.9; 0 is plain SGD).
    pub momentum: f64,
    /// L2 penalty `λ` folded into the gradient, `g ← g + λθ` (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (needs `μ > 0`; default off).
    pub nesterov: bool,
}

impl UpdateRule for Sgd {
    /// Momentum 0.9, no weight decay.
    fn with_defaults(lr: f64) -> Self {
        Self {
            lr,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        }
    }

    lr_and_weight_decay!();

    fn validate(&self) -> Result<()> {
        unit("momentum", self.momentum)?;
        if self.nesterov && self.momentum == 0.0 {
            return Err(Error::config("nesterov", "needs a momentum > 0"));
        }
        Ok(())
    }

    fn state_slots(&self) -> Vec<&'static str> {
        if self.momentum == 0.0 {
            vec![]
        } else {
            vec!["momentum_buffer"]
        }
    }

    fn update(&self, p: &ParamStep, st: &mut [Tensor]) -> Result<Tensor> {
        let ParamStep { theta, g, lr, t } = *p;
        let momentum = self.momentum;
        let mut g = g.clone();
        if momentum != 0.0 {
            let buf = if t == 1 {
                g.clone()
            } else {
                ((&st[0] * momentum)? + &g)?
            };
            g = if self.nesterov {
                (&g + (&buf * momentum)?)?
            } else {
                buf.clone()
            };
            st[0] = buf;
        }
        Ok((theta - (g * lr)?)?)
    }
}

#[cfg(test)]
mod tests {
    use crate::optim::OptimizerConfig;

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        // step 1: g = [2,-4], b = g, θ = θ - 0.1 b = [0.8, -1.6]
        // step 2: g = [1.6,-3.2], b = 0.9*[2,-4] + g = [3.4,-6.8], θ = [0.46, -0.92]
        let w = super::super::tests::one_step(OptimizerConfig::sgd(0.1), 2);
        assert!(
            (w[0] - 0.46).abs() < 1e-6 && (w[1] + 0.92).abs() < 1e-6,
            "{w:?}"
        );
    }
}
