//! neka's recurrent layers against PyTorch: every fixture in `tests/fixtures/parity` (written
//! by `scripts/make_parity_fixtures.py`) and, when `NEKA_PARITY_DIR` is set, every
//! `*.safetensors` in that folder too. Each is checked with the fused CPU kernel and with the
//! candle-op path other devices use: outputs and final states within 1e-5, gradients of
//! `sum(output * grad_output)` within 1e-4. With `NEKA_TEST_DEVICE=cuda:0` (a `--features cuda`
//! build) they run on the GPU, through the candle-op path, with the same tolerances.

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use neka_lstm::{AnyRecurrent, CellType, RecurrentConfig, SeqInput, SequenceEncoder};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const OUT_TOL: f32 = 1e-5;
const GRAD_TOL: f32 = 1e-4;

fn max_err(a: &Tensor, b: &Tensor) -> Result<f32, String> {
    if a.dims() != b.dims() {
        return Err(format!("shape {:?}, expected {:?}", a.dims(), b.dims()));
    }
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .map_err(|e| e.to_string())
}

fn meta<'a>(m: &'a HashMap<String, String>, key: &str) -> Result<&'a str, String> {
    m.get(key)
        .map(String::as_str)
        .ok_or_else(|| format!("metadata has no `{key}`"))
}

/// Returns (max error of outputs/states, max error of gradients).
fn check_file(path: &Path, fused: bool) -> Result<(f32, f32), String> {
    let dev = neka_common::device::test_device().map_err(|e| e.to_string())?;
    let (t, md) = neka_common::checkpoint::load_tensors(path, &dev).map_err(|e| e.to_string())?;
    let get = |k: &str| t.get(k).ok_or_else(|| format!("no tensor `{k}`"));
    let parse = |k: &str| -> Result<usize, String> {
        meta(&md, k)?
            .parse()
            .map_err(|e| format!("metadata {k}: {e}"))
    };
    let cell = match meta(&md, "kind")? {
        "rnn_tanh" => CellType::Rnn,
        "rnn_relu" => CellType::RnnRelu,
        "lstm" => CellType::Lstm,
        "gru" => CellType::Gru,
        k => return Err(format!("unknown kind `{k}`")),
    };
    let cfg = RecurrentConfig {
        input_size: parse("input_size")?,
        hidden_size: parse("hidden_size")?,
        num_layers: parse("num_layers")?,
        bidirectional: meta(&md, "bidirectional")? == "true",
        bias: meta(&md, "bias")? == "true",
        dropout: 0.0,
    };
    let varmap = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&varmap, DType::F32, &dev);
    let net = AnyRecurrent::new(cell, cfg, vb).map_err(|e| e.to_string())?;
    // Strict load, both ways: every parameter in the file, every file parameter in the model.
    let special = [
        "input",
        "lengths",
        "h0",
        "c0",
        "output",
        "h_n",
        "c_n",
        "grad_output",
    ];
    let params: Vec<&String> = t
        .keys()
        .filter(|k| !special.contains(&k.as_str()) && !k.starts_with("grad."))
        .collect();
    let vars = varmap.data().lock().unwrap().clone();
    if params.len() != vars.len() {
        return Err(format!(
            "file has {} parameters, the model {}",
            params.len(),
            vars.len()
        ));
    }
    for name in &params {
        let var = vars
            .get(name.as_str())
            .ok_or_else(|| format!("model has no parameter `{name}`"))?;
        var.set(&t[name.as_str()])
            .map_err(|e| format!("{name}: {e}"))?;
    }
    let x = Var::from_tensor(get("input")?).map_err(|e| e.to_string())?;
    let lengths: Option<Vec<usize>> = match t.get("lengths") {
        Some(l) => Some(
            l.to_vec1::<i64>()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|v| v as usize)
                .collect(),
        ),
        None => None,
    };
    let input = SeqInput {
        lengths: lengths.as_deref(),
        h0: t.get("h0"),
        c0: t.get("c0"),
    };
    let _path = neka_common::kernels::use_path(neka_common::kernels::KernelPath::fused_if(fused));
    let out = net.encode(&x, input, false).map_err(|e| e.to_string())?;
    let mut out_err = 0f32;
    for (name, got) in [
        ("output", Some(&out.output)),
        ("h_n", Some(&out.h_n)),
        ("c_n", out.c_n.as_ref()),
    ] {
        match (t.get(name), got) {
            (Some(want), Some(got)) => {
                let e = max_err(got, want).map_err(|e| format!("{name}: {e}"))?;
                if e > OUT_TOL {
                    return Err(format!("{name}: max abs error {e:.2e} > {OUT_TOL:.0e}"));
                }
                out_err = out_err.max(e);
            }
            (None, None) => {}
            (Some(_), None) => return Err(format!("neka returned no {name}")),
            (None, Some(_)) => return Err(format!("the fixture has no {name}")),
        }
    }
    let loss = (&out.output * get("grad_output")?)
        .and_then(|l| l.sum_all())
        .map_err(|e| e.to_string())?;
    let grads = loss.backward().map_err(|e| e.to_string())?;
    let mut grad_err = 0f32;
    let mut check_grad = |name: &str, var: &Var| -> Result<(), String> {
        let want = get(&format!("grad.{name}"))?;
        let got = grads
            .get(var.as_tensor())
            .ok_or_else(|| format!("no gradient for {name}"))?;
        let e = max_err(got, want).map_err(|e| format!("grad.{name}: {e}"))?;
        if e > GRAD_TOL {
            return Err(format!(
                "grad.{name}: max abs error {e:.2e} > {GRAD_TOL:.0e}"
            ));
        }
        grad_err = grad_err.max(e);
        Ok(())
    };
    check_grad("input", &x)?;
    for name in &params {
        check_grad(name, &vars[name.as_str()])?;
    }
    Ok((out_err, grad_err))
}

fn fixture_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read parity fixtures in {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    files
}

#[test]
fn recurrent_layers_match_pytorch() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity");
    let mut files = fixture_files(&committed);
    assert!(
        files.len() >= 24,
        "expected the committed fixtures in {}",
        committed.display()
    );
    if let Some(extra) = std::env::var_os("NEKA_PARITY_DIR") {
        let extra = fixture_files(Path::new(&extra));
        assert!(
            !extra.is_empty(),
            "NEKA_PARITY_DIR holds no *.safetensors files"
        );
        files.extend(extra);
    }
    let dev = neka_common::device::device_name(&neka_common::device::test_device().unwrap());
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        let result = check_file(file, true).and_then(|fused| {
            check_file(file, false).map(|steps| (fused.0.max(steps.0), fused.1.max(steps.1)))
        });
        match result {
            Ok((o, g)) => println!(
                "parity {name} on {dev}: ok (max err {o:.1e} outputs/states, {g:.1e} gradients; fused kernel and candle ops)"
            ),
            Err(e) => {
                println!("parity {name}: FAILED: {e}");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
