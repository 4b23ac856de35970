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
//! file ([`read_info`], [`ModelDir`]), so a save interrupted between two renames can leave a
//! stale `config.json` beside the new weights but never weights paired with the wrong
//! metrics, config or vocabulary; the next training in the directory rewrites the copies
//! ([`refresh_copies`]). Directories written by other tools (no record in the weights) are
//! read from `config.json` and the files beside it.

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
    /// How the training data was selected (`val_size`, `train_sentences`, …): part of what
    /// defines a run, compared by `--resume`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, serde_json::Value>,
    /// Final metrics (e.g. `val_accuracy`, `test_accuracy`, `epochs`).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Companion files (file name → content), e.g. the vocabularies. Recorded inside the
    /// weights file (`file:NAME` metadata) and copied beside it; not part of `config.json`.
    #[serde(skip)]
    pub files: BTreeMap<String, String>,
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
            data: BTreeMap::new(),
            metrics: BTreeMap::new(),
            files: BTreeMap::new(),
        })
    }

    /// Reads the record back from a weights file's `__metadata__` (`path` names the file in
    /// errors); `None` when the metadata holds no neka record (a file from another tool).
    pub fn from_metadata(meta: &HashMap<String, String>, path: &Path) -> Result<Option<Self>> {
        let (Some(model), Some(config)) = (meta.get("model"), meta.get("config")) else {
            return Ok(None);
        };
        fn json<T: serde::de::DeserializeOwned>(
            meta: &HashMap<String, String>,
            key: &str,
            path: &Path,
        ) -> Result<Option<T>> {
            meta.get(key)
                .map(|v| {
                    serde_json::from_str(v).map_err(|e| {
                        Error::checkpoint(path, format!("metadata field `{key}` is not valid: {e}"))
                    })
                })
                .transpose()
        }
        let info = Self {
            neka_version: meta.get("neka_version").cloned().unwrap_or_default(),
            model: model.clone(),
            config: serde_json::from_str(config).map_err(|e| {
                Error::checkpoint(path, format!("metadata field `config` is not JSON: {e}"))
            })?,
            dataset: meta.get("dataset").cloned().unwrap_or_default(),
            normalize: json(meta, "normalize", path)?,
            classes: json(meta, "classes", path)?.unwrap_or_default(),
            data: json(meta, "data", path)?.unwrap_or_default(),
            metrics: json(meta, "metrics", path)?.unwrap_or_default(),
            files: meta
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("file:")?.to_string(), v.clone())))
                .collect(),
        };
        info.validate(path)?;
        Ok(Some(info))
    }

    /// Checks what every loader relies on: a model kind, a config object, a usable
    /// `normalize` (one finite mean and one finite std > 0 per channel), distinct non-empty
    /// class names and safe companion file names. `path` names the file in errors.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Err(Error::checkpoint(path, msg));
        if self.model.is_empty() {
            return bad("field `model` is empty: it names the model kind (e.g. mnist-net)".into());
        }
        if !self.config.is_object() {
            return bad(format!(
                "field `config` must be an object of the model's settings, found {}",
                self.config
            ));
        }
        if let Some(n) = &self.normalize {
            n.validate()
                .or_else(|msg| bad(format!("field `normalize`: {msg}")))?;
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.classes {
            if c.is_empty() || !seen.insert(c) {
                return bad(format!(
                    "field `classes`: class name `{c}` is empty or listed twice"
                ));
            }
        }
        for name in self.files.keys() {
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                return bad(format!(
                    "companion file name `{name}` is not a plain file name"
                ));
            }
        }
        Ok(())
    }

    /// The differences that matter for `--resume` between a saved run's record (`self`)
    /// and a new run's (`now`): model kind and config, dataset and data selection,
    /// preprocessing, classes and companion files (vocabularies). Metrics may differ.
    pub fn differences(&self, now: &CheckpointInfo) -> Vec<String> {
        fn field(d: &mut Vec<String>, name: &str, saved: String, new: String) {
            if saved != new {
                d.push(format!("{name}: saved run {saved}, this run {new}"));
            }
        }
        fn maps<'a>(
            d: &mut Vec<String>,
            prefix: &str,
            a: impl Fn(&str) -> Option<&'a serde_json::Value>,
            b: impl Fn(&str) -> Option<&'a serde_json::Value>,
            keys: std::collections::BTreeSet<&'a String>,
        ) {
            let show =
                |v: Option<&serde_json::Value>| v.map_or("(absent)".into(), |v| v.to_string());
            for k in keys {
                field(d, &format!("{prefix}{k}"), show(a(k)), show(b(k)));
            }
        }
        let js = |v: &dyn Fn() -> serde_json::Result<String>| v().unwrap_or_default();
        let mut d = Vec::new();
        field(&mut d, "model", self.model.clone(), now.model.clone());
        field(&mut d, "dataset", self.dataset.clone(), now.dataset.clone());
        match (self.config.as_object(), now.config.as_object()) {
            (Some(a), Some(b)) => maps(
                &mut d,
                "config.",
                |k| a.get(k),
                |k| b.get(k),
                a.keys().chain(b.keys()).collect(),
            ),
            _ => field(
                &mut d,
                "config",
                self.config.to_string(),
                now.config.to_string(),
            ),
        }
        maps(
            &mut d,
            "data.",
            |k| self.data.get(k),
            |k| now.data.get(k),
            self.data.keys().chain(now.data.keys()).collect(),
        );
        field(
            &mut d,
            "normalize",
            js(&|| serde_json::to_string(&self.normalize)),
            js(&|| serde_json::to_string(&now.normalize)),
        );
        field(
            &mut d,
            "classes",
            js(&|| serde_json::to_string(&self.classes)),
            js(&|| serde_json::to_string(&now.classes)),
        );
        let names: std::collections::BTreeSet<&String> =
            self.files.keys().chain(now.files.keys()).collect();
        for n in names {
            if self.files.get(n) != now.files.get(n) {
                d.push(format!(
                    "{n}: the saved run's file differs from the one this run built"
                ));
            }
        }
        d
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
        // Always present (even `{}`): it marks a record that keeps data selection and
        // companion files, which `--resume` then compares.
        m.insert(
            "data".into(),
            serde_json::to_string(&self.data).unwrap_or_default(),
        );
        m.insert(
            "metrics".into(),
            serde_json::to_string(&self.metrics).unwrap_or_default(),
        );
        for (name, content) in &self.files {
            m.insert(format!("file:{name}"), content.clone());
        }
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

/// Range checks for a model config's fields, for `Config::validate` functions: each returns
/// a message naming the field and the allowed range.
pub mod check {
    /// `v ≥ 1`.
    pub fn positive(field: &str, v: usize) -> Result<(), String> {
        if v == 0 {
            return Err(format!("field `{field}` is 0: it must be at least 1"));
        }
        Ok(())
    }

    /// `lo ≤ v ≤ hi`.
    pub fn between(field: &str, v: usize, lo: usize, hi: usize) -> Result<(), String> {
        if !(lo..=hi).contains(&v) {
            return Err(format!("field `{field}` is {v}: it must be in {lo}..={hi}"));
        }
        Ok(())
    }

    /// A probability-like number: finite, `lo ≤ v` and `v < 1` (or `v ≤ 1` when `one_ok`).
    pub fn fraction(field: &str, v: f64, one_ok: bool) -> Result<(), String> {
        let ok = v.is_finite() && v >= 0.0 && (v < 1.0 || (one_ok && v == 1.0));
        if !ok {
            let hi = if one_ok { "[0, 1]" } else { "[0, 1)" };
            return Err(format!(
                "field `{field}` is {v}: it must be a number in {hi}"
            ));
        }
        Ok(())
    }

    /// A finite number ≥ 0.
    pub fn non_negative(field: &str, v: f64) -> Result<(), String> {
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!(
                "field `{field}` is {v}: it must be a finite number ≥ 0"
            ));
        }
        Ok(())
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
/// the file may hold nothing else. Errors name the file and the tensor; a failed load leaves
/// the variables untouched.
pub fn load_into_varmap(varmap: &VarMap, path: &Path) -> Result<HashMap<String, String>> {
    let device = varmap
        .all_vars()
        .first()
        .map(|v| v.device().clone())
        .unwrap_or(Device::Cpu);
    let (staged, metadata) = stage_for_varmap(varmap, path)?;
    // Only assign once everything checked out: a failed load leaves the model untouched.
    for (var, t) in staged {
        var.set(&t.to_dtype(var.dtype())?.to_device(&device)?)?;
    }
    Ok(metadata)
}

/// Reads `path` and checks it as [`load_into_varmap`] would (whole file, every variable
/// present with its shape, nothing else, finite floating-point values), without changing
/// `varmap`. Returns the file's metadata.
pub fn check_against_varmap(varmap: &VarMap, path: &Path) -> Result<HashMap<String, String>> {
    Ok(stage_for_varmap(varmap, path)?.1)
}

type Staged = Vec<(candle_core::Var, Tensor)>;

/// The tensors of `path` paired with the variables of `varmap` they would replace, checked.
fn stage_for_varmap(varmap: &VarMap, path: &Path) -> Result<(Staged, HashMap<String, String>)> {
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
        check_weights(&t, name, path)?;
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
    Ok((staged, metadata))
}

/// A weight tensor must be floating point with finite values: an integer tensor would be
/// silently converted and NaN or ±inf weights answer garbage.
fn check_weights(t: &Tensor, name: &str, path: &Path) -> Result<()> {
    use candle_core::DType;
    if !matches!(
        t.dtype(),
        DType::F32 | DType::F64 | DType::F16 | DType::BF16
    ) {
        return Err(Error::checkpoint(
            path,
            format!(
                "tensor `{name}` has dtype {:?}: weights must be floating point (f32, f64, f16 or bf16)",
                t.dtype()
            ),
        ));
    }
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::checkpoint(
            path,
            format!(
                "tensor `{name}` holds a non-finite value ({} at flat index {i}): the weights are corrupt or come from a diverged run",
                v[i]
            ),
        ));
    }
    Ok(())
}

/// Checks that every variable of `varmap` is finite (before a save: a diverged model must
/// not replace a good one). Returns the first offending variable's name.
pub fn first_non_finite(varmap: &VarMap) -> Result<Option<String>> {
    for (name, t) in varmap_tensors(varmap) {
        let bad = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .any(|x| !x.is_finite());
        if bad {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Saves `varmap` as `dir/model.safetensors` with `info` as its record, then refreshes the
/// readable copies (`config.json` and `info.files`). The weights file is renamed into place
/// in one atomic step (see the module docs); the copies follow it.
pub fn save_model(dir: &Path, varmap: &VarMap, info: &CheckpointInfo) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    save_tensors(
        &dir.join(WEIGHTS_FILE),
        &varmap_tensors(varmap),
        Some(info.to_metadata()),
    )?;
    write_copies(dir, info)
}

/// Writes `config.json` and the companion files of `info` where they differ from what is
/// on disk.
fn write_copies(dir: &Path, info: &CheckpointInfo) -> Result<()> {
    let mut config = serde_json::to_string_pretty(info).map_err(|e| Error::Json {
        path: dir.join(CONFIG_FILE),
        source: e,
    })?;
    config.push('\n');
    let files = std::iter::once((CONFIG_FILE, config.as_str()))
        .chain(info.files.iter().map(|(n, c)| (n.as_str(), c.as_str())));
    for (name, content) in files {
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(content.as_bytes()) {
            write_atomic(&path, content.as_bytes())?;
        }
    }
    Ok(())
}

/// Rewrites the readable copies of a model directory from the record in its weights file
/// (after a save was interrupted between the weights and `config.json`). Returns whether
/// anything was rewritten; a directory without a neka record is left alone.
pub fn refresh_copies(dir: &Path) -> Result<bool> {
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.is_file() {
        return Ok(false);
    }
    let Some(info) = CheckpointInfo::from_metadata(&read_metadata(&weights)?, &weights)? else {
        return Ok(false);
    };
    let stale = read_json::<CheckpointInfo>(&dir.join(CONFIG_FILE))
        .ok()
        .map(|mut c| {
            c.files = info.files.clone();
            c
        })
        != Some(info.clone())
        || info
            .files
            .iter()
            .any(|(n, c)| std::fs::read(dir.join(n)).ok().as_deref() != Some(c.as_bytes()));
    if stale {
        write_copies(dir, &info)?;
    }
    Ok(stale)
}

/// Largest safetensors header neka reads (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// The JSON header of a safetensors file: its `__metadata__` map and each tensor's shape.
struct Header {
    metadata: HashMap<String, String>,
    shapes: HashMap<String, Vec<usize>>,
}

/// Reads only the JSON header of a safetensors file, never the tensors.
fn read_header(path: &Path) -> Result<Header> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| {
        Error::checkpoint(
            path,
            "not a safetensors file: shorter than its 8-byte header length",
        )
    })?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || n > len - 8 {
        return Err(Error::checkpoint(
            path,
            format!("not a safetensors file: header length {n} exceeds the file ({len} bytes) or 100 MB"),
        ));
    }
    let mut bytes = vec![0u8; n as usize];
    f.read_exact(&mut bytes).map_err(|e| Error::io(path, e))?;
    let invalid =
        |e: String| Error::checkpoint(path, format!("not a safetensors file: invalid header: {e}"));
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    let mut header = Header {
        metadata: HashMap::new(),
        shapes: HashMap::new(),
    };
    for (k, v) in json {
        if k == "__metadata__" {
            header.metadata = serde_json::from_value(v).map_err(|e| invalid(e.to_string()))?;
        } else {
            #[derive(Deserialize)]
            struct Entry {
                shape: Vec<usize>,
            }
            let e: Entry = serde_json::from_value(v).map_err(|e| invalid(format!("`{k}`: {e}")))?;
            header.shapes.insert(k, e.shape);
        }
    }
    Ok(header)
}

/// Reads only the `__metadata__` map of a safetensors file (its JSON header), without
/// reading the tensors.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    Ok(read_header(path)?.metadata)
}

/// A variable builder backend for loading: each parameter the model asks for must be in the
/// weights file with the same shape **before** it is allocated (so a config that asks for a
/// huge layer fails with a message instead of allocating it), and is created as zeros (the
/// file's values are assigned afterwards, without drawing from the model RNG).
struct CheckedBackend {
    varmap: VarMap,
    shapes: HashMap<String, Vec<usize>>,
    path: PathBuf,
}

impl candle_nn::var_builder::SimpleBackend for CheckedBackend {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: candle_core::DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.shapes.get(name) {
            None => candle_core::bail!(
                "{}: tensor `{name}` (shape {:?}) that the config asks for is missing; do the weights and the config belong together?",
                self.path.display(),
                s.dims()
            ),
            Some(f) if f.as_slice() != s.dims() => candle_core::bail!(
                "{}: the config asks for tensor `{name}` of shape {:?}, the file holds {f:?}; do the weights and the config belong together?",
                self.path.display(),
                s.dims()
            ),
            Some(_) => self.varmap.get(s, name, candle_nn::Init::Const(0.0), dtype, dev),
        }
    }

    fn get_unchecked(
        &self,
        name: &str,
        _: candle_core::DType,
        _: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("parameter `{name}` requested without a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }
}

/// The record of the model in `dir`: from the weights file's metadata when it holds one
/// (the commit point, see the module docs), else from `config.json`.
pub fn read_info(dir: &Path) -> Result<CheckpointInfo> {
    Ok(read_record(dir)?.0)
}

/// [`read_info`], with the file the record was read from (for errors about it).
pub fn read_record(dir: &Path) -> Result<(CheckpointInfo, PathBuf)> {
    let weights = dir.join(WEIGHTS_FILE);
    if weights.is_file() {
        if let Some(info) = CheckpointInfo::from_metadata(&read_metadata(&weights)?, &weights)? {
            return Ok((info, weights));
        }
    }
    let path = dir.join(CONFIG_FILE);
    if !path.is_file() {
        return Err(Error::checkpoint(
            &path,
            "not found: a neka model directory holds model.safetensors and config.json",
        ));
    }
    let info: CheckpointInfo = read_json(&path)?;
    info.validate(&path)?;
    Ok((info, path))
}

/// Reads companion file `name` of the model in `dir` (e.g. `words.json`): the copy recorded
/// in the weights file when `info` holds one, else the file beside it. Returns the content
/// and the path to name in errors.
pub fn read_companion(dir: &Path, info: &CheckpointInfo, name: &str) -> Result<(String, PathBuf)> {
    let path = dir.join(name);
    if let Some(c) = info.files.get(name) {
        return Ok((c.clone(), dir.join(format!("{WEIGHTS_FILE}[file:{name}]"))));
    }
    if !path.is_file() {
        return Err(Error::checkpoint(&path, "companion file is missing"));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    Ok((text, path))
}

/// Opens a model directory for a loader: the directory must exist (`holds` lists its files,
/// for the message) and its record ([`read_info`]) must name `model`. Returns the info and
/// the path of the file the record was read from (for errors about the config).
pub fn open_model_dir(dir: &Path, model: &str, holds: &str) -> Result<(CheckpointInfo, PathBuf)> {
    if !dir.is_dir() {
        return Err(Error::checkpoint(
            dir,
            format!("model directory not found (it should hold {holds})"),
        ));
    }
    let (info, cfg_path) = read_record(dir)?;
    if info.model != model {
        return Err(Error::checkpoint(
            &cfg_path,
            format!("model `{}` is not a `{model}`", info.model),
        ));
    }
    Ok((info, cfg_path))
}

/// Builds a model with `build` on a fresh [`VarMap`] and loads `dir/model.safetensors` into it
/// strictly (a missing, extra or misshaped tensor is an error naming it; every parameter is
/// checked against the file's header before it is allocated; weights must be finite floats).
pub fn load_model<M, E>(
    dir: &Path,
    device: &candle_core::Device,
    build: impl FnOnce(candle_nn::VarBuilder) -> std::result::Result<M, E>,
) -> std::result::Result<(M, VarMap), E>
where
    E: From<Error>,
{
    let varmap = VarMap::new();
    let path = dir.join(WEIGHTS_FILE);
    let backend = CheckedBackend {
        varmap: varmap.clone(),
        shapes: read_header(&path)?.shapes,
        path: path.clone(),
    };
    let vb = candle_nn::VarBuilder::from_backend(
        Box::new(backend),
        candle_core::DType::F32,
        device.clone(),
    );
    let model = build(vb)?;
    load_into_varmap(&varmap, &path)?;
    Ok((model, varmap))
}

/// A trained model loaded from its directory — the one loader path of the zoo's
/// `LoadedModel`, `LoadedTagger`, `Translator` and `CharLm::load`: the directory is opened
/// ([`open_model_dir`]), the model is built from its record and loaded strictly
/// ([`load_model`]).
pub struct Pretrained<M> {
    pub model: M,
    /// The record: model name, config, dataset, classes, metrics, companion files.
    pub info: CheckpointInfo,
    /// The variables holding the weights.
    pub varmap: VarMap,
    /// The file the record was read from, to name in errors about the config.
    pub source: PathBuf,
}

impl<M> Pretrained<M> {
    /// Opens `dir` (which must exist; `holds` lists its files, for the message), checks that
    /// its record names `model` (`None`: any model), then builds the model with
    /// `build(&info, &source, vb)` — which reads and checks the config and companion files
    /// before anything is allocated — and loads `model.safetensors` into it strictly.
    pub fn load(
        dir: &Path,
        device: &Device,
        model: Option<&str>,
        holds: &str,
        build: impl FnOnce(&CheckpointInfo, &Path, candle_nn::VarBuilder) -> Result<M>,
    ) -> Result<Self> {
        let (info, source) = match model {
            Some(name) => open_model_dir(dir, name, holds)?,
            None if !dir.is_dir() => {
                return Err(Error::checkpoint(
                    dir,
                    format!("model directory not found (it should hold {holds})"),
                ))
            }
            None => read_record(dir)?,
        };
        let (model, varmap) = load_model(dir, device, |vb| build(&info, &source, vb))?;
        Ok(Self {
            model,
            info,
            varmap,
            source,
        })
    }
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
