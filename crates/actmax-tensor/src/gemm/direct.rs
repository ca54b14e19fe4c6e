//! `C = A·B` for conv GEMMs: B read in place, A packed once per call, and a fused store.
//!
//! Why not matrixmultiply here: it packs *both* operands on every call, block by block.
//! In a conv, B is the activation (K rows of pixels, each row contiguous): it is read
//! once per row block of C anyway, so packing it only adds a full copy of the largest
//! operand. A is the weight matrix; it is packed once per call into k-major micro-panels
//! (`MR` rows of one k side by side), which costs one pass over the weights.
//!
//! The microkernel keeps an `MR × NR` block of C in registers — AVX-512: 12 × 32 (24 of
//! the 32 zmm registers), AVX2 + FMA: 6 × 16 (12 of 16 ymm), otherwise a portable 4 × 8
//! the compiler vectorizes — and its store applies the [`Epilogue`] (bias, then a clamp
//! such as ReLU or ReLU6), so no second pass over C runs. Ragged edges use masked loads
//! and stores, never reads past a row. The instruction set is chosen at run time
//! ([`Isa::detect`]); nothing is built for the build machine's CPU.

use super::{for_each_index, Mat, SendPtr};

/// The microkernel family, detected at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 12 × 32 blocks.
    Avx512,
    /// AVX2 + FMA: 6 × 16 blocks.
    Avx2,
    /// Portable Rust: 4 × 8 blocks.
    Generic,
}

/// The environment variable that caps the kernels' instruction set, as oneDNN's
/// `ONEDNN_MAX_CPU_ISA` does: `avx2` runs this CPU as one without AVX-512 would (to
/// measure it, or to compare with peers capped alike), `generic` runs the portable
/// kernels, `avx512` (or unset) the widest the CPU has. Read once, at the first kernel
/// choice; a value not in that list is ignored (the CLI refuses it up front,
/// [`Isa::cap_from_env`]).
pub const MAX_ISA_VAR: &str = "ACTMAX_MAX_ISA";

impl Isa {
    /// The widest kernel this CPU runs, within the cap of [`MAX_ISA_VAR`].
    pub fn detect() -> Self {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let hardware = Self::hardware();
            match Self::cap_from_env() {
                Ok(Some(cap)) if cap.rank() < hardware.rank() => cap,
                _ => hardware,
            }
        })
    }

    /// The widest kernel this CPU runs, whatever the cap.
    pub fn hardware() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            // Every AVX-512 kernel family also runs AVX2 + FMA code (its edges, the
            // depthwise and Winograd transforms), so AVX-512 counts only with them.
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return if is_x86_feature_detected!("avx512f") { Self::Avx512 } else { Self::Avx2 };
            }
        }
        Self::Generic
    }

    /// The cap [`MAX_ISA_VAR`] sets: none when unset, an error naming the accepted values
    /// when it says something else.
    pub fn cap_from_env() -> std::result::Result<Option<Self>, String> {
        match std::env::var(MAX_ISA_VAR) {
            Err(std::env::VarError::NotPresent) => Ok(None),
            Ok(v) => Self::parse_cap(&v).map(Some),
            Err(e) => Err(format!("{MAX_ISA_VAR}: {e}")),
        }
    }

    /// `avx512`, `avx2` or `generic` (any case) as a kernel family.
    pub fn parse_cap(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "avx512" | "avx512f" => Ok(Self::Avx512),
            "avx2" => Ok(Self::Avx2),
            "generic" | "none" => Ok(Self::Generic),
            _ => Err(format!("{MAX_ISA_VAR}={s:?}: expected avx512, avx2 or generic")),
        }
    }

    /// Wider kernels rank higher.
    fn rank(self) -> u8 {
        match self {
            Self::Generic => 0,
            Self::Avx2 => 1,
            Self::Avx512 => 2,
        }
    }

    /// The name [`Isa::parse_cap`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Generic => "generic",
        }
    }

    /// Every kernel this CPU can run within the cap (for tests: each is checked against
    /// the reference).
    pub fn available() -> Vec<Self> {
        let best = Self::detect().rank();
        [Self::Avx512, Self::Avx2, Self::Generic].into_iter().filter(|i| i.rank() <= best).collect()
    }

    /// Rows and columns of C one microkernel call computes.
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::Avx512 => (12, 32),
            Self::Avx2 => (6, 16),
            Self::Generic => (4, 8),
        }
    }
}

/// A clamp applied after the bias, in a kernel's store: `v` limited to `[lo, hi]`, NaN
/// kept. ReLU is `(0, ∞)`, ReLU6 `(0, 6)`.
pub type Clamp = Option<(f32, f32)>;

/// [`Clamp`] on one value (`f32::clamp` keeps NaN).
#[inline(always)]
pub fn clamp(v: f32, c: Clamp) -> f32 {
    match c {
        Some((lo, hi)) => v.clamp(lo, hi),
        None => v,
    }
}

/// What the store of C applies to each sum, in this order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Added to every element of row `i` (one entry per row of C).
    pub bias: Option<&'a [f32]>,
    /// Then this clamp.
    pub clamp: Clamp,
}

/// A packed into k-major micro-panels: panel `p` holds rows `p·MR ..` as `k × MR`,
/// rows past `m` zero. `MR` is the microkernel's row count, or the wide kernel's panel
/// height (`gemm/wide.rs`).
pub struct PackedA {
    pub(super) data: Vec<f32>,
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) isa: Isa,
    /// Packed for [`super::wide`] (C computed transposed, a vector along M).
    pub(super) wide: bool,
}

/// `a` (`m × k`) as k-major panels of `mr` rows, the last one padded with zero rows.
///
/// # Safety
/// `a` must be valid for `m × k` elements.
unsafe fn panels(mr: usize, m: usize, k: usize, a: Mat) -> Vec<f32> {
    let panels = m.div_ceil(mr);
    let mut data = Vec::with_capacity(panels * k * mr);
    for p in 0..panels {
        let rows = mr.min(m - p * mr);
        for kk in 0..k {
            let col = a.offset(p * mr, kk);
            data.extend((0..rows).map(|ii| *col.ptr.offset(ii as isize * col.rs)));
            data.extend(std::iter::repeat_n(0.0, mr - rows));
        }
    }
    data
}

impl PackedA {
    /// Packs the `m × k` view `a` for kernel family `isa`.
    ///
    /// # Safety
    /// `a` must be valid for `m × k` elements.
    pub(crate) unsafe fn new(isa: Isa, m: usize, k: usize, a: Mat) -> Self {
        Self { data: panels(isa.block().0, m, k, a), m, k, isa, wide: false }
    }

    /// Packs `a` for the wide kernel when it pays for a C of `n` columns (a vector ISA,
    /// few columns: [`super::wide::max_cols`]); else as [`PackedA::new`].
    ///
    /// # Safety
    /// As [`PackedA::new`].
    pub(crate) unsafe fn for_columns(isa: Isa, m: usize, k: usize, n: usize, a: Mat) -> Self {
        if super::wide::pays(isa, m, n) {
            Self { data: panels(super::wide::rows(isa), m, k, a), m, k, isa, wide: true }
        } else {
            Self::new(isa, m, k, a)
        }
    }

    /// Packs the row-major `m × k` matrix `a` (checked: its length must be `m·k`).
    pub fn pack(isa: Isa, m: usize, k: usize, a: &[f32]) -> Result<Self, crate::TensorError> {
        crate::gemm::check_len("pack", "A", a.len(), m, k)?;
        // Safety: the length was checked.
        Ok(unsafe { Self::new(isa, m, k, Mat::row_major(a, m, k)) })
    }

    /// Packs the row-major `m × k` matrix `a` for products with `n` columns: for the
    /// wide kernel where it pays ([`PackedA::is_wide`]), else as [`PackedA::pack`].
    pub fn pack_for_columns(isa: Isa, m: usize, k: usize, n: usize, a: &[f32]) -> Result<Self, crate::TensorError> {
        crate::gemm::check_len("pack", "A", a.len(), m, k)?;
        // Safety: the length was checked.
        Ok(unsafe { Self::for_columns(isa, m, k, n, Mat::row_major(a, m, k)) })
    }

    /// Whether this pack runs on the wide kernel (few columns; see `gemm/wide.rs`).
    pub fn is_wide(&self) -> bool {
        self.wide
    }

    /// The instruction set it was packed for.
    pub(crate) fn isa(&self) -> Isa {
        self.isa
    }

    /// Rows of A per panel.
    pub(crate) fn panel_rows(&self) -> usize {
        if self.wide {
            super::wide::rows(self.isa)
        } else {
            self.isa.block().0
        }
    }

    /// The block of C at row panel `p` and column `j`, `cols` wide, with as many rows as
    /// the panel holds (both kernels' unit of work).
    ///
    /// # Safety
    /// `p` must be a panel of this pack; `b`, `c` and `ep.bias` as for [`sgemm_direct`].
    #[allow(clippy::too_many_arguments)] // a block's operands, spelled out
    pub(super) unsafe fn block(
        &self,
        p: usize,
        j: usize,
        cols: usize,
        b: *const f32,
        ldb: usize,
        c: OutMat,
        ep: &Epilogue,
    ) -> Block {
        let mr = self.panel_rows();
        let i0 = p * mr;
        Block {
            k: self.k,
            a: self.data.as_ptr().add(p * self.k * mr),
            b: b.add(j),
            ldb,
            // Wrapping: `c` may stand for a C whose first rows lie before the buffer
            // ([`sgemm_panels`]); the block's own rows are inside it.
            c: c.ptr.wrapping_add(i0 * c.ld + j),
            ldc: c.ld,
            rows: mr.min(self.m - i0),
            cols,
            bias: ep.bias.map_or(std::ptr::null(), |b| b.as_ptr().add(i0)),
            clamp: ep.clamp,
            residual: std::ptr::null(),
        }
    }

    /// Rows of A.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Columns of A (the shared dimension).
    pub fn depth(&self) -> usize {
        self.k
    }

    /// Floats held.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when A has no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A row-major output view: `ptr[i * ld + j]`.
#[derive(Clone, Copy)]
pub(crate) struct OutMat {
    /// Base pointer.
    pub ptr: *mut f32,
    /// Row stride in elements.
    pub ld: usize,
}

/// `C = A·B` then the epilogue, for packed `a`, row-major `b` (`k × n`) and `c` (`m × n`,
/// overwritten), split over rayon's pool when `parallel`: the checked door to the direct
/// GEMM (wrong lengths, or a bias shorter than the rows, are errors).
pub fn matmul_packed(
    a: &PackedA,
    n: usize,
    b: &[f32],
    c: &mut [f32],
    ep: &Epilogue,
    parallel: bool,
) -> Result<(), crate::TensorError> {
    crate::gemm::check_len("matmul_packed", "B", b.len(), a.k, n)?;
    crate::gemm::check_len("matmul_packed", "C", c.len(), a.m, n)?;
    if ep.bias.is_some_and(|bias| bias.len() < a.m) {
        return Err(crate::TensorError::Param {
            op: "matmul_packed",
            msg: format!("the bias needs one value per row of C ({})", a.m),
        });
    }
    // Safety: B and C were checked for their sizes; `c` is a unique borrow.
    unsafe { sgemm_direct(a, n, b.as_ptr(), n, OutMat { ptr: c.as_mut_ptr(), ld: n }, ep, parallel) };
    Ok(())
}

/// Bytes of B a column chunk aims to keep in the L2 cache while every row block of A
/// sweeps it.
const B_CHUNK_BYTES: usize = 256 << 10;

/// Multiply-adds below which a GEMM stays on one thread (a wake-up costs more).
const PARALLEL_MIN_FLOPS: usize = 1 << 19;

/// The threads an `m × k · k × n` product may spread over (both GEMM kernels).
pub(super) fn threads_for(parallel: bool, m: usize, k: usize, n: usize) -> usize {
    if parallel && m * n * k >= PARALLEL_MIN_FLOPS {
        rayon::current_num_threads()
    } else {
        1
    }
}

/// C for K = 0: every sum is empty, so each row is its epilogue applied to zero. Done here
/// so the microkernels may assume K ≥ 1: told so, they keep their accumulators in
/// registers only, where a possibly empty loop made them zero a stack copy per block
/// (a `memset` call of up to 1.8 KB a block, a fifth of a K = 16 block's time).
///
/// # Safety
/// C must be valid for `m` rows of `n` elements at stride `c.ld`.
unsafe fn store_empty_sums(m: usize, n: usize, c: OutMat, ep: &Epilogue) {
    for i in 0..m {
        let v = ep.bias.map_or(0.0, |b| b[i]);
        // As the kernels' max/min: a NaN passes through the clamp.
        let v = match ep.clamp {
            Some((lo, hi)) if !v.is_nan() => v.max(lo).min(hi),
            _ => v,
        };
        std::slice::from_raw_parts_mut(c.ptr.add(i * c.ld), n).fill(v);
    }
}

/// `C = A·B` then the epilogue, for packed `A` (`m × k`), B (`k × n`, row stride `ldb`,
/// columns contiguous) and C (`m × n`, row stride `c.ld`). With `parallel`, column chunks
/// and row blocks are spread over rayon's pool.
///
/// # Safety
/// B must be valid for `k` rows of `n` elements at stride `ldb`, C for `m` rows of `n`
/// elements at stride `c.ld`, and C must not overlap A or B.
pub(crate) unsafe fn sgemm_direct(
    a: &PackedA,
    n: usize,
    b: *const f32,
    ldb: usize,
    c: OutMat,
    ep: &Epilogue,
    parallel: bool,
) {
    if a.m == 0 || n == 0 {
        return;
    }
    if let Some(bias) = ep.bias {
        assert!(bias.len() >= a.m, "sgemm_direct: bias shorter than the rows of C");
    }
    if a.k == 0 {
        return store_empty_sums(a.m, n, c, ep);
    }
    if a.wide {
        return super::wide::sgemm(a, n, b, ldb, c, ep, parallel);
    }
    sgemm_panels(a, 0..a.m.div_ceil(a.panel_rows()), n, b, ldb, c, ep, parallel)
}

/// [`sgemm_direct`] for A's row panels `panels` only (row-kernel packs with K ≥ 1): C
/// holds just those rows, its row 0 the first panel's first row; `ep.bias` still covers
/// all of A's rows. For a product consumed a few rows at a time, each block of C staying
/// in cache for its consumer ([`crate::conv::fused`]).
///
/// # Safety
/// As [`sgemm_direct`], C valid for the panels' rows.
#[allow(clippy::too_many_arguments)] // a GEMM's operands, spelled out
pub(crate) unsafe fn sgemm_panels(
    a: &PackedA,
    panels: std::ops::Range<usize>,
    n: usize,
    b: *const f32,
    ldb: usize,
    c: OutMat,
    ep: &Epilogue,
    parallel: bool,
) {
    let (mr, nr) = a.isa.block();
    assert!(!a.wide && a.k > 0 && panels.end <= a.m.div_ceil(mr), "sgemm_panels: row-kernel panels of A with K ≥ 1");
    if let Some(bias) = ep.bias {
        assert!(bias.len() >= a.m, "sgemm_panels: bias shorter than the rows of A");
    }
    if panels.is_empty() || n == 0 {
        return;
    }
    let k = a.k;
    let m = (panels.end * mr).min(a.m) - panels.start * mr;
    // C as if it held A's rows from 0: each block adds its panel's own row offset.
    let c = OutMat { ptr: c.ptr.wrapping_sub(panels.start * mr * c.ld), ld: c.ld };
    let threads = threads_for(parallel, m, k, n);
    // Column chunks no wider than the L2 budget, in a count that splits evenly over the
    // threads (three chunks on two threads would leave one idle a third of the time).
    let widest = ((B_CHUNK_BYTES / (4 * k.max(1))) / nr).max(1) * nr;
    let mut col_chunks = n.div_ceil(widest);
    if threads > 1 && col_chunks > 1 {
        col_chunks = col_chunks.next_multiple_of(threads);
    }
    let chunk = n.div_ceil(col_chunks).next_multiple_of(nr);
    let col_chunks = n.div_ceil(chunk);
    let row_blocks = panels.len();
    let row_parts = (2 * threads).div_ceil(col_chunks).clamp(1, row_blocks);
    let per_part = row_blocks.div_ceil(row_parts);
    let row_parts = row_blocks.div_ceil(per_part);
    // Which operand the inner loop streams: the smaller one, so the larger is read
    // once. Small images (7×7, 14×14) have many weights and few columns: there A is the
    // larger, and sweeping all of it per column panel would read it from L3 each time.
    // With a short K (EfficientNet's expand and project convs) both operands' panels
    // are small, and what counts is how C is written: row block outer writes MR long
    // row streams; column panel outer writes all M rows a panel at a time, a stream per
    // row, which the prefetchers cannot follow (Lite0 forward 5 % slower that way).
    let a_outer = m > chunk.min(n) || k <= 128;
    let (bp, cp) = (SendPtr(b as *mut f32), SendPtr(c.ptr));
    let task = |t: usize| {
        let (cc, rp) = (t / row_parts, t % row_parts);
        let (j0, j1) = (cc * chunk, ((cc + 1) * chunk).min(n));
        let rows = panels.start + rp * per_part..panels.start + ((rp + 1) * per_part).min(row_blocks);
        // The first block of a strip; the strip walks from it along a row or a column.
        let first =
            |rb: usize, j: usize| a.block(rb, j, nr.min(j1 - j), bp.get(), ldb, OutMat { ptr: cp.get(), ld: c.ld }, ep);
        // Safety (both arms): each task owns its row blocks × columns [j0, j1) of C.
        if a_outer {
            // Row block outer: one panel of A (k × MR) stays in L1 while the task's
            // columns of B, which fit in L2, pass under it.
            let count = (j1 - j0).div_ceil(nr);
            let last_cols = j1 - j0 - (count - 1) * nr;
            for rb in rows {
                let blk = first(rb, j0);
                let strip = Strip { count, a: 0, b: nr, c: nr, bias: 0, last: (blk.rows, last_cols) };
                run_strip(a.isa, blk, &strip);
            }
        } else if !rows.is_empty() {
            // Column panel outer: the panel of B (k × NR) stays in L1/L2 while every
            // row block of A passes over it.
            let last_rows = mr.min(a.m - (rows.end - 1) * mr);
            for j in (j0..j1).step_by(nr) {
                let blk = first(rows.start, j);
                let strip =
                    Strip { count: rows.len(), a: k * mr, b: 0, c: mr * c.ld, bias: mr, last: (last_rows, blk.cols) };
                run_strip(a.isa, blk, &strip);
            }
        }
    };
    for_each_index(col_chunks * row_parts, threads > 1, task);
}

/// One microkernel call: a `rows × cols` block of C (at most `MR × NR`, or a wide
/// kernel's tile), from a panel of A (`k × MR`) and columns of B from `b`.
#[derive(Clone, Copy)]
pub(super) struct Block {
    pub(super) k: usize,
    pub(super) a: *const f32,
    pub(super) b: *const f32,
    pub(super) ldb: usize,
    pub(super) c: *mut f32,
    pub(super) ldc: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
    /// `rows` biases, or null.
    pub(super) bias: *const f32,
    pub(super) clamp: Clamp,
    /// A matrix laid out as C (at `ldc`) added after the clamp — a residual connection —
    /// or null. Only the AVX-512 wide kernel's store reads it (`wide::sgemm_b_pixel_major`
    /// is the one caller that sets it).
    pub(super) residual: *const f32,
}

/// `count` microkernel calls from a first block, each the next one along a row of C
/// (`b`, `c` advance by NR) or a column (`a`, `c`, `bias` advance by a row block); the
/// last block is `last` = (rows, cols). One call per strip rather than per block: with
/// the small K of EfficientNet's expand convs (16–40) a block is only a few hundred
/// cycles, and building and dispatching each one cost 5 % of a forward.
struct Strip {
    count: usize,
    a: usize,
    b: usize,
    c: usize,
    bias: usize,
    last: (usize, usize),
}

impl Strip {
    /// Block `i` of the strip that starts at `first` (the last one has its own size).
    /// Wrapping offsets: only blocks inside the strip are ever dereferenced.
    #[inline(always)]
    fn block(&self, first: &Block, i: usize) -> Block {
        let bias = if first.bias.is_null() { first.bias } else { first.bias.wrapping_add(i * self.bias) };
        let (rows, cols) = if i + 1 == self.count { self.last } else { (first.rows, first.cols) };
        Block {
            a: first.a.wrapping_add(i * self.a),
            b: first.b.wrapping_add(i * self.b),
            c: first.c.wrapping_add(i * self.c),
            bias,
            rows,
            cols,
            ..*first
        }
    }
}

/// Calls `$kernel` on every block of a strip. A macro, not a function taking the kernel:
/// the loop must sit inside each kernel's `#[target_feature]` function for the kernel to
/// be inlined into it.
macro_rules! walk_strip {
    ($first:expr, $strip:expr, $kernel:ident) => {{
        let (first, strip): (Block, &Strip) = ($first, $strip);
        for i in 0..strip.count {
            $kernel(&strip.block(&first, i));
        }
    }};
}

unsafe fn run_strip(isa: Isa, first: Block, strip: &Strip) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::avx512(first, strip),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::avx2(first, strip),
        _ => walk_strip!(first, strip, generic),
    }
}

/// `a·b + c`: fused where the target has a fused multiply-add instruction; on an x86
/// CPU without FMA (the only place this kernel runs there) `mul_add` is a call into
/// libm per element, a hundred times slower than the two operations.
#[inline(always)]
fn fused_or_plain(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(any(target_arch = "x86_64", target_arch = "x86")) && !cfg!(target_feature = "fma") {
        a * b + c
    } else {
        a.mul_add(b, c)
    }
}

/// The portable kernel: 4 × 8, in arrays the compiler keeps in vector registers.
unsafe fn generic(blk: &Block) {
    const MR: usize = 4;
    const NR: usize = 8;
    let mut acc = [[0.0f32; NR]; MR];
    for p in 0..blk.k {
        let mut bv = [0.0f32; NR];
        let brow = blk.b.add(p * blk.ldb);
        for (j, v) in bv.iter_mut().enumerate().take(blk.cols) {
            *v = *brow.add(j);
        }
        let ap = blk.a.add(p * MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let av = *ap.add(i);
            for j in 0..NR {
                row[j] = fused_or_plain(av, bv[j], row[j]);
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(blk.rows) {
        let bias = if blk.bias.is_null() { 0.0 } else { *blk.bias.add(i) };
        let out = std::slice::from_raw_parts_mut(blk.c.add(i * blk.ldc), blk.cols);
        for (o, &v) in out.iter_mut().zip(row) {
            *o = clamp(v + bias, blk.clamp);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Block, Strip};
    use crate::simd::avx2::lanes;
    use crate::simd::avx512::lanes as lanes16;

    /// How many rows of B ahead the kernels prefetch.
    const PREFETCH_ROWS: usize = 8;

    /// Every block of a strip on [`avx512_block`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(first: Block, strip: &Strip) {
        // Whole row blocks (nearly every strip) go straight to the 12-row kernel: a
        // choice per block slowed the short-K blocks of Lite0's expand convs (96×16×12544
        // 95 → 79 GFLOP/s).
        if first.rows == 12 && strip.last.0 == 12 {
            walk_strip!(first, strip, avx512_full)
        } else {
            walk_strip!(first, strip, avx512_block)
        }
    }

    /// A whole 12-row block.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_full(blk: &Block) {
        avx512_rows::<12>(blk)
    }

    /// 12 × 32 on [`avx512_rows`], a ragged last row block on as few rows as it has
    /// (rounded up to 4 or 8): Lite0's 16-, 32- and 40-row products (a project conv to
    /// 16 channels, the expand convs' backward) computed 12 rows for 4 or 8.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_block(blk: &Block) {
        match blk.rows {
            0..=4 => avx512_rows::<4>(blk),
            5..=8 => avx512_rows::<8>(blk),
            _ => avx512_rows::<12>(blk),
        }
    }

    /// `R` rows (≤ 12) × 32 of a 12-row panel: two zmm columns per row; the ragged right
    /// edge is a load/store mask.
    #[inline(always)]
    unsafe fn avx512_rows<const R: usize>(blk: &Block) {
        const MR: usize = 12;
        debug_assert!(R <= MR && blk.rows <= R);
        let (m0, m1) = (lanes16(blk.cols), lanes16(blk.cols.saturating_sub(16)));
        // K ≥ 1 (`sgemm_direct`): the accumulators need no zeroed copy on the stack.
        std::hint::assert_unchecked(blk.k >= 1);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let (mut a, mut b) = (blk.a, blk.b);
        for _ in 0..blk.k {
            // B's rows are a row stride apart, too far for the hardware prefetcher; ask
            // for the row PREFETCH_ROWS ahead (a prefetch past the end is harmless).
            let ahead = b.wrapping_add(PREFETCH_ROWS * blk.ldb) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
            let b0 = _mm512_maskz_loadu_ps(m0, b);
            let b1 = _mm512_maskz_loadu_ps(m1, b.wrapping_add(16));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(i));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
            a = a.add(MR);
            b = b.wrapping_add(blk.ldb);
        }
        let (lo, hi) = blk.clamp.unwrap_or((0.0, 0.0));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        for (i, row) in acc.iter().enumerate().take(blk.rows) {
            let bias = _mm512_set1_ps(if blk.bias.is_null() { 0.0 } else { *blk.bias.add(i) });
            for (h, (&v, mask)) in row.iter().zip([m0, m1]).enumerate() {
                let mut v = _mm512_add_ps(v, bias);
                if blk.clamp.is_some() {
                    // max/min return their second operand when one is NaN: NaN survives.
                    v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
                }
                _mm512_mask_storeu_ps(blk.c.add(i * blk.ldc + 16 * h), mask, v);
            }
        }
    }

    /// Every block of a strip on [`avx2_block`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(first: Block, strip: &Strip) {
        // As `avx512`: whole row blocks without a choice per block.
        if first.rows == 6 && strip.last.0 == 6 {
            walk_strip!(first, strip, avx2_full)
        } else {
            walk_strip!(first, strip, avx2_block)
        }
    }

    /// A whole 6-row block.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_full(blk: &Block) {
        avx2_rows::<6>(blk)
    }

    /// 6 × 16 on [`avx2_rows`], a ragged last row block of up to 4 rows on 4.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_block(blk: &Block) {
        match blk.rows {
            0..=4 => avx2_rows::<4>(blk),
            _ => avx2_rows::<6>(blk),
        }
    }

    /// `R` rows (≤ 6) × 16 of a 6-row panel: two ymm columns per row.
    #[inline(always)]
    unsafe fn avx2_rows<const R: usize>(blk: &Block) {
        const MR: usize = 6;
        debug_assert!(R <= MR && blk.rows <= R);
        let (m0, m1) = (lanes(blk.cols), lanes(blk.cols.saturating_sub(8)));
        let full = blk.cols == 16;
        // K ≥ 1 (`sgemm_direct`): the accumulators need no zeroed copy on the stack.
        std::hint::assert_unchecked(blk.k >= 1);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let (mut a, mut b) = (blk.a, blk.b);
        for _ in 0..blk.k {
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_ROWS * blk.ldb) as *const i8);
            let (b0, b1) = if full {
                (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)))
            } else {
                (_mm256_maskload_ps(b, m0), _mm256_maskload_ps(b.wrapping_add(8), m1))
            };
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(i));
                row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                row[1] = _mm256_fmadd_ps(av, b1, row[1]);
            }
            a = a.add(MR);
            b = b.wrapping_add(blk.ldb);
        }
        let (lo, hi) = blk.clamp.unwrap_or((0.0, 0.0));
        let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        for (i, row) in acc.iter().enumerate().take(blk.rows) {
            let bias = _mm256_set1_ps(if blk.bias.is_null() { 0.0 } else { *blk.bias.add(i) });
            for (h, (&v, mask)) in row.iter().zip([m0, m1]).enumerate() {
                let mut v = _mm256_add_ps(v, bias);
                if blk.clamp.is_some() {
                    v = _mm256_min_ps(hi, _mm256_max_ps(lo, v));
                }
                let out = blk.c.add(i * blk.ldc + 8 * h);
                // A masked store is microcoded on AMD cores (many times a plain store's
                // cost, and small-k blocks are store-bound): only the ragged edge pays it.
                if full {
                    _mm256_storeu_ps(out, v);
                } else {
                    _mm256_maskstore_ps(out, mask, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, ep: &Epilogue) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
                let v = s as f32 + ep.bias.map_or(0.0, |b| b[i]);
                c[i * n + j] = clamp(v, ep.clamp);
            }
        }
        c
    }

    #[allow(clippy::too_many_arguments)] // a GEMM case, spelled out
    fn run(isa: Isa, a: &[f32], b: &[f32], m: usize, k: usize, n: usize, ep: &Epilogue, parallel: bool) -> Vec<f32> {
        run_packed(|a| unsafe { PackedA::new(isa, m, k, a) }, a, b, m, k, n, ep, parallel)
    }

    /// [`run`] on A packed by `pack` (the row kernel's or the wide kernel's panels).
    #[allow(clippy::too_many_arguments)] // a GEMM case, spelled out
    fn run_packed(
        pack: impl Fn(Mat) -> PackedA,
        a: &[f32],
        b: &[f32],
        m: usize,
        k: usize,
        n: usize,
        ep: &Epilogue,
        parallel: bool,
    ) -> Vec<f32> {
        // B and C with row strides wider than n, and a guard band that must stay untouched.
        let (ldb, ldc) = (n + 3, n + 5);
        let mut bs = vec![f32::NAN; k * ldb];
        for p in 0..k {
            bs[p * ldb..p * ldb + n].copy_from_slice(&b[p * n..(p + 1) * n]);
        }
        let mut cs = vec![-7.0f32; m * ldc + 8];
        let pa = pack(Mat::row_major(a, m, k));
        unsafe { sgemm_direct(&pa, n, bs.as_ptr(), ldb, OutMat { ptr: cs.as_mut_ptr(), ld: ldc }, ep, parallel) };
        for i in 0..m {
            let (isa, wide) = (pa.isa, pa.wide);
            assert!(
                cs[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == -7.0),
                "{isa:?} (wide {wide}) wrote past a row"
            );
        }
        (0..m).flat_map(|i| cs[i * ldc..i * ldc + n].to_vec()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every kernel this CPU runs against the reference: the row kernels, and the
        /// wide ones (few columns) where they are taken; ragged blocks and panels, every
        /// column remainder, bias, clamps, threads.
        #[test]
        fn every_kernel_matches_the_reference(
            m in 1usize..100, k in 0usize..70, n in 1usize..90, seed in 0u32..1000,
            bias in any::<bool>(), clamp in 0usize..3, parallel in any::<bool>(),
        ) {
            let val = |i: usize, s: u32| (((i as u32).wrapping_mul(2654435761).wrapping_add(s) >> 7) % 97) as f32 / 24.0 - 2.0;
            let a: Vec<f32> = (0..m * k).map(|i| val(i, seed)).collect();
            let b: Vec<f32> = (0..k * n).map(|i| val(i, seed ^ 0x5555)).collect();
            let bv: Vec<f32> = (0..m).map(|i| val(i, seed ^ 0xAAAA)).collect();
            let ep = Epilogue {
                bias: bias.then_some(bv.as_slice()),
                clamp: [None, Some((0.0, f32::INFINITY)), Some((0.0, 6.0))][clamp],
            };
            let want = reference(&a, &b, m, k, n, &ep);
            for isa in Isa::available() {
                let wide = |a: Mat| unsafe { PackedA::for_columns(isa, m, k, n, a) };
                prop_assert_eq!(wide(Mat::row_major(&a, m, k)).wide, super::super::wide::pays(isa, m, n));
                let rows = run(isa, &a, &b, m, k, n, &ep, parallel);
                let cols = run_packed(wide, &a, &b, m, k, n, &ep, parallel);
                for (i, ((x, z), y)) in rows.iter().zip(&cols).zip(&want).enumerate() {
                    prop_assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{:?} {}x{}x{} at {}: {} vs {}", isa, m, k, n, i, x, y);
                    prop_assert!((z - y).abs() <= 1e-4 * (1.0 + y.abs()), "{:?} wide {}x{}x{} at {}: {} vs {}", isa, m, k, n, i, z, y);
                }
            }
        }
    }

    #[test]
    fn nan_survives_the_clamp() {
        let a = [f32::NAN, 1.0];
        let b = [1.0, 2.0, 3.0];
        let ep = Epilogue { bias: None, clamp: Some((0.0, 6.0)) };
        for isa in Isa::available() {
            let c = run(isa, &a, &b, 2, 1, 3, &ep, false);
            assert!(c[..3].iter().all(|v| v.is_nan()), "{isa:?}: {c:?}");
            assert_eq!(&c[3..], &[1.0, 2.0, 3.0]);
        }
    }

    #[test]
    fn an_empty_sum_is_the_epilogue_of_zero() {
        // K = 0 never reaches a microkernel (they assume K ≥ 1).
        let bias = [-1.0, 2.5, 9.0, f32::NAN];
        for (clamp, want) in [(None, [-1.0, 2.5, 9.0]), (Some((0.0, 6.0)), [0.0, 2.5, 6.0])] {
            let ep = Epilogue { bias: Some(&bias), clamp };
            for isa in Isa::available() {
                for n in [3, 40] {
                    let c = run(isa, &[], &[], 4, 0, n, &ep, false);
                    for (i, w) in want.iter().enumerate() {
                        assert!(c[i * n..(i + 1) * n].iter().all(|v| v == w), "{isa:?} row {i}: {c:?}");
                    }
                    assert!(c[3 * n..].iter().all(|v| v.is_nan()), "{isa:?}: a NaN bias survives");
                }
            }
        }
    }

    #[test]
    fn large_shapes_split_over_threads_match() {
        let (m, k, n) = (70, 150, 700);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
        let ep = Epilogue::default();
        let want = reference(&a, &b, m, k, n, &ep);
        for isa in Isa::available() {
            let got = run(isa, &a, &b, m, k, n, &ep, true);
            assert!(got.iter().zip(&want).all(|(x, y)| (x - y).abs() <= 1e-3 * (1.0 + y.abs())), "{isa:?}");
        }
    }
}
