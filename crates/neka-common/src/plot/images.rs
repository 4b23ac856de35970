//! Grids of small images: a CNN's filters (signed weights) and feature maps (activations).

use super::{centred_text, draw_png, plot_error, register_font};
use crate::Result;
use std::path::Path;

/// How a panel's values become colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Signed values: blue (negative) → white (0) → red (positive), symmetric around 0 by the
    /// panel's largest |value| (convolution weights).
    Diverging,
    /// The panel's min → black, max → white (images, ReLU feature maps).
    Gray,
}

/// One image of a grid: `values` row-major, `h × w` (no values: a blank slot).
#[derive(Debug, Clone)]
pub struct ImagePanel {
    /// Caption drawn above the image.
    pub title: String,
    /// Rows of `values` (the image's height in pixels).
    pub h: usize,
    /// Columns of `values` (the image's width in pixels).
    pub w: usize,
    /// `h · w` values, row-major; empty for a blank slot.
    pub values: Vec<f32>,
}

impl ImagePanel {
    /// A panel titled `title` of `h × w` values.
    pub fn new(title: impl Into<String>, h: usize, w: usize, values: Vec<f32>) -> Self {
        Self {
            title: title.into(),
            h,
            w,
            values,
        }
    }
}

/// `v` in a panel whose values span `lo..hi` (`m` = max |v| for diverging) → RGB.
fn colour(scale: Scale, v: f32, lo: f32, hi: f32) -> (u8, u8, u8) {
    match scale {
        Scale::Gray => {
            let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.0 };
            let g = (255.0 * t.clamp(0.0, 1.0)) as u8;
            (g, g, g)
        }
        Scale::Diverging => {
            let m = lo.abs().max(hi.abs());
            let t = if m > 0.0 {
                (v / m).clamp(-1.0, 1.0)
            } else {
                0.0
            };
            let fade = (255.0 * (1.0 - t.abs())) as u8;
            if t >= 0.0 {
                (255, fade, fade)
            } else {
                (fade, fade, 255)
            }
        }
    }
}

/// Draws `panels` as a grid of `cols` columns into a PNG, each pixel of a panel a `px × px`
/// square, each panel scaled on its own (its title says what it shows), under `title`.
pub fn plot_image_grid(
    path: &Path,
    title: &str,
    panels: &[ImagePanel],
    cols: usize,
    px: u32,
    scale: Scale,
) -> Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    register_font();
    let perr = |e: &dyn std::fmt::Display| plot_error(path, e);
    for (i, p) in panels.iter().enumerate() {
        if p.values.len() != p.h * p.w {
            return Err(perr(&format!(
                "panel {i} ({}): {} values for {}x{}",
                p.title,
                p.values.len(),
                p.h,
                p.w
            )));
        }
    }
    let cols = cols.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(cols).max(1);
    let ph = panels.iter().map(|p| p.h).max().unwrap_or(1) as u32 * px;
    let pw = panels.iter().map(|p| p.w).max().unwrap_or(1) as u32 * px;
    let (gap, label, top) = (10u32, 18u32, 44u32);
    let cell_w = (pw + gap).max(
        7 * panels
            .iter()
            .map(|p| p.title.chars().count())
            .max()
            .unwrap_or(1) as u32
            + gap,
    );
    let cell_h = ph + label + gap;
    let size = (
        (gap + cell_w * cols as u32).max(8 * title.chars().count() as u32 + 40),
        top + cell_h * rows as u32,
    );
    draw_png(path, size, |root| {
        let center = Pos::new(HPos::Center, VPos::Center);
        centred_text(root, title, (size.0 as i32 / 2, 22), 18, path)?;
        for (i, p) in panels.iter().enumerate() {
            if p.values.is_empty() {
                continue; // a blank slot of the grid
            }
            let (r, c) = ((i / cols) as u32, (i % cols) as u32);
            let x0 = (gap + c * cell_w + (cell_w - gap - p.w as u32 * px) / 2) as i32;
            let y0 = (top + r * cell_h + label) as i32;
            root.draw(&Text::new(
                p.title.clone(),
                (
                    (gap + c * cell_w + (cell_w - gap) / 2) as i32,
                    y0 - label as i32 / 2 - 1,
                ),
                ("sans-serif", 12).into_font().color(&BLACK).pos(center),
            ))
            .map_err(|e| perr(&e))?;
            let lo = p.values.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = p.values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for y in 0..p.h {
                for x in 0..p.w {
                    let (cr, cg, cb) = colour(scale, p.values[y * p.w + x], lo, hi);
                    let (px0, py0) = (x0 + (x as u32 * px) as i32, y0 + (y as u32 * px) as i32);
                    root.draw(&Rectangle::new(
                        [(px0, py0), (px0 + px as i32, py0 + px as i32)],
                        RGBColor(cr, cg, cb).filled(),
                    ))
                    .map_err(|e| perr(&e))?;
                }
            }
            root.draw(&Rectangle::new(
                [
                    (x0 - 1, y0 - 1),
                    (x0 + (p.w as u32 * px) as i32, y0 + (p.h as u32 * px) as i32),
                ],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| perr(&e))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_a_grid() {
        assert_eq!(colour(Scale::Gray, 0.0, 0.0, 2.0), (0, 0, 0));
        assert_eq!(colour(Scale::Gray, 2.0, 0.0, 2.0), (255, 255, 255));
        assert_eq!(colour(Scale::Diverging, 0.0, -1.0, 2.0), (255, 255, 255));
        assert_eq!(colour(Scale::Diverging, 2.0, -1.0, 2.0), (255, 0, 0));
        assert_eq!(colour(Scale::Diverging, -2.0, -2.0, 1.0), (0, 0, 255));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        let panels: Vec<ImagePanel> = (0..5)
            .map(|i| ImagePanel::new(format!("#{i}"), 3, 3, (0..9).map(|v| v as f32).collect()))
            .collect();
        plot_image_grid(&path, "five", &panels, 3, 8, Scale::Diverging).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 100);
        let bad = [ImagePanel::new("x", 2, 2, vec![1.0])];
        let err = plot_image_grid(&path, "bad", &bad, 1, 8, Scale::Gray).unwrap_err();
        assert!(err.to_string().contains("1 values for 2x2"), "{err}");
    }
}
