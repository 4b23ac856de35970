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

use crate::cpu::{CpuOp3, Fused3, Grads3, Input, KernelFloat};
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, DType, Device, DeviceLocation, Layout, Result, Shape, Storage, Tensor, D,
};

thread_local! {
    static FUSED_CPU: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Turns the fused CPU cross-entropy of [`cross_entropy`] on (the default) or off (candle's
/// ops everywhere) for the calling thread: benchmarks and comparisons (per thread, so
/// parallel tests do not switch each other's path).
pub fn set_fused_cpu_cross_entropy(on: bool) {
    FUSED_CPU.with(|f| f.set(on));
}

/// The one place that picks the losses' path: `true` for the fused CPU ops
/// ([`crate::cpu::kernel_applies`] and the switch on), `false` for candle's ops (CUDA, Metal).
pub fn loss_uses_kernel(location: DeviceLocation, dtype: DType) -> bool {
    crate::cpu::kernel_applies(location, dtype) && FUSED_CPU.with(|f| f.get())
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
    let r = crate::cpu::contiguous_range(l, "cross_entropy targets")?;
    Ok(match s {
        CpuStorage::U32(v) => v[r].iter().map(|&t| t as usize).collect(),
        CpuStorage::I64(v) => v[r]
            .iter()
            .map(|&t| usize::try_from(t).unwrap_or(usize::MAX))
            .collect(),
        CpuStorage::U8(v) => v[r].iter().map(|&t| t as usize).collect(),
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

/// [`targets_of`] a CPU tensor.
fn target_tensor(targets: &Tensor) -> Result<Vec<usize>> {
    let (ts, tl) = targets.storage_and_layout();
    let Storage::Cpu(ts) = &*ts else {
        candle_core::bail!("cross_entropy: CPU tensors only")
    };
    targets_of(ts, tl)
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
        let r = crate::cpu::contiguous_range(l1, "cross_entropy logits")?;
        let out = match s1 {
            CpuStorage::F32(v) => CpuStorage::F32(vec![fused_ce_forward(&v[r], c, &t)? as f32]),
            CpuStorage::F64(v) => CpuStorage::F64(vec![fused_ce_forward(&v[r], c, &t)?]),
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
        let t = target_tensor(targets)?;
        let (zs, zl) = logits.storage_and_layout();
        let Storage::Cpu(zs) = &*zs else {
            candle_core::bail!("cross_entropy: CPU tensors only")
        };
        let r = crate::cpu::contiguous_range(zl, "cross_entropy logits")?;
        let dz = match zs {
            CpuStorage::F32(v) => Tensor::from_vec(
                fused_ce_backward(&v[r], c, &t, g as f32),
                (n, c),
                &Device::Cpu,
            )?,
            CpuStorage::F64(v) => {
                Tensor::from_vec(fused_ce_backward(&v[r], c, &t, g), (n, c), &Device::Cpu)?
            }
            _ => candle_core::bail!("cross_entropy: f32 or f64 logits, got {:?}", zs.dtype()),
        };
        Ok((Some(dz), None))
    }
}

/// Mean cross-entropy over the unmasked rows. `logits (N, C)` float, `targets (N)` u32
/// (any value at masked rows, as long as it is `< C`), `mask (N)` 0/1 (any dtype).
/// `label_smoothing` ε in `[0, 1)`. With an all-zero mask the loss is 0.
///
/// On CPU with f32/f64 logits it is one op ([`MaskedCrossEntropyOp`]) with the gradient
/// written out; elsewhere it is [`masked_cross_entropy_candle`], the same formula from candle's
/// ops. [`set_fused_cpu_cross_entropy`] switches both this and [`cross_entropy`].
pub fn masked_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    label_smoothing: f64,
) -> Result<Tensor> {
    check_masked(logits, targets, mask, label_smoothing)?;
    if loss_uses_kernel(logits.device().location(), logits.dtype()) {
        let op = MaskedCrossEntropyOp {
            eps: label_smoothing,
            lse: Default::default(),
        };
        logits.contiguous()?.apply_op3(
            &targets.contiguous()?,
            &mask.to_dtype(DType::F64)?.contiguous()?,
            Fused3(op),
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

/// [`masked_cross_entropy`] as one CPU op on `(logits (N, C), targets (N), mask (N) f64)`:
///
/// ```text
/// lse_n = log Σ_c exp z_nc
/// ℓ_n   = (1−ε) (lse_n − z_n,y_n) + ε (lse_n − (1/C) Σ_c z_nc)
/// L     = Σ_n m_n ℓ_n / max(Σ_n m_n, 1)
/// ∂L/∂z_nc = m_n (softmax(z_n)_c − (1−ε)[c = y_n] − ε/C) / max(Σ m, 1)
/// ```
///
/// Rows are split over candle's CPU pool; the forward pass keeps each row's `lse` for the
/// backward pass, which is then one exponential per logit. Masked rows cost nothing.
#[derive(Debug, Clone)]
pub struct MaskedCrossEntropyOp {
    pub eps: f64,
    lse: std::sync::Arc<std::sync::Mutex<Option<Vec<f64>>>>,
}

/// One row's `(lse, Σ z)`.
#[inline(always)]
fn lse_and_sum<F: crate::cpu::KernelFloat>(row: &[F]) -> (f64, f64) {
    let m = row
        .iter()
        .fold(F::neg_infinity(), |a, &v| num_traits::Float::max(a, v));
    let (mut acc, mut sum) = ([F::zero(); 16], [F::zero(); 16]);
    let chunks = row.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for ((a, s), &v) in acc.iter_mut().zip(sum.iter_mut()).zip(c) {
            *a += (v - m).exp_fast();
            *s += v;
        }
    }
    let e = rest.iter().fold(F::zero(), |a, &v| a + (v - m).exp_fast());
    let z = rest.iter().fold(F::zero(), |a, &v| a + v);
    let e = acc.iter().fold(e, |a, &v| a + v);
    let z = sum.iter().fold(z, |a, &v| a + v);
    let m = m.to_f64();
    (m + e.to_f64().ln(), z.to_f64())
}

struct CeForward<'a, F> {
    z: &'a [F],
    c: usize,
    rows: std::ops::Range<usize>,
    mask: &'a [f64],
}

impl<F: crate::cpu::KernelFloat> crate::cpu::Vectorized for CeForward<'_, F> {
    type Output = Vec<(f64, f64)>;
    /// Per row: `(lse, Σ z)` (zeros for masked rows).
    #[inline(always)]
    fn run(self) -> Vec<(f64, f64)> {
        self.rows
            .map(|n| {
                if self.mask[n] == 0.0 {
                    (0.0, 0.0)
                } else {
                    lse_and_sum(&self.z[n * self.c..(n + 1) * self.c])
                }
            })
            .collect()
    }
}

struct CeBackward<'a, F> {
    z: &'a [F],
    dz: &'a mut [F],
    c: usize,
    first: usize,
    lse: &'a [f64],
    mask: &'a [f64],
    targets: &'a [usize],
    eps: f64,
    scale: f64,
}

impl<F: crate::cpu::KernelFloat> crate::cpu::Vectorized for CeBackward<'_, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let c = self.c;
        for (i, drow) in self.dz.chunks_mut(c).enumerate() {
            let n = self.first + i;
            let w = self.mask[n] * self.scale;
            if w == 0.0 {
                drow.iter_mut().for_each(|d| *d = F::zero());
                continue;
            }
            let row = &self.z[n * c..(n + 1) * c];
            let lse = F::from(self.lse[n]).unwrap_or_else(F::nan);
            let wf = F::from(w).unwrap_or_else(F::nan);
            let off = F::from(w * self.eps / c as f64).unwrap_or_else(F::nan);
            for (d, &v) in drow.iter_mut().zip(row) {
                *d = (v - lse).exp_fast() * wf - off;
            }
            let y = self.targets[n];
            drow[y] -= F::from(w * (1.0 - self.eps)).unwrap_or_else(F::nan);
        }
    }
}

impl MaskedCrossEntropyOp {
    fn forward<F: crate::cpu::KernelFloat>(
        &self,
        z: &[F],
        c: usize,
        t: &[usize],
        mask: &[f64],
    ) -> Result<F> {
        if let Some(&y) = t.iter().find(|&&y| y >= c) {
            candle_core::bail!("masked_cross_entropy: target {y} is not a class index below {c}")
        }
        let n = t.len();
        let per = n.div_ceil(crate::cpu::threads()).max(1);
        let parts = crate::cpu::parallel((0..n).step_by(per), |r0| {
            crate::cpu::vectorized(CeForward {
                z,
                c,
                rows: r0..(r0 + per).min(n),
                mask,
            })
        });
        let rows: Vec<(f64, f64)> = parts.concat();
        let (mut total, mut denom) = (0f64, 0f64);
        for (k, &(lse, zsum)) in rows.iter().enumerate() {
            if mask[k] == 0.0 {
                continue;
            }
            let zy = z[k * c + t[k]].to_f64();
            let l = (1.0 - self.eps) * (lse - zy) + self.eps * (lse - zsum / c as f64);
            total += mask[k] * l;
            denom += mask[k];
        }
        *self
            .lse
            .lock()
            .map_err(|_| candle_core::Error::Msg("cross-entropy: lock poisoned".into()))? =
            Some(rows.into_iter().map(|r| r.0).collect());
        Ok(F::from(total / denom.max(1.0)).unwrap_or_else(F::nan))
    }

    fn backward<F: crate::cpu::KernelFloat>(
        &self,
        z: &[F],
        c: usize,
        t: &[usize],
        mask: &[f64],
        g: f64,
    ) -> Result<Vec<F>> {
        let guard = self
            .lse
            .lock()
            .map_err(|_| candle_core::Error::Msg("cross-entropy: lock poisoned".into()))?;
        let Some(lse) = guard.as_ref() else {
            candle_core::bail!("masked_cross_entropy: backward before forward")
        };
        let denom = mask.iter().sum::<f64>().max(1.0);
        let mut dz = vec![F::zero(); z.len()];
        let n = t.len();
        let per = n.div_ceil(crate::cpu::threads()).max(1);
        crate::cpu::parallel(dz.chunks_mut(per * c).enumerate(), |(i, block)| {
            crate::cpu::vectorized(CeBackward {
                z,
                dz: block,
                c,
                first: i * per,
                lse,
                mask,
                targets: t,
                eps: self.eps,
                scale: g / denom,
            })
        });
        Ok(dz)
    }
}

impl<F: KernelFloat> CpuOp3<F> for MaskedCrossEntropyOp {
    const NAME: &'static str = "neka-masked-cross-entropy";

    fn cpu_fwd(&self, [logits, targets, mask]: [Input<'_>; 3]) -> Result<(Vec<F>, Shape)> {
        let (_, c) = logits.shape().dims2()?;
        let t = targets_of(targets.storage, targets.layout)?;
        let mask = mask.slice::<f64>("masked_cross_entropy mask")?;
        let z = logits.slice::<F>("masked_cross_entropy logits")?;
        Ok((vec![self.forward(z, c, &t, mask)?], Shape::from(())))
    }

    fn bwd(
        &self,
        [logits, targets, mask]: [&Tensor; 3],
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<Grads3> {
        let (n, c) = logits.dims2()?;
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let t = target_tensor(targets)?;
        let m = mask.to_vec1::<f64>()?;
        let what = "masked_cross_entropy logits";
        let dz = crate::cpu::with_slice::<F, _>(logits, what, |z| self.backward(z, c, &t, &m, g))??;
        Ok((
            Some(Tensor::from_vec(dz, (n, c), &Device::Cpu)?),
            None,
            None,
        ))
    }
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
