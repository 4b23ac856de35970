//! The registry of the zoo's CNNs: what `mnist_cnn --model NAME`, `eval`, `predict`,
//! `inspect`, the demo and checkpoint loading find by name.
//!
//! Adding a CNN is one new file in `models/` — the model, its `Config`, and
//! `register!(Model, "name", forward)` (or `impl Cnn` and `impl Registered` by hand) — plus its
//! line in [`MODELS`]. No `match name` anywhere else.

use crate::summary::Summary;
use crate::{Error, Result};
use candle_nn::VarBuilder;
use std::sync::Arc;

pub use super::cnn::{Cnn, Registered};

/// The CNNs of the zoo, in the order `--model` lists them. Adding one: its file (with
/// `register!`), then one line here.
pub const MODELS: &[Entry] = &[
    entry::<super::mnist_net::MnistNet>(),
    entry::<super::lenet5::LeNet5>(),
    entry::<super::resnet::ResNet>(),
];

/// The names [`crate::CnnModel::from_name`] accepts, in [`MODELS`]' order.
pub const MODEL_NAMES: [&str; MODELS.len()] = {
    let mut names = [""; MODELS.len()];
    let mut i = 0;
    while i < MODELS.len() {
        names[i] = MODELS[i].name;
        i += 1;
    }
    names
};

/// One line of [`MODELS`]: a name and how to build, configure and summarise that model from
/// JSON. Made by [`entry`].
#[derive(Clone, Copy)]
pub struct Entry {
    /// The model's name ([`Registered::NAME`]).
    pub name: &'static str,
    build: fn(&serde_json::Value, VarBuilder) -> Result<Arc<dyn Cnn>>,
    config_for: fn(usize, usize, usize) -> Result<serde_json::Value>,
    summary: fn(&serde_json::Value) -> Result<Summary>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("name", &self.name).finish()
    }
}

/// The [`MODELS`] line of the model `M`.
pub const fn entry<M: Registered>() -> Entry {
    Entry {
        name: M::NAME,
        build: build::<M>,
        config_for: config_for::<M>,
        summary: summary::<M>,
    }
}

impl Entry {
    /// The entry named `name`, or an error listing the names.
    pub fn find(name: &str) -> Result<&'static Entry> {
        MODELS.iter().find(|e| e.name == name).ok_or_else(|| {
            Error::config(
                "model",
                format!("`{name}`: expected one of {MODEL_NAMES:?}"),
            )
        })
    }
    /// Builds the model from its `config.json` `config` value.
    pub fn build(&self, config: &serde_json::Value, vb: VarBuilder) -> Result<Arc<dyn Cnn>> {
        (self.build)(config, vb)
    }
    /// The default config, as JSON, for images of `in_channels × image_size²` and
    /// `num_classes` classes.
    pub fn config_for(
        &self,
        in_channels: usize,
        image_size: usize,
        num_classes: usize,
    ) -> Result<serde_json::Value> {
        (self.config_for)(in_channels, image_size, num_classes)
    }
    /// The layer summary for a config value.
    pub fn summary(&self, config: &serde_json::Value) -> Result<Summary> {
        (self.summary)(config)
    }
}

fn parse<M: Registered>(config: &serde_json::Value) -> Result<M::Config> {
    serde_json::from_value(config.clone())
        .map_err(|e| Error::config(format!("config of `{}`", M::NAME), e.to_string()))
}

fn build<M: Registered>(config: &serde_json::Value, vb: VarBuilder) -> Result<Arc<dyn Cnn>> {
    Ok(Arc::new(M::build(&parse::<M>(config)?, vb)?))
}

/// `M`'s default config with the data's `in_channels`, `image_size` and `num_classes`, as JSON
/// (read back as `M::Config`, so it is one `M` accepts).
fn config_for<M: Registered>(c: usize, size: usize, classes: usize) -> Result<serde_json::Value> {
    let bad = |e: serde_json::Error| Error::config("model config", e.to_string());
    let mut config = serde_json::to_value(M::Config::default()).map_err(bad)?;
    for (key, value) in [
        ("in_channels", c),
        ("image_size", size),
        ("num_classes", classes),
    ] {
        config[key] = value.into();
    }
    let config: M::Config = serde_json::from_value(config).map_err(bad)?;
    serde_json::to_value(config).map_err(bad)
}

fn summary<M: Registered>(config: &serde_json::Value) -> Result<Summary> {
    M::summary(&parse::<M>(config)?)
}
