//! Speed of the POS tagger (word + char BiLSTM → 2-layer BiLSTM): training tokens/s
//! (forward + backward + AdamW) and inference tokens/s, batches of 32 sentences bucketed by
//! length. One JSON line per case.
//!
//! ```text
//! cargo run --release --example bench_tagger -- [--data-dir D] [--cell lstm] [--iters 30] [--device cpu]
//! ```

use anyhow::Result;
use candle_core::DType;
use clap::Parser;
use neka_common::data::conllu;
use neka_common::data::tagging::{TaggingDataset, TaggingVocabConfig, TaggingVocabs};
use neka_common::data::Dataset;
use neka_common::optim::{Optimizer, OptimizerConfig};
use neka_common::train::{StepContext, TrainModel};
use neka_lstm::tagger::{Config, Tagger};
use neka_lstm::CellType;
use std::path::PathBuf;
use std::time::Instant;

neka::use_mimalloc!();

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "cpu")]
    device: neka_common::device::DeviceRequest,
    /// Data root holding ud-english-ewt/ (default: $NEKA_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Recurrent cell of the sentence and character networks.
    #[arg(long, default_value = "lstm")]
    cell: CellType,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Training steps to time (after 2 warm-up steps).
    #[arg(long, default_value_t = 30)]
    iters: usize,
}

fn main() -> Result<()> {
    neka::cli::init();
    let a = Args::parse();
    let dev = a.device.device()?;
    let bank = conllu::load_ewt(a.data_dir.as_deref())?;
    let vocabs = TaggingVocabs::build(&bank.train, TaggingVocabConfig::default());
    let train = TaggingDataset::new(&bank.train, &vocabs, &dev)?;
    let dev_set = TaggingDataset::new(&bank.dev, &vocabs, &dev)?;
    let cfg = Config {
        cell: a.cell,
        char_cell: a.cell,
        ..Config::default()
    }
    .with_vocabs(&vocabs);
    let varmap = candle_nn::VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, &dev);
    let mut model = Tagger::new(cfg, vb)?;
    model.set_word_counts(&vocabs.word_counts(&bank.train));
    let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();

    // Training on shuffled, length-bucketed batches.
    let mut rng = neka_common::rng::data_rng(0);
    let plan = train.epoch_plan(a.batch_size, Some(&mut rng));
    let mut opt = Optimizer::new(OptimizerConfig::adamw(2e-3), &varmap)?;
    let (mut tokens, mut secs) = (0usize, 0f64);
    for (i, idx) in plan.iter().take(a.iters + 2).enumerate() {
        let batch = train.batch(idx)?;
        let t0 = Instant::now();
        let out = model.step(&batch, &StepContext::train(0))?;
        let grads = out.loss.backward()?;
        opt.step(&grads)?;
        dev.synchronize()?;
        if i >= 2 {
            secs += t0.elapsed().as_secs_f64();
            tokens += batch.tokens();
        }
    }
    println!(
        "{}",
        serde_json::json!({"case": "train", "device": a.device.to_string(), "cell": a.cell, "parameters": params,
            "batch_size": a.batch_size, "steps": a.iters, "tokens": tokens,
            "tokens_per_s": tokens as f64 / secs})
    );

    // Inference over the whole dev set (25,147 tokens), same batching, no dropout.
    let t0 = Instant::now();
    let mut tokens = 0;
    for idx in dev_set.epoch_plan(a.batch_size, None) {
        let batch = dev_set.batch(&idx)?;
        tokens += batch.tokens();
        let _ = model.predict(&batch)?;
    }
    let s = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"case": "inference", "device": a.device.to_string(), "cell": a.cell, "batch_size": a.batch_size,
            "sentences": dev_set.len(), "tokens": tokens, "tokens_per_s": tokens as f64 / s})
    );
    Ok(())
}
