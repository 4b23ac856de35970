//! The model as the training loop sees it: [`TrainModel`] (a batch in, a loss and a count of
//! correct predictions out), what one step produced ([`StepOutput`]) and where training
//! stands ([`StepContext`]); [`Classifier`] adapts any logits model.

use super::Monitor;
use crate::data::LabeledBatch;
use candle_core::{ModuleT, Tensor};

/// What one forward pass on a batch produced.
pub struct StepOutput {
    /// Mean loss over the batch (a scalar tensor; backpropagated in training).
    pub loss: Tensor,
    /// Number of correct predictions in the batch.
    pub correct: f64,
    /// Number of predictions (examples, or tokens for sequence taggers).
    pub count: usize,
}

/// Where training stands when [`TrainModel::step`] is called. Models that schedule something
/// over training (teacher forcing, a truncated-BPTT state reset) read it here instead of
/// keeping counters of their own, so `--resume` restores them with the trainer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepContext {
    /// Optimizer steps completed before this batch (0 for the first batch of a run).
    pub step: usize,
    /// 1-based epoch (0 outside training: [`evaluate`](super::evaluate)).
    pub epoch: usize,
    /// 0-based index of the batch in its epoch.
    pub batch: usize,
    /// Training (dropout on, gradients taken) or evaluation.
    pub train: bool,
}

impl StepContext {
    /// Evaluation: no dropout, no gradients, nothing scheduled.
    pub fn eval() -> Self {
        Self {
            step: 0,
            epoch: 0,
            batch: 0,
            train: false,
        }
    }

    /// A training step `step` (batch `step` of epoch 1), for tests and hand-written loops.
    pub fn train(step: usize) -> Self {
        Self {
            step,
            epoch: 1,
            batch: step,
            train: true,
        }
    }
}

/// A model as the training loop sees it: a batch in, a loss and a count of correct
/// predictions out. `ctx.train` switches dropout and similar layers on.
pub trait TrainModel {
    /// What one step reads (e.g. [`LabeledBatch`]).
    type Batch;
    /// One forward pass on `batch`: the mean loss (backpropagated by the trainer when
    /// `ctx.train`), correct predictions and their count.
    fn step(&self, batch: &Self::Batch, ctx: &StepContext) -> candle_core::Result<StepOutput>;
    /// What [`StepOutput::count`] counts, for the progress line's rate (`… 531 tokens/s`).
    fn count_unit(&self) -> &'static str {
        "samples"
    }
    /// The validation metric that picks the best epoch and drives early stopping, unless
    /// [`TrainConfig::monitor`](super::TrainConfig::monitor) says otherwise: validation accuracy for classifiers.
    fn monitor(&self) -> Monitor {
        Monitor::default()
    }
    /// What the model carries from one training batch to the next within an epoch (truncated
    /// BPTT's hidden state), by name. A checkpoint saved in the middle of an epoch (Ctrl-C)
    /// keeps it, and `--resume` hands it back with [`Self::restore_carried_state`] before the
    /// next batch, so the resumed epoch goes on as if never stopped. Default: nothing.
    fn carried_state(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    /// Takes back what [`Self::carried_state`] returned.
    fn restore_carried_state(&self, _state: Vec<(String, Tensor)>) -> candle_core::Result<()> {
        Ok(())
    }
}

/// Wraps a [`ModuleT`] that maps `x (B, …)` to logits `(B, classes)` as a classifier trained
/// with cross-entropy: `L = −(1/B) Σ_b log softmax(z_b)[y_b]`.
pub struct Classifier<'a, M>(pub &'a M);

impl<M: ModuleT> TrainModel for Classifier<'_, M> {
    type Batch = LabeledBatch;
    fn step(&self, batch: &LabeledBatch, ctx: &StepContext) -> candle_core::Result<StepOutput> {
        let logits = self.0.forward_t(&batch.x, ctx.train)?;
        let loss = crate::loss::cross_entropy(&logits, &batch.y)?;
        Ok(StepOutput {
            correct: crate::loss::correct(&logits, &batch.y)?,
            loss,
            count: batch.y.dim(0)?,
        })
    }
}
