//! Scoring a model on a data set: mean loss and accuracy, no dropout, no gradients.

use super::{StepContext, TrainModel};
use crate::data::Dataset;
use crate::metrics::{EvalMetrics, Running};
use crate::{Error, Result};
use candle_core::DType;

/// Mean loss and accuracy of `model` over all of `data` (in order, no dropout).
pub fn evaluate<M, D>(model: &M, data: &D, batch_size: usize) -> Result<EvalMetrics>
where
    M: TrainModel,
    D: Dataset<Batch = M::Batch>,
{
    if data.is_empty() {
        return Err(Error::config(
            "evaluation data",
            "is empty: there is nothing to score (check the file or the split)",
        ));
    }
    let mut r = Running::default();
    for indices in data.epoch_plan(batch_size, None) {
        let out = model.step(&data.batch(&indices)?, &StepContext::eval())?;
        let loss = out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        r.add(loss, out.correct, out.count);
    }
    Ok(EvalMetrics {
        loss: r.loss(),
        accuracy: r.accuracy(),
        count: r.count,
    })
}
