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
use neka_rnn::cell::{BackwardRow, Cell, KernelFloat};

/// The LSTM cell. State: `(h, C)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LstmCell;

impl Cell for LstmCell {
    const GATES: usize = 4;
    const STATES: usize = 2;
    /// `[h, C, i, f, C~, o]`.
    const SAVED: usize = 6;

    fn name(&self) -> &'static str {
        "lstm"
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

    #[inline(always)]
    fn forward_row<F: KernelFloat>(
        &self,
        n: usize,
        gx: &[F],
        rec: &[F],
        prev: &[F],
        saved: &mut [F],
    ) {
        // Equal-length slices, so the loop has no bounds checks and vectorises.
        let (xi, xf, xg, xo) = (
            &gx[..n],
            &gx[n..2 * n],
            &gx[2 * n..3 * n],
            &gx[3 * n..4 * n],
        );
        let (ri, rf, rg, ro) = (
            &rec[..n],
            &rec[n..2 * n],
            &rec[2 * n..3 * n],
            &rec[3 * n..4 * n],
        );
        let c_prev = &prev[n..2 * n];
        let (sh, rest) = saved[..6 * n].split_at_mut(n);
        let (sc, rest) = rest.split_at_mut(n);
        let (si, rest) = rest.split_at_mut(n);
        let (sf, rest) = rest.split_at_mut(n);
        let (sg, so) = rest.split_at_mut(n);
        for j in 0..n {
            let i = (xi[j] + ri[j]).sigmoid();
            let f = (xf[j] + rf[j]).sigmoid();
            let g = (xg[j] + rg[j]).tanh_act();
            let o = (xo[j] + ro[j]).sigmoid();
            let c = f * c_prev[j] + i * g;
            sh[j] = o * c.tanh_act();
            sc[j] = c;
            si[j] = i;
            sf[j] = f;
            sg[j] = g;
            so[j] = o;
        }
    }

    /// With `dh = ∂L/∂h_t`, `dC = ∂L/∂C_t` (from step t+1) + `dh ⊙ o ⊙ (1 − tanh²C_t)`:
    /// `do = dh ⊙ tanh C_t`, `di = dC ⊙ C~`, `dC~ = dC ⊙ i`, `df = dC ⊙ C_{t-1}`,
    /// `dC_{t-1} = dC ⊙ f`, then through the sigmoid / tanh derivatives.
    #[inline(always)]
    fn backward_row<F: KernelFloat>(&self, n: usize, row: BackwardRow<'_, F>) {
        let (one, saved) = (F::one(), row.saved);
        let (sc, si, sf, sg, so) = (
            &saved[n..2 * n],
            &saved[2 * n..3 * n],
            &saved[3 * n..4 * n],
            &saved[4 * n..5 * n],
            &saved[5 * n..6 * n],
        );
        let (dh, dc_next) = (&row.dstate[..n], &row.dstate[n..2 * n]);
        let c_prev = &row.prev[n..2 * n];
        let (di, rest) = row.dgx[..4 * n].split_at_mut(n);
        let (df, rest) = rest.split_at_mut(n);
        let (dg, d_o) = rest.split_at_mut(n);
        let (dprev_h, dprev_c) = row.dprev[..2 * n].split_at_mut(n);
        for j in 0..n {
            let (c, i, f, g, o) = (sc[j], si[j], sf[j], sg[j], so[j]);
            let tc = c.tanh_act();
            let dc = dc_next[j] + dh[j] * o * (one - tc * tc);
            di[j] = dc * g * i * (one - i);
            df[j] = dc * c_prev[j] * f * (one - f);
            dg[j] = dc * i * (one - g * g);
            d_o[j] = dh[j] * tc * o * (one - o);
            dprev_h[j] = F::zero();
            dprev_c[j] = dc * f;
        }
        row.drec[..4 * n].copy_from_slice(&row.dgx[..4 * n]);
    }
}
