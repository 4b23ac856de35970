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

use crate::kernels::{self, CrossEntropyOp, Fused, MaskedCrossEntropyOp};
use candle_core::{DType, DeviceLocation, Result, Tensor, D};

/// The one place that picks the losses' path: `true` for the fused CPU ops
/// ([`kernels::fused_applies`]: the CPU, f32/f64, [`kernels::KernelPath::Fused`] selected),
/// `false` for candle's ops (CUDA, Metal).
pub fn loss_uses_kernel(location: DeviceLocation, dtype: DType) -> bool {
    kernels::fused_applies(location, dtype)
}

/// Mean cross-entropy of `logits (N, C)` against class indices `targets (N)` (u32 or i64):
///
/// ```text
/// L = (1/N) Σ_n [ log Σ_c exp z_nc − z_n,y_n ]          ∂L/∂z_nc = (softmax(z_n)_c − [c = y_n]) / N
/// ```
///
/// The same value as `candle_nn::loss::cross_entropy` (PyTorch's `F.cross_entropy`). On CPU
/// with f32/f64 logits it is one op ([`CrossEntropyOp`]) with that gradient written out (candle's version is
/// `log_softmax` + `gather` + `mean`, each with its own backward and temporaries); elsewhere
/// it is [`cross_entropy_candle`]. This is the one place that picks between them.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if loss_uses_kernel(logits.device().location(), logits.dtype()) {
        let (n, _) = logits.dims2()?;
        if targets.dims() != [n] {
            candle_core::bail!(
                "cross_entropy: logits {:?} need targets of shape [{n}], got {:?}",
                logits.dims(),
                targets.dims()
            )
        }
        logits
            .contiguous()?
            .apply_op2(&targets.contiguous()?, Fused(CrossEntropyOp))
    } else {
        cross_entropy_candle(logits, targets)
    }
}

/// candle's `cross_entropy` (`log_softmax`, `gather`, `mean`): the plain twin of
/// [`cross_entropy`]'s fused CPU op, and the path on GPUs.
pub fn cross_entropy_candle(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, targets)
}

/// Mean cross-entropy over the unmasked rows. `logits (N, C)` float, `targets (N)` u32
/// (any value at masked rows, as long as it is `< C`), `mask (N)` 0/1 (any dtype).
/// `label_smoothing` ε in `[0, 1)`. With an all-zero mask the loss is 0.
///
/// On CPU with f32/f64 logits it is one op ([`MaskedCrossEntropyOp`]) with the gradient
/// written out; elsewhere it is [`masked_cross_entropy_candle`], the same formula from candle's
/// ops. [`loss_uses_kernel`] picks for both this and [`cross_entropy`].
pub fn masked_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    label_smoothing: f64,
) -> Result<Tensor> {
    check_masked(logits, targets, mask, label_smoothing)?;
    if loss_uses_kernel(logits.device().location(), logits.dtype()) {
        let op = MaskedCrossEntropyOp::new(label_smoothing);
        logits.contiguous()?.apply_op3(
            &targets.contiguous()?,
            &mask.to_dtype(DType::F64)?.contiguous()?,
            Fused(op),
        )
    } else {
        masked_cross_entropy_candle(logits, targets, mask, label_smoothing)
    }
}

fn check_masked(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    label_smoothing: f64,
) -> Result<(usize, usize)> {
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
    Ok((n, c))
}

/// [`masked_cross_entropy`] from candle's ops (`log_softmax`, `gather`, sums): the plain twin
/// of the fused CPU op, and the path on GPUs.
pub fn masked_cross_entropy_candle(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    label_smoothing: f64,
) -> Result<Tensor> {
    let (_, c) = check_masked(logits, targets, mask, label_smoothing)?;
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

/// Number of rows of `logits (N, C)` whose argmax equals the target `targets (N)`.
pub fn correct(logits: &Tensor, targets: &Tensor) -> Result<f64> {
    Ok(logits
        .argmax(D::Minus1)?
        .eq(targets)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as f64)
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
    fn gpu_logits_never_take_the_fused_cpu_losses() {
        for loc in [
            DeviceLocation::Cuda { gpu_id: 0 },
            DeviceLocation::Metal { gpu_id: 1 },
        ] {
            assert!(!loss_uses_kernel(loc, DType::F32));
            assert!(!loss_uses_kernel(loc, DType::F64));
        }
        assert!(!loss_uses_kernel(DeviceLocation::Cpu, DType::BF16));
    }

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
    fn fused_masked_cross_entropy_equals_the_candle_twin_with_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let (n, c) = (37, 53);
        let z = Var::from_tensor(&(Tensor::randn(0f64, 3., (n, c), &dev)?))?;
        let y: Vec<u32> = (0..n as u32).map(|i| (i * 7) % c as u32).collect();
        let y = Tensor::new(y.as_slice(), &dev)?;
        let m: Vec<f32> = (0..n).map(|i| f32::from(u8::from(i % 5 != 3))).collect();
        let m = Tensor::new(m.as_slice(), &dev)?;
        for eps in [0.0, 0.1] {
            let a = masked_cross_entropy(z.as_tensor(), &y, &m, eps)?;
            let b = masked_cross_entropy_candle(z.as_tensor(), &y, &m, eps)?;
            let (va, vb) = (a.to_scalar::<f64>()?, b.to_scalar::<f64>()?);
            assert!((va - vb).abs() < 1e-12, "eps {eps}: {va} vs {vb}");
            let ga = (a * 3.0)?.backward()?.get(z.as_tensor()).unwrap().clone();
            let gb = (b * 3.0)?.backward()?.get(z.as_tensor()).unwrap().clone();
            let err = (ga - gb)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(err < 1e-12, "eps {eps}: gradient differs by {err}");
        }
        // f32 with the fast exponential: close to the f64 value.
        let z32 = z.as_tensor().to_dtype(DType::F32)?;
        let a = masked_cross_entropy(&z32, &y, &m, 0.1)?.to_scalar::<f32>()? as f64;
        let b = masked_cross_entropy_candle(z.as_tensor(), &y, &m, 0.1)?.to_scalar::<f64>()?;
        assert!((a - b).abs() < 1e-5 * b.abs(), "{a} vs {b}");
        // Bad targets are errors, not panics.
        let bad = Tensor::new(&[c as u32; 37], &dev)?;
        assert!(masked_cross_entropy(z.as_tensor(), &bad, &m, 0.0).is_err());
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
