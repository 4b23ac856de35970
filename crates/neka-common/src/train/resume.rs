//! What a run saves to continue from, and `--resume`: the trainer's state (`state.json`), the
//! checkpoint folder (weights, optimizer moments, weight-average sum, carried state), and the
//! checks that a resumed run is the saved one.

use super::state::{TrainerState, CKPT_DIR};
use super::{Trainer, WeightAverage};
use crate::checkpoint::{self, CheckpointInfo};
use crate::rng::{self, DataRng};
use crate::run_dir::checkpoint_folder;
use crate::{Error, Result};
use candle_core::Tensor;
use std::path::{Path, PathBuf};

/// In `checkpoint/`: the sum of the weight-average snapshots so far (f64), for `--resume`.
const AVERAGE_FILE: &str = "average.safetensors";
/// In `checkpoint/` after a mid-epoch stop: the model's carried state
/// ([`super::TrainModel::carried_state`]).
const CARRIED_FILE: &str = "carried.safetensors";

/// The flags of the command that started the run saved in `dir` (see
/// [`Trainer::set_command_line`]); empty for a run saved without them (neka ≤ 0.1 runs).
/// Errors when `dir` holds no readable checkpoint.
pub fn saved_command_line(dir: &Path) -> Result<Vec<String>> {
    let state: TrainerState = checkpoint::read_json(&checkpoint_folder(dir)?.join("state.json"))?;
    Ok(state.command_line)
}

impl Trainer {
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
                "optimizer: saved run {}, this run {} (`optimizer`)",
                state.optimizer.name(),
                self.cfg.optimizer.name()
            ));
        }
        if let Some(b) = state.batch_size.filter(|&b| b != self.cfg.batch_size) {
            differences.push(format!(
                "batch size: saved run {b}, this run {} (`batch_size`)",
                self.cfg.batch_size
            ));
        }
        if let Some(s) = state.seed.filter(|&s| s != self.cfg.seed) {
            differences.push(format!(
                "seed: saved run {s}, this run {} (`seed`)",
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
    pub(super) fn check_best_model(&self, run_dir: &Path, best_epoch: usize) -> Result<PathBuf> {
        let path = run_dir.join(checkpoint::WEIGHTS_FILE);
        let unusable = |why: String| {
            Error::checkpoint(
                &path,
                format!(
                    "{why}. This is the best model (epoch {best_epoch}) of the run that `resume` \
                     continues, which its end falls back to: nothing was changed; put the file back, \
                     or start a new run with another `out_dir`"
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
    pub(super) fn keep_best_model(&self, best: &Path) -> Result<()> {
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

    pub(super) fn save_checkpoint(&self, data_rng: &DataRng) -> Result<()> {
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

    pub(super) fn write_checkpoint(&self, tmp: &Path, data_rng: &DataRng) -> Result<()> {
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
        crate::run_dir::replace_checkpoint(&self.out_dir, tmp)
    }

    /// Where to continue after a divergence: the last good state, or that there is none.
    pub(super) fn last_good_state(&self) -> String {
        if self.out_dir.join(CKPT_DIR).join("state.json").is_file() && self.state.epochs_done > 0 {
            format!(
                "The last good state is {} (after epoch {}), untouched: continue from it (`resume` {}) \
                 with a lower `lr` or `clip_grad_norm`",
                self.out_dir.join(CKPT_DIR).display(),
                self.state.epochs_done,
                self.out_dir.display()
            )
        } else {
            "No checkpoint had been saved yet: start again with a lower `lr` or `clip_grad_norm`"
                .to_string()
        }
    }
}
