//! Shapes and parameters of the 2-D window ops (conv, pooling): output sizes, padding rules.

use crate::error::{param_err, Result};

/// Explicit, possibly asymmetric zero padding of the two spatial axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding2d {
    /// Rows added above.
    pub top: usize,
    /// Rows added below.
    pub bottom: usize,
    /// Columns added on the left.
    pub left: usize,
    /// Columns added on the right.
    pub right: usize,
}

impl Padding2d {
    /// The same padding on all four sides.
    pub fn uniform(p: usize) -> Self {
        Self { top: p, bottom: p, left: p, right: p }
    }

    /// Symmetric padding: `h` rows above and below, `w` columns left and right.
    pub fn symmetric(h: usize, w: usize) -> Self {
        Self { top: h, bottom: h, left: w, right: w }
    }

    /// TensorFlow / Keras `padding="same"`: the output has `ceil(in / stride)` positions
    /// and, when the total padding is odd, the extra row/column goes bottom/right.
    pub fn tf_same(in_hw: [usize; 2], kernel: [usize; 2], stride: [usize; 2], dilation: [usize; 2]) -> Self {
        let axis = |i: usize| {
            let out = in_hw[i].div_ceil(stride[i].max(1));
            // Saturating: absurd sizes from a file then fail ConvGeometry's checks instead of
            // overflowing here.
            let eff_k = (kernel[i].max(1) - 1).saturating_mul(dilation[i].max(1)).saturating_add(1);
            let need = (out.max(1) - 1).saturating_mul(stride[i]).saturating_add(eff_k).saturating_sub(in_hw[i]);
            (need / 2, need - need / 2)
        };
        let (top, bottom) = axis(0);
        let (left, right) = axis(1);
        Self { top, bottom, left, right }
    }
}

/// Parameters of a 2-D convolution (NCHW input, OIHW weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between windows, (rows, cols).
    pub stride: [usize; 2],
    /// Zero padding around the input.
    pub padding: Padding2d,
    /// Spacing of kernel taps, (rows, cols).
    pub dilation: [usize; 2],
    /// Channel groups: 1 is a dense conv, `in_channels` a depthwise one.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self { stride: [1, 1], padding: Padding2d::default(), dilation: [1, 1], groups: 1 }
    }
}

impl Conv2dParams {
    /// Stride 1, no padding, no dilation, one group.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the stride on both axes.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, p: Padding2d) -> Self {
        self.padding = p;
        self
    }
    /// Sets the dilation on both axes.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    /// Sets the number of groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// Fully resolved geometry of one conv: every size a kernel needs. Only
/// [`ConvGeometry::new`] makes one, so its sizes are consistent and their products fit in
/// memory — the kernels rely on that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub(crate) n: usize,
    pub(crate) c_in: usize,
    pub(crate) in_hw: [usize; 2],
    pub(crate) c_out: usize,
    pub(crate) k_hw: [usize; 2],
    pub(crate) out_hw: [usize; 2],
    pub(crate) p: Conv2dParams,
}

/// The largest element count a tensor may have: its bytes must fit an `isize`.
const MAX_ELEMS: usize = isize::MAX as usize / 8;

/// The product of `dims`, or an error naming the op when it does not fit in memory.
pub(crate) fn checked_elems(op: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMS)
        .ok_or_else(|| param_err(op, format!("shape {dims:?} holds more elements than memory can")))
}

impl ConvGeometry {
    /// Checks an input shape `[n, c, h, w]` and a weight shape `[o, c/groups, kh, kw]`
    /// against the parameters and computes the output size.
    pub fn new(op: &'static str, x: &[usize], w: &[usize], p: Conv2dParams) -> Result<Self> {
        if x.len() != 4 || w.len() != 4 {
            return Err(param_err(
                op,
                format!("expects a 4-D NCHW input and a 4-D OIHW weight, got input {x:?} and weight {w:?}"),
            ));
        }
        if p.groups == 0 || p.stride.contains(&0) || p.dilation.contains(&0) {
            return Err(param_err(op, format!("groups, stride and dilation must be >= 1, got {p:?}")));
        }
        let (c_in, c_out, g) = (x[1], w[0], p.groups);
        if c_in % g != 0 || c_out % g != 0 || w[1].checked_mul(g) != Some(c_in) {
            return Err(param_err(
                op,
                format!("input {x:?} and weight {w:?} do not fit groups = {g}: need in_channels = weight[1] * groups and out_channels divisible by groups"),
            ));
        }
        if x.contains(&0) || w.contains(&0) {
            return Err(param_err(op, format!("empty input {x:?} or weight {w:?}: every dimension must be >= 1")));
        }
        let out_hw = window_out_hw(op, [x[2], x[3]], [w[2], w[3]], p.stride, p.padding, p.dilation)?;
        checked_elems(op, x)?;
        checked_elems(op, w)?;
        checked_elems(op, &[x[0], c_out, out_hw[0], out_hw[1]])?;
        Ok(Self { n: x[0], c_in, in_hw: [x[2], x[3]], c_out, k_hw: [w[2], w[3]], out_hw, p })
    }

    /// Batch size.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input channels.
    pub fn c_in(&self) -> usize {
        self.c_in
    }
    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.c_out
    }
    /// Input rows and columns.
    pub fn in_hw(&self) -> [usize; 2] {
        self.in_hw
    }
    /// Kernel rows and columns.
    pub fn k_hw(&self) -> [usize; 2] {
        self.k_hw
    }
    /// Output rows and columns.
    pub fn out_hw(&self) -> [usize; 2] {
        self.out_hw
    }
    /// The parameters it was resolved from.
    pub fn params(&self) -> Conv2dParams {
        self.p
    }
    /// Elements of the input, `n·c_in·h·w`.
    pub fn in_elems(&self) -> usize {
        self.n * self.c_in * self.in_len()
    }
    /// Elements of the weight, `c_out·k_col`.
    pub fn weight_elems(&self) -> usize {
        self.c_out * self.k_col()
    }
    /// Elements of the output, `n·c_out·oh·ow`.
    pub fn out_elems(&self) -> usize {
        self.n * self.c_out * self.out_len()
    }

    /// Input channels per group.
    pub fn cin_g(&self) -> usize {
        self.c_in / self.p.groups
    }
    /// Output channels per group.
    pub fn cout_g(&self) -> usize {
        self.c_out / self.p.groups
    }
    /// Rows of the im2col matrix: `cin_g * kh * kw`.
    pub fn k_col(&self) -> usize {
        self.cin_g() * self.k_hw[0] * self.k_hw[1]
    }
    /// Output positions per image.
    pub fn out_len(&self) -> usize {
        self.out_hw[0] * self.out_hw[1]
    }
    /// Input positions per image.
    pub fn in_len(&self) -> usize {
        self.in_hw[0] * self.in_hw[1]
    }
    /// Output shape `[n, c_out, oh, ow]`.
    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.c_out, self.out_hw[0], self.out_hw[1]]
    }
    /// Multiply-adds × 2 of the forward pass (also of each backward pass).
    pub fn flops(&self) -> f64 {
        2.0 * (self.n * self.c_out * self.out_len() * self.k_col()) as f64
    }
    /// One input channel per group and one output channel per group: a depthwise conv.
    pub fn is_depthwise(&self) -> bool {
        self.cin_g() == 1 && self.cout_g() == 1
    }
    /// A 1×1 kernel with stride 1 and no padding: the conv is a plain GEMM.
    pub fn is_pointwise(&self) -> bool {
        self.k_hw == [1, 1] && self.p.stride == [1, 1] && self.p.padding == Padding2d::default()
    }
}

/// Output rows/cols of a sliding window, or an error when the window does not fit.
pub(crate) fn window_out_hw(
    op: &'static str,
    in_hw: [usize; 2],
    k: [usize; 2],
    stride: [usize; 2],
    pad: Padding2d,
    dil: [usize; 2],
) -> Result<[usize; 2]> {
    let too_big =
        || param_err(op, format!("input {in_hw:?} with padding {pad:?} and window {k:?} (dilation {dil:?}) overflows"));
    let padded = [
        in_hw[0].checked_add(pad.top).and_then(|v| v.checked_add(pad.bottom)).ok_or_else(too_big)?,
        in_hw[1].checked_add(pad.left).and_then(|v| v.checked_add(pad.right)).ok_or_else(too_big)?,
    ];
    let mut out = [0; 2];
    for i in 0..2 {
        if k[i] == 0 || stride[i] == 0 || dil[i] == 0 {
            return Err(param_err(
                op,
                format!("kernel {k:?}, stride {stride:?} and dilation {dil:?} must all be >= 1"),
            ));
        }
        let eff = (k[i] - 1).checked_mul(dil[i]).and_then(|v| v.checked_add(1)).ok_or_else(too_big)?;
        if eff > padded[i] {
            return Err(param_err(
                op,
                format!("window {k:?} (dilation {dil:?}) is larger than the padded input {padded:?} (input {in_hw:?}, padding {pad:?})"),
            ));
        }
        out[i] = (padded[i] - eff) / stride[i] + 1;
    }
    Ok(out)
}

/// Parameters of max and average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dParams {
    /// Window rows and columns.
    pub kernel: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
    /// Padding (ignored by max pooling, not counted by average pooling unless asked).
    pub padding: Padding2d,
    /// Average pooling: divide by the full window size, padding included (PyTorch's
    /// default), instead of by the number of real pixels in it (Keras).
    pub count_include_pad: bool,
}

impl Pool2dParams {
    /// A `k × k` window with stride `s` and no padding.
    pub fn new(k: usize, s: usize) -> Self {
        Self { kernel: [k, k], stride: [s, s], padding: Padding2d::default(), count_include_pad: false }
    }
    /// Sets the padding.
    pub fn padding(mut self, p: Padding2d) -> Self {
        self.padding = p;
        self
    }

    pub(crate) fn out_hw(&self, op: &'static str, x: &[usize]) -> Result<[usize; 2]> {
        if x.len() != 4 || x.contains(&0) {
            return Err(param_err(op, format!("expects a non-empty 4-D NCHW input, got {x:?}")));
        }
        let p = self.padding;
        if p.top >= self.kernel[0]
            || p.bottom >= self.kernel[0]
            || p.left >= self.kernel[1]
            || p.right >= self.kernel[1]
        {
            return Err(param_err(
                op,
                format!(
                    "padding {p:?} must be smaller than the window {:?}, or a window could hold only padding",
                    self.kernel
                ),
            ));
        }
        window_out_hw(op, [x[2], x[3]], self.kernel, self.stride, self.padding, [1, 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_puts_extra_pixel_bottom_right() {
        // 224 input, 3x3 stride 2: out 112, need (111*2+3)-224 = 1 -> (0, 1).
        let p = Padding2d::tf_same([224, 224], [3, 3], [2, 2], [1, 1]);
        assert_eq!(p, Padding2d { top: 0, bottom: 1, left: 0, right: 1 });
        // 5x5 stride 1: need 4 -> (2, 2).
        assert_eq!(Padding2d::tf_same([14, 14], [5, 5], [1, 1], [1, 1]), Padding2d::uniform(2));
        // 5x5 stride 2 on 56: out 28, need 27*2+5-56 = 3 -> (1, 2).
        assert_eq!(
            Padding2d::tf_same([56, 56], [5, 5], [2, 2], [1, 1]),
            Padding2d { top: 1, bottom: 2, left: 1, right: 2 }
        );
    }

    #[test]
    fn conv_geometry_rejects_bad_groups_and_windows() {
        let p = Conv2dParams::new().groups(2);
        assert!(ConvGeometry::new("conv2d", &[1, 3, 8, 8], &[4, 1, 3, 3], p).is_err());
        let g = ConvGeometry::new("conv2d", &[1, 4, 8, 8], &[4, 2, 3, 3], p).unwrap();
        assert_eq!(g.out_hw, [6, 6]);
        assert!(ConvGeometry::new("conv2d", &[1, 4, 2, 2], &[4, 4, 3, 3], Conv2dParams::new()).is_err());
        assert!(ConvGeometry::new("conv2d", &[1, 4, 8, 8], &[4, 4, 3, 3], Conv2dParams::new().stride(0)).is_err());
    }
}
