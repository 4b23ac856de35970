//! The one adapter between neka's CPU kernels and candle's custom ops, with the float-type
//! dispatch written once.
//!
//! A kernel implements [`CpuKernel`] (or [`InplaceKernel`]) for `f32` and `f64`; wrapping it
//! in [`Fused`] (or [`InPlace`]) gives candle's op trait of its arity:
//!
//! | kernel | wrapper | candle trait | applied with |
//! |---|---|---|---|
//! | `CpuKernel<F, 1>` | [`Fused`] | `CustomOp1` | `x.apply_op1(Fused(k))` |
//! | `CpuKernel<F, 2>` | [`Fused`] | `CustomOp2` | `a.apply_op2(&b, Fused(k))` |
//! | `CpuKernel<F, 3>` | [`Fused`] | `CustomOp3` | `a.apply_op3(&b, &c, Fused(k))` |
//! | `InplaceKernel<F, 1>` | [`InPlace`] | `InplaceOp2` | `dst.inplace_op2(&a, &InPlace(k))` |
//! | `InplaceKernel<F, 2>` | [`InPlace`] | `InplaceOp3` | `dst.inplace_op3(&a, &b, &InPlace(k))` |
//!
//! The first input's (the destination's) dtype picks the f32 or the f64 implementation; any
//! other dtype is an error naming the op. All of it is `#[inline]` and allocation-free: the
//! inputs are passed on as arrays.

use super::KernelFloat;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor, WithDType};

/// The elements a contiguous layout covers in its storage; an error naming `what` for a
/// strided one (the kernels read storage directly: their inputs are made contiguous first).
pub fn contiguous_range(l: &Layout, what: &str) -> Result<std::ops::Range<usize>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(a..b),
        None => candle_core::bail!("{what}: inputs must be contiguous"),
    }
}

/// The data of a contiguous CPU storage as `&[F]` ([`contiguous_range`]); an error naming
/// `what` for another dtype or a strided layout.
pub fn contiguous_slice<'a, F: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> Result<&'a [F]> {
    Ok(&s.as_slice::<F>()?[contiguous_range(l, what)?])
}

/// Runs `f` on a CPU tensor's data (made contiguous first); an error for other devices.
pub fn with_slice<F: WithDType, R>(t: &Tensor, what: &str, f: impl FnOnce(&[F]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(s), Some((a, b))) => Ok(f(&s.as_slice::<F>()?[a..b])),
        _ => candle_core::bail!("{what}: contiguous CPU tensors only"),
    }
}

/// One input of a kernel: a CPU storage and the layout of the tensor in it.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    /// The CPU storage the tensor's data lives in.
    pub storage: &'a CpuStorage,
    /// Where in `storage` the tensor lies: shape, strides, offset.
    pub layout: &'a Layout,
}

impl<'a> Input<'a> {
    /// The tensor's shape.
    pub fn shape(&self) -> &'a Shape {
        self.layout.shape()
    }

    /// The tensor's data as `&[T]` ([`contiguous_slice`]); an error naming `what` and both
    /// dtypes when the storage holds another type, or when the layout is strided.
    pub fn slice<T: WithDType>(&self, what: &str) -> Result<&'a [T]> {
        if self.storage.dtype() != T::DTYPE {
            candle_core::bail!(
                "{what}: expected {:?}, got {:?} (all float inputs of a kernel share one dtype)",
                T::DTYPE,
                self.storage.dtype()
            )
        }
        contiguous_slice(self.storage, self.layout, what)
    }
}

/// Gradients of a three-input op, `(∂L/∂a, ∂L/∂b, ∂L/∂c)`, as candle's `CustomOp3::bwd`
/// returns them: `None` for an input that takes none (integer targets, a mask).
pub type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// The CPU half of a fused op of `N` inputs (1: max pooling; 2: cross-entropy; 3: dense layer,
/// convolution, batch norm, masked cross-entropy, recurrent layer): what differs between
/// neka's kernels. [`Fused`] turns one into candle's `CustomOp1/2/3`.
///
/// ```
/// use candle_core::{Device, Shape, Tensor};
/// use neka_common::kernels::{CpuKernel, Fused, Input, KernelFloat};
///
/// /// `a·b + c`, element-wise.
/// struct MulAdd;
/// impl<F: KernelFloat> CpuKernel<F, 3> for MulAdd {
///     const NAME: &'static str = "mul-add";
///     fn cpu_fwd(&self, [a, b, c]: [Input<'_>; 3]) -> candle_core::Result<(Vec<F>, Shape)> {
///         let (a, b, c) = (a.slice::<F>("a")?, b.slice::<F>("b")?, c.slice::<F>("c")?);
///         let y = a.iter().zip(b).zip(c).map(|((&a, &b), &c)| a * b + c).collect();
///         Ok((y, Shape::from(a.len())))
///     }
///     fn bwd(
///         &self,
///         [a, b, _]: [&Tensor; 3],
///         _y: &Tensor,
///         dy: &Tensor,
///     ) -> candle_core::Result<[Option<Tensor>; 3]> {
///         Ok([Some((dy * b)?), Some((dy * a)?), Some(dy.clone())])
///     }
/// }
///
/// let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
/// let y = t(&[1., 2.]).apply_op3(&t(&[3., 4.]), &t(&[0.5, 0.5]), Fused(MulAdd))?;
/// assert_eq!(y.to_vec1::<f32>()?, [3.5, 8.5]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub trait CpuKernel<F: KernelFloat, const N: usize>: Send + Sync {
    /// The op's name in candle's graph.
    const NAME: &'static str;

    /// The output (contiguous, of the first input's float type `F`) and its shape; side
    /// results for the backward pass (argmaxes, batch statistics, the recurrent reserve) go
    /// into `self`.
    fn cpu_fwd(&self, inputs: [Input<'_>; N]) -> Result<(Vec<F>, Shape)>;

    /// `∂L/∂input` for every input, from the inputs, the forward output and `∂L/∂output`
    /// (the first input of float type `F`); [`Fused`] drops the gradient of an input that
    /// tracks no gradient.
    fn bwd(
        &self,
        inputs: [&Tensor; N],
        output: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; N]>;
}

/// A [`CpuKernel`] (for f32 and f64) as candle's `CustomOp1`, `CustomOp2` or `CustomOp3`,
/// by its arity. CPU only: the ops that use one pick the candle-op twin elsewhere
/// ([`super::fused_applies`]).
pub struct Fused<K>(pub K);

impl<K> Fused<K> {
    /// The forward pass, dispatched on the first input's dtype.
    #[inline]
    fn forward<const N: usize>(
        &self,
        inputs: [(&CpuStorage, &Layout); N],
    ) -> Result<(CpuStorage, Shape)>
    where
        K: CpuKernel<f32, N> + CpuKernel<f64, N>,
    {
        let inputs = inputs.map(|(storage, layout)| Input { storage, layout });
        Ok(match inputs[0].storage.dtype() {
            DType::F32 => {
                let (y, shape) = CpuKernel::<f32, N>::cpu_fwd(&self.0, inputs)?;
                (CpuStorage::F32(y), shape)
            }
            DType::F64 => {
                let (y, shape) = CpuKernel::<f64, N>::cpu_fwd(&self.0, inputs)?;
                (CpuStorage::F64(y), shape)
            }
            dt => not_a_kernel_float(<K as CpuKernel<f32, N>>::NAME, dt)?,
        })
    }

    /// The backward pass, dispatched on the first input's dtype; gradients of inputs that
    /// track none are dropped.
    #[inline]
    fn backward<const N: usize>(
        &self,
        inputs: [&Tensor; N],
        output: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; N]>
    where
        K: CpuKernel<f32, N> + CpuKernel<f64, N>,
    {
        let mut grads = match inputs[0].dtype() {
            DType::F32 => CpuKernel::<f32, N>::bwd(&self.0, inputs, output, grad)?,
            DType::F64 => CpuKernel::<f64, N>::bwd(&self.0, inputs, output, grad)?,
            dt => not_a_kernel_float(<K as CpuKernel<f32, N>>::NAME, dt)?,
        };
        for (g, t) in grads.iter_mut().zip(inputs) {
            if !t.track_op() {
                *g = None;
            }
        }
        Ok(grads)
    }
}

/// The error for a dtype without a kernel (the path decision keeps those away).
fn not_a_kernel_float<T>(name: &str, dt: DType) -> Result<T> {
    candle_core::bail!("{name}: f32 or f64 inputs only, got {dt:?}")
}

/// candle's custom-op trait of one arity for [`Fused`]: the storages and the tensors passed on
/// as arrays to [`Fused::forward`] / [`Fused::backward`], the gradients handed back in the
/// trait's shape.
macro_rules! custom_op {
    ($op:ident, $n:literal, [$($s:ident $l:ident $t:ident),+], $grads:ty, $g:ident => $out:expr) => {
        impl<K: CpuKernel<f32, $n> + CpuKernel<f64, $n>> candle_core::$op for Fused<K> {
            fn name(&self) -> &'static str {
                <K as CpuKernel<f32, $n>>::NAME
            }
            fn cpu_fwd(
                &self,
                $($s: &CpuStorage, $l: &Layout),+
            ) -> Result<(CpuStorage, Shape)> {
                self.forward([$(($s, $l)),+])
            }
            fn bwd(&self, $($t: &Tensor,)+ y: &Tensor, dy: &Tensor) -> Result<$grads> {
                let $g = self.backward([$($t),+], y, dy)?;
                Ok($out)
            }
        }
    };
}

custom_op!(CustomOp1, 1, [s1 l1 a], Option<Tensor>, g => { let [da] = g; da });
custom_op!(CustomOp2, 2, [s1 l1 a, s2 l2 b], (Option<Tensor>, Option<Tensor>), g => {
    let [da, db] = g;
    (da, db)
});
custom_op!(CustomOp3, 3, [s1 l1 a, s2 l2 b, s3 l3 c], Grads3, g => {
    let [da, db, dc] = g;
    (da, db, dc)
});

/// The CPU half of an in-place op: `dst` updated from `N` further inputs of its dtype (the
/// AdamW update). No backward pass (candle's in-place ops have none). [`InPlace`] turns one
/// into candle's `InplaceOp2` (`N = 1`) or `InplaceOp3` (`N = 2`).
pub trait InplaceKernel<F: KernelFloat, const N: usize>: Send + Sync {
    /// The op's name in candle's errors.
    const NAME: &'static str;

    /// Updates `dst` (the destination's contiguous data) from `srcs`.
    fn cpu_fwd(&self, dst: &mut [F], srcs: [Input<'_>; N]) -> Result<()>;
}

/// An [`InplaceKernel`] (for f32 and f64) as candle's `InplaceOp2` / `InplaceOp3`, dispatched on the
/// destination's dtype. CPU only, like [`Fused`].
pub struct InPlace<K>(pub K);

impl<K> InPlace<K> {
    /// The update, dispatched on the destination's dtype.
    #[inline]
    fn forward<const N: usize>(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        srcs: [(&CpuStorage, &Layout); N],
    ) -> Result<()>
    where
        K: InplaceKernel<f32, N> + InplaceKernel<f64, N>,
    {
        let name = <K as InplaceKernel<f32, N>>::NAME;
        let r = contiguous_range(dst_l, name)?;
        let srcs = srcs.map(|(storage, layout)| Input { storage, layout });
        match dst {
            CpuStorage::F32(d) => InplaceKernel::<f32, N>::cpu_fwd(&self.0, &mut d[r], srcs),
            CpuStorage::F64(d) => InplaceKernel::<f64, N>::cpu_fwd(&self.0, &mut d[r], srcs),
            d => not_a_kernel_float(name, d.dtype()),
        }
    }
}

/// candle's in-place trait of one arity for [`InPlace`], as `custom_op!` does for [`Fused`].
macro_rules! inplace_op {
    ($op:ident, $n:literal, [$($s:ident $l:ident),+]) => {
        impl<K: InplaceKernel<f32, $n> + InplaceKernel<f64, $n>> candle_core::$op for InPlace<K> {
            fn name(&self) -> &'static str {
                <K as InplaceKernel<f32, $n>>::NAME
            }
            fn cpu_fwd(
                &self,
                dst: &mut CpuStorage,
                dl: &Layout,
                $($s: &CpuStorage, $l: &Layout),+
            ) -> Result<()> {
                self.forward(dst, dl, [$(($s, $l)),+])
            }
        }
    };
}

inplace_op!(InplaceOp2, 1, [s1 l1]);
inplace_op!(InplaceOp3, 2, [s1 l1, s2 l2]);
