//! The LSTM of the lecture (`torch.nn.LSTM`, batch-first).
//!
//! ```text
//! f_t  = σ(W_f x_t + V_f h_{t-1} + b_f)        forget gate: how much of C_{t-1} to keep
//! i_t  = σ(W_i x_t + V_i h_{t-1} + b_i)        input gate: how much of the candidate to write
//! C~_t = tanh(W_C x_t + V_C h_{t-1} + b_C)     candidate cell state
//! o_t  = σ(W_o x_t + V_o h_{t-1} + b_o)        output gate: how much of the cell to show
//! C_t  = f_t ⊙ C_{t-1} + i_t ⊙ C~_t
//! h_t  = o_t ⊙ tanh(C_t)
//! ```
//!
//! Stored as PyTorch stores it: the four input matrices stacked in gate order **i, f, g, o**
//! (g = the candidate C~) as `weight_ih_l{k}` `(4H, F)`, the recurrent ones (the lecture's
//! `V_·`) as `weight_hh_l{k}` `(4H, H)`, and biases `bias_ih_l{k}`, `bias_hh_l{k}` `(4H)`
//! whose sum is the lecture's `b_·`.
//!
//! Why it helps with vanishing gradients: `∂C_t/∂C_{t-1} = f_t` — an elementwise gate, not a
//! matrix product — so when the forget gate stays near 1 the error flows back through the
//! cell state almost unchanged (the "constant error carousel").

use candle_core::{Result, Tensor};
use neka_rnn::cell::{sigmoid, Cell};
use num_traits::Float;

/// The LSTM cell. State: `(h, C)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LstmCell;

impl Cell for LstmCell {
    fn name(&self) -> &'static str {
        "lstm"
    }
    fn gates(&self) -> usize {
        4
    }
    fn states(&self) -> usize {
        2
    }
    /// `[h, C, i, f, C~, o]`.
    fn saved(&self) -> usize {
        6
    }

    fn step(&self, gx: &Tensor, rec: &Tensor, state: &[Tensor]) -> Result<Vec<Tensor>> {
        let pre = (gx + rec)?; // (B, 4H): [i | f | g | o] pre-activations
        let gates = pre.chunk(4, 1)?;
        let i = candle_nn::ops::sigmoid(&gates[0])?;
        let f = candle_nn::ops::sigmoid(&gates[1])?;
        let c_tilde = gates[2].tanh()?;
        let o = candle_nn::ops::sigmoid(&gates[3])?;
        let c = ((f * &state[1])? + (i * c_tilde)?)?; // C_t = f ⊙ C_{t-1} + i ⊙ C~_t
        let h = (o * c.tanh()?)?; // h_t = o ⊙ tanh(C_t)
        Ok(vec![h, c])
    }

    fn forward_row<F: Float>(&self, n: usize, gx: &[F], rec: &[F], prev: &[F], saved: &mut [F]) {
        for j in 0..n {
            let i = sigmoid(gx[j] + rec[j]);
            let f = sigmoid(gx[n + j] + rec[n + j]);
            let g = (gx[2 * n + j] + rec[2 * n + j]).tanh();
            let o = sigmoid(gx[3 * n + j] + rec[3 * n + j]);
            let c = f * prev[n + j] + i * g;
            saved[j] = o * c.tanh();
            saved[n + j] = c;
            saved[2 * n + j] = i;
            saved[3 * n + j] = f;
            saved[4 * n + j] = g;
            saved[5 * n + j] = o;
        }
    }

    /// With `dh = ∂L/∂h_t`, `dC = ∂L/∂C_t` (from step t+1) + `dh ⊙ o ⊙ (1 − tanh²C_t)`:
    /// `do = dh ⊙ tanh C_t`, `di = dC ⊙ C~`, `dC~ = dC ⊙ i`, `df = dC ⊙ C_{t-1}`,
    /// `dC_{t-1} = dC ⊙ f`, then through the sigmoid / tanh derivatives.
    fn backward_row<F: Float>(
        &self,
        n: usize,
        saved: &[F],
        prev: &[F],
        dstate: &[F],
        dgx: &mut [F],
        drec: &mut [F],
        dprev: &mut [F],
    ) {
        let one = F::one();
        for j in 0..n {
            let (c, i, f, g, o) = (
                saved[n + j],
                saved[2 * n + j],
                saved[3 * n + j],
                saved[4 * n + j],
                saved[5 * n + j],
            );
            let tc = c.tanh();
            let dh = dstate[j];
            let dc = dstate[n + j] + dh * o * (one - tc * tc);
            let d_i = dc * g * i * (one - i);
            let d_f = dc * prev[n + j] * f * (one - f);
            let d_g = dc * i * (one - g * g);
            let d_o = dh * tc * o * (one - o);
            for (k, v) in [d_i, d_f, d_g, d_o].into_iter().enumerate() {
                dgx[k * n + j] = v;
                drec[k * n + j] = v;
            }
            dprev[j] = F::zero();
            dprev[n + j] = dc * f;
        }
    }
}
