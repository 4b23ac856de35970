//! Looking inside a trained CNN: its first layer's filters and the feature maps of one image
//! (`mnist_cnn inspect`).
//!
//! A filter is a small grid of weights slid over the image (the lecture's 합성곱 filter); a
//! feature map is that filter's response at every position, `ReLU(w ⋆ x + b)`: bright where
//! the image looks like the filter. Deeper maps respond to combinations of the first ones.

use crate::loaded_model::LoadedModel;
use crate::{CnnModel, Result};
use candle_core::Tensor;
use neka_common::plot::images::{plot_image_grid, ImagePanel, Scale};
use std::path::Path;

/// `(N, h, w)`-shaped values of a tensor `(N, …, h, w)` on the host, as f32 panels.
fn panels(t: &Tensor, title: impl Fn(usize) -> String) -> Result<Vec<ImagePanel>> {
    let dims = t.dims().to_vec();
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let n = t.elem_count() / (h * w);
    let v: Vec<f32> = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    Ok((0..n)
        .map(|i| ImagePanel::new(title(i), h, w, v[i * h * w..(i + 1) * h * w].to_vec()))
        .collect())
}

/// Draws the first layer's filters (`conv1.weight (C_out, 1, kh, kw)`): red = positive weight,
/// blue = negative, each filter scaled on its own.
pub fn plot_filters(model: &CnnModel, path: &Path, title: &str) -> Result<()> {
    let w = model.conv1().weight();
    let (co, ci, kh, kw) = w.dims4()?;
    let w = if ci == 1 {
        w.clone()
    } else {
        w.mean_keepdim(1)?
    }; // colour inputs: channel mean
    let p = panels(&w.reshape((co, kh, kw))?, |i| format!("{i}"))?;
    let px = (96 / kh.max(kw)).max(4) as u32;
    plot_image_grid(path, title, &p, 8, px, Scale::Diverging)
}

/// Draws `x (1, C, H, W)` (normalised, as the model sees it) and the first `per_stage` maps of
/// every convolutional stage ([`CnnModel::feature_maps`]), one row per stage.
pub fn plot_feature_maps(
    model: &CnnModel,
    x: &Tensor,
    per_stage: usize,
    path: &Path,
    title: &str,
) -> Result<()> {
    let device = model.conv1().weight().device().clone();
    let x = x.to_device(&device)?;
    let stages = model.feature_maps(&x)?;
    let cols = per_stage.max(1);
    let mut all = panels(&x.get(0)?.mean_keepdim(0)?, |_| "input".to_string())?;
    all.resize_with(cols, || ImagePanel::new("", 0, 0, vec![]));
    for (name, maps) in &stages {
        let c = maps.dim(1)?;
        let shown = maps.get(0)?.narrow(0, 0, c.min(cols))?;
        let mut row = panels(&shown, |i| format!("{name} #{i}"))?;
        row.resize_with(cols, || ImagePanel::new("", 0, 0, vec![]));
        all.extend(row);
    }
    let size = all.iter().map(|p| p.h.max(p.w)).max().unwrap_or(1);
    let px = (112 / size).max(2) as u32;
    plot_image_grid(path, title, &all, cols, px, Scale::Gray)
}

/// What `mnist_cnn inspect` draws for the image `x` (described by `what`): conv1's filters in
/// `out/conv1_filters.png` and `maps_per_layer` feature maps of every stage in
/// `out/feature_maps.png`, titled with the model's prediction. Returns that title.
pub fn draw(
    loaded: &LoadedModel,
    x: &Tensor,
    what: &str,
    maps_per_layer: usize,
    out: &Path,
) -> Result<String> {
    let (class, p) = loaded.top_class(x)?;
    let title = format!("{what}: predicted {class} ({:.1} %)", 100.0 * p);
    let (co, _, kh, kw) = loaded.model.conv1().weight().dims4()?;
    let filters = format!(
        "{}: conv1's {co} learned {kh}x{kw} filters (red +, blue −)",
        loaded.info.model
    );
    plot_filters(&loaded.model, &out.join("conv1_filters.png"), &filters)?;
    let maps = out.join("feature_maps.png");
    plot_feature_maps(&loaded.model, x, maps_per_layer, &maps, &title)?;
    Ok(title)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn filters_and_feature_maps_of_both_models_are_drawn() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        for name in crate::MODEL_NAMES {
            let vm = candle_nn::VarMap::new();
            let vb = neka_common::init::seeded_var_builder(&vm, DType::F32, &Device::Cpu);
            let (model, _) = CnnModel::from_name(name, 1, 28, 10, vb)?;
            let x = Tensor::randn(0f32, 1.0, (1, 1, 28, 28), &Device::Cpu)?;
            let stages = model.feature_maps(&x)?;
            assert!(stages.len() >= 3, "{name}");
            let f = dir.path().join(format!("{name}-filters.png"));
            plot_filters(&model, &f, "filters")?;
            let m = dir.path().join(format!("{name}-maps.png"));
            plot_feature_maps(&model, &x, 6, &m, "maps")?;
            for p in [f, m] {
                assert!(
                    std::fs::metadata(&p).unwrap().len() > 1000,
                    "{}",
                    p.display()
                );
            }
        }
        Ok(())
    }
}
