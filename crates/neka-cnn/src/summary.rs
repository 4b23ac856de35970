//! `summary()`: per-layer output shape, parameters, receptive field and MACs, computed
//! from a model's layer list with the formulas in [`crate::arith`].

use crate::arith::{self, ReceptiveField};
use crate::conv::Conv2dConfig;
use crate::pool::{Pool2d, PoolKind};
use crate::{Error, Result};
use std::fmt;

/// One layer of a CNN, as far as shapes and costs are concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSpec {
    Conv(Conv2dConfig),
    Pool(Pool2d),
    Relu,
    Dropout(f32),
    Flatten,
    Linear {
        in_features: usize,
        out_features: usize,
        bias: bool,
    },
}

/// A row of the summary table.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSummary {
    pub name: String,
    pub kind: String,
    /// Output shape without the batch dimension: `[C, H, W]` or `[F]`.
    pub output_shape: Vec<usize>,
    pub params: usize,
    /// Receptive field `(h, w)` in input pixels of one output unit (spatial layers only).
    pub receptive_field: Option<(usize, usize)>,
    /// Multiply-accumulates per example.
    pub macs: u64,
}

/// The whole table, with totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub input_shape: Vec<usize>,
    pub layers: Vec<LayerSummary>,
}

impl Summary {
    pub fn total_params(&self) -> usize {
        self.layers.iter().map(|l| l.params).sum()
    }
    pub fn total_macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }
    pub fn output_shape(&self) -> &[usize] {
        self.layers
            .last()
            .map(|l| l.output_shape.as_slice())
            .unwrap_or(&self.input_shape)
    }
}

/// Walks `layers` from an input of `(C, H, W)`, computing each layer's output shape,
/// parameters, receptive field and MACs. Fails if a layer does not fit its input.
pub fn summarize(input: (usize, usize, usize), layers: &[(&str, LayerSpec)]) -> Result<Summary> {
    let mut shape = vec![input.0, input.1, input.2];
    let (mut rf_h, mut rf_w) = (ReceptiveField::default(), ReceptiveField::default());
    let mut rows = Vec::new();
    for (name, layer) in layers {
        let spatial = shape.len() == 3;
        let bad = |msg: String| Error::config(format!("layer `{name}`"), msg);
        let (kind, params, macs) = match layer {
            LayerSpec::Conv(c) => {
                if !spatial || shape[0] != c.in_channels {
                    return Err(bad(format!(
                        "expects {} input channels, gets shape {shape:?}",
                        c.in_channels
                    )));
                }
                let (oh, ow) = c.output_size((shape[1], shape[2])).ok_or_else(|| {
                    bad(format!(
                        "kernel {:?} does not fit input {shape:?}",
                        c.kernel_size
                    ))
                })?;
                let macs = arith::conv2d_macs(
                    c.in_channels,
                    c.out_channels,
                    c.kernel_size,
                    c.groups,
                    (oh, ow),
                );
                rf_h = rf_h.after(c.kernel_size.0, c.stride, c.dilation);
                rf_w = rf_w.after(c.kernel_size.1, c.stride, c.dilation);
                shape = vec![c.out_channels, oh, ow];
                let mut k = format!("conv {}x{}", c.kernel_size.0, c.kernel_size.1);
                if c.stride != 1 {
                    k += &format!(" s{}", c.stride);
                }
                if c.dilation != 1 {
                    k += &format!(" d{}", c.dilation);
                }
                let (ph, pw) = c.resolved_padding()?;
                if ph + pw > 0 {
                    k += &format!(" p{ph}");
                }
                (k, c.num_params(), macs)
            }
            LayerSpec::Pool(p) => {
                if !spatial {
                    return Err(bad(format!("pooling needs (C, H, W), gets {shape:?}")));
                }
                let (oh, ow) = p.output_size((shape[1], shape[2])).ok_or_else(|| {
                    bad(format!("pool {} does not fit input {shape:?}", p.kernel))
                })?;
                rf_h = rf_h.after(p.kernel, p.stride, 1);
                rf_w = rf_w.after(p.kernel, p.stride, 1);
                shape = vec![shape[0], oh, ow];
                let k = match p.kind {
                    PoolKind::Max => "max-pool",
                    PoolKind::Avg => "avg-pool",
                };
                (format!("{k} {}", p.kernel), 0, 0)
            }
            LayerSpec::Relu => ("relu".to_string(), 0, 0),
            LayerSpec::Dropout(p) => (format!("dropout {p}"), 0, 0),
            LayerSpec::Flatten => {
                shape = vec![shape.iter().product()];
                ("flatten".to_string(), 0, 0)
            }
            LayerSpec::Linear {
                in_features,
                out_features,
                bias,
            } => {
                if shape != [*in_features] {
                    return Err(bad(format!(
                        "expects {in_features} features, gets shape {shape:?}"
                    )));
                }
                shape = vec![*out_features];
                (
                    "linear".to_string(),
                    arith::linear_params(*in_features, *out_features, *bias),
                    (*in_features * *out_features) as u64,
                )
            }
        };
        rows.push(LayerSummary {
            name: name.to_string(),
            kind,
            receptive_field: (shape.len() == 3).then_some((rf_h.size, rf_w.size)),
            output_shape: shape.clone(),
            params,
            macs,
        });
    }
    Ok(Summary {
        input_shape: vec![input.0, input.1, input.2],
        layers: rows,
    })
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = |s: &[usize]| {
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x")
        };
        writeln!(
            f,
            "{:<10} {:<16} {:>12} {:>11} {:>8} {:>13}",
            "layer", "kind", "output", "params", "RF", "MACs"
        )?;
        writeln!(
            f,
            "{:<10} {:<16} {:>12}",
            "input",
            "",
            shape(&self.input_shape)
        )?;
        for l in &self.layers {
            let rf = l
                .receptive_field
                .map(|(h, w)| format!("{h}x{w}"))
                .unwrap_or_else(|| "-".into());
            writeln!(
                f,
                "{:<10} {:<16} {:>12} {:>11} {:>8} {:>13}",
                l.name,
                l.kind,
                shape(&l.output_shape),
                thousands(l.params as u64),
                rf,
                thousands(l.macs)
            )?;
        }
        write!(
            f,
            "total: {} parameters, {} MACs per image",
            thousands(self.total_params() as u64),
            thousands(self.total_macs())
        )
    }
}
