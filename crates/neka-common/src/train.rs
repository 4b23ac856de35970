//! The one training loop of the zoo.
//!
//! [`Trainer::fit`] trains any [`TrainModel`] on any [`Dataset`]: seeded shuffling, an
//! optimizer from [`crate::optim`] with a learning-rate schedule, global-norm gradient
//! clipping, validation every epoch, keep-best checkpoint, early stopping, `metrics.jsonl` /
//! `metrics.csv` / `curves.png`, a progress bar, NaN detection, Ctrl-C handling and exact
//! resume (`--resume`).
//!
//! The output directory:
//! ```text
//! out/
//!   model.safetensors                best model so far (by validation accuracy), with its
//!                                    whole record (config, metrics, vocabularies) inside
//!   config.json, *.json              readable copies of that record
//!   checkpoint/                      latest state, for --resume:
//!     model.safetensors  optimizer.safetensors  state.json
//!   metrics.jsonl  metrics.csv  curves.png
//!   .neka.lock                       held while a run writes here
//! ```
//!
//! What a run directory guarantees (see [`crate::run_dir`] and [`crate::checkpoint`]):
//! * one training at a time ([`crate::run_dir::RunLock`], taken by [`Trainer::new`]);
//! * every replacement is atomic: the best model's weights file is its one commit point, the
//!   checkpoint folder is swapped by renames with `checkpoint.old/` as the fallback, and
//!   temporary files of an interrupted save are removed by the next run;
//! * nothing in the directory is replaced until the new state is complete: the vocabularies
//!   are written with the first saved model, not before;
//! * a non-finite loss (training or validation), metric or weight saves nothing of that
//!   epoch, and the error names the last good state to resume from;
//! * `--resume` refuses a run that differs from the saved one in what defines it (model kind
//!   and config, dataset and data selection, preprocessing, classes, vocabularies, optimizer
//!   kind, batch size, seed, the monitored metric), naming each difference.

use crate::checkpoint::{self, CheckpointInfo};
use crate::data::{Dataset, LabeledBatch};
use crate::metrics::{self, EpochMetrics, EvalMetrics, Running};
use crate::optim::{clip_grad_norm, LrSchedule, Optimizer, OptimizerConfig};
use crate::rng::{self, DataRng};
use crate::{Error, Result};
use candle_core::{DType, ModuleT, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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
    /// 1-based epoch (0 outside training: [`evaluate`]).
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
    type Batch;
    fn step(&self, batch: &Self::Batch, ctx: &StepContext) -> candle_core::Result<StepOutput>;
    /// What [`StepOutput::count`] counts, for the progress line's rate (`… 531 tokens/s`).
    fn count_unit(&self) -> &'static str {
        "samples"
    }
    /// The validation metric that picks the best epoch and drives early stopping, unless
    /// [`TrainConfig::monitor`] says otherwise: validation accuracy for classifiers.
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

/// Whether a [`Monitor`]ed metric is better larger or smaller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    Max,
    Min,
}

/// The metric that picks the best epoch (the one saved as `model.safetensors`) and drives
/// early stopping, with its direction.
///
/// Names: `val_accuracy`, `val_loss`, `val_perplexity` (`exp(val_loss)`), `train_accuracy`,
/// `train_loss`, or `val_<name>` for a metric `<name>` returned by [`Trainer::fit_with`]'s
/// hook (the translator's `val_bleu`). Without validation data `val_accuracy` and `val_loss`
/// fall back to the training figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Monitor {
    pub metric: String,
    pub goal: Goal,
}

impl Default for Monitor {
    /// Validation accuracy, higher is better.
    fn default() -> Self {
        Self::max("val_accuracy")
    }
}

impl std::fmt::Display for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let goal = match self.goal {
            Goal::Max => "max",
            Goal::Min => "min",
        };
        write!(f, "{}:{goal}", self.metric)
    }
}

impl Monitor {
    /// `metric`, higher is better.
    pub fn max(metric: &str) -> Self {
        Self {
            metric: metric.into(),
            goal: Goal::Max,
        }
    }

    /// `metric`, lower is better.
    pub fn min(metric: &str) -> Self {
        Self {
            metric: metric.into(),
            goal: Goal::Min,
        }
    }

    /// Parses `METRIC[:max|:min]` (`--monitor val_bleu`, `--monitor val_loss:min`); without a
    /// direction, losses and perplexities are minimised and everything else maximised.
    pub fn parse(s: &str) -> Result<Self> {
        let (metric, goal) = match s.rsplit_once(':') {
            Some((m, "max")) => (m, Some(Goal::Max)),
            Some((m, "min")) => (m, Some(Goal::Min)),
            Some((_, g)) => {
                return Err(Error::config(
                    "--monitor",
                    format!("`{s}`: the direction `{g}` is neither max nor min"),
                ))
            }
            None => (s, None),
        };
        if metric.is_empty()
            || !metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::config(
                "--monitor",
                format!("`{s}`: expected a metric name such as val_accuracy, val_loss or val_bleu, optionally :max or :min"),
            ));
        }
        let lower_is_better = metric.ends_with("loss") || metric.ends_with("perplexity");
        let goal = goal.unwrap_or(if lower_is_better {
            Goal::Min
        } else {
            Goal::Max
        });
        Ok(Self {
            metric: metric.into(),
            goal,
        })
    }

    /// The monitored value in an epoch's metrics (`None` if the epoch did not measure it).
    pub fn value(&self, m: &EpochMetrics) -> Option<f64> {
        match self.metric.as_str() {
            "val_accuracy" => Some(m.val_accuracy.unwrap_or(m.train_accuracy)),
            "val_loss" => Some(m.val_loss.unwrap_or(m.train_loss)),
            "val_perplexity" => Some(m.val_loss.unwrap_or(m.train_loss).exp()),
            "train_accuracy" => Some(m.train_accuracy),
            "train_loss" => Some(m.train_loss),
            other => m
                .extra
                .get(other.strip_prefix("val_").unwrap_or(other))
                .or_else(|| m.extra.get(other))
                .copied(),
        }
    }

    /// Whether `new` beats `old` (ties do not).
    pub fn better(&self, new: f64, old: f64) -> bool {
        match self.goal {
            Goal::Max => new > old,
            Goal::Min => new < old,
        }
    }
}

/// How to train: what defines the run and is saved with it. How the run is shown (progress
/// bar, epoch lines, Ctrl-C) is [`RunOptions`], not saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Batch size for validation and test passes (no gradients, so it can be larger).
    pub eval_batch_size: usize,
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: LrSchedule,
    /// Clip the global gradient norm to this value.
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// Stop after this many epochs without a better monitored metric.
    #[serde(default)]
    pub patience: Option<usize>,
    pub seed: u64,
    /// Train on at most this many batches per epoch (smoke tests, `--dry-run`).
    #[serde(default)]
    pub max_batches_per_epoch: Option<usize>,
    /// The metric that picks the best epoch; `None`: the model's ([`TrainModel::monitor`]).
    #[serde(default)]
    pub monitor: Option<Monitor>,
    /// Also average the weights of the last `average_last` epochs (stochastic weight
    /// averaging, [`WeightAverage`]); the average replaces the best epoch if the monitored
    /// metric says it is better on validation data. 0 = off.
    #[serde(default)]
    pub average_last: usize,
}

/// How a run is shown and controlled; not part of what defines it (never saved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Print one line per epoch to stdout.
    pub verbose: bool,
    /// Install a Ctrl-C handler: finish the batch, save a checkpoint, return.
    pub handle_ctrl_c: bool,
    /// Record every optimizer step's loss and gradient norm ([`Trainer::step_log`],
    /// `steps.csv`).
    pub log_steps: bool,
}

impl Default for RunOptions {
    /// Progress bar and epoch lines on; no Ctrl-C handler, no step log.
    fn default() -> Self {
        Self {
            progress: true,
            verbose: true,
            handle_ctrl_c: false,
            log_steps: false,
        }
    }
}

impl RunOptions {
    /// What a command-line training shows: progress, epoch lines, Ctrl-C saves a checkpoint.
    pub fn interactive() -> Self {
        Self {
            handle_ctrl_c: true,
            ..Self::default()
        }
    }

    /// Nothing printed (tests, experiments that run many trainings).
    pub fn quiet() -> Self {
        Self {
            progress: false,
            verbose: false,
            ..Self::default()
        }
    }
}

impl TrainConfig {
    /// Checks every number against its range, naming the flag: at least one epoch, batch and
    /// patience epoch; a clipping norm finite and > 0; a batch cap ≥ 1; the optimizer's and the
    /// schedule's hyper-parameters ([`OptimizerConfig::validate`], [`LrSchedule::validate`]).
    /// [`Trainer::new`] calls it, so a bad value stops before anything is written.
    pub fn validate(&self) -> Result<()> {
        let at_least_one = |flag: &str, v: usize, what: &str| {
            if v == 0 {
                Err(Error::config(flag, format!("0: {what}")))
            } else {
                Ok(())
            }
        };
        at_least_one(
            "--epochs",
            self.epochs,
            "train at least one epoch (to score a saved model, use its `eval` command)",
        )?;
        at_least_one("--batch-size", self.batch_size, "must be at least 1")?;
        at_least_one(
            "--batch-size",
            self.eval_batch_size,
            "the evaluation batch size must be at least 1",
        )?;
        if let Some(p) = self.patience {
            at_least_one(
                "--patience",
                p,
                "stop after at least one epoch without improvement, or leave it out",
            )?;
        }
        if let Some(m) = self.max_batches_per_epoch {
            at_least_one(
                "--max-batches",
                m,
                "train on at least one batch, or leave it out",
            )?;
        }
        if let Some(c) = self.clip_grad_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::config(
                    "--clip-grad-norm",
                    format!("{c}: must be a finite number > 0 (a norm to scale gradients down to)"),
                ));
            }
        }
        self.optimizer.validate()?;
        self.schedule.validate()
    }

    /// `epochs` epochs of batches of `batch_size` with `optimizer`, the rest as
    /// [`TrainConfig::default`]; with the builders below, a model's training defaults
    /// read as one line: `TrainConfig::new(10, 64, OptimizerConfig::adamw(2e-3)).clip(1.0).cosine()`.
    pub fn new(epochs: usize, batch_size: usize, optimizer: OptimizerConfig) -> Self {
        Self {
            epochs,
            batch_size,
            optimizer,
            ..Self::default()
        }
    }

    /// Validation and test batches of `n`.
    pub fn eval_batch(mut self, n: usize) -> Self {
        self.eval_batch_size = n;
        self
    }

    /// Clips the global gradient norm to `max_norm`.
    pub fn clip(mut self, max_norm: f64) -> Self {
        self.clip_grad_norm = Some(max_norm);
        self
    }

    /// A cosine learning-rate schedule over the whole run (`T_max` = the epochs).
    pub fn cosine(mut self) -> Self {
        self.schedule = LrSchedule::Cosine {
            t_max: self.epochs,
            eta_min: 0.0,
        };
        self
    }

    /// The first 1-based epoch whose weights go into the average (`None`: averaging off).
    pub fn first_averaged_epoch(&self) -> Option<usize> {
        (self.average_last > 0).then(|| self.epochs.saturating_sub(self.average_last) + 1)
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 64,
            eval_batch_size: 1000,
            optimizer: OptimizerConfig::adamw(1e-3),
            schedule: LrSchedule::Constant,
            clip_grad_norm: None,
            patience: None,
            seed: 0,
            max_batches_per_epoch: None,
            monitor: None,
            average_last: 0,
        }
    }
}

/// One optimizer step, recorded when [`TrainConfig::log_steps`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// 1-based optimizer step.
    pub step: usize,
    /// 1-based epoch.
    pub epoch: usize,
    pub loss: f64,
    /// Global gradient norm before clipping (NaN for a step whose loss was not finite).
    pub grad_norm: f64,
}

/// Why [`Trainer::fit`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Completed,
    EarlyStopped,
    Interrupted,
}

/// What a [`Trainer::fit`] call did.
#[derive(Debug, Clone)]
pub struct FitReport {
    pub history: Vec<EpochMetrics>,
    /// The epoch saved as the best model (for a kept weight average: the last averaged one).
    pub best_epoch: Option<usize>,
    /// The best validation accuracy of any epoch (not of the average).
    pub best_val_accuracy: Option<f64>,
    /// What picked the best model, and its value there.
    pub monitor: Monitor,
    pub best_score: Option<f64>,
    /// The weight average of the last epochs, when [`TrainConfig::average_last`] is on.
    pub average: Option<AverageReport>,
    pub stop: StopReason,
    pub out_dir: PathBuf,
}

/// How the weight average of the last epochs did against the best single epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct AverageReport {
    /// 1-based epochs averaged, first and last.
    pub first_epoch: usize,
    pub last_epoch: usize,
    /// Validation metrics of the averaged weights (`epoch` = the last averaged one).
    pub metrics: EpochMetrics,
    /// Whether the average was better than the best epoch and replaced it as the best model.
    pub kept: bool,
}

impl FitReport {
    /// What was kept as the best model: `best epoch N` or `weight average of epochs A–B`.
    pub fn kept(&self) -> String {
        match &self.average {
            Some(a) if a.kept => format!(
                "weight average of epochs {}–{}",
                a.first_epoch, a.last_epoch
            ),
            _ => format!("best epoch {}", self.best_epoch.unwrap_or(0)),
        }
    }

    /// Validation accuracy of the model kept (the average's, if it was kept).
    pub fn kept_val_accuracy(&self) -> Option<f64> {
        match &self.average {
            Some(a) if a.kept => a.metrics.val_accuracy,
            _ => self.best_val_accuracy,
        }
    }

    /// Wall time of the epochs trained, seconds (over resumes too).
    pub fn train_seconds(&self) -> f64 {
        self.history.iter().map(|m| m.seconds).sum()
    }
}

/// Everything besides weights and optimizer moments that a resumed run needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    neka_version: String,
    epochs_done: usize,
    /// Batches already trained in the epoch after `epochs_done` (non-zero after Ctrl-C).
    batches_done: usize,
    step: usize,
    model_rng: rand_chacha::ChaCha8Rng,
    /// Data RNG before the current epoch's plan was drawn (so the plan can be redrawn).
    data_rng: rand_chacha::ChaCha8Rng,
    running: Running,
    best: Option<f64>,
    best_epoch: Option<usize>,
    bad_epochs: usize,
    history: Vec<EpochMetrics>,
    optimizer: OptimizerConfig,
    /// Metrics of the best epoch, restored into the checkpoint info on resume.
    #[serde(default)]
    best_metrics: std::collections::BTreeMap<String, f64>,
    /// Batch size and seed of the run (they fix the data order; compared on resume).
    #[serde(default)]
    batch_size: Option<usize>,
    #[serde(default)]
    seed: Option<u64>,
    /// Snapshots in the running weight average (`average.safetensors` holds their sum).
    #[serde(default)]
    averaged: usize,
    /// The monitored metric (compared on resume; a run saved without one monitored
    /// validation accuracy).
    #[serde(default)]
    monitor: Option<Monitor>,
    /// The flags of the command that started the run (without `--out` / `--resume`), so that
    /// `--resume DIR` continues it with its own settings ([`saved_command_line`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    command_line: Vec<String>,
}

/// The checkpoint folder of a run directory that `--resume` reads: `dir/checkpoint/`, else
/// `dir/checkpoint.old/` (a save interrupted between its two renames), else `dir` itself when
/// it is a checkpoint folder.
fn checkpoint_folder(dir: &Path) -> Result<PathBuf> {
    [
        dir.join(CKPT_DIR),
        dir.join(format!("{CKPT_DIR}.old")),
        dir.to_path_buf(),
    ]
    .into_iter()
    .find(|d| d.join("state.json").is_file())
    .ok_or_else(|| {
        Error::checkpoint(
            dir,
            "no checkpoint/state.json here: --resume takes the --out directory of an earlier run",
        )
    })
}

/// The flags of the command that started the run saved in `dir` (see
/// [`Trainer::set_command_line`]); empty for a run saved without them (neka ≤ 0.1 runs).
/// Errors when `dir` holds no readable checkpoint.
pub fn saved_command_line(dir: &Path) -> Result<Vec<String>> {
    let state: TrainerState = checkpoint::read_json(&checkpoint_folder(dir)?.join("state.json"))?;
    Ok(state.command_line)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs (once per process) a Ctrl-C handler: the first Ctrl-C asks the training loop to
/// stop after the current batch and save; a second one exits at once.
pub fn install_ctrl_c_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond Ctrl-C: exiting without saving");
                std::process::exit(130);
            }
            eprintln!(
                "\nCtrl-C: finishing this batch, saving a checkpoint (Ctrl-C again to abort)"
            );
        });
    });
}

/// Asks a running [`Trainer::fit`] to stop after the current batch (what Ctrl-C does).
pub fn request_stop() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// The training loop. See the module docs.
pub struct Trainer {
    cfg: TrainConfig,
    out_dir: PathBuf,
    varmap: VarMap,
    optimizer: Optimizer,
    info: CheckpointInfo,
    state: TrainerState,
    opts: RunOptions,
    average: WeightAverage,
    /// The model's carried state: to save with a mid-epoch checkpoint, or restored by
    /// `resume` and handed to the model before the epoch goes on.
    carried: Vec<(String, Tensor)>,
    steps: Vec<StepLog>,
    _lock: crate::run_dir::RunLock,
}

/// How an epoch's training pass ended.
enum Pass {
    /// All batches done: the epoch's running sums and the data RNG after its plan.
    Done(Running, Box<DataRng>),
    /// Stopped by Ctrl-C (the checkpoint is saved).
    Interrupted,
}

const CKPT_DIR: &str = crate::run_dir::CHECKPOINT_DIR;
/// In `checkpoint/`: the sum of the weight-average snapshots so far (f64), for `--resume`.
const AVERAGE_FILE: &str = "average.safetensors";
/// In `checkpoint/` after a mid-epoch stop: the model's carried state
/// ([`TrainModel::carried_state`]).
const CARRIED_FILE: &str = "carried.safetensors";

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

    /// Restores weights, optimizer state, epoch, step and RNG states from `dir` (a run's
    /// output directory, or its `checkpoint/` folder).
    ///
    /// The saved run must agree with this one on everything that defines it — model kind and
    /// config, dataset and data selection (`info.data`), preprocessing, classes and
    /// vocabularies (`info.files`), optimizer kind, batch size and seed — or nothing is
    /// loaded and [`Error::ResumeMismatch`] lists every difference. Only `cfg.epochs`, the
    /// learning rate and schedule, patience, clipping, the batch cap and the evaluation batch
    /// size may change.
    pub fn resume(&mut self, dir: &Path) -> Result<()> {
        let ck = checkpoint_folder(dir)?;
        let state: TrainerState = checkpoint::read_json(&ck.join("state.json"))?;
        let weights = ck.join(checkpoint::WEIGHTS_FILE);
        let mut differences = Vec::new();
        let meta = checkpoint::read_metadata(&weights)?;
        match CheckpointInfo::from_metadata(&meta, &weights)? {
            Some(mut saved) => {
                // Records written before neka kept data selection and vocabularies in the
                // weights (no `data` entry) hold neither: nothing to compare them with.
                if !meta.contains_key("data") {
                    saved.data = self.info.data.clone();
                    saved.files = self.info.files.clone();
                }
                differences.extend(saved.differences(&self.info));
            }
            None => differences.push(format!(
                "{} holds no neka record (model, config, dataset)",
                weights.display()
            )),
        }
        if state.optimizer.name() != self.cfg.optimizer.name() {
            differences.push(format!(
                "optimizer: saved run {}, this run {} (--optimizer)",
                state.optimizer.name(),
                self.cfg.optimizer.name()
            ));
        }
        if let Some(b) = state.batch_size.filter(|&b| b != self.cfg.batch_size) {
            differences.push(format!(
                "batch size: saved run {b}, this run {} (--batch-size)",
                self.cfg.batch_size
            ));
        }
        if let Some(s) = state.seed.filter(|&s| s != self.cfg.seed) {
            differences.push(format!(
                "seed: saved run {s}, this run {} (--seed)",
                self.cfg.seed
            ));
        }
        if !differences.is_empty() {
            return Err(Error::ResumeMismatch {
                dir: dir.to_path_buf(),
                differences,
            });
        }
        // Everything the resumed run reads or keeps is read and checked here, before anything
        // changes: the checkpoint's weights, optimizer state, carried state and weight-average
        // sum, and the best model the run falls back to at its end.
        let device = self.varmap.all_vars().first().map(|v| v.device().clone());
        let device = device.unwrap_or(candle_core::Device::Cpu);
        checkpoint::check_against_varmap(&self.varmap, &weights)?;
        let opt_path = ck.join("optimizer.safetensors");
        let (opt_tensors, _) = checkpoint::load_tensors(&opt_path, &candle_core::Device::Cpu)?;
        let carried = if state.batches_done > 0 && ck.join(CARRIED_FILE).is_file() {
            let (t, _) = checkpoint::load_tensors(&ck.join(CARRIED_FILE), &device)?;
            let mut t: Vec<(String, Tensor)> = t.into_iter().collect();
            t.sort_by(|a, b| a.0.cmp(&b.0));
            t
        } else {
            Vec::new()
        };
        let average = if state.averaged > 0 {
            let path = ck.join(AVERAGE_FILE);
            let (sum, _) = checkpoint::load_tensors(&path, &device)?;
            WeightAverage::from_sum(sum.into_iter().collect(), state.averaged)
        } else {
            WeightAverage::default()
        };
        let run_dir = if ck == dir {
            dir.parent().unwrap_or(Path::new("."))
        } else {
            dir
        };
        let best = match state.best_epoch {
            Some(epoch) => Some(self.check_best_model(run_dir, epoch)?),
            None => None,
        };
        // All checked: restore.
        self.optimizer
            .load_state(opt_tensors, state.step, &opt_path)?;
        checkpoint::load_into_varmap(&self.varmap, &weights)?;
        if let Some(best) = best {
            self.keep_best_model(&best)?;
        }
        self.carried = carried;
        self.average = average;
        rng::set_state(state.model_rng.clone());
        self.info.metrics = state.best_metrics.clone();
        self.state = state;
        Ok(())
    }

    /// Checks the best model of the run being resumed (`run_dir/model.safetensors`): whole,
    /// of this model (names, shapes, finite values, the same record) and of the best epoch the
    /// checkpoint names (or the weight average that replaced it). Returns its path.
    fn check_best_model(&self, run_dir: &Path, best_epoch: usize) -> Result<PathBuf> {
        let path = run_dir.join(checkpoint::WEIGHTS_FILE);
        let unusable = |why: String| {
            Error::checkpoint(
                &path,
                format!(
                    "{why}. This is the best model (epoch {best_epoch}) of the run that --resume \
                     continues, which its end falls back to: nothing was changed; put the file back, \
                     or start a new run with another --out"
                ),
            )
        };
        if !path.is_file() {
            return Err(unusable("missing".into()));
        }
        let meta = checkpoint::check_against_varmap(&self.varmap, &path)
            .map_err(|e| unusable(e.to_string()))?;
        let saved = CheckpointInfo::from_metadata(&meta, &path)?
            .ok_or_else(|| unusable("it holds no neka record (model, config, dataset)".into()))?;
        let mut now = self.info.clone();
        if !meta.contains_key("data") {
            now.data = saved.data.clone();
            now.files = saved.files.clone();
        }
        let differences = saved.differences(&now);
        if !differences.is_empty() {
            return Err(unusable(format!(
                "it is not this run's model: {}",
                differences.join("; ")
            )));
        }
        let epoch = saved.metrics.get("epoch").map(|&e| e as usize);
        if !saved.metrics.contains_key("averaged_epochs") && epoch != Some(best_epoch) {
            return Err(unusable(format!(
                "it holds epoch {}, the checkpoint's best is epoch {best_epoch}",
                epoch.map_or("?".into(), |e| e.to_string())
            )));
        }
        Ok(path)
    }

    /// Makes the checked best model at `best` the best model of this run's output directory
    /// too (when `--out` differs from the directory resumed), so that a resumed run that
    /// never improves still ends with it.
    fn keep_best_model(&self, best: &Path) -> Result<()> {
        let target = self.out_dir.join(checkpoint::WEIGHTS_FILE);
        let same = match (best.canonicalize(), target.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same {
            let bytes = std::fs::read(best).map_err(|e| Error::io(best, e))?;
            checkpoint::write_atomic(&target, &bytes)?;
            checkpoint::refresh_copies(&self.out_dir)?;
        }
        Ok(())
    }

    /// Records the flags of the command that runs this training (without `--out` and
    /// `--resume`) in the checkpoint, so that `--resume` can continue the run with its own
    /// settings ([`saved_command_line`]). Call after [`Trainer::resume`].
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

    fn save_checkpoint(&self, data_rng: &DataRng) -> Result<()> {
        let tmp = self
            .out_dir
            .join(format!("{CKPT_DIR}.tmp-{}", std::process::id()));
        let result = self.write_checkpoint(&tmp, data_rng);
        if result.is_err() {
            // e.g. a full disk: do not leave a partial copy holding the space.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    fn write_checkpoint(&self, tmp: &Path, data_rng: &DataRng) -> Result<()> {
        let cur = self.out_dir.join(CKPT_DIR);
        let old = self.out_dir.join(format!("{CKPT_DIR}.old"));
        let _ = std::fs::remove_dir_all(tmp);
        std::fs::create_dir_all(tmp).map_err(|e| Error::io(tmp, e))?;
        checkpoint::save_tensors(
            &tmp.join(checkpoint::WEIGHTS_FILE),
            &checkpoint::varmap_tensors(&self.varmap),
            Some(self.info.to_metadata()),
        )?;
        checkpoint::save_tensors(
            &tmp.join("optimizer.safetensors"),
            &self.optimizer.state_tensors(),
            None,
        )?;
        if self.average.count() > 0 {
            checkpoint::save_tensors(&tmp.join(AVERAGE_FILE), &self.average.sum_tensors(), None)?;
        }
        if self.state.batches_done > 0 && !self.carried.is_empty() {
            checkpoint::save_tensors(&tmp.join(CARRIED_FILE), &self.carried, None)?;
        }
        let mut state = self.state.clone();
        state.averaged = self.average.count();
        state.model_rng = rng::state();
        state.data_rng = data_rng.clone();
        state.step = self.optimizer.step_count();
        checkpoint::write_json(&tmp.join("state.json"), &state)?;
        // Swap directories so that a complete checkpoint exists at every moment: between the
        // two renames it is `checkpoint.old/`, which --resume and the next run's repair use.
        let _ = std::fs::remove_dir_all(&old);
        if cur.exists() {
            std::fs::rename(&cur, &old).map_err(|e| Error::io(&cur, e))?;
        }
        std::fs::rename(tmp, &cur).map_err(|e| Error::io(tmp, e))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// Where to continue after a divergence: the last good state, or that there is none.
    fn last_good_state(&self) -> String {
        if self.out_dir.join(CKPT_DIR).join("state.json").is_file() && self.state.epochs_done > 0 {
            format!(
                "The last good state is {} (after epoch {}), untouched: continue from it with --resume {} \
                 and a lower --lr or --clip-grad-norm",
                self.out_dir.join(CKPT_DIR).display(),
                self.state.epochs_done,
                self.out_dir.display()
            )
        } else {
            "No checkpoint had been saved yet: start again with a lower --lr or --clip-grad-norm"
                .to_string()
        }
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
    /// One epoch is: [`Self::train_epoch`] (the optimizer steps), [`Self::measure`]
    /// (validation, the hook, the finiteness checks), [`Self::record`] (history, best model,
    /// checkpoint, metrics files), then the stopping rules. After the last epoch a weight
    /// average, if asked for, is compared with the best epoch ([`Self::finish_average`]).
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
            if INTERRUPTED.load(Ordering::SeqCst) {
                eprintln!(
                    "interrupted after epoch {epoch}: checkpoint saved to {}; continue with --resume {}",
                    self.out_dir.join(CKPT_DIR).display(),
                    self.out_dir.display()
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

    /// Checks the data, creates the output folder, installs the Ctrl-C handler.
    /// A resumed run keeps the metric its best score was measured in: another one would be
    /// compared with the saved best of the old (validation accuracy against a perplexity).
    fn check_monitor(&mut self, monitor: &Monitor) -> Result<()> {
        let resumed = self.state.epochs_done > 0 || self.state.batches_done > 0;
        let saved = self.state.monitor.clone().unwrap_or_default();
        if resumed && saved != *monitor {
            return Err(Error::ResumeMismatch {
                dir: self.out_dir.clone(),
                differences: vec![format!(
                    "monitored metric: saved run {saved}, this run {monitor} (--monitor {saved} \
                     resumes it)"
                )],
            });
        }
        self.state.monitor = Some(monitor.clone());
        Ok(())
    }

    fn begin<T: Dataset, V: Dataset>(&mut self, train: &T, val: Option<&V>) -> Result<()> {
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
            install_ctrl_c_handler();
        }
        INTERRUPTED.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// One epoch's optimizer steps (from where an interrupted epoch stopped): the seeded
    /// batch plan, forward, a finite loss, backward, clipping, the optimizer step. On Ctrl-C
    /// it saves a checkpoint mid-epoch and returns [`Pass::Interrupted`].
    fn train_epoch<M, T>(&mut self, model: &M, train: &T, epoch: usize) -> Result<Pass>
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
            if INTERRUPTED.load(Ordering::SeqCst) && i + 1 < plan.len() {
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

    fn log_step(&mut self, epoch: usize, loss: f64, grad_norm: f64) {
        self.steps.push(StepLog {
            step: self.optimizer.step_count() + 1,
            epoch,
            loss,
            grad_norm,
        });
    }

    /// Ctrl-C in the middle of an epoch: saves where it stopped (`batches_done` of `total`),
    /// unless a weight is already non-finite.
    fn save_interrupted(
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
            "interrupted in epoch {epoch} after batch {done}/{total}: checkpoint saved to {}; continue with --resume {}",
            self.out_dir.join(CKPT_DIR).display(),
            self.out_dir.display()
        );
        Ok(())
    }

    /// The epoch's metrics (`running` holds its training sums and seconds): validation loss
    /// and accuracy, then the hook's extra metrics; an error (and nothing saved) if any of
    /// them, the training loss or a weight is not finite.
    fn measure<M, V>(
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
    fn record(&mut self, m: &EpochMetrics, monitor: &Monitor, data_rng: DataRng) -> Result<bool> {
        let score =
            monitor.value(m).ok_or_else(|| {
                Error::config(
                    "--monitor",
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
        metrics::plot_history(&self.out_dir.join("curves.png"), &self.state.history)?;
        Ok(improved)
    }

    /// The record of the best model after epoch `m`: this run's info with `m`'s validation
    /// metrics and `more`.
    fn best_info(&self, m: &EpochMetrics, more: &[(&str, f64)]) -> CheckpointInfo {
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
    fn save_best(&mut self, m: &EpochMetrics, more: &[(&str, f64)]) -> Result<()> {
        let info = self.best_info(m, more);
        checkpoint::save_model(&self.out_dir, &self.varmap, &info)?;
        self.state.best_metrics = info.metrics.clone();
        self.info = info;
        Ok(())
    }

    fn print_epoch(&self, m: &EpochMetrics, improved: bool, unit: &str) {
        if !self.opts.verbose {
            return;
        }
        let extra: String = m
            .extra
            .iter()
            .map(|(k, v)| format!(" {k} {v:.4}"))
            .collect();
        println!(
            "epoch {}/{}  train loss {:.4} acc {:.2}%{}{extra}  lr {:.2e}  {:.0} {unit}/s  {:.1}s{}",
            m.epoch,
            self.cfg.epochs,
            m.train_loss,
            100.0 * m.train_accuracy,
            match (m.val_loss, m.val_accuracy) {
                (Some(l), Some(a)) => format!("  val loss {l:.4} acc {:.2}%", 100.0 * a),
                _ => String::new(),
            },
            m.lr,
            m.samples_per_sec,
            m.seconds,
            if improved { "  *best" } else { "" }
        );
    }

    /// With [`TrainConfig::average_last`]: sets the weights to the average of the snapshots,
    /// measures it like an epoch (validation and the hook) and, if `monitor` says it beats the
    /// best epoch, saves it as the best model (`config.json` gets `averaged_epochs`). The
    /// checkpoint keeps the last epoch's weights, so `--resume` goes on from there; after this
    /// call the varmap holds the average — [`Trainer::load_best`] loads what was kept.
    fn finish_average<M, V>(
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

    /// The steps recorded by this trainer when [`TrainConfig::log_steps`] is on.
    pub fn step_log(&self) -> &[StepLog] {
        &self.steps
    }

    /// Writes `steps.csv` (`step,epoch,loss,grad_norm`) atomically.
    fn write_steps(&self) -> Result<()> {
        let mut csv = String::from("step,epoch,loss,grad_norm\n");
        for s in &self.steps {
            csv.push_str(&format!(
                "{},{},{},{}\n",
                s.step, s.epoch, s.loss, s.grad_norm
            ));
        }
        checkpoint::write_atomic(&self.out_dir.join("steps.csv"), csv.as_bytes())
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

    fn progress_bar(&self, len: usize, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
        if !self.opts.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("epoch {epoch}/{epochs}"));
        bar
    }
}

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

/// Weight averaging over training snapshots (stochastic weight averaging, Izmailov et al.
/// 2018; Polyak averaging over epochs): `θ̄ = (1/n) Σ_k θ_k`. Near the end of training the
/// weights wander around a flat region of the loss; their mean often generalises better
/// than any single snapshot.
///
/// [`TrainConfig::average_last`] makes the trainer do it: add the weights after each of the
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

#[cfg(test)]
mod validate_tests {
    use super::*;

    #[test]
    fn every_numeric_option_is_checked_before_training() {
        let vm = VarMap::new();
        let info = CheckpointInfo::new("m", &serde_json::json!({}), "d").unwrap();
        let err = |cfg: TrainConfig| {
            Trainer::new(cfg, &vm, info.clone(), "unused")
                .err()
                .expect("should be refused")
                .to_string()
        };
        let base = TrainConfig::default;
        assert!(err(TrainConfig {
            epochs: 0,
            ..base()
        })
        .contains("--epochs"));
        assert!(err(TrainConfig {
            batch_size: 0,
            ..base()
        })
        .contains("--batch-size"));
        assert!(err(TrainConfig {
            patience: Some(0),
            ..base()
        })
        .contains("--patience"));
        assert!(err(TrainConfig {
            max_batches_per_epoch: Some(0),
            ..base()
        })
        .contains("--max-batches"));
        for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = err(TrainConfig {
                clip_grad_norm: Some(c),
                ..base()
            });
            assert!(e.contains("--clip-grad-norm") && e.contains("> 0"), "{e}");
        }
        let e = err(TrainConfig {
            optimizer: OptimizerConfig::adamw(-1.0),
            ..base()
        });
        assert!(e.contains("--lr"), "{e}");
        let e = err(TrainConfig {
            schedule: LrSchedule::Step {
                step_size: 1,
                gamma: f64::NAN,
            },
            ..base()
        });
        assert!(e.contains("--schedule"), "{e}");
        base().validate().unwrap();
    }
}
