//! Checkpoints: safetensors weights with PyTorch-style names and metadata, `config.json`,
//! and atomic writes.
//!
//! A model directory holds
//! * `model.safetensors` — the parameters under their PyTorch names (`conv1.weight`, …) and a
//!   `__metadata__` map: `format = pt`, `neka_version`, `model`, `config` (JSON), `dataset`,
//!   `normalize` (JSON, when the model has input preprocessing) and `metrics` (JSON);
//! * `config.json` — the same [`CheckpointInfo`] as readable JSON.
//!
//! Every file is written to a temporary file in the same directory and renamed into place,
//! so a crash never leaves a half-written checkpoint.

use crate::data::Normalize;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the weights in a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the config in a model directory.
pub const CONFIG_FILE: &str = "config.json";

/// What a checkpoint says about itself (`config.json`, and the safetensors metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// Version of neka that wrote it.
    pub neka_version: String,
    /// Model kind, e.g. `mnist-net`, `lenet5`.
    pub model: String,
    /// The model's own config (its serde `Config`).
    pub config: serde_json::Value,
    /// Dataset it was trained on, e.g. `mnist`.
    pub dataset: String,
    /// Input preprocessing: `x' = (x/255 − mean) / std` per channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    /// Class names, index = class id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Final metrics (e.g. `val_accuracy`, `test_accuracy`, `epochs`).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

impl CheckpointInfo {
    /// A new info block for `model` with `config`, trained on `dataset`.
    pub fn new(model: &str, config: &impl Serialize, dataset: &str) -> Result<Self> {
        Ok(Self {
            neka_version: env!("CARGO_PKG_VERSION").to_string(),
            model: model.to_string(),
            config: serde_json::to_value(config)
                .map_err(|e| Error::config("config", e.to_string()))?,
            dataset: dataset.to_string(),
            normalize: None,
            classes: Vec::new(),
            metrics: BTreeMap::new(),
        })
    }

    /// The safetensors `__metadata__` form (all values are strings).
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("format".into(), "pt".into());
        m.insert("neka_version".into(), self.neka_version.clone());
        m.insert("model".into(), self.model.clone());
        m.insert("config".into(), self.config.to_string());
        m.insert("dataset".into(), self.dataset.clone());
        if let Some(n) = &self.normalize {
            m.insert(
                "normalize".into(),
                serde_json::to_string(n).unwrap_or_default(),
            );
        }
        if !self.classes.is_empty() {
            m.insert(
                "classes".into(),
                serde_json::to_string(&self.classes).unwrap_or_default(),
            );
        }
        m.insert(
            "metrics".into(),
            serde_json::to_string(&self.metrics).unwrap_or_default(),
        );
        m
    }

    /// The model's config, deserialised.
    pub fn model_config<C: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<C> {
        serde_json::from_value(self.config.clone()).map_err(|e| {
            Error::checkpoint(
                path,
                format!("field `config` does not fit model `{}`: {e}", self.model),
            )
        })
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    s.push('\n');
    write_atomic(path, s.as_bytes())
}

/// Reads a JSON file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&s).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Saves named tensors (moved to CPU) with `metadata` as a safetensors file, atomically.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<candle_core::Result<_>>()?;
    let bytes = safetensors::serialize(cpu.iter().map(|(n, t)| (n.as_str(), t)), metadata)
        .map_err(|e| Error::checkpoint(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &bytes)
}

/// The variables of a `VarMap`, sorted by name.
pub fn varmap_tensors(varmap: &VarMap) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Loads all tensors of a safetensors file and its metadata.
pub fn load_tensors(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::checkpoint(path, format!("not a valid safetensors file: {e}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| Error::checkpoint(path, format!("cannot read tensors: {e}")))?;
    Ok((tensors, metadata))
}

/// Loads a safetensors file into the variables of `varmap`, strictly (like PyTorch's
/// `load_state_dict(strict=True)`): every variable must be present with the same shape, and
/// the file may hold nothing else. Errors name the file and the tensor.
pub fn load_into_varmap(varmap: &VarMap, path: &Path) -> Result<HashMap<String, String>> {
    let device = varmap
        .all_vars()
        .first()
        .map(|v| v.device().clone())
        .unwrap_or(Device::Cpu);
    let (mut tensors, metadata) = load_tensors(path, &Device::Cpu)?;
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut staged = Vec::with_capacity(names.len());
    for name in names {
        let var = &data[name];
        let t = tensors.remove(name).ok_or_else(|| {
            Error::checkpoint(path, format!("tensor `{name}` is missing (shape {:?} expected); is this a checkpoint of the same model and config?", var.dims()))
        })?;
        if t.dims() != var.dims() {
            return Err(Error::checkpoint(
                path,
                format!("tensor `{name}` has shape {:?}, the model expects {:?}; was it trained with another config?", t.dims(), var.dims()),
            ));
        }
        staged.push((var.clone(), t));
    }
    if !tensors.is_empty() {
        let mut extra: Vec<&String> = tensors.keys().collect();
        extra.sort();
        return Err(Error::checkpoint(
            path,
            format!("unexpected tensor(s) {extra:?} that the model does not have; is this a checkpoint of another model?"),
        ));
    }
    // Only assign once everything checked out: a failed load leaves the model untouched.
    for (var, t) in staged {
        var.set(&t.to_dtype(var.dtype())?.to_device(&device)?)?;
    }
    Ok(metadata)
}

/// Saves `varmap` as `dir/model.safetensors` plus `dir/config.json` describing it.
pub fn save_model(dir: &Path, varmap: &VarMap, info: &CheckpointInfo) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    save_tensors(
        &dir.join(WEIGHTS_FILE),
        &varmap_tensors(varmap),
        Some(info.to_metadata()),
    )?;
    write_json(&dir.join(CONFIG_FILE), info)
}

/// Reads `dir/config.json`.
pub fn read_info(dir: &Path) -> Result<CheckpointInfo> {
    let path = dir.join(CONFIG_FILE);
    if !path.is_file() {
        return Err(Error::checkpoint(
            &path,
            "not found: a neka model directory holds model.safetensors and config.json",
        ));
    }
    read_json(&path)
}

/// Opens a model directory for a loader: the directory must exist (`holds` lists its files,
/// for the message) and its `config.json` must name `model`. Returns the info and the path of
/// `config.json` (for errors about the config).
pub fn open_model_dir(dir: &Path, model: &str, holds: &str) -> Result<(CheckpointInfo, PathBuf)> {
    if !dir.is_dir() {
        return Err(Error::checkpoint(
            dir,
            format!("model directory not found (it should hold {holds})"),
        ));
    }
    let info = read_info(dir)?;
    let cfg_path = dir.join(CONFIG_FILE);
    if info.model != model {
        return Err(Error::checkpoint(
            &cfg_path,
            format!("model `{}` is not a `{model}`", info.model),
        ));
    }
    Ok((info, cfg_path))
}

/// Builds a model with `build` on a fresh [`VarMap`] and loads `dir/model.safetensors` into it
/// strictly (a missing, extra or misshaped tensor is an error naming it).
pub fn load_model<M, E>(
    dir: &Path,
    device: &candle_core::Device,
    build: impl FnOnce(candle_nn::VarBuilder) -> std::result::Result<M, E>,
) -> std::result::Result<(M, VarMap), E>
where
    E: From<Error>,
{
    let varmap = VarMap::new();
    let vb = crate::init::seeded_var_builder(&varmap, candle_core::DType::F32, device);
    let model = build(vb)?;
    load_into_varmap(&varmap, &dir.join(WEIGHTS_FILE))?;
    Ok((model, varmap))
}

#[cfg(test)]
mod tests {
    use super::*;

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
