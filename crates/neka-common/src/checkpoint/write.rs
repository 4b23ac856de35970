//! Saving a model directory: the weights file (with the whole record) as the one commit
//! point, then the readable copies.

use super::{
    read_metadata, save_tensors, varmap_tensors, CheckpointInfo, CONFIG_FILE, WEIGHTS_FILE,
};
use crate::files::{read_json, write_atomic};
use crate::{Error, Result};
use candle_nn::VarMap;
use std::path::Path;

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
