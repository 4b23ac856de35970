//! Convolution arithmetic: output sizes, "same" padding, receptive fields, parameter and
//! multiply-accumulate counts. Pure functions, so they can be read next to the formulas.
//!
//! For one spatial dimension with input size `in`, kernel `k`, padding `p` (each side),
//! stride `s` and dilation `d`:
//!
//! ```text
//! out = floor((in + 2p − d(k−1) − 1) / s) + 1
//! ```
//!
//! The *effective* kernel of a dilated convolution spans `d(k−1) + 1` inputs. With stride 1,
//! `p = d(k−1)/2` keeps the size ("same" padding; the lecture's `(k−1)/2` for `d = 1`).

/// Output size of a convolution or pooling along one dimension:
/// `floor((in + 2p − d(k−1) − 1) / s) + 1`. `None` if the (padded) input is smaller than
/// the effective kernel or `s = 0`.
///
/// ```
/// use neka_cnn::arith::conv_output_size;
/// assert_eq!(conv_output_size(28, 3, 0, 1, 1), Some(26)); // MnistNet conv1
/// assert_eq!(conv_output_size(5, 3, 1, 1, 1), Some(5));   // padding (k-1)/2 keeps the size
/// assert_eq!(conv_output_size(5, 3, 0, 2, 1), Some(2));   // stride 2
/// assert_eq!(conv_output_size(5, 3, 0, 1, 2), Some(1));   // dilation 2: effective kernel 5
/// ```
pub fn conv_output_size(
    input: usize,
    kernel: usize,
    padding: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let eff = effective_kernel(kernel, dilation);
    let padded = input + 2 * padding;
    if stride == 0 || kernel == 0 || padded < eff {
        return None;
    }
    Some((padded - eff) / stride + 1)
}

/// The span of a dilated kernel: `d(k−1) + 1`.
pub fn effective_kernel(kernel: usize, dilation: usize) -> usize {
    dilation * (kernel.saturating_sub(1)) + 1
}

/// "Same" padding `d(k−1)/2` for an odd kernel (the lecture's `(k−1)/2` when `d = 1`);
/// `None` for an even kernel, which cannot be padded symmetrically to keep the size.
///
/// ```
/// assert_eq!(neka_cnn::arith::same_padding(3, 1), Some(1));
/// assert_eq!(neka_cnn::arith::same_padding(5, 1), Some(2));
/// assert_eq!(neka_cnn::arith::same_padding(3, 2), Some(2));
/// assert_eq!(neka_cnn::arith::same_padding(4, 1), None);
/// ```
pub fn same_padding(kernel: usize, dilation: usize) -> Option<usize> {
    if kernel % 2 == 1 {
        Some(dilation * (kernel - 1) / 2)
    } else {
        None
    }
}

/// Receptive field bookkeeping along one dimension.
///
/// `size` is how many input pixels one output unit sees; `jump` is the distance in input
/// pixels between neighbouring output units (the product of the strides so far). A layer
/// with kernel `k`, dilation `d`, stride `s` gives
///
/// ```text
/// size' = size + (d(k−1)) · jump        jump' = jump · s
/// ```
///
/// so the field grows *linearly* with depth for stacked 3×3 convs (3, 5, 7, …), and much
/// faster after strides, pooling or dilation, which multiply `jump`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceptiveField {
    /// Input pixels one output unit sees along this dimension (1 for the input itself).
    pub size: usize,
    /// Input pixels between neighbouring output units: the product of the strides so far.
    pub jump: usize,
}

impl Default for ReceptiveField {
    fn default() -> Self {
        Self { size: 1, jump: 1 }
    }
}

impl ReceptiveField {
    /// The field after a layer with this kernel, stride and dilation.
    pub fn after(self, kernel: usize, stride: usize, dilation: usize) -> Self {
        Self {
            size: self.size + (effective_kernel(kernel, dilation) - 1) * self.jump,
            jump: self.jump * stride,
        }
    }
}

/// Parameters of a 2-D convolution: `out · (in/groups) · kh · kw` weights plus `out` biases.
///
/// Parameter *sharing*: this does not depend on the image size, unlike a dense layer.
pub fn conv2d_params(
    in_c: usize,
    out_c: usize,
    kernel: (usize, usize),
    groups: usize,
    bias: bool,
) -> usize {
    out_c * (in_c / groups.max(1)) * kernel.0 * kernel.1 + if bias { out_c } else { 0 }
}

/// Multiply-accumulates of a 2-D convolution producing `out_c × oh × ow` values:
/// each output needs `(in/groups) · kh · kw` of them.
pub fn conv2d_macs(
    in_c: usize,
    out_c: usize,
    kernel: (usize, usize),
    groups: usize,
    out_hw: (usize, usize),
) -> u64 {
    (out_c * out_hw.0 * out_hw.1) as u64 * ((in_c / groups.max(1)) * kernel.0 * kernel.1) as u64
}

/// Parameters of a fully-connected layer: `in · out + out`.
pub fn linear_params(in_f: usize, out_f: usize, bias: bool) -> usize {
    in_f * out_f + if bias { out_f } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_by_hand() {
        // LeNet-5: 28 --conv5 pad2--> 28 --pool2--> 14 --conv5--> 10 --pool2--> 5
        assert_eq!(conv_output_size(28, 5, 2, 1, 1), Some(28));
        assert_eq!(conv_output_size(28, 2, 0, 2, 1), Some(14));
        assert_eq!(conv_output_size(14, 5, 0, 1, 1), Some(10));
        assert_eq!(conv_output_size(10, 2, 0, 2, 1), Some(5));
        // floor: (7 + 0 - 3)/2 + 1 = 3
        assert_eq!(conv_output_size(7, 3, 0, 2, 1), Some(3));
        assert_eq!(conv_output_size(6, 3, 0, 2, 1), Some(2));
        assert_eq!(conv_output_size(2, 3, 0, 1, 1), None);
        // padding (k-1)/2 keeps the size for every odd k
        for k in [1, 3, 5, 7, 9] {
            assert_eq!(
                conv_output_size(17, k, same_padding(k, 1).unwrap(), 1, 1),
                Some(17)
            );
            assert_eq!(
                conv_output_size(17, k, same_padding(k, 3).unwrap(), 1, 3),
                Some(17)
            );
        }
    }

    #[test]
    fn receptive_field_growth() {
        let mut rf = ReceptiveField::default();
        let sizes: Vec<usize> = (0..3)
            .map(|_| {
                rf = rf.after(3, 1, 1);
                rf.size
            })
            .collect();
        assert_eq!(sizes, vec![3, 5, 7]); // linear in depth
                                          // MnistNet: conv3, conv3, pool2 -> 6, jump 2
        let rf = ReceptiveField::default()
            .after(3, 1, 1)
            .after(3, 1, 1)
            .after(2, 2, 1);
        assert_eq!(rf, ReceptiveField { size: 6, jump: 2 });
        // dilation 2 then 4 (with 3x3): 1 + 2*2 = 5, then 5 + 4*2 = 13
        let rf = ReceptiveField::default().after(3, 1, 2).after(3, 1, 4);
        assert_eq!(rf.size, 13);
    }

    #[test]
    fn params_and_macs() {
        assert_eq!(conv2d_params(1, 32, (3, 3), 1, true), 320);
        assert_eq!(conv2d_params(32, 64, (3, 3), 1, true), 18_496);
        assert_eq!(linear_params(9216, 128, true), 1_179_776);
        assert_eq!(conv2d_macs(32, 64, (3, 3), 1, (24, 24)), 64 * 576 * 288);
        // depthwise (groups = channels) cuts both by the channel count
        assert_eq!(conv2d_params(32, 32, (3, 3), 32, false), 288);
    }
}
