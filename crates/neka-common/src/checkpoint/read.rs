//! Reading a model directory: the safetensors header alone, the record, the companion files,
//! and loading a model with every parameter checked before it is allocated.

use super::{load_into_varmap, CheckpointInfo, CONFIG_FILE, WEIGHTS_FILE};
use crate::files::read_json;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    /// What `build` returned: the model with its weights loaded (and, for some models, their
    /// vocabularies).
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
