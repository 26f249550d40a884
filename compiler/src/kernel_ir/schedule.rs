//! Schedules: how each kernel template's loop nest is tiled, vectorised, unrolled and split
//! across threads. [`choose`] derives a schedule from the kernel's constant shapes and the
//! [`Machine`]'s caches and SIMD width only; both emitters read the result and decide nothing.
//! A convolution's schedule also carries its [`ConvLayout`]: how generated code lays out its data
//! (a kernel packed in panels) and blocks its loops (rows per block on narrow maps, images per
//! kernel-gradient group).
//!
//! GEMM-shaped templates (conv forward/backward, gemm) use the BLIS blocking: loops
//! `jc` (nc columns) ⊃ `pc` (kc of K, B panel packed) ⊃ `ic` (mc rows, A block packed) ⊃ micro-
//! kernel `mr × nr` held in registers. Budgets: the micro-panels of A and B fill half of L1,
//! the packed A block half of L2, the packed B panel half of this core's share of L3. Every
//! other template walks "rows" (all axes but the channel axis) in blocks of `block` rows.

use std::fmt;

use super::kernel::{ConvGeom, Epilogue, GemmDims, KernelOp, PoolKind};
use super::machine::Machine;
use crate::ir::{Activation, Pad2d};

/// Below this many flops a kernel runs on one thread: forking costs more than it saves.
pub const PARALLEL_FLOPS: usize = 1 << 17;
/// K-loop unroll of the micro-kernel and row-loop unroll of the other templates.
pub const UNROLL: usize = 4;
/// Alignment of every scratch region and arena buffer, in bytes (a cache line, an AVX-512 vector).
pub const ALIGN: usize = 64;

/// Cache blocking and register tile of a GEMM-shaped kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmTiles {
    pub mc: usize,
    pub kc: usize,
    pub nc: usize,
    pub mr: usize,
    pub nr: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tiling {
    Gemm(GemmTiles),
    /// Rows per block of a row-wise template.
    Rows {
        block: usize,
    },
}

/// Which loop the threads divide (into contiguous equal ranges of blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    None,
    /// The `ic` loop: each thread owns whole mc blocks of rows of C.
    M,
    /// The `jc` loop: each thread owns whole nc blocks of columns of C.
    N,
    /// The row loop; reductions combine per-thread partials from scratch in thread order.
    Rows,
    /// Whole samples (generated code, `codegen::threads`): each thread runs the kernel on a
    /// contiguous share of the batch; reductions add per-thread partials in thread order.
    Samples,
    /// Bands of output rows of one image (generated code, `codegen::threads_bands`): each
    /// thread runs the conv of its band's input rows.
    Bands,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Schedule {
    pub tiling: Tiling,
    /// f32 lanes per vector.
    pub vector_width: usize,
    pub unroll: usize,
    pub threads: usize,
    pub split: Split,
    /// Convolutions only ([`conv_layout`]).
    pub conv: Option<ConvLayout>,
}

/// How a generated convolution lays out its data and blocks its loops beyond the register tile
/// (the Rust emitter, `codegen::kernels_conv*`; the kernels backend has its own packing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvLayout {
    Forward {
        /// The kernel is packed in [`PANEL`]-lane panels `[F / 16][K][16]` once per call
        /// ([`packs_kernel`]).
        pack_kernel: bool,
        /// Output rows per register block: several on narrow maps (2·OW ≤ mr), else 1 (blocks
        /// along a row).
        rows_per_block: usize,
        /// One block holds every output pixel and channel of an image, the kernel read in
        /// memory order once per image ([`streams_kernel`]).
        stream_kernel: bool,
        /// Winograd with this output tile instead of the direct taps ([`winograd_applies`],
        /// [`winograd_tile`]); the kernel is then transformed, not packed.
        winograd: Option<WinogradTile>,
    },
    /// The input gradient; `rows_per_block` of its stride-1 loop nest (that of a forward conv
    /// whose output is the input), 1 when strided; `winograd` as for `Forward`, of that conv;
    /// `scatter`: a GEMM into columns, scatter-added into the input ([`grad_input_scatters`]).
    GradInput {
        rows_per_block: usize,
        winograd: Option<WinogradTile>,
        scatter: bool,
    },
    /// The kernel gradient reduces over `images_per_group` images per load of a `dw` block
    /// ([`images_per_group`]); or, `winograd`, runs as Winograd F(3×3, 2×2)
    /// ([`grad_kernel_winograd`]).
    GradKernel { images_per_group: usize, winograd: bool },
}

impl ConvLayout {
    pub fn pack_kernel(&self) -> bool {
        matches!(self, ConvLayout::Forward { pack_kernel: true, .. })
    }

    pub fn stream_kernel(&self) -> bool {
        matches!(
            self,
            ConvLayout::Forward {
                stream_kernel: true,
                ..
            }
        )
    }

    pub fn winograd(&self) -> bool {
        matches!(
            self,
            ConvLayout::Forward { winograd: Some(_), .. }
                | ConvLayout::GradInput { winograd: Some(_), .. }
                | ConvLayout::GradKernel { winograd: true, .. }
        )
    }

    /// The output tile of a Winograd forward conv or input gradient.
    pub fn winograd_tile(&self) -> Option<WinogradTile> {
        match *self {
            ConvLayout::Forward { winograd, .. } | ConvLayout::GradInput { winograd, .. } => winograd,
            ConvLayout::GradKernel { .. } => None,
        }
    }

    pub fn rows_per_block(&self) -> usize {
        match *self {
            ConvLayout::Forward { rows_per_block, .. } | ConvLayout::GradInput { rows_per_block, .. } => rows_per_block,
            ConvLayout::GradKernel { .. } => 1,
        }
    }

    pub fn images_per_group(&self) -> usize {
        match *self {
            ConvLayout::GradKernel { images_per_group, .. } => images_per_group,
            _ => 1,
        }
    }
}

impl fmt::Display for ConvLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConvLayout::Forward {
                pack_kernel,
                rows_per_block,
                stream_kernel,
                winograd,
            } => {
                write!(f, "pack={} rows={rows_per_block}", u8::from(pack_kernel))?;
                if stream_kernel {
                    write!(f, " stream")?;
                }
                if let Some(t) = winograd {
                    write!(f, " {t}")?;
                }
                Ok(())
            }
            ConvLayout::GradInput {
                rows_per_block,
                winograd,
                scatter,
            } => {
                write!(f, "rows={rows_per_block}")?;
                if let Some(t) = winograd {
                    write!(f, " {t}")?;
                }
                if scatter {
                    write!(f, " scatter")?;
                }
                Ok(())
            }
            ConvLayout::GradKernel {
                images_per_group,
                winograd,
            } => {
                write!(f, "images={images_per_group}")?;
                if winograd {
                    write!(f, " winograd")?;
                }
                Ok(())
            }
        }
    }
}

/// The output tile of a generated Winograd conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WinogradTile {
    /// F(2×2, 3×3): 4×4 windows, 16 points.
    F2,
    /// F(4×4, 3×3): 6×6 windows, 36 points; 2.25 multiplies per output instead of 4, rounding
    /// errors a few times F(2×2)'s (coefficients up to 8 and 1/24).
    F4,
}

impl WinogradTile {
    /// Output pixels per tile side.
    pub fn side(self) -> usize {
        match self {
            WinogradTile::F2 => 2,
            WinogradTile::F4 => 4,
        }
    }

    /// Input pixels per window side.
    pub fn window(self) -> usize {
        self.side() + 2
    }

    /// Transformed points per tile.
    pub fn points(self) -> usize {
        self.window() * self.window()
    }
}

impl fmt::Display for WinogradTile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WinogradTile::F2 => write!(f, "winograd"),
            WinogradTile::F4 => write!(f, "winograd=f4"),
        }
    }
}

/// Lanes of a packed kernel panel (the generated code's vectors).
pub const PANEL: usize = 16;

/// Whether a forward conv packs its kernel in [`PANEL`]-column panels (the last one
/// zero-padded when the output channels are not a multiple of it, so that narrow convs such as
/// LeNet's 6 filters still run in whole vectors): at least 256 output pixels to reuse the pack
/// (not batch 1 on small maps, where the pack costs more than the strided reads it saves and
/// grows the arena).
pub fn packs_kernel(g: &ConvGeom) -> bool {
    g.n * g.out_hw[0] * g.out_hw[1] >= 256
}

/// Most output pixels per image of a conv whose kernel streams ([`streams_kernel`]): their
/// accumulators (64 KiB at 256 channels) stay within L2.
const STREAM_PIXELS: usize = 64;
/// Fewest kernel floats for it to stream (1 MiB: more than half a core's L2).
const STREAM_KERNEL_FLOATS: usize = 256 * 1024;

/// Whether a forward conv that does not pack its kernel computes all of an image's outputs in
/// one block (in L1), reading the kernel once per image in memory order, a chunk of rows at a
/// time: the kernel is far larger than the output (ResNet18's 3×3×512×512 at 4×4 and batch 1:
/// 9 MiB of weights for 16 pixels; its 8×8 stage, 2.3 MiB for 64), and reading it is the
/// conv's cost. Blocks of a few
/// channels read each kernel row in pieces 2 KiB apart (a new page every other row, out of
/// the prefetchers' reach), and smaller pixel blocks read the kernel again.
pub fn streams_kernel(g: &ConvGeom) -> bool {
    !packs_kernel(g)
        && g.f.is_multiple_of(PANEL)
        && g.c.is_multiple_of(PANEL)
        && g.out_hw[0] * g.out_hw[1] <= STREAM_PIXELS
        && g.kernel_len() >= STREAM_KERNEL_FLOATS
}

/// Most `C·F` of a Winograd conv. Every block of tiles reads all of its transformed kernel
/// (16·C·F floats): 4 MiB at 256×256, from L3, still beat the direct taps on ResNet18's
/// 8×8×256 stage (a training step's gradients ~13% faster on one thread).
const WINOGRAD_MAX_CF: usize = 256 * 256;
/// Fewest output rows and columns of a Winograd conv (16 tiles per image at least): fewer
/// tiles would not repay reading the transformed kernel per block.
const WINOGRAD_MIN_SIDE: usize = 8;

/// Whether a conv with epilogue `e` runs as Winograd F(2×2, 3×3) in generated code: 3×3,
/// stride 1, an even output map of at least [`WINOGRAD_MIN_SIDE`] pixels a side (every 2×2
/// tile whole), input and output channels whole 16-lane vectors, `C·F ≤` [`WINOGRAD_MAX_CF`],
/// an activation that is a vector maximum (none or ReLU: the epilogue runs on the output
/// transform's vectors), and no fused max-pool but a 2×2 one (whose windows are the tiles).
/// 16 multiplies per tile and channel pair instead of 36. Per image, not per batch, so that
/// every thread's share decides alike.
pub fn winograd_applies(g: &ConvGeom, e: &Epilogue) -> bool {
    let [oh, ow] = g.out_hw;
    let act_ok = matches!(e.act, Activation::Linear | Activation::Relu);
    let pool_ok = e
        .max_pool
        .is_none_or(|w| w.size == [2, 2] && w.strides == [2, 2] && w.pad == Pad2d::default());
    g.kernel_hw == [3, 3]
        && g.strides == [1, 1]
        && oh.is_multiple_of(2)
        && ow.is_multiple_of(2)
        && oh.min(ow) >= WINOGRAD_MIN_SIDE
        && g.c.is_multiple_of(PANEL)
        && g.f.is_multiple_of(PANEL)
        && g.c * g.f <= WINOGRAD_MAX_CF
        && act_ok
        && pool_ok
}

/// Most `C·F` of an F(4×4) conv: its transformed kernel is 36·C·F floats, 2.25 MiB at 128×128
/// (ResNet18's 16×16×128 stage, measured a little faster than F(2×2) there).
const WINOGRAD_F4_MAX_CF: usize = 128 * 128;

/// The output tile of a Winograd conv ([`winograd_applies`]): F(4×4, 3×3) when the output map
/// is whole 4×4 tiles and `C·F ≤` [`WINOGRAD_F4_MAX_CF`], else F(2×2, 3×3).
pub fn winograd_tile(g: &ConvGeom) -> WinogradTile {
    let [oh, ow] = g.out_hw;
    if oh.is_multiple_of(4) && ow.is_multiple_of(4) && g.c * g.f <= WINOGRAD_F4_MAX_CF {
        WinogradTile::F4
    } else {
        WinogradTile::F2
    }
}

/// The conv of `dy` ([`ConvGeom::grad_input_as_conv`]) that the input gradient of conv `g` runs
/// as, when that runs as Winograd ([`winograd_applies`]).
pub fn grad_input_winograd(g: &ConvGeom) -> Option<ConvGeom> {
    g.grad_input_as_conv().filter(|t| winograd_applies(t, &Epilogue::NONE))
}

/// Whether the input gradient of conv `g` runs as `cols = dy · wᵀ` per image, in vectors along
/// the `KH·KW·C` taps and channels, then scatter-added into `dx` (col2im), as the kernels
/// backend does: when `dx` has fewer channels than a vector (LeNet's 6), which the gathering
/// nests, vectorised along them, would compute in mostly idle lanes (6 of 16, against 150 of
/// 160 for LeNet's columns).
pub fn grad_input_scatters(g: &ConvGeom) -> bool {
    g.c < PANEL
}

/// Whether the kernel gradient of conv `g` runs as Winograd F(3×3, 2×2): the conv is one
/// ([`winograd_applies`]) and its `dy` is not rebuilt from a pooled one.
pub fn grad_kernel_winograd(g: &ConvGeom, pooled: bool) -> bool {
    !pooled && winograd_applies(g, &Epilogue::NONE)
}

/// Images per `dw` block load of the kernel gradient: the largest divisor of the batch with at
/// most 256 output pixels in all (one image of 14×14 or more; ResNet18's 4×4 layers take 16).
pub fn images_per_group(g: &ConvGeom) -> usize {
    let px = (g.out_hw[0] * g.out_hw[1]).max(1);
    (1..=g.n.max(1))
        .rev()
        .find(|&d| g.n.is_multiple_of(d) && d * px <= 256)
        .unwrap_or(1)
}

/// The [`ConvLayout`] of a convolution kernel with register tiles of `mr` rows (`None` for
/// other kernels).
pub fn conv_layout(op: &KernelOp, mr: usize) -> Option<ConvLayout> {
    let mr = mr.clamp(1, 14);
    // Whole output rows per block of a nest with output `[oh, ow]`.
    let rows = |[oh, ow]: [usize; 2]| {
        if ow > 0 && 2 * ow <= mr {
            oh.div_ceil(oh.div_ceil((mr / ow).min(oh).max(1)))
        } else {
            1
        }
    };
    match op {
        KernelOp::Conv2d {
            geom,
            epilogue,
            winograd_u,
        } => {
            // (a fused max-pool walks windows, not whole rows: no streamed block)
            let stream_kernel = streams_kernel(geom) && epilogue.max_pool.is_none();
            // A prepared `u` fixes the tile (a band of a batch-1 conv may be too small to
            // choose Winograd itself).
            let winograd = winograd_u.or_else(|| winograd_applies(geom, epilogue).then(|| winograd_tile(geom)));
            Some(ConvLayout::Forward {
                pack_kernel: packs_kernel(geom) && winograd.is_none(),
                rows_per_block: if stream_kernel {
                    geom.out_hw[0]
                } else {
                    rows(geom.out_hw)
                },
                stream_kernel,
                winograd,
            })
        }
        KernelOp::ConvGradInput { geom } => Some(ConvLayout::GradInput {
            rows_per_block: if geom.strides == [1, 1] { rows(geom.in_hw) } else { 1 },
            winograd: grad_input_winograd(geom).map(|t| winograd_tile(&t)),
            scatter: grad_input_scatters(geom),
        }),
        KernelOp::ConvGradKernel { geom, pooled, .. } => Some(ConvLayout::GradKernel {
            images_per_group: images_per_group(geom),
            winograd: grad_kernel_winograd(geom, pooled.is_some()),
        }),
        _ => None,
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tiling {
            Tiling::Gemm(t) => write!(f, "mc={} kc={} nc={} mr={} nr={}", t.mc, t.kc, t.nc, t.mr, t.nr)?,
            Tiling::Rows { block } => write!(f, "rows/block={block}")?,
        }
        let split = match self.split {
            Split::None => "none",
            Split::M => "m",
            Split::N => "n",
            Split::Rows => "rows",
            Split::Samples => "samples",
            Split::Bands => "bands",
        };
        write!(
            f,
            " vw={} unroll={} threads={} split={split}",
            self.vector_width, self.unroll, self.threads
        )?;
        if let Some(l) = self.conv {
            write!(f, " {l}")?;
        }
        Ok(())
    }
}

fn round_down(x: usize, to: usize) -> usize {
    (x / to) * to
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

pub(crate) fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The schedule of `op` on `machine`.
pub fn choose(op: &KernelOp, machine: &Machine) -> Schedule {
    match op.gemm_dims() {
        Some(d) => gemm_schedule(op, d, machine),
        None => rows_schedule(op, machine),
    }
}

/// Rows of output a fused max-pool consumes per band: M tiles must hold whole bands.
fn pool_band(op: &KernelOp) -> usize {
    match op {
        KernelOp::Conv2d {
            geom,
            epilogue: Epilogue { max_pool: Some(w), .. },
            ..
        } => w.size[0] * geom.out_hw[1],
        _ => 1,
    }
}

fn gemm_schedule(op: &KernelOp, d: GemmDims, m: &Machine) -> Schedule {
    let vw = m.vector_width;
    // A dense layer with few rows (batch 1) gives the registers its rows leave to more
    // columns: more independent accumulators per step, and B's rows read whole, in order.
    let widest = match op {
        KernelOp::Gemm { .. } => ((m.vector_registers() - 2) / (d.m.max(1) + 1)).max(2),
        _ => 2,
    };
    let nr_vecs = d.n.div_ceil(vw).clamp(1, widest);
    let nr = nr_vecs * vw;
    // Accumulators mr × nr_vecs plus the B vectors and one broadcast A value must fit.
    let mr = ((m.vector_registers() - nr_vecs - 2) / nr_vecs).clamp(1, 14).min(d.m);
    let kc = round_down(m.l1 / 2 / ((mr + nr) * 4), UNROLL).max(UNROLL).min(d.k);
    let unit = {
        let band = pool_band(op);
        band / gcd(band, mr) * mr
    };
    let m_full = round_up(d.m, unit);
    let mut mc = round_down(m.l2 / 2 / (kc * 4), unit).max(unit).min(m_full);
    let whole_rows = op.epilogue().is_some_and(|e| e.act == Activation::Softmax);
    let n_full = round_up(d.n, nr);
    let mut nc = if whole_rows {
        n_full
    } else {
        round_down(m.l3 / 2 / m.cores.max(1) / (kc * 4), nr).max(nr).min(n_full)
    };
    let (mut threads, mut split) = (1, Split::None);
    let t = m.cores;
    if op.flops() >= PARALLEL_FLOPS && t > 1 {
        // Split the dimension whose register tiles divide most evenly among the threads.
        let (um, un) = (d.m.div_ceil(unit), d.n.div_ceil(nr));
        let m_ok = um >= t;
        let n_ok = un >= t && !whole_rows;
        let m_better = um.div_ceil(t) * t * un <= un.div_ceil(t) * t * um;
        if m_ok && (!n_ok || m_better) {
            mc = even_blocks(d.m, mc, unit, t);
            (threads, split) = (t, Split::M);
        } else if n_ok {
            nc = even_blocks(d.n, nc, nr, t);
            (threads, split) = (t, Split::N);
        }
    }
    Schedule {
        tiling: Tiling::Gemm(GemmTiles { mc, kc, nc, mr, nr }),
        vector_width: vw,
        unroll: UNROLL,
        threads,
        split,
        conv: conv_layout(op, mr),
    }
}

/// A block size, a multiple of `unit` and at most `block`, giving a number of blocks along
/// `len` that `threads` divides (so contiguous ranges of blocks balance).
fn even_blocks(len: usize, block: usize, unit: usize, threads: usize) -> usize {
    let blocks = round_up(len.div_ceil(block), threads);
    round_up(len.div_ceil(blocks), unit).min(block)
}

/// Rows and elements per row of a row-wise template (its parallel loop).
fn rows_of(op: &KernelOp) -> (usize, usize) {
    match op {
        KernelOp::Pool { kind, geom: g } | KernelOp::PoolGrad { kind, geom: g, .. } => match kind {
            PoolKind::GlobalAvg => (g.n, g.in_hw[0] * g.in_hw[1] * g.c),
            _ => (g.n * g.out_hw[0], g.out_hw[1] * g.c),
        },
        KernelOp::MaxPoolGradArgmax { geom: g, .. } => (g.n * g.out_hw[0], g.out_hw[1] * g.c),
        KernelOp::Elementwise { len, channels, .. } => (len / channels.max(&1), *channels),
        KernelOp::Softmax { rows, cols } | KernelOp::SoftmaxGrad { rows, cols } => (*rows, *cols),
        KernelOp::Loss { rows, cols, .. } | KernelOp::LossGrad { rows, cols, .. } => (*rows, *cols),
        KernelOp::SoftmaxXent { rows, classes, .. } => (*rows, *classes),
        KernelOp::Reduce { rows, channels }
        | KernelOp::Moments { rows, channels }
        | KernelOp::BnApply { rows, channels, .. }
        | KernelOp::BnGradInput { rows, channels, .. }
        | KernelOp::BnGradGamma { rows, channels, .. }
        | KernelOp::BnActBackward { rows, channels, .. }
        | KernelOp::SliceChannels { rows, channels, .. } => (*rows, *channels),
        KernelOp::Concat { rows, parts } => (*rows, parts.iter().sum()),
        KernelOp::MovingAverage { channels, .. } => (1, *channels),
        KernelOp::OptimizerUpdate { len, .. } => (len.div_ceil(1024), 1024),
        KernelOp::WinogradKernel { c, f, .. } => (*c, 9 * f),
        KernelOp::Conv2d { .. }
        | KernelOp::ConvGradInput { .. }
        | KernelOp::ConvGradKernel { .. }
        | KernelOp::Gemm { .. } => (1, 1),
    }
}

fn rows_schedule(op: &KernelOp, m: &Machine) -> Schedule {
    let (rows, row_len) = rows_of(op);
    let threads = if op.flops() >= PARALLEL_FLOPS {
        m.cores.clamp(1, rows.max(1))
    } else {
        1
    };
    // A block's rows stay within a quarter of L1 so inputs and outputs of a block coexist.
    let block = (m.l1 / 4 / (row_len.max(1) * 4)).clamp(1, rows.div_ceil(threads).max(1));
    Schedule {
        tiling: Tiling::Rows { block },
        conv: None,
        vector_width: m.vector_width,
        unroll: UNROLL,
        threads,
        split: if threads > 1 { Split::Rows } else { Split::None },
    }
}

/// A byte range of a kernel's scratch buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Region {
    pub offset: usize,
    pub bytes: usize,
}

/// Where a kernel's workspace lives inside its scratch buffer (all regions 64-byte aligned):
/// per-thread packed A blocks (`threads × mc × kc` f32), per-thread packed B panels
/// (`threads × kc × nc` f32), per-thread f64 partial sums (`threads × partial_width`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ScratchLayout {
    pub pack_a: Region,
    pub pack_b: Region,
    pub partials: Region,
    /// f64 partial sums per thread (BN statistics, bias gradients, reductions, loss).
    pub partial_width: usize,
    pub total: usize,
}

/// How many f64 accumulators per thread a template reduces into.
fn partial_width(op: &KernelOp) -> usize {
    match op {
        KernelOp::Conv2d { geom, epilogue, .. } => usize::from(epilogue.bn_stats) * 2 * geom.f,
        KernelOp::Gemm {
            n, epilogue, bias_grad, ..
        } => usize::from(epilogue.bn_stats) * 2 * n + usize::from(*bias_grad) * n,
        KernelOp::ConvGradKernel { geom, bias_grad, .. } => usize::from(*bias_grad) * geom.f,
        KernelOp::Reduce { channels, .. } | KernelOp::BnGradGamma { channels, .. } => *channels,
        KernelOp::Moments { channels, .. }
        | KernelOp::BnGradInput { channels, .. }
        | KernelOp::BnActBackward { channels, .. } => 2 * channels,
        KernelOp::Loss { .. } | KernelOp::SoftmaxXent { .. } => 1,
        _ => 0,
    }
}

/// The scratch layout of `op` under schedule `s`; `total == 0` means no scratch buffer.
pub fn scratch_layout(op: &KernelOp, s: &Schedule) -> ScratchLayout {
    let t = s.threads.max(1);
    let (a, b) = match s.tiling {
        Tiling::Gemm(g) => (t * g.mc * g.kc * 4, t * g.kc * g.nc * 4),
        Tiling::Rows { .. } => (0, 0),
    };
    let width = partial_width(op);
    let p = t * width * 8;
    let pack_a = Region { offset: 0, bytes: a };
    let pack_b = Region {
        offset: round_up(a, ALIGN),
        bytes: b,
    };
    let partials = Region {
        offset: pack_b.offset + round_up(b, ALIGN),
        bytes: p,
    };
    let total = partials.offset + round_up(p, ALIGN);
    ScratchLayout {
        pack_a,
        pack_b,
        partials,
        partial_width: width,
        total,
    }
}

/// Broken schedule invariants of `s` for `op` (used by the kernel IR verifier).
pub fn check(op: &KernelOp, s: &Schedule) -> Vec<String> {
    let mut errs = Vec::new();
    if s.threads == 0 || s.vector_width == 0 || s.unroll == 0 {
        errs.push(format!("degenerate schedule {s}"));
    }
    if (s.threads > 1) == (s.split == Split::None) {
        errs.push(format!("{} threads with split {:?}", s.threads, s.split));
    }
    let mr = match s.tiling {
        Tiling::Gemm(g) => g.mr,
        Tiling::Rows { .. } => 1,
    };
    if s.conv != conv_layout(op, mr) {
        errs.push(format!("conv layout {:?}, expected {:?}", s.conv, conv_layout(op, mr)));
    }
    match (op.gemm_dims(), s.tiling) {
        (Some(d), Tiling::Gemm(g)) => {
            if g.mr == 0
                || g.nr == 0
                || !g.mc.is_multiple_of(g.mr)
                || !g.nc.is_multiple_of(g.nr)
                || g.kc == 0
                || g.kc > d.k
            {
                errs.push(format!("gemm tiles {s} do not nest for m={} n={} k={}", d.m, d.n, d.k));
            }
            if !g.mc.is_multiple_of(pool_band(op)) {
                errs.push(format!("mc={} does not hold whole pooling bands", g.mc));
            }
            if op.epilogue().is_some_and(|e| e.act == Activation::Softmax) && (g.nc < d.n || s.split == Split::N) {
                errs.push(format!(
                    "softmax epilogue needs whole rows per tile, nc={} < n={}",
                    g.nc, d.n
                ));
            }
        }
        (None, Tiling::Rows { block }) if block > 0 => {}
        _ => errs.push(format!("tiling {s} does not fit a {}", op.mnemonic())),
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Pad2d, Window2d};
    use crate::kernel_ir::kernel::{ConvGeom, PooledDy};

    fn conv(n: usize, hw: usize, c: usize, f: usize, pool: bool) -> KernelOp {
        let geom = ConvGeom {
            n,
            in_hw: [hw, hw],
            c,
            kernel_hw: [3, 3],
            f,
            strides: [1, 1],
            pad: Pad2d {
                top: 1,
                bottom: 1,
                left: 1,
                right: 1,
            },
            out_hw: [hw, hw],
        };
        let mut epilogue = Epilogue::NONE;
        if pool {
            epilogue.max_pool = Some(Window2d {
                size: [2, 2],
                strides: [2, 2],
                pad: Pad2d::default(),
            });
        }
        KernelOp::Conv2d {
            geom,
            epilogue,
            winograd_u: None,
        }
    }

    #[test]
    fn gemm_tiles_fit_the_caches() {
        let m = Machine::reference();
        for op in [
            conv(128, 28, 1, 32, true),
            conv(128, 14, 32, 64, false),
            conv(1, 5, 3, 4, false),
        ] {
            let s = choose(&op, &m);
            assert!(check(&op, &s).is_empty(), "{:?}", check(&op, &s));
            let Tiling::Gemm(g) = s.tiling else {
                panic!("not a gemm tiling")
            };
            assert!((g.mr + g.nr) * g.kc * 4 <= m.l1 / 2 + g.nr * 4 * UNROLL);
            assert!(g.mc * g.kc * 4 <= m.l2 / 2 || g.mc == pool_band(&op) / gcd(pool_band(&op), g.mr) * g.mr);
            assert!(g.mr * (g.nr / m.vector_width) + g.nr / m.vector_width < m.vector_registers());
        }
    }

    #[test]
    fn pooled_conv_tiles_hold_whole_bands() {
        let op = conv(128, 28, 1, 32, true);
        let s = choose(&op, &Machine::reference());
        let Tiling::Gemm(g) = s.tiling else {
            panic!("not a gemm tiling")
        };
        assert!(g.mc.is_multiple_of(56));
        assert_eq!((s.threads, s.split), (2, Split::M));
    }

    #[test]
    fn small_kernels_stay_on_one_thread() {
        let op = KernelOp::Reduce { rows: 4, channels: 10 };
        let s = choose(&op, &Machine::reference());
        assert_eq!((s.threads, s.split), (1, Split::None));
        assert_eq!(scratch_layout(&op, &s).partials.bytes, 10 * 8);
    }

    #[test]
    fn winograd_takes_even_3x3_maps_up_to_256_by_256_channels() {
        let m = Machine::reference();
        let wino = |op: &KernelOp| choose(op, &m).conv.is_some_and(|l| l.winograd());
        // The CIFAR-10 CNN's 32×32×32 → 32 with its 2×2 pool; ResNet18's 16×16×128 → 128,
        // whose kernel is then transformed rather than packed.
        let tile = |op: &KernelOp| choose(op, &m).conv.and_then(|l| l.winograd_tile());
        assert_eq!(tile(&conv(64, 32, 32, 32, true)), Some(WinogradTile::F4));
        let big = conv(32, 16, 128, 128, false);
        assert!(wino(&big) && !choose(&big, &m).conv.is_some_and(|l| l.pack_kernel()));
        // F(4×4) up to 128×128 channels, and on whole 4×4 tiles.
        assert_eq!(tile(&big), Some(WinogradTile::F4));
        assert_eq!(tile(&conv(32, 16, 256, 256, false)), Some(WinogradTile::F2));
        assert_eq!(tile(&conv(32, 14, 32, 32, false)), Some(WinogradTile::F2));
        // Not: a sigmoid (the epilogue runs in vectors, its activation a maximum), 4×4 maps
        // (4 tiles an image), 512×512 kernels (16 MiB transformed), 3 channels.
        let KernelOp::Conv2d { geom, mut epilogue, .. } = conv(64, 32, 32, 32, false) else {
            unreachable!()
        };
        epilogue.act = Activation::Sigmoid;
        let sigmoid = KernelOp::Conv2d {
            geom,
            epilogue,
            winograd_u: None,
        };
        assert!(!wino(&sigmoid));
        assert!(!wino(&conv(32, 4, 64, 64, false)));
        assert!(wino(&conv(32, 8, 256, 256, false)));
        assert!(!wino(&conv(32, 8, 512, 512, false)));
        assert!(!wino(&conv(32, 32, 3, 64, false)));
        // The input gradient of a stride-1 conv is a conv too: Winograd by the same rule.
        let KernelOp::Conv2d { geom, .. } = big else {
            unreachable!()
        };
        assert!(wino(&KernelOp::ConvGradInput { geom }));
        // So is the kernel gradient, unless its dy is rebuilt from a pooled one.
        let dw = |pooled| KernelOp::ConvGradKernel {
            geom,
            bias_grad: true,
            pooled,
        };
        assert!(wino(&dw(None)));
        let window = Window2d {
            size: [2, 2],
            strides: [2, 2],
            pad: Pad2d::default(),
        };
        let pd = PooledDy { window, act_grad: None };
        assert!(!wino(&dw(Some(pd))));
        let geom = ConvGeom { c: 3, ..geom };
        assert!(!wino(&KernelOp::ConvGradInput { geom }));
    }

    #[test]
    fn input_gradients_into_fewer_channels_than_a_vector_scatter() {
        let m = Machine::reference();
        let scatter = |c: usize| {
            let KernelOp::Conv2d { geom, .. } = conv(128, 12, c, 16, false) else {
                unreachable!()
            };
            let l = choose(&KernelOp::ConvGradInput { geom }, &m).conv;
            l.is_some_and(|l| matches!(l, ConvLayout::GradInput { scatter: true, .. }))
        };
        // LeNet's 6 channels and any other narrow input; not a whole vector's worth.
        assert!(scatter(6) && scatter(1) && scatter(15));
        assert!(!scatter(16) && !scatter(32));
    }

    #[test]
    fn conv_layouts_follow_the_shapes_and_the_verifier_checks_them() {
        let m = Machine::reference();
        // 4×4 maps: whole rows per block (2 of 4 pixels with mr 14), no pack at batch 1...
        let small = choose(&conv(1, 4, 64, 64, false), &m);
        assert_eq!(
            small.conv,
            Some(ConvLayout::Forward {
                pack_kernel: false,
                rows_per_block: 2,
                stream_kernel: false,
                winograd: None,
            })
        );
        // ... but a 9 MiB kernel for 16 pixels streams, every row of the map in one block.
        let streamed = choose(&conv(1, 4, 512, 512, false), &m);
        assert_eq!(
            streamed.conv,
            Some(ConvLayout::Forward {
                pack_kernel: false,
                rows_per_block: 4,
                stream_kernel: true,
                winograd: None,
            })
        );
        // A fused max-pool walks windows: that conv does not stream.
        let pooled = choose(&conv(1, 4, 512, 512, true), &m);
        assert!(pooled.conv.is_some_and(|l| !l.stream_kernel()));
        // Batch 32: 512 output pixels reuse a packed kernel.
        let big = choose(&conv(32, 4, 512, 512, false), &m);
        assert!(big.conv.is_some_and(|l| l.pack_kernel()));
        // 14×14 maps: blocks along a row.
        assert_eq!(
            choose(&conv(128, 14, 32, 64, true), &m)
                .conv
                .map(|l| l.rows_per_block()),
            Some(1)
        );
        let KernelOp::Conv2d { geom, .. } = conv(32, 4, 512, 512, false) else {
            unreachable!()
        };
        let grad = KernelOp::ConvGradKernel {
            geom,
            bias_grad: false,
            pooled: None,
        };
        let gs = choose(&grad, &m);
        assert_eq!(
            gs.conv,
            Some(ConvLayout::GradKernel {
                images_per_group: 16,
                winograd: false,
            })
        );
        assert!(check(&grad, &gs).is_empty());
        let wrong = Schedule {
            conv: Some(ConvLayout::GradKernel {
                images_per_group: 4,
                winograd: false,
            }),
            ..gs
        };
        assert!(check(&grad, &wrong).iter().any(|e| e.contains("conv layout")));
        assert!(choose(&KernelOp::Reduce { rows: 4, channels: 10 }, &m).conv.is_none());
    }
}
