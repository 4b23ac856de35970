//! The fused CPU dense layer ([`neka_common::nn::linear_forward`]) against its candle-op twin
//! (`candle_nn::Linear` + `relu`) and against finite differences.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Linear, VarMap};
use neka_common::kernels::{Fused, LinearOp};
use neka_common::nn::{linear, linear_forward};
use neka_testing::{gradient_check, max_abs_diff, vjp_pair};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs_diff(a, b).unwrap()
}

/// Values and the gradients of input, weight and bias, with and without ReLU and bias, f32
/// and f64, batches that do and do not split evenly over threads.
#[test]
fn fused_linear_matches_candle_linear() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for dtype in [DType::F32, DType::F64] {
        for (batch, i, o, bias) in [
            (64, 9216, 128, true),
            (7, 33, 10, true),
            (1, 5, 3, false),
            (5, 400, 120, true),
        ] {
            for relu in [false, true] {
                neka_common::rng::seed(4);
                let vm = VarMap::new();
                let vb = neka_common::init::seeded_var_builder(&vm, dtype, &dev);
                let lin: Linear = linear(i, o, bias, vb)?;
                let x = Var::from_tensor(
                    &Tensor::randn(0f32, 1.0, (batch, i), &dev)?.to_dtype(dtype)?,
                )?;
                let a = linear_forward(&lin, x.as_tensor(), relu)?;
                let b = lin.forward(x.as_tensor())?;
                let b = if relu { b.relu()? } else { b };
                let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
                assert!(
                    max_diff(&a, &b) < tol,
                    "{batch}x{i}->{o} relu {relu}: {}",
                    max_diff(&a, &b)
                );
                let params: Vec<&Tensor> = [x.as_tensor(), lin.weight()]
                    .into_iter()
                    .chain(lin.bias())
                    .collect();
                for (da, db) in vjp_pair(&a, &b, &params)? {
                    let d = max_diff(&da, &db);
                    assert!(
                        d < tol * 10.0,
                        "{batch}x{i}->{o} relu {relu} {dtype:?}: gradient differs by {d}"
                    );
                }
            }
        }
    }
    Ok(())
}

/// f64 central differences against the op's gradients.
#[test]
fn fused_linear_finite_differences() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let x = Var::randn(0f64, 1.0, (3, 4), &dev)?;
    let w = Var::randn(0f64, 1.0, (5, 4), &dev)?;
    let b = Var::randn(0f64, 1.0, 5, &dev)?;
    for relu in [false, true] {
        let op = LinearOp { relu };
        let f = |x: &Tensor, w: &Tensor, b: &Tensor| x.apply_op3(w, b, Fused(op));
        let y = f(x.as_tensor(), w.as_tensor(), b.as_tensor())?;
        let g = Tensor::randn(0f64, 1.0, y.shape(), &dev)?;
        let grads = (&y * &g)?.sum_all()?.backward()?;
        let loss = || {
            (f(x.as_tensor(), w.as_tensor(), b.as_tensor())? * &g)?
                .sum_all()?
                .to_scalar::<f64>()
        };
        for (which, var) in [&x, &w, &b].into_iter().enumerate() {
            let analytic = grads.get(var.as_tensor()).unwrap();
            for e in gradient_check(var, analytic, 0..var.elem_count(), 1e-6, loss)? {
                assert!(
                    e.abs_err() < 1e-6 * (1.0 + e.numeric.abs()),
                    "relu {relu} arg {which} [{}]",
                    e.index
                );
            }
        }
    }
    Ok(())
}

/// N-D inputs are flattened into rows and take the CPU op (same values as candle's `Linear`,
/// same shape); other dtypes (here bf16) take candle's `Linear` itself.
#[test]
fn fused_linear_flattens_leading_dims_and_falls_back_for_other_dtypes() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &dev);
    let lin = linear(6, 4, true, vb)?;
    let x = Tensor::randn(0f32, 1.0, (2, 3, 6), &dev)?;
    let y = linear_forward(&lin, &x, false)?;
    assert_eq!(y.dims(), [2, 3, 4]);
    assert!(max_diff(&y, &lin.forward(&x)?) < 1e-6);
    let lin16 = candle_nn::Linear::new(
        lin.weight().to_dtype(DType::BF16)?,
        lin.bias().map(|b| b.to_dtype(DType::BF16)).transpose()?,
    );
    let x16 = x.to_dtype(DType::BF16)?;
    let a = linear_forward(&lin16, &x16, false)?.to_dtype(DType::F32)?;
    let b = lin16.forward(&x16)?.to_dtype(DType::F32)?;
    assert_eq!(max_diff(&a, &b), 0.0);
    Ok(())
}
