//! Loading a saved CNN and preparing its inputs: what `mnist_cnn eval` and `predict` (and
//! your own program) need to use a model directory such as `models/mnist-cnn`.
//!
//! ```no_run
//! let model = neka_cnn::pipeline::LoadedModel::load("models/mnist-cnn".as_ref(), &candle_core::Device::Cpu)?;
//! println!("{} trained on {}", model.info.model, model.info.dataset);
//! # Ok::<(), neka_cnn::Error>(())
//! ```

use crate::{CnnModel, Error, Result};
use candle_core::{Device, ModuleT, Tensor};
use candle_nn::VarMap;
use neka_common::checkpoint::{self, CheckpointInfo};
use neka_common::data::{vision, Dataset, Normalize, VisionDatasetKind};
use std::path::Path;

/// A CNN loaded from a model directory (`model.safetensors` + `config.json`).
pub struct LoadedModel {
    pub model: CnnModel,
    pub info: CheckpointInfo,
    pub varmap: VarMap,
    pub device: Device,
}

impl LoadedModel {
    /// Loads `dir/config.json`, builds the model it names and loads `dir/model.safetensors`
    /// into it (strictly: every tensor present with its shape, nothing extra).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(neka_common::Error::checkpoint(
                dir,
                "model directory not found (it should hold model.safetensors and config.json)",
            )
            .into());
        }
        let (info, source) = checkpoint::read_record(dir)?;
        let (model, varmap) = checkpoint::load_model(dir, device, |vb| {
            CnnModel::from_config(&info.model, &info.config, vb)
                .map_err(|e| neka_common::Error::checkpoint(&source, e.to_string()))
        })?;
        let field = |k: &str| info.config.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        let (classes, channels) = (field("num_classes"), field("in_channels"));
        if !info.classes.is_empty() && info.classes.len() != classes {
            return Err(neka_common::Error::checkpoint(
                &source,
                format!(
                    "field `classes` names {} classes, the model has {classes} outputs",
                    info.classes.len()
                ),
            )
            .into());
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
            )
            .into());
        }
        Ok(Self {
            model,
            info,
            varmap,
            device: device.clone(),
        })
    }

    /// The normalisation the model was trained with.
    pub fn normalize(&self) -> Result<Normalize> {
        self.info.normalize.clone().ok_or_else(|| {
            Error::Config(format!(
                "model `{}` has no `normalize` field in config.json",
                self.info.model
            ))
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
            return Err(Error::Config(format!(
                "--index {index}: the {kind} test set has {} images",
                test.len()
            )));
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

    /// The most likely class of one image and its probability.
    pub fn top_class(&self, x: &Tensor) -> Result<(String, f32)> {
        let probs: Vec<f32> = self.probabilities(x)?.flatten_all()?.to_vec1()?;
        let best = (0..probs.len())
            .max_by(|&i, &j| probs[i].total_cmp(&probs[j]))
            .unwrap_or(0);
        let name = self
            .info
            .classes
            .get(best)
            .cloned()
            .unwrap_or_else(|| best.to_string());
        Ok((name, probs.get(best).copied().unwrap_or(0.0)))
    }

    /// Class probabilities `(B, classes)` for normalised images `(B, C, H, W)`.
    pub fn probabilities(&self, xs: &Tensor) -> Result<Tensor> {
        let logits = self.model.forward_t(&xs.to_device(&self.device)?, false)?;
        Ok(candle_nn::ops::softmax_last_dim(&logits)?)
    }
}
