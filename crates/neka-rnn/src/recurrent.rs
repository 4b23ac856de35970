//! The sequence runner shared by every recurrent cell of the zoo: layers, directions,
//! variable lengths, initial states, dropout between layers — PyTorch's `nn.RNN` / `nn.LSTM` /
//! `nn.GRU` semantics and tensor names, for any [`Cell`].
//!
//! ```text
//! x (B, T, F) ──► layer 0 ─► dropout ─► layer 1 ─► … ─► output (B, T, D·H)
//!                 ├─ forward  t = 0 … T−1   (h_0 from h0[l·D])
//!                 └─ reverse  t = T−1 … 0   (h_0 from h0[l·D + 1])       h_n, C_n (L·D, B, H)
//! ```
//!
//! Per layer and direction the input projection `x_t U^T + b_ih` of all `T` steps is one
//! matmul; only `h_{t-1} W^T` runs per step. On CPU (f32/f64) the time loop is the fused
//! kernel of [`crate::kernels`]; elsewhere it is built from candle ops ([`Cell::step`]).

use crate::cell::Cell;
use crate::kernels::RecurrentOp;
use candle_core::{DType, Device, DeviceLocation, ModuleT, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};
use neka_common::nn::Dropout;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The shape of a recurrent network (PyTorch's constructor arguments).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecurrentConfig {
    /// `F`, features per time step.
    pub input_size: usize,
    /// `H`, hidden units per direction.
    pub hidden_size: usize,
    /// `L`, stacked layers; layer `k > 0` reads layer `k − 1`'s output.
    pub num_layers: usize,
    /// Use `bias_ih` / `bias_hh`.
    pub bias: bool,
    /// `D = 2`: a second pass reads the sequence backwards; outputs are concatenated.
    pub bidirectional: bool,
    /// Dropout on the outputs of every layer but the last, in training only.
    pub dropout: f32,
}

impl Default for RecurrentConfig {
    fn default() -> Self {
        Self {
            input_size: 28,
            hidden_size: 128,
            num_layers: 1,
            bias: true,
            bidirectional: false,
            dropout: 0.0,
        }
    }
}

impl RecurrentConfig {
    /// `F = input_size`, `H = hidden_size`; otherwise PyTorch's defaults: 1 layer, bias,
    /// unidirectional, no dropout.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        Self {
            input_size,
            hidden_size,
            ..Self::default()
        }
    }
    /// Sets `L`, the number of stacked layers.
    pub fn num_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }
    /// Adds the reverse direction (`D = 2`) when `on`.
    pub fn bidirectional(mut self, on: bool) -> Self {
        self.bidirectional = on;
        self
    }
    /// Whether the layers have `bias_ih` / `bias_hh`.
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }
    /// Dropout probability `p ∈ [0, 1)` between layers (training only).
    pub fn dropout(mut self, p: f32) -> Self {
        self.dropout = p;
        self
    }
    /// `D`: 1 or 2.
    pub fn directions(&self) -> usize {
        1 + usize::from(self.bidirectional)
    }
    /// Features of the output: `D · H`.
    pub fn output_size(&self) -> usize {
        self.directions() * self.hidden_size
    }
    /// Checks the shape: `input_size`, `hidden_size`, `num_layers` ≥ 1 and `dropout` in `[0, 1)`;
    /// a config error names the offending field.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |field: &str, msg: String| {
            crate::Error::config(format!("recurrent config `{field}`"), msg)
        };
        if self.input_size == 0 {
            return Err(bad("input_size", "must be at least 1".into()));
        }
        if self.hidden_size == 0 {
            return Err(bad("hidden_size", "must be at least 1".into()));
        }
        if self.num_layers == 0 {
            return Err(bad("num_layers", "must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(bad(
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        Ok(())
    }
}

/// Optional inputs of a forward pass, as in PyTorch's `rnn(x, h0)` with packed sequences.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqInput<'a> {
    /// True length of each sequence (`1..=T`, any order); steps past it are padding.
    pub lengths: Option<&'a [usize]>,
    /// Initial hidden state `(L·D, B, H)`; zeros if `None`.
    pub h0: Option<&'a Tensor>,
    /// Initial cell state `(L·D, B, H)` (LSTM only); zeros if `None`.
    pub c0: Option<&'a Tensor>,
}

/// What a recurrent network returns.
#[derive(Debug, Clone)]
pub struct RecurrentOutput {
    /// `(B, T, D·H)`: the last layer's `h_t` for every step (both directions concatenated,
    /// forward first); zero past each sequence's length.
    pub output: Tensor,
    /// `(L·D, B, H)`: the final hidden state of every layer and direction, taken at each
    /// sequence's true last step (for the reverse direction: at `t = 0`).
    pub h_n: Tensor,
    /// `(L·D, B, H)`: the final cell state (LSTM only).
    pub c_n: Option<Tensor>,
}

impl RecurrentOutput {
    /// `(B, D·H)`: the last layer's final hidden states, directions concatenated — the
    /// summary a many-to-one model classifies.
    pub fn last_hidden(&self, directions: usize) -> Result<Tensor> {
        let n = self.h_n.dim(0)?;
        let last = self.h_n.narrow(0, n - directions, directions)?; // (D, B, H)
        last.transpose(0, 1)?.flatten_from(1)
    }
}

/// A network of one cell type: anything that maps a batch of sequences to outputs and final
/// states. Implemented by [`Recurrent`] and by enums over several cells.
pub trait SequenceEncoder {
    /// `x (B, T, F)` → the last layer's outputs `(B, T, D·H)` and the final states
    /// `(L·D, B, H)`; `train` turns on dropout between layers.
    fn encode(&self, x: &Tensor, input: SeqInput, train: bool) -> Result<RecurrentOutput>;
    /// The network's shape (`F`, `H`, `L`, `D`).
    fn config(&self) -> &RecurrentConfig;
}

/// Weights of one direction of one layer, PyTorch names.
#[derive(Debug, Clone)]
struct DirectionWeights {
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Option<Tensor>,
    bias_hh: Option<Tensor>,
}

/// The one place that picks the recurrent layers' path: `true` for the fused CPU kernel
/// ([`neka_common::kernels::fused_applies`]: the CPU, f32/f64,
/// [`neka_common::kernels::KernelPath::Fused`] selected on this thread), `false` for the time
/// loop of candle ops (every CUDA / Metal input).
pub fn uses_fused_kernel(location: DeviceLocation, dtype: DType) -> bool {
    neka_common::kernels::fused_applies(location, dtype)
}

/// A multi-layer, optionally bidirectional recurrent network of cell `C`.
#[derive(Debug, Clone)]
pub struct Recurrent<C: Cell> {
    cell: C,
    cfg: RecurrentConfig,
    /// `layers[l][d]`.
    layers: Vec<Vec<DirectionWeights>>,
    dropout: Dropout,
}

impl<C: Cell> Recurrent<C> {
    /// Creates (or loads) the weights under `vb`: `weight_ih_l{k}[_reverse]` `(G, F_k)`,
    /// `weight_hh_l{k}[_reverse]` `(G, H)`, `bias_ih_l{k}[_reverse]`, `bias_hh_l{k}[_reverse]`
    /// `(G)`, with `G = gates·H`, all drawn from U(−1/√H, 1/√H) as in PyTorch.
    pub fn new(cell: C, cfg: RecurrentConfig, vb: VarBuilder) -> crate::Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden_size;
        let g = cell.gates() * h;
        let bound = 1.0 / (h as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let f = if l == 0 {
                cfg.input_size
            } else {
                cfg.output_size()
            };
            let mut dirs = Vec::with_capacity(cfg.directions());
            for d in 0..cfg.directions() {
                let sfx = if d == 0 { "" } else { "_reverse" };
                let weight_ih = vb.get_with_hints((g, f), &format!("weight_ih_l{l}{sfx}"), init)?;
                let weight_hh = vb.get_with_hints((g, h), &format!("weight_hh_l{l}{sfx}"), init)?;
                let (bias_ih, bias_hh) = if cfg.bias {
                    (
                        Some(vb.get_with_hints(g, &format!("bias_ih_l{l}{sfx}"), init)?),
                        Some(vb.get_with_hints(g, &format!("bias_hh_l{l}{sfx}"), init)?),
                    )
                } else {
                    (None, None)
                };
                dirs.push(DirectionWeights {
                    weight_ih,
                    weight_hh,
                    bias_ih,
                    bias_hh,
                });
            }
            layers.push(dirs);
        }
        Ok(Self {
            cell,
            cfg,
            layers,
            dropout: Dropout::new(cfg.dropout)?,
        })
    }

    /// The cell every layer and direction runs.
    pub fn cell(&self) -> &C {
        &self.cell
    }

    /// Runs the network. `x: (B, T, F)`.
    pub fn forward_seq(&self, x: &Tensor, input: SeqInput, train: bool) -> Result<RecurrentOutput> {
        let (b, t, f) = x.dims3()?;
        let cfg = &self.cfg;
        if f != cfg.input_size {
            candle_core::bail!(
                "{}: input has {f} features per step, the network expects input_size = {}",
                self.cell.name(),
                cfg.input_size
            )
        }
        if t == 0 {
            candle_core::bail!("{}: the input has no time steps", self.cell.name())
        }
        let lengths = match input.lengths {
            Some(l) => {
                if l.len() != b || l.iter().any(|&n| n == 0 || n > t) {
                    candle_core::bail!(
                        "{}: lengths must hold one value in 1..={t} per sequence ({b}), got {l:?}",
                        self.cell.name()
                    )
                }
                if l.iter().all(|&n| n == t) {
                    None
                } else {
                    Some(Arc::new(l.to_vec()))
                }
            }
            None => None,
        };
        let ld = cfg.num_layers * cfg.directions();
        let h = cfg.hidden_size;
        let check_state = |s: Option<&Tensor>, name: &str| -> Result<()> {
            if let Some(s) = s {
                if s.dims() != [ld, b, h] {
                    candle_core::bail!(
                        "{}: {name} must have shape (L·D, B, H) = ({ld}, {b}, {h}), got {:?}",
                        self.cell.name(),
                        s.dims()
                    )
                }
            }
            Ok(())
        };
        check_state(input.h0, "h0")?;
        check_state(input.c0, "c0")?;
        if input.c0.is_some() && self.cell.states() < 2 {
            candle_core::bail!("{}: c0 is only for the LSTM", self.cell.name())
        }
        if uses_fused_kernel(x.device().location(), x.dtype()) {
            return self.forward_fused(x, input, lengths, train);
        }
        let masks = match &lengths {
            Some(l) => Some(step_masks(l, t, x.dtype(), x.device())?),
            None => None,
        };

        // Time-major inside: (T, B, F).
        let mut layer_in = x.transpose(0, 1)?.contiguous()?;
        let mut h_n = Vec::with_capacity(ld);
        let mut c_n = Vec::with_capacity(ld);
        for (l, dirs) in self.layers.iter().enumerate() {
            if l > 0 {
                // Dropout drawn batch-major, as the fused path draws it (same seed, same mask).
                let bm = layer_in.transpose(0, 1)?.contiguous()?;
                layer_in = self
                    .dropout
                    .forward_t(&bm, train)?
                    .transpose(0, 1)?
                    .contiguous()?;
            }
            let fl = layer_in.dim(2)?;
            let flat = layer_in.reshape((t * b, fl))?;
            let mut outs = Vec::with_capacity(dirs.len());
            for (d, wts) in dirs.iter().enumerate() {
                let k = l * cfg.directions() + d;
                let mut init = vec![match input.h0 {
                    Some(h0) => h0.get(k)?,
                    None => Tensor::zeros((b, h), x.dtype(), x.device())?,
                }];
                if self.cell.states() == 2 {
                    init.push(match input.c0 {
                        Some(c0) => c0.get(k)?,
                        None => Tensor::zeros((b, h), x.dtype(), x.device())?,
                    });
                }
                // gx = x U^T + b_ih for all steps: (T, B, G).
                let mut gx = flat.matmul(&wts.weight_ih.t()?)?;
                if let Some(bias) = &wts.bias_ih {
                    gx = gx.broadcast_add(bias)?;
                }
                let gx = gx.reshape((t, b, ()))?;
                let (out, states) = self.run_steps(&gx, wts, init, d == 1, masks.as_deref())?;
                outs.push(out);
                h_n.push(states[0].clone());
                if let Some(c) = states.get(1) {
                    c_n.push(c.clone());
                }
            }
            layer_in = if outs.len() == 1 {
                outs.pop().expect("one direction")
            } else {
                Tensor::cat(&outs, D::Minus1)?
            };
        }
        Ok(RecurrentOutput {
            // Contiguous (B, T, D·H): layers on top (Linear) then take the fast 2-D matmul path.
            output: layer_in.transpose(0, 1)?.contiguous()?,
            h_n: Tensor::stack(&h_n, 0)?,
            c_n: if c_n.is_empty() {
                None
            } else {
                Some(Tensor::stack(&c_n, 0)?)
            },
        })
    }

    /// The fused CPU path, batch-major throughout. Per layer: the input projections of both
    /// directions as one dense layer, `gx = x [U_→ ; U_←]^T + [b_ih,→ ; b_ih,←]` `(B, T, D·G)`
    /// ([`neka_common::nn::linear_forward`]), then one [`RecurrentOp`] for the time loops of
    /// both directions, whose output is the layer's `(B, T, D·H)` as it is.
    fn forward_fused(
        &self,
        x: &Tensor,
        input: SeqInput,
        lengths: Option<Arc<Vec<usize>>>,
        train: bool,
    ) -> Result<RecurrentOutput> {
        let (b, t, _) = x.dims3()?;
        let cfg = &self.cfg;
        let (h, nd, states) = (cfg.hidden_size, cfg.directions(), self.cell.states());
        let cat = |ts: Vec<Tensor>, dim: usize| -> Result<Tensor> {
            if ts.len() == 1 {
                Ok(ts[0].clone())
            } else {
                Tensor::cat(&ts, dim)
            }
        };
        let mut layer_in = x.contiguous()?;
        let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
        for (l, dirs) in self.layers.iter().enumerate() {
            if l > 0 {
                layer_in = self.dropout.forward_t(&layer_in, train)?;
            }
            let fl = layer_in.dim(2)?;
            let w_ih = cat(dirs.iter().map(|w| w.weight_ih.clone()).collect(), 0)?;
            let b_ih = dirs
                .iter()
                .map(|w| w.bias_ih.clone())
                .collect::<Option<Vec<_>>>()
                .map(|bs| cat(bs, 0))
                .transpose()?;
            let gx = neka_common::nn::linear_forward(
                &candle_nn::Linear::new(w_ih, b_ih),
                &layer_in.reshape((b * t, fl))?,
                false,
            )?
            .reshape((b, t, nd * self.cell.gates() * h))?;
            // (D, G, H): W of each direction (one direction: the parameter itself, no copy).
            let w = match &dirs[..] {
                [one] => one.weight_hh.unsqueeze(0)?,
                _ => Tensor::stack(&dirs.iter().map(|w| &w.weight_hh).collect::<Vec<_>>(), 0)?,
            };
            // [h_0 | C_0] (D, B, S0) of this layer's directions, then b_hh of each, flat.
            let aux = {
                let part = |s: Option<&Tensor>| match s {
                    Some(s) => s.narrow(0, l * nd, nd),
                    None => Tensor::zeros((nd, b, h), x.dtype(), x.device()),
                };
                let mut parts = vec![part(input.h0)?];
                if states == 2 {
                    parts.push(part(input.c0)?);
                }
                let mut flat = vec![cat(parts, 2)?.flatten_all()?];
                flat.extend(dirs.iter().filter_map(|w| w.bias_hh.clone()));
                cat(flat, 0)?
            };
            // Training keeps the reserve for BPTT; inference holds one step (a backward pass
            // after an inference forward still works: the op recomputes the reserve).
            let op = RecurrentOp::new(self.cell, h, dirs[0].bias_hh.is_some(), lengths.clone())
                .keep_reserve(train);
            let out = gx.apply_op3(
                &w.contiguous()?,
                &aux.contiguous()?,
                neka_common::kernels::Fused(op),
            )?;
            let n_out = b * t * nd * h;
            layer_in = out.narrow(0, 0, n_out)?.reshape((b, t, nd * h))?;
            let last = out
                .narrow(0, n_out, nd * states * b * h)?
                .reshape((nd, states, b, h))?;
            for d in 0..nd {
                h_n.push(last.get(d)?.get(0)?);
                if states == 2 {
                    c_n.push(last.get(d)?.get(1)?);
                }
            }
        }
        Ok(RecurrentOutput {
            output: layer_in,
            h_n: Tensor::stack(&h_n, 0)?,
            c_n: if c_n.is_empty() {
                None
            } else {
                Some(Tensor::stack(&c_n, 0)?)
            },
        })
    }

    /// One direction from candle ops, step by step (any device).
    fn run_steps(
        &self,
        gx: &Tensor,
        w: &DirectionWeights,
        mut state: Vec<Tensor>,
        reverse: bool,
        masks: Option<&[Tensor]>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let t = gx.dim(0)?;
        let w_t = w.weight_hh.t()?;
        let mut outs: Vec<Option<Tensor>> = vec![None; t];
        let order: Vec<usize> = if reverse {
            (0..t).rev().collect()
        } else {
            (0..t).collect()
        };
        for s in order {
            // rec_t = h_{t-1} W^T + b_hh
            let mut rec = state[0].matmul(&w_t)?;
            if let Some(b) = &w.bias_hh {
                rec = rec.broadcast_add(b)?;
            }
            let new = self.cell.step(&gx.get(s)?, &rec, &state)?;
            match masks {
                // Rows past their length keep their state and output zeros.
                Some(m) => {
                    let m = &m[s];
                    outs[s] = Some(new[0].broadcast_mul(m)?);
                    state = state
                        .iter()
                        .zip(&new)
                        .map(|(old, new)| old + (new - old)?.broadcast_mul(m)?)
                        .collect::<Result<_>>()?;
                }
                None => {
                    outs[s] = Some(new[0].clone());
                    state = new;
                }
            }
        }
        let outs: Vec<Tensor> = outs
            .into_iter()
            .map(|o| o.expect("every step ran"))
            .collect();
        Ok((Tensor::stack(&outs, 0)?, state))
    }
}

/// `masks[t] (B, 1)`: 1 where `t < len_b`.
fn step_masks(lengths: &[usize], t: usize, dtype: DType, dev: &Device) -> Result<Vec<Tensor>> {
    (0..t)
        .map(|s| {
            let m: Vec<f32> = lengths
                .iter()
                .map(|&n| f32::from(u8::from(s < n)))
                .collect();
            Tensor::from_vec(m, (lengths.len(), 1), dev)?.to_dtype(dtype)
        })
        .collect()
}

impl<C: Cell> Recurrent<C> {
    /// The network's shape, as it was built.
    pub fn config(&self) -> &RecurrentConfig {
        &self.cfg
    }
}

impl<C: Cell> SequenceEncoder for Recurrent<C> {
    fn encode(&self, x: &Tensor, input: SeqInput, train: bool) -> Result<RecurrentOutput> {
        self.forward_seq(x, input, train)
    }
    fn config(&self) -> &RecurrentConfig {
        &self.cfg
    }
}

impl<C: Cell> ModuleT for Recurrent<C> {
    /// `(B, T, F) → (B, T, D·H)`, zero initial state.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward_seq(x, SeqInput::default(), train)?.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_inputs_never_take_the_fused_cpu_kernel() {
        for loc in [
            DeviceLocation::Cuda { gpu_id: 0 },
            DeviceLocation::Metal { gpu_id: 0 },
        ] {
            assert!(!uses_fused_kernel(loc, DType::F32));
            assert!(!uses_fused_kernel(loc, DType::F64));
        }
        assert!(!uses_fused_kernel(DeviceLocation::Cpu, DType::BF16));
        assert!(uses_fused_kernel(DeviceLocation::Cpu, DType::F32));
        let _path = neka_common::kernels::use_path(neka_common::kernels::KernelPath::CandleOps);
        assert!(!uses_fused_kernel(DeviceLocation::Cpu, DType::F32));
    }
}
