//! Weight averaging over the last epochs ([`WeightAverage`]) and the trainer's last step
//! that compares the average with the best epoch.

use super::{evaluate, AverageReport, Monitor, TrainModel, Trainer};
use crate::data::Dataset;
use crate::metrics::EpochMetrics;
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use candle_nn::VarMap;

/// Weight averaging over training snapshots (stochastic weight averaging, Izmailov et al.
/// 2018; Polyak averaging over epochs): `θ̄ = (1/n) Σ_k θ_k`. Near the end of training the
/// weights wander around a flat region of the loss; their mean often generalises better
/// than any single snapshot.
///
/// [`TrainConfig::average_last`](super::TrainConfig::average_last) makes the trainer do it: add the weights after each of the
/// last epochs, [`WeightAverage::apply`] the mean and keep it if it beats the best epoch on
/// validation data.
#[derive(Debug, Default)]
pub struct WeightAverage {
    sum: std::collections::BTreeMap<String, Tensor>,
    count: usize,
}

impl WeightAverage {
    /// Adds the current weights of `varmap` (summed in f64).
    pub fn add(&mut self, varmap: &VarMap) -> Result<()> {
        let data = varmap.data().lock().expect("varmap lock");
        for (name, var) in data.iter() {
            let w = var.as_tensor().detach().to_dtype(DType::F64)?;
            let s = match self.sum.remove(name) {
                Some(s) => (s + w)?,
                None if self.count == 0 => w,
                None => {
                    return Err(Error::config(
                        "weight average",
                        format!("`{name}` appeared after the first snapshot"),
                    ))
                }
            };
            self.sum.insert(name.clone(), s);
        }
        self.count += 1;
        Ok(())
    }

    /// Snapshots added so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// An average holding `count` snapshots whose sum is `sum` (from [`Self::sum_tensors`]).
    pub fn from_sum(sum: std::collections::BTreeMap<String, Tensor>, count: usize) -> Self {
        Self { sum, count }
    }

    /// The running sum of the snapshots, by variable name (f64).
    pub fn sum_tensors(&self) -> Vec<(String, Tensor)> {
        self.sum
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Sets every variable of `varmap` to the mean of the snapshots.
    pub fn apply(&self, varmap: &VarMap) -> Result<()> {
        if self.count == 0 {
            return Err(Error::config("weight average", "no snapshots were added"));
        }
        let data = varmap.data().lock().expect("varmap lock");
        for (name, var) in data.iter() {
            let s = self.sum.get(name).ok_or_else(|| {
                Error::config("weight average", format!("no snapshot holds `{name}`"))
            })?;
            let mean = (s / self.count as f64)?.to_dtype(var.dtype())?;
            var.set(&mean)?;
        }
        Ok(())
    }
}

impl Trainer {
    /// With [`TrainConfig::average_last`](super::TrainConfig::average_last): sets the weights to the average of the snapshots,
    /// measures it like an epoch (validation and the hook) and, if `monitor` says it beats the
    /// best epoch, saves it as the best model (`config.json` gets `averaged_epochs`). The
    /// checkpoint keeps the last epoch's weights, so `--resume` goes on from there; after this
    /// call the varmap holds the average — [`Trainer::load_best`] loads what was kept.
    pub(super) fn finish_average<M, V>(
        &mut self,
        model: &M,
        val: Option<&V>,
        monitor: &Monitor,
        on_epoch: &mut impl FnMut(&EpochMetrics) -> Result<Vec<(String, f64)>>,
    ) -> Result<Option<AverageReport>>
    where
        M: TrainModel,
        V: Dataset<Batch = M::Batch>,
    {
        let (Some(first), Some(last)) =
            (self.cfg.first_averaged_epoch(), self.state.history.last())
        else {
            return Ok(None);
        };
        if self.average.count() == 0 {
            return Ok(None);
        }
        let mut m = last.clone();
        let first_epoch = first.max(m.epoch + 1 - self.average.count());
        self.average.apply(&self.varmap)?;
        let v = match val {
            Some(v) => Some(evaluate(model, v, self.cfg.eval_batch_size)?),
            None => None,
        };
        m.val_loss = v.map(|v| v.loss);
        m.val_accuracy = v.map(|v| v.accuracy);
        m.extra = Default::default();
        m.extra = on_epoch(&m)?.into_iter().collect();
        let score = monitor.value(&m).filter(|x| x.is_finite());
        let kept = match (score, self.state.best) {
            (Some(s), Some(b)) => val.is_some() && monitor.better(s, b),
            _ => false,
        };
        if self.opts.verbose {
            let show = |v: Option<f64>| match v {
                Some(v) if monitor.metric.ends_with("accuracy") => format!("{:.2}%", 100.0 * v),
                Some(v) => format!("{v:.4}"),
                None => "n/a".into(),
            };
            println!(
                "weight average of epochs {first_epoch}–{}: {} {} (best epoch {}: {}){}",
                m.epoch,
                monitor.metric,
                show(score),
                self.state.best_epoch.unwrap_or(0),
                show(self.state.best),
                if kept {
                    "; the average is kept"
                } else {
                    "; the best epoch is kept"
                }
            );
        }
        if kept {
            self.state.best = score;
            // The checkpoint keeps the last epoch's weights and best score: a resumed run
            // replaces the average only with an epoch better than the best single one.
            self.save_best(&m, &[("averaged_epochs", self.average.count() as f64)])?;
        }
        Ok(Some(AverageReport {
            first_epoch,
            last_epoch: m.epoch,
            metrics: m,
            kept,
        }))
    }
}
