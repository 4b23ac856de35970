//! Named tensors in safetensors files, and strict loading into the variables of a
//! [`VarMap`] (PyTorch's `load_state_dict(strict=True)`).

use crate::files::write_atomic;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::path::Path;

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
