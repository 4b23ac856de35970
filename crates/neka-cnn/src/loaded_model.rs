//! Loading a saved CNN and preparing its inputs: what `mnist_cnn eval` and `predict` (and
//! your own program) need to use a model directory such as `models/mnist-cnn`.
//!
//! ```no_run
//! let model = neka_cnn::loaded_model::LoadedModel::load("models/mnist-cnn".as_ref(), &candle_core::Device::Cpu)?;
//! println!("{} trained on {}", model.info.model, model.info.dataset);
//! # Ok::<(), neka_cnn::Error>(())
//! ```

use crate::{CnnModel, Error, Result};
use candle_core::{Device, ModuleT, Tensor};
use candle_nn::VarMap;
use neka_common::checkpoint::{self, CheckpointInfo};
use neka_common::data::{vision, Dataset, Normalize, VisionDatasetKind};
use neka_common::metrics::EvalMetrics;
use neka_common::train::{evaluate, Classifier};
use std::path::Path;

/// Class names with their probabilities, most likely first ([`LoadedModel::top_k`]).
pub type TopK = Vec<(String, f32)>;

/// One convolutional stage's output for one image ([`LoadedModel::read`]): `channels` maps of
/// `height × width`, map after map, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMaps {
    /// The stage, as [`CnnModel::feature_maps`] names it ("conv1 + ReLU", "pool", …).
    pub name: String,
    /// Number of maps (the stage's output channels).
    pub channels: usize,
    /// Height of each map, in pixels.
    pub height: usize,
    /// Width of each map, in pixels.
    pub width: usize,
    /// `channels · height · width` activations, map after map, each row-major.
    pub values: Vec<f32>,
}

impl FeatureMaps {
    /// Map `c` of the stage.
    pub fn map(&self, c: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.values[c * n..(c + 1) * n]
    }

    /// Each map scaled on its own to 0 … 255 (its largest value → 255; a map without a
    /// positive value is all 0), with that largest value: how the maps are shown as grey
    /// images, one bright spot per map however weak the map.
    pub fn to_bytes(&self) -> Vec<(f32, Vec<u8>)> {
        (0..self.channels)
            .map(|c| {
                let m = self.map(c);
                let max = m.iter().copied().fold(0f32, f32::max);
                let scale = if max > 0.0 { 255.0 / max } else { 0.0 };
                let px = m
                    .iter()
                    .map(|&v| (v.max(0.0) * scale).round().min(255.0) as u8)
                    .collect();
                (max, px)
            })
            .collect()
    }
}

/// What a CNN makes of one image ([`LoadedModel::read`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The most likely class (as [`LoadedModel::top_class`] names it).
    pub class: String,
    /// One probability per class, in the model's class order ([`LoadedModel::class_names`]).
    pub probabilities: Vec<f32>,
    /// Every convolutional stage's output, in order ([`CnnModel::feature_maps`]).
    pub feature_maps: Vec<FeatureMaps>,
}

/// A CNN loaded from a model directory (`model.safetensors` + `config.json`).
pub struct LoadedModel {
    /// The network, whichever of the zoo's CNNs `config.json` names.
    pub model: CnnModel,
    /// What the model directory says about the model (`config.json`): its name and config, the
    /// dataset, input normalisation, class names and final metrics.
    pub info: CheckpointInfo,
    /// The variables behind `model`'s weights (what is saved to `model.safetensors`).
    pub varmap: VarMap,
    /// The device the weights live on and inputs are moved to.
    pub device: Device,
}

impl LoadedModel {
    /// Loads `dir/config.json`, builds the model it names and loads `dir/model.safetensors`
    /// into it (strictly: every tensor present with its shape, nothing extra).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let p = checkpoint::Pretrained::load(
            dir,
            device,
            None,
            "model.safetensors and config.json",
            |info, source, vb| {
                CnnModel::from_config(&info.model, &info.config, vb)
                    .map_err(|e| neka_common::Error::checkpoint(source, e.to_string()))
            },
        )?;
        let (model, info, varmap, source) = (p.model, p.info, p.varmap, p.source);
        let field = |k: &str| info.config.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        let (classes, channels) = (field("num_classes"), field("in_channels"));
        if !info.classes.is_empty() && info.classes.len() != classes {
            return Err(neka_common::Error::checkpoint(
                &source,
                format!(
                    "field `classes` names {} classes, the model has {classes} outputs",
                    info.classes.len()
                ),
            ));
        }
        if info
            .normalize
            .as_ref()
            .is_some_and(|n| n.mean.len() != channels)
        {
            return Err(neka_common::Error::checkpoint(
                &source,
                format!(
                    "field `normalize` must give one mean and std per input channel ({channels})"
                ),
            ));
        }
        let loaded = Self {
            model,
            info,
            varmap,
            device: device.clone(),
        };
        loaded.probe(dir, channels.max(1))?;
        Ok(loaded)
    }

    /// Refuses a model that loads but cannot answer: the class probabilities of a blank
    /// (all-black) image, normalised with the record's `normalize`, must be finite
    /// ([`neka_common::finite::probe`], an error naming `dir`). Catches finite but extreme
    /// weights and preprocessing that blows pixels up.
    fn probe(&self, dir: &Path, channels: usize) -> Result<()> {
        let size = self.image_size() as usize;
        let x = match &self.info.normalize {
            Some(n) => {
                let per_channel: Vec<f32> = (0..channels)
                    .map(|c| ((0.0 - n.mean[c]) / n.std[c]) as f32)
                    .collect();
                Tensor::from_vec(per_channel, (1, channels, 1, 1), &self.device)?
                    .broadcast_as((1, channels, size, size))?
                    .contiguous()?
            }
            None => Tensor::zeros(
                (1, channels, size, size),
                candle_core::DType::F32,
                &self.device,
            )?,
        };
        let logits = self.model.forward_t(&x, false)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        neka_common::finite::probe(
            dir,
            &self.varmap,
            &Tensor::cat(&[logits.flatten_all()?, probs.flatten_all()?], 0)?,
            &format!("the class scores of a blank {size}×{size} probe image"),
        )
    }

    /// The normalisation the model was trained with.
    pub fn normalize(&self) -> Result<Normalize> {
        self.info.normalize.clone().ok_or_else(|| {
            Error::config(
                "normalize",
                format!(
                    "model `{}` has no `normalize` field in config.json",
                    self.info.model
                ),
            )
        })
    }

    /// The image side the model was built for (`config.json` `image_size`, else 28).
    pub fn image_size(&self) -> u32 {
        self.info
            .config
            .get("image_size")
            .and_then(|v| v.as_u64())
            .unwrap_or(28) as u32
    }

    /// Test image `index` of the dataset the model was trained on, normalised as in training
    /// `(1, C, H, W)`, with a description ("mnist test image 0 (label 7)").
    pub fn test_image(&self, index: usize, data_dir: Option<&Path>) -> Result<(Tensor, String)> {
        let kind: VisionDatasetKind = self.info.dataset.parse()?;
        let test = vision::load(kind, data_dir)?
            .test
            .to_dataset(&self.normalize()?, &Device::Cpu)?;
        if index >= test.len() {
            return Err(Error::config(
                "index",
                format!("{index}: the {kind} test set has {} images", test.len()),
            ));
        }
        let b = test.batch(&[index])?;
        let y = b.y.to_vec1::<u32>()?[0] as usize;
        let label = self
            .info
            .classes
            .get(y)
            .cloned()
            .unwrap_or_else(|| y.to_string());
        Ok((b.x, format!("{kind} test image {index} (label {label})")))
    }

    /// Loads image files (PNG/JPEG, any size) as the model's input ([`crate::images::load_image`]:
    /// grey, resized, white-on-black, normalised as in training) and names each one's `k`
    /// most likely classes with their probabilities, best first. One result per file: a file
    /// that cannot be read is an error for that file only.
    #[cfg(feature = "images")]
    pub fn classify_files(
        &self,
        paths: &[impl AsRef<Path>],
        k: usize,
    ) -> Result<Vec<Result<TopK>>> {
        let norm = self.normalize()?;
        Ok(paths
            .iter()
            .map(|p| {
                regular_file(p.as_ref())?;
                let x = crate::images::load_image(p.as_ref(), self.image_size(), &norm)?;
                self.top_k(&x, k).map_err(|e| match e {
                    neka_common::Error::NonFiniteOutput(m) => neka_common::Error::NonFiniteOutput(
                        format!("{}: {m}", p.as_ref().display()),
                    ),
                    e => e,
                })
            })
            .collect())
    }

    /// The `k` most likely classes of one image `(1, C, H, W)` and their probabilities, best
    /// first.
    pub fn top_k(&self, x: &Tensor, k: usize) -> Result<TopK> {
        let probs: Vec<f32> = self.probabilities(x)?.flatten_all()?.to_vec1()?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
        Ok(order
            .into_iter()
            .take(k)
            .map(|i| (self.class_name(i), probs[i]))
            .collect())
    }

    /// The class names in output order (`config.json` `classes`, else the indices).
    pub fn class_names(&self) -> Vec<String> {
        let n = self
            .info
            .config
            .get("num_classes")
            .and_then(|v| v.as_u64())
            .unwrap_or(self.info.classes.len() as u64) as usize;
        (0..n).map(|i| self.class_name(i)).collect()
    }

    /// Reads one normalised image `(1, C, H, W)`: its class probabilities, the most likely
    /// class, and the feature maps after every convolutional stage (inference mode), e.g.
    /// MnistNet's 32 maps of 26×26 after conv1 and 64 of 24×24 after conv2.
    pub fn read(&self, x: &Tensor) -> Result<Reading> {
        let probabilities: Vec<f32> = self.probabilities(x)?.flatten_all()?.to_vec1()?;
        let class = self.class_name(best(&probabilities));
        let x = x.to_device(&self.device)?;
        let mut feature_maps = Vec::new();
        for (name, maps) in self.model.feature_maps(&x)? {
            let (_, channels, height, width) = maps.dims4()?;
            let values = maps
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            feature_maps.push(FeatureMaps {
                name: name.to_string(),
                channels,
                height,
                width,
                values,
            });
        }
        Ok(Reading {
            class,
            probabilities,
            feature_maps,
        })
    }

    fn class_name(&self, i: usize) -> String {
        self.info
            .classes
            .get(i)
            .cloned()
            .unwrap_or_else(|| i.to_string())
    }

    /// Loss and accuracy on the test split of `kind` (default: the dataset the model was
    /// trained on, from `config.json`), normalised as in training. An error if the data's
    /// images are not the size the model takes.
    pub fn evaluate_test(
        &self,
        kind: Option<VisionDatasetKind>,
        data_dir: Option<&Path>,
        batch_size: usize,
    ) -> Result<(VisionDatasetKind, EvalMetrics)> {
        let kind = match kind {
            Some(k) => k,
            None => self.info.dataset.parse().map_err(|_| {
                Error::config(
                    "dataset",
                    format!(
                        "`{}` in config.json is not mnist or fashion-mnist: give the data set (`dataset`)",
                        self.info.dataset
                    ),
                )
            })?,
        };
        let data = vision::load(kind, data_dir)?;
        let size = self.image_size() as usize;
        let (rows, cols) = (data.test.images.rows, data.test.images.cols);
        if (rows, cols) != (size, size) {
            return Err(Error::config(
                "dataset",
                format!(
                    "{} holds {rows}×{cols} images; the model takes {size}×{size} (its \
                     image_size): evaluate it on images of that size",
                    data.source
                ),
            ));
        }
        let test = data.test.to_dataset(&self.normalize()?, &self.device)?;
        let m = evaluate(&Classifier(&self.model), &test, batch_size)?;
        Ok((kind, m))
    }

    /// The most likely class of one image and its probability.
    pub fn top_class(&self, x: &Tensor) -> Result<(String, f32)> {
        let probs: Vec<f32> = self.probabilities(x)?.flatten_all()?.to_vec1()?;
        let best = best(&probs);
        let name = self
            .info
            .classes
            .get(best)
            .cloned()
            .unwrap_or_else(|| best.to_string());
        Ok((name, probs.get(best).copied().unwrap_or(0.0)))
    }

    /// Class probabilities `(B, classes)` for normalised images `(B, C, H, W)`. Probabilities
    /// that are not finite (extreme weights, or an input of infinities) are an
    /// [`neka_common::Error::NonFiniteOutput`], never an answer.
    pub fn probabilities(&self, xs: &Tensor) -> Result<Tensor> {
        let logits = self.model.forward_t(&xs.to_device(&self.device)?, false)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        neka_common::finite::check(&probs, "the class probabilities")?;
        Ok(probs)
    }
}

/// Refuses what is not a regular file (a FIFO, a device, a directory) before it is opened:
/// opening a FIFO with no writer blocks forever, and a device can be read without end. Reads
/// the metadata only; the error names the path and what it is.
pub fn regular_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| neka_common::Error::io(path, e))?;
    if meta.is_file() {
        return Ok(());
    }
    let what = file_kind(&meta.file_type());
    Err(neka_common::Error::bad_data(
        path,
        format!("{what}, not an image file: give a PNG or JPEG file (save a pipe's image to a file first)"),
    ))
}

/// What a file that is not a regular file is, in words.
#[cfg(unix)]
fn file_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// What a file that is not a regular file is, in words.
#[cfg(not(unix))]
fn file_kind(ft: &std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// The index of the largest probability (the last of equal ones, as `max_by` keeps).
fn best(probs: &[f32]) -> usize {
    (0..probs.len())
        .max_by(|&i, &j| probs[i].total_cmp(&probs[j]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> LoadedModel {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/cnn/mnist-net");
        LoadedModel::load(&dir, &Device::Cpu).unwrap()
    }

    #[test]
    fn a_reading_agrees_with_top_k_and_holds_every_stage() -> Result<()> {
        let m = fixture();
        let size = m.image_size() as usize;
        let x = Tensor::randn(0f32, 1.0, (1, 1, size, size), &Device::Cpu)?;
        let r = m.read(&x)?;
        assert_eq!(m.class_names(), ["0", "1", "2"]);
        assert_eq!(r.probabilities.len(), 3);
        let top = m.top_k(&x, 3)?;
        for (c, p) in &top {
            let i: usize = c.parse().unwrap();
            assert_eq!(r.probabilities[i], *p);
        }
        assert_eq!(r.class, m.top_class(&x)?.0);
        let names: Vec<&str> = r.feature_maps.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["conv1 + ReLU", "conv2 + ReLU", "pool"]);
        let c1 = &r.feature_maps[0];
        assert_eq!((c1.channels, c1.height, c1.width), (32, size - 2, size - 2));
        assert_eq!(c1.values.len(), 32 * (size - 2) * (size - 2));
        Ok(())
    }

    #[test]
    fn maps_are_scaled_one_by_one_for_display() {
        let f = FeatureMaps {
            name: "conv1".into(),
            channels: 2,
            height: 1,
            width: 3,
            values: vec![0.0, 1.0, 2.0, -1.0, 0.0, 0.0],
        };
        let b = f.to_bytes();
        assert_eq!(b[0], (2.0, vec![0, 128, 255]));
        assert_eq!(b[1], (0.0, vec![0, 0, 0]));
    }
}
