//! [`Trainer`]: the training loop. One epoch's steps are in `epoch.rs`, saving and `--resume`
//! in `resume.rs`, the weight average in `average.rs`, what it prints in `progress.rs`.

use super::state::TrainerState;
use super::{
    evaluate, interrupt, FitReport, Monitor, RunOptions, StepLog, StopReason, TrainConfig,
    TrainModel, WeightAverage,
};
use crate::checkpoint::{self, CheckpointInfo};
use crate::data::Dataset;
use crate::metrics::{EpochMetrics, EvalMetrics, Running};
use crate::optim::Optimizer;
use crate::rng::{self, DataRng};
use crate::{Error, Result};
use candle_core::Tensor;
use candle_nn::VarMap;
use std::path::{Path, PathBuf};

/// The training loop. See the module docs.
pub struct Trainer {
    pub(super) cfg: TrainConfig,
    pub(super) out_dir: PathBuf,
    pub(super) varmap: VarMap,
    pub(super) optimizer: Optimizer,
    pub(super) info: CheckpointInfo,
    pub(super) state: TrainerState,
    pub(super) opts: RunOptions,
    pub(super) average: WeightAverage,
    /// The model's carried state: to save with a mid-epoch checkpoint, or restored by
    /// `resume` and handed to the model before the epoch goes on.
    pub(super) carried: Vec<(String, Tensor)>,
    pub(super) steps: Vec<StepLog>,
    _lock: crate::run_dir::RunLock,
}

/// How an epoch's training pass ended.
pub(super) enum Pass {
    /// All batches done: the epoch's running sums and the data RNG after its plan.
    Done(Running, Box<DataRng>),
    /// Stopped by Ctrl-C (the checkpoint is saved).
    Interrupted,
}

pub(super) use super::state::CKPT_DIR;

impl Trainer {
    /// A trainer for the variables in `varmap` (build the model first, after
    /// [`rng::seed`]`(cfg.seed)`). `info` describes the model for the saved checkpoints
    /// (put the vocabularies in `info.files`: they are saved with the model, never before).
    ///
    /// Checks `cfg` ([`TrainConfig::validate`]), then takes the lock of `out_dir` (creating
    /// it) and repairs what an interrupted run left there ([`crate::run_dir`]); the lock is
    /// held until the trainer is dropped. Nothing else is written until an epoch completes.
    pub fn new(
        cfg: TrainConfig,
        varmap: &VarMap,
        info: CheckpointInfo,
        out_dir: impl Into<PathBuf>,
    ) -> Result<Self> {
        cfg.validate()?;
        let out_dir = out_dir.into();
        info.validate(&out_dir)?;
        let lock = crate::run_dir::RunLock::acquire(&out_dir)?;
        for line in &lock.recovered {
            eprintln!("{}: {line}", out_dir.display());
        }
        let optimizer = Optimizer::new(cfg.optimizer.clone(), varmap)?;
        let state = TrainerState {
            neka_version: env!("CARGO_PKG_VERSION").into(),
            epochs_done: 0,
            batches_done: 0,
            step: 0,
            model_rng: rng::state(),
            data_rng: rng::data_rng(cfg.seed),
            running: Running::default(),
            best: None,
            best_epoch: None,
            bad_epochs: 0,
            history: Vec::new(),
            optimizer: cfg.optimizer.clone(),
            best_metrics: Default::default(),
            batch_size: Some(cfg.batch_size),
            seed: Some(cfg.seed),
            averaged: 0,
            monitor: None,
            command_line: Vec::new(),
        };
        Ok(Self {
            cfg,
            out_dir,
            varmap: varmap.clone(),
            optimizer,
            info,
            state,
            opts: RunOptions::default(),
            average: WeightAverage::default(),
            carried: Vec::new(),
            steps: Vec::new(),
            _lock: lock,
        })
    }

    /// Sets how the run is shown and controlled (progress bar, epoch lines, Ctrl-C, step log).
    pub fn with_options(mut self, opts: RunOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The training configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Records the flags of the command that runs this training (without `--out` and
    /// `--resume`) in the checkpoint, so that `--resume` can continue the run with its own
    /// settings ([`saved_command_line`](super::saved_command_line)). Call after [`Trainer::resume`].
    pub fn set_command_line(&mut self, flags: Vec<String>) {
        self.state.command_line = flags;
    }

    /// Where checkpoints and metrics go.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Epochs completed so far.
    pub fn epochs_done(&self) -> usize {
        self.state.epochs_done
    }

    /// The checkpoint info (model, config, dataset, metrics).
    pub fn info(&self) -> &CheckpointInfo {
        &self.info
    }

    /// The steps recorded by this trainer when [`RunOptions::log_steps`](super::RunOptions::log_steps) is on.
    pub fn step_log(&self) -> &[StepLog] {
        &self.steps
    }

    /// Trains until `cfg.epochs` epochs are done, early stopping triggers, or Ctrl-C.
    pub fn fit<M, T, V>(&mut self, model: &M, train: &T, val: Option<&V>) -> Result<FitReport>
    where
        M: TrainModel,
        T: Dataset<Batch = M::Batch>,
        V: Dataset<Batch = M::Batch>,
    {
        self.fit_with(model, train, val, |_| Ok(Vec::new()))
    }

    /// [`Trainer::fit`] with a hook called after each epoch's validation with that epoch's
    /// metrics (validation loss and accuracy already measured), returning extra metrics — e.g.
    /// a translation model's validation BLEU. They are printed, kept in the history
    /// (`metrics.jsonl` field `extra`, extra `metrics.csv` columns), can be monitored
    /// (`val_<name>`), and for the best epoch are saved in `config.json` as `val_<name>`.
    ///
    /// One epoch is: `train_epoch` (the optimizer steps), `measure`
    /// (validation, the hook, the finiteness checks), `record` (history, best model,
    /// checkpoint, metrics files), then the stopping rules. After the last epoch a weight
    /// average, if asked for, is compared with the best epoch (`finish_average`).
    pub fn fit_with<M, T, V>(
        &mut self,
        model: &M,
        train: &T,
        val: Option<&V>,
        mut on_epoch: impl FnMut(&EpochMetrics) -> Result<Vec<(String, f64)>>,
    ) -> Result<FitReport>
    where
        M: TrainModel,
        T: Dataset<Batch = M::Batch>,
        V: Dataset<Batch = M::Batch>,
    {
        self.begin(train, val)?;
        let monitor = self.cfg.monitor.clone().unwrap_or_else(|| model.monitor());
        self.check_monitor(&monitor)?;
        let mut stop = StopReason::Completed;
        while self.state.epochs_done < self.cfg.epochs {
            let epoch = self.state.epochs_done + 1;
            let (running, data_rng) = match self.train_epoch(model, train, epoch)? {
                Pass::Done(running, rng) => (running, *rng),
                Pass::Interrupted => {
                    stop = StopReason::Interrupted;
                    break;
                }
            };
            let m = self.measure(model, val, epoch, running, &mut on_epoch)?;
            let improved = self.record(&m, &monitor, data_rng)?;
            self.print_epoch(&m, improved, model.count_unit());
            if let Some(p) = self.cfg.patience {
                if self.state.bad_epochs >= p {
                    if self.opts.verbose {
                        println!(
                            "early stopping: no better {} for {p} epochs",
                            monitor.metric
                        );
                    }
                    stop = StopReason::EarlyStopped;
                    break;
                }
            }
            if interrupt::requested() {
                eprintln!(
                    "interrupted after epoch {epoch}: checkpoint saved to {}",
                    self.out_dir.join(CKPT_DIR).display(),
                );
                stop = StopReason::Interrupted;
                break;
            }
        }
        let average = match stop {
            StopReason::Interrupted => None,
            _ => self.finish_average(model, val, &monitor, &mut on_epoch)?,
        };
        Ok(FitReport {
            history: self.state.history.clone(),
            best_epoch: self.state.best_epoch,
            best_val_accuracy: self
                .state
                .history
                .iter()
                .filter_map(|m| m.val_accuracy)
                .reduce(f64::max),
            monitor,
            best_score: self.state.best,
            average,
            stop,
            out_dir: self.out_dir.clone(),
        })
    }

    /// Checks the monitored metric: a resumed run keeps the metric its best score was
    /// measured in, since another one would be compared with the saved best of the old
    /// (validation accuracy against a perplexity).
    pub(super) fn check_monitor(&mut self, monitor: &Monitor) -> Result<()> {
        let resumed = self.state.epochs_done > 0 || self.state.batches_done > 0;
        let saved = self.state.monitor.clone().unwrap_or_default();
        if resumed && saved != *monitor {
            return Err(Error::ResumeMismatch {
                dir: self.out_dir.clone(),
                differences: vec![format!(
                    "monitored metric: saved run {saved}, this run {monitor} (`monitor` {saved} \
                     resumes it)"
                )],
            });
        }
        self.state.monitor = Some(monitor.clone());
        Ok(())
    }

    /// Checks the data, creates the output folder, installs the Ctrl-C handler.
    pub(super) fn begin<T: Dataset, V: Dataset>(
        &mut self,
        train: &T,
        val: Option<&V>,
    ) -> Result<()> {
        if train.is_empty() {
            return Err(Error::config("training data", "is empty"));
        }
        if val.is_some_and(|v| v.is_empty()) {
            return Err(Error::config(
                "validation data",
                "is empty: choosing the best epoch and early stopping need at least one example \
                 (check --val-size, or that the dev / validation file holds data)",
            ));
        }
        std::fs::create_dir_all(&self.out_dir).map_err(|e| Error::io(&self.out_dir, e))?;
        if self.opts.handle_ctrl_c {
            interrupt::install_ctrl_c_handler();
        }
        interrupt::clear();
        Ok(())
    }

    /// Loads the best saved weights (`out/model.safetensors`) into the model.
    pub fn load_best(&self) -> Result<()> {
        checkpoint::load_into_varmap(&self.varmap, &self.out_dir.join(checkpoint::WEIGHTS_FILE))?;
        Ok(())
    }

    /// The usual end-to-end run: [`Trainer::fit`], then (unless interrupted) load the best
    /// weights, evaluate them on `test` and save them with `test_accuracy` / `test_loss`.
    /// Returns `None` when the run was interrupted (the checkpoint is saved for `--resume`).
    pub fn fit_and_test<M, T, V>(
        &mut self,
        model: &M,
        train: &T,
        val: Option<&V>,
        test: &V,
    ) -> Result<Option<(FitReport, EvalMetrics)>>
    where
        M: TrainModel,
        T: Dataset<Batch = M::Batch>,
        V: Dataset<Batch = M::Batch>,
    {
        let report = self.fit(model, train, val)?;
        if report.stop == StopReason::Interrupted {
            return Ok(None);
        }
        self.load_best()?;
        let test = evaluate(model, test, self.cfg.eval_batch_size)?;
        self.save_final(&[("test_accuracy", test.accuracy), ("test_loss", test.loss)])?;
        Ok(Some((report, test)))
    }

    /// Rewrites the best model's files with `extra` metrics added (e.g. test accuracy).
    /// Call after [`Trainer::load_best`].
    pub fn save_final(&mut self, extra: &[(&str, f64)]) -> Result<()> {
        for (k, v) in extra {
            self.info.metrics.insert(k.to_string(), *v);
        }
        checkpoint::save_model(&self.out_dir, &self.varmap, &self.info)
    }
}
