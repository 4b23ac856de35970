//! Optimizers with checkpointable state: AdamW, SGD with momentum, Adadelta, RMSprop.
//!
//! The update rules are PyTorch's (`torch.optim.AdamW`, `SGD`, `Adadelta`, `RMSprop`), so
//! learning rates carry over. Why not `candle_nn::AdamW`? Its moment estimates are private, so
//! a run could not be resumed bit-exactly; candle has no SGD momentum, Adadelta or RMSprop at
//! all. These work on any device (plain tensor ops) and expose their state as named tensors.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`OptimizerConfig`] (the registry of update rules), [`Optimizer`] (parameters, state, steps), [`UpdateRule`] |
//! | `adamw.rs`, `sgd.rs`, `adadelta.rs`, `rmsprop.rs` | one update rule each, with its hyper-parameters and defaults |
//! | `params.rs` | which variables are trained: [`parameters`], buffers ([`is_buffer`]), [`count_parameters`] |
//! | `clip.rs` | [`clip_grad_norm`] |
//! | `schedule/` | [`LrSchedule`]: learning rate per epoch, one file per schedule |
//!
//! **A new optimizer** is one file here (a struct of hyper-parameters that implements
//! [`UpdateRule`]) plus one line in the `optimizers!` list below: its name, parsing
//! (`--optimizer NAME`), validation, state slots, checkpointing and resume come from there.

/// The [`UpdateRule`] accessors of a rule struct with `lr` and `weight_decay` fields.
macro_rules! lr_and_weight_decay {
    () => {
        fn lr(&self) -> f64 {
            self.lr
        }

        fn set_lr(&mut self, lr: f64) {
            self.lr = lr;
        }

        fn weight_decay(&self) -> f64 {
            self.weight_decay
        }
    };
}

mod adadelta;
mod adamw;
mod clip;
mod params;
mod rmsprop;
mod schedule;
mod sgd;

pub use adadelta::Adadelta;
pub use adamw::AdamW;
pub use clip::clip_grad_norm;
pub use params::{count_parameters, is_buffer, parameters, BUFFER_NAMES};
pub use rmsprop::RmsProp;
pub use schedule::{Cosine, LrSchedule, Schedule, Step, WarmupCosine};
pub use sgd::Sgd;

use crate::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One optimizer's update rule and hyper-parameters (a variant of [`OptimizerConfig`]).
pub trait UpdateRule {
    /// The rule with its usual hyper-parameters and base learning rate `lr`.
    fn with_defaults(lr: f64) -> Self
    where
        Self: Sized;
    /// The base learning rate.
    fn lr(&self) -> f64;
    /// Sets the base learning rate (other hyper-parameters kept).
    fn set_lr(&mut self, lr: f64);
    /// The weight decay `λ` (checked to be finite and ≥ 0 by [`OptimizerConfig::validate`]).
    fn weight_decay(&self) -> f64;
    /// The L2 penalty folded into the gradient (`g ← g + λθ`, PyTorch's `weight_decay`);
    /// decoupled rules (AdamW) return 0.
    fn coupled_weight_decay(&self) -> f64 {
        self.weight_decay()
    }
    /// Checks the rule's own hyper-parameters (the learning rate and weight decay are
    /// checked by [`OptimizerConfig::validate`]); errors name the config field.
    fn validate(&self) -> Result<()>;
    /// Names of the per-parameter state tensors (zeros before the first step), as PyTorch
    /// names them in `optimizer.state_dict()`.
    fn state_slots(&self) -> Vec<&'static str>;
    /// `θ` after one step ([`ParamStep`]: `θ`, the gradient `g` with the coupled decay
    /// already folded in, the learning rate, the 1-based step `t`); updates `state` (one
    /// tensor per slot).
    fn update(&self, p: &ParamStep, state: &mut [Tensor]) -> Result<Tensor>;
    /// Updates `θ` in place instead, where the rule has a faster path for it; returns
    /// whether it did (then [`Self::update`] is not called). Default: never.
    fn update_in_place(&self, _p: &ParamStep, _state: &mut [Tensor]) -> Result<bool> {
        Ok(false)
    }
}

/// What one update of one parameter sees.
#[derive(Clone, Copy)]
pub struct ParamStep<'a> {
    /// The parameter `θ`.
    pub theta: &'a Tensor,
    /// Its gradient `g`.
    pub g: &'a Tensor,
    /// The learning rate of this step (after the schedule).
    pub lr: f64,
    /// The 1-based step.
    pub t: i32,
}

/// Generates [`OptimizerConfig`] from the list of update rules: the enum (serialised as
/// `{"name": NAME, <hyper-parameters>}`), name parsing and the dispatch to [`UpdateRule`].
macro_rules! optimizers {
    ($($variant:ident($ty:ty) = $name:literal $(| $alias:literal)*),+ $(,)?) => {
        /// Which optimizer, with its hyper-parameters.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "name")]
        pub enum OptimizerConfig {
            $(
                #[doc = concat!(
                    "`", $name, "`: [`", stringify!($ty), "`] with its hyper-parameters."
                )]
                #[serde(rename = $name)]
                $variant($ty),
            )+
        }

        impl OptimizerConfig {
            /// The names [`OptimizerConfig::from_name`] takes.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            fn rule(&self) -> &dyn UpdateRule {
                match self {
                    $(Self::$variant(r) => r,)+
                }
            }

            fn rule_mut(&mut self) -> &mut dyn UpdateRule {
                match self {
                    $(Self::$variant(r) => r,)+
                }
            }

            /// The optimizer's name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)+
                }
            }

            /// Builds a config from a name (`adamw`, `sgd`, `adadelta`, `rmsprop`) and
            /// learning rate, using each optimizer's defaults.
            pub fn from_name(name: &str, lr: f64) -> Result<Self> {
                match name.to_ascii_lowercase().as_str() {
                    $($name $(| $alias)* => Ok(Self::$variant(<$ty>::with_defaults(lr))),)+
                    other => Err(Error::config(
                        "optimizer",
                        format!("`{other}`: expected {}", Self::NAMES.join(", ")),
                    )),
                }
            }
        }
    };
}

// The registry: one line per optimizer.
optimizers! {
    AdamW(AdamW) = "adamw" | "adam",
    Sgd(Sgd) = "sgd",
    Adadelta(Adadelta) = "adadelta",
    RmsProp(RmsProp) = "rmsprop",
}

impl OptimizerConfig {
    /// AdamW with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8, λ = 0.01).
    pub fn adamw(lr: f64) -> Self {
        Self::AdamW(AdamW::with_defaults(lr))
    }

    /// SGD with momentum 0.9, no weight decay.
    pub fn sgd(lr: f64) -> Self {
        Self::Sgd(Sgd::with_defaults(lr))
    }

    /// Adadelta with PyTorch's defaults (ρ = 0.9, ε = 1e-6).
    pub fn adadelta(lr: f64) -> Self {
        Self::Adadelta(Adadelta::with_defaults(lr))
    }

    /// RMSprop with PyTorch's defaults (α = 0.99, ε = 1e-8, no momentum, not centered).
    pub fn rmsprop(lr: f64) -> Self {
        Self::RmsProp(RmsProp::with_defaults(lr))
    }

    /// The L2 penalty `λ` that the rule folds into the gradient (`g ← g + λθ`, PyTorch's
    /// `weight_decay`); 0 for AdamW, whose decay `θ ← θ − lr·λ·θ` is decoupled from `g`.
    pub fn coupled_weight_decay(&self) -> f64 {
        self.rule().coupled_weight_decay()
    }

    /// This optimizer with base learning rate `lr` (its other hyper-parameters kept).
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.rule_mut().set_lr(lr);
        self
    }

    /// This AdamW with `β₂ = beta2`; an error (naming `beta2`) for the other optimizers.
    pub fn with_beta2(self, beta2: f64) -> Result<Self> {
        match self {
            Self::AdamW(a) => Ok(Self::AdamW(AdamW { beta2, ..a })),
            other => Err(Error::config(
                "beta2",
                format!(
                    "Adam's β₂ does not apply to {}: leave `beta2` out, or use the `optimizer` adamw",
                    other.name()
                ),
            )),
        }
    }

    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        self.rule().lr()
    }

    /// Checks every hyper-parameter against its range (an error names the config field and
    /// the range): `lr` finite and > 0, weight decay finite and ≥ 0, then the rule's own
    /// ([`UpdateRule::validate`]: β, momentum, ρ and α in [0, 1), ε finite and > 0, Nesterov
    /// only with momentum).
    pub fn validate(&self) -> Result<()> {
        check_lr(self.lr())?;
        let decay = self.rule().weight_decay();
        if !(decay.is_finite() && decay >= 0.0) {
            return Err(Error::config(
                "weight_decay",
                format!("{decay}: must be a finite number ≥ 0"),
            ));
        }
        self.rule().validate()
    }
}

fn check_lr(lr: f64) -> Result<()> {
    if lr.is_finite() && lr > 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            "lr",
            format!("{lr}: must be a finite number > 0"),
        ))
    }
}

/// `v` in [0, 1), or an error naming `field`.
pub(super) fn unit(field: &str, v: f64) -> Result<()> {
    if (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::config(field, format!("{v}: must be in [0, 1)")))
    }
}

/// `v` finite and > 0, or an error naming `field`.
pub(super) fn positive(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!("{v}: must be a finite number > 0"),
        ))
    }
}

/// `g + λθ`: the L2 penalty folded into the gradient (PyTorch's coupled `weight_decay`);
/// `g` itself when `λ = 0`.
pub(super) fn with_l2(theta: &Tensor, g: &Tensor, l2: f64) -> Result<Tensor> {
    Ok(if l2 != 0.0 {
        (g + (theta * l2)?)?
    } else {
        g.clone()
    })
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

impl Optimizer {
    /// An optimizer over every parameter in `varmap`: every variable except the buffers
    /// ([`is_buffer`]), which it neither updates, decays, clips nor keeps state for.
    pub fn new(cfg: OptimizerConfig, varmap: &VarMap) -> Result<Self> {
        let params = parameters(varmap);
        let lr = cfg.lr();
        check_lr(lr)?;
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
            let slots = self.cfg.rule().state_slots().len();
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
        let rule = self.cfg.rule();
        for ((_, var), st) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let p = ParamStep {
                theta: var.as_tensor(),
                g,
                lr,
                t,
            };
            if rule.update_in_place(&p, st)? {
                continue;
            }
            let theta = var.as_tensor().detach();
            let g = with_l2(&theta, &g.detach(), rule.coupled_weight_decay())?;
            let next = rule.update(
                &ParamStep {
                    theta: &theta,
                    g: &g,
                    ..p
                },
                st,
            )?;
            var.set(&next)?;
        }
        Ok(())
    }

    /// The optimizer state as named tensors (`<slot>.<param name>`), for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let slots = self.cfg.rule().state_slots();
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
        let slots = self.cfg.rule().state_slots();
        let mut state = Vec::with_capacity(self.params.len());
        for (name, var) in &self.params {
            let mut st = Vec::with_capacity(slots.len());
            for slot in &slots {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn hyper_parameters_out_of_range_are_named_errors() {
        let err = |c: OptimizerConfig| c.validate().unwrap_err().to_string();
        assert!(err(OptimizerConfig::adamw(0.0)).starts_with("invalid lr:"));
        assert!(err(OptimizerConfig::adamw(f64::NAN)).starts_with("invalid lr:"));
        let mut c = OptimizerConfig::adamw(1e-3);
        if let OptimizerConfig::AdamW(a) = &mut c {
            a.beta2 = 1.0;
        }
        assert!(err(c).starts_with("invalid beta2:"));
        let mut c = OptimizerConfig::sgd(0.1);
        if let OptimizerConfig::Sgd(s) = &mut c {
            s.momentum = 0.0;
            s.nesterov = true;
        }
        assert!(err(c).starts_with("invalid nesterov:"));
        let mut c = OptimizerConfig::rmsprop(0.01);
        if let OptimizerConfig::RmsProp(r) = &mut c {
            r.alpha = 1.0;
        }
        assert!(err(c).starts_with("invalid alpha:"));
        let mut c = OptimizerConfig::rmsprop(0.01);
        if let OptimizerConfig::RmsProp(r) = &mut c {
            r.weight_decay = -1.0;
        }
        assert!(err(c).starts_with("invalid weight_decay:"));
        for ok in [
            OptimizerConfig::adamw(1e-3),
            OptimizerConfig::sgd(0.05),
            OptimizerConfig::adadelta(1.0),
            OptimizerConfig::rmsprop(0.01),
        ] {
            ok.validate().unwrap();
        }
    }

    /// Every registered name parses to its optimizer, which serialises under that name
    /// (the form `state.json` keeps) and reads back equal.
    #[test]
    fn names_parse_and_round_trip() {
        for &name in OptimizerConfig::NAMES {
            let c = OptimizerConfig::from_name(name, 0.5).unwrap();
            assert_eq!((c.name(), c.lr()), (name, 0.5));
            let json = serde_json::to_value(&c).unwrap();
            assert_eq!(json["name"], name);
            assert_eq!(serde_json::from_value::<OptimizerConfig>(json).unwrap(), c);
            assert_eq!(c.clone().with_lr(0.25).lr(), 0.25);
        }
        assert_eq!(
            OptimizerConfig::from_name("Adam", 1e-3).unwrap(),
            OptimizerConfig::adamw(1e-3)
        );
        let e = OptimizerConfig::from_name("lion", 1e-3)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid optimizer:") && e.contains("rmsprop"),
            "{e}"
        );
        // the saved form of neka 0.1 runs still reads
        let saved = r#"{"name":"sgd","lr":0.1,"momentum":0.9,"weight_decay":0.0,"nesterov":false}"#;
        assert_eq!(
            serde_json::from_str::<OptimizerConfig>(saved).unwrap(),
            OptimizerConfig::sgd(0.1)
        );
    }

    /// One parameter θ = [1, -2], loss = Σ θ², so g = 2θ. Checks each rule against the
    /// update written out by hand.
    pub(crate) fn one_step(cfg: OptimizerConfig, steps: usize) -> Vec<f32> {
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
        let cfg = OptimizerConfig::AdamW(AdamW {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.5,
        });
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
}
