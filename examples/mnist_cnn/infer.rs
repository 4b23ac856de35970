//! `mnist_cnn eval | predict | inspect`: use a saved model.

use anyhow::{bail, Result};
use clap::Args;
use neka::cli::ModelArgs;
use neka_cnn::loaded_model::LoadedModel;
use neka_common::data::VisionDatasetKind;
use std::path::PathBuf;

/// The pretrained model these commands use without `--model`.
const PRETRAINED: &str = "models/mnist-cnn";

#[derive(Args)]
pub struct Eval {
    #[command(flatten)]
    model: ModelArgs,
    /// Dataset to evaluate on (default: the one the model was trained on).
    #[arg(long)]
    dataset: Option<VisionDatasetKind>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
}

#[derive(Args)]
pub struct Predict {
    #[command(flatten)]
    model: ModelArgs,
    /// Image files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Args)]
pub struct Inspect {
    #[command(flatten)]
    model: ModelArgs,
    /// An image file (PNG/JPEG); without one, test image --index of the model's dataset.
    image: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    index: usize,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Folder for conv1_filters.png and feature_maps.png.
    #[arg(long, default_value = "runs/mnist_cnn/inspect")]
    out: PathBuf,
    /// Feature maps shown per layer.
    #[arg(long, default_value_t = 8)]
    maps: usize,
}

pub fn eval(a: Eval) -> Result<()> {
    let (dir, device) = a.model.open(PRETRAINED, &[])?;
    let loaded = LoadedModel::load(&dir, &device)?;
    let (kind, m) = loaded.evaluate_test(a.dataset, a.data_dir.as_deref(), a.batch_size)?;
    println!(
        "{} on {kind} test: loss {:.4}, accuracy {:.2}%",
        dir.display(),
        m.loss,
        100.0 * m.accuracy
    );
    neka::cli::print_json(
        &serde_json::json!({"model": loaded.info.model, "dataset": kind.name(), "split": "test", "samples": m.count, "accuracy": m.accuracy}),
    );
    Ok(())
}

pub fn predict(a: Predict) -> Result<()> {
    let (dir, device) = a.model.open(PRETRAINED, &[])?;
    let loaded = LoadedModel::load(&dir, &device)?;
    let mut failed = false;
    for (path, top) in a.images.iter().zip(loaded.classify_files(&a.images, 3)?) {
        match top {
            Ok(top) => {
                let top: Vec<String> = top
                    .iter()
                    .map(|(c, p)| format!("{c} {:.1}%", 100.0 * p))
                    .collect();
                println!("{}: {}", path.display(), top.join(", "));
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("some images could not be read");
    }
    Ok(())
}

pub fn inspect(a: Inspect) -> Result<()> {
    let (dir, device) = a.model.open(PRETRAINED, &[])?;
    let loaded = LoadedModel::load(&dir, &device)?;
    let (x, what) = match &a.image {
        Some(p) => {
            neka_cnn::loaded_model::regular_file(p)?;
            let x = neka_cnn::images::load_image(p, loaded.image_size(), &loaded.normalize()?)?;
            (x, p.display().to_string())
        }
        None => loaded.test_image(a.index, a.data_dir.as_deref())?,
    };
    let title = neka_cnn::inspect::draw(&loaded, &x, &what, a.maps, &a.out)?;
    println!(
        "{title}\nwrote conv1_filters.png and feature_maps.png in {}",
        a.out.display()
    );
    Ok(())
}
