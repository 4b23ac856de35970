//! Datasets and batching, shared by every model in the zoo.
//!
//! A [`Dataset`] knows how many examples it has and how to build a batch from a list of
//! example indices; *which* indices go together is decided by [`Dataset::epoch_plan`]:
//! by default a seeded shuffle cut into chunks of `batch_size`, keeping the last partial
//! batch. Sequence datasets override it to bucket by length. Because a plan is just
//! indices, the training loop can resume in the middle of an epoch exactly.

use crate::rng::DataRng;
use crate::Result;
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;

/// A collection of examples that can be cut into batches.
pub trait Dataset {
    /// What a batch of examples looks like (tensors on the model's device).
    type Batch;

    /// Number of examples.
    fn len(&self) -> usize;

    /// True when there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Builds the batch holding the examples at `indices`, in that order.
    fn batch(&self, indices: &[usize]) -> Result<Self::Batch>;

    /// The batches of one epoch, as example indices. With `rng`, the order is shuffled
    /// (a fresh permutation every epoch); without, examples come in order. Every example
    /// appears exactly once and the last batch may be smaller than `batch_size`.
    fn epoch_plan(&self, batch_size: usize, rng: Option<&mut DataRng>) -> Vec<Vec<usize>> {
        shuffled_chunks(self.len(), batch_size, rng)
    }
}

/// `0..n` (shuffled with `rng` if given) cut into chunks of `batch_size`; the last chunk
/// keeps the remainder.
pub fn shuffled_chunks(n: usize, batch_size: usize, rng: Option<&mut DataRng>) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    if let Some(r) = rng {
        idx.shuffle(r);
    }
    idx.chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Batches of examples of similar length, to cut padding: with `rng`, the examples are
/// shuffled, cut into pools of `batch_size × 50`, each pool is sorted by length and cut into
/// batches, and the batches are shuffled; without, the examples are sorted by length (ties
/// in index order) and cut in order. Every example appears exactly once.
pub fn bucketed_plan(
    lengths: &[usize],
    batch_size: usize,
    rng: Option<&mut DataRng>,
) -> Vec<Vec<usize>> {
    const POOL_BATCHES: usize = 50;
    let bs = batch_size.max(1);
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    match rng {
        None => {
            idx.sort_by_key(|&i| lengths[i]);
            idx.chunks(bs).map(<[usize]>::to_vec).collect()
        }
        Some(r) => {
            idx.shuffle(r);
            let mut batches: Vec<Vec<usize>> = Vec::new();
            for pool in idx.chunks_mut(bs * POOL_BATCHES) {
                pool.sort_by_key(|&i| lengths[i]);
                batches.extend(pool.chunks(bs).map(<[usize]>::to_vec));
            }
            batches.shuffle(r);
            batches
        }
    }
}

/// A batch of inputs and their class labels: `x (B, …)` f32, `y (B)` u32 (a
/// [`LabeledDataset`]'s batch: images `(B, C, H, W)`, one-hot sequences `(B, T, V)`, …).
#[derive(Debug, Clone)]
pub struct LabeledBatch {
    /// Inputs `(B, …)` f32.
    pub x: Tensor,
    /// Class ids `(B)` u32.
    pub y: Tensor,
}

/// Inputs with one class label each, on a device: `x (N, …)` f32, `y (N)` u32 — normalised
/// images `(N, C, H, W)` ([`super::vision::VisionSplits`]), one-hot sequences `(N, T, V)` (the
/// vanishing-gradient task), MNIST rows `(N, 28, 28)`. Batches are [`LabeledBatch`]es.
#[derive(Debug, Clone)]
pub struct LabeledDataset {
    /// Inputs `(N, …)` f32.
    pub x: Tensor,
    /// Class ids `(N)` u32.
    pub y: Tensor,
}

impl Dataset for LabeledDataset {
    type Batch = LabeledBatch;

    fn len(&self) -> usize {
        self.y.dim(0).unwrap_or(0)
    }

    fn batch(&self, indices: &[usize]) -> Result<LabeledBatch> {
        let idx = Tensor::from_vec(
            indices.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            indices.len(),
            &Device::Cpu,
        )?
        .to_device(self.x.device())?;
        Ok(LabeledBatch {
            x: self.x.index_select(&idx, 0)?,
            y: self.y.index_select(&idx, 0)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::data_rng;

    #[test]
    fn bucketed_plan_covers_everything_and_groups_lengths() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 60 + 1).collect();
        let mut r = data_rng(5);
        let plan = bucketed_plan(&lengths, 10, Some(&mut r));
        let mut all: Vec<usize> = plan.concat();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        // Padding: Σ (max length in batch × size) vs Σ lengths, against a plain shuffle.
        let padded = |p: &[Vec<usize>]| -> usize {
            p.iter()
                .map(|b| b.iter().map(|&i| lengths[i]).max().unwrap() * b.len())
                .sum()
        };
        let plain = shuffled_chunks(1000, 10, Some(&mut data_rng(5)));
        assert!(
            padded(&plan) * 3 < padded(&plain) * 2,
            "{} vs {}",
            padded(&plan),
            padded(&plain)
        );
        let sorted = bucketed_plan(&lengths, 10, None);
        assert_eq!(sorted, bucketed_plan(&lengths, 10, None));
        assert!(sorted
            .concat()
            .windows(2)
            .all(|w| lengths[w[0]] <= lengths[w[1]]));
    }

    #[test]
    fn plan_keeps_the_last_partial_batch_and_reshuffles() {
        let mut r = data_rng(3);
        let a = shuffled_chunks(10, 4, Some(&mut r));
        assert_eq!(a.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut all: Vec<usize> = a.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        let b = shuffled_chunks(10, 4, Some(&mut r));
        assert_ne!(a, b, "each epoch gets a fresh permutation");
        assert_eq!(
            shuffled_chunks(5, 2, None),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
    }
}
