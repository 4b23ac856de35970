//! What a run saves besides weights and optimizer moments (`checkpoint/state.json`), and where.

use super::Monitor;
use crate::metrics::{EpochMetrics, Running};
use crate::optim::OptimizerConfig;
use serde::{Deserialize, Serialize};

/// The folder of the latest training state (`out/checkpoint/`).
pub(super) const CKPT_DIR: &str = crate::run_dir::CHECKPOINT_DIR;

/// Everything besides weights and optimizer moments that a resumed run needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct TrainerState {
    pub(super) neka_version: String,
    pub(super) epochs_done: usize,
    /// Batches already trained in the epoch after `epochs_done` (non-zero after Ctrl-C).
    pub(super) batches_done: usize,
    pub(super) step: usize,
    pub(super) model_rng: rand_chacha::ChaCha8Rng,
    /// Data RNG before the current epoch's plan was drawn (so the plan can be redrawn).
    pub(super) data_rng: rand_chacha::ChaCha8Rng,
    pub(super) running: Running,
    pub(super) best: Option<f64>,
    pub(super) best_epoch: Option<usize>,
    pub(super) bad_epochs: usize,
    pub(super) history: Vec<EpochMetrics>,
    pub(super) optimizer: OptimizerConfig,
    /// Metrics of the best epoch, restored into the checkpoint info on resume.
    #[serde(default)]
    pub(super) best_metrics: std::collections::BTreeMap<String, f64>,
    /// Batch size and seed of the run (they fix the data order; compared on resume).
    #[serde(default)]
    pub(super) batch_size: Option<usize>,
    #[serde(default)]
    pub(super) seed: Option<u64>,
    /// Snapshots in the running weight average (`average.safetensors` holds their sum).
    #[serde(default)]
    pub(super) averaged: usize,
    /// The monitored metric (compared on resume; a run saved without one monitored
    /// validation accuracy).
    #[serde(default)]
    pub(super) monitor: Option<Monitor>,
    /// The flags of the command that started the run (without `--out` / `--resume`), so that
    /// `--resume DIR` continues it with its own settings ([`super::saved_command_line`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) command_line: Vec<String>,
}
