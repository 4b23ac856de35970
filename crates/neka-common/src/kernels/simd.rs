//! Vectorised loops: work compiled for the widest vector instructions of the CPU it runs on,
//! and a sum that vectorises.

use super::KernelFloat;

/// `Σ xs` with 16 independent partial sums, so it vectorises (a plain fold is one serial chain
/// of dependent additions).
pub fn sum<F: KernelFloat>(xs: &[F]) -> F {
    let mut acc = [F::zero(); 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let tail = rest.iter().fold(F::zero(), |a, &v| a + v);
    acc.iter().fold(tail, |a, &v| a + v)
}

/// A piece of work to run compiled for the widest vector instructions of the CPU it runs on
/// ([`vectorized`]). Mark `run` `#[inline(always)]`, and the loops it calls too: they are then
/// compiled once per instruction set, inside [`vectorized`]'s dispatch.
pub trait Vectorized {
    /// What the work returns.
    type Output;
    /// Does the work (mark it `#[inline(always)]`).
    fn run(self) -> Self::Output;
}

/// Runs `job` compiled for the widest vector instructions this CPU has (AVX-512, else AVX2 +
/// FMA, detected at run time), so the element-wise loops inlined into it use 16 or 8 lanes
/// instead of baseline x86-64's 4. The results are the same bit for bit: Rust never contracts
/// `a·b + c` into an FMA, and the loops' arithmetic is unchanged; only the lane count differs.
pub fn vectorized<J: Vectorized>(job: J) -> J::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { with_avx512(job) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            return unsafe { with_avx2(job) };
        }
    }
    job.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn with_avx512<J: Vectorized>(job: J) -> J::Output {
    job.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<J: Vectorized>(job: J) -> J::Output {
    job.run()
}
