//! What training and evaluation measure, by concern: per-epoch [`history`] (`metrics.jsonl`,
//! `metrics.csv`), the `curves` PNG and plotting helpers (feature `plot`), the [`confusion`] matrix, corpus
//! [`bleu`], and [`memory`] use. Everything is re-exported here (`neka_common::metrics::…`).

pub mod bleu;
pub mod confusion;
#[cfg(feature = "plot")]
pub mod curves;
pub mod history;
pub mod memory;

pub use bleu::{corpus_bleu, Bleu};
pub use confusion::{ClassScores, ConfusionMatrix};
#[cfg(feature = "plot")]
pub use curves::{plot_heatmap, plot_history, plot_lines, Series};
pub use history::{history_csv, write_history, EpochMetrics, EvalMetrics, Running, CSV_COLUMNS};
pub use memory::peak_rss_bytes;
