//! The path decision: neka's fused CPU kernel or the plain candle-op twin, chosen per thread.
//!
//! Every op with a CPU kernel (dense layer, cross-entropy, AdamW, convolution, pooling, batch
//! norm, the recurrent layers) asks [`fused_applies`] (or [`path`]) once, where it builds its
//! graph: a CUDA or Metal tensor, or half precision, never reaches a CPU kernel, and on the
//! CPU the thread's [`KernelPath`] decides. Tests and benchmarks switch it for a scope:
//!
//! ```
//! use neka_common::kernels::{self, KernelPath};
//! assert_eq!(kernels::path(), KernelPath::Fused);
//! let twin = kernels::with_path(KernelPath::CandleOps, || kernels::path());
//! assert_eq!(twin, KernelPath::CandleOps);
//! {
//!     let _g = kernels::use_path(KernelPath::CandleOps);
//!     assert_eq!(kernels::path(), KernelPath::CandleOps);
//! }
//! assert_eq!(kernels::path(), KernelPath::Fused);
//! ```

use candle_core::{DType, DeviceLocation};
use std::cell::Cell;

/// Which implementation the ops with a CPU kernel run on the CPU (other devices always take
/// candle's ops): one switch for all of them, per thread ([`use_path`], [`with_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelPath {
    /// neka's fused CPU kernels (`crate::kernels` and each model crate's `kernels` module),
    /// f32 / f64: one candle custom op per layer with its backward pass written out. The
    /// default.
    #[default]
    Fused,
    /// candle's ops everywhere: the plain twins (what CUDA runs, with the convolution as
    /// candle's `conv2d`).
    CandleOps,
    /// candle's ops as [`KernelPath::CandleOps`], except the convolution, which runs as the
    /// im2col graph of candle ops: the route Metal takes, so that it can be run and compared
    /// on the CPU.
    Im2col,
}

impl KernelPath {
    /// [`KernelPath::Fused`] when `fused`, else [`KernelPath::CandleOps`] (for tests that
    /// run both).
    pub fn fused_if(fused: bool) -> Self {
        if fused {
            Self::Fused
        } else {
            Self::CandleOps
        }
    }
}

impl std::str::FromStr for KernelPath {
    type Err = crate::Error;
    /// `kernels` (or `kernel`, `fused`), `candle`, `im2col`.
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "kernels" | "kernel" | "fused" => Ok(Self::Fused),
            "candle" => Ok(Self::CandleOps),
            "im2col" => Ok(Self::Im2col),
            other => Err(crate::Error::config(
                "kernel path",
                format!("`{other}`: expected kernels, im2col or candle"),
            )),
        }
    }
}

thread_local! {
    static PATH: Cell<KernelPath> = const { Cell::new(KernelPath::Fused) };
}

/// The calling thread's [`KernelPath`] ([`KernelPath::Fused`] unless a [`use_path`] guard or
/// [`with_path`] on this thread says otherwise).
pub fn path() -> KernelPath {
    PATH.with(Cell::get)
}

/// Restores the previous [`KernelPath`] of its thread when dropped ([`use_path`]).
#[must_use = "the path is restored when the guard is dropped"]
#[derive(Debug)]
pub struct PathGuard {
    previous: KernelPath,
    /// Not `Send`: the guard restores the thread-local of the thread that made it.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Drop for PathGuard {
    fn drop(&mut self) {
        PATH.with(|p| p.set(self.previous));
    }
}

/// Selects `p` on the calling thread until the returned guard is dropped (also on a panic),
/// then the previous path again. Per thread, so tests running side by side do not switch each
/// other's layers; select it on the thread that builds the graph.
pub fn use_path(p: KernelPath) -> PathGuard {
    let previous = PATH.with(|c| c.replace(p));
    PathGuard {
        previous,
        _thread: std::marker::PhantomData,
    }
}

/// Runs `f` with `p` selected on this thread, then restores the previous path.
pub fn with_path<T>(p: KernelPath, f: impl FnOnce() -> T) -> T {
    let _guard = use_path(p);
    f()
}

/// Whether neka's CPU kernels can run on a tensor at `location` with `dtype` at all: the CPU,
/// f32 or f64. Anything else (CUDA, Metal, half precision) takes the candle-op twin, which is
/// what candle's CUDA and Metal backends (cuBLAS, cuDNN, MPS) are for.
///
/// ```
/// use candle_core::{DType, DeviceLocation};
/// use neka_common::kernels::kernel_applies;
/// assert!(kernel_applies(DeviceLocation::Cpu, DType::F32));
/// assert!(!kernel_applies(DeviceLocation::Cuda { gpu_id: 0 }, DType::F32));
/// assert!(!kernel_applies(DeviceLocation::Metal { gpu_id: 0 }, DType::F32));
/// assert!(!kernel_applies(DeviceLocation::Cpu, DType::BF16));
/// ```
pub fn kernel_applies(location: DeviceLocation, dtype: DType) -> bool {
    matches!(location, DeviceLocation::Cpu) && matches!(dtype, DType::F32 | DType::F64)
}

/// The path decision every kernel call site starts from: `true` for the fused CPU kernel
/// ([`kernel_applies`] and [`KernelPath::Fused`] selected on this thread), `false` for the
/// candle-op twin.
pub fn fused_applies(location: DeviceLocation, dtype: DType) -> bool {
    kernel_applies(location, dtype) && path() == KernelPath::Fused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_scoped_per_thread_and_restored_on_panic() {
        assert_eq!(path(), KernelPath::Fused);
        let inner = with_path(KernelPath::CandleOps, || {
            let other = std::thread::spawn(path).join().unwrap();
            let nested = with_path(KernelPath::Im2col, path);
            (path(), other, nested)
        });
        assert_eq!(
            inner,
            (KernelPath::CandleOps, KernelPath::Fused, KernelPath::Im2col)
        );
        assert_eq!(path(), KernelPath::Fused);
        let r = std::panic::catch_unwind(|| {
            with_path(KernelPath::CandleOps, || panic!("inside"));
        });
        assert!(r.is_err());
        assert_eq!(path(), KernelPath::Fused);
        assert!(fused_applies(DeviceLocation::Cpu, DType::F64));
        assert!(!with_path(KernelPath::CandleOps, || fused_applies(
            DeviceLocation::Cpu,
            DType::F32
        )));
        assert!(!fused_applies(
            DeviceLocation::Cuda { gpu_id: 0 },
            DType::F32
        ));
    }

    #[test]
    fn paths_parse_from_the_bench_names() {
        for (s, p) in [
            ("kernels", KernelPath::Fused),
            ("fused", KernelPath::Fused),
            ("candle", KernelPath::CandleOps),
            ("im2col", KernelPath::Im2col),
        ] {
            assert_eq!(s.parse::<KernelPath>().unwrap(), p);
        }
        assert!("gpu".parse::<KernelPath>().is_err());
        assert_eq!(KernelPath::fused_if(false), KernelPath::CandleOps);
    }
}
