//! The notes' "RNN의 한계점", drawn: (1) parameter > 1 → the gradient explodes, (2) parameter
//! < 1 → it vanishes. For `h_t = ψ(W h_{t−1} + U x_t)` with `W = ρ·Q` (Q orthogonal, so the
//! spectral radius is ρ) and `L = v · h_T`, plots log10 ‖∂L/∂h_{T−k}‖ against k, the steps
//! back through time, measured by candle's autograd ([`neka_lecture::gradient_flow`]):
//!
//! - linear RNN (ψ = identity): exactly ρ^k — a straight line of slope log10 ρ;
//! - tanh RNN, inputs of order 1: the units saturate, tanh′ = 1 − h² ≪ 1, and even ρ = 1.5
//!   vanishes;
//! - tanh RNN, small inputs (h near 0, tanh′ ≈ 1): like the linear RNN until the state grows
//!   into saturation — ρ > 1 grows, but never past ρ^k.
//!
//! ```text
//! cargo run --example gradient_flow -- --out docs/lecture
//! ```
//!
//! Writes `rnn_gradient_flow.png` to `--out` and prints one JSON line per (cell, ρ).
//! Checked by `crates/neka-lecture/tests/rnn_claims.rs`.

use anyhow::Result;
use candle_core::Device;
use clap::Parser;
use neka_common::plot::{plot_lines_with, Legend, Series};
use neka_lecture::gradient_flow::{gradient_flow, FlowConfig, Psi};
use std::path::PathBuf;

neka::use_mimalloc!();

#[derive(Parser)]
#[command(about = "Exploding and vanishing gradients of linear and tanh RNNs, W = rho * Q")]
struct Args {
    /// Spectral radii ρ of the recurrent weight W = ρQ.
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.9,1.0,1.1,1.5")]
    rhos: Vec<f64>,
    /// T, the sequence length (steps of BPTT).
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// H, hidden units.
    #[arg(long, default_value_t = 32)]
    hidden: usize,
    /// Input scales of the tanh panels: the standard deviation of each unit's U x_t.
    #[arg(long, value_delimiter = ',', default_value = "1,0.001")]
    tanh_input_scales: Vec<f64>,
    /// Seed of Q, U, the inputs and v.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "runs/gradient_flow")]
    out: PathBuf,
}

/// A labelled curve: (label, points).
type Curve = (String, Vec<(f64, f64)>);

/// One panel: a curve per ρ; prints the JSON line of each.
fn panel(a: &Args, psi: Psi, input_scale: f64) -> Result<Vec<Curve>> {
    let mut curves = Vec::new();
    for &rho in &a.rhos {
        let cfg = FlowConfig::new(psi, rho)
            .steps(a.steps)
            .hidden(a.hidden)
            .input_scale(input_scale)
            .seed(a.seed);
        let flow = gradient_flow(&cfg, &Device::Cpu)?;
        let max_h = flow
            .states
            .iter()
            .flatten()
            .fold(0f64, |m, h| m.max(h.abs()));
        println!(
            "{}",
            serde_json::json!({
                "cell": psi.name(),
                "rho": rho,
                "input_scale": input_scale,
                "T": a.steps,
                "grad_norm_at_h0": flow.at_start(),
                "rho_pow_T": rho.powi(a.steps as i32),
                "max_abs_h": max_h,
            })
        );
        let points = flow
            .steps_back()
            .iter()
            .enumerate()
            .map(|(k, g)| (k as f64, g.max(f64::MIN_POSITIVE).log10()))
            .collect();
        curves.push((format!("ρ = {rho}"), points));
    }
    Ok(curves)
}

fn main() -> std::process::ExitCode {
    neka::cli::main(run)
}

fn run() -> Result<()> {
    let a = Args::parse();
    anyhow::ensure!(
        a.steps >= 1 && a.hidden >= 1,
        "--steps and --hidden must be positive"
    );
    let mut panels = vec![(
        "linear RNN: exactly ρ^k".to_string(),
        panel(&a, Psi::Identity, 1.0)?,
    )];
    for &s in &a.tanh_input_scales {
        let what = if s >= 0.1 { "saturates" } else { "h ≈ 0" };
        panels.push((
            format!("tanh RNN, |Ux| ~ {s} ({what})"),
            panel(&a, Psi::Tanh, s)?,
        ));
    }
    let y_label = "log10 ‖∂L/∂h_(T−k)‖";
    let series: Vec<(&str, &str, Vec<Series>)> = panels
        .iter()
        .map(|(title, curves)| {
            let s = curves
                .iter()
                .map(|(label, points)| Series {
                    label,
                    points: points.clone(),
                })
                .collect();
            (title.as_str(), y_label, s)
        })
        .collect();
    let path = a.out.join("rnn_gradient_flow.png");
    plot_lines_with(
        &path,
        "k = T − t, steps back through time",
        &series,
        Legend::LowerLeft,
    )?;
    println!("wrote {}", path.display());
    Ok(())
}
