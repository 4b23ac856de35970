//! Bar charts (parameter counts, MACs, receptive fields): panels side by side, the value
//! written on every bar, a linear or a log₁₀ value axis. [`plot_bars`] draws one bar per
//! label; [`plot_grouped_bars`] one bar per series in each group, with a legend on top.

use neka_common::plot::{centred_text, draw_png, plot_error, register_font};
use neka_common::{Error, Result};
use std::path::Path;

/// One bar. `label` may hold several lines (`\n`); `text` replaces the value written above
/// the bar (default: the value with thousands separators).
#[derive(Debug, Clone)]
pub struct Bar {
    /// Text under the axis (`\n` for several lines).
    pub label: String,
    /// Height of the bar (> 0 on a log scale).
    pub value: f64,
    /// Written above the bar instead of the value with thousands separators.
    pub text: Option<String>,
    /// RGB fill; `None` is the default blue.
    pub colour: Option<(u8, u8, u8)>,
}

impl Bar {
    /// A bar of `value` labelled `label`, default colour and value text.
    pub fn new(label: impl Into<String>, value: f64) -> Self {
        Self {
            label: label.into(),
            value,
            text: None,
            colour: None,
        }
    }
    /// Writes `text` above the bar instead of the value.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
    /// Fills the bar with `rgb`.
    pub fn colour(mut self, rgb: (u8, u8, u8)) -> Self {
        self.colour = Some(rgb);
        self
    }
}

/// A panel of bars. With `log_scale` the value axis is log₁₀ (values must be > 0).
#[derive(Debug, Clone)]
pub struct BarPanel {
    /// Title above the panel.
    pub title: String,
    /// Label of the value axis.
    pub y_label: String,
    /// The bars, left to right.
    pub bars: Vec<Bar>,
    /// Log₁₀ value axis (values must be > 0).
    pub log_scale: bool,
}

impl BarPanel {
    /// A panel with a linear value axis.
    pub fn new(title: impl Into<String>, y_label: impl Into<String>, bars: Vec<Bar>) -> Self {
        Self {
            title: title.into(),
            y_label: y_label.into(),
            bars,
            log_scale: false,
        }
    }
    /// Switches the value axis to log₁₀ when `on`.
    pub fn log_scale(mut self, on: bool) -> Self {
        self.log_scale = on;
        self
    }
}

/// One series of a grouped panel: one value per group.
#[derive(Debug, Clone)]
pub struct BarSeries {
    /// Name of the series in the legend.
    pub label: String,
    /// RGB fill of the series' bars and legend square.
    pub colour: (u8, u8, u8),
    /// One value per group, in the order of [`GroupedPanel::groups`].
    pub values: Vec<f64>,
}

/// A panel of grouped bars: for each group (a label under the axis), one bar per series.
#[derive(Debug, Clone)]
pub struct GroupedPanel {
    /// Title above the panel.
    pub title: String,
    /// Label of the value axis.
    pub y_label: String,
    /// Group labels under the axis, left to right.
    pub groups: Vec<String>,
    /// The series: each draws one bar in every group, in this order.
    pub series: Vec<BarSeries>,
    /// Log₁₀ value axis (values must be > 0).
    pub log_scale: bool,
}

/// `16981120` → `16,981,120` (rounded to an integer).
pub fn thousands(v: f64) -> String {
    let n = v.round() as i128;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// An axis tick: `1`, `500`, `20k`, `1.5M`, `1G`.
fn tick(v: f64) -> String {
    let a = v.abs();
    let (d, suffix) = match a {
        a if a >= 1e9 => (1e9, "G"),
        a if a >= 1e6 => (1e6, "M"),
        a if a >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let x = v / d;
    let s = if (x - x.round()).abs() < 1e-6 {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.1}")
    };
    format!("{s}{suffix}")
}

const PANEL_H: u32 = 470;
const DEFAULT_COLOUR: (u8, u8, u8) = (70, 130, 200);

/// A bar as drawn: centre and half-width in slot units (slot `i` is centred on `i`).
struct Drawn {
    x: f64,
    half: f64,
    value: f64,
    colour: (u8, u8, u8),
    text: String,
    text_pt: u32,
}

/// A panel as drawn: its bars, the labels under the axis (at slot centres), a legend.
struct Layout {
    title: String,
    y_label: String,
    log_scale: bool,
    slots: usize,
    bars: Vec<Drawn>,
    labels: Vec<String>,
    legend: Vec<(String, (u8, u8, u8))>,
    width: u32,
}

impl Layout {
    fn single(p: &BarPanel) -> Self {
        Self {
            title: p.title.clone(),
            y_label: p.y_label.clone(),
            log_scale: p.log_scale,
            slots: p.bars.len(),
            bars: p
                .bars
                .iter()
                .enumerate()
                .map(|(i, b)| Drawn {
                    x: i as f64,
                    half: 0.32,
                    value: b.value,
                    colour: b.colour.unwrap_or(DEFAULT_COLOUR),
                    text: b.text.clone().unwrap_or_else(|| thousands(b.value)),
                    text_pt: 14,
                })
                .collect(),
            labels: p.bars.iter().map(|b| b.label.clone()).collect(),
            legend: Vec::new(),
            width: 440,
        }
    }
    fn grouped(p: &GroupedPanel) -> Self {
        let k = p.series.len().max(1) as f64;
        let span = 0.84; // of each slot, shared by the series' bars
        let mut bars = Vec::new();
        for (j, s) in p.series.iter().enumerate() {
            for (i, &v) in s.values.iter().enumerate().take(p.groups.len()) {
                bars.push(Drawn {
                    x: i as f64 - span / 2.0 + span * (j as f64 + 0.5) / k,
                    half: 0.4 * span / k,
                    value: v,
                    colour: s.colour,
                    text: thousands(v),
                    text_pt: 12,
                });
            }
        }
        let per_bar = 30u32;
        Self {
            title: p.title.clone(),
            y_label: p.y_label.clone(),
            log_scale: p.log_scale,
            slots: p.groups.len(),
            bars,
            labels: p.groups.clone(),
            legend: p
                .series
                .iter()
                .map(|s| (s.label.clone(), s.colour))
                .collect(),
            width: (110 + p.groups.len() as u32 * (p.series.len() as u32 * per_bar + 18)).max(440),
        }
    }
}

/// Draws `panels` side by side into a PNG under `title`. Each bar has its value written
/// above it and its (multi-line) label below the axis.
pub fn plot_bars(path: &Path, title: &str, panels: &[BarPanel]) -> Result<()> {
    draw(path, title, panels.iter().map(Layout::single).collect())
}

/// Draws grouped bar panels side by side into a PNG under `title`: a legend of the series
/// under each panel's title, each bar's value written above it, the group labels below.
pub fn plot_grouped_bars(path: &Path, title: &str, panels: &[GroupedPanel]) -> Result<()> {
    for p in panels {
        if let Some(s) = p.series.iter().find(|s| s.values.len() != p.groups.len()) {
            return Err(Error::Plot {
                path: path.to_path_buf(),
                msg: format!(
                    "panel `{}`: series `{}` has {} values for {} groups",
                    p.title,
                    s.label,
                    s.values.len(),
                    p.groups.len()
                ),
            });
        }
    }
    draw(path, title, panels.iter().map(Layout::grouped).collect())
}

fn draw(path: &Path, title: &str, panels: Vec<Layout>) -> Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    register_font();
    let perr = |e: &dyn std::fmt::Display| plot_error(path, e);
    for p in &panels {
        if p.bars.is_empty() {
            return Err(perr(&format!("panel `{}` has no bars", p.title)));
        }
        let bad = p
            .bars
            .iter()
            .find(|b| !b.value.is_finite() || (p.log_scale && b.value <= 0.0));
        if let Some(b) = bad {
            return Err(perr(&format!(
                "panel `{}`: a bar has value {} (log scale needs values > 0)",
                p.title, b.value
            )));
        }
    }
    let label_lines = panels
        .iter()
        .flat_map(|p| p.labels.iter().map(|l| l.lines().count()))
        .max()
        .unwrap_or(1) as u32;
    let label_h = 14 + 17 * label_lines;
    let legend_h = if panels.iter().any(|p| !p.legend.is_empty()) {
        22 * panels.iter().map(|p| p.legend.len()).max().unwrap_or(0) as u32 + 6
    } else {
        0
    };
    let top = 40u32;
    let size = (
        panels.iter().map(|p| p.width).sum::<u32>().max(200),
        top + 30 + legend_h + PANEL_H + label_h,
    );
    draw_png(path, size, |root| {
        let font = |pt: u32| ("sans-serif", pt as f64).into_font();
        let centre = Pos::new(HPos::Center, VPos::Center);
        centred_text(root, title, (size.0 as i32 / 2, 20), 20, path)?;
        let mut rest = root.margin(top, 0, 0, 0);
        for p in &panels {
            let (area, right) = rest.split_horizontally(p.width);
            rest = right;
            let (x0, y0) = area.get_base_pixel();
            let w = p.width as i32;
            root.draw(&Text::new(
                p.title.clone(),
                (x0 + w / 2 + 20, y0 + 12),
                font(16).color(&BLACK).pos(centre),
            ))
            .map_err(|e| perr(&e))?;
            // the legend: one line per series, a colour square and the label
            let lw = p
                .legend
                .iter()
                .map(|(l, _)| font(13).box_size(l).map_or(0, |(w, _)| w as i32))
                .max()
                .unwrap_or(0)
                + 22;
            for (k, (label, (r, g, b))) in p.legend.iter().enumerate() {
                let (lx, ly) = (x0 + w / 2 + 20 - lw / 2, y0 + 36 + 22 * k as i32);
                root.draw(&Rectangle::new(
                    [(lx, ly - 7), (lx + 14, ly + 7)],
                    RGBColor(*r, *g, *b).filled(),
                ))
                .map_err(|e| perr(&e))?;
                root.draw(&Text::new(
                    label.clone(),
                    (lx + 22, ly),
                    font(13)
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(|e| perr(&e))?;
            }
            let plot = area.margin(30 + legend_h, 0, 0, 0);
            let max = p.bars.iter().map(|b| b.value).fold(f64::MIN, f64::max);
            let min = p.bars.iter().map(|b| b.value).fold(f64::MAX, f64::min);
            let x_range = -0.5..(p.slots as f64 - 0.5);
            let mut builder = ChartBuilder::on(&plot);
            builder
                .margin(10)
                .margin_right(24)
                .x_label_area_size(label_h)
                .y_label_area_size(62);
            // each bar's (top, bottom) in pixels, for its value and label
            let mut anchors = Vec::new();
            let mut slot_bottoms = Vec::new();
            macro_rules! chart_body {
                ($chart:expr, $base:expr, $y_desc:expr) => {{
                    let mut chart = $chart;
                    chart
                        .configure_mesh()
                        .disable_x_mesh()
                        .light_line_style(WHITE)
                        .x_labels(0)
                        .y_desc($y_desc)
                        .y_label_formatter(&|v| tick(*v))
                        .draw()
                        .map_err(|e| perr(&e))?;
                    for b in &p.bars {
                        let (r, g, bl) = b.colour;
                        chart
                            .draw_series([Rectangle::new(
                                [(b.x - b.half, $base), (b.x + b.half, b.value)],
                                RGBColor(r, g, bl).filled(),
                            )])
                            .map_err(|e| perr(&e))?;
                        anchors.push(chart.backend_coord(&(b.x, b.value)));
                    }
                    for i in 0..p.slots {
                        slot_bottoms.push(chart.backend_coord(&(i as f64, $base)));
                    }
                }};
            }
            if p.log_scale {
                let lo = 10f64.powf(min.log10().floor());
                let hi = 10f64.powf(max.log10().ceil()).max(lo * 10.0) * 2.5;
                chart_body!(
                    builder
                        .build_cartesian_2d(x_range, (lo..hi).log_scale())
                        .map_err(|e| perr(&e))?,
                    lo,
                    format!("{} (log scale)", p.y_label)
                );
            } else {
                chart_body!(
                    builder
                        .build_cartesian_2d(x_range, 0.0..(max * 1.12).max(1e-9))
                        .map_err(|e| perr(&e))?,
                    0.0,
                    p.y_label.as_str()
                );
            }
            for (b, (vx, vy)) in p.bars.iter().zip(anchors) {
                root.draw(&Text::new(
                    b.text.clone(),
                    (vx, vy - 4),
                    font(b.text_pt)
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                ))
                .map_err(|e| perr(&e))?;
            }
            for (label, (bx, by)) in p.labels.iter().zip(slot_bottoms) {
                for (k, line) in label.lines().enumerate() {
                    root.draw(&Text::new(
                        line.to_string(),
                        (bx, by + 8 + 17 * k as i32),
                        font(13)
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Center, VPos::Top)),
                    ))
                    .map_err(|e| perr(&e))?;
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_bar_charts() {
        assert_eq!(thousands(16_981_120.0), "16,981,120");
        assert_eq!(thousands(320.0), "320");
        assert_eq!(thousands(-1234.0), "-1,234");
        assert_eq!(tick(1e6), "1M");
        assert_eq!(tick(2.5e7), "25M");
        assert_eq!(tick(1500.0), "1.5k");
        assert_eq!(tick(10.0), "10");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.png");
        let lin = BarPanel::new(
            "linear",
            "MACs",
            vec![Bar::new("a", 3.0), Bar::new("b\nc", 5.0).text("five")],
        );
        let log = BarPanel::new(
            "log",
            "params",
            vec![Bar::new("dense", 1.7e7), Bar::new("conv", 320.0)],
        )
        .log_scale(true);
        plot_bars(&path, "bars", &[lin, log]).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 100);
        let bad = BarPanel::new("bad", "y", vec![Bar::new("zero", 0.0)]).log_scale(true);
        let err = plot_bars(&path, "bad", &[bad]).unwrap_err();
        assert!(err.to_string().contains("needs values > 0"), "{err}");

        let series = |label: &str, values: Vec<f64>| BarSeries {
            label: label.into(),
            colour: (200, 80, 60),
            values,
        };
        let grouped = GroupedPanel {
            title: "g".into(),
            y_label: "y".into(),
            groups: vec!["one".into(), "two".into()],
            series: vec![series("s", vec![1.0, 2.0]), series("t", vec![3.0, 4.0])],
            log_scale: false,
        };
        plot_grouped_bars(&path, "grouped", std::slice::from_ref(&grouped)).unwrap();
        let mut short = grouped;
        short.series[1].values.pop();
        let err = plot_grouped_bars(&path, "bad", &[short]).unwrap_err();
        assert!(err.to_string().contains("1 values for 2 groups"), "{err}");
    }
}
