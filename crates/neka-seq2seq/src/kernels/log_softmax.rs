//! The decoder's host-side kernel: a step's logits copied to the host once and turned into
//! log-probabilities there, rows split over candle's CPU pool and the exponentials vectorised
//! ([`neka_common::kernels::vectorized`], the branch-free [`neka_common::kernels::exp_f32`]).
//! Greedy and beam search ([`crate::decode`]) read their scores from it. It has no candle-op
//! twin: it works on host data, after the model's (device or CPU) ops.
//!
//! ```text
//! log p[r, v] = z[r, v] − (m_r + log Σ_v' exp(z[r, v'] − m_r)),   m_r = max_v z[r, v]
//! ```

use candle_core::{DType, Result, Tensor};

/// A `(rows, n)` tensor's rows as f32, copied to the host in one piece.
pub(crate) struct Rows {
    pub(crate) data: Vec<f32>,
    pub(crate) n: usize,
}

impl Rows {
    pub(crate) fn new(t: &Tensor) -> Result<Self> {
        let (_, n) = t.dims2()?;
        let t = t.to_dtype(DType::F32)?;
        let data = if t.device().is_cpu() {
            neka_common::kernels::with_slice::<f32, _>(&t, "decode", |s| s.to_vec())?
        } else {
            t.flatten_all()?.to_vec1()?
        };
        Ok(Self { data, n })
    }
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.n..(i + 1) * self.n]
    }
    pub(crate) fn len(&self) -> usize {
        self.data.len() / self.n.max(1)
    }
    /// The first index of row `i`'s maximum (NaN never wins).
    pub(crate) fn argmax(&self, i: usize) -> u32 {
        let row = self.row(i);
        let mut best = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = j;
            }
        }
        best as u32
    }

    /// `log softmax` of `logits (rows, V)` along V, on the host: rows split over candle's CPU
    /// pool, the exponentials vectorised (what every search step needs from the logits, in
    /// one pass instead of candle's several ops and a copy).
    pub(crate) fn log_softmax(logits: &Tensor) -> Result<Self> {
        struct Job<'a>(&'a mut [f32], usize);
        impl neka_common::kernels::Vectorized for Job<'_> {
            type Output = ();
            #[inline(always)]
            fn run(self) {
                for row in self.0.chunks_mut(self.1) {
                    let m = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                    let mut acc = [0f32; 16];
                    let chunks = row.chunks_exact(16);
                    let tail: f32 = chunks
                        .remainder()
                        .iter()
                        .map(|&v| neka_common::kernels::exp_f32(v - m))
                        .sum();
                    for c in chunks {
                        for (a, &v) in acc.iter_mut().zip(c) {
                            *a += neka_common::kernels::exp_f32(v - m);
                        }
                    }
                    let lse = m + (tail + acc.iter().sum::<f32>()).ln();
                    row.iter_mut().for_each(|v| *v -= lse);
                }
            }
        }
        let mut rows = Self::new(logits)?;
        let n = rows.n.max(1);
        let per = rows.len().div_ceil(neka_common::kernels::threads()).max(1);
        neka_common::kernels::parallel(rows.data.chunks_mut(per * n), |block| {
            neka_common::kernels::vectorized(Job(block, n))
        });
        Ok(rows)
    }
}
