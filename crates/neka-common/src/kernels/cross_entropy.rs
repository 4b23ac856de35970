//! The losses' CPU kernels: cross-entropy ([`CrossEntropyOp`]) and masked, label-smoothed
//! cross-entropy ([`MaskedCrossEntropyOp`]), each one candle op with its gradient written out.
//! The losses and their candle-op twins are in [`crate::loss`].

use super::{self as cpu, CpuKernel, Input, KernelFloat};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Storage, Tensor};

/// The fused log-softmax + negative log-likelihood + mean of [`crate::loss::cross_entropy`] on
/// `(logits (N, C), targets (N))`:
///
/// ```text
/// L = (1/N) Σ_n [ log Σ_c exp z_nc − z_n,y_n ]          ∂L/∂z_nc = (softmax(z_n)_c − [c = y_n]) / N
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CrossEntropyOp;

fn targets_of(s: &CpuStorage, l: &Layout) -> Result<Vec<usize>> {
    let r = cpu::contiguous_range(l, "cross_entropy targets")?;
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

impl<F: KernelFloat> CpuKernel<F, 2> for CrossEntropyOp {
    const NAME: &'static str = "neka-cross-entropy";

    fn cpu_fwd(&self, [logits, targets]: [Input<'_>; 2]) -> Result<(Vec<F>, Shape)> {
        let (_, c) = logits.shape().dims2()?;
        let t = targets_of(targets.storage, targets.layout)?;
        let z = logits.slice::<F>("cross_entropy logits")?;
        Ok((
            vec![F::from_f64(fused_ce_forward(z, c, &t)?)],
            Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        [logits, targets]: [&Tensor; 2],
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 2]> {
        let (n, c) = logits.dims2()?;
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()? / n.max(1) as f64;
        let t = target_tensor(targets)?;
        let dz = cpu::with_slice::<F, _>(logits, "cross_entropy logits", |z| {
            fused_ce_backward(z, c, &t, F::from_f64(g))
        })?;
        Ok([Some(Tensor::from_vec(dz, (n, c), &Device::Cpu)?), None])
    }
}

/// [`crate::loss::masked_cross_entropy`] as one CPU op on `(logits (N, C), targets (N), mask (N) f64)`:
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
    /// Label smoothing `ε` (0 = plain cross-entropy).
    pub eps: f64,
    lse: std::sync::Arc<std::sync::Mutex<Option<Vec<f64>>>>,
}

impl MaskedCrossEntropyOp {
    /// The op for label smoothing `eps` (0 = plain cross-entropy).
    pub fn new(eps: f64) -> Self {
        Self {
            eps,
            lse: Default::default(),
        }
    }
}

/// One row's `(lse, Σ z)`.
#[inline(always)]
fn lse_and_sum<F: KernelFloat>(row: &[F]) -> (f64, f64) {
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

impl<F: KernelFloat> cpu::Vectorized for CeForward<'_, F> {
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

impl<F: KernelFloat> cpu::Vectorized for CeBackward<'_, F> {
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
    fn forward<F: KernelFloat>(&self, z: &[F], c: usize, t: &[usize], mask: &[f64]) -> Result<F> {
        if let Some(&y) = t.iter().find(|&&y| y >= c) {
            candle_core::bail!("masked_cross_entropy: target {y} is not a class index below {c}")
        }
        let n = t.len();
        let per = n.div_ceil(cpu::threads()).max(1);
        let parts = cpu::parallel((0..n).step_by(per), |r0| {
            cpu::vectorized(CeForward {
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

    fn backward<F: KernelFloat>(
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
        let per = n.div_ceil(cpu::threads()).max(1);
        cpu::parallel(dz.chunks_mut(per * c).enumerate(), |(i, block)| {
            cpu::vectorized(CeBackward {
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

impl<F: KernelFloat> CpuKernel<F, 3> for MaskedCrossEntropyOp {
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
    ) -> Result<[Option<Tensor>; 3]> {
        let (n, c) = logits.dims2()?;
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let t = target_tensor(targets)?;
        let m = mask.to_vec1::<f64>()?;
        let what = "masked_cross_entropy logits";
        let dz = cpu::with_slice::<F, _>(logits, what, |z| self.backward(z, c, &t, &m, g))??;
        Ok([
            Some(Tensor::from_vec(dz, (n, c), &Device::Cpu)?),
            None,
            None,
        ])
    }
}
