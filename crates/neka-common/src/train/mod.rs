//! The one training loop of the zoo.
//!
//! [`Trainer::fit`] trains any [`TrainModel`] on any [`Dataset`](crate::data::Dataset):
//! seeded shuffling, an optimizer from [`crate::optim`] with a learning-rate schedule,
//! global-norm gradient clipping, validation every epoch, keep-best checkpoint (best by the
//! [`Monitor`]ed metric: validation accuracy unless the model or the config picks another),
//! early stopping, `metrics.jsonl` / `metrics.csv` / `curves.png`, a progress bar, NaN
//! detection, Ctrl-C handling and exact resume ([`Trainer::resume`]).
//!
//! | file | what |
//! |---|---|
//! | `model.rs` | [`TrainModel`], [`StepOutput`], [`StepContext`], [`Classifier`] |
//! | `monitor.rs` | [`Monitor`], [`Goal`]: the metric that picks the best epoch |
//! | `config.rs` | [`TrainConfig`] (defines the run, saved), [`RunOptions`] (how it is shown) |
//! | `report.rs` | [`FitReport`], [`AverageReport`], [`StopReason`], [`StepLog`] |
//! | `trainer.rs` | [`Trainer`]: construction and the epoch loop ([`Trainer::fit_with`]) |
//! | `epoch.rs` | one epoch: the optimizer steps, the measurement, what is kept |
//! | `state.rs` | the saved trainer state (`checkpoint/state.json`) |
//! | `resume.rs` | checkpoint saving, [`Trainer::resume`] and its checks |
//! | `average.rs` | [`WeightAverage`] and the end-of-run comparison with the best epoch |
//! | `evaluate.rs` | [`evaluate`]: loss and accuracy over a data set |
//! | `progress.rs` | the progress bar, the epoch line, `steps.csv` |
//! | `interrupt.rs` | Ctrl-C: [`install_ctrl_c_handler`], [`request_stop`] |
//!
//! The output directory:
//! ```text
//! out/
//!   model.safetensors                best model so far (by the monitored metric), with its
//!                                    whole record (config, metrics, vocabularies) inside
//!   config.json, *.json              readable copies of that record
//!   checkpoint/                      latest state, for resuming:
//!     model.safetensors  optimizer.safetensors  state.json
//!   metrics.jsonl  metrics.csv  curves.png
//!   .neka.lock                       held while a run writes here
//! ```
//!
//! What a run directory guarantees (see [`crate::run_dir`] and [`crate::checkpoint`]):
//! * one training at a time ([`crate::run_dir::RunLock`], taken by [`Trainer::new`]);
//! * every replacement is atomic: the best model's weights file is its one commit point, the
//!   checkpoint folder is swapped by renames with `checkpoint.old/` as the fallback
//!   ([`crate::run_dir::replace_checkpoint`]), and temporary files of an interrupted save are
//!   removed by the next run;
//! * nothing in the directory is replaced until the new state is complete: the vocabularies
//!   are written with the first saved model, not before;
//! * a non-finite loss (training or validation), metric or weight saves nothing of that
//!   epoch, and the error names the last good state to resume from;
//! * resuming refuses a run that differs from the saved one in what defines it (model kind
//!   and config, dataset and data selection, preprocessing, classes, vocabularies, optimizer
//!   kind, batch size, seed, the monitored metric), naming each difference.

mod average;
mod config;
mod epoch;
mod evaluate;
mod interrupt;
mod model;
mod monitor;
mod progress;
mod report;
mod resume;
mod state;
mod trainer;

pub use average::WeightAverage;
pub use config::{RunOptions, TrainConfig};
pub use evaluate::evaluate;
pub use interrupt::{install_ctrl_c_handler, request_stop};
pub use model::{Classifier, StepContext, StepOutput, TrainModel};
pub use monitor::{Goal, Monitor};
pub use report::{AverageReport, FitReport, StepLog, StopReason};
pub use resume::saved_command_line;
pub use trainer::Trainer;
