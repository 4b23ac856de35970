//! Forward + backward of a bidirectional 1-layer LSTM: neka against candle-nn's built-in
//! `candle_nn::rnn::lstm` run per step (forward and reversed), same data, same process.
//! Prints one JSON line per implementation, then one with the ratio.
//!
//! `cargo run --release --example bench_lstm -- [--batch 32] [--steps 50] [--input 100] [--hidden 128] [--iters 10]`
//!
//! Cases: `neka` (fused CPU kernel), `neka-candle-ops` (neka's runner with the time loop built
//! from candle ops, what GPUs run), `candle-nn` (`LSTM::step` per time step, both directions).
//! One iteration = forward, `loss = Σ output ⊙ g`, backward (gradients of all weights and the
//! input); no optimizer step. tokens/s = B·T / seconds per iteration.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::rnn::{Direction, LSTMConfig, LSTMState, RNN};
use candle_nn::{VarBuilder, VarMap};
use clap::Parser;
use neka_lstm::{Lstm, LstmConfig, SeqInput};
use std::time::Instant;

neka::use_mimalloc!();

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 100)]
    input: usize,
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// Timed iterations per case (after 2 warm-up iterations).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Only the neka cases (for profiling).
    #[arg(long)]
    neka_only: bool,
}

fn time(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..2 {
        f()?;
    }
    let t0 = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    Ok(t0.elapsed().as_secs_f64() / iters as f64)
}

fn candle_direction(lstm: &candle_nn::rnn::LSTM, x: &Tensor, reverse: bool) -> Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    let mut state: LSTMState = lstm.zero_state(b)?;
    let mut hs = vec![None; t];
    let order: Vec<usize> = if reverse {
        (0..t).rev().collect()
    } else {
        (0..t).collect()
    };
    for s in order {
        state = lstm.step(&x.narrow(1, s, 1)?.squeeze(1)?, &state)?;
        hs[s] = Some(state.h().clone());
    }
    let hs: Vec<Tensor> = hs.into_iter().map(|h| h.expect("ran")).collect();
    Ok(Tensor::stack(&hs, 1)?)
}

fn main() -> Result<()> {
    neka::cli::init();
    let a = Args::parse();
    let dev = Device::Cpu;
    let tokens = (a.batch * a.steps) as f64;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (a.batch, a.steps, a.input), &dev)?)?;
    let g = Tensor::randn(0f32, 1., (a.batch, a.steps, 2 * a.hidden), &dev)?;
    let case = |name: &str, secs: f64| {
        println!(
            "{{\"case\": \"{name}\", \"batch\": {}, \"steps\": {}, \"input\": {}, \"hidden\": {}, \"ms_per_iter\": {:.2}, \"tokens_per_s\": {:.0}}}",
            a.batch, a.steps, a.input, a.hidden, secs * 1e3, tokens / secs
        );
    };

    // neka: one bidirectional layer
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let lstm = Lstm::new(LstmConfig::new(a.input, a.hidden).bidirectional(true), vb)?;
    let mut neka = 0.0;
    let secs = time(a.iters, || {
        let out = lstm.forward_seq(x.as_tensor(), SeqInput::default(), false)?;
        anyhow::ensure!(out.output.dim(0)? == a.batch);
        Ok(())
    })?;
    case("neka-forward-only", secs);
    let paths: &[bool] = if a.neka_only { &[true] } else { &[true, false] };
    for &fused in paths {
        let _path =
            neka_common::kernels::use_path(neka_common::kernels::KernelPath::fused_if(fused));
        let secs = time(a.iters, || {
            let out = lstm.forward_seq(x.as_tensor(), SeqInput::default(), true)?;
            let grads = (out.output * &g)?.sum_all()?.backward()?;
            anyhow::ensure!(grads.get(x.as_tensor()).is_some());
            Ok(())
        })?;
        case(if fused { "neka" } else { "neka-candle-ops" }, secs);
        if fused {
            neka = secs;
        }
    }
    if a.neka_only {
        return Ok(());
    }

    // candle-nn: LSTM::step per time step, forward and reversed
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let fwd = candle_nn::rnn::lstm(a.input, a.hidden, LSTMConfig::default(), vb.pp("fwd"))?;
    let rev_cfg = LSTMConfig {
        direction: Direction::Backward,
        ..LSTMConfig::default()
    };
    let rev = candle_nn::rnn::lstm(a.input, a.hidden, rev_cfg, vb.pp("rev"))?;
    let candle = time(a.iters, || {
        let out = Tensor::cat(
            &[
                candle_direction(&fwd, x.as_tensor(), false)?,
                candle_direction(&rev, x.as_tensor(), true)?,
            ],
            D::Minus1,
        )?;
        let grads = (out * &g)?.sum_all()?.backward()?;
        anyhow::ensure!(grads.get(x.as_tensor()).is_some());
        Ok(())
    })?;
    case("candle-nn", candle);
    println!(
        "{{\"case\": \"speedup\", \"neka_vs_candle_nn\": {:.2}, \"threads\": {}}}",
        candle / neka,
        candle_core::utils::get_num_threads()
    );
    Ok(())
}
