//! Seeded, reproducible parameter creation for candle's [`VarBuilder`].
//!
//! [`seeded_var_builder`] returns an ordinary `VarBuilder` whose variables land in a
//! [`VarMap`] (so candle's optimizers and `VarMap::save` see them), but whose random
//! initial values come from neka's seeded model RNG ([`crate::rng`]) instead of candle's
//! unseedable CPU RNG. Every [`Init`] variant is honoured, so candle-nn layers built
//! from it keep their documented init.

use crate::rng;
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::{Init, VarBuilder, VarMap};
use rand_distr::Distribution;

struct SeededBackend {
    varmap: VarMap,
}

/// Draws a tensor of `shape` following `init` from the model RNG.
pub fn init_tensor(init: Init, shape: &Shape, dtype: DType, device: &Device) -> Result<Tensor> {
    let n = shape.elem_count();
    let values: Vec<f32> = match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Uniform { lo, up } => rng::uniform_vec(n, lo, up),
        Init::Randn { mean, stdev } => normal_vec(n, mean, stdev)?,
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    rng::uniform_vec(n, -bound, bound)
                }
                NormalOrUniform::Normal => normal_vec(n, 0.0, std)?,
            }
        }
    };
    Tensor::from_vec(values, shape.clone(), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

fn normal_vec(n: usize, mean: f64, stdev: f64) -> Result<Vec<f32>> {
    let normal = rand_distr::Normal::new(mean, stdev)
        .map_err(|e| candle_core::Error::Msg(format!("invalid normal init: {e}")))?;
    Ok(rng::with_rng(|r| {
        (0..n).map(|_| normal.sample(r) as f32).collect()
    }))
}

impl candle_nn::var_builder::SimpleBackend for SeededBackend {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.varmap.data().lock().unwrap();
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!(
                    "parameter `{name}` was created with shape {:?} and is now asked for as {s:?}",
                    var.shape()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let var = Var::from_tensor(&init_tensor(h, &s, dtype, dev)?)?;
        let t = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        match self.varmap.data().lock().unwrap().get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("parameter `{name}` does not exist yet and has no shape"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().unwrap().contains_key(name)
    }
}

/// A `VarBuilder` that creates trainable variables in `varmap`, drawing initial values from
/// neka's seeded model RNG. Call [`crate::rng::seed`] first to pick the seed.
///
/// ```
/// use candle_nn::{VarMap, Module};
/// neka_common::rng::seed(42);
/// let varmap = VarMap::new();
/// let vb = neka_common::init::seeded_var_builder(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu);
/// let fc = neka_common::nn::linear(4, 2, true, vb.pp("fc"))?;
/// assert_eq!(varmap.all_vars().len(), 2); // fc.weight, fc.bias
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn seeded_var_builder<'a>(varmap: &VarMap, dtype: DType, device: &Device) -> VarBuilder<'a> {
    let backend: Box<dyn candle_nn::var_builder::SimpleBackend + 'a> = Box::new(SeededBackend {
        varmap: varmap.clone(),
    });
    VarBuilder::from_backend(backend, dtype, device.clone())
}
