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
    /// A 2-D convolution.
    Conv(Conv2dConfig),
    /// Max or average pooling.
    Pool(Pool2d),
    /// `max(0, x)`: no parameters, shape unchanged.
    Relu,
    /// Dropout with this probability: no parameters, shape unchanged.
    Dropout(f32),
    /// `(C, H, W)` → `(C·H·W)`.
    Flatten,
    /// A dense layer `(in_features)` → `(out_features)`.
    Linear {
        /// Input features; the shape before must be `[in_features]`.
        in_features: usize,
        /// Output features.
        out_features: usize,
        /// Whether the layer has a bias (`out_features` more parameters).
        bias: bool,
    },
    /// Batch normalisation over this many channels (`torch.nn.BatchNorm2d`): `2C` parameters
    /// (γ, β) and `2C + 1` buffer values (running mean and variance, batch count).
    BatchNorm(usize),
    /// The mean of each channel over the whole map (`AdaptiveAvgPool2d(1)`): `(C, H, W)` →
    /// `(C, 1, 1)`; one output sees every input pixel the layer before it saw.
    GlobalAvgPool,
    /// A skip connection `y = main(x) + shortcut(x)`: both branches start from the same input
    /// and must end in the same shape. An empty `shortcut` is the identity. Each branch's
    /// layers get a row named `<name>.<layer>`, then the addition a row of its own, `<name>`.
    Residual {
        /// The residual branch `F(x)`, named layers in order.
        main: Vec<(String, LayerSpec)>,
        /// The shortcut branch `S(x)`, named layers in order; empty for the identity.
        shortcut: Vec<(String, LayerSpec)>,
    },
}

/// A row of the summary table.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSummary {
    /// The layer's name (`conv1`, `layer1.0.conv1`, …): a branch layer is prefixed with its
    /// block's name.
    pub name: String,
    /// What the layer is, briefly: `conv 3x3 s2 p1`, `max-pool 2`, `relu`, `linear`, …
    pub kind: String,
    /// Output shape without the batch dimension: `[C, H, W]` or `[F]`.
    pub output_shape: Vec<usize>,
    /// Trained parameters.
    pub params: usize,
    /// Values kept but not trained (batch norm's running statistics).
    pub buffers: usize,
    /// Receptive field `(h, w)` in input pixels of one output unit (spatial layers only).
    pub receptive_field: Option<(usize, usize)>,
    /// Multiply-accumulates per example.
    pub macs: u64,
}

/// The whole table, with totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Input shape without the batch dimension: `[C, H, W]`.
    pub input_shape: Vec<usize>,
    /// One row per layer, in order (residual blocks: their branches' layers, then the addition).
    pub layers: Vec<LayerSummary>,
}

impl Summary {
    /// Trained parameters (what an optimizer updates; buffers not included).
    pub fn total_params(&self) -> usize {
        self.layers.iter().map(|l| l.params).sum()
    }
    /// Buffer values (batch norm's running statistics), kept apart from the parameters.
    pub fn total_buffers(&self) -> usize {
        self.layers.iter().map(|l| l.buffers).sum()
    }
    /// Multiply-accumulates per example, all layers.
    pub fn total_macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }
    /// The last layer's output shape without the batch dimension (the input shape for no layers).
    pub fn output_shape(&self) -> &[usize] {
        self.layers
            .last()
            .map(|l| l.output_shape.as_slice())
            .unwrap_or(&self.input_shape)
    }
}

/// Where the walk through the layers is: the shape of one example and the receptive field of
/// one of its units, per spatial dimension.
#[derive(Debug, Clone)]
struct State {
    shape: Vec<usize>,
    rf_h: ReceptiveField,
    rf_w: ReceptiveField,
}

/// Walks `layers` from an input of `(C, H, W)`, computing each layer's output shape,
/// parameters, receptive field and MACs. Fails if a layer does not fit its input.
pub fn summarize<S: AsRef<str>>(
    input: (usize, usize, usize),
    layers: &[(S, LayerSpec)],
) -> Result<Summary> {
    let mut state = State {
        shape: vec![input.0, input.1, input.2],
        rf_h: ReceptiveField::default(),
        rf_w: ReceptiveField::default(),
    };
    let mut rows = Vec::new();
    walk("", &mut state, layers, &mut rows)?;
    Ok(Summary {
        input_shape: vec![input.0, input.1, input.2],
        layers: rows,
    })
}

/// Pushes the rows of `layers` (names prefixed by `prefix`) onto `rows`, advancing `state`.
fn walk<S: AsRef<str>>(
    prefix: &str,
    state: &mut State,
    layers: &[(S, LayerSpec)],
    rows: &mut Vec<LayerSummary>,
) -> Result<()> {
    for (name, layer) in layers {
        let name = format!("{prefix}{}", name.as_ref());
        let shape = state.shape.clone();
        let spatial = shape.len() == 3;
        let bad = |msg: String| Error::config(format!("layer `{name}`"), msg);
        let (kind, params, buffers, macs) = match layer {
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
                state.rf_h = state.rf_h.after(c.kernel_size.0, c.stride, c.dilation);
                state.rf_w = state.rf_w.after(c.kernel_size.1, c.stride, c.dilation);
                state.shape = vec![c.out_channels, oh, ow];
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
                (k, c.num_params(), 0, macs)
            }
            LayerSpec::Pool(p) => {
                if !spatial {
                    return Err(bad(format!("pooling needs (C, H, W), gets {shape:?}")));
                }
                let (oh, ow) = p.output_size((shape[1], shape[2])).ok_or_else(|| {
                    bad(format!("pool {} does not fit input {shape:?}", p.kernel))
                })?;
                state.rf_h = state.rf_h.after(p.kernel, p.stride, 1);
                state.rf_w = state.rf_w.after(p.kernel, p.stride, 1);
                state.shape = vec![shape[0], oh, ow];
                let k = match p.kind {
                    PoolKind::Max => "max-pool",
                    PoolKind::Avg => "avg-pool",
                };
                (format!("{k} {}", p.kernel), 0, 0, 0)
            }
            LayerSpec::GlobalAvgPool => {
                if !spatial {
                    return Err(bad(format!("pooling needs (C, H, W), gets {shape:?}")));
                }
                // one window of the whole map: kernel H × W
                state.rf_h = state.rf_h.after(shape[1], shape[1], 1);
                state.rf_w = state.rf_w.after(shape[2], shape[2], 1);
                state.shape = vec![shape[0], 1, 1];
                ("global avg-pool".to_string(), 0, 0, 0)
            }
            LayerSpec::BatchNorm(c) => {
                if shape.is_empty() || shape[0] != *c {
                    return Err(bad(format!("expects {c} channels, gets shape {shape:?}")));
                }
                ("batchnorm".to_string(), 2 * c, 2 * c + 1, 0)
            }
            LayerSpec::Residual { main, shortcut } => {
                let input = state.clone();
                walk(&format!("{name}."), state, main, rows)?;
                let mut skip = input;
                walk(&format!("{name}."), &mut skip, shortcut, rows)?;
                if skip.shape != state.shape {
                    return Err(bad(format!(
                        "the main branch gives {:?}, the shortcut {:?}: they cannot be added",
                        state.shape, skip.shape
                    )));
                }
                if (skip.rf_h.jump, skip.rf_w.jump) != (state.rf_h.jump, state.rf_w.jump) {
                    return Err(bad(format!(
                        "the branches have strides {} and {}: their units do not line up",
                        state.rf_h.jump, skip.rf_h.jump
                    )));
                }
                // a unit of the sum sees what either branch's unit sees: the larger window
                state.rf_h.size = state.rf_h.size.max(skip.rf_h.size);
                state.rf_w.size = state.rf_w.size.max(skip.rf_w.size);
                let k = if shortcut.is_empty() {
                    "add identity"
                } else {
                    "add projection"
                };
                (k.to_string(), 0, 0, 0)
            }
            LayerSpec::Relu => ("relu".to_string(), 0, 0, 0),
            LayerSpec::Dropout(p) => (format!("dropout {p}"), 0, 0, 0),
            LayerSpec::Flatten => {
                state.shape = vec![shape.iter().product()];
                ("flatten".to_string(), 0, 0, 0)
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
                state.shape = vec![*out_features];
                (
                    "linear".to_string(),
                    arith::linear_params(*in_features, *out_features, *bias),
                    0,
                    (*in_features * *out_features) as u64,
                )
            }
        };
        rows.push(LayerSummary {
            name,
            kind,
            receptive_field: (state.shape.len() == 3).then_some((state.rf_h.size, state.rf_w.size)),
            output_shape: state.shape.clone(),
            params,
            buffers,
            macs,
        });
    }
    Ok(())
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
        // the name column fits the longest name (`layer2.0.downsample.0`), at least 10 wide
        let nw = self
            .layers
            .iter()
            .map(|l| l.name.chars().count())
            .fold(10, usize::max);
        writeln!(
            f,
            "{:<nw$} {:<16} {:>12} {:>11} {:>8} {:>13}",
            "layer", "kind", "output", "params", "RF", "MACs"
        )?;
        writeln!(
            f,
            "{:<nw$} {:<16} {:>12}",
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
                "{:<nw$} {:<16} {:>12} {:>11} {:>8} {:>13}",
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
            "total: {} parameters, ",
            thousands(self.total_params() as u64)
        )?;
        if self.total_buffers() > 0 {
            write!(
                f,
                "{} buffer values (batch-norm statistics, not trained), ",
                thousands(self.total_buffers() as u64)
            )?;
        }
        write!(f, "{} MACs per image", thousands(self.total_macs()))
    }
}
