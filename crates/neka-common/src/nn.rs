//! Small layers shared by all neka models, initialised exactly like PyTorch.
//!
//! candle-nn's `linear` draws weights from a Kaiming *normal*; PyTorch's `nn.Linear` and
//! `nn.Conv2d` use `kaiming_uniform_(a=√5)`, i.e. U(−1/√fan_in, 1/√fan_in), for weights and
//! the same bound for biases. neka follows PyTorch so that models trained here start where
//! the same PyTorch model would, and so that parity with PyTorch can be tested.

use crate::rng;
use candle_core::{Device, Module, ModuleT, Result, Tensor};
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

/// `ReLU(x) = max(0, x)` as a [`Module`], for layer lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct Relu;

impl Module for Relu {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.relu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

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
