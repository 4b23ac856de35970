//! What the example launchers share: the training flags ([`TrainArgs`]) and the model
//! source ([`ModelArgs`]), opening or resuming a run directory, reading sentences
//! ([`read_sentences`]: bounded lines, named line numbers), value
//! parsers that check a flag's range when it is parsed (clap prints the allowed range and
//! exits 2), and Unix-friendly process behaviour.
//!
//! A training example flattens [`TrainArgs`] into its own flags and calls
//! [`TrainArgs::to_train_config`] with its model's defaults (`default_train_config()` in the
//! model's module), so each default lives in one place, the model crate:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use clap::Parser;
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     train: neka::cli::TrainArgs,
//! }
//! let cli = Cli::parse();
//! let device = cli.train.start()?; // the device, and the seeded RNG
//! let cfg = cli.train.to_train_config(neka::cnn::default_train_config())?;
//! # let _ = (device, cfg);
//! # Ok(())
//! # }
//! ```

use anyhow::Result;
use candle_core::Device;
use candle_nn::VarMap;
use clap::Args;
use neka_common::checkpoint::CheckpointInfo;
use neka_common::data::vision::{VisionDatasetKind, VisionSplits};
use neka_common::data::Dataset;
use neka_common::device::DeviceRequest;
use neka_common::metrics::EvalMetrics;
use neka_common::optim::{LrSchedule, OptimizerConfig};
use neka_common::train::{
    Classifier, FitReport, Monitor, RunOptions, StopReason, TrainConfig, TrainModel, Trainer,
};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

/// The flags every training command shares. A flag left out takes the model's default
/// (its `default_train_config()`), shown here as "[default: the model's]".
// The field docs are clap's help text (`step[:STEP_SIZE]`, `runs/<example>`), not markdown.
#[allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
#[derive(Args, Debug, Clone, Default)]
pub struct TrainArgs {
    /// Epochs to train [default: the model's].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples (sentences, streams) per batch [default: the model's].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// adamw, sgd, adadelta or rmsprop [default: the model's].
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Learning rate [default: the model's; with --optimizer: 1e-3 adamw, 0.05 sgd, 1.0 adadelta,
    /// 0.01 rmsprop].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Adam's β₂ (the tagger uses 0.9 as Dozat & Manning; PyTorch's default is 0.999).
    #[arg(long, value_parser = probability)]
    pub beta2: Option<f64>,
    /// constant, step[:STEP_SIZE[:GAMMA]], cosine[:T_MAX] or warmup-cosine:WARMUP[:T_MAX]
    /// (linear warm-up over WARMUP epochs, then cosine), per epoch [default: the model's].
    #[arg(long)]
    pub schedule: Option<String>,
    /// Clip the global gradient norm to this value, 0 = off [default: the model's].
    #[arg(long, value_parser = clip_norm)]
    pub clip_grad_norm: Option<f64>,
    /// Stop after this many epochs without a better monitored metric.
    #[arg(long)]
    pub patience: Option<usize>,
    /// The metric that picks the best epoch and drives early stopping: val_accuracy,
    /// val_loss, val_perplexity, val_bleu (translation), with :max or :min [default: the model's].
    #[arg(long)]
    pub monitor: Option<String>,
    /// Also average the weights of the last N epochs (stochastic weight averaging); the
    /// average is kept instead of the best epoch if it is better on validation data.
    #[arg(long)]
    pub average_last: Option<usize>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
    /// Output directory [default: runs/<example>/<run name>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run saved in this directory (weights, optimizer, epoch, RNG state), with
    /// its own flags: a flag left out keeps the saved run's value, one given now wins.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Train on at most this many batches per epoch.
    #[arg(long)]
    pub max_batches: Option<usize>,
    /// Run a handful of batches end to end (1 epoch of 5 batches; image data: small
    /// subsets), for CI.
    #[arg(long)]
    pub dry_run: bool,
}

impl TrainArgs {
    /// The device asked for, after seeding neka's RNG with `--seed` (do this before building
    /// the model: its initial weights come from that RNG).
    pub fn start(&self) -> Result<Device> {
        let device = self.device.device()?;
        neka_common::rng::seed(self.seed);
        Ok(device)
    }

    /// The training configuration: `defaults` (the model's) with every flag given applied.
    /// `--optimizer` without `--lr` takes that optimizer's usual rate; a default cosine
    /// schedule that spans the default epochs spans `--epochs`; `--clip-grad-norm 0` turns
    /// clipping off; `--dry-run` trains 1 epoch of 5 batches.
    pub fn to_train_config(&self, defaults: TrainConfig) -> Result<TrainConfig> {
        self.train_config(defaults).map_err(flag_error)
    }

    fn train_config(&self, defaults: TrainConfig) -> neka_common::Result<TrainConfig> {
        let mut c = defaults;
        let default_epochs = c.epochs;
        c.epochs = if self.dry_run {
            1
        } else {
            self.epochs.unwrap_or(c.epochs)
        };
        c.batch_size = self.batch_size.unwrap_or(c.batch_size);
        c.optimizer = match (&self.optimizer, self.lr) {
            (Some(name), lr) => {
                OptimizerConfig::from_name(name, lr.unwrap_or_else(|| default_lr(name)))?
            }
            (None, Some(lr)) => c.optimizer.with_lr(lr),
            (None, None) => c.optimizer,
        };
        if let Some(b2) = self.beta2 {
            c.optimizer = c.optimizer.with_beta2(b2)?;
        }
        c.schedule = match &self.schedule {
            Some(s) => LrSchedule::parse(s, c.epochs)?,
            None => c.schedule.spanning(default_epochs, c.epochs),
        };
        if let Some(v) = self.clip_grad_norm {
            c.clip_grad_norm = (v > 0.0).then_some(v);
        }
        c.patience = self.patience.or(c.patience);
        if let Some(m) = &self.monitor {
            c.monitor = Some(Monitor::parse(m)?);
        }
        c.average_last = self.average_last.unwrap_or(c.average_last);
        c.seed = self.seed;
        c.max_batches_per_epoch = if self.dry_run {
            Some(5)
        } else {
            self.max_batches.or(c.max_batches_per_epoch)
        };
        Ok(c)
    }

    /// The output directory: `--out`, else the `--resume` directory, else `default`.
    pub fn out_dir(&self, default: impl AsRef<Path>) -> PathBuf {
        self.out
            .clone()
            .or_else(|| self.resume.clone())
            .unwrap_or_else(|| default.as_ref().to_path_buf())
    }

    /// Opens the run directory ([`Self::out_dir`], `default_out` without `--out`) for training
    /// (its lock is held by the trainer) with a command line's run options (progress, epoch
    /// lines, Ctrl-C saves), and restores the run saved in `--resume` if given, saying so.
    /// [`Trainer::out_dir`] tells where it writes.
    pub fn trainer(
        &self,
        cfg: TrainConfig,
        varmap: &VarMap,
        info: CheckpointInfo,
        default_out: impl AsRef<Path>,
    ) -> Result<Trainer> {
        let out = self.out_dir(default_out);
        let mut trainer = Trainer::new(cfg, varmap, info, out)
            .map_err(flag_error)?
            .with_options(RunOptions::interactive());
        if let Some(dir) = &self.resume {
            trainer.resume(dir)?;
            println!(
                "resumed from {} after epoch {}",
                dir.display(),
                trainer.epochs_done()
            );
            if let Some(saved) = SAVED_FLAGS.get() {
                println!(
                    "with the saved run's flags: {} (a flag given now wins)",
                    saved.join(" ")
                );
            }
        }
        trainer.set_command_line(COMMAND_LINE.get().cloned().unwrap_or_default());
        Ok(trainer)
    }
}

/// The flag that sets each library field or argument that has one: the library's errors name
/// the field (`Error::Config { field }`, and `` `field` `` in messages), a command-line user
/// reads the flag. [`TrainConfig`] fields and optimizer hyper-parameters first, then the
/// arguments of the loaders, the run directory, the device and decoding.
const FIELD_FLAGS: &[(&str, &str)] = &[
    ("epochs", "--epochs"),
    ("batch_size", "--batch-size"),
    ("eval_batch_size", "--batch-size"),
    ("optimizer", "--optimizer"),
    ("lr", "--lr"),
    ("beta2", "--beta2"),
    ("schedule", "--schedule"),
    ("clip_grad_norm", "--clip-grad-norm"),
    ("patience", "--patience"),
    ("monitor", "--monitor"),
    ("average_last", "--average-last"),
    ("max_batches_per_epoch", "--max-batches"),
    ("seed", "--seed"),
    ("out_dir", "--out"),
    ("resume", "--resume"),
    ("data_dir", "--data-dir"),
    ("dataset", "--dataset"),
    ("val_size", "--val-size"),
    ("split", "--split"),
    ("text", "--text"),
    ("device", "--device"),
    ("model_id", "--model-id"),
    ("index", "--index"),
    ("beam", "--beam"),
    ("length_penalty", "--length-penalty"),
    ("forget_bias", "--forget-bias"),
];

/// The flag for a library field, if one sets it.
fn flag_of(field: &str) -> Option<&'static str> {
    FIELD_FLAGS
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, x)| *x)
}

/// A library message as a command-line user reads it: every `` `field` `` that a flag sets
/// becomes the flag (`` `lr` `` → `--lr`); other quoted words stay as they are.
pub fn with_flags(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find('`') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        match tail.find('`').map(|j| (j, flag_of(&tail[..j]))) {
            Some((j, Some(flag))) => {
                out.push_str(flag);
                rest = &tail[j + 1..];
            }
            Some((j, None)) => {
                out.push_str(&rest[i..i + j + 2]);
                rest = &tail[j + 1..];
            }
            None => {
                rest = &rest[i..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A library error as a command-line user reads it: an invalid config field
/// ([`neka_common::Error::Config`]) is named by the flag that sets it, and the flags replace
/// the fields its message quotes ([`with_flags`]); other errors pass unchanged (their messages
/// are translated when [`main`] prints them).
pub fn flag_error(e: neka_common::Error) -> anyhow::Error {
    match e {
        neka_common::Error::Config { field, msg } => {
            let field = flag_of(&field).map_or(field, str::to_string);
            neka_common::Error::Config {
                field,
                msg: with_flags(&msg),
            }
            .into()
        }
        other => other.into(),
    }
}

/// An example's `main`: [`init`], then `run`; an error is printed as `anyhow` prints one from
/// `main` (`Error: …` with its causes), the library's field names replaced by the flags that
/// set them ([`flag_error`] for a config error's field, [`with_flags`] in every message), and
/// the process exits with status 1.
pub fn main(run: impl FnOnce() -> Result<()>) -> std::process::ExitCode {
    init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // a config error from any library call names its field by the flag, as flag_error does
            let e = match e.downcast::<neka_common::Error>() {
                Ok(lib) => flag_error(lib),
                Err(other) => other,
            };
            eprintln!("Error: {}", with_flags(&format!("{e:?}")));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The image-dataset flags of the image classifiers (`mnist_cnn`, `seq_mnist`).
#[derive(Args, Debug, Clone)]
pub struct VisionFlags {
    /// mnist or fashion-mnist.
    #[arg(long, default_value = "mnist")]
    pub dataset: VisionDatasetKind,
    /// Data root holding mnist/ and fashion-mnist/ (default: $NEKA_DATA_DIR, else the Hugging Face Hub).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Training images held out for validation (seeded).
    #[arg(long, default_value_t = 5000)]
    pub val_size: usize,
}

impl VisionFlags {
    /// Loads the dataset and splits it on `device` ([`neka_common::data::VisionData::splits`]:
    /// the validation split seeded by `--seed`, small subsets with `--dry-run`).
    pub fn splits(&self, run: &TrainArgs, device: &Device) -> Result<VisionSplits> {
        let data = neka_common::data::vision::load(self.dataset, self.data_dir.as_deref())?;
        Ok(data.splits(self.val_size, run.seed, run.dry_run, device)?)
    }
}

/// The size flags of a recurrent network, shared by the RNN examples; each one left out
/// keeps the model's `Config::default()` (with [`config_with`], flattened into the model's
/// own flags).
#[derive(Args, Debug, Clone, Default, serde::Serialize)]
pub struct RnnFlags {
    /// Hidden size (per direction) [default: the model's].
    #[arg(long = "hidden")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<usize>,
    /// Recurrent layers [default: the model's].
    #[arg(long = "layers")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_layers: Option<usize>,
    /// Dropout (for the tagger also on the word vectors and before the output layer)
    /// [default: the model's].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f32>,
}

/// A command line whose default action is training (flags `T`), with subcommands `C` that
/// use a saved model — `mnist_cnn [train flags]`, `mnist_cnn eval …`.
#[derive(clap::Parser, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TrainOr<T: Args, C: clap::Subcommand> {
    #[command(subcommand)]
    pub command: Option<C>,
    #[command(flatten)]
    pub train: T,
}

impl<T: Args, C: clap::Subcommand> TrainOr<T, C> {
    /// Parses the process's arguments for a program described by `about` (clap prints the
    /// help or the error and exits on bad arguments). See [`TrainOr::try_parse_about`].
    pub fn parse_about(about: &'static str) -> Self {
        let argv = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        Self::try_parse_about(about, argv).unwrap_or_else(|e| e.exit())
    }

    /// [`parse_training_from`] for this command line.
    pub fn try_parse_about(about: &'static str, argv: Vec<String>) -> Result<Self, clap::Error> {
        use clap::CommandFactory;
        parse_training_from(Self::command().about(about), argv)
    }
}

/// Parses the process's arguments as [`parse_training_from`] does (clap prints the help or
/// the error and exits on bad arguments): the parser of every training example.
pub fn parse_training<P: clap::Parser>() -> P {
    let argv = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    parse_training_from(P::command(), argv).unwrap_or_else(|e| e.exit())
}

/// Parses `argv` (the program name first) with `command`. A training command with
/// `--resume DIR` continues the saved run **with its own settings**: the flags of the command
/// that started it (recorded in `DIR/checkpoint/state.json`) are read first and the flags
/// given now after them, so a flag given now wins and one left out keeps the saved run's
/// value (not the model's default). A flag given now that changes what defines the run
/// (model, data, optimizer kind, batch size, seed) is refused by [`Trainer::resume`], which
/// lists the differences. The training flags (without `--out` / `--resume`) are recorded in
/// the run's checkpoint by [`TrainArgs::trainer`].
pub fn parse_training_from<P: clap::FromArgMatches>(
    command: clap::Command,
    argv: Vec<String>,
) -> Result<P, clap::Error> {
    let command = command.args_override_self(true);
    let mut matches = command.clone().try_get_matches_from(&argv)?;
    let args = argv.get(1..).unwrap_or_default();
    // subcommand names (`pos_tagger train …`) come before the flags
    let lead = args.iter().take_while(|a| !a.starts_with('-')).count();
    let given = run_flags(args);
    let mut flags = given.clone();
    let mut leaf = &matches;
    while let Some((_, sub)) = leaf.subcommand() {
        leaf = sub;
    }
    let resume = leaf.try_get_one::<PathBuf>("resume").ok().flatten();
    // A directory without a readable checkpoint is reported by `Trainer::resume`.
    let saved = resume
        .and_then(|dir| neka_common::train::saved_command_line(dir).ok())
        .unwrap_or_default();
    let saved_lead = saved.iter().take_while(|a| !a.starts_with('-')).count();
    if !saved.is_empty() && saved[..saved_lead] == args[..lead] {
        let merged: Vec<String> = argv[..1 + lead]
            .iter()
            .chain(&saved[saved_lead..])
            .chain(&args[lead..])
            .cloned()
            .collect();
        matches = command.try_get_matches_from(merged)?;
        let _ = SAVED_FLAGS.set(saved[saved_lead..].to_vec());
        flags = saved
            .into_iter()
            .chain(given.into_iter().skip(lead))
            .collect();
    }
    let _ = COMMAND_LINE.set(flags);
    P::from_arg_matches(&matches)
}

/// The training flags of this process's command line (see [`TrainOr::try_parse_about`]).
static COMMAND_LINE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
/// The saved run's flags that `--resume` put before the ones given now.
static SAVED_FLAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// `args` without `--out DIR` and `--resume DIR` (either form, `--flag VALUE` or
/// `--flag=VALUE`): the flags that define a training run wherever it is written.
pub fn run_flags(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--out" || a == "--resume" {
            it.next();
        } else if !(a.starts_with("--out=") || a.starts_with("--resume=")) {
            out.push(a.clone());
        }
    }
    out
}

/// Prints one JSON line (the last line of a command's output, for scripts).
pub fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

/// The learning rate `--optimizer NAME` takes without `--lr`: 1e-3 for adamw, 0.05 for sgd,
/// 1.0 for adadelta (pytorch/examples' MNIST).
pub fn default_lr(optimizer: &str) -> f64 {
    match optimizer.to_ascii_lowercase().as_str() {
        "sgd" => 0.05,
        "adadelta" => 1.0,
        "rmsprop" => 0.01,
        _ => 1e-3,
    }
}

/// [`Trainer::fit_and_test`] for a command line: train (validating on `val`), load the best
/// model, score it on `test` and save it with its test metrics — or, if Ctrl-C stopped the
/// run, end the process with status 130 (its checkpoint is saved for `--resume`).
pub fn fit_and_test<M, T, V>(
    trainer: &mut Trainer,
    model: &M,
    train: &T,
    val: &V,
    test: &V,
) -> Result<(FitReport, EvalMetrics)>
where
    M: TrainModel,
    T: Dataset<Batch = M::Batch>,
    V: Dataset<Batch = M::Batch>,
{
    match trainer.fit_and_test(model, train, Some(val), test)? {
        Some(done) => Ok(done),
        None => exit_interrupted(trainer.out_dir()),
    }
}

/// [`fit_and_test`] for an image classifier (`x (B, C, H, W)` → logits) on the splits of a
/// vision dataset, trained with cross-entropy ([`Classifier`]).
pub fn fit_image_classifier<M: candle_core::ModuleT>(
    trainer: &mut Trainer,
    model: &M,
    splits: &VisionSplits,
) -> Result<(FitReport, EvalMetrics)> {
    let (train, val, test) = (&splits.train, &splits.val, &splits.test);
    fit_and_test(trainer, &Classifier(model), train, val, test)
}

/// Ends the process with status 130 if the run into `out` was stopped by Ctrl-C (its
/// checkpoint is saved for `--resume`); otherwise returns.
pub fn exit_if_interrupted(report: &FitReport, out: &Path) {
    if report.stop == StopReason::Interrupted {
        exit_interrupted(out);
    }
}

/// Where a saved model comes from: `--model DIR` or `--model-id ORG/NAME` (a Hugging Face
/// Hub repository, downloaded once into the Hub cache), and the device to load it on.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory (model.safetensors, config.json and the model's other files)
    /// [default: the example's pretrained model in models/].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Hugging Face Hub model id (ORG/NAME) instead of --model.
    #[arg(long)]
    pub model_id: Option<String>,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
}

impl ModelArgs {
    /// The model directory: `--model-id` (fetching `model.safetensors`, `config.json` and
    /// `companions`, e.g. vocabularies), else `--model`, else `default`.
    pub fn dir(&self, default: &str, companions: &[&str]) -> Result<PathBuf> {
        match &self.model_id {
            #[cfg(feature = "hub")]
            Some(id) => Ok(neka_common::hub::model_dir_with(id, None, companions)?),
            #[cfg(not(feature = "hub"))]
            Some(_) => {
                let _ = companions;
                anyhow::bail!("--model-id needs the `hub` feature (on by default; you built with --no-default-features)")
            }
            None => Ok(self.model.clone().unwrap_or_else(|| PathBuf::from(default))),
        }
    }

    /// The directory ([`Self::dir`]) and the device.
    pub fn open(&self, default: &str, companions: &[&str]) -> Result<(PathBuf, Device)> {
        Ok((self.dir(default, companions)?, self.device.device()?))
    }
}

/// `base` (a model's config, usually `Config { …, ..Config::default() }`) with every flag
/// that was given put in place: `flags` is a clap struct of `Option`s named as `base`'s
/// fields (`#[arg(long = "hidden")] hidden_size: Option<usize>`), so a flag left out keeps
/// the model's default and the defaults live in one place, the model's `Config::default()`.
///
/// ```
/// #[derive(clap::Args, serde::Serialize)]
/// struct Flags {
///     #[arg(long = "hidden")]
///     hidden_size: Option<usize>,
///     #[arg(long = "layers")]
///     num_layers: Option<usize>,
/// }
/// let flags = Flags { hidden_size: Some(32), num_layers: None };
/// let cfg = neka::cli::config_with(neka::lstm::char_lm::Config::default(), &flags)?;
/// assert_eq!((cfg.hidden_size, cfg.num_layers), (32, 1));
/// # Ok::<(), anyhow::Error>(())
/// ```
pub fn config_with<C, F>(base: C, flags: &F) -> Result<C>
where
    C: serde::Serialize + serde::de::DeserializeOwned,
    F: serde::Serialize,
{
    let mut cfg = serde_json::to_value(base)?;
    let flags = serde_json::to_value(flags)?;
    let (Some(fields), Some(given)) = (cfg.as_object_mut(), flags.as_object()) else {
        anyhow::bail!("config_with: the config and the flags must both be structs");
    };
    for (name, value) in given.iter().filter(|(_, v)| !v.is_null()) {
        anyhow::ensure!(
            fields.contains_key(name),
            "config_with: flag field `{name}` is not a field of the model's config"
        );
        fields.insert(name.clone(), value.clone());
    }
    Ok(serde_json::from_value(cfg)?)
}

/// The longest line [`read_sentences`] accepts, in bytes (256 KiB: a sentence of the 1000
/// words the tagger takes, each 250 bytes long). A longer line is refused as soon as the
/// limit is passed, before it is held in memory.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// Sentences to run a model on, each with where it came from, and the error that stopped
/// the reading, if one did ([`read_sentences`]).
#[derive(Debug, Default)]
pub struct SentenceInput {
    /// The sentences read, in order.
    pub sentences: Vec<String>,
    /// Where each sentence came from, for errors: `argument 2`, `stdin:5`.
    pub origins: Vec<String>,
    /// The line that could not be read (not UTF-8, longer than [`MAX_LINE_BYTES`], an I/O
    /// error), naming its line number. The sentences before it are in `sentences`: a
    /// command processes them, then fails with this error ([`SentenceInput::finish`]).
    pub error: Option<anyhow::Error>,
}

impl SentenceInput {
    /// `Err` with the reading error after the sentences were processed, else `Ok`.
    pub fn finish(self) -> Result<()> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The index of the first sentence for which `too_long` says it is over a model's limit,
    /// and that sentence's error: `ORIGIN: what` (e.g. `stdin:3: 1200 words …`). The
    /// sentences before it can be processed.
    pub fn first_too_long(
        &self,
        mut too_long: impl FnMut(usize) -> Option<String>,
    ) -> Option<(usize, anyhow::Error)> {
        (0..self.sentences.len())
            .find_map(|i| too_long(i).map(|msg| (i, anyhow::anyhow!("{}: {msg}", self.origins[i]))))
    }
}

/// The sentences given as arguments or, with none, one per line on stdin
/// ([`read_lines_bounded`] with [`MAX_LINE_BYTES`]).
pub fn read_sentences(args: &[String]) -> SentenceInput {
    if !args.is_empty() {
        return SentenceInput {
            sentences: args.to_vec(),
            origins: (1..=args.len()).map(|i| format!("argument {i}")).collect(),
            error: None,
        };
    }
    read_lines_bounded(std::io::stdin().lock(), "stdin", MAX_LINE_BYTES)
}

/// Reads `reader` line by line (`\n` or `\r\n` endings; a UTF-8 byte order mark on the first
/// line is dropped), never holding more than `max_bytes + 1` bytes of one line: a longer
/// line stops the reading with an error naming `name:LINE` and the limit, before the rest
/// of it is read. A line that is not UTF-8 stops it likewise, naming the line and the byte.
/// What was read before the bad line is kept ([`SentenceInput`]): what a line-oriented Unix
/// tool does — output for every good line, then a failure that names the bad one.
pub fn read_lines_bounded(mut reader: impl BufRead, name: &str, max_bytes: usize) -> SentenceInput {
    let mut out = SentenceInput::default();
    let mut buf = Vec::new();
    for n in 1.. {
        buf.clear();
        let limit = max_bytes as u64 + 1;
        let got = match (&mut reader).take(limit).read_until(b'\n', &mut buf) {
            Ok(got) => got,
            Err(e) => {
                out.error = Some(anyhow::anyhow!("{name}:{n}: cannot read: {e}"));
                break;
            }
        };
        if got == 0 {
            break; // end of input
        }
        let ended = buf.last() == Some(&b'\n');
        if ended {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        } else if got as u64 == limit {
            out.error = Some(anyhow::anyhow!(
                "{name}:{n}: line longer than {max_bytes} bytes, the most a sentence may have \
                 ({} KiB); the lines before it were processed. Split the text into sentences, \
                 one per line",
                max_bytes / 1024
            ));
            break;
        }
        if n == 1 && buf.starts_with(UTF8_BOM) {
            buf.drain(..UTF8_BOM.len());
        }
        match String::from_utf8(std::mem::take(&mut buf)) {
            Ok(line) => {
                out.sentences.push(line);
                out.origins.push(format!("{name}:{n}"));
            }
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                out.error = Some(anyhow::anyhow!(
                    "{name}:{n}: not UTF-8 text (byte 0x{:02x} at byte {} of the line); the lines \
                     before it were processed. Convert the input to UTF-8, e.g. with \
                     `iconv -f latin1 -t utf-8`",
                    e.as_bytes()[at],
                    at + 1
                ));
                break;
            }
        }
    }
    out
}

/// The UTF-8 byte order mark.
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// The number of trainable parameters in `varmap` (buffers such as batch-norm running
/// statistics are not parameters).
pub fn param_count(varmap: &VarMap) -> usize {
    neka_common::optim::count_parameters(varmap).0
}

/// What every example does first: quiet exit on a closed pipe ([`quiet_broken_pipe`]) and
/// mimalloc keeping freed memory for reuse ([`crate::alloc::keep_freed_memory`]).
pub fn init() {
    quiet_broken_pipe();
    crate::alloc::keep_freed_memory();
}

/// `--clip-grad-norm`: a finite number ≥ 0 (0 = no clipping).
pub fn clip_norm(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!(
            "{s}: must be a finite number ≥ 0 (a norm to scale gradients down to; 0 = off)"
        ));
    }
    Ok(v)
}

/// A sampling temperature: a finite number > 0.
pub fn temperature(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!(
            "{s}: must be a finite number > 0 (logits are divided by it)"
        ));
    }
    Ok(v)
}

/// A probability: a number in [0, 1].
pub fn probability(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s}: must be a number in [0, 1]"));
    }
    Ok(v)
}

/// `--beam`: a whole number from 1 (greedy search) to [`neka_seq2seq::MAX_BEAM`].
pub fn beam(s: &str) -> Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s}: not a whole number"))?;
    if !(1..=neka_seq2seq::MAX_BEAM).contains(&v) {
        return Err(format!(
            "{s}: must be between 1 (greedy) and {} (time and memory grow with the beam; 5 is usual)",
            neka_seq2seq::MAX_BEAM
        ));
    }
    Ok(v)
}

/// A count that must be at least 1.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s}: not a whole number"))?;
    if v == 0 {
        return Err(format!("{s}: must be at least 1"));
    }
    Ok(v)
}

fn number(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .map_err(|_| format!("{s}: not a number"))
}

/// Lets a closed pipe end the process quietly, as Unix tools do (`translate run … | head`):
/// Rust ignores `SIGPIPE`, so `println!` on a closed pipe panics; this restores the default
/// action. Call it first thing in `main` of a command that prints results.
pub fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: sets a signal disposition to its default; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Exit status of a run stopped by Ctrl-C, as shells expect (128 + SIGINT).
pub const INTERRUPTED_EXIT: i32 = 130;

/// Ends a training into `out` stopped by Ctrl-C (its checkpoint is saved) with exit status
/// 130, saying how to continue it.
pub fn exit_interrupted(out: &Path) -> ! {
    eprintln!("continue with --resume {}", out.display());
    std::process::exit(INTERRUPTED_EXIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> TrainArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: TrainArgs,
        }
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap()
            .run
    }

    #[test]
    fn train_flags_fall_back_to_the_models_defaults() {
        let model = neka_lstm::tagger::default_train_config();
        // nothing given: the model's config, with the seed of --seed's default
        let c = flags(&[]).to_train_config(model.clone()).unwrap();
        assert_eq!(
            c,
            TrainConfig {
                seed: 42,
                ..model.clone()
            }
        );
        // --lr keeps the optimizer's other settings (the tagger's β₂ = 0.9); a default
        // cosine over the planned run spans the new one; 0 turns clipping off
        let c = flags(&["--lr", "0.01", "--epochs", "4", "--clip-grad-norm", "0"])
            .to_train_config(model.clone())
            .unwrap();
        assert_eq!(c.optimizer, model.optimizer.clone().with_lr(0.01));
        assert_eq!(
            c.schedule,
            LrSchedule::Cosine(neka_common::optim::Cosine {
                t_max: 4,
                eta_min: 0.0
            })
        );
        assert_eq!(c.clip_grad_norm, None);
        // --optimizer without --lr takes that optimizer's usual rate
        let c = flags(&["--optimizer", "sgd"])
            .to_train_config(model.clone())
            .unwrap();
        assert_eq!(c.optimizer, OptimizerConfig::sgd(0.05));
        // β₂ belongs to Adam only
        let e = flags(&["--optimizer", "sgd", "--beta2", "0.9"]).to_train_config(model.clone());
        assert!(e.unwrap_err().to_string().contains("--beta2"));
        // --dry-run: one epoch of five batches; --monitor and --average-last parsed
        let c = flags(&["--dry-run", "--monitor", "val_loss", "--average-last", "2"])
            .to_train_config(model)
            .unwrap();
        assert_eq!(
            (c.epochs, c.max_batches_per_epoch, c.average_last),
            (1, Some(5), 2)
        );
        assert_eq!(c.monitor, Some(Monitor::min("val_loss")));
    }

    #[test]
    fn config_with_refuses_a_flag_the_config_lacks() {
        #[derive(serde::Serialize)]
        struct Flags {
            no_such_field: Option<usize>,
        }
        let base = neka_lstm::char_lm::Config::default();
        assert!(config_with(
            base,
            &Flags {
                no_such_field: None
            }
        )
        .is_ok());
        let e = config_with(
            base,
            &Flags {
                no_such_field: Some(1),
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("no_such_field"), "{e}");
    }

    #[test]
    fn parsers_give_the_range() {
        assert_eq!(clip_norm("0"), Ok(0.0));
        for bad in ["-1", "nan", "inf", "x"] {
            assert!(clip_norm(bad).is_err(), "{bad}");
        }
        assert!(temperature("0").unwrap_err().contains("> 0"));
        assert!(temperature("-1").is_err() && temperature("NaN").is_err());
        assert!(probability("2").unwrap_err().contains("[0, 1]"));
        assert_eq!(probability("0.5"), Ok(0.5));
        assert!(at_least_one("0").unwrap_err().contains("at least 1"));
        assert_eq!(beam("64"), Ok(64));
        assert_eq!(beam("1"), Ok(1));
        for bad in ["0", "65", "5976", "x"] {
            assert!(beam(bad).is_err(), "{bad}");
        }
        assert!(beam("5976")
            .unwrap_err()
            .contains("between 1 (greedy) and 64"));
    }

    fn read(bytes: &[u8], max: usize) -> SentenceInput {
        read_lines_bounded(std::io::Cursor::new(bytes.to_vec()), "stdin", max)
    }

    #[test]
    fn lines_are_read_up_to_the_first_bad_one_which_is_named() {
        // CRLF, a BOM, a last line without a newline
        let r = read(b"\xef\xbb\xbfeins\r\nzwei\ndrei", 100);
        assert_eq!(r.sentences, ["eins", "zwei", "drei"]);
        assert_eq!(r.origins, ["stdin:1", "stdin:2", "stdin:3"]);
        assert!(r.finish().is_ok());
        // invalid UTF-8 on line 3: lines 1 and 2 are kept, the error names line 3
        let r = read(b"eins\nzwei\ndr\xffei\nvier\n", 100);
        assert_eq!(r.sentences, ["eins", "zwei"]);
        let e = r.finish().unwrap_err().to_string();
        assert!(
            e.starts_with("stdin:3: not UTF-8") && e.contains("0xff at byte 3"),
            "{e}"
        );
        // a line of exactly the limit passes; one byte more is refused, naming line and limit
        let r = read(b"abcd\nabcde\nx\n", 4);
        assert_eq!(r.sentences, ["abcd"]);
        let e = r.finish().unwrap_err().to_string();
        assert!(e.starts_with("stdin:2: line longer than 4 bytes"), "{e}");
        let r = read(b"abcd", 4);
        assert_eq!(r.sentences, ["abcd"]);
    }

    #[test]
    fn a_long_line_is_refused_without_reading_it_whole() {
        // an endless line: the reader stops after the limit instead of reading forever
        let endless = std::io::BufReader::new(std::io::repeat(b'a'));
        let r = read_lines_bounded(endless, "stdin", 1 << 16);
        assert!(r.sentences.is_empty());
        assert!(r
            .error
            .unwrap()
            .to_string()
            .contains("longer than 65536 bytes"));
    }

    #[test]
    fn library_field_names_read_as_the_flags_that_set_them() {
        assert_eq!(
            with_flags("start again with a lower `lr` or `clip_grad_norm`"),
            "start again with a lower --lr or --clip-grad-norm"
        );
        assert_eq!(
            with_flags("`device` cuda:1: use `device` cpu"),
            "--device cuda:1: use --device cpu"
        );
        // other quoted words, and a lone backtick, stay as they are
        for kept in [
            "weight `fc2.weight` is 3e38",
            "`mnist`: unknown",
            "a ` b",
            "``",
        ] {
            assert_eq!(with_flags(kept), kept);
        }
        let e = flag_error(neka_common::Error::config(
            "beam",
            "0: see `length_penalty`",
        ));
        assert_eq!(e.to_string(), "invalid --beam: 0: see --length-penalty");
    }
}
