//! The data of a worked example's picture: a [`NumberGrid`] (an input, a kernel or an output,
//! with labels, notes, greyed padding cells and coloured [`Highlight`]s) and the [`Item`]s a
//! row of the picture is made of; [`super::worked`] lays them out and draws them.

/// Colours for windows and the cells they produce, distinct on white and in print.
pub const WINDOW_COLOURS: [(u8, u8, u8); 6] = [
    (230, 120, 0),
    (30, 110, 220),
    (30, 150, 60),
    (150, 60, 190),
    (210, 40, 60),
    (0, 150, 160),
];

/// A coloured rectangle of cells: `height × width` cells from `(top, left)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Highlight {
    /// Row of the rectangle's top-left cell.
    pub top: usize,
    /// Column of the rectangle's top-left cell.
    pub left: usize,
    /// Rows covered.
    pub height: usize,
    /// Columns covered.
    pub width: usize,
    /// RGB of the tint and the border.
    pub colour: (u8, u8, u8),
    /// Tint the cells.
    pub fill: bool,
    /// Draw a thick border around the rectangle.
    pub border: bool,
}

impl Highlight {
    /// A window: tinted cells inside a thick border.
    pub fn window(
        top: usize,
        left: usize,
        height: usize,
        width: usize,
        colour: (u8, u8, u8),
    ) -> Self {
        Self {
            top,
            left,
            height,
            width,
            colour,
            fill: true,
            border: true,
        }
    }
    /// One tinted, bordered cell.
    pub fn cell(row: usize, col: usize, colour: (u8, u8, u8)) -> Self {
        Self::window(row, col, 1, 1, colour)
    }
    /// The same cells tinted, without a border.
    pub fn borderless(self) -> Self {
        Self {
            border: false,
            ..self
        }
    }
    /// The same cells' border only (the span of a dilated kernel, say).
    pub fn unfilled(self) -> Self {
        Self {
            fill: false,
            ..self
        }
    }
}

/// One table of numbers. Titles and captions may hold several lines (`\n`).
#[derive(Debug, Clone, Default)]
pub struct NumberGrid {
    /// Above the grid (`\n` for several lines).
    pub title: String,
    /// The cells' text, row by row (rows may differ in length).
    pub cells: Vec<Vec<String>>,
    /// Small text in a cell's lower-right corner, by `(row, col)`.
    pub notes: Vec<((usize, usize), String)>,
    /// Cells drawn in grey (zero padding, values outside the signal).
    pub muted: Vec<(usize, usize)>,
    /// Left of each row (may be shorter than the rows).
    pub row_labels: Vec<String>,
    /// Above each column.
    pub col_labels: Vec<String>,
    /// Left of the column labels, above the row labels (what the column labels count: `m`).
    pub corner: String,
    /// Right of each row: a sum, an explanation.
    pub row_notes: Vec<String>,
    /// Coloured rectangles over the cells, drawn in order.
    pub highlights: Vec<Highlight>,
    /// Below the grid.
    pub caption: String,
}

/// A value as the notes write it: `9`, `1.75`, `-0.5`.
pub fn format_value(v: f32) -> String {
    if v.is_finite() && v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

impl NumberGrid {
    /// A grid of `cells` under `title`, with no labels, notes or highlights.
    pub fn new(title: impl Into<String>, cells: Vec<Vec<String>>) -> Self {
        Self {
            title: title.into(),
            cells,
            ..Default::default()
        }
    }
    /// A grid of numbers, formatted by [`format_value`].
    pub fn from_values(title: impl Into<String>, values: &[Vec<f32>]) -> Self {
        let cells = values
            .iter()
            .map(|r| r.iter().map(|&v| format_value(v)).collect())
            .collect();
        Self::new(title, cells)
    }
    /// Sets the labels left of the rows.
    pub fn row_labels(mut self, labels: Vec<String>) -> Self {
        self.row_labels = labels;
        self
    }
    /// Sets the labels above the columns.
    pub fn col_labels(mut self, labels: Vec<String>) -> Self {
        self.col_labels = labels;
        self
    }
    /// Sets the text left of the column labels.
    pub fn corner(mut self, text: impl Into<String>) -> Self {
        self.corner = text.into();
        self
    }
    /// Sets the notes right of the rows.
    pub fn row_notes(mut self, notes: Vec<String>) -> Self {
        self.row_notes = notes;
        self
    }
    /// Adds a highlight.
    pub fn highlight(mut self, h: Highlight) -> Self {
        self.highlights.push(h);
        self
    }
    /// Adds small text in the lower-right corner of cell `(row, col)`.
    pub fn note(mut self, row: usize, col: usize, text: impl Into<String>) -> Self {
        self.notes.push(((row, col), text.into()));
        self
    }
    /// Greys out cell `(row, col)`.
    pub fn mute(mut self, row: usize, col: usize) -> Self {
        self.muted.push((row, col));
        self
    }
    /// Sets the text below the grid.
    pub fn caption(mut self, text: impl Into<String>) -> Self {
        self.caption = text.into();
        self
    }
    pub(super) fn rows(&self) -> usize {
        self.cells.len()
    }
    pub(super) fn cols(&self) -> usize {
        self.cells.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// One element of a row of [`plot_worked`](super::worked::plot_worked).
#[derive(Debug, Clone)]
pub enum Item {
    /// A table of numbers.
    Grid(Box<NumberGrid>),
    /// An operator or a short phrase between grids (`∗`, `=`, `→`).
    Text(String),
    /// Extra horizontal space, in pixels.
    Space(u32),
}
