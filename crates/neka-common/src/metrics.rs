//! Per-epoch metrics: `metrics.jsonl`, `metrics.csv` and a PNG plot of the curves.

use crate::checkpoint::write_atomic;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What one epoch measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Optimizer steps so far.
    pub step: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// Training throughput: [`crate::train::StepOutput::count`] per second (examples, or
    /// tokens for sequence models — see [`crate::train::TrainModel::count_unit`]), including
    /// data preparation.
    pub samples_per_sec: f64,
    /// Wall time of the epoch (training and validation), seconds.
    pub seconds: f64,
    /// Metrics added by an epoch hook ([`crate::train::Trainer::fit_with`]), e.g. BLEU.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, f64>,
}

/// Accuracy/loss over a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub loss: f64,
    pub accuracy: f64,
    pub count: usize,
}

/// Running sums for an epoch (kept in the resume state, so a resumed epoch reports the
/// same numbers as an uninterrupted one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Running {
    pub loss_sum: f64,
    pub correct: f64,
    pub count: usize,
    pub seconds: f64,
}

impl Running {
    pub fn add(&mut self, mean_loss: f64, correct: f64, count: usize) {
        self.loss_sum += mean_loss * count as f64;
        self.correct += correct;
        self.count += count;
    }
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count.max(1) as f64
    }
    pub fn accuracy(&self) -> f64 {
        self.correct / self.count.max(1) as f64
    }
}

/// The first columns of `metrics.csv`; the hook's extra metrics follow, sorted by name.
pub const CSV_COLUMNS: [&str; 9] = [
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "samples_per_sec",
    "seconds",
];

/// `metrics.csv`'s text: [`CSV_COLUMNS`], then one column per extra metric of any epoch
/// (`val_bleu`, `val_perplexity`, …, named `val_<name>` and sorted), empty where an epoch
/// lacks it.
pub fn history_csv(history: &[EpochMetrics]) -> String {
    let extra: std::collections::BTreeSet<&str> = history
        .iter()
        .flat_map(|m| m.extra.keys().map(String::as_str))
        .collect();
    let mut csv = CSV_COLUMNS.join(",");
    for k in &extra {
        csv.push_str(&format!(",val_{k}"));
    }
    csv.push('\n');
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for m in history {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}",
            m.epoch,
            m.step,
            m.lr,
            m.train_loss,
            m.train_accuracy,
            opt(m.val_loss),
            opt(m.val_accuracy),
            m.samples_per_sec,
            m.seconds
        ));
        for k in &extra {
            csv.push(',');
            csv.push_str(&opt(m.extra.get(*k).copied()));
        }
        csv.push('\n');
    }
    csv
}

/// Rewrites `metrics.jsonl` and `metrics.csv` ([`history_csv`]) in `dir` from the full history.
pub fn write_history(dir: &Path, history: &[EpochMetrics]) -> Result<()> {
    let mut jsonl = String::new();
    for m in history {
        jsonl.push_str(&serde_json::to_string(m).expect("metrics serialise"));
        jsonl.push('\n');
    }
    write_atomic(&dir.join("metrics.jsonl"), jsonl.as_bytes())?;
    write_atomic(&dir.join("metrics.csv"), history_csv(history).as_bytes())
}

pub use crate::plot::{plot_heatmap, plot_lines, Series};

/// Counts of (gold, predicted) label pairs, with per-class precision / recall / F1 and a
/// heatmap PNG. Rows are gold labels, columns predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    pub labels: Vec<String>,
    pub counts: Vec<Vec<u64>>,
}

/// One class's scores in a [`ConfusionMatrix`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
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
    /// with the raw counts written in the cells.
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

/// Corpus BLEU (Papineni et al. 2002) as sacreBLEU computes it with `--tokenize none`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bleu {
    /// 0–100.
    pub score: f64,
    /// Clipped n-gram matches, n = 1..4.
    pub matches: [usize; 4],
    /// Hypothesis n-grams, n = 1..4.
    pub totals: [usize; 4],
    /// Brevity penalty `min(1, exp(1 − r/c))`.
    pub brevity_penalty: f64,
    pub hyp_len: usize,
    pub ref_len: usize,
}

/// Corpus BLEU-4 of tokenized hypotheses against one reference each:
/// `BLEU = BP · exp(¼ Σ_n log p_n)`, `p_n` = clipped n-gram matches / hypothesis n-grams summed
/// over the corpus, `BP = exp(1 − r/c)` when the hypotheses are shorter (`c < r`). A `p_n` with
/// no match is smoothed as sacreBLEU's default `exp` method does (`1 / (2^k · total_n)` for the
/// k-th such n), so the score agrees with `sacrebleu --tokenize none`.
pub fn corpus_bleu<S: AsRef<str>>(hyps: &[Vec<S>], refs: &[Vec<S>]) -> Bleu {
    use std::collections::HashMap;
    let mut matches = [0usize; 4];
    let mut totals = [0usize; 4];
    let (mut hyp_len, mut ref_len) = (0, 0);
    for (h, r) in hyps.iter().zip(refs) {
        let h: Vec<&str> = h.iter().map(AsRef::as_ref).collect();
        let r: Vec<&str> = r.iter().map(AsRef::as_ref).collect();
        hyp_len += h.len();
        ref_len += r.len();
        for n in 1..=4 {
            let mut rc: HashMap<&[&str], usize> = HashMap::new();
            for g in r.windows(n) {
                *rc.entry(g).or_default() += 1;
            }
            let mut hc: HashMap<&[&str], usize> = HashMap::new();
            for g in h.windows(n) {
                *hc.entry(g).or_default() += 1;
            }
            matches[n - 1] += hc
                .iter()
                .map(|(g, c)| (*c).min(rc.get(g).copied().unwrap_or(0)))
                .sum::<usize>();
            totals[n - 1] += h.len().saturating_sub(n - 1);
        }
    }
    let brevity_penalty = if hyp_len == 0 {
        0.0
    } else if hyp_len < ref_len {
        (1.0 - ref_len as f64 / hyp_len as f64).exp()
    } else {
        1.0
    };
    let score = if totals.contains(&0) {
        0.0
    } else {
        let mut smooth = 1.0;
        let log_sum: f64 = (0..4)
            .map(|i| {
                let p = if matches[i] == 0 {
                    smooth *= 2.0;
                    1.0 / (smooth * totals[i] as f64)
                } else {
                    matches[i] as f64 / totals[i] as f64
                };
                p.ln()
            })
            .sum();
        100.0 * brevity_penalty * (log_sum / 4.0).exp()
    };
    Bleu {
        score,
        matches,
        totals,
        brevity_penalty,
        hyp_len,
        ref_len,
    }
}

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

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_gets_one_column_per_extra_metric() {
        let epoch = |e: usize, extra: &[(&str, f64)]| EpochMetrics {
            epoch: e,
            step: 10 * e,
            lr: 0.1,
            train_loss: 1.0,
            train_accuracy: 0.5,
            val_loss: Some(2.0),
            val_accuracy: None,
            samples_per_sec: 3.0,
            seconds: 4.0,
            extra: extra.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        let csv = history_csv(&[
            epoch(1, &[("bleu", 12.5)]),
            epoch(2, &[("perplexity", 7.0), ("bleu", 13.0)]),
        ]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            format!("{},val_bleu,val_perplexity", CSV_COLUMNS.join(","))
        );
        assert_eq!(lines[1], "1,10,0.1,1,0.5,2,,3,4,12.5,");
        assert_eq!(lines[2], "2,20,0.1,1,0.5,2,,3,4,13,7");
        // Without extras the file is what it always was.
        assert_eq!(
            history_csv(&[epoch(1, &[])]).lines().next(),
            Some(CSV_COLUMNS.join(",").as_str())
        );
    }

    #[test]
    fn bleu_matches_sacrebleu_on_known_cases() {
        // Expected values: sacrebleu 2.6.0, corpus_bleu(hyps, [refs], tokenize="none").
        let tok = |v: &[&str]| -> Vec<Vec<String>> {
            v.iter()
                .map(|s| s.split(' ').map(String::from).collect())
                .collect()
        };
        type Case<'a> = (&'a [&'a str], &'a [&'a str], f64, [usize; 4]);
        let cases: [Case; 3] = [
            (
                &["the cat sat on the mat .", "two dogs run in the park ."],
                &[
                    "the cat is on the mat .",
                    "two dogs are running in a park .",
                ],
                29.310459788521953,
                [11, 6, 2, 1],
            ),
            (
                &["a man rides a bike", "hello"],
                &["a man is riding a bicycle down the road", "hello world"],
                10.54969271144651,
                [4, 1, 0, 0],
            ),
            (
                &["the the the the the the the"],
                &["the cat is on the mat"],
                7.809849842300637,
                [2, 0, 0, 0],
            ),
        ];
        for (h, r, want, m) in cases {
            let b = corpus_bleu(&tok(h), &tok(r));
            assert!((b.score - want).abs() < 1e-9, "{} vs {want}", b.score);
            assert_eq!(b.matches, m);
        }
        let same = tok(&["a b c d e"]);
        assert!((corpus_bleu(&same, &same).score - 100.0).abs() < 1e-9);
        assert_eq!(corpus_bleu(&tok(&["a b"]), &tok(&["a b c d"])).score, 0.0);
    }

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
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cm.png");
        m.plot(&p, "test").unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() > 1000);
    }
}
