//! The lecture's claim, measured: an Elman RNN cannot carry information over many steps
//! because BPTT multiplies `T` Jacobians `diag(tanh') W`, so ∂L/∂h_t vanishes as `t` moves
//! away from the loss; the LSTM's additive cell state keeps it alive. And: gradients can also
//! *explode*, which gradient-norm clipping tames. (`cargo run --example vanishing_gradients`.)
//!
//! Task ([`first_token_task`], "remember the first token"): a sequence of `T` one-hot symbols
//! whose first symbol is one of [`CLASSES`] classes and whose `T − 1` other symbols are random
//! distractors; the answer is the first symbol (chance: 25 %). Many-to-one: the network reads
//! the whole sequence, then classifies from its final state.
//!
//! * [`lengths_experiment`] — test accuracy against `T`, RNN vs LSTM (`accuracy.csv`,
//!   `accuracy_vs_length.png`), and the mean ‖∂L/∂h_t‖ against `t` ([`grad_norms`],
//!   `grad_norms.csv`, `grad_norms.png`) at initialisation and after training;
//! * [`clipping_experiment`] — loss and gradient norm per step of a ReLU Elman RNN started at
//!   `W = gain·I` (IRNN) and trained with SGD, with and without clipping the gradient norm to 1
//!   (`clipping.csv`, `clipping.png`).
//!
//! The LSTM starts with the "chrono" forget-gate bias (Tallec & Ollivier 2018) by default
//! ([`set_forget_bias`]); `pytorch` keeps PyTorch's init, a number sets the classic constant.

use candle_core::{DType, Device, Module, Tensor, Var, D};
use neka_common::checkpoint::CheckpointInfo;
use neka_common::data::LabeledDataset;
use neka_common::metrics::{plot_lines, Series};
use neka_common::optim::{LrSchedule, OptimizerConfig};
use neka_common::train::{evaluate, Classifier, RunOptions, TrainConfig, Trainer};
use neka_common::{Error, Result};
use neka_lstm::{AnyRecurrent, CellType, ManyToOne, RecurrentConfig, SeqInput, SequenceEncoder};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Classes of the first-token task (chance: 1 / CLASSES).
pub const CLASSES: usize = 4;

/// The experiments' settings (the example's flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sequence lengths T to train on.
    pub lengths: Vec<usize>,
    /// Distinct distractor symbols (at least 1).
    pub distractors: usize,
    /// Cells to compare.
    pub cells: Vec<CellType>,
    /// `H`, hidden units of every cell.
    pub hidden: usize,
    /// Initial forget-gate bias of the LSTM: a number, `chrono` or `pytorch`.
    pub forget_bias: String,
    /// Training sequences per length.
    pub train_size: usize,
    /// Test sequences per length (‖∂L/∂h_t‖ is averaged over the first 256 of them).
    pub test_size: usize,
    /// Training epochs per cell and length.
    pub epochs: usize,
    /// Sequences per batch, in both experiments.
    pub batch_size: usize,
    /// AdamW learning rate of the lengths experiment.
    pub lr: f64,
    /// T at which ‖∂L/∂h_t‖ is measured (one of `lengths`).
    pub grad_length: usize,
    /// T of the clipping experiment.
    pub clip_length: usize,
    /// W_hh = gain · I at the start of the clipping experiment.
    pub clip_gain: f64,
    /// SGD learning rate of the clipping experiment.
    pub clip_lr: f64,
    /// Epochs of the clipping experiment.
    pub clip_epochs: usize,
    /// Seed of the data, the initial weights and the batch order.
    pub seed: u64,
    /// Where the CSV files, plots and runs go.
    pub out: PathBuf,
}

impl Settings {
    /// One-hot symbols per step: the classes and the distractors.
    pub fn symbols(&self) -> usize {
        CLASSES + self.distractors
    }
}

/// `n` sequences of length `t` over `symbols = CLASSES + distractors` one-hot symbols:
/// x `(n, t, symbols)`, y `(n)` = the first symbol.
pub fn first_token_task(n: usize, t: usize, symbols: usize, seed: u64) -> Result<LabeledDataset> {
    use rand::Rng;
    let mut rng = neka_common::rng::data_rng(seed);
    let mut x = vec![0f32; n * t * symbols];
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let class = rng.random_range(0..CLASSES);
        y.push(class as u32);
        for s in 0..t {
            let sym = if s == 0 {
                class
            } else {
                rng.random_range(CLASSES..symbols)
            };
            x[(i * t + s) * symbols + sym] = 1.0;
        }
    }
    Ok(LabeledDataset {
        x: Tensor::from_vec(x, (n, t, symbols), &Device::Cpu)?,
        y: Tensor::from_vec(y, n, &Device::Cpu)?,
    })
}

/// A recurrent network read many-to-one: the final state classifies.
pub type Model = ManyToOne<AnyRecurrent>;

/// A seeded `cell` network for `symbols` inputs (parameters `rnn.*`, `fc.*`).
pub fn build(
    cell: CellType,
    symbols: usize,
    hidden: usize,
    varmap: &candle_nn::VarMap,
) -> Result<Model> {
    let vb = neka_common::init::seeded_var_builder(varmap, DType::F32, &Device::Cpu);
    let rnn = AnyRecurrent::new(cell, RecurrentConfig::new(symbols, hidden), vb.pp("rnn"))?;
    Ok(ManyToOne::new(rnn, CLASSES, vb)?)
}

/// Mean over the batch of ‖∂ℓ_b/∂h_t‖ for every t, ℓ_b = one sequence's cross-entropy. The
/// network is run one step at a time and each h_t gets a zero-valued variable added
/// (`h_t + z_t`), so that ∂L/∂z_t = ∂L/∂h_t is kept by candle's backward pass.
pub fn grad_norms(model: &Model, data: &LabeledDataset, n: usize) -> Result<Vec<f64>> {
    let x = data.x.narrow(0, 0, n)?;
    let y = data.y.narrow(0, 0, n)?;
    let t = x.dim(1)?;
    let hidden = model.encoder.config().hidden_size;
    let mut probes = Vec::with_capacity(t);
    let (mut h, mut c): (Option<Tensor>, Option<Tensor>) = (None, None);
    for s in 0..t {
        let input = SeqInput {
            lengths: None,
            h0: h.as_ref(),
            c0: c.as_ref(),
        };
        let out = model.encoder.encode(&x.narrow(1, s, 1)?, input, false)?;
        let z = Var::zeros((1, n, hidden), DType::F32, &Device::Cpu)?;
        h = Some((out.h_n + z.as_tensor())?);
        c = out.c_n;
        probes.push(z);
    }
    let logits = model.fc.forward(&h.expect("t >= 1").get(0)?)?;
    let log_p = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let loss = log_p.gather(&y.unsqueeze(1)?, 1)?.sum_all()?.neg()?; // Σ_b ℓ_b
    let grads = loss.backward()?;
    probes
        .iter()
        .map(|z| {
            let g = grads
                .get(z.as_tensor())
                .ok_or_else(|| {
                    Error::config("gradient probe", "no gradient reached a hidden state")
                })?
                .get(0)?;
            Ok(g.sqr()?.sum(1)?.sqrt()?.mean_all()?.to_scalar::<f32>()? as f64)
        })
        .collect()
}

fn train_config(
    s: &Settings,
    epochs: usize,
    optimizer: OptimizerConfig,
    clip: Option<f64>,
) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: s.batch_size,
        eval_batch_size: 1000,
        optimizer,
        schedule: LrSchedule::Constant,
        clip_grad_norm: clip,
        seed: s.seed,
        ..TrainConfig::default()
    }
}

/// Quiet runs with the step log on (the clipping plot reads it).
fn options() -> RunOptions {
    RunOptions {
        log_steps: true,
        ..RunOptions::quiet()
    }
}

/// (a) accuracy against T, and (b) ‖∂L/∂h_t‖ at T = grad_length.
pub fn lengths_experiment(a: &Settings, report: &mut dyn FnMut(String)) -> Result<()> {
    let symbols = a.symbols();
    let mut acc_csv = String::from("cell,T,test_accuracy,train_seconds\n");
    let mut grad_csv = String::from("cell,when,t,grad_norm\n");
    let mut acc_series: Vec<Series> = Vec::new();
    let mut grad_series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for &cell in &a.cells {
        let mut points = Vec::new();
        for &t in &a.lengths {
            let train = first_token_task(a.train_size, t, symbols, a.seed + t as u64)?;
            let test = first_token_task(a.test_size, t, symbols, a.seed + 1_000_000 + t as u64)?;
            neka_common::rng::seed(a.seed);
            let varmap = candle_nn::VarMap::new();
            let model = build(cell, symbols, a.hidden, &varmap)?;
            if cell == CellType::Lstm && a.forget_bias != "pytorch" {
                set_forget_bias(&varmap, a.hidden, &a.forget_bias, t)?;
            }
            if t == a.grad_length {
                let g = grad_norms(&model, &test, 256)?;
                for (s, v) in g.iter().enumerate() {
                    writeln!(grad_csv, "{cell},init,{},{v}", s + 1)
                        .expect("a String takes any text");
                }
                grad_series.push((format!("{cell} at init"), log_points(&g)));
            }
            let info = CheckpointInfo::new(
                &format!("first-token-{cell}"),
                &serde_json::json!({ "length": t }),
                "first-token",
            )?;
            let dir = a.out.join(format!("runs/{cell}-T{t}"));
            let cfg = train_config(a, a.epochs, OptimizerConfig::adamw(a.lr), Some(1.0));
            let started = std::time::Instant::now();
            let mut trainer = Trainer::new(cfg, &varmap, info, &dir)?.with_options(options());
            trainer.fit(&Classifier(&model), &train, None::<&LabeledDataset>)?;
            let secs = started.elapsed().as_secs_f64();
            // the final weights (no validation set: the last epoch's model)
            let acc = evaluate(&Classifier(&model), &test, 1000)?.accuracy;
            report(format!(
                "{cell:>4} T = {t:>3}: test accuracy {:.1}% ({secs:.1} s)",
                100.0 * acc
            ));
            writeln!(acc_csv, "{cell},{t},{acc},{secs:.2}").expect("a String takes any text");
            points.push((t as f64, 100.0 * acc));
            if t == a.grad_length {
                let g = grad_norms(&model, &test, 256)?;
                for (s, v) in g.iter().enumerate() {
                    writeln!(grad_csv, "{cell},trained,{},{v}", s + 1)
                        .expect("a String takes any text");
                }
                grad_series.push((format!("{cell} trained"), log_points(&g)));
            }
        }
        acc_series.push(Series {
            label: match cell {
                CellType::Rnn => "Elman RNN",
                CellType::RnnRelu => "Elman RNN (ReLU)",
                CellType::Lstm => "LSTM",
                CellType::Gru => "GRU",
            },
            points,
        });
    }
    write(&a.out.join("accuracy.csv"), &acc_csv)?;
    acc_series.push(Series {
        label: "chance",
        points: a
            .lengths
            .iter()
            .map(|&t| (t as f64, 100.0 / CLASSES as f64))
            .collect(),
    });
    plot_lines(
        &a.out.join("accuracy_vs_length.png"),
        "sequence length T",
        &[("remember the first token", "test accuracy (%)", acc_series)],
    )?;
    if !grad_series.is_empty() {
        write(&a.out.join("grad_norms.csv"), &grad_csv)?;
        let series = grad_series
            .iter()
            .map(|(l, p)| Series {
                label: l,
                points: p.clone(),
            })
            .collect();
        plot_lines(
            &a.out.join("grad_norms.png"),
            "time step t",
            &[(
                &format!("‖∂L/∂h_t‖, T = {}", a.grad_length),
                "log10 gradient norm",
                series,
            )],
        )?;
    }

    Ok(())
}

/// (c) exploding gradients and clipping: ReLU Elman RNN, W_hh = gain·I, SGD.
pub fn clipping_experiment(a: &Settings, report: &mut dyn FnMut(String)) -> Result<()> {
    let symbols = a.symbols();
    let train = first_token_task(a.train_size, a.clip_length, symbols, a.seed + 7)?;
    let mut clip_csv = String::from("run,step,loss,grad_norm\n");
    let mut loss_series = Vec::new();
    let mut norm_series = Vec::new();
    for clip in [None, Some(1.0)] {
        let name = if clip.is_some() {
            "clipped at 1"
        } else {
            "no clipping"
        };
        neka_common::rng::seed(a.seed);
        let varmap = candle_nn::VarMap::new();
        let model = build(CellType::RnnRelu, symbols, a.hidden, &varmap)?;
        let eye = (Tensor::eye(a.hidden, DType::F32, &Device::Cpu)? * a.clip_gain)?;
        varmap.data().lock().expect("varmap lock")["rnn.weight_hh_l0"].set(&eye)?;
        let info = CheckpointInfo::new(
            "first-token-rnn-relu",
            &serde_json::json!({ "length": a.clip_length }),
            "first-token",
        )?;
        let dir = a.out.join(format!(
            "runs/clipping-{}",
            if clip.is_some() { "on" } else { "off" }
        ));
        let cfg = train_config(a, a.clip_epochs, OptimizerConfig::sgd(a.clip_lr), clip);
        let mut trainer = Trainer::new(cfg, &varmap, info, &dir)?.with_options(options());
        let outcome = match trainer.fit(&Classifier(&model), &train, None::<&LabeledDataset>) {
            Ok(_) => "finished".to_string(),
            Err(neka_common::Error::NonFiniteLoss(_)) => {
                format!(
                    "diverged (non-finite loss) at step {}",
                    trainer.step_log().len()
                )
            }
            Err(e) => return Err(e),
        };
        let log = trainer.step_log();
        let max_norm = log
            .iter()
            .map(|s| s.grad_norm)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let last = log
            .iter()
            .rev()
            .find(|s| s.loss.is_finite())
            .map_or(f64::NAN, |s| s.loss);
        report(format!("clipping experiment, {name}: {outcome}; largest gradient norm {max_norm:.3e}; last finite loss {last:.4}"));
        for s in log {
            writeln!(clip_csv, "{name},{},{},{}", s.step, s.loss, s.grad_norm)
                .expect("a String takes any text");
        }
        // log10, floored at 1e-8 (a loss of exactly 0 happens in f32), non-finite steps left out
        let log10 = |v: f64| v.is_finite().then(|| v.max(1e-8).log10());
        loss_series.push((
            name,
            log.iter()
                .filter_map(|s| Some((s.step as f64, log10(s.loss)?)))
                .collect::<Vec<_>>(),
        ));
        norm_series.push((
            name,
            log.iter()
                .filter_map(|s| Some((s.step as f64, log10(s.grad_norm)?)))
                .collect::<Vec<_>>(),
        ));
    }
    write(&a.out.join("clipping.csv"), &clip_csv)?;
    let to_series = |v: &[(&'static str, Vec<(f64, f64)>)]| {
        v.iter()
            .map(|(l, p)| Series {
                label: l,
                points: p.clone(),
            })
            .collect::<Vec<_>>()
    };
    plot_lines(
        &a.out.join("clipping.png"),
        "optimizer step",
        &[
            ("training loss", "log10 loss", to_series(&loss_series)),
            (
                "gradient norm (before clipping)",
                "log10 ‖g‖",
                to_series(&norm_series),
            ),
        ],
    )?;
    Ok(())
}

/// Sets the forget-gate slice `[H, 2H)` of `bias_ih_l0` (and zeroes it in `bias_hh_l0`):
/// a constant, or `chrono` for sequences of length `t` (then the input gate gets `−b_f`).
pub fn set_forget_bias(varmap: &candle_nn::VarMap, h: usize, how: &str, t: usize) -> Result<()> {
    let forget: Vec<f32> = match how {
        "chrono" => {
            use rand::Rng;
            let hi = (t.max(3) - 1) as f64;
            neka_common::rng::with_rng(|r| {
                (0..h)
                    .map(|_| r.random_range(1.0..hi).ln() as f32)
                    .collect()
            })
        }
        v => vec![
            v.parse::<f32>().map_err(|_| Error::config(
                "forget_bias",
                format!("a number, `chrono` or `pytorch`, got `{v}`"),
            ))?;
            h
        ],
    };
    let data = varmap.data().lock().expect("varmap lock");
    for name in ["rnn.bias_ih_l0", "rnn.bias_hh_l0"] {
        let var = &data[name];
        let mut b: Vec<f32> = var.as_tensor().to_vec1()?;
        let ih = name.ends_with("ih_l0");
        for j in 0..h {
            b[h + j] = if ih { forget[j] } else { 0.0 };
            if how == "chrono" {
                b[j] = if ih { -forget[j] } else { 0.0 };
            }
        }
        var.set(&Tensor::from_vec(b, 4 * h, &Device::Cpu)?)?;
    }
    Ok(())
}

fn log_points(g: &[f64]) -> Vec<(f64, f64)> {
    g.iter()
        .enumerate()
        .map(|(s, v)| ((s + 1) as f64, v.max(1e-30).log10()))
        .collect()
}

fn write(path: &Path, text: &str) -> Result<()> {
    neka_common::checkpoint::write_atomic(path, text.as_bytes())
}
