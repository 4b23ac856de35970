//! Speed of the encoder–decoder: training target tokens/s, and decoding sentences/s with
//! greedy search, beam search one sentence at a time (`beam`) and beam search batched across
//! sentences (`beam-batched`, what `translate` uses). One JSON line per case.
//!
//! ```text
//! cargo run --release --example bench_seq2seq -- [--model DIR] [--data-dir D] [--attention luong] [--iters 20] [--device cpu]
//! ```
//!
//! With `--model` the trained model decodes real Multi30k validation sentences (so it stops at
//! `<eos>` as in use); without, a freshly initialised model of the default size decodes the
//! same sentences (it rarely emits `<eos>`, so every search runs to its length limit).

use anyhow::Result;
use clap::Parser;
use neka_common::data::parallel::{multi30k_files, read_parallel, ParallelConfig};
use neka_common::data::Dataset;
use neka_common::optim::{Optimizer, OptimizerConfig};
use neka_common::train::{StepContext, TrainModel};
use neka_seq2seq::data::{Seq2SeqDataset, Seq2SeqVocabs};
use neka_seq2seq::{AttentionKind, CellType, Config, DecodeConfig, Translator};
use std::path::PathBuf;
use std::time::Instant;

neka::use_mimalloc!();

#[derive(Parser)]
struct Args {
    /// A trained model directory (else a fresh model of the default size).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Data root holding multi30k/ (default: $NEKA_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value = "luong")]
    attention: AttentionKind,
    #[arg(long, default_value = "lstm")]
    cell: CellType,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Training steps to time.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Sentences to decode.
    #[arg(long, default_value_t = 200)]
    sentences: usize,
    /// Beam size, 1 (greedy) to 64.
    #[arg(long, default_value_t = 5, value_parser = neka::cli::beam)]
    beam: usize,
    #[arg(long, default_value = "cpu")]
    device: neka_common::device::DeviceRequest,
}

fn main() -> Result<()> {
    neka::cli::init();
    let a = Args::parse();
    let dev = a.device.device()?;
    let root = neka_common::data::vision::data_root(a.data_dir.as_deref()).ok_or_else(|| {
        anyhow::anyhow!("pass --data-dir DIR (or set NEKA_DATA_DIR) with DIR/multi30k/")
    })?;
    let (ts, tt) = multi30k_files(&root, "train", "de", "en")?;
    let (vs, vt) = multi30k_files(&root, "val", "de", "en")?;
    let train = read_parallel(&ts, &tt, ParallelConfig::default())?;
    let val = read_parallel(&vs, &vt, ParallelConfig::default())?;
    let load = || -> Result<Translator> {
        Ok(match &a.model {
            Some(dir) => Translator::load(dir, &dev)?,
            None => {
                let cfg = Config {
                    cell: a.cell,
                    attention: a.attention,
                    ..Config::default()
                };
                let vocabs = Seq2SeqVocabs::build(&train.pairs, 2);
                Translator::fresh(cfg, vocabs, "multi30k-de-en", &dev)?
            }
        })
    };
    let translator = load()?;
    let cfg = *translator.model.config();
    let case = |v: serde_json::Value| println!("{v}");

    // Training: forward + backward + AdamW on shuffled, length-bucketed batches.
    let ds = Seq2SeqDataset::new(&train.pairs, &translator.vocabs, &dev);
    let mut rng = neka_common::rng::data_rng(0);
    let plan = ds.epoch_plan(a.batch_size, Some(&mut rng));
    let mut opt = Optimizer::new(OptimizerConfig::adamw(1e-4), &translator.varmap)?;
    let (mut tokens, mut secs) = (0usize, [0f64; 3]);
    for (i, idx) in plan.iter().take(a.iters + 2).enumerate() {
        let batch = ds.batch(idx)?;
        let t0 = Instant::now();
        let out = translator.model.step(&batch, &StepContext::train(0))?;
        let _ = out.loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = out.loss.backward()?;
        dev.synchronize()?;
        let t2 = Instant::now();
        opt.step(&grads)?;
        dev.synchronize()?;
        let t3 = Instant::now();
        if i >= 2 {
            secs[0] += (t1 - t0).as_secs_f64();
            secs[1] += (t2 - t1).as_secs_f64();
            secs[2] += (t3 - t2).as_secs_f64();
            tokens += batch.tgt_tokens();
        }
    }
    let total: f64 = secs.iter().sum();
    case(
        serde_json::json!({"case": "train", "device": a.device.to_string(), "attention": cfg.attention.to_string(), "cell": cfg.cell,
        "batch_size": a.batch_size, "steps": a.iters, "target_tokens_per_s": tokens as f64 / total,
        "seconds_forward_backward_optimizer": secs}),
    );

    // Decoding real validation sentences, with the weights as loaded (training moved them).
    let translator = load()?;
    let srcs: Vec<Vec<String>> = val
        .pairs
        .iter()
        .take(a.sentences)
        .map(|p| p.0.clone())
        .collect();
    let ids: Vec<Vec<u32>> = srcs
        .iter()
        .map(|s| translator.vocabs.encode_src(s))
        .collect();
    let cases = [("greedy", 1), ("beam", a.beam), ("beam-batched", a.beam)];
    for (name, beam) in cases {
        let dcfg = DecodeConfig {
            beam,
            ..DecodeConfig::default()
        };
        let t0 = Instant::now();
        let hyps = if name == "beam" {
            // One sentence at a time (its beams batched): what `beam` always measured.
            ids.iter()
                .map(|s| neka_seq2seq::beam_search(&translator.model, s, &dcfg))
                .collect::<candle_core::Result<Vec<_>>>()?
        } else {
            translator.translate_tokens(&srcs, &dcfg)?
        };
        let s = t0.elapsed().as_secs_f64();
        let out_tokens: usize = hyps.iter().map(|h| h.ids.len()).sum();
        case(
            serde_json::json!({"case": name, "device": a.device.to_string(), "beam": beam,
            "trained": a.model.is_some(), "sentences": srcs.len(), "sentences_per_s": srcs.len() as f64 / s,
            "output_tokens": out_tokens}),
        );
    }
    Ok(())
}
