//! Pretrained weights from the Hugging Face Hub (feature `hub`).
//!
//! `--model-id ORG/NAME` resolves `model.safetensors` and `config.json` of a model repository
//! through hf-hub's cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`): a cached copy is used without touching the network, otherwise
//! the files are downloaded into the cache. The returned directory can be passed to any
//! loader that takes a model directory.

use crate::checkpoint::{CONFIG_FILE, WEIGHTS_FILE};
use crate::{Error, Result};
use std::path::PathBuf;

/// True when `HF_HUB_OFFLINE` is set to `1`/`true` (as in `huggingface_hub`): only the
/// local cache is used, the network never.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// Downloads (or finds in the cache) a neka model repository and returns the local snapshot
/// directory holding `model.safetensors` and `config.json`.
pub fn model_dir(repo_id: &str, revision: Option<&str>) -> Result<PathBuf> {
    let Some((owner, name)) = repo_id
        .split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
    else {
        return Err(Error::config(
            "--model-id",
            format!("`{repo_id}`: expected ORG/NAME"),
        ));
    };
    let client = hf_hub::HFClientSync::new()
        .map_err(|e| Error::Hub(format!("cannot start the Hub client: {e}")))?;
    let repo = client.model(owner, name);
    let revision = revision.unwrap_or("main").to_string();
    let mut dir = None;
    for file in [CONFIG_FILE, WEIGHTS_FILE] {
        let get = |local: bool| {
            repo.download_file()
                .filename(file)
                .revision(revision.clone())
                .local_files_only(local)
                .send()
        };
        let path = match get(true) {
            Ok(p) => p,
            Err(e) if offline() => {
                return Err(Error::Hub(format!(
                    "{file} of Hub model `{repo_id}` is not in the local Hugging Face cache and HF_HUB_OFFLINE is set ({e}); \
                     unset HF_HUB_OFFLINE to download it, or pass --model DIR with a local copy"
                )))
            }
            Err(_) => get(false).map_err(|e| {
                Error::Hub(format!(
                    "cannot get {file} of Hub model `{repo_id}` (revision {revision}): {e}. It is not in the \
                     local Hugging Face cache and the download failed: check the id and your connection, \
                     or pass --model DIR with a local copy"
                ))
            })?,
        };
        dir = path.parent().map(|p| p.to_path_buf());
    }
    dir.ok_or_else(|| Error::Hub(format!("Hub model `{repo_id}` resolved to no directory")))
}
