//! A user's project on neka-cnn and neka-common, written from their READMEs:
//!
//! 1. a small CNN of neka's layers (`conv2d`, `Pool2d`) with a candle-nn linear head, trained
//!    with neka's `Trainer` on images made here (which half is brighter?), test accuracy ≥ 0.95;
//! 2. the saved model reloaded strictly: the same logits;
//! 3. `MnistNet` trained a few steps by candle-nn's AdamW, the loss falling;
//! 4. the shipped MNIST model classifying MNIST test images.
//!
//! Run: `cargo run --manifest-path tests/downstream/cnn/Cargo.toml` (from neka's root).

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{loss, AdamW, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use neka_cnn::loaded_model::LoadedModel;
use neka_cnn::{conv2d, mnist_net, Conv2d, Conv2dConfig, MnistNet, Padding, Pool2d};
use neka_common::checkpoint::{load_model, CheckpointInfo};
use neka_common::data::LabeledDataset;
use neka_common::optim::OptimizerConfig;
use neka_common::train::{evaluate, Classifier, RunOptions, TrainConfig, Trainer};
use std::path::Path;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `n` noisy 1×16×16 images; class 1 when the right half is brighter, 0 when the left is.
fn halves(n: usize, dev: &Device) -> candle_core::Result<LabeledDataset> {
    let noise = neka_common::rng::uniform_vec(n * 16 * 16, 0.0, 1.0);
    let noise = Tensor::from_vec(noise, (n, 1, 16, 16), dev)?;
    let y = Tensor::from_vec((0..n as u32).map(|i| i % 2).collect::<Vec<_>>(), n, dev)?;
    let zeros = Tensor::zeros((1, 1, 16, 8), DType::F32, dev)?;
    let right = Tensor::cat(&[&zeros, &zeros.ones_like()?], 3)?; // 1 on the right half
    let side = y.to_dtype(DType::F32)?.reshape((n, 1, 1, 1))?;
    let bright = (side.broadcast_mul(&right)? + (1.0 - &side)?.broadcast_mul(&(1.0 - &right)?)?)?;
    Ok(LabeledDataset { x: (noise + (0.5 * bright)?)?, y })
}

/// conv 3×3 "same" → ReLU → max pool 2 → conv 3×3 → ReLU → max pool 2 → linear.
struct SmallCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: Pool2d,
    head: Linear,
}

impl SmallCnn {
    fn new(vb: VarBuilder) -> neka_cnn::Result<Self> {
        let same = |c_in, c_out| Conv2dConfig::new(c_in, c_out, 3).padding(Padding::Same);
        Ok(Self {
            conv1: conv2d(same(1, 8), vb.pp("conv1"))?,
            conv2: conv2d(same(8, 16), vb.pp("conv2"))?,
            pool: Pool2d::max(2),
            head: candle_nn::linear(16 * 4 * 4, 2, vb.pp("head"))?,
        })
    }
}

impl ModuleT for SmallCnn {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let x = self.pool.forward(&self.conv1.forward(x)?.relu()?)?; // (B, 8, 8, 8)
        let x = self.pool.forward(&self.conv2.forward(&x)?.relu()?)?; // (B, 16, 4, 4)
        self.head.forward(&x.flatten_from(1)?)
    }
}

fn trained_and_reloaded(dev: &Device, out: &Path) -> Result<()> {
    neka_common::rng::seed(3);
    let (train, val, test) = (halves(2048, dev)?, halves(256, dev)?, halves(512, dev)?);
    let varmap = VarMap::new();
    let model = SmallCnn::new(neka_common::init::seeded_var_builder(&varmap, DType::F32, dev))?;
    let info = CheckpointInfo::new("small-cnn", &serde_json::json!({ "image": 16 }), "halves")?;
    let cfg = TrainConfig::new(3, 32, OptimizerConfig::adamw(3e-3));
    let mut trainer = Trainer::new(cfg, &varmap, info, out)?.with_options(RunOptions::quiet());
    let report = trainer.fit(&Classifier(&model), &train, Some(&val))?;
    trainer.load_best()?;
    let acc = evaluate(&Classifier(&model), &test, 256)?.accuracy;
    println!(
        "1. small CNN (neka conv2d + Pool2d, candle-nn linear) trained with Trainer: best epoch {:?}, test accuracy {acc:.4}",
        report.best_epoch
    );
    assert!(acc >= 0.95, "test accuracy {acc} < 0.95");

    let (loaded, _vars) = load_model(out, dev, SmallCnn::new)?;
    let (a, b) = (model.forward_t(&test.x, false)?, loaded.forward_t(&test.x, false)?);
    let diff = (a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    println!("2. reloaded from {}: max |Δlogit| {diff:e}", out.display());
    assert_eq!(diff, 0.0);
    Ok(())
}

fn mnist_net_with_candle_adamw(dev: &Device) -> Result<()> {
    neka_common::rng::seed(4);
    let data = halves(64, dev)?;
    let x = data.x.upsample_nearest2d(28, 28)?; // MnistNet reads 28×28
    let varmap = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, dev);
    let net = MnistNet::new(&mnist_net::Config { num_classes: 2, ..Default::default() }, vb)?;
    let mut opt = AdamW::new(varmap.all_vars(), ParamsAdamW { lr: 1e-3, ..Default::default() })?;
    let loss_now = || -> candle_core::Result<f32> {
        loss::cross_entropy(&net.forward_t(&x, false)?, &data.y)?.to_scalar::<f32>()
    };
    let before = loss_now()?;
    for _ in 0..10 {
        opt.backward_step(&loss::cross_entropy(&net.forward_t(&x, true)?, &data.y)?)?;
    }
    let after = loss_now()?;
    println!("3. MnistNet, candle-nn AdamW, 10 steps: loss {before:.3} -> {after:.3}");
    assert!(after < 0.5 * before, "loss {before} -> {after}");
    Ok(())
}

fn shipped_model(dev: &Device) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let model = LoadedModel::load(&root.join("models/mnist-cnn"), dev)?;
    let data = root.join("crates/neka-common/tests/fixtures/mnist-sample");
    let mut right = 0;
    for i in 0..20 {
        let (x, what) = model.test_image(i, Some(&data))?;
        let top = model.top_k(&x, 1)?;
        right += what.ends_with(&format!("(label {})", top[0].0)) as usize;
    }
    println!("4. shipped models/mnist-cnn: {right}/20 MNIST test images right");
    assert!(right >= 19, "{right}/20");
    Ok(())
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let out = tempfile::tempdir()?;
    trained_and_reloaded(&dev, out.path())?;
    mnist_net_with_candle_adamw(&dev)?;
    shipped_model(&dev)?;
    println!("downstream-cnn: all checks passed");
    Ok(())
}
