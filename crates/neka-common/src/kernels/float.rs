//! The floats the CPU kernels run on, and the branch-free exponential behind their f32 path.

use candle_core::WithDType;
use num_traits::Float;

/// Floats the kernels run on: f32, and f64 for the finite-difference gradient checks. The
/// one definition for every crate's kernels, with the activation functions they need.
///
/// f32 uses a branch-free exponential ([`exp_f32`], Cephes' `expf` polynomial, ≤ 2 ulp on the
/// clamped range) that the compiler vectorises across a row; f64 uses the standard library.
pub trait KernelFloat: WithDType + Float + std::ops::AddAssign + Send + Sync + 'static {
    /// e^x: [`exp_f32`] for f32 (branch-free, so loops of it vectorise), the standard
    /// library's for f64 (the finite-difference checks).
    fn exp_fast(self) -> Self;
    /// σ(x) = 1 / (1 + e^{−x}).
    fn sigmoid(self) -> Self;
    /// tanh(x).
    fn tanh_act(self) -> Self;
}

impl KernelFloat for f32 {
    #[inline(always)]
    fn exp_fast(self) -> f32 {
        exp_f32(self)
    }
    #[inline(always)]
    fn sigmoid(self) -> f32 {
        1.0 / (1.0 + exp_f32(-self))
    }
    /// `tanh x = 1 − 2 / (e^{2x} + 1)` (absolute error ~1e-7).
    #[inline(always)]
    fn tanh_act(self) -> f32 {
        1.0 - 2.0 / (exp_f32(2.0 * self) + 1.0)
    }
}

impl KernelFloat for f64 {
    #[inline(always)]
    fn exp_fast(self) -> f64 {
        self.exp()
    }
    #[inline]
    fn sigmoid(self) -> f64 {
        sigmoid(self)
    }
    #[inline]
    fn tanh_act(self) -> f64 {
        self.tanh()
    }
}

/// σ(x) = 1 / (1 + e^{−x}), in the form that does not overflow for large |x|.
#[inline]
pub fn sigmoid<F: Float>(x: F) -> F {
    if x >= F::zero() {
        F::one() / (F::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (F::one() + e)
    }
}

/// e^x for f32 without branches (Cephes `expf`): `x = n ln2 + r`, a degree-6 polynomial for
/// `e^r`, times `2^n` built from the exponent bits. `x` is clamped to [−87.3, 88].
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // 1.5·2²³: adding it rounds |v| < 2²² to the nearest integer, whose bits are then the low
    // bits of the sum. Pure float adds and integer bit operations, so the loop vectorises (a
    // float → int `as` cast saturates and checks NaN, element by element). NaN stays NaN.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let big = x * std::f32::consts::LOG2_E + MAGIC;
    let n = big - MAGIC; // round(x / ln 2), in [−126, 127]
    let k = (big.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits((k.wrapping_add(127) << 23) as u32)
}
