//! Per-epoch metrics: `metrics.jsonl`, `metrics.csv` and a PNG plot of the curves.

use crate::checkpoint::write_atomic;
use crate::{Error, Result};
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
    /// Training throughput (examples per second, including data preparation).
    pub samples_per_sec: f64,
    /// Wall time of the epoch (training and validation), seconds.
    pub seconds: f64,
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

/// Rewrites `metrics.jsonl` and `metrics.csv` in `dir` from the full history.
pub fn write_history(dir: &Path, history: &[EpochMetrics]) -> Result<()> {
    let mut jsonl = String::new();
    let mut csv = String::from(
        "epoch,step,lr,train_loss,train_accuracy,val_loss,val_accuracy,samples_per_sec,seconds\n",
    );
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for m in history {
        jsonl.push_str(&serde_json::to_string(m).expect("metrics serialise"));
        jsonl.push('\n');
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
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
    }
    write_atomic(&dir.join("metrics.jsonl"), jsonl.as_bytes())?;
    write_atomic(&dir.join("metrics.csv"), csv.as_bytes())
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // DejaVu Sans (Bitstream Vera licence, see assets/), so plots need no system fonts.
        let _ = plotters::style::register_font(
            "sans-serif",
            plotters::style::FontStyle::Normal,
            include_bytes!("../assets/DejaVuSans.ttf"),
        );
    });
}

/// A named series of (x, y) points for [`plot_lines`].
pub struct Series<'a> {
    pub label: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// Draws one or more line charts side by side into a PNG: each panel is
/// `(title, y label, series)`. Shared by the training curves and the examples' plots.
pub fn plot_lines(path: &Path, x_label: &str, panels: &[(&str, &str, Vec<Series>)]) -> Result<()> {
    use plotters::prelude::*;
    register_font();
    let perr = |e: &dyn std::fmt::Display| Error::Plot {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = path.with_extension("tmp.png");
    {
        let width = 520 * panels.len().max(1) as u32;
        let root = BitMapBackend::new(&tmp, (width, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| perr(&e))?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (area, (title, y_label, series)) in areas.iter().zip(panels) {
            let pts = series.iter().flat_map(|s| s.points.iter());
            let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
            for &(x, y) in pts.filter(|p| p.1.is_finite()) {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
            if x0 > x1 {
                (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
            }
            if x1 - x0 < 1e-9 {
                x0 -= 0.5;
                x1 += 0.5;
            }
            let pad = ((y1 - y0) * 0.08).max(1e-6);
            let mut chart = ChartBuilder::on(area)
                .caption(*title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
                .map_err(|e| perr(&e))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(*y_label)
                .draw()
                .map_err(|e| perr(&e))?;
            for (i, s) in series.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                // Long, dense series (per-step curves): thin lines, no markers. Thick lines
                // with steep slopes overshoot the chart in plotters' bitmap backend.
                let dense = s.points.len() > 100;
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().copied(),
                        color.stroke_width(if dense { 1 } else { 2 }),
                    ))
                    .map_err(|e| perr(&e))?
                    .label(s.label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                if !dense {
                    chart
                        .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(|e| perr(&e))?;
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| perr(&e))?;
        }
        root.present().map_err(|e| perr(&e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
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
