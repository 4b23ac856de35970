//! Gradient clipping by global norm.

use crate::Result;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// Scales all gradients so their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
///
/// This is the lecture's remedy for *exploding* gradients: the direction of the update is
/// kept, only its length is capped.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[(String, Var)], max_norm: f64) -> Result<f64> {
    let mut sq = Vec::new();
    for (_, v) in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq.push(g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?);
        }
    }
    if sq.is_empty() {
        return Ok(0.0);
    }
    let total = Tensor::stack(&sq, 0)?.sum_all()?.to_scalar::<f64>()?.sqrt();
    if total.is_finite() && total > max_norm {
        let scale = max_norm / (total + 1e-6);
        for (_, v) in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn clip_scales_to_max_norm() -> Result<()> {
        let v = Var::from_tensor(&Tensor::new(&[3f32, 4.0], &Device::Cpu)?)?;
        let loss = v.as_tensor().sqr()?.sum_all()?.affine(0.5, 0.0)?; // g = θ = [3, 4]
        let mut grads = loss.backward()?;
        let vars = vec![("w".to_string(), v.clone())];
        let n = clip_grad_norm(&mut grads, &vars, 1.0)?;
        assert!((n - 5.0).abs() < 1e-6);
        let g = grads.get(v.as_tensor()).unwrap().to_vec1::<f32>()?;
        assert!(
            (g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5,
            "{g:?}"
        );
        Ok(())
    }
}
