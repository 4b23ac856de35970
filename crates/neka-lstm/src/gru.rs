//! The GRU (`torch.nn.GRU`, batch-first), PyTorch's formulation:
//!
//! ```text
//! r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)          reset gate
//! z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)          update gate
//! n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))   candidate
//! h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}
//! ```
//!
//! Gate order in `weight_ih_l{k}` / `weight_hh_l{k}` `(3H, ·)`: **r, z, n**. Note `b_hn` sits
//! inside the reset gate's product, so the GRU cannot fold `bias_hh` into the input bias.
//! (candle-nn's GRU returns its sequence output in the wrong shape, candle issue #1723; this
//! one is tested against PyTorch.)

use candle_core::{Result, Tensor};
use neka_rnn::cell::{BackwardRow, Cell, KernelFloat};

/// The GRU cell. State: `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GruCell;

impl Cell for GruCell {
    const GATES: usize = 3;
    /// `[h, r, z, n, W_hn h_{t-1} + b_hn]`.
    const SAVED: usize = 5;

    fn name(&self) -> &'static str {
        "gru"
    }

    fn step(&self, gx: &Tensor, rec: &Tensor, state: &[Tensor]) -> Result<Vec<Tensor>> {
        let x = gx.chunk(3, 1)?;
        let hh = rec.chunk(3, 1)?;
        let r = candle_nn::ops::sigmoid(&(&x[0] + &hh[0])?)?;
        let z = candle_nn::ops::sigmoid(&(&x[1] + &hh[1])?)?;
        let n = (&x[2] + (r * &hh[2])?)?.tanh()?;
        // h_t = (1 − z) ⊙ n + z ⊙ h_{t-1} = n + z ⊙ (h_{t-1} − n)
        let h = (&n + (z * (&state[0] - &n)?)?)?;
        Ok(vec![h])
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
        for j in 0..n {
            let r = (gx[j] + rec[j]).sigmoid();
            let z = (gx[n + j] + rec[n + j]).sigmoid();
            let hn = rec[2 * n + j];
            let cand = (gx[2 * n + j] + r * hn).tanh_act();
            saved[j] = (F::one() - z) * cand + z * prev[j];
            saved[n + j] = r;
            saved[2 * n + j] = z;
            saved[3 * n + j] = cand;
            saved[4 * n + j] = hn;
        }
    }

    #[inline(always)]
    fn backward_row<F: KernelFloat>(&self, n: usize, row: BackwardRow<'_, F>) {
        let BackwardRow {
            saved,
            prev,
            dstate,
            dgx,
            drec,
            dprev,
        } = row;
        let one = F::one();
        for j in 0..n {
            let (r, z, cand, hn) = (
                saved[n + j],
                saved[2 * n + j],
                saved[3 * n + j],
                saved[4 * n + j],
            );
            let dh = dstate[j];
            let d_n = dh * (one - z) * (one - cand * cand);
            let d_z = dh * (prev[j] - cand) * z * (one - z);
            let d_r = d_n * hn * r * (one - r);
            dgx[j] = d_r;
            dgx[n + j] = d_z;
            dgx[2 * n + j] = d_n;
            drec[j] = d_r;
            drec[n + j] = d_z;
            drec[2 * n + j] = d_n * r;
            dprev[j] = dh * z;
        }
    }
}
