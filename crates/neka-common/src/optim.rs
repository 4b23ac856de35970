//! Optimizers with checkpointable state: AdamW, SGD with momentum, Adadelta.
//!
//! The update rules are PyTorch's (`torch.optim.AdamW`, `SGD`, `Adadelta`), so learning
//! rates carry over. Why not `candle_nn::AdamW`? Its moment estimates are private, so a run
//! could not be resumed bit-exactly; candle has no SGD momentum or Adadelta at all. These
//! work on any device (plain tensor ops) and expose their state as named tensors.

use crate::kernels::adamw;
use crate::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which optimizer, with its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// Adam with decoupled weight decay:
    /// `θ ← θ − lr·λ·θ`, `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
    /// `θ ← θ − lr · m̂ / (√v̂ + ε)` with bias-corrected `m̂, v̂`.
    AdamW {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// SGD with (optionally Nesterov) momentum, PyTorch style:
    /// `g ← g + λθ`, `b ← μb + g`, `θ ← θ − lr·b` (Nesterov: `θ ← θ − lr(g + μb)`).
    Sgd {
        lr: f64,
        momentum: f64,
        weight_decay: f64,
        nesterov: bool,
    },
    /// Adadelta (Zeiler 2012), as in pytorch/examples' MNIST:
    /// `v ← ρv + (1−ρ)g²`, `Δ = √(u+ε)/√(v+ε) · g`, `u ← ρu + (1−ρ)Δ²`, `θ ← θ − lr·Δ`.
    Adadelta {
        lr: f64,
        rho: f64,
        eps: f64,
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// The L2 penalty `λ` that SGD and Adadelta fold into the gradient (`g ← g + λθ`, PyTorch's
    /// `weight_decay`); 0 for AdamW, whose decay `θ ← θ − lr·λ·θ` is decoupled from `g`.
    pub fn coupled_weight_decay(&self) -> f64 {
        match *self {
            Self::AdamW { .. } => 0.0,
            Self::Sgd { weight_decay, .. } | Self::Adadelta { weight_decay, .. } => weight_decay,
        }
    }

    /// AdamW with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8, λ = 0.01).
    pub fn adamw(lr: f64) -> Self {
        Self::AdamW {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }

    /// SGD with momentum 0.9, no weight decay.
    pub fn sgd(lr: f64) -> Self {
        Self::Sgd {
            lr,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        }
    }

    /// Adadelta with PyTorch's defaults (ρ = 0.9, ε = 1e-6).
    pub fn adadelta(lr: f64) -> Self {
        Self::Adadelta {
            lr,
            rho: 0.9,
            eps: 1e-6,
            weight_decay: 0.0,
        }
    }

    /// Builds a config from a name (`adamw`, `sgd`, `adadelta`) and learning rate, using
    /// each optimizer's defaults.
    pub fn from_name(name: &str, lr: f64) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "adamw" | "adam" => Ok(Self::adamw(lr)),
            "sgd" => Ok(Self::sgd(lr)),
            "adadelta" => Ok(Self::adadelta(lr)),
            other => Err(Error::config(
                "--optimizer",
                format!("`{other}`: expected adamw, sgd or adadelta"),
            )),
        }
    }

    /// This optimizer with base learning rate `lr` (its other hyper-parameters kept).
    pub fn with_lr(self, lr: f64) -> Self {
        match self {
            Self::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => Self::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            },
            Self::Sgd {
                momentum,
                weight_decay,
                nesterov,
                ..
            } => Self::Sgd {
                lr,
                momentum,
                weight_decay,
                nesterov,
            },
            Self::Adadelta {
                rho,
                eps,
                weight_decay,
                ..
            } => Self::Adadelta {
                lr,
                rho,
                eps,
                weight_decay,
            },
        }
    }

    /// This AdamW with `β₂ = beta2`; an error (naming `--beta2`) for the other optimizers.
    pub fn with_beta2(self, beta2: f64) -> Result<Self> {
        match self {
            Self::AdamW {
                lr,
                beta1,
                eps,
                weight_decay,
                ..
            } => Ok(Self::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            }),
            other => Err(Error::config(
                "--beta2",
                format!(
                    "Adam's β₂ does not apply to {}: leave --beta2 out, or use --optimizer adamw",
                    other.name()
                ),
            )),
        }
    }

    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Self::AdamW { lr, .. } | Self::Sgd { lr, .. } | Self::Adadelta { lr, .. } => *lr,
        }
    }

    /// The optimizer's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::AdamW { .. } => "adamw",
            Self::Sgd { .. } => "sgd",
            Self::Adadelta { .. } => "adadelta",
        }
    }

    /// Checks every hyper-parameter against its range (an error names the flag and the
    /// range): `lr` finite and > 0, β, momentum and ρ in [0, 1), ε finite and > 0, weight
    /// decay finite and ≥ 0, Nesterov only with momentum.
    pub fn validate(&self) -> Result<()> {
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::config(
                "--lr",
                format!("{lr}: must be a finite number > 0"),
            ));
        }
        let unit = |flag: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::config(flag, format!("{v}: must be in [0, 1)")))
            }
        };
        let positive = |flag: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::config(
                    flag,
                    format!("{v}: must be a finite number > 0"),
                ))
            }
        };
        let decay = |v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::config(
                    "--weight-decay",
                    format!("{v}: must be a finite number ≥ 0"),
                ))
            }
        };
        let (Self::AdamW { weight_decay, .. }
        | Self::Sgd { weight_decay, .. }
        | Self::Adadelta { weight_decay, .. }) = *self;
        decay(weight_decay)?;
        match *self {
            Self::AdamW {
                beta1, beta2, eps, ..
            } => {
                unit("--beta1", beta1)?;
                unit("--beta2", beta2)?;
                positive("--eps", eps)
            }
            Self::Sgd {
                momentum, nesterov, ..
            } => {
                unit("--momentum", momentum)?;
                if nesterov && momentum == 0.0 {
                    return Err(Error::config("--nesterov", "needs a momentum > 0"));
                }
                Ok(())
            }
            Self::Adadelta { rho, eps, .. } => {
                unit("--rho", rho)?;
                positive("--eps", eps)
            }
        }
    }

    fn state_slots(&self) -> &'static [&'static str] {
        match self {
            Self::AdamW { .. } => &["exp_avg", "exp_avg_sq"],
            Self::Sgd { momentum, .. } if *momentum == 0.0 => &[],
            Self::Sgd { .. } => &["momentum_buffer"],
            Self::Adadelta { .. } => &["square_avg", "acc_delta"],
        }
    }
}

/// The names PyTorch gives the *buffers* a model keeps next to its parameters: batch norm's
/// running statistics. They live in the [`VarMap`] (so checkpoints and `--resume` carry them)
/// but are not trained: the forward pass in training mode updates them, no optimizer does.
pub const BUFFER_NAMES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// Whether the variable `name` (e.g. `layer1.0.bn1.running_mean`) is a buffer, not a
/// parameter: its last dotted component is one of [`BUFFER_NAMES`].
pub fn is_buffer(name: &str) -> bool {
    BUFFER_NAMES.contains(&name.rsplit('.').next().unwrap_or(name))
}

/// `(parameters, buffer values)` of `varmap`: the element counts of its trainable variables
/// and of its buffers ([`is_buffer`]), counted apart.
pub fn count_parameters(varmap: &VarMap) -> (usize, usize) {
    let data = varmap.data().lock().unwrap();
    let buffers: usize = data
        .iter()
        .filter(|(k, _)| is_buffer(k))
        .map(|(_, v)| v.elem_count())
        .sum();
    let all: usize = data.values().map(|v| v.elem_count()).sum();
    (all - buffers, buffers)
}

/// An optimizer over the named variables of a [`VarMap`].
pub struct Optimizer {
    cfg: OptimizerConfig,
    lr: f64,
    /// Parameters sorted by name (deterministic order).
    params: Vec<(String, Var)>,
    /// Per parameter, one tensor per state slot (created lazily on the first step).
    state: Vec<Vec<Tensor>>,
    step: usize,
}

/// The trained variables of `varmap`, sorted by name: every variable except the buffers
/// ([`is_buffer`]).
pub fn parameters(varmap: &VarMap) -> Vec<(String, Var)> {
    let mut params: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| !is_buffer(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

impl Optimizer {
    /// An optimizer over every parameter in `varmap`: every variable except the buffers
    /// ([`is_buffer`]), which it neither updates, decays, clips nor keeps state for.
    pub fn new(cfg: OptimizerConfig, varmap: &VarMap) -> Result<Self> {
        let params = parameters(varmap);
        let lr = cfg.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::config(
                "--lr",
                format!("{lr} is not a positive number"),
            ));
        }
        Ok(Self {
            cfg,
            lr,
            params,
            state: Vec::new(),
            step: 0,
        })
    }

    /// The current learning rate (after any schedule).
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate (schedules call this).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Number of steps taken.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The config.
    pub fn config(&self) -> &OptimizerConfig {
        &self.cfg
    }

    /// `loss.backward()` then [`Optimizer::step`].
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    fn init_state(&mut self) -> Result<()> {
        if self.state.is_empty() {
            let slots = self.cfg.state_slots().len();
            self.state = self
                .params
                .iter()
                .map(|(_, v)| (0..slots).map(|_| v.as_tensor().zeros_like()).collect())
                .collect::<candle_core::Result<_>>()?;
        }
        Ok(())
    }

    /// One update from `grads`. Parameters without a gradient are left untouched.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.init_state()?;
        self.step += 1;
        let t = self.step as i32;
        let lr = self.lr;
        for ((_, var), st) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            if let OptimizerConfig::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } = self.cfg
            {
                let hp = adamw::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    t,
                };
                if adamw::applies(var.as_tensor(), g, st) {
                    adamw::adamw_step(&hp, var.as_tensor(), g, st)?;
                    continue;
                }
            }
            let theta = var.as_tensor().detach();
            let mut g = g.detach();
            let l2 = self.cfg.coupled_weight_decay();
            if l2 != 0.0 {
                g = (g + (&theta * l2)?)?;
            }
            let next = match self.cfg {
                OptimizerConfig::AdamW {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    ..
                } => {
                    let theta = (&theta * (1.0 - lr * weight_decay))?;
                    let m = ((&st[0] * beta1)? + (&g * (1.0 - beta1))?)?;
                    let v = ((&st[1] * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
                    let m_hat = (&m / (1.0 - beta1.powi(t)))?;
                    let v_hat = (&v / (1.0 - beta2.powi(t)))?;
                    let upd = (m_hat / (v_hat.sqrt()? + eps)?)?;
                    st[0] = m;
                    st[1] = v;
                    (theta - (upd * lr)?)?
                }
                OptimizerConfig::Sgd {
                    momentum, nesterov, ..
                } => {
                    if momentum != 0.0 {
                        let buf = if t == 1 {
                            g.clone()
                        } else {
                            ((&st[0] * momentum)? + &g)?
                        };
                        g = if nesterov {
                            (&g + (&buf * momentum)?)?
                        } else {
                            buf.clone()
                        };
                        st[0] = buf;
                    }
                    (theta - (g * lr)?)?
                }
                OptimizerConfig::Adadelta { rho, eps, .. } => {
                    let v = ((&st[0] * rho)? + (g.sqr()? * (1.0 - rho))?)?;
                    let delta = (((&st[1] + eps)?.sqrt()? / (&v + eps)?.sqrt()?)? * &g)?;
                    let u = ((&st[1] * rho)? + (delta.sqr()? * (1.0 - rho))?)?;
                    st[0] = v;
                    st[1] = u;
                    (theta - (delta * lr)?)?
                }
            };
            var.set(&next)?;
        }
        Ok(())
    }

    /// The optimizer state as named tensors (`<slot>.<param name>`), for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let slots = self.cfg.state_slots();
        let mut out = Vec::new();
        for ((name, _), st) in self.params.iter().zip(&self.state) {
            for (slot, t) in slots.iter().zip(st) {
                out.push((format!("{slot}.{name}"), t.clone()));
            }
        }
        out
    }

    /// Restores state saved by [`Optimizer::state_tensors`] after `step` steps.
    pub fn load_state(
        &mut self,
        mut tensors: HashMap<String, Tensor>,
        step: usize,
        path: &std::path::Path,
    ) -> Result<()> {
        self.step = step;
        self.state.clear();
        if step == 0 {
            return Ok(());
        }
        let slots = self.cfg.state_slots();
        let mut state = Vec::with_capacity(self.params.len());
        for (name, var) in &self.params {
            let mut st = Vec::with_capacity(slots.len());
            for slot in slots {
                let key = format!("{slot}.{name}");
                let t = tensors.remove(&key).ok_or_else(|| {
                    Error::checkpoint(path, format!("optimizer state `{key}` is missing"))
                })?;
                if t.dims() != var.dims() {
                    return Err(Error::checkpoint(
                        path,
                        format!(
                            "optimizer state `{key}` has shape {:?}, parameter has {:?}",
                            t.dims(),
                            var.dims()
                        ),
                    ));
                }
                st.push(t.to_dtype(var.dtype())?.to_device(var.device())?);
            }
            state.push(st);
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(Error::checkpoint(
                path,
                format!("unexpected optimizer state `{extra}` (was it saved for another model?)"),
            ));
        }
        self.state = state;
        Ok(())
    }

    /// The variables this optimizer updates, sorted by name.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
///
/// This is the lecture's remedy for *exploding* gradients: the direction of the update is
/// kept, only its length is capped.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[(String, Var)], max_norm: f64) -> Result<f64> {
    let mut sq = Vec::new();
    for (_, v) in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq.push(g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?);
        }
    }
    if sq.is_empty() {
        return Ok(0.0);
    }
    let total = Tensor::stack(&sq, 0)?.sum_all()?.to_scalar::<f64>()?.sqrt();
    if total.is_finite() && total > max_norm {
        let scale = max_norm / (total + 1e-6);
        for (_, v) in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(total)
}

/// Learning-rate schedule, applied at the start of each epoch (0-based `epoch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum LrSchedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// `lr = base · γ^⌊epoch / step_size⌋` (PyTorch `StepLR`).
    Step { step_size: usize, gamma: f64 },
    /// `lr = η_min + (base − η_min)(1 + cos(π·epoch/t_max))/2` (PyTorch `CosineAnnealingLR`).
    Cosine { t_max: usize, eta_min: f64 },
}

impl LrSchedule {
    /// The learning rate for `epoch` given the base rate.
    pub fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        match *self {
            Self::Constant => base,
            Self::Step { step_size, gamma } => base * gamma.powi((epoch / step_size.max(1)) as i32),
            Self::Cosine { t_max, eta_min } => {
                let t = (epoch.min(t_max) as f64) / (t_max.max(1) as f64);
                eta_min + (base - eta_min) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
            }
        }
    }

    /// Checks the schedule's numbers: a step size and `T_MAX` of at least 1 epoch, `γ`
    /// finite and > 0, `η_min` finite and ≥ 0.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::config("--schedule", msg));
        match *self {
            Self::Constant => Ok(()),
            Self::Step { step_size: 0, .. } => {
                bad("step:0: the step size is at least 1 epoch".into())
            }
            Self::Step { gamma, .. } if !(gamma.is_finite() && gamma > 0.0) => {
                bad(format!("step gamma {gamma}: must be a finite number > 0"))
            }
            Self::Cosine { t_max: 0, .. } => bad("cosine:0: T_MAX is at least 1 epoch".into()),
            Self::Cosine { eta_min, .. } if !(eta_min.is_finite() && eta_min >= 0.0) => bad(
                format!("cosine eta_min {eta_min}: must be a finite number ≥ 0"),
            ),
            _ => Ok(()),
        }
    }

    /// This schedule for a run of `epochs` instead of `planned`: a cosine that spans the
    /// planned run (`t_max = planned`) spans the new one; anything else is unchanged.
    pub fn spanning(self, planned: usize, epochs: usize) -> Self {
        match self {
            Self::Cosine { t_max, eta_min } if t_max == planned => Self::Cosine {
                t_max: epochs,
                eta_min,
            },
            other => other,
        }
    }

    /// Parses `constant`, `step[:STEP_SIZE[:GAMMA]]` or `cosine[:T_MAX]`; `epochs` is the
    /// default `T_MAX`. Values out of range are errors ([`LrSchedule::validate`]).
    pub fn parse(s: &str, epochs: usize) -> Result<Self> {
        let sched = Self::parse_unchecked(s, epochs)?;
        sched.validate()?;
        Ok(sched)
    }

    fn parse_unchecked(s: &str, epochs: usize) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |i: usize, field: &str| -> Result<Option<f64>> {
            parts
                .get(i)
                .map(|p| {
                    p.parse::<f64>().map_err(|_| {
                        Error::config(
                            "--schedule",
                            format!("`{s}`: {field} `{p}` is not a number"),
                        )
                    })
                })
                .transpose()
        };
        let whole = |v: Option<f64>, field: &str| -> Result<Option<usize>> {
            match v {
                Some(v) if v < 0.0 || v.fract() != 0.0 || !v.is_finite() => Err(Error::config(
                    "--schedule",
                    format!("`{s}`: {field} {v} must be a whole number of epochs"),
                )),
                v => Ok(v.map(|v| v as usize)),
            }
        };
        match parts[0] {
            "constant" | "none" => Ok(Self::Constant),
            "step" => Ok(Self::Step {
                step_size: whole(num(1, "step size")?, "step size")?.unwrap_or(1),
                gamma: num(2, "gamma")?.unwrap_or(0.7),
            }),
            "cosine" => Ok(Self::Cosine {
                t_max: whole(num(1, "t_max")?, "t_max")?.unwrap_or(epochs),
                eta_min: 0.0,
            }),
            other => Err(Error::config(
                "--schedule",
                format!("`{other}`: expected constant, step[:N[:GAMMA]] or cosine[:T_MAX]"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn hyper_parameters_out_of_range_are_named_errors() {
        let err = |c: OptimizerConfig| c.validate().unwrap_err().to_string();
        assert!(err(OptimizerConfig::adamw(0.0)).contains("--lr"));
        assert!(err(OptimizerConfig::adamw(f64::NAN)).contains("--lr"));
        let mut c = OptimizerConfig::adamw(1e-3);
        if let OptimizerConfig::AdamW { beta2, .. } = &mut c {
            *beta2 = 1.0;
        }
        assert!(err(c).contains("--beta2"));
        let mut c = OptimizerConfig::sgd(0.1);
        if let OptimizerConfig::Sgd {
            momentum, nesterov, ..
        } = &mut c
        {
            *momentum = 0.0;
            *nesterov = true;
        }
        assert!(err(c).contains("--nesterov"));
        for ok in [
            OptimizerConfig::adamw(1e-3),
            OptimizerConfig::sgd(0.05),
            OptimizerConfig::adadelta(1.0),
        ] {
            ok.validate().unwrap();
        }
        let sched = |s: &str| LrSchedule::parse(s, 3).map_err(|e| e.to_string());
        for bad in [
            "step:0",
            "step:2.5",
            "step:-1",
            "step:2:-0.5",
            "step:2:nan",
            "cosine:0",
            "cosine:1.5",
        ] {
            let e = sched(bad).unwrap_err();
            assert!(e.contains("--schedule"), "{bad}: {e}");
        }
        assert_eq!(
            sched("step:2:0.5").unwrap(),
            LrSchedule::Step {
                step_size: 2,
                gamma: 0.5
            }
        );
        assert_eq!(
            sched("cosine").unwrap(),
            LrSchedule::Cosine {
                t_max: 3,
                eta_min: 0.0
            }
        );
    }

    /// One parameter θ = [1, -2], loss = Σ θ², so g = 2θ. Checks each rule against the
    /// update written out by hand.
    fn one_step(cfg: OptimizerConfig, steps: usize) -> Vec<f32> {
        let vm = VarMap::new();
        vm.data().lock().unwrap().insert(
            "w".into(),
            Var::from_tensor(&Tensor::new(&[1f32, -2.0], &Device::Cpu).unwrap()).unwrap(),
        );
        let mut opt = Optimizer::new(cfg, &vm).unwrap();
        let w = vm.data().lock().unwrap()["w"].clone();
        for _ in 0..steps {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.backward_step(&loss).unwrap();
        }
        w.as_tensor().to_vec1().unwrap()
    }

    /// The in-place CPU AdamW equals the tensor-op AdamW bit for bit, f32 and f64, over
    /// several steps (bias correction changes each step) with weight decay.
    #[test]
    fn fused_adamw_is_bit_identical_to_the_tensor_ops() {
        for dtype in [candle_core::DType::F32, candle_core::DType::F64] {
            let run = |fused: bool| -> Vec<f64> {
                let _path = crate::kernels::use_path(crate::kernels::KernelPath::fused_if(fused));
                let vm = VarMap::new();
                let wave = |f: f32| {
                    let v: Vec<f32> = (0..37 * 11).map(|i| (i as f32 * f).sin()).collect();
                    Tensor::from_vec(v, (37, 11), &Device::Cpu).unwrap()
                };
                let (init, c) = (wave(0.37), wave(0.11).to_dtype(dtype).unwrap());
                let w = Var::from_tensor(&init.to_dtype(dtype).unwrap()).unwrap();
                vm.data().lock().unwrap().insert("w".into(), w.clone());
                let mut cfg = OptimizerConfig::adamw(3e-2);
                if let OptimizerConfig::AdamW { weight_decay, .. } = &mut cfg {
                    *weight_decay = 0.1;
                }
                let mut opt = Optimizer::new(cfg, &vm).unwrap();
                for _ in 0..6 {
                    let loss = (w.as_tensor().powf(3.0).unwrap() * &c)
                        .unwrap()
                        .sum_all()
                        .unwrap();
                    opt.backward_step(&loss).unwrap();
                }
                let mut out: Vec<f64> = w
                    .as_tensor()
                    .to_dtype(candle_core::DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                for (_, t) in opt.state_tensors() {
                    out.extend(
                        t.to_dtype(candle_core::DType::F64)
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1::<f64>()
                            .unwrap(),
                    );
                }
                out
            };
            let (plain, fused) = (run(false), run(true));
            assert_eq!(plain, fused, "{dtype:?}");
        }
    }

    /// The in-place AdamW flushes subnormals only inside its own update: the thread's
    /// floating-point mode is the same afterwards.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[allow(deprecated)]
    fn fused_adamw_restores_the_float_mode() {
        // FTZ (bit 15) and DAZ (bit 6); the other bits include sticky exception flags.
        let mode = || unsafe { std::arch::x86_64::_mm_getcsr() } & 0x8040;
        let before = mode();
        one_step(OptimizerConfig::adamw(0.1), 2);
        assert_eq!(mode(), before);
        let tiny = f32::MIN_POSITIVE / 4.0;
        assert!(
            tiny > 0.0 && tiny * 1.0 > 0.0,
            "subnormals flushed outside the update"
        );
    }

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        // step 1: g = [2,-4], b = g, θ = θ - 0.1 b = [0.8, -1.6]
        // step 2: g = [1.6,-3.2], b = 0.9*[2,-4] + g = [3.4,-6.8], θ = [0.46, -0.92]
        let w = one_step(OptimizerConfig::sgd(0.1), 2);
        assert!(
            (w[0] - 0.46).abs() < 1e-6 && (w[1] + 0.92).abs() < 1e-6,
            "{w:?}"
        );
    }

    #[test]
    fn adamw_first_step_is_lr_times_sign() {
        // First Adam step: m̂ = g, v̂ = g², update = g/(|g|+ε) ≈ sign(g); decay first.
        let w = one_step(OptimizerConfig::adamw(0.1), 1);
        let expect = [
            1.0 * (1.0 - 0.1 * 0.01) - 0.1,
            -2.0 * (1.0 - 0.1 * 0.01) + 0.1,
        ];
        assert!((w[0] - expect[0] as f32).abs() < 1e-6, "{w:?}");
        assert!((w[1] - expect[1] as f32).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn adadelta_matches_hand_computation() {
        // v = 0.1 g², Δ = √ε/√(v+ε) g, θ -= lr Δ  (g = 2θ)
        let w = one_step(OptimizerConfig::adadelta(1.0), 1);
        let eps = 1e-6f64;
        for (i, th) in [1.0f64, -2.0].iter().enumerate() {
            let g = 2.0 * th;
            let v = 0.1 * g * g;
            let d = eps.sqrt() / (v + eps).sqrt() * g;
            assert!((w[i] as f64 - (th - d)).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn clip_scales_to_max_norm() -> Result<()> {
        let v = Var::from_tensor(&Tensor::new(&[3f32, 4.0], &Device::Cpu)?)?;
        let loss = v.as_tensor().sqr()?.sum_all()?.affine(0.5, 0.0)?; // g = θ = [3, 4]
        let mut grads = loss.backward()?;
        let vars = vec![("w".to_string(), v.clone())];
        let n = clip_grad_norm(&mut grads, &vars, 1.0)?;
        assert!((n - 5.0).abs() < 1e-6);
        let g = grads.get(v.as_tensor()).unwrap().to_vec1::<f32>()?;
        assert!(
            (g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5,
            "{g:?}"
        );
        Ok(())
    }

    /// Batch norm's running statistics are buffers: not in the parameter list, not updated
    /// (even with a gradient), not decayed, not clipped, no optimizer state; the parameters
    /// beside them are updated and decayed as before.
    #[test]
    fn buffers_are_not_optimized() -> Result<()> {
        assert!(is_buffer("layer1.0.bn1.running_mean") && is_buffer("bn1.running_var"));
        assert!(is_buffer("bn1.num_batches_tracked") && is_buffer("running_var"));
        assert!(!is_buffer("bn1.weight") && !is_buffer("bn1.bias") && !is_buffer("running"));
        assert!(!is_buffer("fc.running_mean_scale"));
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let var = |v: &[f32]| Var::from_tensor(&Tensor::new(v, &dev).unwrap()).unwrap();
        for (name, v) in [
            ("bn.weight", var(&[1.0, 2.0])),
            ("bn.bias", var(&[0.5, -0.5])),
            ("bn.running_mean", var(&[0.3, 0.4])),
            ("bn.running_var", var(&[1.5, 2.5])),
        ] {
            vm.data().lock().unwrap().insert(name.into(), v);
        }
        let nbt = Var::from_tensor(&Tensor::new(7f32, &dev)?)?;
        vm.data()
            .lock()
            .unwrap()
            .insert("bn.num_batches_tracked".into(), nbt);
        assert_eq!(count_parameters(&vm), (4, 5));
        let cfg = OptimizerConfig::AdamW {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.5,
        };
        let mut opt = Optimizer::new(cfg, &vm)?;
        let names: Vec<&str> = opt.params().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["bn.bias", "bn.weight"]);
        let before: HashMap<String, Vec<f32>> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
        // a loss that reaches every variable, buffers included, so all have gradients
        let mut loss = Tensor::new(0f32, &dev)?;
        for v in vm.all_vars() {
            loss = (loss + v.as_tensor().sqr()?.sum_all()?)?;
        }
        let mut grads = loss.backward()?;
        let norm = clip_grad_norm(&mut grads, opt.params(), 1e9)?;
        let params_only = (1f64 + 4.0 + 0.25 + 0.25).sqrt() * 2.0; // ‖2θ‖ over weight, bias
        assert!((norm - params_only).abs() < 1e-5, "{norm}");
        opt.step(&grads)?;
        let data = vm.data().lock().unwrap();
        for (name, v) in data.iter() {
            let now: Vec<f32> = v.flatten_all()?.to_vec1()?;
            if is_buffer(name) {
                assert_eq!(now, before[name], "{name} moved");
            } else {
                // AdamW's first step: θ(1 − lr·λ) − lr·sign(g)
                for (n, b) in now.iter().zip(&before[name]) {
                    let want = b * (1.0 - 0.1 * 0.5) - 0.1 * b.signum();
                    assert!((n - want).abs() < 1e-5, "{name}: {n} vs {want}");
                }
            }
        }
        assert!(opt.state_tensors().iter().all(|(n, _)| !is_buffer(n)));
        assert_eq!(opt.state_tensors().len(), 4);
        Ok(())
    }

    #[test]
    fn schedules() {
        let s = LrSchedule::parse("step:1:0.7", 10).unwrap();
        assert!((s.lr_at(1.0, 2) - 0.49).abs() < 1e-12);
        let c = LrSchedule::parse("cosine", 10).unwrap();
        assert!((c.lr_at(1.0, 0) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(1.0, 5) - 0.5).abs() < 1e-12);
        assert!(LrSchedule::parse("warp", 3).is_err());
    }
}
