//! The input preprocessing a model's record carries (`normalize` in its metadata): the data
//! loaders compute and apply it, the record saves it, so it lives with the record and the
//! data modules depend on the checkpoint module, never the other way.

use serde::{Deserialize, Serialize};

/// Per-channel input normalisation `x' = (x/255 − mean) / std`, stored in `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Per-channel mean of the pixels scaled to `[0, 1]` (one value for grey images).
    pub mean: Vec<f64>,
    /// Per-channel standard deviation of the pixels scaled to `[0, 1]`.
    pub std: Vec<f64>,
}

impl Normalize {
    /// Mean and standard deviation of pixels scaled to [0, 1] (single channel).
    pub fn compute(pixels: &[u8]) -> Self {
        let n = pixels.len().max(1) as f64;
        let mean = pixels.iter().map(|&p| p as f64 / 255.0).sum::<f64>() / n;
        let var = pixels
            .iter()
            .map(|&p| (p as f64 / 255.0 - mean).powi(2))
            .sum::<f64>()
            / n;
        Self {
            mean: vec![(mean * 1e4).round() / 1e4],
            std: vec![(var.sqrt() * 1e4).round() / 1e4],
        }
    }

    /// The smallest standard deviation a record may give: pixels lie in [0, 1], so a std
    /// below this would scale them past a millionfold (a std of 1e-45 turns every pixel into
    /// an infinity, and every answer into NaN).
    pub const MIN_STD: f64 = 1e-6;

    /// Checks what [`Normalize::apply`] relies on: one mean and one std per channel (as many
    /// of each, at least one), every mean finite and every std finite and ≥
    /// [`Normalize::MIN_STD`]. The message says what is wrong (the caller names the file).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.mean.is_empty() || self.mean.len() != self.std.len() {
            return Err(format!(
                "needs one mean and one std per channel, found {} mean(s) and {} std(s)",
                self.mean.len(),
                self.std.len()
            ));
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(format!("mean {m} is not a finite number"));
        }
        if let Some(s) = self
            .std
            .iter()
            .find(|s| !(s.is_finite() && **s >= Self::MIN_STD))
        {
            return Err(format!(
                "std {s:e} must be a finite number ≥ {:e} (it divides every pixel in [0, 1]); \
                 write the training pixels' standard deviation (MNIST: 0.3081)",
                Self::MIN_STD
            ));
        }
        Ok(())
    }

    /// Normalises `u8` pixels of a single-channel image set into f32.
    pub fn apply(&self, pixels: &[u8]) -> Vec<f32> {
        let (m, s) = (self.mean[0] as f32, self.std[0] as f32);
        pixels.iter().map(|&p| (p as f32 / 255.0 - m) / s).collect()
    }
}
