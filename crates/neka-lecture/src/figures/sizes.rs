//! The lecture's size figures: receptive-field growth and parameter / MAC counts, every
//! number from [`neka_cnn::summarize`] and the lecture's examples ([`crate::conv`]).

use crate::conv as lecture;
use crate::plot::bars::{
    plot_bars, plot_grouped_bars, thousands, Bar, BarPanel, BarSeries, GroupedPanel,
};
use neka_cnn::summary::{summarize, LayerSpec};
use neka_cnn::{mnist_net, Result};
use std::path::Path;

/// Receptive field (one side, in input pixels) after each conv and pool layer of `layers`,
/// from [`summarize`] on a 1×28×28 input.
pub(super) fn rf_sizes(layers: &[(&str, LayerSpec)]) -> Result<Vec<f64>> {
    let s = summarize((1, 28, 28), layers)?;
    Ok(s.layers
        .iter()
        .zip(layers)
        .filter(|(_, (_, spec))| matches!(spec, LayerSpec::Conv(_) | LayerSpec::Pool(_)))
        .filter_map(|(l, _)| l.receptive_field.map(|(h, _)| h as f64))
        .collect())
}

/// MnistNet's layers up to the flatten (conv1, ReLU, conv2, ReLU, max-pool, dropout).
pub(super) fn mnist_spatial() -> Vec<(&'static str, LayerSpec)> {
    mnist_net::Config::default()
        .architecture()
        .into_iter()
        .take_while(|(_, l)| *l != LayerSpec::Flatten)
        .collect()
}

/// Receptive-field growth: MnistNet's conv1, conv2, max-pool as they are and with dilation 2
/// or stride 2 in the convolutions; and five stacked 3×3 convs, plain, dilated, strided and
/// with doubling dilation.
pub fn receptive_field(path: &Path) -> Result<()> {
    let spatial = mnist_spatial();
    let variant = |f: &dyn Fn(&str, neka_cnn::Conv2dConfig) -> neka_cnn::Conv2dConfig| {
        let layers: Vec<(&str, LayerSpec)> = spatial
            .iter()
            .map(|(name, l)| match l {
                LayerSpec::Conv(c) => (*name, LayerSpec::Conv(f(name, *c))),
                other => (*name, other.clone()),
            })
            .collect();
        rf_sizes(&layers)
    };
    let colours = [(210, 70, 60), (40, 150, 70), (230, 140, 0), (40, 100, 210)];
    let series = |label: &str, colour: usize, values: Vec<f64>| BarSeries {
        label: label.to_string(),
        colour: colours[colour],
        values,
    };
    let groups: Vec<String> = spatial
        .iter()
        .filter_map(|(name, l)| match l {
            LayerSpec::Conv(c) => Some(format!(
                "{name}\n{}×{} conv",
                c.kernel_size.0, c.kernel_size.1
            )),
            LayerSpec::Pool(p) => Some(format!("{name}\nmax {0}×{0}", p.kernel)),
            _ => None,
        })
        .collect();
    let mnist = GroupedPanel {
        title: "MnistNet's layers, and with dilation or stride".into(),
        y_label: "receptive field (input pixels per side)".into(),
        groups,
        series: vec![
            series("MnistNet as it is", 0, variant(&|_, c| c)?),
            series(
                "dilation 2 in conv1, conv2 (the span of 5×5 kernels)",
                1,
                variant(&|_, c| c.dilation(2))?,
            ),
            series(
                "stride 2 in conv1",
                2,
                variant(&|n, c| if n == "conv1" { c.stride(2) } else { c })?,
            ),
            series(
                "stride 2 in conv1 and conv2",
                3,
                variant(&|_, c| c.stride(2))?,
            ),
        ],
        log_scale: false,
    };
    let depth = 5;
    let stack = |f: &dyn Fn(usize) -> (usize, usize)| -> Vec<f64> {
        let layers: Vec<(usize, usize, usize)> = (0..depth)
            .map(|i| {
                let (s, d) = f(i);
                (3, s, d)
            })
            .collect();
        lecture::receptive_fields(&layers)
            .iter()
            .map(|r| r.size as f64)
            .collect()
    };
    let deep = GroupedPanel {
        title: format!("{depth} stacked 3×3 convs: deeper, dilated, strided"),
        y_label: "receptive field (input pixels per side)".into(),
        groups: (1..=depth).map(|i| format!("layer {i}")).collect(),
        series: vec![
            series("stride 1, dilation 1: +2 per layer", 0, stack(&|_| (1, 1))),
            series("dilation 2: +4 per layer", 1, stack(&|_| (1, 2))),
            series(
                "stride 2 in layers 1 and 2: then +8 per layer",
                2,
                stack(&|i| (if i < 2 { 2 } else { 1 }, 1)),
            ),
            series(
                "dilation 1, 2, 4, 8, 16: doubles per layer",
                3,
                stack(&|i| (1, 1 << i)),
            ),
        ],
        log_scale: false,
    };
    plot_grouped_bars(
        path,
        "Receptive field r of one output unit: per layer r ← r + d(k − 1)·j, j = product of the strides before",
        &[mnist, deep],
    )?;
    Ok(())
}

/// Parameters of a dense layer vs a conv layer on a 28×28 image, and the MACs and
/// parameters of a 3×3 conv with and without a 1×1 bottleneck.
pub fn param_counts(path: &Path) -> Result<()> {
    let share = lecture::sharing_example();
    let (oh, ow) = share.out_hw;
    let c = &share.conv;
    let maps = format!("{}×{oh}×{ow}", c.out_channels);
    let (red, blue) = ((210, 80, 60), (70, 130, 200));
    let times = share.dense_params as f64 / share.conv_params as f64;
    let sharing = BarPanel::new(
        format!("parameters: {}× more in the dense layer", thousands(times)),
        "parameters",
        vec![
            Bar::new(
                format!("dense layer\n28×28 = 784 inputs\n→ {maps} outputs"),
                share.dense_params as f64,
            )
            .colour(red),
            Bar::new(
                format!(
                    "conv {}×{}, {} filters\none filter shared\nby all {} positions",
                    c.kernel_size.0,
                    c.kernel_size.1,
                    c.out_channels,
                    oh * ow
                ),
                share.conv_params as f64,
            )
            .colour(blue),
        ],
    )
    .log_scale(true);
    let (direct, bottleneck) = lecture::bottleneck_example()?;
    let (b1, b3) = (&bottleneck.layers[0], &bottleneck.layers[1]);
    let pair = |what: &str, y_label: &str, d: f64, parts: (f64, f64)| {
        BarPanel::new(
            format!(
                "{what}: {:.1}× fewer with a 1×1 first",
                d / (parts.0 + parts.1)
            ),
            y_label,
            vec![
                Bar::new("3×3 conv 64 → 64", d).colour(red),
                Bar::new(
                    format!(
                        "1×1 conv 64 → 16: {}\n+ 3×3 conv 16 → 64: {}",
                        thousands(parts.0),
                        thousands(parts.1)
                    ),
                    parts.0 + parts.1,
                )
                .colour(blue),
            ],
        )
    };
    let macs = pair(
        "MACs",
        "multiply-accumulates (MACs) per image",
        direct.total_macs() as f64,
        (b1.macs as f64, b3.macs as f64),
    );
    let params = pair(
        "parameters",
        "parameters (weights and biases)",
        direct.total_params() as f64,
        (b1.params as f64, b3.params as f64),
    );
    plot_bars(
        path,
        &format!(
            "Parameter sharing on a 28×28 image (→ {maps}) and the 1×1 bottleneck on 64×28×28"
        ),
        &[sharing, macs, params],
    )?;
    Ok(())
}
