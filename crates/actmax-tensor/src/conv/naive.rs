//! Straightforward loop references: the ground truth the fast kernels are tested and
//! benchmarked against. Slow on purpose.

use crate::geometry::ConvGeometry;

/// Calls `f(n, o, oh, ow, c_in_index, kh, kw, input_index)` for every in-bounds tap.
fn taps(g: &ConvGeometry, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
    let (cin_g, cout_g) = (g.cin_g(), g.cout_g());
    let [kh_n, kw_n] = g.k_hw;
    for n in 0..g.n {
        for o in 0..g.c_out {
            let grp = o / cout_g;
            for oh in 0..g.out_hw[0] {
                for ow in 0..g.out_hw[1] {
                    let yi = ((n * g.c_out + o) * g.out_hw[0] + oh) * g.out_hw[1] + ow;
                    for ci in 0..cin_g {
                        for kh in 0..kh_n {
                            for kw in 0..kw_n {
                                let ih =
                                    (oh * g.p.stride[0] + kh * g.p.dilation[0]) as isize - g.p.padding.top as isize;
                                let iw =
                                    (ow * g.p.stride[1] + kw * g.p.dilation[1]) as isize - g.p.padding.left as isize;
                                if ih < 0 || iw < 0 || ih >= g.in_hw[0] as isize || iw >= g.in_hw[1] as isize {
                                    continue;
                                }
                                let c = grp * cin_g + ci;
                                let xi = ((n * g.c_in + c) * g.in_hw[0] + ih as usize) * g.in_hw[1] + iw as usize;
                                let wi = ((o * cin_g + ci) * kh_n + kh) * kw_n + kw;
                                f(yi, xi, wi, o, n);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Reference forward conv.
pub fn conv2d_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
    let mut y = vec![0.0f64; g.n * g.c_out * g.out_len()];
    taps(g, |yi, xi, wi, _, _| y[yi] += x[xi] as f64 * w[wi] as f64);
    let ol = g.out_len();
    y.iter().enumerate().map(|(i, &v)| (v + bias.map_or(0.0, |b| b[(i / ol) % g.c_out] as f64)) as f32).collect()
}

/// Reference gradient with respect to the input.
pub fn conv2d_backward_input(dy: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let mut dx = vec![0.0f64; g.n * g.c_in * g.in_len()];
    taps(g, |yi, xi, wi, _, _| dx[xi] += dy[yi] as f64 * w[wi] as f64);
    dx.into_iter().map(|v| v as f32).collect()
}

/// Reference gradient with respect to the weights.
pub fn conv2d_backward_weight(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let mut dw = vec![0.0f64; g.c_out * g.k_col()];
    taps(g, |yi, xi, wi, _, _| dw[wi] += dy[yi] as f64 * x[xi] as f64);
    dw.into_iter().map(|v| v as f32).collect()
}
