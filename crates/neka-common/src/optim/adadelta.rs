//! Adadelta (Zeiler 2012), PyTorch's `torch.optim.Adadelta`.

use super::{positive, unit, ParamStep, UpdateRule};
use crate::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// Adadelta (Zeiler 2012), as in pytorch/examples' MNIST:
/// `v ← ρv + (1−ρ)g²`, `Δ = √(u+ε)/√(v+ε) · g`, `u ← ρu + (1−ρ)Δ²`, `θ ← θ − lr·Δ`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adadelta {
    /// Learning rate, scaling the step `Δ`.
    pub lr: f64,
    /// `ρ`, decay of both running averages, in `[0, 1)` (default 0.9).
    pub rho: f64,
    /// `ε` added inside the square roots (default 1e-6).
    pub eps: f64,
    /// L2 penalty `λ` folded into the gradient, `g ← g + λθ` (default 0).
    pub weight_decay: f64,
}

impl UpdateRule for Adadelta {
    /// PyTorch's defaults: ρ = 0.9, ε = 1e-6, no weight decay.
    fn with_defaults(lr: f64) -> Self {
        Self {
            lr,
            rho: 0.9,
            eps: 1e-6,
            weight_decay: 0.0,
        }
    }

    lr_and_weight_decay!();

    fn validate(&self) -> Result<()> {
        unit("rho", self.rho)?;
        positive("eps", self.eps)
    }

    fn state_slots(&self) -> Vec<&'static str> {
        vec!["square_avg", "acc_delta"]
    }

    fn update(&self, p: &ParamStep, st: &mut [Tensor]) -> Result<Tensor> {
        let ParamStep { theta, g, lr, .. } = *p;
        let (rho, eps) = (self.rho, self.eps);
        let v = ((&st[0] * rho)? + (g.sqr()? * (1.0 - rho))?)?;
        let delta = (((&st[1] + eps)?.sqrt()? / (&v + eps)?.sqrt()?)? * g)?;
        let u = ((&st[1] * rho)? + (delta.sqr()? * (1.0 - rho))?)?;
        st[0] = v;
        st[1] = u;
        Ok((theta - (delta * lr)?)?)
    }
}

#[cfg(test)]
mod tests {
    use crate::optim::OptimizerConfig;

    #[test]
    fn adadelta_matches_hand_computation() {
        // v = 0.1 g², Δ = √ε/√(v+ε) g, θ -= lr Δ  (g = 2θ)
        let w = super::super::tests::one_step(OptimizerConfig::adadelta(1.0), 1);
        let eps = 1e-6f64;
        for (i, th) in [1.0f64, -2.0].iter().enumerate() {
            let g = 2.0 * th;
            let v = 0.1 * g * g;
            let d = eps.sqrt() / (v + eps).sqrt() * g;
            assert!((w[i] as f64 - (th - d)).abs() < 1e-6, "{w:?}");
        }
    }
}
