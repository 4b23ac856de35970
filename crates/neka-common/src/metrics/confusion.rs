//! The confusion matrix of a classifier or tagger: counts, per-class scores, a heatmap.

#[cfg(feature = "plot")]
use crate::plot::plot_heatmap;
#[cfg(feature = "plot")]
use crate::Result;
use serde::{Deserialize, Serialize};
#[cfg(feature = "plot")]
use std::path::Path;

/// Counts of (gold, predicted) label pairs, with per-class precision / recall / F1 and a
/// heatmap PNG. Rows are gold labels, columns predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// Class names, index = class id (rows and columns in this order).
    pub labels: Vec<String>,
    /// `counts[gold][predicted]`.
    pub counts: Vec<Vec<u64>>,
}

/// One class's scores in a [`ConfusionMatrix`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    /// The class name.
    pub label: String,
    /// `tp / (tp + fp)`; 0 when nothing was predicted as this class.
    pub precision: f64,
    /// `tp / (tp + fn)`; 0 when the class never occurs.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Gold occurrences.
    pub support: u64,
}

impl ConfusionMatrix {
    /// An empty matrix over `labels`.
    pub fn new(labels: Vec<String>) -> Self {
        let n = labels.len();
        Self {
            labels,
            counts: vec![vec![0; n]; n],
        }
    }

    /// Records one prediction (ids index `labels`).
    pub fn add(&mut self, gold: usize, predicted: usize) {
        self.counts[gold][predicted] += 1;
    }

    /// Predictions recorded.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Fraction on the diagonal.
    pub fn accuracy(&self) -> f64 {
        let hit: u64 = (0..self.labels.len()).map(|i| self.counts[i][i]).sum();
        hit as f64 / self.total().max(1) as f64
    }

    /// Precision, recall, F1 and support of every class.
    pub fn scores(&self) -> Vec<ClassScores> {
        let n = self.labels.len();
        (0..n)
            .map(|c| {
                let tp = self.counts[c][c] as f64;
                let gold: u64 = self.counts[c].iter().sum();
                let pred: u64 = (0..n).map(|r| self.counts[r][c]).sum();
                let precision = if pred > 0 { tp / pred as f64 } else { 0.0 };
                let recall = if gold > 0 { tp / gold as f64 } else { 0.0 };
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassScores {
                    label: self.labels[c].clone(),
                    precision,
                    recall,
                    f1,
                    support: gold,
                }
            })
            .collect()
    }

    /// A text table: one row per class, then the accuracy.
    pub fn report(&self) -> String {
        let mut out = format!(
            "{:<10} {:>9} {:>9} {:>9} {:>9}\n",
            "label", "precision", "recall", "f1", "support"
        );
        for s in self.scores() {
            out += &format!(
                "{:<10} {:>9.4} {:>9.4} {:>9.4} {:>9}\n",
                s.label, s.precision, s.recall, s.f1, s.support
            );
        }
        out += &format!(
            "{:<10} {:>39.4} {:>9}\n",
            "accuracy",
            self.accuracy(),
            self.total()
        );
        out
    }

    /// Heatmap PNG: each row normalised by its gold count (so the diagonal is recall),
    /// with the raw counts written in the cells (feature `plot`).
    #[cfg(feature = "plot")]
    pub fn plot(&self, path: &Path, title: &str) -> Result<()> {
        let shares: Vec<Vec<f32>> = self
            .counts
            .iter()
            .map(|row| {
                let gold = row.iter().sum::<u64>().max(1) as f32;
                row.iter().map(|&v| v as f32 / gold).collect()
            })
            .collect();
        let text: Vec<Vec<String>> = self
            .counts
            .iter()
            .map(|row| {
                row.iter()
                    .map(|&v| if v > 0 { v.to_string() } else { String::new() })
                    .collect()
            })
            .collect();
        plot_heatmap(
            path,
            title,
            "rows: gold, columns: predicted",
            &self.labels,
            &self.labels,
            &shares,
            Some(&text),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_scores_and_plot() {
        let mut m = ConfusionMatrix::new(vec!["A".into(), "B".into(), "C".into()]);
        for (g, p) in [(0, 0), (0, 0), (0, 1), (1, 1), (2, 0)] {
            m.add(g, p);
        }
        assert_eq!(m.total(), 5);
        assert!((m.accuracy() - 0.6).abs() < 1e-12);
        let s = m.scores();
        // A: tp 2, predicted 3, gold 3.
        assert!(
            (s[0].precision - 2.0 / 3.0).abs() < 1e-12 && (s[0].recall - 2.0 / 3.0).abs() < 1e-12
        );
        assert_eq!((s[1].precision, s[1].recall), (0.5, 1.0));
        assert_eq!(
            (s[2].precision, s[2].recall, s[2].f1, s[2].support),
            (0.0, 0.0, 0.0, 1)
        );
        assert!(m.report().contains("accuracy"));
        #[cfg(feature = "plot")]
        {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("cm.png");
            m.plot(&p, "test").unwrap();
            assert!(std::fs::metadata(&p).unwrap().len() > 1000);
        }
    }
}
