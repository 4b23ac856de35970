//! The figure primitives only the lecture's pictures use, on `neka_common::plot`'s canvas:
//! number grids with sliding windows (the data in [`grid`], laid out and drawn by [`worked`]) and
//! bar charts ([`bars`]).

pub mod bars;
pub mod grid;
pub mod worked;
