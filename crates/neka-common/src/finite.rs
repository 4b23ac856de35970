//! Models that cannot answer are refused, not run: a model whose weights are finite but
//! extreme (one weight of 3e38) loads, and then every answer is NaN. Each loader runs its
//! model on a fixed probe input and passes the output to [`probe`], which refuses the model
//! ([`Error::UnusableModel`], naming the directory, what is not finite and the largest
//! weight); every answer path checks its numbers with [`check`] ([`Error::NonFiniteOutput`])
//! instead of printing NaN.

use crate::{Error, Result};
use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use std::path::Path;

/// How many of `t`'s values are not finite (NaN or ±∞), and the first of them.
pub fn count_non_finite(t: &Tensor) -> Result<(usize, Option<f32>)> {
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut bad = v.iter().filter(|x| !x.is_finite());
    let first = bad.next().copied();
    Ok((first.map_or(0, |_| 1 + bad.count()), first))
}

/// Refuses a non-finite answer: `Ok(())` when every value of `t` is finite, else
/// [`Error::NonFiniteOutput`] saying that `what` (e.g. "the tag probabilities of sentence
/// 2") holds NaN or infinite values, and that the model's weights are the likely cause.
pub fn check(t: &Tensor, what: &str) -> Result<()> {
    match count_non_finite(t)? {
        (0, _) => Ok(()),
        (n, Some(x)) => Err(Error::NonFiniteOutput(format!(
            "{what}: {n} of {} values are not finite (e.g. {x}); the model's weights are \
             extreme or corrupt: retrain it or restore its model.safetensors",
            t.elem_count()
        ))),
        (_, None) => unreachable!("a count > 0 has a first value"),
    }
}

/// [`check`] for numbers already on the host (scores, log-probabilities).
pub fn check_values(values: &[f64], what: &str) -> Result<()> {
    match values.iter().find(|x| !x.is_finite()) {
        None => Ok(()),
        Some(x) => Err(Error::NonFiniteOutput(format!(
            "{what}: {} of {} values are not finite (e.g. {x}); the model's weights are \
             extreme or corrupt: retrain it or restore its model.safetensors",
            values.iter().filter(|x| !x.is_finite()).count(),
            values.len()
        ))),
    }
}

/// The tensor holding the weight of largest magnitude, with that magnitude (`None` for an
/// empty varmap): what [`probe`] names when it refuses a model.
pub fn largest_weight(varmap: &VarMap) -> Result<Option<(String, f32)>> {
    let mut best: Option<(String, f32)> = None;
    for (name, t) in crate::checkpoint::varmap_tensors(varmap) {
        if t.elem_count() == 0 || !t.dtype().is_float() {
            continue;
        }
        let m = t
            .to_dtype(DType::F32)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        if best.as_ref().is_none_or(|(_, b)| m > *b) {
            best = Some((name, m));
        }
    }
    Ok(best)
}

/// The largest weight magnitude a loaded model may have. Trained weights stay within a few
/// units (weight decay, normalisation); a weight beyond a million is damage (a flipped
/// exponent bit, a diverged run saved anyway), and it saturates or overflows whatever reads
/// it: tags all `ADJ`, translations all `.`.
pub const MAX_WEIGHT: f32 = 1e6;

/// The largest score (logit) magnitude a probe output may have: beyond it an f32 score has
/// fewer than 5 bits below the unit, so its softmax probabilities are noise.
pub const MAX_SCORE: f32 = 1e6;

/// The load-time check: `output` is what the model loaded from `dir` (weights in `varmap`)
/// answered on a fixed probe input (scores or probabilities), `what` names it ("the tag
/// scores of the probe sentence `The dog runs home .`"). Refuses the model with an
/// [`Error::UnusableModel`] naming `dir` if a weight is beyond [`MAX_WEIGHT`] (naming the
/// tensor), or a value of `output` is not finite or beyond [`MAX_SCORE`] (naming what, and
/// the largest weight); else `Ok(())`.
pub fn probe(dir: &Path, varmap: &VarMap, output: &Tensor, what: &str) -> Result<()> {
    let unusable = |msg: String| Error::UnusableModel {
        dir: dir.to_path_buf(),
        msg: format!(
            "{msg}. The weights in model.safetensors are extreme or corrupt: retrain the \
             model or restore the file"
        ),
    };
    let largest = largest_weight(varmap)?;
    if let Some((name, m)) = &largest {
        if m.is_nan() || *m > MAX_WEIGHT {
            return Err(unusable(format!(
                "tensor `{name}` holds a weight of magnitude {m:e}, beyond the {MAX_WEIGHT:e} \
                 any trained model has"
            )));
        }
    }
    let largest = match largest {
        Some((name, m)) => format!("; its largest weight is {m:e} in `{name}`"),
        None => String::new(),
    };
    let (n, first) = count_non_finite(output)?;
    if n > 0 {
        return Err(unusable(format!(
            "{what} has {n} non-finite value(s) of {} (e.g. {}){largest}",
            output.elem_count(),
            first.unwrap_or(f32::NAN)
        )));
    }
    let peak = if output.elem_count() == 0 {
        0.0
    } else {
        output
            .to_dtype(DType::F32)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?
    };
    if peak > MAX_SCORE {
        return Err(unusable(format!(
            "{what} reaches {peak:e}, beyond the {MAX_SCORE:e} a model that answers gives{largest}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn non_finite_answers_and_probes_are_named_errors() -> Result<()> {
        let ok = Tensor::new(&[0.5f32, 0.5], &Device::Cpu)?;
        check(&ok, "probs")?;
        let bad = Tensor::new(&[f32::NAN, 1.0, f32::INFINITY], &Device::Cpu)?;
        let e = check(&bad, "the probabilities of x.png")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.png") && e.contains("2 of 3"), "{e}");
        assert!(check_values(&[0.0, -1.0], "s").is_ok());
        let e = check_values(&[f64::NEG_INFINITY], "the score").unwrap_err();
        assert!(e.to_string().contains("the score: 1 of 1"), "{e}");

        let mut vm = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        vb.get_with_hints((2, 2), "fc.weight", candle_nn::Init::Const(0.0))?;
        vb.get_with_hints(2, "fc.bias", candle_nn::Init::Const(1.0))?;
        vm.set_one(
            "fc.weight",
            Tensor::new(&[[0f32, 3e38], [0.0, 0.0]], &Device::Cpu)?,
        )?;
        // an extreme weight is refused whatever the output, naming the tensor
        let e = probe(Path::new("models/m"), &vm, &ok, "the probe logits").unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, Error::UnusableModel { .. })
                && msg.starts_with("models/m: the model cannot answer")
                && msg.contains("`fc.weight`")
                && msg.contains("3e38"),
            "{msg}"
        );
        // with sane weights: non-finite or extreme outputs are refused, saying what
        vm.set_one(
            "fc.weight",
            Tensor::new(&[[0f32, 2.5], [0.0, 0.0]], &Device::Cpu)?,
        )?;
        probe(Path::new("m"), &vm, &ok, "p")?;
        let e = probe(Path::new("m"), &vm, &bad, "the probe logits").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("the probe logits has 2 non-finite value(s) of 3")
                && msg.contains("largest weight is 2.5e0 in `fc.weight`"),
            "{msg}"
        );
        let huge = Tensor::new(&[1e30f32, 0.0], &Device::Cpu)?;
        let e = probe(Path::new("m"), &vm, &huge, "the scores").unwrap_err();
        assert!(e.to_string().contains("the scores reaches 1e30"), "{e}");
        Ok(())
    }
}
