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

fn split_repo_id<'a>(repo_id: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    repo_id
        .split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| Error::config(flag, format!("`{repo_id}`: expected ORG/NAME")))
}

/// One file of a Hub repository: from the local cache if there, else downloaded (unless
/// offline). `what` is `model` or `dataset`, for messages.
fn fetch<T: hf_hub::RepoType>(
    repo: &hf_hub::HFRepositorySync<T>,
    repo_id: &str,
    what: &str,
    file: &str,
    revision: &str,
) -> Result<PathBuf> {
    let get = |local: bool| {
        repo.download_file()
            .filename(file)
            .revision(revision.to_string())
            .local_files_only(local)
            .send()
    };
    match get(true) {
        Ok(p) => Ok(p),
        Err(e) if offline() => Err(Error::Hub(format!(
            "{file} of Hub {what} `{repo_id}` is not in the local Hugging Face cache and HF_HUB_OFFLINE is set ({e}); \
             unset HF_HUB_OFFLINE to download it, or use a local copy"
        ))),
        Err(_) => get(false).map_err(|e| {
            Error::Hub(format!(
                "cannot get {file} of Hub {what} `{repo_id}` (revision {revision}): {e}. It is not in the \
                 local Hugging Face cache and the download failed: check the id and your connection, \
                 or use a local copy"
            ))
        }),
    }
}

fn client() -> Result<hf_hub::HFClientSync> {
    hf_hub::HFClientSync::new().map_err(|e| Error::Hub(format!("cannot start the Hub client: {e}")))
}

/// Downloads (or finds in the cache) a neka model repository and returns the local snapshot
/// directory holding `model.safetensors` and `config.json`.
pub fn model_dir(repo_id: &str, revision: Option<&str>) -> Result<PathBuf> {
    model_dir_with(repo_id, revision, &[])
}

/// [`model_dir`] for models that need more files than weights and config (vocabularies).
pub fn model_dir_with(repo_id: &str, revision: Option<&str>, extra: &[&str]) -> Result<PathBuf> {
    let (owner, name) = split_repo_id(repo_id, "--model-id")?;
    let client = client()?;
    let repo = client.model(owner, name);
    let revision = revision.unwrap_or("main");
    let mut dir = None;
    for file in [CONFIG_FILE, WEIGHTS_FILE].iter().chain(extra) {
        let path = fetch(&repo, repo_id, "model", file, revision)?;
        dir = path.parent().map(|p| p.to_path_buf());
    }
    dir.ok_or_else(|| Error::Hub(format!("Hub model `{repo_id}` resolved to no directory")))
}

/// One file of a Hub dataset repository (`ORG/NAME`), e.g. a CoNLL-U treebank file; cached
/// like models.
pub fn dataset_file(repo_id: &str, file: &str) -> Result<PathBuf> {
    let (owner, name) = split_repo_id(repo_id, "dataset id")?;
    let client = client()?;
    fetch(
        &client.dataset(owner, name),
        repo_id,
        "dataset",
        file,
        "main",
    )
}
