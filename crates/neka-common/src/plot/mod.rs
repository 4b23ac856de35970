//! PNG plots (plotters, bitmap backend, a bundled font so no system fonts are needed): line
//! charts ([`plot_lines`]: training curves, the gradient experiments), heatmaps with labels
//! ([`plot_heatmap`]: confusion matrices, attention, LSTM gates) and grids of small images
//! ([`images::plot_image_grid`]: convolution filters, feature maps). Every plot is written to a
//! temporary file and renamed into place, so a reader never sees half a PNG.
//!
//! [`draw_png`], [`centred_text`], [`register_font`] and [`plot_error`] are public for figure
//! code outside this crate (the lecture's worked examples and bar charts in `neka-lecture`).

pub mod images;

use crate::{Error, Result};
use std::path::Path;

/// An [`Error::Plot`] naming the PNG.
pub fn plot_error(path: &Path, e: &dyn std::fmt::Display) -> Error {
    Error::Plot {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Creates `path`'s folder and returns the temporary file a plot is drawn into.
pub(crate) fn temp_png(path: &Path) -> Result<std::path::PathBuf> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(path.with_extension("tmp.png"))
}

/// Moves the finished temporary PNG into place (one rename: a reader never sees half a plot).
pub(crate) fn finish_png(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))
}

/// What a plot draws on: the whole bitmap.
pub type Canvas<'a> =
    plotters::drawing::DrawingArea<plotters::prelude::BitMapBackend<'a>, plotters::coord::Shift>;

/// Draws a white `size` PNG at `path` with `draw`, atomically (`temp_png`, then
/// `finish_png`).
pub fn draw_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Canvas<'_>) -> Result<()>,
) -> Result<()> {
    use plotters::prelude::*;
    register_font();
    let tmp = temp_png(path)?;
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, &e))?;
        draw(&root)?;
        root.present().map_err(|e| plot_error(path, &e))?;
    }
    finish_png(&tmp, path)
}

/// One line of black sans-serif text of `pt` points centred on `at` (a plot's title).
pub fn centred_text(
    root: &Canvas<'_>,
    text: &str,
    at: (i32, i32),
    pt: u32,
    path: &Path,
) -> Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let style = ("sans-serif", pt as f64).into_font().color(&BLACK);
    let centre = Pos::new(HPos::Center, VPos::Center);
    root.draw(&Text::new(text.to_string(), at, style.pos(centre)))
        .map_err(|e| plot_error(path, &e))
}

/// Registers the bundled DejaVu Sans as plotters' `sans-serif` (once per process).
pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // DejaVu Sans (Bitstream Vera licence, see assets/), so plots need no system fonts.
        let _ = plotters::style::register_font(
            "sans-serif",
            plotters::style::FontStyle::Normal,
            include_bytes!("../../assets/DejaVuSans.ttf"),
        );
    });
}

/// A named series of (x, y) points for [`plot_lines`].
pub struct Series<'a> {
    /// Name in the legend.
    pub label: &'a str,
    /// `(x, y)` points, joined in order.
    pub points: Vec<(f64, f64)>,
}

/// Where [`plot_lines_with`] puts each panel's legend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Legend {
    /// Top left corner.
    UpperLeft,
    /// Top right corner.
    UpperRight,
    /// Bottom left corner.
    LowerLeft,
    /// Bottom right corner.
    LowerRight,
    /// plotters' default.
    #[default]
    MiddleRight,
}

/// Draws one or more line charts side by side into a PNG: each panel is
/// `(title, y label, series)`. Shared by the training curves and the examples' plots.
pub fn plot_lines(path: &Path, x_label: &str, panels: &[(&str, &str, Vec<Series>)]) -> Result<()> {
    plot_lines_with(path, x_label, panels, Legend::default())
}

/// [`plot_lines`] with the legend where the curves are not.
pub fn plot_lines_with(
    path: &Path,
    x_label: &str,
    panels: &[(&str, &str, Vec<Series>)],
    legend: Legend,
) -> Result<()> {
    use plotters::prelude::*;
    register_font();
    let perr = |e: &dyn std::fmt::Display| plot_error(path, e);
    let width = 520 * panels.len().max(1) as u32;
    draw_png(path, (width, 400), |root| {
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
                .position(match legend {
                    Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
                    Legend::UpperRight => SeriesLabelPosition::UpperRight,
                    Legend::LowerLeft => SeriesLabelPosition::LowerLeft,
                    Legend::LowerRight => SeriesLabelPosition::LowerRight,
                    Legend::MiddleRight => SeriesLabelPosition::MiddleRight,
                })
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| perr(&e))?;
        }
        Ok(())
    })
}

/// Draws a matrix of values in `[0, 1]` as a heatmap PNG (white → blue), with row labels on
/// the left, column labels below (rotated), and optional text in the cells. Used for
/// confusion matrices and attention weights.
pub fn plot_heatmap(
    path: &Path,
    title: &str,
    subtitle: &str,
    row_labels: &[String],
    col_labels: &[String],
    values: &[Vec<f32>],
    cell_text: Option<&[Vec<String>]>,
) -> Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    register_font();
    let perr = |e: &dyn std::fmt::Display| plot_error(path, e);
    let (rows, cols) = (row_labels.len().max(1), col_labels.len().max(1));
    let cell = 44u32;
    let left = 20
        + 8 * row_labels
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(4) as u32;
    let bottom = 24
        + 8 * col_labels
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(4) as u32;
    let top = 60u32;
    // Wide enough for the title (20 pt, ~11 px a character) and subtitle (12 pt, ~7 px).
    let text_w = (11 * title.chars().count()).max(7 * subtitle.chars().count()) as u32 + 40;
    let size = (
        (left + cell * cols as u32 + 20).max(360).max(text_w),
        top + cell * rows as u32 + bottom,
    );
    draw_png(path, size, |root| {
        let center = Pos::new(HPos::Center, VPos::Center);
        centred_text(root, title, (size.0 as i32 / 2, 22), 20, path)?;
        centred_text(root, subtitle, (size.0 as i32 / 2, 44), 12, path)?;
        for (r, row) in values.iter().enumerate() {
            for (c, &f) in row.iter().enumerate() {
                let f = f.clamp(0.0, 1.0);
                let shade = (255.0 * (1.0 - f.sqrt())) as u8;
                let x0 = (left + cell * c as u32) as i32;
                let y0 = (top + cell * r as u32) as i32;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell as i32, y0 + cell as i32)],
                    RGBColor(shade, shade, 255).filled(),
                ))
                .map_err(|e| perr(&e))?;
                if let Some(t) = cell_text.and_then(|t| t.get(r)).and_then(|row| row.get(c)) {
                    let ink = if f > 0.4 { WHITE } else { BLACK };
                    root.draw(&Text::new(
                        t.clone(),
                        (x0 + cell as i32 / 2, y0 + cell as i32 / 2),
                        ("sans-serif", 11).into_font().color(&ink).pos(center),
                    ))
                    .map_err(|e| perr(&e))?;
                }
            }
        }
        for (i, label) in row_labels.iter().enumerate() {
            root.draw(&Text::new(
                label.clone(),
                (left as i32 - 6, (top + cell * i as u32 + cell / 2) as i32),
                ("sans-serif", 12)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(|e| perr(&e))?;
        }
        for (i, label) in col_labels.iter().enumerate() {
            root.draw(&Text::new(
                label.clone(),
                (
                    (left + cell * i as u32 + cell / 2) as i32,
                    (top + cell * rows as u32) as i32 + 8,
                ),
                ("sans-serif", 12)
                    .into_font()
                    .transform(FontTransform::Rotate90)
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(|e| perr(&e))?;
        }
        Ok(())
    })
}
