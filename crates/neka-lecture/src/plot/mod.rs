//! The figure primitives only the lecture's pictures use, on `neka_common::plot`'s canvas:
//! number grids with sliding windows ([`worked`]) and bar charts ([`bars`]).

pub mod bars;
pub mod worked;
