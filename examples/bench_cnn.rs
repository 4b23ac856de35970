//! CPU/GPU throughput of the CNNs: one JSON line per case.
//!
//! `cargo run --release --example bench_cnn -- [--device cpu] [--steps 20] [--conv all|kernels|im2col|candle|both]`
//!
//! Cases: training images/s (forward + backward + AdamW step, batch 64) and inference
//! images/s (batch 1000, no dropout) for MnistNet and LeNet-5, per CPU implementation:
//! `kernels` (`KernelPath::Fused`: neka's conv / max-pool kernels, dense layers, fused
//! cross-entropy and in-place AdamW: the default everywhere), `im2col` (`KernelPath::Im2col`:
//! the im2col graph of candle ops) and `candle` (`KernelPath::CandleOps`: candle's ops
//! throughout); `both` = im2col and candle. `peak_rss_mb` is the process's high-water mark
//! after the case (it only grows, so run one case per process for isolated figures).

use anyhow::Result;
use candle_core::{DType, ModuleT, Tensor};
use clap::Parser;
use neka_cnn::CnnModel;
use neka_common::data::LabeledBatch;
use neka_common::device::DeviceRequest;
use neka_common::optim::{Optimizer, OptimizerConfig};
use neka_common::train::{Classifier, StepContext, TrainModel};
use std::time::Instant;

neka::use_mimalloc!();

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "cpu")]
    device: DeviceRequest,
    /// Timed training steps per case (after 2 warm-up steps).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Timed inference batches per case (after 1 warm-up).
    #[arg(long, default_value_t = 3)]
    infer_batches: usize,
    /// Keep timing (more steps / batches) until each timed loop has run this long: small
    /// models finish 20 steps in a few milliseconds, too short to time on a noisy machine.
    #[arg(long, default_value_t = 2.0)]
    min_seconds: f64,
    /// Which CPU implementation: all, kernels, im2col, candle, or both (= im2col and candle).
    #[arg(long, default_value = "all")]
    conv: String,
    /// Only this model (mnist-net or lenet5).
    #[arg(long)]
    model: Option<String>,
}

fn main() -> Result<()> {
    neka::cli::init();
    let a = Args::parse();
    let device = a.device.device()?;
    let convs: Vec<&str> = match a.conv.as_str() {
        "all" => vec!["kernels", "im2col", "candle"],
        "both" => vec!["im2col", "candle"],
        c => vec![c],
    };
    let models: Vec<&str> = match &a.model {
        Some(m) => vec![m.as_str()],
        None => neka_cnn::MODEL_NAMES.to_vec(),
    };
    for name in models {
        for conv in &convs {
            let path: neka_common::kernels::KernelPath = conv.parse()?;
            let _path = neka_common::kernels::use_path(path);
            neka_common::rng::seed(0);
            let varmap = candle_nn::VarMap::new();
            let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, &device);
            let (model, _) = CnnModel::from_name(name, 1, 28, 10, vb)?;
            let mut opt = Optimizer::new(OptimizerConfig::adamw(1e-3), &varmap)?;
            let batch = |n: usize| -> Result<LabeledBatch> {
                Ok(LabeledBatch {
                    x: Tensor::randn(0f32, 1.0, (n, 1, 28, 28), &device)?,
                    y: Tensor::from_vec(
                        (0..n as u32).map(|i| i % 10).collect::<Vec<_>>(),
                        n,
                        &device,
                    )?,
                })
            };
            let train = batch(64)?;
            let step = |opt: &mut Optimizer| -> Result<()> {
                let out = Classifier(&model).step(&train, &StepContext::train(0))?;
                opt.backward_step(&out.loss)?;
                Ok(())
            };
            for _ in 0..2 {
                step(&mut opt)?;
            }
            device.synchronize()?;
            let t = Instant::now();
            let mut steps = 0;
            while steps < a.steps || t.elapsed().as_secs_f64() < a.min_seconds {
                step(&mut opt)?;
                steps += 1;
            }
            device.synchronize()?;
            let train_ips = (steps * 64) as f64 / t.elapsed().as_secs_f64();

            let infer = batch(1000)?;
            model
                .forward_t(&infer.x, false)?
                .sum_all()?
                .to_scalar::<f32>()?;
            let t = Instant::now();
            let mut infer_batches = 0;
            while infer_batches < a.infer_batches
                || (a.infer_batches > 0 && t.elapsed().as_secs_f64() < a.min_seconds)
            {
                model
                    .forward_t(&infer.x, false)?
                    .sum_all()?
                    .to_scalar::<f32>()?;
                infer_batches += 1;
            }
            let infer_ips = (infer_batches * 1000) as f64 / t.elapsed().as_secs_f64();
            // What the layers ran: neka's kernels, im2col or candle's conv (CUDA), by the rule.
            let path = neka_cnn::conv::conv_path(&neka_cnn::Conv2dConfig::new(1, 32, 3), &infer.x);
            let conv_name = format!("{path:?}").to_lowercase();
            println!(
                "{}",
                serde_json::json!({
                    "model": name,
                    "device": neka_common::device::device_name(&device),
                    "conv": conv_name,
                    "threads": candle_core::utils::get_num_threads(),
                    "train_batch": 64,
                    "train_steps": steps,
                    "train_images_per_sec": (train_ips * 10.0).round() / 10.0,
                    "infer_batch": 1000,
                    "infer_batches": infer_batches,
                    "infer_images_per_sec": (infer_ips * 10.0).round() / 10.0,
                    "peak_rss_mb": neka_common::metrics::peak_rss_bytes().map(|b| b / (1 << 20)),
                })
            );
            if !device.is_cpu() {
                break;
            }
        }
    }
    Ok(())
}
