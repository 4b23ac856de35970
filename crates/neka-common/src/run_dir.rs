//! A training run's output directory (`--out`): locked while a run writes into it, and
//! repaired from what an interrupted run left behind before anything new is written.
//!
//! * **Locked.** [`RunLock::acquire`] takes an advisory lock on `out/.neka.lock` (the OS
//!   `flock`, which the kernel releases when the holder exits, even after `kill -9`) and writes
//!   the holder's pid and start time into it. A second training into the same directory
//!   stops with a message naming that pid instead of writing over the first. A lock file left
//!   by a process that is gone is stale: nobody holds the OS lock, so the next run takes it
//!   (and says so).
//! * **Repaired.** Under the lock, [`recover`] removes temporary files that a killed save left
//!   (`.*.tmp`, `checkpoint.tmp-*`), puts back `checkpoint/` from `checkpoint.old/` when a kill
//!   fell between the two renames that replace it, puts back the best model from
//!   `checkpoint/` when a kill fell between saving the checkpoint of a new best epoch and the
//!   best model itself ([`restore_best_from_checkpoint`]), and refreshes the readable copies
//!   of the best model (`config.json`, vocabularies) from the record inside its weights
//!   ([`crate::checkpoint::refresh_copies`]).

use crate::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file in a run directory.
pub const LOCK_FILE: &str = ".neka.lock";
/// The folder of the latest training state in a run directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// Exclusive use of a run directory while this value lives (see the module docs).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    dir: PathBuf,
    /// What [`recover`] repaired when the lock was taken (one line each).
    pub recovered: Vec<String>,
}

/// Refuses a run directory that cannot be one because it, or the nearest part of its path
/// that exists, is not a directory (`--out model.safetensors`): an [`Error::Config`] for
/// `--out` naming the path, instead of the operating system's "File exists". Reads metadata
/// only.
pub fn check_out_dir(dir: &Path) -> Result<()> {
    let Some(existing) = dir.ancestors().find(|p| p.symlink_metadata().is_ok()) else {
        return Ok(());
    };
    if existing.as_os_str().is_empty() || existing.is_dir() {
        return Ok(());
    }
    let what = if existing == dir {
        format!("{} is a file, not a directory", dir.display())
    } else {
        format!(
            "{} cannot be created: {} is a file, not a directory",
            dir.display(),
            existing.display()
        )
    };
    Err(Error::config(
        "out_dir",
        format!(
            "{what}. `out_dir` must be a directory (created if missing) that receives the model, \
             its metrics and curves: give a directory path, e.g. runs/my-run"
        ),
    ))
}

impl RunLock {
    /// Creates `dir` if needed, locks it, records this process as the holder and repairs what
    /// an interrupted run left ([`recover`]). Fails, naming the holder, if another process
    /// (or another trainer in this one) holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        check_out_dir(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim().to_string();
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::RunDirInUse {
                    dir: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "a process that has not recorded its pid yet".into()
                    } else {
                        holder
                    },
                })
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let me = format!(
            "pid {} (started at unix time {started})",
            std::process::id()
        );
        (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{me}")?;
            file.sync_all()
        })()
        .map_err(|e| Error::io(&path, e))?;
        let mut recovered = Vec::new();
        if !holder.is_empty() {
            recovered.push(format!(
                "stale lock of {holder} (that process is gone) taken over"
            ));
        }
        recovered.extend(recover(dir)?);
        Ok(Self {
            file,
            dir: dir.to_path_buf(),
            recovered,
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // An empty lock file means "released cleanly"; the OS lock goes with the handle.
        let _ = self.file.set_len(0);
    }
}

/// Repairs what an interrupted run left in `dir` (call it holding the [`RunLock`]): removes
/// stale temporary files and folders, restores `checkpoint/` from `checkpoint.old/`, and
/// refreshes the best model's readable copies. Returns what it did, one line each.
pub fn recover(dir: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let cur = dir.join(CHECKPOINT_DIR);
    let old = dir.join(format!("{CHECKPOINT_DIR}.old"));
    for folder in [dir.to_path_buf(), cur.clone(), old.clone()] {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let temp_file = name.starts_with('.') && name.ends_with(".tmp");
            let temp_dir = folder == dir && name.starts_with(&format!("{CHECKPOINT_DIR}.tmp"));
            if !(temp_file || temp_dir) {
                continue;
            }
            let p = e.path();
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| Error::io(&p, e))?;
            done.push(format!(
                "removed {} left by an interrupted save",
                p.display()
            ));
        }
    }
    if old.is_dir() {
        if cur.join("state.json").is_file() {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        } else {
            if cur.exists() {
                std::fs::remove_dir_all(&cur).map_err(|e| Error::io(&cur, e))?;
            }
            std::fs::rename(&old, &cur).map_err(|e| Error::io(&old, e))?;
            done.push(format!(
                "restored {} from {CHECKPOINT_DIR}.old (a save was interrupted between two renames)",
                cur.display()
            ));
        }
    }
    if let Some(line) = restore_best_from_checkpoint(dir)? {
        done.push(line);
    }
    if crate::checkpoint::refresh_copies(dir)? {
        done.push(format!(
            "rewrote config.json and the vocabularies in {} from the record in model.safetensors (a save was interrupted)",
            dir.display()
        ));
    }
    Ok(done)
}

/// Replaces `dir/checkpoint/` by the complete new checkpoint folder `tmp` (in `dir`) with two
/// renames, so that a complete checkpoint exists at every moment: between the renames it is
/// `checkpoint.old/`, which [`checkpoint_folder`] and the next run's [`recover`] use. This is
/// the writing half of the protocol whose repair half is [`recover`]: both live here so that
/// the order of the renames and what a repair expects to find read side by side.
pub fn replace_checkpoint(dir: &Path, tmp: &Path) -> Result<()> {
    let cur = dir.join(CHECKPOINT_DIR);
    let old = dir.join(format!("{CHECKPOINT_DIR}.old"));
    let _ = std::fs::remove_dir_all(&old);
    if cur.exists() {
        std::fs::rename(&cur, &old).map_err(|e| Error::io(&cur, e))?;
    }
    std::fs::rename(tmp, &cur).map_err(|e| Error::io(tmp, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// The checkpoint folder of a run directory that `--resume` reads: `dir/checkpoint/`, else
/// `dir/checkpoint.old/` (a save interrupted between its two renames), else `dir` itself when
/// it is a checkpoint folder.
pub fn checkpoint_folder(dir: &Path) -> Result<PathBuf> {
    [
        dir.join(CHECKPOINT_DIR),
        dir.join(format!("{CHECKPOINT_DIR}.old")),
        dir.to_path_buf(),
    ]
    .into_iter()
    .find(|d| d.join("state.json").is_file())
    .ok_or_else(|| {
        Error::checkpoint(
            dir,
            "no checkpoint/state.json here: `resume` takes the `out_dir` of an earlier run",
        )
    })
}

/// What [`restore_best_from_checkpoint`] reads of `checkpoint/state.json`.
#[derive(serde::Deserialize)]
struct Progress {
    epochs_done: usize,
    #[serde(default)]
    batches_done: usize,
    best_epoch: Option<usize>,
}

/// An epoch that improves is saved as the checkpoint first, then as the best model
/// (`model.safetensors`). When a kill falls between the two, the checkpoint's weights *are*
/// the best model (its epoch is the best, no batch of the next epoch trained): this copies
/// them to `dir/model.safetensors`. Returns what it did, if anything; a best model that is
/// present and of the best epoch (or a weight average that replaced it) is left alone.
pub fn restore_best_from_checkpoint(dir: &Path) -> Result<Option<String>> {
    use crate::checkpoint::{load_tensors, read_json, CheckpointInfo, WEIGHTS_FILE};
    let ck = dir.join(CHECKPOINT_DIR);
    let Ok(p) = read_json::<Progress>(&ck.join("state.json")) else {
        return Ok(None);
    };
    if p.batches_done != 0 || p.best_epoch != Some(p.epochs_done) {
        return Ok(None);
    }
    let best = dir.join(WEIGHTS_FILE);
    // read whole: a truncated best model is restored too
    let current = load_tensors(&best, &candle_core::Device::Cpu)
        .ok()
        .and_then(|(_, m)| CheckpointInfo::from_metadata(&m, &best).ok().flatten());
    let up_to_date = current.is_some_and(|info| {
        info.metrics.contains_key("averaged_epochs")
            || info.metrics.get("epoch").map(|&e| e as usize) == p.best_epoch
    });
    if up_to_date {
        return Ok(None);
    }
    let source = ck.join(WEIGHTS_FILE);
    let Ok(bytes) = std::fs::read(&source) else {
        return Ok(None);
    };
    crate::checkpoint::write_atomic(&best, &bytes)?;
    Ok(Some(format!(
        "restored the best model {} (epoch {}) from {} (a save was interrupted)",
        best.display(),
        p.epochs_done,
        source.display()
    )))
}
