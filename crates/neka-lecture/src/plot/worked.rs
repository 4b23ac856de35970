//! The lecture's worked examples drawn: number grids, a sliding window, the output.
//!
//! A [`NumberGrid`] is a table of numbers (an input, a kernel, an output) with optional row
//! and column labels, a note to the right of each row, small notes in the cells' corners
//! (the kernel weight a window multiplies), greyed cells (zero padding) and coloured
//! [`Highlight`]s (the sliding window, the output cell it produces). [`plot_worked`] lays out
//! rows of grids joined by operators (`∗`, `=`, `→`) into one PNG.

use neka_common::plot::{draw_png, plot_error, register_font};
use neka_common::{Error, Result};
use std::path::Path;

pub use super::grid::{format_value, Highlight, Item, NumberGrid, WINDOW_COLOURS};

const MARGIN: i32 = 24;
const GAP: i32 = 14; // between items of a row
const ROW_GAP: i32 = 30;
const LINE: i32 = 19; // line height of titles, captions, footers
const CELL_MIN: i32 = 40;
const TITLE_PT: u32 = 15;
const CELL_PT: u32 = 17;
const NOTE_PT: u32 = 12;
const LABEL_PT: u32 = 14;
const OP_PT: u32 = 30;

fn text_width(text: &str, pt: u32) -> i32 {
    use plotters::style::IntoFont;
    if text.trim().is_empty() {
        return 0;
    }
    ("sans-serif", pt as f64)
        .into_font()
        .box_size(text)
        .map(|(w, _)| w as i32)
        .unwrap_or(text.chars().count() as i32 * pt as i32 * 6 / 10)
}

fn lines(text: &str) -> Vec<&str> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split('\n').collect()
    }
}

fn lines_width(text: &str, pt: u32) -> i32 {
    lines(text)
        .iter()
        .map(|l| text_width(l, pt))
        .max()
        .unwrap_or(0)
}

/// The measured layout of one grid.
struct GridLayout {
    cell: i32,
    /// Width of the row labels column (0 if none).
    left: i32,
    /// Width of the row notes column (0 if none).
    right: i32,
    width: i32,
    /// From the item's top to the grid body's top.
    body_top: i32,
    body_h: i32,
    height: i32,
}

impl GridLayout {
    fn of(g: &NumberGrid) -> Self {
        let widest = g
            .cells
            .iter()
            .flatten()
            .map(|c| text_width(c, CELL_PT))
            .chain(g.col_labels.iter().map(|c| text_width(c, LABEL_PT)))
            .max()
            .unwrap_or(0);
        let cell = CELL_MIN.max(widest + 14);
        let left = g
            .row_labels
            .iter()
            .chain([&g.corner])
            .map(|l| text_width(l, LABEL_PT))
            .max()
            .map_or(0, |w| if w > 0 { w + 12 } else { 0 });
        let right = g
            .row_notes
            .iter()
            .map(|l| text_width(l, LABEL_PT))
            .max()
            .map_or(0, |w| if w > 0 { w + 16 } else { 0 });
        let table = left + cell * g.cols() as i32 + right;
        let width = table
            .max(lines_width(&g.title, TITLE_PT))
            .max(lines_width(&g.caption, LABEL_PT));
        let title_h = LINE * lines(&g.title).len() as i32 + if g.title.is_empty() { 0 } else { 6 };
        let labels_h = if g.col_labels.is_empty() { 0 } else { 20 };
        let body_h = cell * g.rows() as i32;
        let caption_h = if g.caption.is_empty() {
            0
        } else {
            8 + LINE * lines(&g.caption).len() as i32
        };
        Self {
            cell,
            left,
            right,
            width,
            body_top: title_h + labels_h,
            body_h,
            height: title_h + labels_h + body_h + caption_h,
        }
    }
    /// Distance from the item's top to the body's vertical centre.
    fn above(&self) -> i32 {
        self.body_top + self.body_h / 2
    }
}

enum Measured<'a> {
    Grid(&'a NumberGrid, GridLayout),
    Text(&'a str, i32),
    Space(i32),
}

impl Measured<'_> {
    fn width(&self) -> i32 {
        match self {
            Self::Grid(_, l) => l.width,
            Self::Text(_, w) | Self::Space(w) => *w,
        }
    }
    fn above(&self) -> i32 {
        match self {
            Self::Grid(_, l) => l.above(),
            Self::Text(..) => OP_PT as i32 / 2 + 4,
            Self::Space(_) => 0,
        }
    }
    fn below(&self) -> i32 {
        match self {
            Self::Grid(_, l) => l.height - l.above(),
            Self::Text(..) => OP_PT as i32 / 2 + 4,
            Self::Space(_) => 0,
        }
    }
}

impl Item {
    /// A grid item ([`Item::Grid`], boxed).
    pub fn grid(g: NumberGrid) -> Self {
        Self::Grid(Box::new(g))
    }
    /// An operator or phrase item ([`Item::Text`]).
    pub fn text(t: impl Into<String>) -> Self {
        Self::Text(t.into())
    }
}

fn measure(item: &Item) -> Measured<'_> {
    match item {
        Item::Grid(g) => Measured::Grid(g, GridLayout::of(g)),
        Item::Text(t) => Measured::Text(t, text_width(t, OP_PT).max(10)),
        Item::Space(w) => Measured::Space(*w as i32),
    }
}

/// Draws `rows` of grids and operators into a PNG: `title` (and `subtitle`, several lines
/// allowed) on top, each row centred, every item of a row centred on the same line, and
/// `footer` lines below. The image is as large as its content.
pub fn plot_worked(
    path: &Path,
    title: &str,
    subtitle: &str,
    rows: &[Vec<Item>],
    footer: &[String],
) -> Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    register_font();
    let perr = |e: &dyn std::fmt::Display| plot_error(path, e);
    for (r, row) in rows.iter().enumerate() {
        for item in row {
            if let Item::Grid(g) = item {
                let (h, w) = (g.rows(), g.cols());
                let bad = g
                    .highlights
                    .iter()
                    .find(|x| x.top + x.height > h || x.left + x.width > w);
                if let Some(x) = bad {
                    return Err(perr(&format!(
                        "row {r}, grid `{}` ({h}x{w}): highlight {x:?} is outside the grid",
                        g.title
                    )));
                }
            }
        }
    }
    let measured: Vec<Vec<Measured>> = rows
        .iter()
        .map(|r| r.iter().map(measure).collect())
        .collect();
    let row_width = |r: &[Measured]| {
        r.iter().map(Measured::width).sum::<i32>() + GAP * (r.len().saturating_sub(1)) as i32
    };
    let row_extent = |r: &[Measured]| {
        (
            r.iter().map(Measured::above).max().unwrap_or(0),
            r.iter().map(Measured::below).max().unwrap_or(0),
        )
    };
    let header_h = 34 + LINE * lines(subtitle).len() as i32 + 12;
    let content_w = measured
        .iter()
        .map(|r| row_width(r))
        .chain([text_width(title, 20), lines_width(subtitle, LABEL_PT)])
        .chain(footer.iter().map(|l| text_width(l, LABEL_PT)))
        .max()
        .unwrap_or(0);
    let rows_h: i32 = measured
        .iter()
        .map(|r| {
            let (a, b) = row_extent(r);
            a + b
        })
        .sum::<i32>()
        + ROW_GAP * (measured.len().saturating_sub(1)) as i32;
    let footer_h = if footer.is_empty() {
        0
    } else {
        ROW_GAP + LINE * footer.len() as i32
    };
    let size = (
        (content_w + 2 * MARGIN) as u32,
        (header_h + rows_h + footer_h + MARGIN) as u32,
    );
    draw_png(path, size, |root| {
        let font = |pt: u32| ("sans-serif", pt as f64).into_font();
        let centre = Pos::new(HPos::Center, VPos::Center);
        let mid = size.0 as i32 / 2;
        let mut text = |s: &str, at: (i32, i32), pt: u32, colour: RGBColor, pos: Pos| {
            if s.is_empty() {
                return Ok(());
            }
            root.draw(&Text::new(
                s.to_string(),
                at,
                font(pt).color(&colour).pos(pos),
            ))
            .map_err(|e| perr(&e))
        };
        text(title, (mid, 22), 20, BLACK, centre)?;
        for (i, l) in lines(subtitle).iter().enumerate() {
            text(
                l,
                (mid, 34 + 10 + LINE * i as i32),
                LABEL_PT,
                RGBColor(70, 70, 70),
                centre,
            )?;
        }
        let mut y = header_h;
        for row in &measured {
            let (above, below) = row_extent(row);
            let mut x = mid - row_width(row) / 2;
            for item in row {
                let top = y + above - item.above();
                match item {
                    Measured::Text(t, w) => {
                        text(t, (x + w / 2, y + above), OP_PT, BLACK, centre)?;
                    }
                    Measured::Space(_) => {}
                    Measured::Grid(g, l) => {
                        draw_grid(root, g, l, (x, top), &mut text, &perr)?;
                    }
                }
                x += item.width() + GAP;
            }
            y += above + below + ROW_GAP;
        }
        let y0 = y - ROW_GAP + if footer.is_empty() { 0 } else { ROW_GAP };
        for (i, l) in footer.iter().enumerate() {
            text(
                l,
                (mid, y0 + LINE * i as i32 + LINE / 2),
                LABEL_PT,
                BLACK,
                centre,
            )?;
        }
        Ok(())
    })
}

type TextFn<'a> = dyn FnMut(
        &str,
        (i32, i32),
        u32,
        plotters::style::RGBColor,
        plotters::style::text_anchor::Pos,
    ) -> Result<()>
    + 'a;

fn draw_grid(
    root: &plotters::drawing::DrawingArea<
        plotters::prelude::BitMapBackend<'_>,
        plotters::coord::Shift,
    >,
    g: &NumberGrid,
    l: &GridLayout,
    (x, top): (i32, i32),
    text: &mut TextFn<'_>,
    perr: &dyn Fn(&dyn std::fmt::Display) -> Error,
) -> Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let centre = Pos::new(HPos::Center, VPos::Center);
    let grey = RGBColor(150, 150, 150);
    let (rows, cols) = (g.rows() as i32, g.cols() as i32);
    let table_w = l.left + l.cell * cols + l.right;
    let x0 = x + (l.width - table_w) / 2 + l.left; // body's left edge
    let y0 = top + l.body_top;
    let cell_rect = |r: i32, c: i32| {
        (
            (x0 + c * l.cell, y0 + r * l.cell),
            (x0 + (c + 1) * l.cell, y0 + (r + 1) * l.cell),
        )
    };
    let centre_x = x + l.width / 2;
    for (i, t) in lines(&g.title).iter().enumerate() {
        text(
            t,
            (centre_x, top + LINE * i as i32 + LINE / 2),
            TITLE_PT,
            BLACK,
            centre,
        )?;
    }
    for (c, lab) in g.col_labels.iter().enumerate() {
        let cx = x0 + c as i32 * l.cell + l.cell / 2;
        text(lab, (cx, y0 - 11), LABEL_PT, RGBColor(90, 90, 90), centre)?;
    }
    text(
        &g.corner,
        (x0 - 8, y0 - 11),
        LABEL_PT,
        RGBColor(90, 90, 90),
        Pos::new(HPos::Right, VPos::Center),
    )?;
    for (r, lab) in g.row_labels.iter().enumerate() {
        let cy = y0 + r as i32 * l.cell + l.cell / 2;
        text(
            lab,
            (x0 - 8, cy),
            LABEL_PT,
            BLACK,
            Pos::new(HPos::Right, VPos::Center),
        )?;
    }
    for h in g.highlights.iter().filter(|h| h.fill) {
        let (c0, _) = cell_rect(h.top as i32, h.left as i32);
        let (_, c1) = cell_rect((h.top + h.height) as i32 - 1, (h.left + h.width) as i32 - 1);
        let (r, gr, b) = h.colour;
        root.draw(&Rectangle::new(
            [c0, c1],
            RGBColor(r, gr, b).mix(0.22).filled(),
        ))
        .map_err(|e| perr(&e))?;
    }
    for r in 0..rows {
        for c in 0..g.cells[r as usize].len() as i32 {
            let (a, b) = cell_rect(r, c);
            root.draw(&Rectangle::new(
                [a, b],
                RGBColor(120, 120, 120).stroke_width(1),
            ))
            .map_err(|e| perr(&e))?;
        }
    }
    for h in g.highlights.iter().filter(|h| h.border) {
        let (c0, _) = cell_rect(h.top as i32, h.left as i32);
        let (_, c1) = cell_rect((h.top + h.height) as i32 - 1, (h.left + h.width) as i32 - 1);
        let (r, gr, b) = h.colour;
        root.draw(&Rectangle::new(
            [(c0.0 + 1, c0.1 + 1), (c1.0 - 1, c1.1 - 1)],
            RGBColor(r, gr, b).stroke_width(3),
        ))
        .map_err(|e| perr(&e))?;
    }
    for (r, row) in g.cells.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            let ((ax, ay), _) = cell_rect(r as i32, c as i32);
            let muted = g.muted.contains(&(r, c));
            let has_note = g.notes.iter().any(|(at, _)| *at == (r, c));
            let cy = ay + l.cell / 2 - if has_note { 4 } else { 0 };
            text(
                v,
                (ax + l.cell / 2, cy),
                CELL_PT,
                if muted { grey } else { BLACK },
                centre,
            )?;
        }
    }
    for ((r, c), note) in &g.notes {
        let (_, (bx, by)) = cell_rect(*r as i32, *c as i32);
        text(
            note,
            (bx - 4, by - 3),
            NOTE_PT,
            RGBColor(170, 30, 30),
            Pos::new(HPos::Right, VPos::Bottom),
        )?;
    }
    for (r, note) in g.row_notes.iter().enumerate() {
        let cy = y0 + r as i32 * l.cell + l.cell / 2;
        text(
            note,
            (x0 + cols * l.cell + 14, cy),
            LABEL_PT,
            BLACK,
            Pos::new(HPos::Left, VPos::Center),
        )?;
    }
    // a caption is a left-aligned block, centred under the grid
    let cap_x = centre_x - lines_width(&g.caption, LABEL_PT) / 2;
    for (i, t) in lines(&g.caption).iter().enumerate() {
        let cy = y0 + l.body_h + 8 + LINE * i as i32 + LINE / 2;
        text(
            t,
            (cap_x, cy),
            LABEL_PT,
            BLACK,
            Pos::new(HPos::Left, VPos::Center),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_a_worked_figure() {
        assert_eq!(format_value(9.0), "9");
        assert_eq!(format_value(1.75), "1.75");
        assert_eq!(format_value(1.5), "1.5");
        assert_eq!(format_value(-2.0), "-2");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worked.png");
        let x = NumberGrid::from_values("input", &[vec![1., 2.], vec![3., 4.]])
            .highlight(Highlight::window(0, 0, 1, 2, WINDOW_COLOURS[0]))
            .note(0, 0, "×2")
            .mute(1, 1)
            .row_labels(vec!["a".into(), "b".into()])
            .col_labels(vec!["0".into(), "1".into()])
            .row_notes(vec!["1 + 2 = 3".into()])
            .caption("two\nlines");
        let k = NumberGrid::from_values("k", &[vec![0.5]]);
        let rows = vec![vec![Item::grid(x), Item::text("∗"), Item::grid(k)]];
        plot_worked(&path, "t", "sub", &rows, &["foot".into()]).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 100);
        let bad =
            NumberGrid::from_values("bad", &[vec![1.]]).highlight(Highlight::cell(1, 0, (0, 0, 0)));
        let err = plot_worked(&path, "t", "", &[vec![Item::grid(bad)]], &[]).unwrap_err();
        assert!(err.to_string().contains("outside the grid"), "{err}");
    }
}
