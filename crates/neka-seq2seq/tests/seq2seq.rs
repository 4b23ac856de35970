//! The encoder–decoder on real Multi30k pairs (fixture): decoding invariants, padding,
//! overfitting, save / load.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use neka_common::data::parallel::{read_parallel, ParallelConfig};
use neka_common::data::Dataset;
use neka_common::train::{StepContext, TrainModel, Trainer};
use neka_seq2seq::data::{Seq2SeqDataset, Seq2SeqVocabs, SourceBatch};
use neka_seq2seq::{
    beam_search, beam_search_batch, greedy, AttentionKind, CellType, Config, DecodeConfig, Seq2Seq,
};
use neka_testing::{finite_difference_grad, max_abs_diff, overfit_config};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../neka-common/tests/fixtures/multi30k")
        .join(name)
}

type Pairs = Vec<(Vec<String>, Vec<String>)>;

fn pairs(n: usize) -> Pairs {
    let c = read_parallel(
        &fixture("train.de"),
        &fixture("train.en"),
        ParallelConfig::default(),
    )
    .unwrap();
    assert!(c.skipped.is_empty());
    c.pairs.into_iter().take(n).collect()
}

fn model(
    attention: AttentionKind,
    cell: CellType,
    vocabs: &Seq2SeqVocabs,
    seed: u64,
) -> (VarMap, Seq2Seq) {
    neka_common::rng::seed(seed);
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
    let cfg = Config {
        cell,
        src_vocab: vocabs.src.len(),
        tgt_vocab: vocabs.tgt.len(),
        embed_dim: 32,
        enc_hidden: 32,
        dec_hidden: 64,
        attention,
        dropout: 0.0,
        label_smoothing: 0.0,
        ..Config::default()
    };
    let m = Seq2Seq::new(cfg, vb).unwrap();
    (vm, m)
}

const KINDS: [AttentionKind; 4] = [
    AttentionKind::None,
    AttentionKind::Bahdanau,
    AttentionKind::Luong,
    AttentionKind::Dot,
];

#[test]
fn beam_search_batched_across_sentences_equals_one_sentence_at_a_time() {
    let p = pairs(40);
    let vocabs = Seq2SeqVocabs::build(&p, 1);
    let ds = Seq2SeqDataset::new(&p, &vocabs, &Device::Cpu);
    for kind in KINDS {
        for cell in [CellType::Lstm, CellType::Gru] {
            let (_vm, m) = model(kind, cell, &vocabs, 5);
            // Different lengths (padding in the batch), in no particular order.
            let srcs: Vec<&[u32]> = ds.pairs[..9].iter().map(|p| p.0.as_slice()).collect();
            for beam in [2, 4] {
                let cfg = DecodeConfig {
                    beam,
                    max_len_a: 0.5,
                    max_len_b: 4,
                    ..DecodeConfig::default()
                };
                let batched = beam_search_batch(&m, &srcs, &cfg).unwrap();
                assert_eq!(batched.len(), srcs.len());
                for (i, src) in srcs.iter().enumerate() {
                    let one = beam_search(&m, src, &cfg).unwrap();
                    let b = &batched[i];
                    assert_eq!(b.ids, one.ids, "{kind} {cell:?} beam {beam} sentence {i}");
                    assert!((b.log_prob - one.log_prob).abs() < 1e-4);
                    assert_eq!(b.attention.len(), one.attention.len());
                    for (x, y) in b.attention.iter().zip(&one.attention) {
                        assert_eq!(x.len(), src.len());
                        assert!(x.iter().zip(y).all(|(a, b)| (a - b).abs() < 1e-5));
                    }
                }
            }
        }
    }
}

#[test]
fn beam_one_is_greedy_and_attention_is_a_distribution_over_real_tokens() {
    let p = pairs(40);
    let vocabs = Seq2SeqVocabs::build(&p, 1);
    let ds = Seq2SeqDataset::new(&p, &vocabs, &Device::Cpu);
    for kind in KINDS {
        for cell in [CellType::Lstm, CellType::Gru] {
            let (_vm, m) = model(kind, cell, &vocabs, 7);
            let srcs: Vec<&[u32]> = ds.pairs[..6].iter().map(|p| p.0.as_slice()).collect();
            let batch = SourceBatch::new(&srcs, &Device::Cpu).unwrap();
            let cfg = DecodeConfig {
                beam: 1,
                max_len_b: 6,
                max_len_a: 0.0,
                ..DecodeConfig::default()
            };
            let g = greedy(&m, &batch, &cfg).unwrap();
            for (i, src) in srcs.iter().enumerate() {
                let b = beam_search(&m, src, &cfg).unwrap();
                assert_eq!(b.ids, g[i].ids, "{kind} {cell:?} sentence {i}");
                assert!((b.log_prob - g[i].log_prob).abs() < 1e-4);
                // Greedy in a padded batch = greedy alone.
                let alone =
                    greedy(&m, &SourceBatch::new(&[src], &Device::Cpu).unwrap(), &cfg).unwrap();
                assert_eq!(alone[0].ids, g[i].ids);
                if kind == AttentionKind::None {
                    assert!(g[i].attention.is_empty());
                    continue;
                }
                for row in &g[i].attention {
                    assert_eq!(row.len(), src.len(), "one weight per real source token");
                    let sum: f32 = row.iter().sum();
                    assert!((sum - 1.0).abs() < 1e-5, "weights sum to {sum}");
                }
            }
            // Padding gets exactly zero weight: decode the shortest sentence padded in the batch.
            if kind != AttentionKind::None {
                let (enc, state) = m.encode(&batch, false).unwrap();
                let y = m.bos(srcs.len(), &Device::Cpu).unwrap();
                let (_, alpha, _) = m.decode_step(&y, &state, &enc, false).unwrap();
                let a: Vec<Vec<f32>> = alpha.unwrap().to_vec2().unwrap();
                for (i, len) in batch.lengths.iter().enumerate() {
                    assert!(a[i][*len..].iter().all(|&w| w == 0.0));
                }
            }
        }
    }
}

#[test]
fn parallel_teacher_forcing_equals_step_by_step() {
    let p = pairs(20);
    let vocabs = Seq2SeqVocabs::build(&p, 1);
    let ds = Seq2SeqDataset::new(&p, &vocabs, &Device::Cpu);
    let batch = ds.batch(&(0..8).collect::<Vec<_>>()).unwrap();
    for kind in [
        AttentionKind::None,
        AttentionKind::Luong,
        AttentionKind::Dot,
    ] {
        let (_vm, m) = model(kind, CellType::Lstm, &vocabs, 5);
        let a = m.forward_parallel(&batch, false).unwrap();
        let b = m.forward_stepwise(&batch, 1.0, false).unwrap();
        let mask = batch.tgt_mask.unsqueeze(2).unwrap();
        let masked = |y: &Tensor| y.broadcast_mul(&mask).unwrap();
        let diff = max_abs_diff(&masked(&a), &masked(&b)).unwrap();
        assert!(diff < 1e-4, "{kind}: {diff}");
    }
    // Scheduled sampling runs and keeps the shape.
    let (_vm, m) = model(AttentionKind::Bahdanau, CellType::Gru, &vocabs, 5);
    let out = m.forward_batch(&batch, 0.5, true).unwrap();
    assert_eq!(out.dims()[..2], batch.tgt_in.dims()[..]);
}

#[test]
fn padded_source_positions_change_nothing() {
    let p = pairs(20);
    let vocabs = Seq2SeqVocabs::build(&p, 1);
    let ds = Seq2SeqDataset::new(&p, &vocabs, &Device::Cpu);
    let idx: Vec<usize> = (0..8).collect();
    let batch = ds.batch(&idx).unwrap();
    for kind in KINDS {
        let (_vm, m) = model(kind, CellType::Lstm, &vocabs, 3);
        let base = m.forward_batch(&batch, 1.0, false).unwrap();
        // Put real words (instead of <pad>) at every padded source position.
        let mut ids: Vec<Vec<u32>> = batch.src.ids.to_vec2().unwrap();
        for (row, &len) in ids.iter_mut().zip(&batch.src.lengths) {
            row[len..].iter_mut().for_each(|t| *t = 10);
        }
        let mut changed = batch.clone();
        changed.src.ids = Tensor::new(ids, &Device::Cpu).unwrap();
        let other = m.forward_batch(&changed, 1.0, false).unwrap();
        let diff = max_abs_diff(&base, &other).unwrap();
        assert!(diff < 1e-5, "{kind}: padding changed the logits by {diff}");
    }
}

#[test]
fn overfits_fifty_pairs_and_reloads_identically() {
    let p = pairs(50);
    let vocabs = Seq2SeqVocabs::build(&p, 1);
    let ds = Seq2SeqDataset::new(&p, &vocabs, &Device::Cpu);
    let (vm, m) = model(AttentionKind::Luong, CellType::Lstm, &vocabs, 11);
    let cfg = overfit_config(60, 10);
    let dir = tempfile::tempdir().unwrap();
    let info =
        neka_common::checkpoint::CheckpointInfo::new("seq2seq", m.config(), "fixture").unwrap();
    let mut t = Trainer::new(cfg, &vm, info.clone(), dir.path()).unwrap();
    t.fit(&m, &ds, None::<&Seq2SeqDataset>).unwrap();
    let srcs: Vec<&[u32]> = ds.pairs.iter().map(|p| p.0.as_slice()).collect();
    let batch = SourceBatch::new(&srcs, &Device::Cpu).unwrap();
    let dcfg = DecodeConfig::default();
    let out = greedy(&m, &batch, &dcfg).unwrap();
    let exact = out
        .iter()
        .zip(&ds.pairs)
        .filter(|(h, p)| vocabs.decode_tgt(&h.ids) == vocabs.decode_tgt(&p.1))
        .count();
    assert_eq!(exact, 50, "exact matches after training");

    // Save, reload into a fresh model, translate identically (greedy and beam 3).
    let model_dir = dir.path().join("saved");
    neka_common::checkpoint::save_model(&model_dir, &vm, &info).unwrap();
    let (vm2, m2) = model(AttentionKind::Luong, CellType::Lstm, &vocabs, 99);
    neka_common::checkpoint::load_into_varmap(&vm2, &model_dir.join("model.safetensors")).unwrap();
    let again = greedy(&m2, &batch, &dcfg).unwrap();
    assert_eq!(again, out);
    let b3 = DecodeConfig { beam: 3, ..dcfg };
    assert_eq!(
        beam_search(&m, srcs[0], &b3).unwrap(),
        beam_search(&m2, srcs[0], &b3).unwrap()
    );
}

#[test]
fn tied_output_shares_the_target_embedding_matrix() {
    let p = pairs(20);
    let vocabs = Seq2SeqVocabs::build(&p, 1);
    let ds = Seq2SeqDataset::new(&p, &vocabs, &Device::Cpu);
    let batch = ds.batch(&(0..8).collect::<Vec<_>>()).unwrap();
    for attention in [AttentionKind::None, AttentionKind::Luong] {
        let (vm, m) = model(attention, CellType::Lstm, &vocabs, 3);
        assert!(m.config().tie_embeddings);
        let names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        assert!(names.contains(&"tgt_embed.weight".to_string()), "{names:?}");
        assert!(names.contains(&"out.bias".to_string()), "{names:?}");
        assert!(!names.contains(&"out.weight".to_string()), "{names:?}");
        // The shared matrix gets gradient from the output layer even for target rows the
        // decoder never reads: here every target-vocabulary row is scored by the softmax.
        let loss = m.step(&batch, &StepContext::train(0)).unwrap().loss;
        let grads = loss.backward().unwrap();
        let w = vm.get(
            (vocabs.tgt.len(), 32),
            "tgt_embed.weight",
            candle_nn::Init::Const(0.),
            DType::F32,
            &Device::Cpu,
        );
        let g = grads
            .get(&w.unwrap())
            .expect("gradient of tgt_embed.weight");
        let row_norms: Vec<f32> = g.sqr().unwrap().sum(1).unwrap().to_vec1().unwrap();
        assert!(row_norms.iter().all(|&n| n > 0.0), "{attention}");
    }
    // A config saved before the option existed is an untied model.
    let cfg: Config = serde_json::from_str(r#"{"src_vocab": 10, "tgt_vocab": 10}"#).unwrap();
    assert!(!cfg.tie_embeddings);
    assert!(Config::default().tie_embeddings);
}

/// Central finite differences of the loss against the autograd gradient for the attention's
/// own parameters. Guards against ops without a backward pass (candle's fused
/// `softmax_last_dim` is one): the attention would silently never learn.
#[test]
fn attention_parameters_get_the_finite_difference_gradient() {
    let p = pairs(12);
    let vocabs = Seq2SeqVocabs::build(&p, 1);
    let ds = Seq2SeqDataset::new(&p, &vocabs, &Device::Cpu);
    let batch = ds.batch(&(0..4).collect::<Vec<_>>()).unwrap();
    // (W_q's gradient is ~1e-5 at initialisation, below what an f32 finite difference
    // resolves; it is checked to exist and be non-zero.)
    for (kind, param, check_fd) in [
        (AttentionKind::Luong, "attention.w_a.weight", true),
        (AttentionKind::Bahdanau, "attention.v.weight", true),
        (AttentionKind::Bahdanau, "attention.w_k.weight", true),
        (AttentionKind::Bahdanau, "attention.w_q.weight", false),
    ] {
        let (vm, m) = model(kind, CellType::Lstm, &vocabs, 11);
        let var = vm.data().lock().unwrap()[param].clone();
        let loss = |m: &Seq2Seq| m.step(&batch, &StepContext::eval()).unwrap().loss;
        let grads = loss(&m).backward().unwrap();
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{kind}: no gradient for {param}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // The three entries with the largest gradient.
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        assert!(g[order[0]].abs() > 0.0, "{kind} {param}: zero gradient");
        if !check_fd {
            continue;
        }
        let eps = 1e-2f32;
        let loss_at = || Ok(f64::from(loss(&m).to_scalar::<f32>()?));
        let fd = finite_difference_grad(&var, order[..3].iter().copied(), eps.into(), loss_at);
        for (&i, fd) in order[..3].iter().zip(fd.unwrap()) {
            let err = (fd - f64::from(g[i])).abs();
            assert!(
                err <= 0.1 * f64::from(g[i].abs()) + 1e-3,
                "{kind} {param}[{i}]: autograd {} vs finite difference {fd}",
                g[i]
            );
        }
    }
}
