//! The training curves PNG (`curves.png`), and the plotting helpers the examples use.

use super::EpochMetrics;
use crate::Result;
use std::path::Path;

pub use crate::plot::{plot_heatmap, plot_lines, Series};

/// Plots loss and accuracy against epoch (train and validation) to `path`.
pub fn plot_history(path: &Path, history: &[EpochMetrics]) -> Result<()> {
    let pick = |f: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|m| f(m).map(|v| (m.epoch as f64, v)))
            .collect()
    };
    plot_lines(
        path,
        "epoch",
        &[
            (
                "loss",
                "cross-entropy",
                vec![
                    Series {
                        label: "train",
                        points: pick(&|m| Some(m.train_loss)),
                    },
                    Series {
                        label: "validation",
                        points: pick(&|m| m.val_loss),
                    },
                ],
            ),
            (
                "accuracy",
                "accuracy",
                vec![
                    Series {
                        label: "train",
                        points: pick(&|m| Some(m.train_accuracy)),
                    },
                    Series {
                        label: "validation",
                        points: pick(&|m| m.val_accuracy),
                    },
                ],
            ),
        ],
    )
}
