//! Small layers shared by all neka models, initialised exactly like PyTorch.
//!
//! candle-nn's `linear` draws weights from a Kaiming *normal*; PyTorch's `nn.Linear` and
//! `nn.Conv2d` use `kaiming_uniform_(a=√5)`, i.e. U(−1/√fan_in, 1/√fan_in), for weights and
//! the same bound for biases. neka follows PyTorch so that models trained here start where
//! the same PyTorch model would, and so that parity with PyTorch can be tested.

use crate::kernels::{self, Fused, LinearOp};
use crate::rng;
use candle_core::{DType, Device, DeviceLocation, Module, ModuleT, Result, Tensor};
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

/// The one place that picks [`linear_forward`]'s path: `true` for neka's CPU op
/// ([`kernels::fused_applies`]: the CPU, f32/f64, [`kernels::KernelPath::Fused`] selected; and
/// weights of the input's dtype), `false` for candle's ops (every CUDA / Metal tensor).
pub fn linear_uses_kernel(location: DeviceLocation, dtype: DType, weight_dtype: DType) -> bool {
    kernels::fused_applies(location, dtype) && weight_dtype == dtype
}

/// `y = x Wᵀ + b`, then `max(0, y)` if `relu`, for a candle [`candle_nn::Linear`].
///
/// `xs` is `(…, in)`: leading dimensions are flattened into rows and restored after.
/// On CPU with f32/f64 inputs this is one op ([`LinearOp`], [`crate::kernels::linear`]) whose GEMMs run on candle's
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
    xs.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Fused(LinearOp { relu }))
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
