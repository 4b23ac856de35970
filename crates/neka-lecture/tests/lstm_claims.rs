//! The lecture notes' claims about the LSTM, checked on real numbers (issue 16, §3):
//!
//! - the forward pass is sequential (as for the Elman RNN: perturb x_k, watch h_t);
//! - "LSTM이 Vanishing Gradient를 해결한 방식": along the cell state ("conveyor belt")
//!   `C_t = f_t ⊙ C_{t−1} + i_t ⊙ C~_t`, so `∂C_T/∂C_0 = Π_t f_t` elementwise — a product of
//!   sigmoids in (0, 1): no explosion, and little vanishing while f ≈ 1.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use neka_lecture::gradient_flow::{self as analysis, gradient_flow, FlowConfig, Psi};
use neka_lstm::{Lstm, LstmCell, LstmConfig, SeqInput};
use neka_rnn::cell::Cell;

type R = Result<(), Box<dyn std::error::Error>>;

const DEV: Device = Device::Cpu;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn tensor(v: Vec<f64>, shape: &[usize]) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, shape, &DEV)
}

/// An `Lstm` of `f` inputs and `h` units in f64 under `lstm.`, PyTorch init.
fn lstm(f: usize, h: usize) -> candle_core::Result<(Lstm, VarMap)> {
    let varmap = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, DType::F64, &DEV);
    let net = Lstm::new(LstmConfig::new(f, h), vb.pp("lstm"))
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    Ok((net, varmap))
}

/// [`lstm`] with the recurrent weights `V = weight_hh = 0`.
fn lstm_without_recurrent_weights(f: usize, h: usize) -> candle_core::Result<(Lstm, VarMap)> {
    let (net, mut varmap) = lstm(f, h)?;
    varmap.set_one(
        "lstm.weight_hh_l0",
        Tensor::zeros((4 * h, h), DType::F64, &DEV)?,
    )?;
    Ok((net, varmap))
}

/// `∂(Σ_j c_T[j]) / ∂c_0`, flattened.
fn gradient_wrt(c_t: &Tensor, c0: &Var) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let grads = c_t.sum_all()?.backward()?;
    Ok(grads
        .get(c0.as_tensor())
        .ok_or("no gradient")?
        .flatten_all()?
        .to_vec1()?)
}

/// `∂(Σ_j C_T[j]) / ∂C_0` through the zoo's `Lstm` (the fused kernel or the candle-op loop,
/// as selected), with `C_0 = 0` given as `c0`.
fn cell_state_gradient(
    net: &Lstm,
    x: &Tensor,
    h: usize,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let c0 = Var::zeros((1, 1, h), DType::F64, &DEV)?;
    let input = SeqInput {
        c0: Some(c0.as_tensor()),
        ..Default::default()
    };
    let out = net.forward_seq(x, input, true)?;
    gradient_wrt(&out.c_n.ok_or("no c_n")?, &c0)
}

/// The tensor of variable `name` (the lock is released before returning).
fn var(varmap: &VarMap, name: &str) -> Tensor {
    let data = varmap.data().lock().unwrap();
    data[name].as_tensor().clone()
}

fn get(varmap: &VarMap, name: &str) -> candle_core::Result<Vec<f64>> {
    var(varmap, name).flatten_all()?.to_vec1()
}

fn sci(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|d| format!("{d:.1e}")).collect();
    format!("[{}]", parts.join(", "))
}

#[test]
fn lstm_forward_pass_is_sequential() -> R {
    let (t, f, h) = (12, 4, 16);
    let (net, _varmap) = lstm(f, h)?;
    let x = tensor(analysis::gaussian(t * f, 5), &[1, t, f])?;
    let run = |x: &Tensor| -> candle_core::Result<Tensor> {
        Ok(net.forward_seq(x, SeqInput::default(), false)?.output)
    };
    let moved = |k: usize| -> candle_core::Result<Vec<f64>> {
        let bump = Tensor::zeros((1, t, f), DType::F64, &DEV)?.slice_assign(
            &[0..1, k - 1..k, 0..f],
            &(Tensor::ones((1, 1, f), DType::F64, &DEV)? * 0.1)?,
        )?;
        let d = (run(&x)? - run(&(&x + bump)?)?)?
            .abs()?
            .max(2)?
            .squeeze(0)?;
        d.to_vec1::<f64>()
    };
    for fused in [true, false] {
        let _path =
            neka_common::kernels::use_path(neka_common::kernels::KernelPath::fused_if(fused));
        let d1 = moved(1)?;
        println!("fused {fused}: |Δh_t| after moving x_1: {}", sci(&d1));
        assert!(d1.iter().all(|&d| d > 1e-9), "x_1 reaches every h_t");
        let k = 6;
        let dk = moved(k)?;
        println!("fused {fused}: |Δh_t| after moving x_{k}: {}", sci(&dk));
        for (s, d) in dk.iter().enumerate() {
            if s + 1 < k {
                assert_eq!(*d, 0.0, "moving x_{k} changed h_{}", s + 1);
            } else {
                assert!(*d > 1e-9, "moving x_{k} left h_{} unchanged", s + 1);
            }
        }
    }
    Ok(())
}

/// `f_t[j] = σ((W_f x_t)_j + b_f[j])` for every t, from the weights in plain f64 (gate order
/// i, f, g, o: W_f is rows H … 2H of `weight_ih`), assuming `weight_hh = 0`.
fn forget_gates(varmap: &VarMap, x: &[f64], t: usize, f: usize, h: usize) -> Vec<Vec<f64>> {
    let w = get(varmap, "lstm.weight_ih_l0").unwrap();
    let (bi, bh) = (
        get(varmap, "lstm.bias_ih_l0").unwrap(),
        get(varmap, "lstm.bias_hh_l0").unwrap(),
    );
    (0..t)
        .map(|s| {
            (0..h)
                .map(|j| {
                    let r = h + j;
                    let a: f64 = (0..f).map(|k| w[r * f + k] * x[s * f + k]).sum();
                    sigmoid(a + bi[r] + bh[r])
                })
                .collect()
        })
        .collect()
}

fn product(gates: &[Vec<f64>], h: usize) -> Vec<f64> {
    (0..h)
        .map(|j| gates.iter().map(|g| g[j]).product())
        .collect()
}

fn close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len());
    for (j, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * b.abs().max(1e-300),
            "{what}: unit {j}: {a:e} vs Π f = {b:e}"
        );
    }
}

/// With the recurrent weights `V = weight_hh = 0`, `C_t` depends on `C_{t−1}` only through
/// `f_t ⊙ C_{t−1}`, so autograd's ∂(Σ_j C_T[j])/∂C_0 must be Π_t f_t exactly.
#[test]
fn cell_state_gradient_is_the_product_of_forget_gates() -> R {
    let (t, f, h) = (20, 4, 8);
    let (net, varmap) = lstm_without_recurrent_weights(f, h)?;
    let xv = analysis::gaussian(t * f, 11);
    let want = product(&forget_gates(&varmap, &xv, t, f, h), h);
    println!("Π f_t (T = {t}): {}", sci(&want));
    let x = tensor(xv.clone(), &[1, t, f])?;

    // (a) The cell, step by step, from candle ops: LstmCell::step.
    let w_ih = var(&varmap, "lstm.weight_ih_l0");
    let b = (var(&varmap, "lstm.bias_ih_l0") + var(&varmap, "lstm.bias_hh_l0"))?;
    let c0 = Var::zeros((1, h), DType::F64, &DEV)?;
    let mut state = vec![
        Tensor::zeros((1, h), DType::F64, &DEV)?,
        c0.as_tensor().clone(),
    ];
    let rec = Tensor::zeros((1, 4 * h), DType::F64, &DEV)?; // V h_{t−1} = 0
    for s in 0..t {
        let gx = x
            .get(0)?
            .narrow(0, s, 1)?
            .matmul(&w_ih.t()?)?
            .broadcast_add(&b)?;
        state = LstmCell.step(&gx, &rec, &state)?;
    }
    close(
        &gradient_wrt(&state[1], &c0)?,
        &want,
        1e-10,
        "LstmCell::step",
    );

    // (b) The zoo's Lstm with c0 as input: the fused kernel's hand-written BPTT
    // (dC_{t−1} = dC ⊙ f) and the candle-op loop.
    for fused in [true, false] {
        let _path =
            neka_common::kernels::use_path(neka_common::kernels::KernelPath::fused_if(fused));
        let got = cell_state_gradient(&net, &x, h)?;
        close(&got, &want, 1e-10, &format!("Lstm, fused {fused}"));
    }
    Ok(())
}

/// With recurrent weights `V ≠ 0`, the gradient along the cell-state path alone (h_{t−1}
/// detached, so the gates count as given) is still Π_t f_t, with f_t the gate values of the run.
#[test]
fn cell_state_path_with_recurrent_weights_is_the_product_of_forget_gates() -> R {
    let (t, f, h) = (20, 4, 8);
    let (_net, varmap) = lstm(f, h)?;
    let (w_ih, w_hh) = (
        var(&varmap, "lstm.weight_ih_l0"),
        var(&varmap, "lstm.weight_hh_l0"),
    );
    let (b_ih, b_hh) = (
        var(&varmap, "lstm.bias_ih_l0"),
        var(&varmap, "lstm.bias_hh_l0"),
    );
    let x = tensor(analysis::gaussian(t * f, 13), &[t, f])?;
    let c0 = Var::zeros((1, h), DType::F64, &DEV)?;
    let mut state = vec![
        Tensor::zeros((1, h), DType::F64, &DEV)?,
        c0.as_tensor().clone(),
    ];
    let mut want = vec![1.0; h];
    for s in 0..t {
        let gx = x
            .narrow(0, s, 1)?
            .matmul(&w_ih.t()?)?
            .broadcast_add(&b_ih)?;
        let rec = state[0].detach().matmul(&w_hh.t()?)?.broadcast_add(&b_hh)?;
        let f_t = candle_nn::ops::sigmoid(&(&gx + &rec)?.narrow(1, h, h)?)?;
        for (p, g) in want.iter_mut().zip(f_t.flatten_all()?.to_vec1::<f64>()?) {
            *p *= g;
        }
        state = LstmCell.step(&gx, &rec, &state)?;
    }
    println!("Π f_t (T = {t}, V ≠ 0, h detached): {}", sci(&want));
    close(
        &gradient_wrt(&state[1], &c0)?,
        &want,
        1e-10,
        "cell-state path",
    );
    Ok(())
}

/// The notes: "f가 sigmoid의 output이 되므로 1에 가까울수록 vanishing이 최소화됨". With the
/// forget bias at 6 (σ(6) ≈ 0.9975) the cell-state gradient over 50 steps stays near 1; an
/// Elman RNN with spectral radius 0.9 has lost its gradient over the same 50 steps.
#[test]
fn open_forget_gate_keeps_the_gradient_that_the_elman_rnn_loses() -> R {
    let (t, f, h) = (50, 4, 8);
    let (net, mut varmap) = lstm_without_recurrent_weights(f, h)?;
    let xv = analysis::gaussian(t * f, 17);
    // PyTorch's init (forget bias ≈ 0, f ≈ 0.5): the cell state forgets too.
    let closed = product(&forget_gates(&varmap, &xv, t, f, h), h);
    let mut b = get(&varmap, "lstm.bias_ih_l0")?;
    b[h..2 * h].iter_mut().for_each(|v| *v = 6.0);
    varmap.set_one("lstm.bias_ih_l0", tensor(b, &[4 * h])?)?;
    let mut b = get(&varmap, "lstm.bias_hh_l0")?;
    b[h..2 * h].iter_mut().for_each(|v| *v = 0.0);
    varmap.set_one("lstm.bias_hh_l0", tensor(b, &[4 * h])?)?;
    let open = product(&forget_gates(&varmap, &xv, t, f, h), h);
    let elman_tanh = gradient_flow(&FlowConfig::new(Psi::Tanh, 0.9).steps(t), &DEV)?.at_start();
    let elman_linear =
        gradient_flow(&FlowConfig::new(Psi::Identity, 0.9).steps(t), &DEV)?.at_start();
    println!("T = {t}: Π f with b_f = 6: {}", sci(&open));
    println!("T = {t}: Π f with PyTorch init: {}", sci(&closed));
    println!("T = {t}: Elman rho 0.9: tanh {elman_tanh:.2e}, linear {elman_linear:.2e}");
    assert!(open.iter().all(|&p| p > 0.8 && p < 1.0), "{open:?}");
    assert!(closed.iter().all(|&p| p < 1e-6), "{closed:?}");
    assert!(elman_linear < 0.9f64.powi(50) * 1.000_001 && elman_tanh < elman_linear);
    let worst_open = open.iter().fold(1f64, |m, &p| m.min(p));
    assert!(worst_open > 100.0 * elman_linear);

    // The real network (its weights are the Vars just set) agrees: ∂ΣC_T/∂C_0 = Π f over
    // the 50 steps.
    let got = cell_state_gradient(&net, &tensor(xv, &[1, t, f])?, h)?;
    close(&got, &open, 1e-10, "Lstm, b_f = 6");
    Ok(())
}
