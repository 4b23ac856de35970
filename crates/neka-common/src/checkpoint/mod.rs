//! Checkpoints: safetensors weights with PyTorch-style names and metadata, `config.json`,
//! and atomic writes.
//!
//! A model directory holds
//! * `model.safetensors` — the parameters under their PyTorch names (`conv1.weight`, …) and a
//!   `__metadata__` map: `format = pt`, `neka_version`, `model`, `config` (JSON), `dataset`,
//!   `data` (JSON: how the training data was selected), `normalize` (JSON, when the model has
//!   input preprocessing), `classes` (JSON), `metrics` (JSON) and one `file:NAME` entry per
//!   companion file (the vocabularies: `file:words.json`, …);
//! * `config.json` and the companion files (`words.json`, …) — readable copies of that record.
//!
//! **The weights file is the model's one commit point.** It is written to a temporary file
//! in the same directory, fsynced and renamed into place (one atomic step), and it carries the
//! whole record; the copies are refreshed after it. Loaders read the record from the weights
//! file ([`read_info`], [`Pretrained`]), so a save interrupted between two renames can leave a
//! stale `config.json` beside the new weights but never weights paired with the wrong
//! metrics, config or vocabulary; the next training in the directory rewrites the copies
//! ([`refresh_copies`]). Directories written by other tools (no record in the weights) are
//! read from `config.json` and the files beside it.
//!
//! | file | what |
//! |---|---|
//! | `record.rs` | [`CheckpointInfo`]: the model's record (model, config, dataset, metrics, vocabularies) |
//! | `normalize.rs` | [`Normalize`]: the input preprocessing a record carries |
//! | `tensors.rs` | safetensors files and strict loading into a [`VarMap`](candle_nn::VarMap) |
//! | `write.rs` | saving a model directory: the weights as commit point, then the copies |
//! | `read.rs` | reading a model directory: header-only metadata, the record, checked loading |
//!
//! The run directory's `checkpoint/` folder (the training state for resuming) is swapped and
//! repaired in [`crate::run_dir`]; atomic writes and JSON files are [`crate::files`].

mod normalize;
mod read;
mod record;
mod tensors;
mod write;

pub use crate::check;
pub use crate::files::{read_json, write_atomic, write_json};
pub use normalize::Normalize;
pub use read::{
    load_model, open_model_dir, read_companion, read_info, read_metadata, read_record, Pretrained,
};
pub use record::CheckpointInfo;
pub use tensors::{
    check_against_varmap, first_non_finite, load_into_varmap, load_tensors, save_tensors,
    varmap_tensors,
};
pub use write::{refresh_copies, save_model};

/// File name of the weights in a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the config in a model directory.
pub const CONFIG_FILE: &str = "config.json";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn model(vm: &VarMap, out: usize) -> Result<()> {
        let vb = crate::init::seeded_var_builder(vm, candle_core::DType::F32, &Device::Cpu);
        crate::nn::linear(3, out, true, vb.pp("fc"))?;
        Ok(())
    }

    #[test]
    fn round_trip_and_strict_errors() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        crate::rng::seed(1);
        let a = VarMap::new();
        model(&a, 2)?;
        let info = CheckpointInfo::new("toy", &serde_json::json!({"out": 2}), "none")?;
        save_model(dir.path(), &a, &info)?;
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));
        crate::rng::seed(2);
        let b = VarMap::new();
        model(&b, 2)?;
        let meta = load_into_varmap(&b, &dir.path().join(WEIGHTS_FILE))?;
        assert_eq!(meta["model"], "toy");
        assert_eq!(meta["format"], "pt");
        for ((_, x), (_, y)) in varmap_tensors(&a).iter().zip(varmap_tensors(&b).iter()) {
            assert_eq!(
                x.flatten_all()?.to_vec1::<f32>()?,
                y.flatten_all()?.to_vec1::<f32>()?
            );
        }
        assert_eq!(read_info(dir.path())?, info);

        let c = VarMap::new();
        model(&c, 5)?;
        let err = load_into_varmap(&c, &dir.path().join(WEIGHTS_FILE))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fc.bias") && err.contains("[2]") && err.contains("model.safetensors"),
            "{err}"
        );
        Ok(())
    }
}
