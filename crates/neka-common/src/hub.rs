//! Pretrained weights and data sets from the Hugging Face Hub (feature `hub`).
//!
//! `--model-id ORG/NAME` resolves `model.safetensors` and `config.json` of a model repository
//! through hf-hub's cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`): a cached copy is used without touching the network, otherwise
//! the files are downloaded into the cache. The returned directory can be passed to any
//! loader that takes a model directory. Data sets (MNIST's parquet files, EWT's CoNLL-U files,
//! Multi30k's JSON lines) come through [`dataset_file`] / [`dataset_file_at`] the same way.
//!
//! Every file is checked against the hash the Hub names it by before it is used: hf-hub
//! stores a file as `blobs/<ETag>`, and the Hub's ETag is the file's SHA-256 for LFS files and
//! its git blob SHA-1 for the others. hf-hub does not check the bytes it writes; [`verified`]
//! does, and deletes a blob that does not match (with its snapshot link), so a corrupt or
//! cut-off download is never used, now or by a later run. `HF_ENDPOINT` points the client at
//! another Hub (a mirror, or the tests' local server); `HF_HUB_OFFLINE=1` uses the cache only.

use crate::checkpoint::{CONFIG_FILE, WEIGHTS_FILE};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

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

/// The Hub the client talks to: `HF_ENDPOINT`, else `https://huggingface.co` (as hf-hub).
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into())
        .trim_end_matches('/')
        .to_string()
}

fn split_repo_id<'a>(repo_id: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    repo_id
        .split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| Error::config(flag, format!("`{repo_id}`: expected ORG/NAME")))
}

/// The error and its sources, joined by `: ` (reqwest hides the cause of a broken body or a
/// refused connection in its sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// What went wrong with a download, and what to do about it, from hf-hub's error.
fn diagnose(e: &hf_hub::HFError, what: &str) -> (String, String) {
    use hf_hub::HFError as H;
    let hub = endpoint();
    let id_fix = if what == "model" {
        "check the model id (`model_id`: ORG/NAME, as on the Hub's page)"
    } else {
        "check that the Hub repository still exists and holds this file (or set HF_ENDPOINT to a mirror that does)"
    };
    match e {
        H::RepoNotFound { .. } | H::EntryNotFound { .. } | H::RevisionNotFound { .. } => {
            (format!("not found on {hub} (HTTP 404: {e})"), id_fix.into())
        }
        H::AuthRequired { .. } | H::Forbidden { .. } => (
            format!("{hub} refused it ({e})"),
            format!("{id_fix}; a private or gated repository needs a token in HF_TOKEN"),
        ),
        H::Http { context } if context.status.as_u16() == 404 => {
            (format!("not found on {hub} (HTTP 404)"), id_fix.into())
        }
        H::Http { context } => (
            format!("{hub} answered HTTP {} ({e})", context.status),
            "the Hub failed, not neka: try again later".into(),
        ),
        H::RateLimited { .. } => (
            format!("{hub} is rate-limiting this machine ({e})"),
            "wait a minute and try again, or log in with HF_TOKEN".into(),
        ),
        H::Request { source, .. } if source.is_connect() || source.is_timeout() => (
            format!("cannot connect to {hub} ({})", chain(e)),
            "check your internet connection (and HF_ENDPOINT if you set it)".into(),
        ),
        H::Request { .. } => (
            format!("the download from {hub} broke off ({})", chain(e)),
            "run the command again (the partial file is not used)".into(),
        ),
        H::MalformedResponse { .. } => (
            format!("{hub} is not a Hugging Face Hub or answered wrongly ({e})"),
            "check HF_ENDPOINT (unset it for https://huggingface.co)".into(),
        ),
        other => (chain(other), "run the command again".into()),
    }
}

/// Reads `path` through and returns its hex digest: SHA-256 (`sha256`) or git's blob SHA-1
/// (`sha1` of `blob <len>\0` + the bytes).
fn digest(path: &Path, sha256: bool) -> Result<String> {
    use sha1::Digest as _;
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut s256 = sha2::Sha256::new();
    let mut s1 = sha1::Sha1::new();
    if !sha256 {
        s1.update(format!("blob {len}\0").as_bytes());
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        if sha256 {
            s256.update(&buf[..n]);
        } else {
            s1.update(&buf[..n]);
        }
    }
    let bytes: Vec<u8> = if sha256 {
        s256.finalize().to_vec()
    } else {
        s1.finalize().to_vec()
    };
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks a cached file against the hash hf-hub stored it under. `snapshot` is the file's
/// path in the cache (`snapshots/<commit>/<file>`, a link to `blobs/<ETag>`). An ETag of 64
/// hex digits is the SHA-256 of the bytes (LFS files), one of 40 their git blob SHA-1; another
/// ETag (or a copy instead of a link, as on Windows) cannot be checked and is accepted. On a
/// mismatch the blob and the link are deleted and the error names both hashes.
pub fn verified(snapshot: &Path) -> Result<PathBuf> {
    let Ok(target) = std::fs::read_link(snapshot) else {
        return Ok(snapshot.to_path_buf());
    };
    let blob = snapshot.parent().unwrap_or(Path::new(".")).join(target);
    let blob = std::fs::canonicalize(&blob).unwrap_or(blob);
    let etag = blob
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let hex = etag.chars().all(|c| c.is_ascii_hexdigit());
    let sha256 = match etag.len() {
        64 if hex => true,
        40 if hex => false,
        _ => return Ok(snapshot.to_path_buf()),
    };
    let got = digest(&blob, sha256)?;
    if got == etag {
        return Ok(snapshot.to_path_buf());
    }
    let _ = std::fs::remove_file(snapshot);
    let _ = std::fs::remove_file(&blob);
    let kind = if sha256 { "SHA-256" } else { "git SHA-1" };
    Err(Error::bad_data(
        snapshot,
        format!(
            "the downloaded bytes have {kind} {got} but the Hub named the file {etag} (its ETag): \
             the copy is corrupt and was deleted from the cache ({})",
            blob.display()
        ),
    ))
}

/// One file of a Hub repository: from the local cache if there, else downloaded (unless
/// offline); checked against its hash either way ([`verified`]). `what` is `model` or
/// `dataset`, for messages.
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
    let named = |e: Error| {
        Error::Hub(format!(
            "{file} of Hub {what} `{repo_id}` (revision {revision}): {e}. Run the command again to \
             download it afresh"
        ))
    };
    if let Ok(p) = get(true) {
        match verified(&p) {
            Ok(p) => return Ok(p),
            // a cached copy that went bad is deleted: download it again unless offline
            Err(e) if offline() => return Err(named(e)),
            Err(_) => {}
        }
    }
    if offline() {
        return Err(Error::Hub(format!(
            "{file} of Hub {what} `{repo_id}` (revision {revision}) is not in the local Hugging \
             Face cache ({}) and HF_HUB_OFFLINE is set, so it was not downloaded: unset \
             HF_HUB_OFFLINE to download it from {}",
            cache_dir().display(),
            endpoint()
        )));
    }
    match get(false) {
        Ok(p) => verified(&p).map_err(named),
        Err(e) => {
            let (why, fix) = diagnose(&e, what);
            Err(Error::Hub(format!(
                "cannot download {file} of Hub {what} `{repo_id}` (revision {revision}): {why}. \
                 Fix: {fix}"
            )))
        }
    }
}

/// The Hub cache directory hf-hub uses (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`).
pub fn cache_dir() -> PathBuf {
    hf_hub::resolve_cache_dir()
}

fn client() -> Result<hf_hub::HFClientSync> {
    hf_hub::HFClientSync::new().map_err(|e| {
        Error::Hub(format!(
            "cannot start the Hub client: {e}. Fix: check HF_ENDPOINT (it must be a URL)"
        ))
    })
}

/// Downloads (or finds in the cache) a neka model repository and returns the local snapshot
/// directory holding `model.safetensors` and `config.json`.
pub fn model_dir(repo_id: &str, revision: Option<&str>) -> Result<PathBuf> {
    model_dir_with(repo_id, revision, &[])
}

/// [`model_dir`] for models that need more files than weights and config (vocabularies).
pub fn model_dir_with(repo_id: &str, revision: Option<&str>, extra: &[&str]) -> Result<PathBuf> {
    let (owner, name) = split_repo_id(repo_id, "model_id")?;
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

/// One file of a Hub dataset repository (`ORG/NAME`) on its `main` branch, e.g. a CoNLL-U
/// treebank file; cached and checked like models.
pub fn dataset_file(repo_id: &str, file: &str) -> Result<PathBuf> {
    dataset_file_at(repo_id, "main", file)
}

/// [`dataset_file`] at another revision, e.g. `refs/convert/parquet` (the Hub's parquet
/// conversion, where candle-datasets reads MNIST from).
pub fn dataset_file_at(repo_id: &str, revision: &str, file: &str) -> Result<PathBuf> {
    let (owner, name) = split_repo_id(repo_id, "dataset id")?;
    let client = client()?;
    fetch(
        &client.dataset(owner, name),
        repo_id,
        "dataset",
        file,
        revision,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_and_git_blob_sha1() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        // `sha256sum` and `git hash-object` of "hello\n"
        assert_eq!(
            digest(&p, true).unwrap(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert_eq!(
            digest(&p, false).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_blob_that_does_not_match_its_etag_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        let snap = dir.path().join("snapshots/c0ffee");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::create_dir_all(&snap).unwrap();
        let etag = "ce013625030ba8dba906f756967f9e9ca394464a";
        std::fs::write(blobs.join(etag), b"hello\n").unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{etag}"), snap.join("good")).unwrap();
        assert_eq!(verified(&snap.join("good")).unwrap(), snap.join("good"));

        std::fs::write(blobs.join(etag), b"hellO\n").unwrap();
        let err = verified(&snap.join("good")).unwrap_err().to_string();
        assert!(err.contains(etag) && err.contains("corrupt"), "{err}");
        assert!(!blobs.join(etag).exists() && !snap.join("good").exists());
    }
}
