//! conv2d kernels: forward, backward to the input, backward to the weights and bias.
//!
//! Layouts: input NCHW, weight OIHW (`[c_out, c_in / groups, kh, kw]`), output NCHW.
//!
//! # Kernel choice (see [`ConvKernel::choose`])
//! - **Depthwise** (one input and one output channel per group, [`depthwise`]): a direct
//!   loop per channel plane. Its arithmetic intensity is `kh·kw` multiply-adds per loaded
//!   pixel — far too little for a GEMM to pay for its packing, and im2col would copy every
//!   pixel `kh·kw` times to save nothing. Loads bound it, so 3×3 and 5×5 planes (stride
//!   1 or 2) slide down the plane, each input row loaded once per kernel column for all
//!   the output rows it feeds, where the registers hold those rows' sums (AVX2: 3×3
//!   stride 1; AVX-512: all four, in intrinsics, reading the plane in place, and planes
//!   of up to 8 columns 16 channels at a time); other shapes run tap by tap.
//! - **Pointwise** (1×1, stride 1, no padding, [`mod@im2col`]): the input already *is* the
//!   im2col matrix, so the conv is one GEMM per image and group, with no copy at all. The
//!   GEMM is [`crate::gemm::direct`]: it reads the activations in place (matrixmultiply
//!   would copy them into panels first) and packs the weights once per run. Images of
//!   few pixels (7×7, 14×14), whose columns the row kernel would pad, take the wide
//!   kernel (`gemm/wide.rs`: the vector along the channels), chosen when the weights are
//!   packed, per instruction set as measured.
//! - **Im2col** (everything else, [`mod@im2col`]): the output positions are cut into tiles of
//!   whole output rows; each tile's im2col block (bounded: at most [`COL_BUDGET`] floats)
//!   feeds the same direct GEMM. Tiles are the unit of parallelism; when there are too few
//!   of them for the pool (small images, batch 1) the GEMM itself is split instead.
//! - Backward to the input is the transposed conv: `dcol = Wᵀ·dY` through the same GEMM,
//!   then col2im scatters `dcol` into `dX`. Two tiles scatter into overlapping input rows
//!   only when they are neighbours, so even tiles run in parallel, then odd tiles.
//! - Backward to the weights (training only: a visualization's weights are constants):
//!   `dW += dY_tile · colᵀ` on matrixmultiply — one partial sum per rayon job for small
//!   gradients, written in place by one column-split GEMM per tile for large ones.
//! - **Winograd** ([`winograd`]) for 3×3 stride-1 convs with 32 or more channels on both
//!   sides (VGG's), through α² GEMMs on transformed tiles: F(2×2, 3×3) does 2.25× fewer
//!   multiply-adds than any GEMM of the direct conv can reach, F(4×4, 3×3) 4×. With fewer
//!   than 32 channels the transforms cost more than the multiplies saved, so im2col runs;
//!   F(4×4)'s dearer transforms pay from 64 channels on ([`winograd::best_tile`]). Its
//!   backward to the input is a Winograd conv of the rotated weights.
//!
//! - **A pointwise conv feeding a depthwise conv** ([`fused`]), at inference: both run a
//!   block of channels at a time, so the pointwise output (the largest tensor of an
//!   inverted-residual network) is read while still in cache instead of written out whole.
//!   On AVX-512, where the pointwise conv takes the wide kernel (7×7 and 14×14 images),
//!   the pair runs *pixel-major* in between ([`fused::fuses_pixel_major`]): the wide
//!   tile already holds 32 channels of a pixel in two vectors, and the depthwise conv of
//!   such small planes computes 16 channels a vector, so the tiles go out as they are
//!   instead of being transposed into planes and back. The project conv after them
//!   ([`fused::pointwise_depthwise_pointwise_forward`]) reads the depthwise output
//!   pixel-major too: its wide tile broadcasts B's elements one at a time anyway, from
//!   rows or from channel blocks alike.
//!
//! Every forward kernel can apply a clamp after the bias (ReLU `(0, ∞)`, ReLU6 `(0, 6)`)
//! in the same store, so a conv and its activation make one pass over the output.

pub mod depthwise;
pub mod fused;
pub mod im2col;
pub mod naive;
pub mod winograd;

pub use im2col::{im2col, COL_BUDGET};
use winograd::TileSize;

use crate::error::{Result, TensorError};
use crate::geometry::ConvGeometry;
use crate::scratch::ScratchPool;

/// Output columns a tile aims for: one matrixmultiply column block (it packs A once per
/// block, so narrower tiles would re-pack A more often than a single big GEMM does).
pub(crate) const TILE_COLS: usize = 1024;

/// The kernel families a conv can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvKernel {
    /// Direct per-channel loop (one input and one output channel per group).
    Depthwise,
    /// 1×1 stride-1 unpadded conv as a plain GEMM.
    Pointwise,
    /// Tiled im2col + GEMM: works for every geometry.
    Im2col,
    /// Winograd F(2×2, 3×3): 3×3, stride 1, undilated, ungrouped.
    Winograd,
    /// Winograd F(4×4, 3×3): the same convs, 1.78× fewer multiply-adds than F(2×2).
    Winograd4,
}

impl ConvKernel {
    /// The fastest kernel for a geometry (the module docs say why).
    pub fn choose(g: &ConvGeometry) -> Self {
        if g.is_depthwise() {
            Self::Depthwise
        } else if g.is_pointwise() {
            Self::Pointwise
        } else if winograd::pays(g) {
            match winograd::best_tile(g) {
                winograd::TileSize::F2 => Self::Winograd,
                winograd::TileSize::F4 => Self::Winograd4,
            }
        } else {
            Self::Im2col
        }
    }

    /// Whether this kernel can run the geometry at all.
    pub fn supports(self, g: &ConvGeometry) -> bool {
        match self {
            Self::Depthwise => g.is_depthwise(),
            Self::Pointwise => g.is_pointwise(),
            Self::Im2col => true,
            Self::Winograd | Self::Winograd4 => winograd::supports(g),
        }
    }

    /// The Winograd tile size of a Winograd kernel.
    fn winograd_tile(self) -> Option<winograd::TileSize> {
        match self {
            Self::Winograd => Some(winograd::TileSize::F2),
            Self::Winograd4 => Some(winograd::TileSize::F4),
            _ => None,
        }
    }
}

/// A typed error for a conv kernel's caller.
fn refuse(op: &'static str, msg: String) -> TensorError {
    TensorError::Param { op, msg }
}

/// The operands' lengths against the geometry, and whether `kernel` runs it.
fn check_call(op: &'static str, kernel: ConvKernel, g: &ConvGeometry, x: usize, w: usize, y: usize) -> Result<()> {
    let want = [
        ("input", x, g.n * g.c_in * g.in_len()),
        ("weight", w, g.c_out * g.k_col()),
        ("output", y, g.n * g.c_out * g.out_len()),
    ];
    for (what, got, need) in want {
        if got != need {
            return Err(refuse(op, format!("the {what} holds {got} floats, the geometry needs {need}")));
        }
    }
    if !kernel.supports(g) {
        return Err(refuse(op, format!("the {kernel:?} kernel cannot run this geometry; use ConvPlan::choose")));
    }
    Ok(())
}

/// A kernel plus its tiling: what [`ConvPlan::choose`] decides for a geometry. Tests and
/// benches build other plans to reach every path (e.g. many small tiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvPlan {
    /// The kernel family.
    pub kernel: ConvKernel,
    /// Output columns an im2col tile aims for (rounded to whole output rows).
    pub tile_cols: usize,
}

impl ConvPlan {
    /// The default plan for a geometry.
    pub fn choose(g: &ConvGeometry) -> Self {
        Self { kernel: ConvKernel::choose(g), tile_cols: TILE_COLS }
    }
    /// A given kernel with the default tiling.
    pub fn with_kernel(kernel: ConvKernel) -> Self {
        Self { kernel, tile_cols: TILE_COLS }
    }
}

pub use crate::gemm::direct::Clamp;

/// Forward conv with the kernel [`ConvKernel::choose`] picks. `out` is overwritten.
pub fn conv2d_forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    out: &mut [f32],
    scratch: &ScratchPool,
) -> Result<()> {
    conv2d_forward_with(ConvPlan::choose(g), x, w, bias, None, g, out, scratch)
}

/// Forward conv on a given kernel, then `clamp` (an error if the kernel does not support
/// the geometry or an operand's length does not fit it).
#[allow(clippy::too_many_arguments)] // a conv's operands, spelled out
pub fn conv2d_forward_with(
    plan: ConvPlan,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    clamp: Clamp,
    g: &ConvGeometry,
    out: &mut [f32],
    scratch: &ScratchPool,
) -> Result<()> {
    let pack = ConvPack::forward(plan, w, g)?;
    conv2d_forward_prepacked(plan, x, w, &pack, bias, clamp, g, out, scratch)
}

/// [`conv2d_forward_with`] on weights packed beforehand by [`ConvPack::forward`] (for
/// weights that stay constant over many calls).
#[allow(clippy::too_many_arguments)] // a conv's operands, spelled out
pub fn conv2d_forward_prepacked(
    plan: ConvPlan,
    x: &[f32],
    w: &[f32],
    pack: &ConvPack,
    bias: Option<&[f32]>,
    clamp: Clamp,
    g: &ConvGeometry,
    out: &mut [f32],
    scratch: &ScratchPool,
) -> Result<()> {
    let kernel = plan.kernel;
    check_call("conv2d_forward", kernel, g, x.len(), w.len(), out.len())?;
    if let Some(b) = bias.filter(|b| b.len() != g.c_out) {
        return Err(refuse(
            "conv2d_forward",
            format!("the bias holds {}, one per out channel is {}", b.len(), g.c_out),
        ));
    }
    pack.check("conv2d_forward", kernel, g, PackDirection::Forward)?;
    match kernel {
        ConvKernel::Depthwise => depthwise::forward(x, w, bias, clamp, g, out, scratch),
        ConvKernel::Pointwise | ConvKernel::Im2col => im2col::forward(plan, x, pack, bias, clamp, g, out, scratch),
        ConvKernel::Winograd => winograd::forward(TileSize::F2, x, &pack.panels, bias, clamp, g, out, scratch),
        ConvKernel::Winograd4 => winograd::forward(TileSize::F4, x, &pack.panels, bias, clamp, g, out, scratch),
    }
    Ok(())
}

/// Which GEMM of a conv a [`ConvPack`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PackDirection {
    /// The forward pass.
    Forward,
    /// The backward pass to the input (the transposed weights).
    BackwardInput,
}

/// A conv's weights rearranged for one direction of its GEMM (per group, k-major
/// micro-panels for [`crate::gemm::direct`]; for Winograd, the 16 or 36 transformed matrices). Packing reads every weight once; a
/// visualization's weights are constants, so its tape packs each conv once per run
/// instead of once per call. Depthwise kernels read the weights as they are: their
/// pack is empty.
pub struct ConvPack {
    panels: Vec<crate::gemm::direct::PackedA>,
    kernel: ConvKernel,
    /// What it was packed for: the geometry's weight shape and the direction.
    made_for: ([usize; 3], PackDirection),
}

impl ConvPack {
    /// The pack [`conv2d_forward_prepacked`] reads: `W_grp` per group.
    pub fn forward(plan: ConvPlan, w: &[f32], g: &ConvGeometry) -> Result<Self> {
        Self::new(plan, w, g, PackDirection::Forward)
    }

    /// The pack [`conv2d_backward_input_prepacked`] reads: `W_grpᵀ` per group.
    pub fn backward_input(plan: ConvPlan, w: &[f32], g: &ConvGeometry) -> Result<Self> {
        Self::new(plan, w, g, PackDirection::BackwardInput)
    }

    /// The pack for one direction (an error when `w` does not fit the geometry or the
    /// kernel cannot run it).
    pub fn new(plan: ConvPlan, w: &[f32], g: &ConvGeometry, dir: PackDirection) -> Result<Self> {
        let transposed = dir == PackDirection::BackwardInput;
        if w.len() != g.c_out * g.k_col() {
            return Err(refuse(
                "conv pack",
                format!("the weight holds {} floats, the geometry needs {}", w.len(), g.c_out * g.k_col()),
            ));
        }
        if !plan.kernel.supports(g) {
            return Err(refuse("conv pack", format!("the {:?} kernel cannot run this geometry", plan.kernel)));
        }
        let panels = match (plan.kernel, plan.kernel.winograd_tile(), transposed) {
            (ConvKernel::Depthwise, ..) => Vec::new(),
            (_, Some(tile), false) => winograd::pack_weights(tile, w, g.c_out, g.c_in),
            (_, Some(tile), true) => winograd::pack_weights_transposed(tile, w, g.c_out, g.c_in),
            (kernel, ..) => im2col::packed_weights(w, g, transposed, kernel == ConvKernel::Pointwise),
        };
        Ok(Self { panels, kernel: plan.kernel, made_for: (Self::key(g), dir) })
    }

    /// The weight shape a pack depends on: out channels, in channels per group, taps.
    fn key(g: &ConvGeometry) -> [usize; 3] {
        [g.c_out, g.cin_g(), g.k_col()]
    }

    /// A typed error for `op` unless this pack serves `kernel` on `g` in direction `dir`.
    fn check(&self, op: &'static str, kernel: ConvKernel, g: &ConvGeometry, dir: PackDirection) -> Result<()> {
        if self.kernel == kernel && self.made_for == (Self::key(g), dir) {
            return Ok(());
        }
        Err(refuse(op, "the pack was made for another kernel, geometry or direction".into()))
    }

    /// Floats held (the weights, padded to whole micro-panels).
    pub fn len(&self) -> usize {
        self.panels.iter().map(|p| p.len()).sum()
    }

    /// True for a depthwise conv's (empty) pack.
    pub fn is_empty(&self) -> bool {
        self.panels.is_empty()
    }
}

/// Gradient with respect to the input. `dx` is overwritten.
pub fn conv2d_backward_input(
    dy: &[f32],
    w: &[f32],
    g: &ConvGeometry,
    dx: &mut [f32],
    scratch: &ScratchPool,
) -> Result<()> {
    conv2d_backward_input_with(ConvPlan::choose(g), dy, w, g, dx, scratch)
}

/// Gradient with respect to the input on a given kernel.
pub fn conv2d_backward_input_with(
    plan: ConvPlan,
    dy: &[f32],
    w: &[f32],
    g: &ConvGeometry,
    dx: &mut [f32],
    scratch: &ScratchPool,
) -> Result<()> {
    let pack = ConvPack::backward_input(plan, w, g)?;
    conv2d_backward_input_prepacked(plan, dy, w, &pack, g, dx, scratch)
}

/// The gradient with respect to the input of a conv whose clamped output `y` (bounds
/// `lo < y < hi`, ReLU6 `(0, 6)`) masks its gradient `dy`, with the mask applied inside
/// the kernel where that saves a pass: a stride-1 depthwise conv (its backward is a
/// forward, which masks `dy` as it reads it). The gradient comes from `scratch`; `None`,
/// with nothing taken, for every other conv: the caller masks and calls
/// [`conv2d_backward_input_prepacked`].
pub(crate) fn conv2d_backward_input_masked(
    plan: ConvPlan,
    dy: &[f32],
    y: &[f32],
    (lo, hi): (f32, f32),
    w: &[f32],
    g: &ConvGeometry,
    scratch: &ScratchPool,
) -> Result<Option<Vec<f32>>> {
    let dx_len = g.n * g.c_in * g.in_len();
    check_call("conv2d_backward_input", plan.kernel, g, dx_len, w.len(), dy.len())?;
    if y.len() != dy.len() {
        return Err(refuse("conv2d_backward_input", format!("y holds {} floats, dy {}", y.len(), dy.len())));
    }
    if !masks_in_kernel(plan, g) {
        return Ok(None);
    }
    let mut dx = scratch.take(dx_len);
    let masked = depthwise::backward_input_masked(dy, depthwise::GradMask { y, lo, hi }, w, g, &mut dx, scratch);
    debug_assert!(masked, "masks_in_kernel admits stride-1 geometries only");
    Ok(Some(dx))
}

/// Whether [`conv2d_backward_input_masked`] masks inside the kernel for this conv (and
/// so reads its output `y`).
pub(crate) fn masks_in_kernel(plan: ConvPlan, g: &ConvGeometry) -> bool {
    plan.kernel == ConvKernel::Depthwise && depthwise::masks_in_kernel(g)
}

/// [`conv2d_backward_input_with`] on weights packed by [`ConvPack::backward_input`].
pub fn conv2d_backward_input_prepacked(
    plan: ConvPlan,
    dy: &[f32],
    w: &[f32],
    pack: &ConvPack,
    g: &ConvGeometry,
    dx: &mut [f32],
    scratch: &ScratchPool,
) -> Result<()> {
    let kernel = plan.kernel;
    check_call("conv2d_backward_input", kernel, g, dx.len(), w.len(), dy.len())?;
    pack.check("conv2d_backward_input", kernel, g, PackDirection::BackwardInput)?;
    match kernel {
        ConvKernel::Depthwise => depthwise::backward_input(dy, w, g, dx, scratch),
        ConvKernel::Pointwise | ConvKernel::Im2col => im2col::backward_input(plan, dy, pack, g, dx, scratch),
        ConvKernel::Winograd => winograd::backward_input(TileSize::F2, dy, &pack.panels, g, dx, scratch),
        ConvKernel::Winograd4 => winograd::backward_input(TileSize::F4, dy, &pack.panels, g, dx, scratch),
    }
    Ok(())
}

/// Gradient with respect to the weights. `dw` is overwritten.
pub fn conv2d_backward_weight(
    x: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    dw: &mut [f32],
    scratch: &ScratchPool,
) -> Result<()> {
    conv2d_backward_weight_with(ConvPlan::choose(g), x, dy, g, dw, scratch)
}

/// Gradient with respect to the weights on a given kernel.
pub fn conv2d_backward_weight_with(
    plan: ConvPlan,
    x: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    dw: &mut [f32],
    scratch: &ScratchPool,
) -> Result<()> {
    let kernel = plan.kernel;
    check_call("conv2d_backward_weight", kernel, g, x.len(), dw.len(), dy.len())?;
    match kernel {
        ConvKernel::Depthwise => depthwise::backward_weight(x, dy, g, dw, scratch),
        ConvKernel::Pointwise | ConvKernel::Im2col => im2col::backward_weight(plan, x, dy, g, dw, scratch),
        // Training only: the im2col GEMM serves every geometry.
        ConvKernel::Winograd | ConvKernel::Winograd4 => {
            im2col::backward_weight(ConvPlan::with_kernel(ConvKernel::Im2col), x, dy, g, dw, scratch)
        }
    }
    Ok(())
}

pub fn conv2d_backward_bias(dy: &[f32], g: &ConvGeometry, db: &mut [f32]) -> Result<()> {
    let ol = g.out_len();
    if dy.len() != g.n * g.c_out * ol || db.len() != g.c_out {
        return Err(refuse(
            "conv2d_backward_bias",
            format!("dy must hold {} floats and db {}", g.n * g.c_out * ol, g.c_out),
        ));
    }
    db.fill(0.0);
    for img in dy.chunks_exact(g.c_out * ol) {
        for (d, plane) in db.iter_mut().zip(img.chunks_exact(ol)) {
            *d += plane.iter().sum::<f32>();
        }
    }
    Ok(())
}
