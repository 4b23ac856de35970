//! RMSprop (Hinton, Coursera lecture 6e, 2012), PyTorch's `torch.optim.RMSprop`.

use super::{positive, unit, ParamStep, UpdateRule};
use crate::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// RMSprop, PyTorch style (`torch.optim.RMSprop`):
/// `g ← g + λθ`, `v ← αv + (1−α)g²`; centered: `ḡ ← αḡ + (1−α)g`, `d = √(v − ḡ²) + ε`,
/// else `d = √v + ε`; with momentum `b ← μb + g/d`, `θ ← θ − lr·b`, else `θ ← θ − lr·g/d`.
///
/// State, as PyTorch names it: `square_avg` (`v`), `momentum_buffer` (`b`, when `μ > 0`),
/// `grad_avg` (`ḡ`, when centered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RmsProp {
    /// Learning rate.
    pub lr: f64,
    /// Smoothing constant `α` of the squared-gradient average.
    pub alpha: f64,
    /// `ε` added to the denominator (default 1e-8).
    pub eps: f64,
    /// L2 penalty `λ` folded into the gradient, `g ← g + λθ` (default 0).
    pub weight_decay: f64,
    /// Momentum `μ` of the buffer `b`, in `[0, 1)` (default 0: none).
    pub momentum: f64,
    /// Normalise by the variance estimate `v − ḡ²` instead of `v`.
    pub centered: bool,
}

impl UpdateRule for RmsProp {
    /// PyTorch's defaults: α = 0.99, ε = 1e-8, no weight decay, no momentum, not centered.
    fn with_defaults(lr: f64) -> Self {
        Self {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
    }

    lr_and_weight_decay!();

    fn validate(&self) -> Result<()> {
        unit("alpha", self.alpha)?;
        unit("momentum", self.momentum)?;
        positive("eps", self.eps)
    }

    fn state_slots(&self) -> Vec<&'static str> {
        let mut slots = vec!["square_avg"];
        if self.momentum > 0.0 {
            slots.push("momentum_buffer");
        }
        if self.centered {
            slots.push("grad_avg");
        }
        slots
    }

    fn update(&self, p: &ParamStep, st: &mut [Tensor]) -> Result<Tensor> {
        let ParamStep { theta, g, lr, .. } = *p;
        let alpha = self.alpha;
        let v = ((&st[0] * alpha)? + (g.sqr()? * (1.0 - alpha))?)?;
        let denom = if self.centered {
            let i = st.len() - 1;
            let g_avg = ((&st[i] * alpha)? + (g * (1.0 - alpha))?)?;
            let d = (&v - g_avg.sqr()?)?.sqrt()?;
            st[i] = g_avg;
            d
        } else {
            v.sqrt()?
        };
        let denom = (denom + self.eps)?;
        st[0] = v;
        let step = (g / &denom)?;
        let step = if self.momentum > 0.0 {
            let b = ((&st[1] * self.momentum)? + step)?;
            st[1] = b.clone();
            b
        } else {
            step
        };
        Ok((theta - (step * lr)?)?)
    }
}
