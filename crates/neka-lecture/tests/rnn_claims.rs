//! The lecture notes' claims about the RNN, checked on real numbers (issue 16, §3):
//!
//! - "Forward propagation: CAN'T BE PARALLELIZED": h_t depends on every x_s with s ≤ t and on
//!   no later one — perturb one input and watch which hidden states move;
//! - "RNN의 한계점" (1) parameter > 1 → the gradient goes to infinity, (2) parameter < 1 → it
//!   goes to 0, on a linear and a tanh RNN with `W = ρQ` ([`neka_lecture::gradient_flow`]).

use candle_core::{DType, Device, Tensor, Var};
use neka_lecture::gradient_flow::{self as analysis, gradient_flow, FlowConfig, Psi};
use neka_rnn::{Rnn, RnnConfig, SeqInput};

type R = Result<(), Box<dyn std::error::Error>>;

const RHOS: [f64; 5] = [0.5, 0.9, 1.0, 1.1, 1.5];

/// `max_j |a_t[j] − b_t[j]|` for every step t of two `(1, T, H)` outputs.
fn step_diffs(a: &Tensor, b: &Tensor) -> candle_core::Result<Vec<f64>> {
    let d = (a - b)?.abs()?.max(2)?.squeeze(0)?; // (T)
    d.to_vec1::<f64>()
}

fn sci(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|d| format!("{d:.1e}")).collect();
    format!("[{}]", parts.join(", "))
}

/// A tanh Elman RNN (PyTorch init, with biases) run on `x` and on `x` with x_k (1-indexed, as
/// in the notes) moved by 0.1: the per-step change of h_t.
fn perturbation(rnn: &Rnn, x: &Tensor, k: usize) -> candle_core::Result<Vec<f64>> {
    let (_, t, f) = x.dims3()?;
    let bump = Tensor::zeros((1, t, f), DType::F64, &Device::Cpu)?.slice_assign(
        &[0..1, k - 1..k, 0..f],
        &(Tensor::ones((1, 1, f), DType::F64, &Device::Cpu)? * 0.1)?,
    )?;
    let base = rnn.forward_seq(x, SeqInput::default(), false)?.output;
    let moved = rnn
        .forward_seq(&(x + bump)?, SeqInput::default(), false)?
        .output;
    step_diffs(&base, &moved)
}

#[test]
fn forward_pass_is_sequential() -> R {
    let (t, f, h) = (12, 4, 16);
    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, DType::F64, &Device::Cpu);
    let rnn = Rnn::new(RnnConfig::new(f, h), vb.pp("rnn"))?;
    let x = Tensor::from_vec(analysis::gaussian(t * f, 3), (1, t, f), &Device::Cpu)?;
    // Both time loops: the fused CPU kernel and candle ops step by step (the GPU path).
    for fused in [true, false] {
        let _path =
            neka_common::kernels::use_path(neka_common::kernels::KernelPath::fused_if(fused));
        // x_1 changes every h_t, t = 1 … T: each step reads the previous state.
        let d1 = perturbation(&rnn, &x, 1)?;
        println!("fused {fused}: |Δh_t| after moving x_1: {}", sci(&d1));
        for (s, d) in d1.iter().enumerate() {
            assert!(*d > 1e-9, "moving x_1 left h_{} unchanged ({d:e})", s + 1);
        }
        // x_6 changes h_6 … h_T and leaves h_1 … h_5 bit for bit as they were: a step can
        // only be computed once the one before it is known.
        let k = 6;
        let dk = perturbation(&rnn, &x, k)?;
        println!("fused {fused}: |Δh_t| after moving x_{k}: {}", sci(&dk));
        for (s, d) in dk.iter().enumerate() {
            if s + 1 < k {
                assert_eq!(*d, 0.0, "moving x_{k} changed h_{}", s + 1);
            } else {
                assert!(*d > 1e-9, "moving x_{k} left h_{} unchanged ({d:e})", s + 1);
            }
        }
    }
    Ok(())
}

#[test]
fn linear_rnn_gradient_is_rho_to_the_t() -> R {
    // ‖∂L/∂h_{T−k}‖ = ‖(Wᵀ)^k v‖ = ρ^k exactly for W = ρQ, Q orthogonal.
    for rho in RHOS {
        let flow = gradient_flow(&FlowConfig::new(Psi::Identity, rho).steps(50), &Device::Cpu)?;
        let back = flow.steps_back();
        assert_eq!(back.len(), 51);
        for (k, g) in back.iter().enumerate() {
            let want = rho.powi(k as i32);
            assert!(
                (g / want - 1.0).abs() < 1e-9,
                "rho {rho}, {k} steps back: {g:e}, rho^k = {want:e}"
            );
        }
        for w in back.windows(2) {
            match rho {
                r if r > 1.0 => assert!(w[1] > w[0], "rho {rho}: must grow"),
                r if r < 1.0 => assert!(w[1] < w[0], "rho {rho}: must shrink"),
                _ => assert!((w[1] - w[0]).abs() < 1e-12, "rho 1: must stay"),
            }
        }
        println!(
            "linear rho {rho}: |dL/dh_0| = {:.4e} (T = 50)",
            flow.at_start()
        );
    }
    // The same for every length T: the gradient reaching h_0 is rho^T.
    for t in [1, 5, 10, 20, 50] {
        for (rho, lo, hi) in [(1.5, 1.0, f64::MAX), (0.5, 0.0, 1.0)] {
            let g = gradient_flow(&FlowConfig::new(Psi::Identity, rho).steps(t), &Device::Cpu)?
                .at_start();
            assert!((g / rho.powi(t as i32) - 1.0).abs() < 1e-9, "T {t}: {g}");
            assert!(g > lo && g < hi, "T {t}: {g}");
        }
    }
    // (1): parameter > 1 → exploding: 1.5^50 ≈ 6.4e8; (2): parameter < 1 → vanishing.
    let at = |rho| gradient_flow(&FlowConfig::new(Psi::Identity, rho), &Device::Cpu);
    assert!(at(1.5)?.at_start() > 6e8);
    assert!(at(0.5)?.at_start() < 1e-15);
    Ok(())
}

#[test]
fn tanh_rnn_gradient_vanishes_below_one_and_tanh_prime_damps_it() -> R {
    let dev = Device::Cpu;
    for scale in [1e-3, 1.0] {
        for rho in RHOS {
            let cfg = FlowConfig::new(Psi::Tanh, rho).input_scale(scale);
            let flow = gradient_flow(&cfg, &dev)?;
            let back = flow.steps_back();
            // |tanh′| ≤ 1 and ‖Wᵀg‖ = ρ‖g‖: never more than the linear RNN's ρ^k.
            for (k, g) in back.iter().enumerate() {
                assert!(
                    *g <= rho.powi(k as i32) * (1.0 + 1e-9),
                    "rho {rho}, scale {scale}, k {k}: {g:e} above rho^k"
                );
            }
            let hmax = flow
                .states
                .iter()
                .flatten()
                .fold(0f64, |m, h| m.max(h.abs()));
            println!(
                "tanh rho {rho}, input scale {scale}: |dL/dh_0| = {:.4e} (linear {:.4e}), \
                 per step {:.3}, max |h_t| = {hmax:.3}",
                flow.at_start(),
                rho.powi(50),
                flow.at_start().powf(1.0 / 50.0)
            );
            // (2): parameter < 1 → vanishing, whatever the inputs.
            if rho < 1.0 {
                assert!(flow.at_start() <= rho.powi(50) * (1.0 + 1e-9));
                assert!(back.windows(2).all(|w| w[1] < w[0]), "rho {rho}");
            }
        }
    }
    let at = |rho, scale| {
        gradient_flow(
            &FlowConfig::new(Psi::Tanh, rho).input_scale(scale),
            &Device::Cpu,
        )
    };
    // Small inputs keep h near 0, where tanh′ ≈ 1: the tanh RNN behaves like the linear one
    // and ρ > 1 still grows (1.1^50 ≈ 117, 1.5^50 ≈ 6.4e8) ...
    assert!(at(1.1, 1e-3)?.at_start() > 50.0);
    assert!(at(1.5, 1e-3)?.at_start() > 1e3);
    // ... inputs of order 1 saturate the units (tanh′ → 0): ρ = 1.5 no longer explodes, it
    // vanishes; ρ = 0.9 vanishes far below the linear 0.9^50 ≈ 5.2e-3.
    let sat = at(1.5, 1.0)?;
    assert!(sat.at_start() < 1e-2, "{}", sat.at_start());
    assert!(sat.states.iter().flatten().any(|h| h.abs() > 0.99));
    assert!(at(0.9, 1.0)?.at_start() < 1e-9);
    Ok(())
}

/// The zoo's own `Rnn` (tanh, no bias, `weight_hh = ρQ`, `weight_ih = U`) gives the same
/// `‖∂L/∂h_0‖` as the analysis, on the fused CPU kernel (its hand-written BPTT) and on candle
/// ops.
#[test]
fn the_zoo_rnn_has_the_same_gradient_flow() -> R {
    for rho in [0.9, 1.5] {
        for scale in [1e-3, 1.0] {
            let cfg = FlowConfig::new(Psi::Tanh, rho).input_scale(scale);
            let want = gradient_flow(&cfg, &Device::Cpu)?.at_start();
            let wts = cfg.weights();
            let (h, f, t) = (cfg.hidden, cfg.input_size, cfg.steps);
            let mut varmap = candle_nn::VarMap::new();
            let vb = neka_common::init::seeded_var_builder(&varmap, DType::F64, &Device::Cpu);
            let rnn = Rnn::new(
                RnnConfig {
                    shape: neka_rnn::RecurrentConfig::new(f, h).bias(false),
                    ..RnnConfig::new(f, h)
                },
                vb.pp("rnn"),
            )?;
            varmap.set_one(
                "rnn.weight_hh_l0",
                Tensor::from_vec(wts.w.clone(), (h, h), &Device::Cpu)?,
            )?;
            varmap.set_one(
                "rnn.weight_ih_l0",
                Tensor::from_vec(wts.u.clone(), (h, f), &Device::Cpu)?,
            )?;
            let x = Tensor::from_vec(wts.x.clone(), (1, t, f), &Device::Cpu)?;
            let v = Tensor::from_vec(wts.v.clone(), (1, h), &Device::Cpu)?;
            for fused in [true, false] {
                let _path = neka_common::kernels::use_path(
                    neka_common::kernels::KernelPath::fused_if(fused),
                );
                let h0 = Var::zeros((1, 1, h), DType::F64, &Device::Cpu)?;
                let input = SeqInput {
                    h0: Some(h0.as_tensor()),
                    ..Default::default()
                };
                let out = rnn.forward_seq(&x, input, true)?;
                let loss = (out.h_n.get(0)? * &v)?.sum_all()?;
                let grads = loss.backward()?;
                let got = grads
                    .get(h0.as_tensor())
                    .ok_or("no gradient reached h0")?
                    .sqr()?
                    .sum_all()?
                    .sqrt()?
                    .to_scalar::<f64>()?;
                assert!(
                    (got / want - 1.0).abs() < 1e-9,
                    "rho {rho} scale {scale} fused {fused}: Rnn {got:e}, analysis {want:e}"
                );
            }
        }
    }
    Ok(())
}
