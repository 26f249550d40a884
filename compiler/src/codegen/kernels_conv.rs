//! The forward convolution template (with its epilogue and a fused max-pool); its loop nest
//! also runs the stride-1 input gradient (`kernels_conv_grad`). Shared pieces (blocks, the
//! epilogue, statistics) are in `kernels_gemm`, vector blocks in `kernels_lanes`.
//!
//! A padding conv first copies each image into a zero-padded scratch image, so that no tap
//! needs a bounds test. Every output row is then cut into blocks of `mr` pixels — the block's
//! `mr × nb` accumulators share every load of the kernel — and the last block may be shorter.
//! A fused max-pool walks the pooled map instead, each window's pixels through the same code,
//! `mr` windows at a time.

use crate::ir::{Activation, Pad2d};
use crate::kernel_ir::kernel::pool_tiles;
use crate::kernel_ir::schedule::{packs_kernel, winograd_applies, ConvLayout, WinogradTile};
use crate::kernel_ir::{ConvGeom, Epilogue, Schedule};

use super::kernels_gemm::{
    block_width_line, declare_stats, epilogue, finish_stats, open_j0, row_block, row_stats, store_block, tile_width,
    width,
};
use super::kernels_lanes::{self, lane_rows, lane_vectors, panel_block, LANES};
use super::kernels_winograd::{winograd_nest, winograd_parts};
use super::writer::{add, mul, Code};

/// `[hp, wp]` of the zero-padded image the forward taps read (scratch `xp`, one image at a
/// time), or `None` when the conv has no padding and its taps read `x` in place.
pub(crate) fn padded_hw(g: &ConvGeom) -> Option<[usize; 2]> {
    let p = g.pad;
    (p != Pad2d::default()).then_some([g.in_hw[0] + p.top + p.bottom, g.in_hw[1] + p.left + p.right])
}

/// Floats of a `[rows, cols]` matrix laid out in 16-lane panels `[⌈cols / 16⌉][rows][16]`, the
/// last panel zero-padded. Every channel block then streams one contiguous panel per vector
/// instead of rows `cols` floats apart, whose power-of-two strides fall into a few cache sets
/// (ResNet18's 512-channel kernels), and a narrow block (LeNet's 6 channels) is one whole
/// vector of which the epilogue keeps the live lanes.
pub(crate) fn panel_len(rows: usize, cols: usize) -> usize {
    rows * cols.next_multiple_of(LANES)
}

/// Emits `wp = w` packed in 16-lane panels (see [`ConvLayout::Forward`] and [`panel_len`]).
fn pack_kernel(c: &mut Code, g: &ConvGeom) {
    let f = g.f;
    let k = g.kernel_len() / f;
    c.line(format!("// wp = w as {} panels of [{k}, {LANES}]", f.div_ceil(LANES)));
    if !f.is_multiple_of(LANES) {
        c.line("wp.fill(0.0);");
    }
    c.open(format!("for (k, wr) in w.chunks_exact({f}).enumerate()"));
    if f.is_multiple_of(LANES) {
        c.open(format!("for (p, v) in wr.chunks_exact({LANES}).enumerate()"));
        c.line(format!("wp[(p * {k} + k) * {LANES}..][..{LANES}].copy_from_slice(v);"));
    } else {
        c.open(format!("for (p, v) in wr.chunks({LANES}).enumerate()"));
        c.line(format!("wp[(p * {k} + k) * {LANES}..][..v.len()].copy_from_slice(v);"));
    }
    c.close();
    c.close();
}

/// Operand names of a forward conv loop nest: the conv's own, or those of the input gradient
/// run as a conv (`dy` padded into `dyp`, the flipped kernel `wt`, into `dx`).
pub(super) struct Names {
    pub(super) x: &'static str,
    pub(super) w: &'static str,
    pub(super) y: &'static str,
    pub(super) xp: &'static str,
    /// `w` is in 16-lane panels ([`panel_len`]), else HWIO.
    pub(super) panels: bool,
}

pub(super) const FORWARD: Names = Names {
    x: "x",
    w: "w",
    y: "y",
    xp: "xp",
    panels: false,
};

/// The convolution layout of schedule `s`.
pub(super) fn layout(s: &Schedule) -> Result<ConvLayout, String> {
    s.conv
        .ok_or_else(|| "a convolution schedule without its layout".to_string())
}

/// `(e) * k` as source (`mul` for a single term).
pub(super) fn times(e: &str, k: usize) -> String {
    if e.contains(' ') && k != 1 {
        mul(&format!("({e})"), k)
    } else {
        mul(e, k)
    }
}

/// Binds `xr`, input row `ih` of image `n` as the taps read it (padded or in place).
pub(super) fn input_row(c: &mut Code, g: &ConvGeom, nm: &Names, ih: &str) {
    let [h, w] = g.in_hw;
    let cc = g.c;
    match padded_hw(g) {
        Some([_, wp]) => c.line(format!("let xr = &{}[{}..][..{}];", nm.xp, times(ih, wp * cc), wp * cc)),
        None => c.line(format!(
            "let xr = &{}[(n * {h} + {ih}) * {}..][..{}];",
            nm.x,
            w * cc,
            w * cc
        )),
    }
}

/// The taps of the `mr` pixels `(n, oh, first + m·step)` (every tap inside the padded image):
/// in the vector block `va` when `lanes` is `Some(nv)`, else by `axpy`s into `acc: [[f32; nb];
/// mr]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn block_taps(
    c: &mut Code,
    g: &ConvGeom,
    nm: &Names,
    first: &str,
    step: usize,
    mr: usize,
    nb: usize,
    wdt: &str,
    lanes: Option<usize>,
) {
    let [kh, kw] = g.kernel_hw;
    let (cc, f, sw) = (g.c, g.f, g.strides[1]);
    let pitch = step * sw * cc;
    match lanes {
        Some(nv) => kernels_lanes::declare(c, mr, nv),
        None => c.line(format!("let mut acc = [[0f32; {nb}]; {mr}];")),
    }
    c.open(format!("for kh in 0..{kh}"));
    input_row(c, g, nm, &add(&mul("oh", g.strides[0]), "kh"));
    c.open(format!("for kw in 0..{kw}"));
    // The block's input values and kernel rows as fixed-length slices: one bounds check each.
    c.line(format!(
        "let xb = &xr[{}..][..{}];",
        times(&add(&mul(first, sw), "kw"), cc),
        (mr - 1) * pitch + cc
    ));
    let a = format!("xb[{} + ci]", mul("m", pitch));
    if lanes.is_some() && nm.panels {
        // Panel p (16 columns) holds [K, 16]: row (kh, kw, ci) of column block j0 at
        // j0·K + ((kh·KW + kw)·C + ci)·16, and the block's next panel K·16 further.
        let k = g.kernel_len() / f;
        let nv = nb / LANES;
        c.line(format!(
            "let ws = &{}[j0 * {k} + (kh * {kw} + kw) * {}..][..{}];",
            nm.w,
            cc * LANES,
            (nv - 1) * k * LANES + cc * LANES
        ));
        c.open(format!("for ci in 0..{cc}"));
        let load = format!("V::load(&ws[j * {} + {}..])", k * LANES, mul("ci", LANES));
        kernels_lanes::step(c, mr, nv, &load, &a);
        c.close();
        c.close();
        c.close();
        return;
    }
    c.line(format!(
        "let ws = &{}[(kh * {kw} + kw) * {} + j0..][..{}];",
        nm.w,
        cc * f,
        (cc - 1) * f + nb
    ));
    c.open(format!("for ci in 0..{cc}"));
    kernels_lanes::accumulate(c, mr, lanes, &format!("ws[{}..]", mul("ci", f)), wdt, &a);
    c.close();
    c.close();
    c.close();
}

/// Emits `OFF`, where the input window of each pixel `m` of a block of `rr` output rows starts
/// in the block's first input row, and returns those offsets.
fn pixel_offsets(c: &mut Code, g: &ConvGeom, rr: usize) -> Vec<usize> {
    let (w, ow, cc, [sh, sw]) = (g.in_hw[1], g.out_hw[1], g.c, g.strides);
    let row_len = padded_hw(g).map_or(w, |[_, wp]| wp) * cc;
    let off: Vec<usize> = (0..rr * ow)
        .map(|m| (m / ow) * sh * row_len + (m % ow) * sw * cc)
        .collect();
    c.line(format!(
        "const OFF: [usize; {}] = [{}];",
        off.len(),
        off.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
    ));
    off
}

/// Opens the loops over the taps' kernel rows and columns of a block of output rows from
/// `oh` (pixel offsets `off`), binding `xr` (input row `oh·sh + kh`, padded or in place) and
/// `xb` (its part the block's pixels read at column `kw`).
fn open_tap_rows(c: &mut Code, g: &ConvGeom, nm: &Names, off: &[usize]) {
    let ([h, w], [kh, kw], cc, sh) = (g.in_hw, g.kernel_hw, g.c, g.strides[0]);
    let row_len = padded_hw(g).map_or(w, |[_, wp]| wp) * cc;
    let last = off[off.len() - 1];
    let span = last + kw * cc;
    c.open(format!("for kh in 0..{kh}"));
    let ih = add(&mul("oh", sh), "kh");
    match padded_hw(g) {
        Some(_) => c.line(format!("let xr = &{}[{}..][..{span}];", nm.xp, times(&ih, row_len))),
        None => c.line(format!("let xr = &{}[(n * {h} + {ih}) * {row_len}..][..{span}];", nm.x)),
    }
    c.open(format!("for kw in 0..{kw}"));
    c.line(format!("let xb = &xr[{}..][..{}];", mul("kw", cc), last + cc));
}

/// `va: [[V; nv]; rr·OW]` holding the taps of output rows `oh..oh + rr` of image `n` (a
/// vector block of `nv` vectors per pixel): pixel `m` is `(oh + m / OW, m % OW)`, whose input
/// window starts `OFF[m]` values into the block's first input row.
fn rows_taps(c: &mut Code, g: &ConvGeom, nm: &Names, rr: usize, nb: usize, nv: usize) {
    let (kw, cc, f) = (g.kernel_hw[1], g.c, g.f);
    let mr = rr * g.out_hw[1];
    let off = pixel_offsets(c, g, rr);
    kernels_lanes::declare(c, mr, nv);
    open_tap_rows(c, g, nm, &off);
    let k = g.kernel_len() / f;
    let load = if nm.panels {
        c.line(format!(
            "let ws = &{}[j0 * {k} + (kh * {kw} + kw) * {}..][..{}];",
            nm.w,
            cc * LANES,
            (nv - 1) * k * LANES + cc * LANES
        ));
        format!("V::load(&ws[j * {} + {}..])", k * LANES, mul("ci", LANES))
    } else {
        c.line(format!(
            "let ws = &{}[(kh * {kw} + kw) * {} + j0..][..{}];",
            nm.w,
            cc * f,
            (cc - 1) * f + nb
        ));
        kernels_lanes::row_load(&format!("ws[{}..]", mul("ci", f)))
    };
    c.open(format!("for ci in 0..{cc}"));
    kernels_lanes::step(c, mr, nv, &load, "xb[OFF[m] + ci]");
    c.close();
    c.close();
    c.close();
}

/// Input channels per chunk of a streamed kernel ([`stream_taps`]).
const STREAM_CHUNK: usize = 16;
/// Most pixels per register block of [`stream_taps`] (one vector each, and room for operands).
const STREAM_BLOCK: usize = 16;

/// [`rows_taps`] over all `f` output channels (`nb = f`, `nv = f / 16` vectors per pixel) of a
/// conv whose kernel streams (`ConvLayout::Forward::stream_kernel`): the kernel rows of
/// [`STREAM_CHUNK`] input channels at a time (all `f` values of each, contiguous), one
/// channel vector at a time, into register accumulators of up to [`STREAM_BLOCK`] pixels
/// loaded from and stored back to the block `va` (`mr · f` floats, in L1 or L2). Every kernel
/// value is read from memory once, in memory order (again from L1 per pixel block).
fn stream_taps(c: &mut Code, g: &ConvGeom, nm: &Names, rr: usize, nv: usize) {
    let (kw, cc, f) = (g.kernel_hw[1], g.c, g.f);
    let mr = rr * g.out_hw[1];
    let off = pixel_offsets(c, g, rr);
    c.line(format!(
        "// [pixel][channel vector], in L1 (or L2) between chunks of {STREAM_CHUNK} kernel rows"
    ));
    kernels_lanes::declare(c, mr, nv);
    open_tap_rows(c, g, nm, &off);
    c.line(format!(
        "let ws = &{}[(kh * {kw} + kw) * {}..][..{}];",
        nm.w,
        cc * f,
        cc * f
    ));
    c.open(format!("for c0 in (0..{cc}).step_by({STREAM_CHUNK})"));
    c.open(format!("for j in 0..{nv}"));
    // The next chunk's lines of this vector: 16 rows 4·f bytes apart, which the hardware
    // prefetchers do not follow.
    c.open(format!("if c0 + {STREAM_CHUNK} < {cc}"));
    c.line(format!(
        "for ci in c0 + {STREAM_CHUNK}..c0 + {} {{ prefetch(&ws[ci * {f} + {LANES} * j..]); }}",
        2 * STREAM_CHUNK
    ));
    c.close();
    // Register blocks of up to STREAM_BLOCK pixels, the chunk's vector `j` read from L1; the
    // blocks written out, so that every pixel offset is a constant.
    for pb in (0..mr).step_by(STREAM_BLOCK) {
        let bm = (mr - pb).min(STREAM_BLOCK);
        let px = add(&pb.to_string(), "m");
        c.line(format!("// pixels {pb}..{}", pb + bm));
        c.line(format!("let mut vb: [V; {bm}] = array_with(|m| va[{px}][j]);"));
        c.open(format!("for ci in c0..c0 + {STREAM_CHUNK}"));
        c.line(format!("let b = V::load(&ws[ci * {f} + {LANES} * j..]);"));
        c.line(format!(
            "for m in 0..{bm} {{ vb[m] = vb[m].fma(V::splat(xb[OFF[{px}] + ci]), b); }}"
        ));
        c.close();
        c.line(format!("for m in 0..{bm} {{ va[{px}][j] = vb[m]; }}"));
    }
    c.close();
    c.close();
    c.close();
    c.close();
}

/// Runs `body(c, mr)` for the blocks that cover `avail` positions `mr` at a time (binding
/// `var`, the first position), then for the shorter tail block if any.
pub(super) fn blocks_of(c: &mut Code, var: &str, avail: usize, mr: usize, mut body: impl FnMut(&mut Code, usize)) {
    let (full, tail) = (avail / mr, avail % mr);
    if full == 1 {
        c.open("");
        c.line(format!("let {var} = 0;"));
    } else if full > 1 {
        c.open(format!("for {var} in (0..{}).step_by({mr})", full * mr));
    }
    if full > 0 {
        body(c, mr);
        c.close();
    }
    if tail > 0 {
        c.open("");
        c.line(format!("let {var} = {};", full * mr));
        body(c, tail);
        c.close();
    }
}

/// Copies image `n` of `nm.x` into the interior of padded image `slot` of `nm.xp` (`[hp, wp,
/// c]` each, borders zeroed once before the image loop).
pub(super) fn pad_image(c: &mut Code, g: &ConvGeom, nm: &Names, wp: usize, slot: &str) {
    let ([h, w], cc, p) = (g.in_hw, g.c, g.pad);
    let (xp, x) = (nm.xp, nm.x);
    let hp = h + p.top + p.bottom;
    let slot_rows = if slot == "0" { "0".to_string() } else { mul(slot, hp) };
    c.line(format!("// {xp} = image n of {x} zero-padded to [{hp}, {wp}, {cc}]"));
    c.open(format!("for ih in 0..{h}"));
    c.line(format!(
        "{xp}[{}..][..{}].copy_from_slice(&{x}[(n * {h} + ih) * {}..][..{}]);",
        add(
            &times(&add(&add(&slot_rows, "ih"), &p.top.to_string()), wp * cc),
            &(p.left * cc).to_string()
        ),
        w * cc,
        w * cc,
        w * cc
    ));
    c.close();
}

/// Convolution forward: `(x, w, [bias], [res]) -> (y, [moments])`, with scratch for the padded
/// image `xp` and the packed kernel `wp` ([`conv_parts`]). Every output row (on narrow maps,
/// several) is cut into register blocks of pixels (of pooled windows, with a fused max-pool),
/// each block's taps read from the padded image without bounds tests.
pub(crate) fn conv2d(
    c: &mut Code,
    g: &ConvGeom,
    e: &Epilogue,
    prepared: Option<WinogradTile>,
    s: &Schedule,
) -> Result<(), String> {
    split_work(c, &conv_parts(g, e, prepared));
    if layout(s)?.winograd() {
        return winograd_nest(c, g, e, s, &FORWARD, prepared);
    }
    if layout(s)?.pack_kernel() {
        pack_kernel(c, g);
        let names = Names {
            w: "wp",
            panels: true,
            ..FORWARD
        };
        conv_nest(c, g, e, s, &names)
    } else {
        conv_nest(c, g, e, s, &FORWARD)
    }
}

/// Parts of the forward conv's scratch: the padded image `xp` of a padding conv, the packed
/// kernel `wp` (see [`ConvLayout::Forward`]); a Winograd conv's [`winograd_parts`].
fn conv_parts(g: &ConvGeom, e: &Epilogue, prepared: Option<WinogradTile>) -> Vec<(&'static str, usize)> {
    if prepared.is_some() || winograd_applies(g, e) {
        return winograd_parts(g, "xp", prepared);
    }
    let mut parts = Vec::new();
    if let Some([hp, wp]) = padded_hw(g) {
        parts.push(("xp", hp * wp * g.c));
    }
    if packs_kernel(g) {
        parts.push(("wp", panel_len(g.kernel_len() / g.f, g.f)));
    }
    parts
}

/// The forward conv's scratch operand (`kernels::scratch_of`).
pub(crate) fn conv_scratch(
    g: &ConvGeom,
    e: &Epilogue,
    prepared: Option<WinogradTile>,
) -> Option<(&'static str, usize)> {
    scratch(&conv_parts(g, e, prepared))
}

/// `let (a, b) = work.split_at_mut(len_a);` when a template's scratch holds two parts (more:
/// `let (a, work) = work.split_at_mut(len_a);` down to the last two).
pub(super) fn split_work(c: &mut Code, parts: &[(&str, usize)]) {
    let last = parts.len().saturating_sub(1);
    for (i, (a, la)) in parts[..last].iter().enumerate() {
        let b = if i + 1 == last { parts[last].0 } else { "work" };
        c.line(format!("let ({a}, {b}) = work.split_at_mut({la});"));
    }
}

/// One scratch operand from its parts: the part itself, or `work` holding them all.
pub(super) fn scratch(parts: &[(&'static str, usize)]) -> Option<(&'static str, usize)> {
    match parts {
        [] => None,
        [one] => Some(*one),
        _ => Some(("work", parts.iter().map(|p| p.1).sum())),
    }
}

/// [`conv2d`] over the operands `nm` names.
pub(super) fn conv_nest(c: &mut Code, g: &ConvGeom, e: &Epilogue, s: &Schedule, nm: &Names) -> Result<(), String> {
    if e.act == Activation::Softmax {
        return Err("softmax in a convolution epilogue".into());
    }
    let (n, [oh, ow], f) = (g.n, g.out_hw, g.f);
    // A streamed kernel: every channel in one block (see `stream_taps`).
    let stream = !nm.panels && layout(s)?.stream_kernel();
    let nb = if nm.panels {
        panel_block(f, tile_width(f, s))
    } else if stream {
        f
    } else {
        tile_width(f, s)
    };
    let full = f.is_multiple_of(nb);
    let wdt = width(nb, full);
    let fs = f.to_string();
    // Panels are whole vectors wide, zero-padded past `f`.
    let lanes = if nm.panels {
        Some(nb / LANES)
    } else {
        lane_vectors(nb, full)
    };
    // Pixels (pooled windows) per register block.
    let rows = |avail: usize| match lanes {
        Some(_) => lane_rows(s, avail),
        None => row_block(s).min(avail).max(1),
    };
    // A vector block's epilogue up to the activation, on the whole block (block row `m` at
    // output offset `row`), which it leaves in `acc`.
    let block_epilogue = |c: &mut Code, mr: usize, row: &str| {
        if let Some(nv) = lanes {
            store_block(c, e, (mr, nv), row, full, (nb > f).then_some((f, mr)));
        }
    };
    // A fused max-pool over the block's registers (no statistics to take on the way).
    let pool_in_registers = lanes.is_some() && !e.bn_stats && kernels_lanes::epilogue_in_registers(e, full);
    // The (rest of the) epilogue of one block row `acc`, rebound to its live columns.
    let row_epilogue = |c: &mut Code| {
        if lanes.is_some() {
            row_stats(c, e.bn_stats);
        } else {
            c.line("let acc = &mut acc[..wd];");
            epilogue(c, e, e.bn_stats);
        }
    };
    if e.bn_stats {
        declare_stats(c, f);
    }
    let pad = padded_hw(g);
    if pad.is_some() {
        c.line(format!("{}.fill(0.0);", nm.xp));
    }
    // Channel blocks outermost: a block's slice of the kernel stays in cache across the batch
    // (ResNet18's 4×4×512 layers: 590 KB of a 9.4 MB kernel), at the price of copying each
    // padded image once per block.
    open_j0(c, "0", &fs, nb, nb >= f);
    c.open(format!("for n in 0..{n}"));
    if let Some([_, wp]) = pad {
        pad_image(c, g, nm, wp, "0");
    }
    match &e.max_pool {
        None if lanes.is_some() && (stream || layout(s)?.rows_per_block() > 1) => {
            // Narrow maps: blocks of whole output rows (consecutive output pixels).
            let rr = layout(s)?.rows_per_block();
            c.line(format!(
                "// [{n}, {oh}, {ow}, {f}] outputs, {nb} channels at a time, {rr} rows of {ow} pixels at a time"
            ));
            blocks_of(c, "oh", oh, rr, |c, rr| {
                block_width_line(c, nb, f, &fs, full);
                if stream {
                    stream_taps(c, g, nm, rr, nb / LANES);
                } else {
                    rows_taps(c, g, nm, rr, nb, lanes.unwrap_or(1));
                }
                block_epilogue(c, rr * ow, &format!("((n * {oh} + oh) * {ow} + m) * {f}"));
                c.open("for (m, acc) in acc.iter_mut().enumerate()");
                c.line(format!("let row = ((n * {oh} + oh) * {ow} + m) * {f};"));
                row_epilogue(c);
                c.line(format!("{}[row + j0..][..wd].copy_from_slice(acc);", nm.y));
                c.close();
            });
        }
        None => {
            let mr = rows(ow);
            c.line(format!(
                "// [{n}, {oh}, {ow}, {f}] outputs, {nb} channels at a time, {mr} pixels at a time"
            ));
            c.open(format!("for oh in 0..{oh}"));
            blocks_of(c, "ow", ow, mr, |c, mr| {
                block_width_line(c, nb, f, &fs, full);
                block_taps(c, g, nm, "ow", 1, mr, nb, &wdt, lanes);
                block_epilogue(c, mr, &format!("((n * {oh} + oh) * {ow} + ow + m) * {f}"));
                c.open("for (m, acc) in acc.iter_mut().enumerate()");
                c.line(format!("let row = ((n * {oh} + oh) * {ow} + ow + m) * {f};"));
                row_epilogue(c);
                c.line(format!("{}[row + j0..][..wd].copy_from_slice(acc);", nm.y));
                c.close();
            });
            c.close();
        }
        Some(win) => {
            if !pool_tiles(g.out_hw, win) {
                return Err("the fused max-pool window does not tile the convolution output".into());
            }
            if e.argmax && e.residual {
                return Err("an argmax after a residual add".into());
            }
            let argmax = e.argmax;
            let [sh, sw] = win.size;
            let (ph, pw) = (oh / sh, ow / sw);
            let mr = rows(pw);
            c.line(format!(
                "// [{n}, {ph}, {pw}, {f}] max-pooled outputs ({sh}x{sw} windows of the [{n}, {oh}, {ow}, {f}] convolution), {nb} channels at a time, {mr} windows at a time"
            ));
            // The loop over the window's pixels `t`: output row `oh`, first column `owb`.
            let open_window_pixels = |c: &mut Code| {
                c.open(format!("for t in 0..{}", sh * sw));
                c.line(format!("let oh = {};", add(&mul("ph", sh), &format!("t / {sw}"))));
                c.line(format!("let owb = {};", add(&mul("pw", sw), &format!("t % {sw}"))));
            };
            c.open(format!("for ph in 0..{ph}"));
            blocks_of(c, "pw", pw, mr, |c, mr| {
                if let (true, Some(nv)) = (pool_in_registers, lanes) {
                    kernels_lanes::declare_max(c, mr, nv, argmax);
                    open_window_pixels(c);
                    block_taps(c, g, nm, "owb", sw, mr, nb, &wdt, lanes);
                    let row = format!("((n * {oh} + oh) * {ow} + owb + {}) * {f}", mul("m", sw));
                    kernels_lanes::register_epilogue(c, e, mr, nv, &row);
                    kernels_lanes::max_into(c, mr, nv, argmax);
                    c.close();
                    let out = format!("((n * {ph} + ph) * {pw} + pw + m) * {f}");
                    kernels_lanes::store_rows(c, "best", mr, nv, "y", &out);
                    if argmax {
                        kernels_lanes::store_rows(c, "arg", mr, nv, "argmax", &out);
                    }
                    return;
                }
                block_width_line(c, nb, f, &fs, full);
                c.line(format!("let mut best = [[0f32; {nb}]; {mr}];"));
                if argmax {
                    c.line(format!("let mut arg = [[0f32; {nb}]; {mr}];"));
                }
                open_window_pixels(c);
                block_taps(c, g, nm, "owb", sw, mr, nb, &wdt, lanes);
                block_epilogue(
                    c,
                    mr,
                    &format!("((n * {oh} + oh) * {ow} + owb + {}) * {f}", mul("m", sw)),
                );
                if lanes.is_some() {
                    // The whole block at once (whole vectors; dead columns are never stored).
                    if e.bn_stats {
                        c.open("for acc in acc.iter_mut()");
                        row_stats(c, true);
                        c.close();
                    }
                    max_into(
                        c,
                        "best.as_flattened_mut()",
                        "acc.as_flattened()",
                        argmax.then_some("arg.as_flattened_mut()"),
                    );
                } else {
                    if argmax {
                        // (no residual with an argmax: the pass never fuses one)
                        c.open("for ((acc, best), arg) in acc.iter_mut().zip(best.iter_mut()).zip(arg.iter_mut())");
                        c.line("let arg = &mut arg[..wd];");
                    } else if e.residual {
                        c.open("for (m, (acc, best)) in acc.iter_mut().zip(best.iter_mut()).enumerate()");
                        c.line(format!(
                            "let row = ((n * {oh} + oh) * {ow} + owb + {}) * {f};",
                            mul("m", sw)
                        ));
                    } else {
                        c.open("for (acc, best) in acc.iter_mut().zip(best.iter_mut())");
                    }
                    row_epilogue(c);
                    c.line("let best = &mut best[..wd];");
                    max_into(c, "best", "acc", argmax.then_some("arg"));
                    c.close();
                }
                c.close();
                c.open("for (m, best) in best.iter().enumerate()");
                c.line(format!(
                    "y[((n * {ph} + ph) * {pw} + pw + m) * {f} + j0..][..wd].copy_from_slice(&best[..wd]);"
                ));
                if argmax {
                    c.line(format!(
                        "argmax[((n * {ph} + ph) * {pw} + pw + m) * {f} + j0..][..wd].copy_from_slice(&arg[m][..wd]);"
                    ));
                }
                c.close();
            });
            c.close();
        }
    }
    c.close();
    c.close();
    if e.bn_stats {
        finish_stats(c, f, n * oh * ow);
    }
    Ok(())
}

/// `best = acc` on the window's first pixel (`t == 0`), else the elementwise maximum, in selects
/// rather than branches (the comparisons are data: branches would mispredict) so that it
/// vectorises.
fn max_into(c: &mut Code, best: &str, acc: &str, arg: Option<&str>) {
    c.open("if t == 0");
    c.line(format!("{best}.copy_from_slice({acc});"));
    if let Some(a) = arg {
        c.line(format!("{a}.fill(0.0);"));
    }
    c.else_();
    match arg {
        None => c.line(format!(
            "for (b, &v) in {best}.iter_mut().zip({acc}.iter()) {{ *b = if v > *b {{ v }} else {{ *b }}; }}"
        )),
        // The first maximum keeps its index: a later equal value does not take over.
        Some(a) => c.line(format!(
            "for ((b, a), &v) in {best}.iter_mut().zip({a}.iter_mut()).zip({acc}.iter()) {{ let gt = v > *b; *a = if gt {{ t as f32 }} else {{ *a }}; *b = if gt {{ v }} else {{ *b }}; }}"
        )),
    }
    c.close();
}
