//! One epoch of [`Trainer::fit_with`]: the optimizer steps ([`Trainer::train_epoch`]), the
//! measurement ([`Trainer::measure`]) and what is kept of it ([`Trainer::record`]).

use super::trainer::{Pass, CKPT_DIR};
use super::{evaluate, interrupt, Monitor, StepContext, StepLog, TrainModel, Trainer};
use crate::checkpoint::{self, CheckpointInfo};
use crate::data::Dataset;
use crate::metrics::{self, EpochMetrics, Running};
use crate::optim::clip_grad_norm;
use crate::rng::DataRng;
use crate::{Error, Result};
use candle_core::DType;
use std::time::Instant;

impl Trainer {
    /// One epoch's optimizer steps (from where an interrupted epoch stopped): the seeded
    /// batch plan, forward, a finite loss, backward, clipping, the optimizer step. On Ctrl-C
    /// it saves a checkpoint mid-epoch and returns [`Pass::Interrupted`].
    pub(super) fn train_epoch<M, T>(&mut self, model: &M, train: &T, epoch: usize) -> Result<Pass>
    where
        M: TrainModel,
        T: Dataset<Batch = M::Batch>,
    {
        let lr = self.cfg.schedule.lr_at(self.cfg.optimizer.lr(), epoch - 1);
        self.optimizer.set_lr(lr);
        let epoch_rng = self.state.data_rng.clone();
        let mut data_rng = epoch_rng.clone();
        let mut plan = train.epoch_plan(self.cfg.batch_size, Some(&mut data_rng));
        if let Some(m) = self.cfg.max_batches_per_epoch {
            plan.truncate(m);
        }
        let bar = self.progress_bar(plan.len(), epoch, self.cfg.epochs);
        let start = Instant::now();
        let mut running = self.state.running;
        let skip = self.state.batches_done;
        bar.set_position(skip as u64);
        let carried = std::mem::take(&mut self.carried);
        if skip > 0 && !carried.is_empty() {
            model.restore_carried_state(carried)?;
        }
        for (i, indices) in plan.iter().enumerate().skip(skip) {
            let ctx = StepContext {
                step: self.optimizer.step_count(),
                epoch,
                batch: i,
                train: true,
            };
            let out = model.step(&train.batch(indices)?, &ctx)?;
            let loss_v = out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss_v.is_finite() {
                bar.abandon();
                if self.opts.log_steps {
                    self.log_step(epoch, loss_v, f64::NAN);
                    self.write_steps()?;
                }
                return Err(Error::NonFiniteLoss(format!(
                    "training loss became {loss_v} at epoch {epoch}, batch {} (step {}): training stopped \
                     and nothing of epoch {epoch} was saved. {}",
                    i + 1,
                    ctx.step + 1,
                    self.last_good_state()
                )));
            }
            let mut grads = out.loss.backward()?;
            if self.cfg.clip_grad_norm.is_some() || self.opts.log_steps {
                let max = self.cfg.clip_grad_norm.unwrap_or(f64::INFINITY);
                let grad_norm = clip_grad_norm(&mut grads, self.optimizer.params(), max)?;
                if self.opts.log_steps {
                    self.log_step(epoch, loss_v, grad_norm);
                }
            }
            self.optimizer.step(&grads)?;
            running.add(loss_v, out.correct, out.count);
            let secs = running.seconds + start.elapsed().as_secs_f64();
            bar.set_message(format!(
                "loss {:.4} acc {:.2}% {:.0} {}/s",
                running.loss(),
                100.0 * running.accuracy(),
                running.count as f64 / secs.max(1e-9),
                model.count_unit()
            ));
            bar.inc(1);
            if interrupt::requested() && i + 1 < plan.len() {
                bar.abandon();
                self.carried = model.carried_state();
                self.save_interrupted(epoch, i + 1, plan.len(), running, start, &epoch_rng)?;
                return Ok(Pass::Interrupted);
            }
        }
        bar.finish_and_clear();
        running.seconds += start.elapsed().as_secs_f64();
        Ok(Pass::Done(running, Box::new(data_rng)))
    }

    pub(super) fn log_step(&mut self, epoch: usize, loss: f64, grad_norm: f64) {
        self.steps.push(StepLog {
            step: self.optimizer.step_count() + 1,
            epoch,
            loss,
            grad_norm,
        });
    }

    /// Ctrl-C in the middle of an epoch: saves where it stopped (`batches_done` of `total`),
    /// unless a weight is already non-finite.
    pub(super) fn save_interrupted(
        &mut self,
        epoch: usize,
        done: usize,
        total: usize,
        mut running: Running,
        start: Instant,
        epoch_rng: &DataRng,
    ) -> Result<()> {
        if let Some(name) = checkpoint::first_non_finite(&self.varmap)? {
            return Err(Error::NonFiniteLoss(format!(
                "interrupted in epoch {epoch}, but weight `{name}` is no longer finite: nothing was saved. {}",
                self.last_good_state()
            )));
        }
        running.seconds += start.elapsed().as_secs_f64();
        self.state.running = running;
        self.state.batches_done = done;
        self.state.step = self.optimizer.step_count();
        self.save_checkpoint(epoch_rng)?;
        eprintln!(
            "interrupted in epoch {epoch} after batch {done}/{total}: checkpoint saved to {}",
            self.out_dir.join(CKPT_DIR).display(),
        );
        Ok(())
    }

    /// The epoch's metrics (`running` holds its training sums and seconds): validation loss
    /// and accuracy, then the hook's extra metrics; an error (and nothing saved) if any of
    /// them, the training loss or a weight is not finite.
    pub(super) fn measure<M, V>(
        &self,
        model: &M,
        val: Option<&V>,
        epoch: usize,
        running: Running,
        on_epoch: &mut impl FnMut(&EpochMetrics) -> Result<Vec<(String, f64)>>,
    ) -> Result<EpochMetrics>
    where
        M: TrainModel,
        V: Dataset<Batch = M::Batch>,
    {
        let started = Instant::now();
        let v = match val {
            Some(v) => Some(evaluate(model, v, self.cfg.eval_batch_size)?),
            None => None,
        };
        let mut m = EpochMetrics {
            epoch,
            step: self.optimizer.step_count(),
            lr: self.optimizer.lr(),
            train_loss: running.loss(),
            train_accuracy: running.accuracy(),
            val_loss: v.map(|v| v.loss),
            val_accuracy: v.map(|v| v.accuracy),
            samples_per_sec: running.count as f64 / running.seconds.max(1e-9),
            seconds: 0.0,
            extra: Default::default(),
        };
        m.extra = on_epoch(&m)?.into_iter().collect();
        m.seconds = running.seconds + started.elapsed().as_secs_f64();
        let bad = [
            ("training loss", m.train_loss),
            ("validation loss", m.val_loss.unwrap_or(0.0)),
        ]
        .into_iter()
        .chain(m.extra.iter().map(|(k, v)| (k.as_str(), *v)))
        .find(|(_, x)| !x.is_finite())
        .map(|(what, x)| format!("{what} is {x}"));
        let bad = match bad {
            Some(b) => Some(b),
            None => checkpoint::first_non_finite(&self.varmap)?
                .map(|name| format!("weight `{name}` is no longer finite")),
        };
        if let Some(what) = bad {
            return Err(Error::NonFiniteLoss(format!(
                "after epoch {epoch} the {what}: training stopped and nothing of epoch {epoch} was saved. {}",
                self.last_good_state()
            )));
        }
        Ok(m)
    }

    /// Keeps an epoch: history, the best model if `monitor` improved, the weight-average
    /// snapshot, the checkpoint, `metrics.{jsonl,csv}`, `steps.csv` and `curves.png`.
    /// Returns whether the epoch is the new best.
    pub(super) fn record(
        &mut self,
        m: &EpochMetrics,
        monitor: &Monitor,
        data_rng: DataRng,
    ) -> Result<bool> {
        let score =
            monitor.value(m).ok_or_else(|| {
                Error::config(
                    "monitor",
                    format!(
                    "`{}` was not measured in epoch {} (it measured val_loss, val_accuracy{}): \
                     monitor one of those",
                    monitor.metric,
                    m.epoch,
                    m.extra.keys().map(|k| format!(", val_{k}")).collect::<String>()
                ),
                )
            })?;
        let improved = self.state.best.is_none_or(|b| monitor.better(score, b));
        self.state.history.push(m.clone());
        self.state.epochs_done = m.epoch;
        self.state.batches_done = 0;
        self.state.running = Running::default();
        self.state.data_rng = data_rng;
        if improved {
            self.state.best = Some(score);
            self.state.best_epoch = Some(m.epoch);
            self.state.bad_epochs = 0;
            self.info = self.best_info(m, &[]);
            self.state.best_metrics = self.info.metrics.clone();
        } else {
            self.state.bad_epochs += 1;
        }
        if self
            .cfg
            .first_averaged_epoch()
            .is_some_and(|first| m.epoch >= first)
        {
            self.average.add(&self.varmap)?;
        }
        let data_rng = self.state.data_rng.clone();
        // The checkpoint first, then the best model: a kill between the two leaves a
        // checkpoint whose weights are that best model, and the next run's repair
        // ([`crate::run_dir::recover`]) restores it from there. (The other order left a
        // best model with no checkpoint, which cannot be resumed.)
        self.save_checkpoint(&data_rng)?;
        if improved {
            checkpoint::save_model(&self.out_dir, &self.varmap, &self.info)?;
        }
        metrics::write_history(&self.out_dir, &self.state.history)?;
        if self.opts.log_steps {
            self.write_steps()?;
        }
        #[cfg(feature = "plot")]
        metrics::plot_history(&self.out_dir.join("curves.png"), &self.state.history)?;
        Ok(improved)
    }

    /// The record of the best model after epoch `m`: this run's info with `m`'s validation
    /// metrics and `more`.
    pub(super) fn best_info(&self, m: &EpochMetrics, more: &[(&str, f64)]) -> CheckpointInfo {
        let mut info = self.info.clone();
        info.metrics.insert("epoch".into(), m.epoch as f64);
        if let Some(a) = m.val_accuracy {
            info.metrics.insert("val_accuracy".into(), a);
        }
        if let Some(l) = m.val_loss {
            info.metrics.insert("val_loss".into(), l);
        }
        info.metrics
            .insert("train_accuracy".into(), m.train_accuracy);
        for (k, v) in &m.extra {
            info.metrics.insert(format!("val_{k}"), *v);
        }
        for (k, v) in more {
            info.metrics.insert(k.to_string(), *v);
        }
        info
    }

    /// Saves the weights in the varmap as the best model, with `m`'s validation metrics.
    pub(super) fn save_best(&mut self, m: &EpochMetrics, more: &[(&str, f64)]) -> Result<()> {
        let info = self.best_info(m, more);
        checkpoint::save_model(&self.out_dir, &self.varmap, &info)?;
        self.state.best_metrics = info.metrics.clone();
        self.info = info;
        Ok(())
    }
}
