//! Small layers shared by all neka models, initialised exactly like PyTorch.
//!
//! candle-nn's `linear` draws weights from a Kaiming *normal*; PyTorch's `nn.Linear` and
//! `nn.Conv2d` use `kaiming_uniform_(a=√5)`, i.e. U(−1/√fan_in, 1/√fan_in), for weights and
//! the same bound for biases. neka follows PyTorch so that models trained here start where
//! the same PyTorch model would, and so that parity with PyTorch can be tested.

use crate::cpu::{self, CpuOp3, Fused3, Grads3, Input, KernelFloat, Mat};
use crate::rng;
use candle_core::{DType, Device, DeviceLocation, Module, ModuleT, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};

/// The PyTorch default init bound for a layer with `fan_in` inputs per output: `1/√fan_in`.
pub fn pytorch_bound(fan_in: usize) -> f64 {
    1.0 / (fan_in as f64).sqrt()
}

/// `y = x Wᵀ + b` with `weight (out_dim, in_dim)` and `bias (out_dim)`, PyTorch names and init.
///
/// This is the "fully-connected" (dense) layer of the lecture: every output sees every input,
/// `in_dim · out_dim + out_dim` parameters.
pub fn linear(
    in_dim: usize,
    out_dim: usize,
    bias: bool,
    vb: VarBuilder,
) -> Result<candle_nn::Linear> {
    let bound = pytorch_bound(in_dim);
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let w = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let b = if bias {
        Some(vb.get_with_hints(out_dim, "bias", init)?)
    } else {
        None
    };
    Ok(candle_nn::Linear::new(w, b))
}

thread_local! {
    static FUSED_LINEAR: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Turns the CPU kernel of [`linear_forward`] on (the default) or off (candle's ops) for the
/// calling thread (so parallel tests do not switch each other's path).
pub fn set_fused_cpu_linear(on: bool) {
    FUSED_LINEAR.with(|f| f.set(on));
}

/// The one place that picks [`linear_forward`]'s path: `true` for neka's CPU op
/// ([`crate::cpu::kernel_applies`], weights of the input's dtype, the switch on), `false` for
/// candle's ops (every CUDA / Metal tensor).
pub fn linear_uses_kernel(location: DeviceLocation, dtype: DType, weight_dtype: DType) -> bool {
    crate::cpu::kernel_applies(location, dtype)
        && weight_dtype == dtype
        && FUSED_LINEAR.with(|f| f.get())
}

/// `y = x Wᵀ + b`, then `max(0, y)` if `relu`, for a candle [`candle_nn::Linear`].
///
/// `xs` is `(…, in)`: leading dimensions are flattened into rows and restored after.
/// On CPU with f32/f64 inputs this is one op ([`LinearOp`]) whose GEMMs run on candle's
/// CPU pool with the weight in its stored `(out, in)` layout; elsewhere (other devices,
/// half precision) it is `lin.forward(x)` (+ `relu`), the plain twin. Through candle's
/// ops the layer is a transpose, a matmul and a broadcast add: the weight gradient is formed
/// transposed and copied back with a strided add, and the matmuls run on a second (rayon)
/// pool next to candle's own. This is the one place that picks between the two.
pub fn linear_forward(lin: &candle_nn::Linear, xs: &Tensor, relu: bool) -> Result<Tensor> {
    let w = lin.weight();
    if xs.rank() > 2 {
        let mut dims = xs.dims().to_vec();
        let i = dims.pop().unwrap_or(0);
        let rows: usize = dims.iter().product();
        let y = linear_forward(lin, &xs.reshape((rows, i))?, relu)?;
        dims.push(y.dim(1)?);
        return y.reshape(dims);
    }
    if !linear_uses_kernel(xs.device().location(), xs.dtype(), w.dtype()) {
        let y = lin.forward(xs)?;
        return if relu { y.relu() } else { Ok(y) };
    }
    let zeros;
    let b = match lin.bias() {
        Some(b) => b,
        None => {
            zeros = Tensor::zeros(w.dim(0)?, xs.dtype(), xs.device())?;
            &zeros
        }
    };
    xs.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        Fused3(LinearOp { relu }),
    )
}

/// The dense layer as one candle op on `(x (B, I), W (O, I), b (O))` → `(B, O)`:
///
/// ```text
/// y  = x Wᵀ + b   (then ReLU)        one GEMM, b as its initial value, rows split over threads
/// dz = dy ⊙ [y > 0]                  (ReLU)
/// dx = dz W        only when x needs a gradient
/// dW = dzᵀ x       in W's own layout, rows split over threads
/// db = Σ_rows dz
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LinearOp {
    pub relu: bool,
}

impl LinearOp {
    fn dims(x: &candle_core::Shape, w: &candle_core::Shape) -> Result<(usize, usize, usize)> {
        let (b, i) = x.dims2()?;
        let (o, wi) = w.dims2()?;
        if wi != i {
            candle_core::bail!(
                "linear: input has {i} features, weight {:?} expects {wi}",
                w.dims()
            )
        }
        Ok((b, i, o))
    }

    fn forward<F: KernelFloat>(
        &self,
        (b, i, o): (usize, usize, usize),
        x: &[F],
        w: &[F],
        bias: &[F],
    ) -> Vec<F> {
        // y starts as the bias in every row (the GEMM's initial value): no zero-fill first.
        let mut y = Vec::with_capacity(b * o);
        for _ in 0..b {
            y.extend_from_slice(bias);
        }
        if b <= cpu::FEW_ROWS {
            // A handful of rows (decoding): dot products over W as stored, columns split over
            // the pool, instead of a GEMM that repacks all of W for them.
            cpu::matmul_nt_rows((b, o, i), &mut y, true, x, i, w, true);
            if self.relu {
                let zero = F::zero();
                y.iter_mut()
                    .for_each(|v| *v = if *v < zero { zero } else { *v });
            }
            return y;
        }
        // SAFETY: y is b×o, x b×i, Wᵀ is i×o (W is o×i row-major). Split over the pool by
        // rows or, when there are more outputs than rows, by output columns (each thread then
        // packs only its part of W).
        unsafe {
            cpu::par_matmul(
                (b, o, i),
                Mat::row_major(y.as_mut_ptr(), o),
                true,
                Mat::row_major(x.as_ptr(), i),
                Mat::col_major(w.as_ptr(), i),
            );
        }
        if self.relu {
            let zero = F::zero();
            y.iter_mut()
                .for_each(|v| *v = if *v < zero { zero } else { *v });
        }
        y
    }

    #[allow(clippy::type_complexity)]
    fn backward<F: KernelFloat>(
        &self,
        (b, i, o): (usize, usize, usize),
        (x, w, y, dy): (&[F], &[F], &[F], &[F]),
        want_dx: bool,
    ) -> (Option<Vec<F>>, Vec<F>, Vec<F>) {
        if b == 0 {
            return (
                want_dx.then(Vec::new),
                vec![F::zero(); o * i],
                vec![F::zero(); o],
            );
        }
        let dz: std::borrow::Cow<[F]> = if self.relu {
            dy.iter()
                .zip(y)
                .map(|(&g, &v)| if v > F::zero() { g } else { F::zero() })
                .collect()
        } else {
            dy.into()
        };
        let mut db = vec![F::zero(); o];
        for row in dz.chunks(o) {
            db.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
        }
        let t = cpu::threads();
        // Written whole by the GEMMs (no zero-fill first): dW = dzᵀ x.
        let mut dw: Vec<F> = Vec::with_capacity(o * i);
        let per_o = o.div_ceil(t).max(1);
        cpu::parallel(
            dw.spare_capacity_mut()[..o * i]
                .chunks_mut(per_o * i)
                .enumerate(),
            |(j, dwb)| {
                let rows = dwb.len() / i.max(1);
                let dwb: *mut F = dwb.as_mut_ptr().cast();
                // SAFETY: dwb is rows×i; dzᵀ rows o0.. are rows×b (dz is b×o row-major); x is b×i.
                unsafe {
                    cpu::matmul(
                        (rows, i, b),
                        Mat::row_major(dwb, i),
                        false,
                        Mat::col_major(dz.as_ptr().add(j * per_o), o),
                        Mat::row_major(x.as_ptr(), i),
                    );
                }
            },
        );
        // SAFETY: the GEMMs above wrote all o·i values (b ≥ 1, checked above).
        unsafe { dw.set_len(o * i) };
        let dx = want_dx.then(|| {
            let mut dx = vec![F::zero(); b * i];
            let per = b.div_ceil(t).max(1);
            cpu::parallel(
                dx.chunks_mut(per * i).zip(dz.chunks(per * o)),
                |(dxb, dzb)| {
                    let rows = dxb.len() / i.max(1);
                    // SAFETY: dxb is rows×i, dzb rows×o, W is o×i.
                    unsafe {
                        cpu::matmul(
                            (rows, i, o),
                            Mat::row_major(dxb.as_mut_ptr(), i),
                            false,
                            Mat::row_major(dzb.as_ptr(), o),
                            Mat::row_major(w.as_ptr(), i),
                        );
                    }
                },
            );
            dx
        });
        (dx, dw, db)
    }
}

impl<F: KernelFloat> CpuOp3<F> for LinearOp {
    const NAME: &'static str = "neka-linear";

    fn cpu_fwd(&self, [x, w, b]: [Input<'_>; 3]) -> Result<(Vec<F>, Shape)> {
        let d = Self::dims(x.shape(), w.shape())?;
        if b.shape().dims() != [d.2] {
            candle_core::bail!("linear: bias {:?} must be [{}]", b.shape().dims(), d.2)
        }
        let what = "linear";
        let y = self.forward(d, x.slice(what)?, w.slice(what)?, b.slice(what)?);
        Ok((y, Shape::from((d.0, d.2))))
    }

    fn bwd(&self, [x, w, _]: [&Tensor; 3], y: &Tensor, dy: &Tensor) -> Result<Grads3> {
        let d = LinearOp::dims(x.shape(), w.shape())?;
        let what = "linear backward";
        let (dx, dw, db) = cpu::with_slice::<F, _>(x, what, |xs| {
            cpu::with_slice::<F, _>(w, what, |ws| {
                cpu::with_slice::<F, _>(y, what, |ys| {
                    cpu::with_slice::<F, _>(dy, what, |dys| {
                        self.backward(d, (xs, ws, ys, dys), x.track_op())
                    })
                })
            })
        })????;
        Ok((
            dx.map(|v| Tensor::from_vec(v, x.shape(), &Device::Cpu))
                .transpose()?,
            Some(Tensor::from_vec(dw, w.shape(), &Device::Cpu)?),
            Some(Tensor::from_vec(db, d.2, &Device::Cpu)?),
        ))
    }
}

/// Inverted dropout with a seeded mask: in training each element is zeroed with probability
/// `p` and the survivors are scaled by `1/(1−p)`; at evaluation it is the identity.
///
/// Same semantics as `torch.nn.Dropout` and `candle_nn::Dropout`, but the mask comes from
/// neka's model RNG ([`crate::rng`]), so a seeded run is reproducible (candle's CPU RNG
/// cannot be seeded).
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    p: f32,
}

impl Dropout {
    /// `p` must be in `[0, 1)`.
    pub fn new(p: f32) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            candle_core::bail!("dropout probability must be in [0, 1), got {p}")
        }
        Ok(Self { p })
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }
}

impl ModuleT for Dropout {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(xs.clone());
        }
        let p = self.p;
        let scale = 1.0 / (1.0 - p);
        let n = xs.elem_count();
        let mask: Vec<f32> = rng::with_rng(|r| {
            use rand::Rng;
            (0..n)
                .map(|_| if r.random::<f32>() < p { 0.0 } else { scale })
                .collect()
        });
        let mask = Tensor::from_vec(mask, xs.shape(), &Device::Cpu)?
            .to_dtype(xs.dtype())?
            .to_device(xs.device())?;
        xs * mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn gpu_tensors_never_take_the_cpu_dense_op() {
        for loc in [
            DeviceLocation::Cuda { gpu_id: 0 },
            DeviceLocation::Metal { gpu_id: 0 },
        ] {
            for dt in [DType::F32, DType::F64, DType::BF16] {
                assert!(!linear_uses_kernel(loc, dt, dt), "{loc:?} {dt:?}");
            }
        }
        assert!(!linear_uses_kernel(
            DeviceLocation::Cpu,
            DType::F16,
            DType::F16
        ));
        assert!(!linear_uses_kernel(
            DeviceLocation::Cpu,
            DType::F32,
            DType::BF16
        ));
    }

    #[test]
    fn dropout_is_seeded_scaled_and_off_in_eval() -> Result<()> {
        let x = Tensor::ones((1000,), DType::F32, &Device::Cpu)?;
        let d = Dropout::new(0.25)?;
        rng::seed(1);
        let a = d.forward_t(&x, true)?.to_vec1::<f32>()?;
        rng::seed(1);
        let b = d.forward_t(&x, true)?.to_vec1::<f32>()?;
        assert_eq!(a, b);
        let zeros = a.iter().filter(|v| **v == 0.0).count();
        assert!((200..300).contains(&zeros), "{zeros} of 1000 dropped");
        assert!(a.iter().all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6));
        assert_eq!(d.forward_t(&x, false)?.to_vec1::<f32>()?, vec![1.0; 1000]);
        assert!(Dropout::new(1.0).is_err());
        Ok(())
    }

    #[test]
    fn linear_has_pytorch_names_shapes_and_bounds() -> Result<()> {
        rng::seed(0);
        let vm = candle_nn::VarMap::new();
        let vb = crate::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
        let _ = linear(100, 7, true, vb.pp("fc1"))?;
        let data = vm.data().lock().unwrap();
        let w = data["fc1.weight"].as_tensor();
        assert_eq!(w.dims(), &[7, 100]);
        let max = w.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(max <= 0.1 && max > 0.08, "max |w| = {max}");
        assert_eq!(data["fc1.bias"].as_tensor().dims(), &[7]);
        Ok(())
    }
}
