//! Winograd F(2×2, 3×3) convolution (Lavin & Gray 2015), for the forward conv and the stride-1
//! input gradient when the schedule says so (`ConvLayout::winograd`, decided by
//! `schedule::winograd_applies`): 16 multiplies per 2×2 output tile and channel pair instead
//! of 36. The transforms themselves are the crate's support functions (`support/winograd.rs`).
//!
//! Per call, the kernel is transformed once into `u [16, C, F]` (`G g Gᵀ`, sixteen filters at a
//! time). Per image, the tiles (row-major over the `[OH/2, OW/2]` tile map) go in blocks of `tb`
//! (the schedule's register tile height): the block's input windows are transformed into
//! `wv [16, tb, C]` (`Bᵀ d B`, sixteen channels at a time); then, per block of `nb` output
//! channels, 16 small products `wm[ξ] [tb, nb] = wv[ξ] · u[ξ]` run in register blocks, and the
//! output transform (`Aᵀ m A`) gives each tile's four pixels a vector of channels at a time,
//! on which the epilogue runs before they are stored (its activation is none or ReLU, a vector
//! maximum: the schedule takes no other). A fused 2×2 max-pool takes each tile's four pixels,
//! which are its window.

use crate::ir::Activation;
use crate::kernel_ir::{ConvGeom, Epilogue, Schedule};

use super::kernels_conv::{blocks_of, pad_image, padded_hw, Names};
use super::kernels_gemm::{declare_stats, finish_stats, open_j0, tile_width};
use super::kernels_lanes::{self, lane_rows, LANES, MAX_ROWS};
use super::writer::Code;

/// Points of a transformed tile (4 × 4).
pub(super) const POINTS: usize = 16;

/// Parts of a Winograd conv's scratch: the transformed kernel `u`, the padded image (named
/// `xp`) of a padding conv, the transformed input windows `wv` and the products `wm` of one
/// block of tiles (at most [`MAX_ROWS`] tiles).
pub(super) fn winograd_parts(g: &ConvGeom, xp: &'static str) -> Vec<(&'static str, usize)> {
    let mut parts = vec![("u", POINTS * g.c * g.f)];
    if let Some([hp, wp]) = padded_hw(g) {
        parts.push((xp, hp * wp * g.c));
    }
    parts.push(("wv", POINTS * point_stride(MAX_ROWS, g.c)));
    parts.push(("wm", POINTS * point_stride(MAX_ROWS, g.f)));
    parts
}

/// What every Winograd template assumes of its conv (the schedule checks more): 3×3, stride 1,
/// an even output map, input and output channels whole vectors.
pub(super) fn winograd_geometry(g: &ConvGeom) -> bool {
    let [oh, ow] = g.out_hw;
    g.kernel_hw == [3, 3]
        && g.strides == [1, 1]
        && oh.is_multiple_of(2)
        && ow.is_multiple_of(2)
        && g.c.is_multiple_of(LANES)
        && g.f.is_multiple_of(LANES)
}

/// Floats from one point's `[tiles, channels]` matrix to the next in scratch: one vector more
/// than the matrix, so that the 16 points of a tile are not a power of two apart (at 4 KiB,
/// e.g. 8 tiles of 128 channels, the stores of a tile's 16 points all fell in one L1 set).
pub(super) fn point_stride(tiles: usize, channels: usize) -> usize {
    tiles * channels + LANES
}

/// Output channels per block: the schedule's tile width in whole vectors, dividing `f`.
pub(super) fn channel_block(f: usize, s: &Schedule) -> usize {
    let nb = (tile_width(f, s) / LANES).max(1) * LANES;
    (LANES..=nb)
        .rev()
        .step_by(LANES)
        .find(|b| f.is_multiple_of(*b))
        .unwrap_or(LANES)
}

/// The conv `g` (3×3, stride 1, even output map, `C` and `F` multiples of 16) with epilogue
/// `e` over the operands `nm` (`nm.w` HWIO), in the scratch of [`winograd_parts`] (already
/// split into `u`, `nm.xp`, `wv`, `wm`).
pub(super) fn winograd_nest(c: &mut Code, g: &ConvGeom, e: &Epilogue, s: &Schedule, nm: &Names) -> Result<(), String> {
    let (n, [oh, ow], f) = (g.n, g.out_hw, g.f);
    if !winograd_geometry(g) || nm.panels {
        return Err("a Winograd convolution that is not 3x3, stride 1, 16k channels, with an even output map".into());
    }
    if e.max_pool.is_some_and(|w| w.size != [2, 2] || w.strides != [2, 2]) {
        return Err("a Winograd convolution with a max-pool other than 2x2".into());
    }
    if !matches!(e.act, Activation::Linear | Activation::Relu) {
        return Err("a Winograd convolution whose activation is not a vector maximum".into());
    }
    if e.argmax && e.residual {
        return Err("an argmax after a residual add".into());
    }
    let tiles = (oh / 2) * (ow / 2);
    let nb = channel_block(f, s);
    let tb = lane_rows(s, tiles).min(MAX_ROWS);
    kernel_transform(c, g, nm.w);
    if e.bn_stats {
        declare_stats(c, f);
    }
    let pad = padded_hw(g);
    if pad.is_some() {
        c.line(format!("{}.fill(0.0);", nm.xp));
    }
    c.open(format!("for n in 0..{n}"));
    if let Some([_, wp]) = pad {
        pad_image(c, g, nm, wp, "0");
    }
    c.line(format!(
        "// [{n}, {oh}, {ow}, {f}] outputs in 2x2 tiles, {tb} tiles and {nb} channels at a time"
    ));
    blocks_of(c, "t0", tiles, tb, |c, tb| {
        input_transform(c, g, nm, tb);
        open_j0(c, "0", &f.to_string(), nb, nb >= f);
        products(c, g, tb, nb);
        vector_outputs(c, g, e, nm, tb, nb);
        c.close();
    });
    c.close();
    if e.bn_stats {
        finish_stats(c, f, n * oh * ow);
    }
    Ok(())
}

/// `u[ξ][ci][fo]` = point ξ of `G g Gᵀ`, g the 3×3 taps of `w[.., ci, fo]` (HWIO).
fn kernel_transform(c: &mut Code, g: &ConvGeom, w: &str) {
    c.line(format!("// u = G g Gᵀ of every kernel: [{POINTS}, {}, {}]", g.c, g.f));
    per_channel_pair(c, g, "winograd_kernel", w, "u");
}

/// `dst[o][ci][fo] = func(src[..][ci][fo])[o]` for every channel pair, sixteen `fo` at a time:
/// a transform between the taps of a kernel and its Winograd points (`[_, C, F]` both).
pub(super) fn per_channel_pair(c: &mut Code, g: &ConvGeom, func: &str, src: &str, dst: &str) {
    let (cc, f) = (g.c, g.f);
    c.open(format!("for ci in 0..{cc}"));
    c.open(format!("for f0 in (0..{f}).step_by({LANES})"));
    c.line(format!(
        "let k = {func}(core::array::from_fn(|i| V::load(&{src}[(i * {cc} + ci) * {f} + f0..])));"
    ));
    c.line(format!(
        "for (o, k) in k.iter().enumerate() {{ k.store(&mut {dst}[(o * {cc} + ci) * {f} + f0..]); }}"
    ));
    c.close();
    c.close();
}

/// `wv[ξ][m][ci]` = point ξ of `Bᵀ d B`, d the 4×4 input window of tile `t0 + m` of image `n`
/// (read from the padded image, or in place).
pub(super) fn input_transform(c: &mut Code, g: &ConvGeom, nm: &Names, tb: usize) {
    let ([h, w], cc, tw) = (g.in_hw, g.c, g.out_hw[1] / 2);
    let (src, row_len, image) = match padded_hw(g) {
        Some([_, wp]) => (nm.xp, wp * cc, String::new()),
        None => (nm.x, w * cc, format!("n * {} + ", h * w * cc)),
    };
    c.line(format!(
        "// wv = Bᵀ d B of the block's input windows: [{POINTS}, {tb}, {cc}]"
    ));
    c.open(format!("for m in 0..{tb}"));
    c.line("let t = t0 + m;");
    c.line(format!(
        "let d0 = {image}2 * (t / {tw}) * {row_len} + 2 * (t % {tw}) * {cc};"
    ));
    c.line(format!("let xs = &{src}[d0..][..{}];", 3 * row_len + 4 * cc));
    c.open(format!("for c0 in (0..{cc}).step_by({LANES})"));
    c.line(format!(
        "let v = winograd_input(core::array::from_fn(|i| core::array::from_fn(|j| V::load(&xs[i * {row_len} + j * {cc} + c0..]))));"
    ));
    c.line(format!(
        "for (xi, v) in v.iter().enumerate() {{ v.store(&mut wv[xi * {} + m * {cc} + c0..]); }}",
        point_stride(tb, cc)
    ));
    c.close();
    c.close();
}

/// `wm[ξ] [tb, nb] = wv[ξ] [tb, C] · u[ξ] [C, j0..j0 + nb]` for each of the 16 points, a
/// register block of `tb × nb / 16` vectors each.
fn products(c: &mut Code, g: &ConvGeom, tb: usize, nb: usize) {
    let (cc, f) = (g.c, g.f);
    let nv = nb / LANES;
    c.line(format!("// wm[ξ] = wv[ξ] · u[ξ]: [{POINTS}, {tb}, {nb}]"));
    c.open(format!("for xi in 0..{POINTS}"));
    c.line(format!("let us = &u[xi * {} + j0..][..{}];", cc * f, (cc - 1) * f + nb));
    c.line(format!("let vs = &wv[xi * {}..][..{}];", point_stride(tb, cc), tb * cc));
    kernels_lanes::declare(c, tb, nv);
    c.open(format!("for ci in 0..{cc}"));
    kernels_lanes::step(
        c,
        tb,
        nv,
        &format!("V::load(&us[ci * {f} + {LANES} * j..])"),
        &format!("vs[m * {cc} + ci]"),
    );
    c.close();
    c.line(format!(
        "for m in 0..{tb} {{ for j in 0..{nv} {{ va[m][j].store(&mut wm[xi * {} + m * {nb} + {LANES} * j..]); }} }}",
        point_stride(tb, nb)
    ));
    c.close();
}

/// The output transform of each tile and vector of channels with the epilogue on its four
/// vectors: bias, residual, ReLU, BN statistics, then stored at the tile's pixels or, with a
/// fused max-pool, their maximum (and argmax) at the tile's pooled pixel. The same operations in
/// the same order as the scalar epilogue, so the same results, except that the statistics add
/// each tile's four values in f32 before adding them in f64.
fn vector_outputs(c: &mut Code, g: &ConvGeom, e: &Epilogue, nm: &Names, tb: usize, nb: usize) {
    let ([oh, ow], f) = (g.out_hw, g.f);
    let (tw, tiles, nv) = (ow / 2, (oh / 2) * (ow / 2), nb / LANES);
    let pooled = e.max_pool.is_some();
    if !pooled || e.residual {
        c.line(format!(
            "const POFF: [usize; 4] = [0, {f}, {}, {}]; // the tile's pixels from its first",
            ow * f,
            (ow + 1) * f
        ));
    }
    c.open(format!("for m in 0..{tb}"));
    c.line("let t = t0 + m;");
    if !pooled || e.residual {
        c.line(format!(
            "let o0 = ((n * {oh} + 2 * (t / {tw})) * {ow} + 2 * (t % {tw})) * {f} + j0;"
        ));
    }
    if pooled {
        c.line(format!("let q0 = (n * {tiles} + t) * {f} + j0;"));
    }
    c.open(format!("for j in 0..{nv}"));
    c.line(format!(
        "let {}o = winograd_output(core::array::from_fn(|xi| V::load(&wm[xi * {} + m * {nb} + {LANES} * j..])));",
        if e.bias || e.residual || e.act == Activation::Relu {
            "mut "
        } else {
            ""
        },
        point_stride(tb, nb)
    ));
    if e.bias {
        c.line(format!("let b = V::load(&bias[j0 + {LANES} * j..]);"));
        c.line("for o in o.iter_mut() { *o = *o + b; }");
    }
    if e.residual {
        c.line(format!(
            "for (o, p) in o.iter_mut().zip(POFF) {{ *o = *o + V::load(&res[o0 + p + {LANES} * j..]); }}"
        ));
    }
    if e.act == Activation::Relu {
        c.line("for o in o.iter_mut() { *o = o.max(V::zero()); }");
    }
    if e.bn_stats {
        c.line("let (mut s, mut q) = (o[0], o[0] * o[0]);");
        c.line("for &v in &o[1..] { s = s + v; q = q.fma(v, v); }");
        c.line(format!("let (mut sa, mut qa) = ([0f32; {LANES}], [0f32; {LANES}]);"));
        c.line("s.store(&mut sa);");
        c.line("q.store(&mut qa);");
        c.line(format!(
            "for (t, &v) in s1[j0 + {LANES} * j..][..{LANES}].iter_mut().zip(&sa) {{ *t += v as f64; }}"
        ));
        c.line(format!(
            "for (t, &v) in s2[j0 + {LANES} * j..][..{LANES}].iter_mut().zip(&qa) {{ *t += v as f64; }}"
        ));
    }
    let y = nm.y;
    if !pooled {
        c.line(format!(
            "for (o, p) in o.iter().zip(POFF) {{ o.store(&mut {y}[o0 + p + {LANES} * j..]); }}"
        ));
    } else if e.argmax {
        // The first maximum keeps its index, as in `max_into`.
        c.line("let (mut best, mut arg) = (o[0], V::zero());");
        c.line("for (p, &v) in o.iter().enumerate().skip(1) { arg = v.select_gt(best, V::splat(p as f32), arg); best = v.max(best); }");
        c.line(format!("best.store(&mut {y}[q0 + {LANES} * j..]);"));
        c.line(format!("arg.store(&mut argmax[q0 + {LANES} * j..]);"));
    } else {
        c.line("let best = o[1..].iter().fold(o[0], |b, &v| v.max(b));");
        c.line(format!("best.store(&mut {y}[q0 + {LANES} * j..]);"));
    }
    c.close();
    c.close();
}
