//! Losses for sequence models, where batches are padded and padding must not count.
//!
//! candle's `cross_entropy` has no `ignore_index`; [`masked_cross_entropy`] takes an explicit
//! mask instead:
//!
//! ```text
//! L = − Σ_n m_n · [ (1−ε) log p_n[y_n] + (ε/C) Σ_c log p_n[c] ] / Σ_n m_n,   p_n = softmax(z_n)
//! ```
//!
//! with `m_n ∈ {0, 1}` (1 = a real token) and label smoothing `ε` (0 = plain cross-entropy).
//! Logits at masked positions get zero gradient and do not change the loss.

use candle_core::{DType, Result, Tensor, D};

/// Mean cross-entropy over the unmasked rows. `logits (N, C)` float, `targets (N)` u32
/// (any value at masked rows, as long as it is `< C`), `mask (N)` 0/1 in the logits' dtype.
/// `label_smoothing` ε in `[0, 1)`. With an all-zero mask the loss is 0.
pub fn masked_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    label_smoothing: f64,
) -> Result<Tensor> {
    let (n, c) = logits.dims2()?;
    if targets.dims() != [n] || mask.dims() != [n] {
        candle_core::bail!(
            "masked_cross_entropy: logits {:?} need targets and mask of shape [{n}], got {:?} and {:?}",
            logits.dims(),
            targets.dims(),
            mask.dims()
        )
    }
    if !(0.0..1.0).contains(&label_smoothing) {
        candle_core::bail!("label smoothing must be in [0, 1), got {label_smoothing}")
    }
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let mut nll = log_p.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    if label_smoothing > 0.0 {
        let uniform = (log_p.sum(D::Minus1)? / c as f64)?.neg()?;
        nll = ((nll * (1.0 - label_smoothing))? + (uniform * label_smoothing)?)?;
    }
    let mask = mask.to_dtype(log_p.dtype())?;
    let denom = mask.sum_all()?.maximum(1.0)?;
    (nll * &mask)?.sum_all()?.div(&denom)
}

/// Number of unmasked rows whose argmax equals the target.
pub fn masked_correct(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<f64> {
    let hit = logits
        .argmax(D::Minus1)?
        .eq(targets)?
        .to_dtype(DType::F32)?;
    Ok((hit * mask.to_dtype(DType::F32)?)?
        .sum_all()?
        .to_scalar::<f32>()? as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn padding_does_not_change_loss_or_get_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let z = Tensor::new(&[[1f32, 2., 0.5], [0.1, 0.2, 3.0], [5., -1., 0.]], &dev)?;
        let y = Tensor::new(&[1u32, 2, 0], &dev)?;
        let m = Tensor::new(&[1f32, 1., 0.], &dev)?;
        let a = masked_cross_entropy(&z, &y, &m, 0.0)?.to_scalar::<f32>()?;
        // Change the padded row's logits: same loss.
        let z2 = Tensor::new(&[[1f32, 2., 0.5], [0.1, 0.2, 3.0], [-9., 7., 2.]], &dev)?;
        let b = masked_cross_entropy(&z2, &y, &m, 0.0)?.to_scalar::<f32>()?;
        assert_eq!(a, b);
        // Equals candle's cross_entropy on the real rows.
        let real = candle_nn::loss::cross_entropy(&z.narrow(0, 0, 2)?, &y.narrow(0, 0, 2)?)?
            .to_scalar::<f32>()?;
        assert!((a - real).abs() < 1e-6, "{a} vs {real}");
        // Zero gradient at the padded row.
        let v = Var::from_tensor(&z)?;
        let g = masked_cross_entropy(v.as_tensor(), &y, &m, 0.1)?.backward()?;
        let gz = g.get(v.as_tensor()).unwrap().to_vec2::<f32>()?;
        assert_eq!(gz[2], [0.0; 3]);
        assert!(gz[0].iter().any(|x| *x != 0.0));
        assert_eq!(masked_correct(&z, &y, &m)?, 2.0);
        Ok(())
    }

    #[test]
    fn label_smoothing_matches_the_formula() -> Result<()> {
        let dev = Device::Cpu;
        let z = Tensor::new(&[[1f64, 2., 0.5]], &dev)?;
        let y = Tensor::new(&[0u32], &dev)?;
        let m = Tensor::new(&[1f64], &dev)?;
        let lse = (1f64.exp() + 2f64.exp() + 0.5f64.exp()).ln();
        let lp = [1.0 - lse, 2.0 - lse, 0.5 - lse];
        let want = -(0.9 * lp[0] + 0.1 / 3.0 * lp.iter().sum::<f64>());
        let got = masked_cross_entropy(&z, &y, &m, 0.1)?.to_scalar::<f64>()?;
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        Ok(())
    }
}
