//! The record of a saved model: what it is (model kind, config), what it was trained on
//! (dataset, data selection, classes, preprocessing, vocabularies) and how well it did.

use super::Normalize;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

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
