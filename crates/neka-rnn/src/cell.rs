//! What a recurrent cell is, to the [runner](crate::recurrent): one time step, written twice.
//!
//! Every cell of the zoo (Elman here; LSTM and GRU in `neka-lstm`) computes, at step `t`,
//!
//! ```text
//! gx_t  = x_t U^T + b_ih            (B, G)   input projection, for all t in ONE matmul
//! rec_t = h_{t-1} W^T + b_hh        (B, G)   the recurrent matmul, the only per-step matmul
//! state_t = cell(gx_t, rec_t, state_{t-1})
//! ```
//!
//! with `G = gates · H` (1 block for Elman, 4 for LSTM, 3 for GRU) and `state = h` or `(h, C)`.
//! A [`Cell`] supplies the last line twice:
//!
//! - [`Cell::step`] on candle tensors: the readable form of the lecture's equations, used on
//!   GPUs (autograd gives BPTT);
//! - [`Cell::forward_row`] / [`Cell::backward_row`] on slices of one batch row: the fused CPU
//!   kernel ([`crate::kernels`]) runs the whole sequence in one candle op with a hand-written
//!   backward pass (BPTT), checked against finite differences and PyTorch.

use candle_core::{Result, Tensor};
use num_traits::Float;

/// The floats the fused kernel computes in, with the activation functions it needs
/// (`sigmoid`, `tanh_act`): neka-common's one [`KernelFloat`].
pub use neka_common::kernels::{exp_f32, sigmoid, KernelFloat};

/// One recurrent cell. `G = GATES · H`, `S0 = STATES · H`.
pub trait Cell: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// Gate blocks stacked in `weight_ih` / `weight_hh` (1 Elman, 4 LSTM, 3 GRU).
    const GATES: usize;
    /// State tensors carried from step to step: 1 (`h`) or 2 (`h`, `C`).
    const STATES: usize = 1;
    /// Blocks of `H` floats the fused kernel saves per step for the backward pass. The first
    /// `STATES` blocks are the new state (`h` first).
    const SAVED: usize;

    /// The PyTorch mode name: `rnn_tanh`, `rnn_relu`, `lstm`, `gru`.
    fn name(&self) -> &'static str;
    /// [`Cell::GATES`].
    fn gates(&self) -> usize {
        Self::GATES
    }
    /// [`Cell::STATES`].
    fn states(&self) -> usize {
        Self::STATES
    }
    /// [`Cell::SAVED`].
    fn saved(&self) -> usize {
        Self::SAVED
    }

    /// One step on tensors: `gx, rec: (B, G)`, `state: [h (B, H)]` or `[h, C]` → the new state.
    fn step(&self, gx: &Tensor, rec: &Tensor, state: &[Tensor]) -> Result<Vec<Tensor>>;

    /// One step of one batch row: `gx, rec: [G]`, `prev: [S0]` → `saved: [SAVED·H]`.
    ///
    /// Separate slice arguments, not a struct: as arguments the `&mut` output is known not to
    /// alias the inputs, which lets the loop vectorise once inlined (a `ForwardRow` struct made
    /// the LSTM's forward pass about 1.7× slower, measured with `bench_lstm --neka-only`).
    fn forward_row<F: KernelFloat>(
        &self,
        hidden: usize,
        gx: &[F],
        rec: &[F],
        prev: &[F],
        saved: &mut [F],
    );

    /// The step's backward pass for one row ([`BackwardRow`]: what the forward pass saved and
    /// `∂L/∂(new state)` in, `∂L/∂gx_t`, `∂L/∂rec_t` and `dprev` out).
    fn backward_row<F: KernelFloat>(&self, hidden: usize, row: BackwardRow<'_, F>);
}

/// One batch row of one step's backward pass, for [`Cell::backward_row`].
pub struct BackwardRow<'a, F> {
    /// `[SAVED·H]`, as [`Cell::forward_row`] wrote it.
    pub saved: &'a [F],
    /// The previous state, `[S0]`.
    pub prev: &'a [F],
    /// `∂L/∂(new state)`, `[S0]`.
    pub dstate: &'a [F],
    /// Out: `∂L/∂gx_t`, `[G]`.
    pub dgx: &'a mut [F],
    /// Out: `∂L/∂rec_t`, `[G]`.
    pub drec: &'a mut [F],
    /// Out: the part of `∂L/∂state_{t-1}` that does not go through `W`, `[S0]` (e.g.
    /// `f ⊙ dC` for the LSTM's cell state).
    pub dprev: &'a mut [F],
}

/// The nonlinearity ψ of the Elman RNN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nonlinearity {
    /// ψ = tanh (PyTorch's default): outputs in (−1, 1), gradient ≤ 1.
    #[default]
    Tanh,
    /// ψ = ReLU: unbounded, so gradients can explode without clipping.
    Relu,
}

impl std::str::FromStr for Nonlinearity {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tanh" => Ok(Self::Tanh),
            "relu" => Ok(Self::Relu),
            other => Err(format!("unknown nonlinearity `{other}` (tanh or relu)")),
        }
    }
}

/// The Elman cell, `h_t = ψ(W h_{t-1} + U x_t + b)`.
///
/// | lecture | tensor (PyTorch name) | shape |
/// |---|---|---|
/// | `U` (input → hidden) | `weight_ih_l{k}` | `(H, F)` |
/// | `W` (hidden → hidden) | `weight_hh_l{k}` | `(H, H)` |
/// | `b` | `bias_ih_l{k} + bias_hh_l{k}` | `(H)` each |
///
/// The same `U`, `W`, `b` are used at every time step: parameter sharing across time, as the
/// convolution shares its kernel across space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Elman {
    /// ψ: tanh (`rnn_tanh`, the default) or ReLU (`rnn_relu`).
    pub nonlinearity: Nonlinearity,
}

impl Cell for Elman {
    const GATES: usize = 1;
    const SAVED: usize = 1;

    fn name(&self) -> &'static str {
        match self.nonlinearity {
            Nonlinearity::Tanh => "rnn_tanh",
            Nonlinearity::Relu => "rnn_relu",
        }
    }

    /// `h_t = ψ(U x_t + b_ih + W h_{t-1} + b_hh)`.
    fn step(&self, gx: &Tensor, rec: &Tensor, _state: &[Tensor]) -> Result<Vec<Tensor>> {
        let pre = (gx + rec)?;
        let h = match self.nonlinearity {
            Nonlinearity::Tanh => pre.tanh()?,
            Nonlinearity::Relu => pre.relu()?,
        };
        Ok(vec![h])
    }

    #[inline(always)]
    fn forward_row<F: KernelFloat>(
        &self,
        hidden: usize,
        gx: &[F],
        rec: &[F],
        _prev: &[F],
        saved: &mut [F],
    ) {
        let (gx, rec, out) = (&gx[..hidden], &rec[..hidden], &mut saved[..hidden]);
        match self.nonlinearity {
            Nonlinearity::Tanh => {
                for j in 0..hidden {
                    out[j] = (gx[j] + rec[j]).tanh_act();
                }
            }
            Nonlinearity::Relu => {
                for j in 0..hidden {
                    out[j] = Float::max(gx[j] + rec[j], F::zero());
                }
            }
        }
    }

    /// `∂L/∂pre = ∂L/∂h_t ⊙ ψ'(pre)` with `tanh' = 1 − h_t²`, `relu' = [h_t > 0]`. Every path
    /// back to `h_{t-1}` goes through `W`: this product of `W^T diag(ψ')` over many steps is
    /// what vanishes (or explodes) in BPTT.
    #[inline(always)]
    fn backward_row<F: KernelFloat>(&self, hidden: usize, row: BackwardRow<'_, F>) {
        for j in 0..hidden {
            let h = row.saved[j];
            let d = match self.nonlinearity {
                Nonlinearity::Tanh => row.dstate[j] * (F::one() - h * h),
                Nonlinearity::Relu => {
                    if h > F::zero() {
                        row.dstate[j]
                    } else {
                        F::zero()
                    }
                }
            };
            row.dgx[j] = d;
            row.drec[j] = d;
            row.dprev[j] = F::zero();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_f32_activations_match_the_standard_library() {
        let mut worst = (0f32, 0f32, 0f32);
        for i in -8000..8000 {
            let x = i as f32 * 0.01;
            let rel = (exp_f32(x) - x.exp()).abs() / x.exp();
            worst.0 = worst.0.max(rel);
            worst.1 = worst
                .1
                .max((KernelFloat::sigmoid(x) - sigmoid(x as f64) as f32).abs());
            worst.2 = worst.2.max((x.tanh_act() - x.tanh()).abs());
        }
        assert!(worst.0 < 5e-7, "exp relative error {}", worst.0);
        assert!(
            worst.1 < 2e-7 && worst.2 < 5e-7,
            "sigmoid / tanh abs error {worst:?}"
        );
        assert!(exp_f32(-1000.0) > 0.0 && exp_f32(-1000.0) < 1e-37);
        assert!(exp_f32(1000.0).is_finite());
    }
}
