//! neka's RMSprop and warm-up-cosine schedule reproduce PyTorch's values.
//! Fixture: `scripts/make_optim_fixtures.py` (torch 2.15), committed as
//! tests/fixtures/pytorch/optim.safetensors.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use neka_common::checkpoint;
use neka_common::optim::{LrSchedule, Optimizer, OptimizerConfig, RmsProp, WarmupCosine};
use std::collections::HashMap;
use std::path::Path;

fn fixture() -> HashMap<String, Tensor> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch/optim.safetensors");
    checkpoint::load_tensors(&path, &Device::Cpu).unwrap().0
}

/// Largest `|a − b| / max(|b|, 1e-3)` over the elements.
fn max_rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
        .fold(0.0, f64::max)
}

/// The hyper-parameters of the script's CASES (`torch.optim.RMSprop` keyword arguments).
fn case(name: &str) -> RmsProp {
    let d = RmsProp {
        lr: 0.01,
        alpha: 0.99,
        eps: 1e-8,
        weight_decay: 0.0,
        momentum: 0.0,
        centered: false,
    };
    match name {
        "default" => d,
        "momentum_decay" => RmsProp {
            alpha: 0.9,
            weight_decay: 0.1,
            momentum: 0.9,
            ..d
        },
        "centered" => RmsProp {
            lr: 0.005,
            centered: true,
            eps: 1e-6,
            ..d
        },
        "centered_momentum_decay" => RmsProp {
            lr: 0.02,
            alpha: 0.95,
            weight_decay: 0.05,
            momentum: 0.5,
            centered: true,
            ..d
        },
        other => panic!("no case {other}"),
    }
}

/// Six RMSprop steps on `loss = Σ c·θ³` (f64), each θ compared with PyTorch's.
#[test]
fn rmsprop_matches_pytorch() {
    let fx = fixture();
    let (theta0, c) = (&fx["rmsprop_theta0"], &fx["rmsprop_c"]);
    assert_eq!(theta0.dtype(), DType::F64);
    for name in [
        "default",
        "momentum_decay",
        "centered",
        "centered_momentum_decay",
    ] {
        let want = &fx[&format!("rmsprop_{name}")];
        let vm = VarMap::new();
        let w = Var::from_tensor(theta0).unwrap();
        vm.data().lock().unwrap().insert("w".into(), w.clone());
        let cfg = OptimizerConfig::RmsProp(case(name));
        cfg.validate().unwrap();
        let mut opt = Optimizer::new(cfg, &vm).unwrap();
        for step in 1..want.dim(0).unwrap() {
            let loss = (w.as_tensor().powf(3.0).unwrap() * c)
                .unwrap()
                .sum_all()
                .unwrap();
            opt.backward_step(&loss).unwrap();
            let got: Vec<f64> = w.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let exp: Vec<f64> = want
                .get(step)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let err = max_rel_err(&got, &exp);
            assert!(
                err < 1e-6,
                "rmsprop {name}, step {step}: relative error {err:e}"
            );
        }
        let slots = opt.state_tensors().len();
        let c = case(name);
        assert_eq!(
            slots,
            1 + (c.momentum > 0.0) as usize + c.centered as usize,
            "{name}"
        );
    }
}

/// The learning rate of every epoch of `warmup-cosine` equals PyTorch's
/// `SequentialLR([LinearLR(start_factor=1/(W+1), total_iters=W), CosineAnnealingLR(T_max=T−W)])`.
#[test]
fn warmup_cosine_matches_pytorch() {
    let fx = fixture();
    for (w, t, eta_min) in [(1, 5, 0.0), (2, 10, 0.0), (3, 8, 0.001)] {
        let key = format!("warmup_cosine_{w}_{t}_{eta_min:?}");
        let want: Vec<f64> = fx[&key].to_vec1().unwrap();
        let sched = LrSchedule::WarmupCosine(WarmupCosine {
            warmup: w,
            t_max: t,
            eta_min,
        });
        sched.validate().unwrap();
        if eta_min == 0.0 {
            assert_eq!(
                LrSchedule::parse(&format!("warmup-cosine:{w}:{t}"), 99).unwrap(),
                sched
            );
        }
        let got: Vec<f64> = (0..t).map(|e| sched.lr_at(0.1, e)).collect();
        let err = max_rel_err(&got, &want);
        assert!(
            err < 1e-6,
            "{key}: relative error {err:e}\n{got:?}\n{want:?}"
        );
    }
}
