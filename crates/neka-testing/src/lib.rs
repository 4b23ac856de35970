//! # neka-testing
//!
//! neka's test support, kept out of the published crates' API (`publish = false`; every crate
//! of the workspace takes it as a dev-dependency only):
//!
//! - the helpers below (this module), for checking candle computations: how far apart two
//!   tensors are, and whether a backward pass agrees with finite differences;
//! - [`fuzzing`], the harness behind `fuzz/`'s `cargo fuzz` targets and `tests/fuzz_corpora.rs`.
//!
//! neka's tests pit every fused CPU kernel against its plain candle-op twin, against PyTorch
//! and against central differences; these are the pieces they share. They take and return
//! plain candle types ([`Tensor`], [`Var`], `candle_core::Result`), so they serve just as well
//! for checking your own ops.
//!
//! | function | what |
//! |---|---|
//! | [`max_abs`] | `max \|t\|` over every entry, in f64 |
//! | [`max_abs_diff`] | `max \|a − b\|`, in f64 (shapes must match) |
//! | [`rel_diff`] | `max \|a − b\| / max(floor, max \|b\|)` |
//! | [`assert_close`] | panics unless `max \|a − b\| < tol` |
//! | [`cotangent`], [`vjp`] | a random `g` shaped like `y`, and the gradients of `L = Σ y ⊙ g` |
//! | [`vjp_pair`] | the same for two computations of one function, with one `g` |
//! | [`finite_difference_grad`] | `(f(x + ε) − f(x − ε)) / 2ε`, entry by entry of a [`Var`] |
//! | [`gradient_check`] | the same, next to autograd's gradient |
//! | [`overfit_config`] | training settings for "can the model fit a tiny fixture?" |
//! | [`damage`] | a model directory's copy with one weight or record field changed, for loader tests |
//! | [`snapshot`] | every file of a folder with its bytes, to check that a failed operation changed nothing |
//!
//! Comparing two implementations of one function `y = F(x, θ)` in the backward pass: probe
//! both with the same random cotangent `g` and compare `∂(Σ y ⊙ g)/∂p` for each tensor `p`
//! ([`cotangent`], [`vjp`], [`vjp_pair`]): every output and every entry of every gradient
//! takes part.

pub mod fuzzing;

use candle_core::{DType, Result, Tensor, Var};
use neka_common::optim::OptimizerConfig;
use neka_common::train::TrainConfig;

/// `max |t|` over every entry of `t` (any dtype, any rank; computed in f64).
pub fn max_abs(t: &Tensor) -> Result<f64> {
    t.to_dtype(DType::F64)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar()
}

/// `max |a − b|` over every entry, computed in f64 (so two f32 tensors are compared without
/// rounding their difference). `a` and `b` must have the same shape (no broadcasting) and be
/// on the same device.
///
/// ```rust
/// use candle_core::{Device, Tensor};
/// let a = Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu)?;
/// let b = Tensor::new(&[1f32, 2.5, 2.0], &Device::Cpu)?;
/// assert_eq!(neka_testing::max_abs_diff(&a, &b)?, 1.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        candle_core::bail!(
            "max_abs_diff: shapes differ: {:?} vs {:?}",
            a.dims(),
            b.dims()
        );
    }
    max_abs(&(a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?)
}

/// The error of `a` relative to the reference `b`: `max |a − b| / max(floor, max |b|)`.
///
/// `floor = 1` makes it absolute for small values and relative for large ones (the usual
/// choice for outputs and gradients of order one); a tiny floor makes it relative to `b`'s own
/// scale, so that a gradient that is wrongly scaled fails even when all its entries are ≪ 1.
///
/// ```rust
/// use candle_core::{Device, Tensor};
/// use neka_testing::rel_diff;
/// let b = Tensor::new(&[64f64, -128.0], &Device::Cpu)?;
/// let a = Tensor::new(&[65f64, -128.0], &Device::Cpu)?;
/// assert_eq!(rel_diff(&a, &b, 1.0)?, 1.0 / 128.0);
/// // values of scale 2⁻¹³, half again too large: absolute error 2⁻¹⁴, relative 0.5
/// let small = (&b / 2f64.powi(20))?;
/// let off = (&small * 1.5)?;
/// assert_eq!(rel_diff(&off, &small, 1.0)?, 2f64.powi(-14));
/// assert_eq!(rel_diff(&off, &small, 1e-12)?, 0.5);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn rel_diff(a: &Tensor, b: &Tensor, floor: f64) -> Result<f64> {
    Ok(max_abs_diff(a, b)? / max_abs(b)?.max(floor))
}

/// Panics unless `max |a − b| < tol`, naming `what` and the difference.
///
/// ```rust
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[0.5f32, -1.5], &Device::Cpu)?;
/// neka_testing::assert_close(&x.relu()?, &x.maximum(0f32)?, 1e-7, "relu");
/// # Ok::<(), candle_core::Error>(())
/// ```
#[track_caller]
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    match max_abs_diff(a, b) {
        Ok(d) => assert!(d < tol, "{what}: max |a − b| = {d:e}, not < {tol:e}"),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// A random cotangent for `y`: `g ~ N(0, 1)` of `y`'s shape, dtype and device (drawn in f32,
/// then converted). The scalar `L = Σ y ⊙ g` then depends on every entry of `y`, so its
/// gradient checks the whole backward pass (see [`vjp`]).
pub fn cotangent(y: &Tensor) -> Result<Tensor> {
    Tensor::randn(0f32, 1.0, y.shape(), y.device())?.to_dtype(y.dtype())
}

/// The gradients of `L = Σ y ⊙ g` with respect to each of `params`, in order: the
/// vector–Jacobian products `gᵀ ∂y/∂p`. An error names the first of `params` that gets no
/// gradient.
///
/// ```rust
/// use candle_core::{Device, Tensor, Var};
/// use neka_testing::{assert_close, cotangent, vjp};
/// // two ways to compute y = x²: same value, same gradient
/// let x = Var::new(&[[1f64, -2.0], [0.5, 3.0]], &Device::Cpu)?;
/// let (a, b) = (x.as_tensor().sqr()?, (x.as_tensor() * x.as_tensor())?);
/// let g = cotangent(&a)?;
/// let (da, db) = (vjp(&a, &g, &[x.as_tensor()])?, vjp(&b, &g, &[x.as_tensor()])?);
/// assert_close(&da[0], &db[0], 1e-12, "dx");
/// assert_close(&da[0], &((x.as_tensor() * 2.0)? * &g)?, 1e-12, "2x ⊙ g");
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn vjp(y: &Tensor, g: &Tensor, params: &[&Tensor]) -> Result<Vec<Tensor>> {
    let grads = (y * g)?.sum_all()?.backward()?;
    params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            grads.get(p).cloned().ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "vjp: no gradient for params[{i}] (shape {:?})",
                    p.dims()
                ))
            })
        })
        .collect()
}

/// The backward passes of two computations `a` and `b` of the same function, probed with one
/// random [`cotangent`] `g` (drawn for `a`): `(∂(Σ a ⊙ g)/∂p, ∂(Σ b ⊙ g)/∂p)` for each `p` of
/// `params`, in order. Compare each pair with [`max_abs_diff`] or [`rel_diff`].
pub fn vjp_pair(a: &Tensor, b: &Tensor, params: &[&Tensor]) -> Result<Vec<(Tensor, Tensor)>> {
    let g = cotangent(a)?;
    Ok(vjp(a, &g, params)?
        .into_iter()
        .zip(vjp(b, &g, params)?)
        .collect())
}

/// Central finite differences of the scalar function `f` with respect to `var`, at the
/// entries `indices` of the flattened `var`:
///
/// `∂f/∂x_i ≈ (f(x + ε e_i) − f(x − ε e_i)) / 2ε`
///
/// whose error is `O(ε²)` (plus rounding, `O(δ / ε)` for a loss computed to precision `δ`:
/// in f64 take `ε ≈ 1e-6`; in f32 only large gradients are resolved, with `ε ≈ 1e-2`).
///
/// `f` is called with `var` holding the perturbed values (`var` is set in place, so `f` reads
/// it like any other use of the variable); `var` holds its original values again when this
/// returns, also after an error. The perturbation is applied in f64 and converted to `var`'s
/// dtype.
pub fn finite_difference_grad<I, F>(var: &Var, indices: I, eps: f64, mut f: F) -> Result<Vec<f64>>
where
    I: IntoIterator<Item = usize>,
    F: FnMut() -> Result<f64>,
{
    let base = var.as_tensor().copy()?;
    let values: Vec<f64> = base.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let mut at = |i: usize, delta: f64| -> Result<f64> {
        let mut v = values.clone();
        v[i] += delta;
        var.set(&Tensor::from_vec(v, base.shape(), base.device())?.to_dtype(base.dtype())?)?;
        f()
    };
    let out: Result<Vec<f64>> = indices
        .into_iter()
        .map(|i| {
            if i >= values.len() {
                candle_core::bail!(
                    "finite_difference_grad: index {i} out of range for {} entries",
                    values.len()
                );
            }
            Ok((at(i, eps)? - at(i, -eps)?) / (2.0 * eps))
        })
        .collect();
    var.set(&base)?;
    out
}

/// One entry of a [`gradient_check`]: autograd's and the finite difference's `∂f/∂x_index`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradientEntry {
    /// The entry of the flattened variable.
    pub index: usize,
    /// The gradient computed by the backward pass.
    pub analytic: f64,
    /// The central difference `(f(x + ε) − f(x − ε)) / 2ε`.
    pub numeric: f64,
}

impl GradientEntry {
    /// `|numeric − analytic|`.
    pub fn abs_err(&self) -> f64 {
        (self.numeric - self.analytic).abs()
    }
}

/// Autograd's gradient `analytic` (= `∂f/∂var`, from `backward`) next to the central finite
/// differences of `f` ([`finite_difference_grad`]) at the entries `indices` of the flattened
/// `var`. The tolerance is the caller's: it depends on the dtype, `ε` and the function.
///
/// ```rust
/// use candle_core::{Device, Var};
/// use neka_testing::gradient_check;
/// // f(x) = Σ x³, so ∂f/∂x = 3x²
/// let x = Var::new(&[0.5f64, -1.0, 2.0], &Device::Cpu)?;
/// let f = || (x.as_tensor().sqr()? * x.as_tensor())?.sum_all();
/// let grads = f()?.backward()?;
/// let dx = grads.get(x.as_tensor()).unwrap();
/// for e in gradient_check(&x, dx, 0..3, 1e-6, || f()?.to_scalar::<f64>())? {
///     assert!(e.abs_err() < 1e-6 * (1.0 + e.analytic.abs()), "{e:?}");
/// }
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn gradient_check<I, F>(
    var: &Var,
    analytic: &Tensor,
    indices: I,
    eps: f64,
    f: F,
) -> Result<Vec<GradientEntry>>
where
    I: IntoIterator<Item = usize>,
    F: FnMut() -> Result<f64>,
{
    if analytic.dims() != var.dims() {
        candle_core::bail!(
            "gradient_check: gradient of shape {:?} for a variable of shape {:?}",
            analytic.dims(),
            var.dims()
        );
    }
    let a: Vec<f64> = analytic.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let indices: Vec<usize> = indices.into_iter().collect();
    let numeric = finite_difference_grad(var, indices.iter().copied(), eps, f)?;
    Ok(indices
        .into_iter()
        .zip(numeric)
        .map(|(index, numeric)| GradientEntry {
            index,
            analytic: a[index],
            numeric,
        })
        .collect())
}

/// Every file under `dir` with its bytes (the run lock `.neka.lock` aside), sorted by path:
/// for "nothing changed" checks on run and model directories. Panics on an unreadable tree.
pub fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)
        .expect("readable directory")
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            v.extend(snapshot(&p));
        } else if !p.ends_with(neka_common::run_dir::LOCK_FILE) {
            v.push((p.clone(), std::fs::read(&p).expect("readable file")));
        }
    }
    v.sort();
    v
}

/// Training settings for the test every model should pass: fitting a tiny fixture perfectly
/// (training accuracy 1, every sentence translated exactly). `epochs` epochs of batches of
/// `batch_size`, AdamW at a constant learning rate of 1e-2, gradients clipped at norm 1,
/// seed 1; the rest [`TrainConfig::default`]. Change a field with struct update syntax:
///
/// ```rust
/// use neka_testing::overfit_config;
/// use neka_common::train::TrainConfig;
/// let cfg = TrainConfig {
///     clip_grad_norm: Some(5.0),
///     ..overfit_config(40, 5)
/// };
/// assert_eq!((cfg.epochs, cfg.batch_size, cfg.seed), (40, 5, 1));
/// cfg.validate()?;
/// # Ok::<(), neka_common::Error>(())
/// ```
pub fn overfit_config(epochs: usize, batch_size: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size,
        optimizer: OptimizerConfig::adamw(1e-2),
        schedule: neka_common::optim::LrSchedule::Constant,
        clip_grad_norm: Some(1.0),
        seed: 1,
        ..TrainConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn finite_differences_restore_the_variable_and_catch_a_wrong_gradient() -> Result<()> {
        let x = Var::new(&[[0.3f32, -0.7], [1.1, 0.2]], &Device::Cpu)?;
        let before = x.as_tensor().copy()?;
        let f = || {
            x.as_tensor()
                .sin()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar()
        };
        let right = x.as_tensor().cos()?;
        for e in gradient_check(&x, &right, 0..4, f64::from(1e-2f32), f)? {
            assert!(e.abs_err() < 1e-3, "{e:?}");
        }
        let wrong = (&right * 1.1)?;
        let worst = gradient_check(&x, &wrong, 0..4, 1e-2, f)?
            .iter()
            .map(GradientEntry::abs_err)
            .fold(0.0, f64::max);
        assert!(worst > 1e-2, "a gradient 10% off went unnoticed: {worst}");
        assert_eq!(max_abs_diff(x.as_tensor(), &before)?, 0.0);
        assert!(finite_difference_grad(&x, [4], 1e-2, f).is_err());
        assert_eq!(max_abs_diff(x.as_tensor(), &before)?, 0.0);
        assert!(max_abs_diff(&before, &before.t()?.reshape(4)?).is_err());
        Ok(())
    }
}

/// Damaging a saved model on purpose, for tests of what loaders refuse: copy a model
/// directory ([`damage::copy_model_dir`]), set one weight in its `model.safetensors`
/// ([`damage::set_weight`]) or one field of its record ([`damage::set_record_field`]).
pub mod damage {
    use neka_common::{Error, Result};
    use std::path::Path;

    /// Copies every regular file of the model directory `src` into `dst` (created).
    pub fn copy_model_dir(src: &Path, dst: &Path) -> Result<()> {
        std::fs::create_dir_all(dst).map_err(|e| Error::io(dst, e))?;
        for entry in std::fs::read_dir(src).map_err(|e| Error::io(src, e))? {
            let p = entry.map_err(|e| Error::io(src, e))?.path();
            if p.is_file() {
                let to = dst.join(p.file_name().expect("a file has a name"));
                std::fs::copy(&p, &to).map_err(|e| Error::io(&p, e))?;
            }
        }
        Ok(())
    }

    /// Asserts that a loader refused the model directory `dir` as unusable
    /// ([`Error::UnusableModel`]), naming the directory first and the weight `` `weight` ``;
    /// returns the message for further checks.
    pub fn assert_unusable<T>(loaded: Result<T>, dir: &Path, weight: &str) -> String {
        let Err(e) = loaded else {
            panic!("{}: the damaged model was loaded", dir.display())
        };
        let msg = e.to_string();
        assert!(
            matches!(e, Error::UnusableModel { .. })
                && msg.starts_with(&format!("{}: the model cannot answer", dir.display()))
                && msg.contains(&format!("`{weight}`")),
            "{msg}"
        );
        msg
    }

    /// The JSON header of a safetensors file and where its data starts.
    fn header(bytes: &[u8], path: &Path) -> Result<(serde_json::Value, usize)> {
        let bad = |m: &str| Error::bad_data(path, m.to_string());
        let n = u64::from_le_bytes(
            bytes
                .get(..8)
                .ok_or_else(|| bad("shorter than a safetensors header"))?
                .try_into()
                .expect("8 bytes"),
        ) as usize;
        let json = bytes
            .get(8..8 + n)
            .ok_or_else(|| bad("header longer than the file"))?;
        let v = serde_json::from_slice(json).map_err(|e| bad(&format!("header: {e}")))?;
        Ok((v, 8 + n))
    }

    /// Sets element `index` (row-major) of the F32 tensor `name` in the safetensors file
    /// `weights` to `value`, in place; the rest of the file is unchanged.
    pub fn set_weight(weights: &Path, name: &str, index: usize, value: f32) -> Result<()> {
        let mut bytes = std::fs::read(weights).map_err(|e| Error::io(weights, e))?;
        let (h, data) = header(&bytes, weights)?;
        let t = &h[name];
        if t["dtype"] != "F32" {
            return Err(Error::bad_data(
                weights,
                format!("tensor `{name}` is missing or not F32"),
            ));
        }
        let start = t["data_offsets"][0].as_u64().unwrap_or(0) as usize;
        let end = t["data_offsets"][1].as_u64().unwrap_or(0) as usize;
        let at = data + start + 4 * index;
        if start + 4 * index + 4 > end {
            return Err(Error::bad_data(
                weights,
                format!("tensor `{name}` has no element {index}"),
            ));
        }
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        std::fs::write(weights, bytes).map_err(|e| Error::io(weights, e))
    }

    /// Sets field `key` of a model directory's record to the JSON `value`: in the weights
    /// file's metadata (where loaders read it) and in `config.json` beside it.
    pub fn set_record_field(dir: &Path, key: &str, value: serde_json::Value) -> Result<()> {
        let weights = dir.join(neka_common::checkpoint::WEIGHTS_FILE);
        let bytes = std::fs::read(&weights).map_err(|e| Error::io(&weights, e))?;
        let (mut h, data) = header(&bytes, &weights)?;
        h["__metadata__"][key] = serde_json::Value::String(value.to_string());
        let mut json = serde_json::to_vec(&h).expect("JSON values serialise");
        while json.len() % 8 != 0 {
            json.push(b' ');
        }
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&json);
        out.extend_from_slice(&bytes[data..]);
        std::fs::write(&weights, out).map_err(|e| Error::io(&weights, e))?;
        let cfg = dir.join("config.json");
        if cfg.is_file() {
            let text = std::fs::read_to_string(&cfg).map_err(|e| Error::io(&cfg, e))?;
            let mut c: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Json {
                    path: cfg.clone(),
                    source: e,
                })?;
            c[key] = value;
            std::fs::write(&cfg, serde_json::to_string_pretty(&c).expect("JSON"))
                .map_err(|e| Error::io(&cfg, e))?;
        }
        Ok(())
    }
}
