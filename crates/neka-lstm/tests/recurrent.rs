//! The recurrent runner and its cells: finite-difference gradient checks of the fused kernel
//! (BPTT written by hand) in f64, packed-sequence semantics, fused vs candle-op paths, errors.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use neka_lstm::{
    AnyRecurrent, CellType, RecurrentConfig, RecurrentOutput, SeqInput, SequenceEncoder,
};
use neka_testing::{gradient_check, max_abs, max_abs_diff};

const CELLS: [CellType; 4] = [
    CellType::Rnn,
    CellType::RnnRelu,
    CellType::Lstm,
    CellType::Gru,
];

fn net(cell: CellType, cfg: RecurrentConfig, dtype: DType, seed: u64) -> (AnyRecurrent, VarMap) {
    neka_common::rng::seed(seed);
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, dtype, &Device::Cpu);
    (AnyRecurrent::new(cell, cfg, vb).unwrap(), vm)
}

fn randn(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    neka_common::rng::seed(seed);
    let n = shape.iter().product();
    let v = neka_common::rng::uniform_vec(n, -1.0, 1.0);
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// L = Σ output ⊙ Go + Σ h_n ⊙ Gh (+ Σ c_n ⊙ Gc): touches every output of the runner.
fn loss(out: &RecurrentOutput, go: &Tensor, gh: &Tensor, gc: &Tensor) -> Tensor {
    let mut l = ((&out.output * go).unwrap().sum_all().unwrap()
        + (&out.h_n * gh).unwrap().sum_all().unwrap())
    .unwrap();
    if let Some(c) = &out.c_n {
        l = (l + (c * gc).unwrap().sum_all().unwrap()).unwrap();
    }
    l
}

#[test]
fn fused_kernel_gradients_match_finite_differences() {
    let (b, t, f, h) = (3, 4, 3, 2);
    let lengths = [4usize, 1, 3];
    for cell in CELLS {
        for (layers, bi, bias) in [(2, true, true), (1, false, false)] {
            let cfg = RecurrentConfig {
                input_size: f,
                hidden_size: h,
                num_layers: layers,
                bidirectional: bi,
                bias,
                dropout: 0.0,
            };
            let (m, vm) = net(cell, cfg, DType::F64, 1);
            let ld = layers * cfg.directions();
            let x = Var::from_tensor(&randn(&[b, t, f], DType::F64, 2)).unwrap();
            let h0 = Var::from_tensor(&randn(&[ld, b, h], DType::F64, 3)).unwrap();
            let c0 = Var::from_tensor(&randn(&[ld, b, h], DType::F64, 4)).unwrap();
            let go = randn(&[b, t, cfg.output_size()], DType::F64, 5);
            let gh = randn(&[ld, b, h], DType::F64, 6);
            let gc = randn(&[ld, b, h], DType::F64, 7);
            let is_lstm = cell == CellType::Lstm;
            let eval = || -> Tensor {
                let input = SeqInput {
                    lengths: Some(&lengths),
                    h0: Some(h0.as_tensor()),
                    c0: is_lstm.then_some(c0.as_tensor()),
                };
                loss(
                    &m.encode(x.as_tensor(), input, false).unwrap(),
                    &go,
                    &gh,
                    &gc,
                )
            };
            let grads = eval().backward().unwrap();
            let mut vars: Vec<(String, Var)> =
                vm.data().lock().unwrap().clone().into_iter().collect();
            vars.push(("input".into(), x.clone()));
            vars.push(("h0".into(), h0.clone()));
            if is_lstm {
                vars.push(("c0".into(), c0.clone()));
            }
            let eps = 1e-6;
            let mut worst = 0f64;
            for (name, var) in &vars {
                let analytic = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{cell}: no gradient for {name}"));
                let loss = || eval().to_scalar::<f64>();
                for e in gradient_check(var, analytic, 0..var.elem_count(), eps, loss).unwrap() {
                    let (i, a, numeric) = (e.index, e.analytic, e.numeric);
                    let err = (numeric - a).abs() / (1.0 + a.abs());
                    assert!(
                        err < 1e-6,
                        "{cell} layers={layers} bi={bi} bias={bias}: ∂L/∂{name}[{i}] analytic {a} vs numeric {numeric}"
                    );
                    worst = worst.max(err);
                }
            }
            println!(
                "gradcheck {cell} layers={layers} bi={bi} bias={bias}: max rel err {worst:.1e}"
            );
        }
    }
}

#[test]
fn fused_kernel_and_candle_ops_agree_with_dropout_and_lengths() {
    let cfg = RecurrentConfig::new(5, 7)
        .num_layers(3)
        .bidirectional(true)
        .dropout(0.3);
    let x = randn(&[4, 9, 5], DType::F32, 11);
    let lengths = [9, 2, 5, 9];
    for cell in CELLS {
        let (m, _) = net(cell, cfg, DType::F32, 3);
        let run = |fused: bool| {
            let _path =
                neka_common::kernels::use_path(neka_common::kernels::KernelPath::fused_if(fused));
            neka_common::rng::seed(99); // same dropout masks
            let input = SeqInput {
                lengths: Some(&lengths),
                ..Default::default()
            };
            m.encode(&x, input, true).unwrap()
        };
        let (a, b) = (run(true), run(false));
        assert!(
            max_abs_diff(&a.output, &b.output).unwrap() < 1e-5,
            "{cell}: fused vs candle ops differ"
        );
        assert!(
            max_abs_diff(&a.h_n, &b.h_n).unwrap() < 1e-5,
            "{cell}: h_n differs"
        );
    }
}

#[test]
fn padding_is_invisible() {
    // A padded sequence gives the same outputs and final states as the sequence alone, whatever
    // the padding holds; outputs past its length are zero.
    let cfg = RecurrentConfig::new(3, 4).num_layers(2).bidirectional(true);
    for cell in CELLS {
        let (m, _) = net(cell, cfg, DType::F32, 5);
        let x = randn(&[2, 6, 3], DType::F32, 6);
        let noise = randn(&[2, 6, 3], DType::F32, 7);
        let lengths = [6, 3];
        let keep = Tensor::from_vec(
            (0..12)
                .map(|i| if i < 6 || i % 6 < 3 { 1f32 } else { 0. })
                .collect::<Vec<_>>(),
            (2, 6, 1),
            &Device::Cpu,
        )
        .unwrap();
        // same real tokens, different padding
        let x2 = (x.broadcast_mul(&keep).unwrap()
            + noise.broadcast_mul(&(1. - &keep).unwrap()).unwrap())
        .unwrap();
        let input = SeqInput {
            lengths: Some(&lengths),
            ..Default::default()
        };
        let a = m.encode(&x, input, false).unwrap();
        let b = m.encode(&x2, input, false).unwrap();
        assert_eq!(
            max_abs_diff(&a.output, &b.output).unwrap(),
            0.0,
            "{cell}: padding leaked into the output"
        );
        let pad = a.output.get(1).unwrap().narrow(0, 3, 3).unwrap();
        assert_eq!(
            max_abs(&pad).unwrap(),
            0.0,
            "{cell}: output past the length is not zero"
        );
        // the short sequence alone, at its true length
        let alone = m
            .encode(
                &x.get(1)
                    .unwrap()
                    .narrow(0, 0, 3)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                SeqInput::default(),
                false,
            )
            .unwrap();
        assert!(
            max_abs_diff(&a.h_n.narrow(1, 1, 1).unwrap(), &alone.h_n).unwrap() < 1e-6,
            "{cell}: h_n is not the true last step's"
        );
        let real = a.output.get(1).unwrap().narrow(0, 0, 3).unwrap();
        assert!(
            max_abs_diff(&real, &alone.output.get(0).unwrap()).unwrap() < 1e-6,
            "{cell}: the reverse direction did not start at the last real token"
        );
    }
}

#[test]
fn bad_inputs_are_named_errors() {
    let cfg = RecurrentConfig::new(3, 4);
    let (m, _) = net(CellType::Gru, cfg, DType::F32, 1);
    let x = randn(&[2, 5, 3], DType::F32, 1);
    let err = |input: SeqInput, x: &Tensor| m.encode(x, input, false).unwrap_err().to_string();
    assert!(err(SeqInput::default(), &randn(&[2, 5, 4], DType::F32, 1)).contains("input_size = 3"));
    for lengths in [&[5, 0][..], &[5, 6], &[5]] {
        let input = SeqInput {
            lengths: Some(lengths),
            ..Default::default()
        };
        assert!(err(input, &x).contains("lengths"), "{lengths:?}");
    }
    let h0 = Tensor::zeros((2, 2, 4), DType::F32, &Device::Cpu).unwrap();
    let c0 = Tensor::zeros((1, 2, 4), DType::F32, &Device::Cpu).unwrap();
    for (input, needle) in [
        (
            SeqInput {
                h0: Some(&h0),
                ..Default::default()
            },
            "h0 must have shape (L·D, B, H) = (1, 2, 4)",
        ),
        (
            SeqInput {
                c0: Some(&c0),
                ..Default::default()
            },
            "c0 is only for the LSTM",
        ),
    ] {
        let e = err(input, &x);
        assert!(e.contains(needle), "{e}");
    }
    let bad = RecurrentConfig {
        dropout: 1.0,
        ..cfg
    };
    let vm = VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let e = AnyRecurrent::new(CellType::Lstm, bad, vb)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dropout"), "{e}");
}

#[test]
fn pytorch_names_and_init() {
    let cfg = RecurrentConfig::new(3, 16)
        .num_layers(2)
        .bidirectional(true);
    let (_, vm) = net(CellType::Lstm, cfg, DType::F32, 1);
    let data = vm.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    assert_eq!(names.len(), 16);
    assert_eq!(data["weight_ih_l0"].dims(), &[64, 3]);
    assert_eq!(data["weight_ih_l1_reverse"].dims(), &[64, 32]);
    assert_eq!(data["bias_hh_l1"].dims(), &[64]);
    let bound = 1.0 / 4.0; // 1/√H
    for (name, v) in data.iter() {
        let m = v
            .as_tensor()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            m <= bound && m > 0.8 * bound,
            "{name}: max |w| = {m}, want U(±1/√H)"
        );
    }
}

#[test]
fn char_lm_learns_a_pattern_with_truncated_bptt_and_continues_it() {
    use neka_common::data::TokenStream;
    use neka_common::train::{TrainConfig, Trainer};
    use neka_common::vocab::{Vocab, UNK};
    use neka_lstm::char_lm::{CharLm, Config, Tbptt};
    let text: String = "hello world. ".repeat(200);
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let vocab = Vocab::build(&chars, 1, &[UNK]);
    let ids: Vec<u32> = chars.iter().map(|c| vocab.id(c).unwrap()).collect();
    let data = TokenStream::new(&ids, 8, 20, &Device::Cpu).unwrap();
    neka_common::rng::seed(0);
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
    let cfg = Config {
        vocab_size: vocab.len(),
        embed_dim: 16,
        hidden_size: 32,
        num_layers: 1,
        dropout: 0.0,
        ..Config::default()
    };
    let model = CharLm::new(cfg, vb).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tc = TrainConfig {
        epochs: 8,
        batch_size: 8,
        optimizer: neka_common::optim::OptimizerConfig::adamw(1e-2),
        clip_grad_norm: Some(1.0),
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(
        tc,
        &vm,
        neka_common::checkpoint::CheckpointInfo::new("char", &cfg, "t").unwrap(),
        dir.path(),
    )
    .unwrap();
    let report = trainer
        .fit(&Tbptt::new(&model), &data, Some(&data))
        .unwrap();
    let acc = report.best_val_accuracy.unwrap();
    assert!(acc > 0.95, "next-character accuracy {acc}");
    let sample = model.sample(&vocab, "hello", 20, 1e-3).unwrap();
    assert_eq!(sample, "hello world. hello world.");
    assert!(model.sample(&vocab, "", 5, 1.0).is_err());
}

/// Stops the run (as Ctrl-C does) after training batch `at` of epoch 1, passing the carried
/// state through.
struct StopMidEpoch<'a> {
    inner: neka_lstm::char_lm::Tbptt<'a>,
    at: usize,
}

impl neka_common::train::TrainModel for StopMidEpoch<'_> {
    type Batch = neka_common::data::StreamBatch;
    fn step(
        &self,
        b: &Self::Batch,
        ctx: &neka_common::train::StepContext,
    ) -> candle_core::Result<neka_common::train::StepOutput> {
        let out = self.inner.step(b, ctx)?;
        if ctx.train && ctx.epoch == 1 && ctx.batch == self.at {
            neka_common::train::request_stop();
        }
        Ok(out)
    }
    fn carried_state(&self) -> Vec<(String, Tensor)> {
        self.inner.carried_state()
    }
    fn restore_carried_state(&self, s: Vec<(String, Tensor)>) -> candle_core::Result<()> {
        self.inner.restore_carried_state(s)
    }
}

#[test]
fn truncated_bptt_resumed_mid_epoch_carries_its_state_and_matches_a_straight_run() {
    use neka_common::data::TokenStream;
    use neka_common::train::{StopReason, TrainConfig, Trainer};
    use neka_lstm::char_lm::{CharLm, Config, Tbptt};
    let ids: Vec<u32> = (0..2000u32).map(|i| (i * 7 + i / 13) % 11).collect();
    let data = TokenStream::new(&ids, 4, 10, &Device::Cpu).unwrap();
    let cfg = Config {
        cell: CellType::Lstm,
        vocab_size: 11,
        embed_dim: 8,
        hidden_size: 16,
        num_layers: 1,
        dropout: 0.0,
    };
    let tc = TrainConfig {
        epochs: 1,
        batch_size: 4,
        optimizer: neka_common::optim::OptimizerConfig::adamw(1e-2),
        ..TrainConfig::default()
    };
    let info = || neka_common::checkpoint::CheckpointInfo::new("char", &cfg, "t").unwrap();
    let weights = |vm: &VarMap| -> Vec<(String, Vec<f32>)> {
        neka_common::checkpoint::varmap_tensors(vm)
            .into_iter()
            .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
            .collect()
    };
    let build = |seed: u64| {
        neka_common::rng::seed(seed);
        let vm = VarMap::new();
        let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
        (CharLm::new(cfg, vb).unwrap(), vm)
    };
    // straight
    let (model, vm) = build(3);
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(tc.clone(), &vm, info(), dir.path()).unwrap();
    t.fit(&Tbptt::new(&model), &data, None::<&TokenStream>)
        .unwrap();
    let straight = weights(&vm);
    // stopped after chunk 5 of the epoch, then resumed by a fresh trainer and model
    let (model, vm) = build(3);
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(tc.clone(), &vm, info(), dir.path()).unwrap();
    let stop = StopMidEpoch {
        inner: Tbptt::new(&model),
        at: 5,
    };
    let r = t.fit(&stop, &data, None::<&TokenStream>).unwrap();
    assert_eq!(r.stop, StopReason::Interrupted);
    assert!(dir.path().join("checkpoint/carried.safetensors").is_file());
    drop(t);
    let (model, vm) = build(99);
    let mut t = Trainer::new(tc, &vm, info(), dir.path()).unwrap();
    t.resume(dir.path()).unwrap();
    t.fit(&Tbptt::new(&model), &data, None::<&TokenStream>)
        .unwrap();
    assert_eq!(
        weights(&vm),
        straight,
        "the resumed epoch lost the carried state"
    );
}
