//! An LSTM's gates at work: the forget / input / output gate values and the cell state of a
//! trained LSTM over a real sentence (`pos_tagger gates`).
//!
//! The step is the lecture's, written out with candle ops one time step at a time so every
//! gate can be read (the runner's fused kernel keeps them internal):
//!
//! ```text
//! [i | f | g | o] = W x_t + b_ih + V h_{t-1} + b_hh      (PyTorch's gate order)
//! i_t = σ(·), f_t = σ(·), C~_t = tanh(g), o_t = σ(·)
//! C_t = f_t ⊙ C_{t-1} + i_t ⊙ C~_t,   h_t = o_t ⊙ tanh(C_t)
//! ```
//!
//! A forget gate near 1 keeps the cell state (the conveyor belt); near 0 it wipes it.

use candle_core::{DType, Result, Tensor, D};
#[cfg(feature = "plot")]
use neka_common::metrics::plot_heatmap;
#[cfg(feature = "plot")]
use neka_common::plot::{plot_lines_with, Legend, Series};
#[cfg(feature = "plot")]
use std::path::Path;

/// One sentence through one LSTM direction: every gate and state, `T × H` each.
#[derive(Debug, Clone, PartialEq)]
pub struct LstmTrace {
    /// Input gate `i_t`, `[t][unit]`.
    pub input: Vec<Vec<f32>>,
    /// Forget gate `f_t`, `[t][unit]`.
    pub forget: Vec<Vec<f32>>,
    /// Candidate cell state `C~_t = tanh(g)`, `[t][unit]`.
    pub candidate: Vec<Vec<f32>>,
    /// Output gate `o_t`, `[t][unit]`.
    pub output: Vec<Vec<f32>>,
    /// Cell state `C_t`, `[t][unit]`.
    pub cell: Vec<Vec<f32>>,
    /// Hidden state `h_t = o_t ⊙ tanh(C_t)`, `[t][unit]`.
    pub hidden: Vec<Vec<f32>>,
}

/// Runs `x (T, F)` through an LSTM layer with weights as PyTorch stores them
/// (`w_ih (4H, F)`, `w_hh (4H, H)`, biases `(4H)`), from `h_0 = C_0 = 0`, keeping every gate.
pub fn trace_lstm(
    x: &Tensor,
    w_ih: &Tensor,
    w_hh: &Tensor,
    b_ih: Option<&Tensor>,
    b_hh: Option<&Tensor>,
) -> Result<LstmTrace> {
    let (t, _) = x.dims2()?;
    let h4 = w_ih.dim(0)?;
    let hs = h4 / 4;
    let f32s =
        |v: &Tensor| -> Result<Vec<f32>> { v.to_dtype(DType::F32)?.flatten_all()?.to_vec1() };
    let mut gx = x.matmul(&w_ih.t()?)?; // (T, 4H): all input projections at once
    if let Some(b) = b_ih {
        gx = gx.broadcast_add(b)?;
    }
    let mut h = Tensor::zeros((1, hs), x.dtype(), x.device())?;
    let mut c = h.clone();
    let mut tr = LstmTrace {
        input: vec![],
        forget: vec![],
        candidate: vec![],
        output: vec![],
        cell: vec![],
        hidden: vec![],
    };
    for step in 0..t {
        let mut pre = (gx.narrow(0, step, 1)? + h.matmul(&w_hh.t()?)?)?;
        if let Some(b) = b_hh {
            pre = pre.broadcast_add(b)?;
        }
        let g = pre.chunk(4, D::Minus1)?;
        let (i, f) = (
            candle_nn::ops::sigmoid(&g[0])?,
            candle_nn::ops::sigmoid(&g[1])?,
        );
        let (cand, o) = (g[2].tanh()?, candle_nn::ops::sigmoid(&g[3])?);
        c = ((&f * &c)? + (&i * &cand)?)?;
        h = (&o * c.tanh()?)?;
        tr.input.push(f32s(&i)?);
        tr.forget.push(f32s(&f)?);
        tr.candidate.push(f32s(&cand)?);
        tr.output.push(f32s(&o)?);
        tr.cell.push(f32s(&c)?);
        tr.hidden.push(f32s(&h)?);
    }
    Ok(tr)
}

impl LstmTrace {
    /// The `k` units whose forget gate varies most over the sentence (the interesting ones).
    pub fn busiest_units(&self, k: usize) -> Vec<usize> {
        let h = self.forget.first().map_or(0, Vec::len);
        let var = |u: usize| {
            let v: Vec<f32> = self.forget.iter().map(|r| r[u]).collect();
            let m = v.iter().sum::<f32>() / v.len().max(1) as f32;
            v.iter().map(|x| (x - m) * (x - m)).sum::<f32>()
        };
        let mut units: Vec<usize> = (0..h).collect();
        units.sort_by(|&a, &b| var(b).total_cmp(&var(a)));
        units.truncate(k);
        units
    }

    /// Draws `dir/lstm_gates.png`: per token, the forget, input and output gates averaged over
    /// the units, then the same three for each of `units` (cells show the value); and
    /// `dir/lstm_cell_state.png`: `C_t` and `h_t` of those units over the sentence. `tokens`
    /// labels the steps (one per step); a unit past the layer's size is an error (feature `plot`).
    #[cfg(feature = "plot")]
    pub fn plot(
        &self,
        tokens: &[String],
        units: &[usize],
        dir: &Path,
        title: &str,
    ) -> neka_common::Result<()> {
        let h = self.forget.first().map_or(1, Vec::len).max(1);
        let bad = |msg: String| {
            Err(neka_common::Error::Plot {
                path: dir.join("lstm_gates.png"),
                msg,
            })
        };
        if tokens.len() != self.forget.len() {
            return bad(format!(
                "{} token labels for {} steps",
                tokens.len(),
                self.forget.len()
            ));
        }
        if let Some(u) = units.iter().find(|&&u| u >= h) {
            return bad(format!("unit {u}: the layer has {h} units"));
        }
        let mean = |g: &[Vec<f32>]| g.iter().map(|r| r.iter().sum::<f32>() / h as f32).collect();
        let unit = |g: &[Vec<f32>], u: usize| g.iter().map(|r| r[u]).collect::<Vec<f32>>();
        let gates = [
            ("forget f", &self.forget),
            ("input i", &self.input),
            ("output o", &self.output),
        ];
        let (mut labels, mut rows) = (vec![], vec![]);
        for (name, g) in gates {
            labels.push(format!("{name} (mean of {h})"));
            rows.push(mean(g));
        }
        for &u in units {
            for (name, g) in gates {
                labels.push(format!("{name}, unit {u}"));
                rows.push(unit(g, u));
            }
        }
        let text: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|v| format!("{v:.2}")).collect())
            .collect();
        plot_heatmap(
            &dir.join("lstm_gates.png"),
            title,
            "0 = closed, 1 = open. forget f keeps C_{t-1}, input i writes C~_t, output o shows tanh(C_t)",
            &labels,
            tokens,
            &rows,
            Some(&text),
        )?;
        let points = |v: Vec<f32>| {
            v.iter()
                .enumerate()
                .map(|(t, &y)| (t as f64, y as f64))
                .collect()
        };
        let names: Vec<(String, String)> = units
            .iter()
            .map(|u| (format!("C, unit {u}"), format!("h, unit {u}")))
            .collect();
        let mut cs = vec![];
        let mut hs = vec![];
        for (&u, (cn, hn)) in units.iter().zip(&names) {
            cs.push(Series {
                label: cn,
                points: points(unit(&self.cell, u)),
            });
            hs.push(Series {
                label: hn,
                points: points(unit(&self.hidden, u)),
            });
        }
        plot_lines_with(
            &dir.join("lstm_cell_state.png"),
            "token index t (the sentence of lstm_gates.png)",
            &[
                ("cell state C_t = f ⊙ C_{t-1} + i ⊙ C~_t", "C_t", cs),
                ("hidden state h_t = o ⊙ tanh(C_t)", "h_t", hs),
            ],
            Legend::LowerRight,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Lstm, RecurrentConfig, SeqInput, SequenceEncoder};
    use candle_core::Device;

    /// The step-by-step trace is the runner's LSTM (fused kernel) to 1e-5, and its gates obey
    /// `C_t = f ⊙ C_{t-1} + i ⊙ C~_t`, `h_t = o ⊙ tanh(C_t)`.
    #[test]
    fn trace_equals_the_runner_and_the_equations() -> Result<()> {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &dev);
        let lstm = Lstm::new(RecurrentConfig::new(5, 4), vb.clone()).unwrap();
        let x = Tensor::from_vec(
            (0..35).map(|v| (v as f32 * 0.7).sin()).collect(),
            (1, 7, 5),
            &dev,
        )?;
        let want: Vec<Vec<f32>> = lstm
            .encode(&x, SeqInput::default(), false)?
            .output
            .squeeze(0)?
            .to_vec2()?;
        let p = |n: &str| vm.data().lock().unwrap()[n].as_tensor().clone();
        let tr = trace_lstm(
            &x.squeeze(0)?,
            &p("weight_ih_l0"),
            &p("weight_hh_l0"),
            Some(&p("bias_ih_l0")),
            Some(&p("bias_hh_l0")),
        )?;
        for (t, want) in want.iter().enumerate() {
            for (u, &want) in want.iter().enumerate() {
                assert!((tr.hidden[t][u] - want).abs() < 1e-5, "h[{t}][{u}]");
                let prev = if t == 0 { 0.0 } else { tr.cell[t - 1][u] };
                let c = tr.forget[t][u] * prev + tr.input[t][u] * tr.candidate[t][u];
                assert!((tr.cell[t][u] - c).abs() < 1e-6);
                assert!((tr.hidden[t][u] - tr.output[t][u] * c.tanh()).abs() < 1e-6);
            }
        }
        let units = tr.busiest_units(2);
        assert_eq!(units.len(), 2);
        #[cfg(feature = "plot")]
        {
            let dir = tempfile::tempdir().unwrap();
            let tokens: Vec<String> = (0..7).map(|t| format!("w{t}")).collect();
            tr.plot(&tokens, &units, dir.path(), "test").unwrap();
            assert!(
                dir.path().join("lstm_gates.png").exists()
                    && dir.path().join("lstm_cell_state.png").exists()
            );
        }
        Ok(())
    }
}
