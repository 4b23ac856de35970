//! Typed errors for neka's library crates.
//!
//! Every error that comes from a file names the file, and says what is wrong and,
//! where there is one, how to fix it.

use std::path::PathBuf;

/// The result type used across neka's library crates.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in neka-common (and the model crates built on it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from candle (shape mismatch, unsupported op, device error, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A data file that exists but does not hold what it should.
    #[error("{}: {msg}", path.display())]
    BadData {
        /// The data file.
        path: PathBuf,
        /// What is wrong with its contents.
        msg: String,
    },

    /// A malformed line in a text data file (CoNLL-U, parallel text).
    #[error("{}:{line}: {msg}", path.display())]
    BadLine {
        /// The text file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        msg: String,
    },

    /// A dataset could not be found in any of the places neka looks.
    #[error("{0}")]
    DataNotFound(String),

    /// A checkpoint that cannot be loaded into the model (missing, misshaped or extra tensor, bad metadata).
    #[error("{}: {msg}", path.display())]
    Checkpoint {
        /// The file that does not load (weights, `config.json`, a vocabulary) or its directory.
        path: PathBuf,
        /// What does not fit, e.g. the tensor and both shapes, or the bad metadata.
        msg: String,
    },

    /// A device that was asked for but is not available in this build or on this machine.
    #[error("{0}")]
    Device(String),

    /// An invalid configuration value (flag, config field).
    #[error("invalid {field}: {msg}")]
    Config {
        /// The flag or config field, e.g. `lr`, `padding`.
        field: String,
        /// Why the value is invalid: what was given and the accepted range.
        msg: String,
    },

    /// Another training holds the run directory's lock.
    #[error("{} is in use by another training ({holder}): wait for it to finish, or train into another `out_dir`", dir.display())]
    RunDirInUse {
        /// The run directory.
        dir: PathBuf,
        /// Who holds the lock, as its lock file says (pid and start time).
        holder: String,
    },

    /// A resumed run (`Trainer::resume`) whose saved run differs from this one in what defines a run.
    #[error("cannot resume from {}: the saved run differs from this one in what defines it:\n{}\n             Run with the saved run's settings (only `epochs`, `lr`, `schedule`, `patience`, \
             `clip_grad_norm`, `max_batches_per_epoch` and the evaluation batch size may change), or \
             start a new run with another `out_dir`.", dir.display(), differences.iter().map(|d| format!("  - {d}")).collect::<Vec<_>>().join("\n"))]
    ResumeMismatch {
        /// The run directory resumed from.
        dir: PathBuf,
        /// One entry per difference: the setting, its saved value and this run's.
        differences: Vec<String>,
    },

    /// Training produced a NaN or infinite loss.
    #[error("{0}")]
    NonFiniteLoss(String),

    /// A saved model that loads but cannot answer: on a fixed probe input its outputs are not
    /// finite numbers (weights that are finite but extreme, e.g. 3e38, overflow). `dir` is the
    /// model directory; `msg` says what is not finite and the largest weight.
    #[error("{}: the model cannot answer: {msg}", dir.display())]
    UnusableModel {
        /// The model directory.
        dir: PathBuf,
        /// What is not finite, and the largest weight.
        msg: String,
    },

    /// A model's answer (probabilities, scores) that is not a finite number: refused instead
    /// of printed as NaN. The message says which answer and for what input.
    #[error("{0}")]
    NonFiniteOutput(String),

    /// Hugging Face Hub download failed (feature `hub`).
    #[error("{0}")]
    Hub(String),

    /// JSON (de)serialisation of a config or state file.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parse or serialisation error (with line and column).
        #[source]
        source: serde_json::Error,
    },

    /// Writing a PNG plot failed.
    #[error("plot {}: {msg}", path.display())]
    Plot {
        /// The PNG being written.
        path: PathBuf,
        /// What the drawing backend reported.
        msg: String,
    },
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`Error::BadData`] for `path`.
    pub fn bad_data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadData {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A [`Error::BadLine`] for line `line` (1-based) of `path`.
    pub fn bad_line(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        Error::BadLine {
            path: path.into(),
            line,
            msg: msg.into(),
        }
    }

    /// A [`Error::Checkpoint`] for `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A [`Error::Config`] for `field`.
    pub fn config(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            msg: msg.into(),
        }
    }
}
