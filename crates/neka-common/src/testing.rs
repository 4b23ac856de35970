//! Comparing tensors, for checking a fast path against its plain twin or against PyTorch:
//! the largest absolute difference and the same relative to the reference's size.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use neka_common::testing::{max_abs_diff, rel_diff};
//! let a = Tensor::new(&[1.0f32, 2.0, 300.0], &Device::Cpu)?;
//! let b = Tensor::new(&[1.0f32, 2.5, 301.0], &Device::Cpu)?;
//! assert_eq!(max_abs_diff(&a, &b)?, 1.0);
//! assert_eq!(rel_diff(&a, &b, 1.0)?, 1.0 / 301.0);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{DType, Result, Tensor};

/// `max |a − b|` over all elements, in f64 (any float dtype; the shapes must be equal).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        candle_core::bail!(
            "max_abs_diff: shapes {:?} and {:?} differ",
            a.dims(),
            b.dims()
        )
    }
    let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?;
    d.abs()?.flatten_all()?.max(0)?.to_scalar()
}

/// `max |a − b| / max(floor, max |reference|)`: the difference relative to the reference's
/// scale, never divided by less than `floor` (1 for values around 1, smaller for tiny ones).
pub fn rel_diff(a: &Tensor, reference: &Tensor, floor: f64) -> Result<f64> {
    let scale: f64 = reference
        .to_dtype(DType::F64)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar()?;
    Ok(max_abs_diff(a, reference)? / scale.max(floor))
}
