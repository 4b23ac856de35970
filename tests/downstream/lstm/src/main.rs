//! A user's project on neka-lstm and neka-common, written from their READMEs:
//!
//! 1. a bidirectional-LSTM sequence classifier trained with neka's `Trainer` on data made here
//!    (does the first feature of a sequence sum to more than zero?), test accuracy ≥ 0.95;
//! 2. the saved model reloaded strictly: the same logits, the same accuracy;
//! 3. the shipped part-of-speech tagger loaded and tagging a sentence;
//! 4. neka's LSTM inside a plain candle-nn model (embedding → LSTM → linear) trained by
//!    candle-nn's AdamW.
//!
//! Run: `cargo run --manifest-path tests/downstream/lstm/Cargo.toml` (from neka's root).

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{loss, AdamW, Embedding, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use neka_common::checkpoint::{load_model, CheckpointInfo};
use neka_common::data::LabeledDataset;
use neka_common::optim::OptimizerConfig;
use neka_common::train::{evaluate, Classifier, RunOptions, TrainConfig, Trainer};
use neka_lstm::{LoadedTagger, Lstm, LstmConfig, ManyToOne, SeqInput};
use std::path::Path;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `n` sequences of 12 steps × 3 features in [-1, 1); class 1 when feature 0 sums to ≥ 0.
fn sign_data(n: usize, dev: &Device) -> candle_core::Result<LabeledDataset> {
    let x = neka_common::rng::uniform_vec(n * 12 * 3, -1.0, 1.0);
    let x = Tensor::from_vec(x, (n, 12, 3), dev)?;
    let y = x.narrow(2, 0, 1)?.sum((1, 2))?.ge(0.0)?.to_dtype(DType::U32)?;
    Ok(LabeledDataset { x, y })
}

fn accuracy(logits: &Tensor, y: &Tensor) -> candle_core::Result<f32> {
    let hits = logits.argmax(1)?.eq(y)?.to_dtype(DType::F32)?;
    hits.mean_all()?.to_scalar::<f32>()
}

fn trained_and_reloaded(dev: &Device, out: &Path) -> Result<()> {
    neka_common::rng::seed(1);
    let (train, val, test) = (sign_data(2048, dev)?, sign_data(256, dev)?, sign_data(512, dev)?);
    let cfg = LstmConfig::new(3, 16).bidirectional(true);
    let build = |vb: VarBuilder| -> neka_lstm::Result<ManyToOne<Lstm>> {
        Ok(ManyToOne::new(Lstm::new(cfg, vb.pp("lstm"))?, 2, vb.clone())?)
    };
    let varmap = VarMap::new();
    let model = build(neka_common::init::seeded_var_builder(&varmap, DType::F32, dev))?;
    let info = CheckpointInfo::new("bilstm-sign", &cfg, "synthetic")?;
    let train_cfg = TrainConfig::new(6, 32, OptimizerConfig::adamw(1e-2));
    let mut trainer = Trainer::new(train_cfg, &varmap, info, out)?.with_options(RunOptions::quiet());
    let report = trainer.fit(&Classifier(&model), &train, Some(&val))?;
    trainer.load_best()?;
    let acc = evaluate(&Classifier(&model), &test, 256)?.accuracy;
    println!(
        "1. BiLSTM trained with Trainer: best epoch {:?}, val accuracy {:.4}, test accuracy {acc:.4}",
        report.best_epoch,
        report.best_val_accuracy.unwrap_or(f64::NAN)
    );
    assert!(acc >= 0.95, "test accuracy {acc} < 0.95");

    let (loaded, _vars) = load_model(out, dev, build)?;
    let (a, b) = (model.forward_t(&test.x, false)?, loaded.forward_t(&test.x, false)?);
    let diff = (a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let reloaded = evaluate(&Classifier(&loaded), &test, 256)?.accuracy;
    println!("2. reloaded from {}: test accuracy {reloaded:.4}, max |Δlogit| {diff:e}", out.display());
    assert_eq!(diff, 0.0);
    assert_eq!(reloaded, acc);
    Ok(())
}

fn shipped_tagger(dev: &Device) -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../models/pos-bilstm-ewt");
    let tagger = LoadedTagger::load(&dir, dev)?;
    let tagged = tagger.tag_text(&["The cat sat on the mat ."])?;
    let (words, tags) = &tagged[0];
    let line: Vec<String> = words.iter().zip(tags).map(|(w, t)| format!("{w}/{t}")).collect();
    println!("3. shipped tagger: {}", line.join(" "));
    assert_eq!(tags, &["DET", "NOUN", "VERB", "ADP", "DET", "NOUN", "PUNCT"]);
    Ok(())
}

/// embedding (candle-nn) → LSTM (neka) → linear (candle-nn) over the last step.
struct Mixed {
    embed: Embedding,
    lstm: Lstm,
    out: Linear,
}

impl Mixed {
    fn logits(&self, ids: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = self.embed.forward(ids)?; // (B, T, E)
        let h = self.lstm.forward_seq(&x, SeqInput::default(), train)?.output; // (B, T, H)
        let last = h.narrow(1, h.dim(1)? - 1, 1)?.squeeze(1)?;
        self.out.forward(&last)
    }
}

fn mixed_model(dev: &Device) -> Result<()> {
    neka_common::rng::seed(2);
    // token sequences over 10 ids; class = whether id 7 occurs
    let n = 256;
    let ids: Vec<u32> = neka_common::rng::uniform_vec(n * 8, 0.0, 10.0).iter().map(|&v| v as u32).collect();
    let y: Vec<u32> = ids.chunks(8).map(|s| s.contains(&7) as u32).collect();
    let (ids, y) = (Tensor::from_vec(ids, (n, 8), dev)?, Tensor::from_vec(y, n, dev)?);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
    let model = Mixed {
        embed: candle_nn::embedding(10, 8, vb.pp("embed"))?,
        lstm: Lstm::new(LstmConfig::new(8, 16), vb.pp("lstm"))?,
        out: candle_nn::linear(16, 2, vb.pp("out"))?,
    };
    let mut opt = AdamW::new(varmap.all_vars(), ParamsAdamW { lr: 2e-2, ..Default::default() })?;
    let before = loss::cross_entropy(&model.logits(&ids, false)?, &y)?.to_scalar::<f32>()?;
    for _ in 0..60 {
        opt.backward_step(&loss::cross_entropy(&model.logits(&ids, true)?, &y)?)?;
    }
    let after = loss::cross_entropy(&model.logits(&ids, false)?, &y)?.to_scalar::<f32>()?;
    let acc = accuracy(&model.logits(&ids, false)?, &y)?;
    println!("4. candle-nn embedding + neka LSTM + candle-nn linear, candle-nn AdamW: loss {before:.3} -> {after:.3}, training accuracy {acc:.3}");
    assert!(after < 0.5 * before && acc >= 0.9, "loss {before} -> {after}, accuracy {acc}");
    Ok(())
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let out = tempfile::tempdir()?;
    trained_and_reloaded(&dev, out.path())?;
    shipped_tagger(&dev)?;
    mixed_model(&dev)?;
    println!("downstream-lstm: all checks passed");
    Ok(())
}
