//! AdamW (Loshchilov & Hutter 2019), PyTorch's `torch.optim.AdamW`.

use super::{positive, unit, ParamStep, UpdateRule};
use crate::kernels::adamw as fused;
use crate::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// Adam with decoupled weight decay:
/// `θ ← θ − lr·λ·θ`, `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `θ ← θ − lr · m̂ / (√v̂ + ε)` with bias-corrected `m̂, v̂`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f64,
    /// `β₁`, decay of the gradient average `m`, in `[0, 1)` (default 0.9).
    pub beta1: f64,
    /// `β₂`, decay of the squared-gradient average `v`, in `[0, 1)` (default 0.999).
    pub beta2: f64,
    /// `ε` added to `√v̂` (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay `λ`: `θ ← θ − lr·λ·θ` (default 0.01).
    pub weight_decay: f64,
}

impl UpdateRule for AdamW {
    /// PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8, λ = 0.01.
    fn with_defaults(lr: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }

    lr_and_weight_decay!();

    fn coupled_weight_decay(&self) -> f64 {
        0.0
    }

    fn validate(&self) -> Result<()> {
        unit("beta1", self.beta1)?;
        unit("beta2", self.beta2)?;
        positive("eps", self.eps)
    }

    fn state_slots(&self) -> Vec<&'static str> {
        vec!["exp_avg", "exp_avg_sq"]
    }

    fn update_in_place(&self, p: &ParamStep, st: &mut [Tensor]) -> Result<bool> {
        let ParamStep { theta, g, lr, t } = *p;
        if !fused::applies(theta, g, st) {
            return Ok(false);
        }
        let hp = fused::Adam {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            t,
        };
        fused::adamw_step(&hp, theta, g, st)?;
        Ok(true)
    }

    fn update(&self, p: &ParamStep, st: &mut [Tensor]) -> Result<Tensor> {
        let ParamStep { theta, g, lr, t } = *p;
        let (beta1, beta2) = (self.beta1, self.beta2);
        let theta = (theta * (1.0 - lr * self.weight_decay))?;
        let m = ((&st[0] * beta1)? + (g * (1.0 - beta1))?)?;
        let v = ((&st[1] * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
        let m_hat = (&m / (1.0 - beta1.powi(t)))?;
        let v_hat = (&v / (1.0 - beta2.powi(t)))?;
        let upd = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
        st[0] = m;
        st[1] = v;
        Ok((theta - (upd * lr)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Optimizer, OptimizerConfig};
    use candle_core::{Device, Tensor, Var};
    use candle_nn::VarMap;

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
                if let OptimizerConfig::AdamW(a) = &mut cfg {
                    a.weight_decay = 0.1;
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
        super::super::tests::one_step(OptimizerConfig::adamw(0.1), 2);
        assert_eq!(mode(), before);
        let tiny = f32::MIN_POSITIVE / 4.0;
        assert!(
            tiny > 0.0 && tiny * 1.0 > 0.0,
            "subnormals flushed outside the update"
        );
    }

    #[test]
    fn adamw_first_step_is_lr_times_sign() {
        // First Adam step: m̂ = g, v̂ = g², update = g/(|g|+ε) ≈ sign(g); decay first.
        let w = super::super::tests::one_step(OptimizerConfig::adamw(0.1), 1);
        let expect = [
            1.0 * (1.0 - 0.1 * 0.01) - 0.1,
            -2.0 * (1.0 - 0.1 * 0.01) + 0.1,
        ];
        assert!((w[0] - expect[0] as f32).abs() < 1e-6, "{w:?}");
        assert!((w[1] - expect[1] as f32).abs() < 1e-6, "{w:?}");
    }
}
