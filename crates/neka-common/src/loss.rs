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

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Storage, Tensor, D};
use std::sync::atomic::{AtomicBool, Ordering};

static FUSED_CPU: AtomicBool = AtomicBool::new(true);

/// Turns the fused CPU cross-entropy of [`cross_entropy`] on (the default) or off (candle's
/// ops everywhere), for the whole process: benchmarks and comparisons.
pub fn set_fused_cpu_cross_entropy(on: bool) {
    FUSED_CPU.store(on, Ordering::Relaxed);
}

/// Mean cross-entropy of `logits (N, C)` against class indices `targets (N)` (u32 or i64):
///
/// ```text
/// L = (1/N) Σ_n [ log Σ_c exp z_nc − z_n,y_n ]          ∂L/∂z_nc = (softmax(z_n)_c − [c = y_n]) / N
/// ```
///
/// The same value as `candle_nn::loss::cross_entropy` (PyTorch's `F.cross_entropy`). On CPU
/// with f32/f64 logits it is one op with that gradient written out (candle's version is
/// `log_softmax` + `gather` + `mean`, each with its own backward and temporaries); elsewhere
/// it is [`cross_entropy_candle`]. This is the one place that picks between them.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if logits.device().is_cpu()
        && matches!(logits.dtype(), DType::F32 | DType::F64)
        && FUSED_CPU.load(Ordering::Relaxed)
    {
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
            .apply_op2(&targets.contiguous()?, FusedCrossEntropy)
    } else {
        cross_entropy_candle(logits, targets)
    }
}

/// candle's `cross_entropy` (`log_softmax`, `gather`, `mean`): the plain twin of
/// [`cross_entropy`]'s fused CPU op, and the path on GPUs.
pub fn cross_entropy_candle(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, targets)
}

/// The fused log-softmax + negative log-likelihood + mean of [`cross_entropy`].
struct FusedCrossEntropy;

fn targets_of(s: &CpuStorage, l: &Layout) -> Result<Vec<usize>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("cross_entropy: targets must be contiguous")
    };
    Ok(match s {
        CpuStorage::U32(v) => v[a..b].iter().map(|&t| t as usize).collect(),
        CpuStorage::I64(v) => v[a..b]
            .iter()
            .map(|&t| usize::try_from(t).unwrap_or(usize::MAX))
            .collect(),
        CpuStorage::U8(v) => v[a..b].iter().map(|&t| t as usize).collect(),
        _ => candle_core::bail!(
            "cross_entropy: targets must be u32, i64 or u8, got {:?}",
            s.dtype()
        ),
    })
}

/// Per row: `(max, log Σ exp(z − max))`.
fn row_lse<F: num_traits::Float>(row: &[F]) -> (F, F) {
    let m = row.iter().fold(F::neg_infinity(), |a, &v| a.max(v));
    let s = row.iter().fold(F::zero(), |a, &v| a + (v - m).exp());
    (m, s.ln())
}

fn fused_ce_forward<F: num_traits::Float>(z: &[F], c: usize, t: &[usize]) -> Result<f64> {
    let mut total = 0f64;
    for (row, &y) in z.chunks(c).zip(t) {
        if y >= c {
            candle_core::bail!("cross_entropy: target {y} is not a class index below {c}")
        }
        let (m, lse) = row_lse(row);
        total += (m + lse - row[y]).to_f64().unwrap_or(f64::NAN);
    }
    Ok(total / t.len().max(1) as f64)
}

fn fused_ce_backward<F: num_traits::Float>(z: &[F], c: usize, t: &[usize], scale: F) -> Vec<F> {
    let mut dz = vec![F::zero(); z.len()];
    for ((row, drow), &y) in z.chunks(c).zip(dz.chunks_mut(c)).zip(t) {
        let (m, lse) = row_lse(row);
        for (d, &v) in drow.iter_mut().zip(row) {
            *d = (v - m - lse).exp() * scale;
        }
        if y < c {
            drow[y] = drow[y] - scale;
        }
    }
    dz
}

impl candle_core::CustomOp2 for FusedCrossEntropy {
    fn name(&self) -> &'static str {
        "neka-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c) = l1.shape().dims2()?;
        let t = targets_of(s2, l2)?;
        let Some((a, b)) = l1.contiguous_offsets() else {
            candle_core::bail!("cross_entropy: logits must be contiguous")
        };
        let out = match s1 {
            CpuStorage::F32(v) => CpuStorage::F32(vec![fused_ce_forward(&v[a..b], c, &t)? as f32]),
            CpuStorage::F64(v) => CpuStorage::F64(vec![fused_ce_forward(&v[a..b], c, &t)?]),
            _ => candle_core::bail!("cross_entropy: f32 or f64 logits, got {:?}", s1.dtype()),
        };
        Ok((out, Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, c) = logits.dims2()?;
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()? / n.max(1) as f64;
        let (zs, zl) = logits.storage_and_layout();
        let (ts, tl) = targets.storage_and_layout();
        let (Storage::Cpu(zs), Storage::Cpu(ts)) = (&*zs, &*ts) else {
            candle_core::bail!("cross_entropy: CPU tensors only")
        };
        let t = targets_of(ts, tl)?;
        let Some((a, b)) = zl.contiguous_offsets() else {
            candle_core::bail!("cross_entropy: logits must be contiguous")
        };
        let dz = match zs {
            CpuStorage::F32(v) => Tensor::from_vec(
                fused_ce_backward(&v[a..b], c, &t, g as f32),
                (n, c),
                &Device::Cpu,
            )?,
            CpuStorage::F64(v) => {
                Tensor::from_vec(fused_ce_backward(&v[a..b], c, &t, g), (n, c), &Device::Cpu)?
            }
            _ => candle_core::bail!("cross_entropy: f32 or f64 logits, got {:?}", zs.dtype()),
        };
        Ok((Some(dz), None))
    }
}

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
