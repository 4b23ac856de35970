//! # neka-common
//!
//! The shared layer of the neka model zoo: everything a model needs besides its own
//! layers. How to add it to a project, train any candle model with its `Trainer` and load
//! weights: the [README](https://github.com/neka-rs/neka/tree/main/crates/neka-common#readme)
//! (its examples run as doctests).
//!
//! | module | what |
//! |---|---|
//! | [`error`] | the one error type of the zoo's library crates (re-exported by each) |
//! | [`device`] | `--device auto\|cpu\|cuda[:N]\|metal` |
//! | [`rng`], [`init`] | one seed for init, dropout and shuffling; seeded `VarBuilder` |
//! | [`nn`] | PyTorch-initialised `linear`, seeded `Dropout` |
//! | [`data`] | the data of every task: IDX, text and CoNLL-U readers; MNIST / Fashion-MNIST splits, UD EWT tagging, Multi30k parallel text, character streams; batching (bucketed for sequences) |
//! | [`kernels`] | the CPU kernels: the one adapter to candle's custom ops, the scoped kernel-or-candle switch ([`kernels::KernelPath`]), GEMM, thread pool, SIMD; the dense-layer, cross-entropy and AdamW kernels |
//! | [`vocab`] | token ↔ id maps with specials, min frequency, JSON |
//! | [`loss`] | masked cross-entropy (padding ignored), label smoothing |
//! | [`optim`] | one file per optimizer (AdamW, SGD+momentum, Adadelta, RMSprop) behind `UpdateRule`, `schedule/` (one file per LR schedule), gradient clipping, parameters vs buffers |
//! | [`train`] | the training loop shared by every model, one concept per file: the model trait, config, monitored metric, reports, the loop, one epoch, resume, evaluation, weight averaging, progress, Ctrl-C |
//! | [`checkpoint`] | a model directory: the record, its input normalisation, safetensors files with strict loading, writing (the weights file as the one commit point) and reading |
//! | [`files`] | atomic writes, JSON files |
//! | [`check`] | range checks for model config fields |
//! | [`finite`] | a loaded model must answer in finite numbers: the load-time probe, the per-answer check |
//! | [`run_dir`] | a run directory's lock, the swap of its `checkpoint/` folder and its repair after an interrupted run |
//! | [`metrics`] | `metrics.jsonl`/`.csv`, PNG curves, confusion matrix, corpus BLEU, peak memory |
//! | `plot` (feature) | the PNG figures (curves, heatmaps, image grids) and the drawing primitives the lecture's figures (neka-lecture) build on |
//! | `hub` (feature) | pretrained weights from the Hugging Face Hub |
//!
//! Features: `plot` (PNG figures, `curves.png`), `progress` (the progress bar) and `ctrlc` (Ctrl-C
//! saves a checkpoint) are on by default; `default-features = false` leaves the layers' needs
//! only (no plotters, indicatif or ctrlc). `hub` (off by default) adds the Hub downloads.

#![warn(missing_docs)]

pub mod check;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod files;
pub mod finite;
#[cfg(feature = "hub")]
pub mod hub;
pub mod init;
pub mod kernels;
pub mod loss;
pub mod metrics;
pub mod nn;
pub mod optim;
#[cfg(feature = "plot")]
pub mod plot;
pub mod rng;
pub mod run_dir;
pub mod train;
pub mod vocab;

pub use error::{Error, Result};

/// The crate README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
