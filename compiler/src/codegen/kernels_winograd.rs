//! Winograd F(2×2, 3×3) convolution (Lavin & Gray 2015), for the forward conv and the stride-1
//! input gradient when the schedule says so (`ConvLayout::winograd`, decided by
//! `schedule::winograd_applies`): 16 multiplies per 2×2 output tile and channel pair instead
//! of 36. The transforms themselves are the crate's support functions (`support/winograd.rs`).
//!
//! Per call, the kernel is transformed once into `u [16, C, F]` (`G g Gᵀ`, sixteen filters at a
//! time), unless the conv reads a `u` prepared at load time (`KernelOp::WinogradKernel`,
//! [`prepared_kernel`]). Per image, the tiles (row-major over the `[OH/2, OW/2]` tile map) go in blocks of `tb`
//! (the schedule's register tile height): the block's input windows are transformed into
//! `wv [16, tb, C]` (`Bᵀ d B`, sixteen channels at a time); then, per block of `nb` output
//! channels, 16 small products `wm[ξ] [tb, nb] = wv[ξ] · u[ξ]` run in register blocks, and the
//! output transform (`Aᵀ m A`) gives each tile's four pixels a vector of channels at a time,
//! on which the epilogue runs before they are stored (its activation is none or ReLU, a vector
//! maximum: the schedule takes no other). A fused 2×2 max-pool takes each tile's four pixels,
//! which are its window.

use crate::ir::Activation;
use crate::kernel_ir::schedule::{winograd_tile, WinogradTile};
use crate::kernel_ir::{ConvGeom, Epilogue, Schedule};

use super::kernels_conv::{blocks_of, layout, pad_image, padded_hw, Names};
use super::kernels_gemm::{declare_stats, finish_stats, open_j0, tile_width};
use super::kernels_lanes::{self, lane_rows, LANES, MAX_ROWS};
use super::writer::Code;

/// The support functions of a tile's transforms: kernel, input window, output.
fn transforms(t: WinogradTile) -> [&'static str; 3] {
    match t {
        WinogradTile::F2 => ["winograd_kernel", "winograd_input", "winograd_output"],
        WinogradTile::F4 => ["winograd_kernel4", "winograd_input4", "winograd_output4"],
    }
}

/// Parts of a Winograd conv's scratch (`prepared`'s tile, else [`winograd_tile`]'s): the
/// transformed kernel `u` unless `prepared`, the padded image (named `xp`) of a padding conv,
/// the transformed input windows `wv` and the products `wm` of one block of tiles (at most
/// [`MAX_ROWS`] tiles).
pub(super) fn winograd_parts(
    g: &ConvGeom,
    xp: &'static str,
    prepared: Option<WinogradTile>,
) -> Vec<(&'static str, usize)> {
    let points = prepared.unwrap_or_else(|| winograd_tile(g)).points();
    let mut parts = Vec::new();
    if prepared.is_none() {
        parts.push(("u", points * g.c * g.f));
    }
    if let Some([hp, wp]) = padded_hw(g) {
        parts.push((xp, hp * wp * g.c));
    }
    parts.push(("wv", points * point_stride(MAX_ROWS, g.c)));
    parts.push(("wm", points * point_stride(MAX_ROWS, g.f)));
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
/// `e` over the operands `nm` (`nm.w` HWIO; with `prepared`, the operand `u` instead), in the
/// scratch of [`winograd_parts`] (already split into `u`, `nm.xp`, `wv`, `wm`).
pub(super) fn winograd_nest(
    c: &mut Code,
    g: &ConvGeom,
    e: &Epilogue,
    s: &Schedule,
    nm: &Names,
    prepared: Option<WinogradTile>,
) -> Result<(), String> {
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
    let tile = layout(s)?
        .winograd_tile()
        .ok_or("a Winograd convolution without its tile")?;
    if tile != prepared.unwrap_or_else(|| winograd_tile(g)) {
        return Err("a Winograd tile other than its scratch's".into());
    }
    let side = tile.side();
    if !oh.is_multiple_of(side) || !ow.is_multiple_of(side) {
        return Err("a Winograd convolution whose output is not whole tiles".into());
    }
    let tiles = (oh / side) * (ow / side);
    let nb = channel_block(f, s);
    let tb = lane_rows(s, tiles).min(MAX_ROWS);
    if prepared.is_none() {
        kernel_transform(c, g, tile, nm.w);
    }
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
        "// [{n}, {oh}, {ow}, {f}] outputs in {side}x{side} tiles, {tb} tiles and {nb} channels at a time"
    ));
    blocks_of(c, "t0", tiles, tb, |c, tb| {
        input_transform(c, g, nm, tile, tb);
        open_j0(c, "0", &f.to_string(), nb, nb >= f);
        products(c, g, tile.points(), tb, nb);
        vector_outputs(c, g, e, nm, tile, tb, nb);
        c.close();
    });
    c.close();
    if e.bn_stats {
        finish_stats(c, f, n * oh * ow);
    }
    Ok(())
}

/// `u[ξ][ci][fo]` = point ξ of `G g Gᵀ`, g the 3×3 taps of `w[.., ci, fo]` (HWIO).
fn kernel_transform(c: &mut Code, g: &ConvGeom, tile: WinogradTile, w: &str) {
    c.line(format!(
        "// u = G g Gᵀ of every kernel: [{}, {}, {}]",
        tile.points(),
        g.c,
        g.f
    ));
    per_channel_pair(c, (g.c, g.f), transforms(tile)[0], w, "u");
}

/// The body of `KernelOp::WinogradKernel`: `u = G w Gᵀ` of a 3×3 kernel `w [3, 3, cc, f]`,
/// once, at load time.
pub(super) fn prepared_kernel(c: &mut Code, cc: usize, f: usize, tile: WinogradTile) -> Result<(), String> {
    if !cc.is_multiple_of(LANES) || !f.is_multiple_of(LANES) {
        return Err("a Winograd kernel transform whose channels are not whole vectors".into());
    }
    c.line(format!("// u = G w Gᵀ of every kernel: [{}, {cc}, {f}]", tile.points()));
    per_channel_pair(c, (cc, f), transforms(tile)[0], "w", "u");
    Ok(())
}

/// `dst[o][ci][fo] = func(src[..][ci][fo])[o]` for every channel pair `(cc, f)`, sixteen `fo`
/// at a time: a transform between the taps of a kernel and its Winograd points (`[_, C, F]`
/// both).
pub(super) fn per_channel_pair(c: &mut Code, (cc, f): (usize, usize), func: &str, src: &str, dst: &str) {
    c.open(format!("for ci in 0..{cc}"));
    c.open(format!("for f0 in (0..{f}).step_by({LANES})"));
    c.line(format!(
        "let k = {func}(array_with(|i| V::load(&{src}[(i * {cc} + ci) * {f} + f0..])));"
    ));
    c.line(format!(
        "for (o, k) in k.iter().enumerate() {{ k.store(&mut {dst}[(o * {cc} + ci) * {f} + f0..]); }}"
    ));
    c.close();
    c.close();
}

/// `wv[ξ][m][ci]` = point ξ of `Bᵀ d B`, d the input window of tile `t0 + m` of image `n` (read
/// from the padded image, or in place).
pub(super) fn input_transform(c: &mut Code, g: &ConvGeom, nm: &Names, tile: WinogradTile, tb: usize) {
    let (side, win, points) = (tile.side(), tile.window(), tile.points());
    let ([h, w], cc, tw) = (g.in_hw, g.c, g.out_hw[1] / side);
    let (src, row_len, image) = match padded_hw(g) {
        Some([_, wp]) => (nm.xp, wp * cc, String::new()),
        None => (nm.x, w * cc, format!("n * {} + ", h * w * cc)),
    };
    c.line(format!(
        "// wv = Bᵀ d B of the block's input windows: [{points}, {tb}, {cc}]"
    ));
    c.open(format!("for m in 0..{tb}"));
    c.line("let t = t0 + m;");
    c.line(format!(
        "let d0 = {image}{side} * (t / {tw}) * {row_len} + {side} * (t % {tw}) * {cc};"
    ));
    c.line(format!("let xs = &{src}[d0..][..{}];", (win - 1) * row_len + win * cc));
    transform_window(c, transforms(tile)[1], "xs", row_len, cc, "wv", tb);
    c.close();
}

/// Row `m` of a block's transformed windows, sixteen channels at a time: `dst[ξ][m][c]` = point
/// ξ of `func` of the window at `src` (its rows `row_len` apart, its pixels `ch`).
pub(super) fn transform_window(c: &mut Code, func: &str, src: &str, row_len: usize, ch: usize, dst: &str, tb: usize) {
    c.open(format!("for c0 in (0..{ch}).step_by({LANES})"));
    c.line(format!(
        "let v = {func}(array_with(|i| array_with(|j| V::load(&{src}[i * {row_len} + j * {ch} + c0..]))));"
    ));
    c.line(format!(
        "for (xi, v) in v.iter().enumerate() {{ v.store(&mut {dst}[xi * {} + m * {ch} + c0..]); }}",
        point_stride(tb, ch)
    ));
    c.close();
}

/// `wm[ξ] [tb, nb] = wv[ξ] [tb, C] · u[ξ] [C, j0..j0 + nb]` for each of the `points`, a
/// register block of `tb × nb / 16` vectors each.
fn products(c: &mut Code, g: &ConvGeom, points: usize, tb: usize, nb: usize) {
    let (cc, f) = (g.c, g.f);
    let nv = nb / LANES;
    c.line(format!("// wm[ξ] = wv[ξ] · u[ξ]: [{points}, {tb}, {nb}]"));
    c.open(format!("for xi in 0..{points}"));
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

/// The output transform of each tile and vector of channels with the epilogue on its vectors
/// (one per pixel of the tile): bias, residual, ReLU, BN statistics, then stored at the tile's
/// pixels or, with a fused max-pool, each 2×2 window's maximum (and argmax) at its pooled
/// pixel. The same operations in the same order as the scalar epilogue, so the same results,
/// except that the statistics add each tile's values in f32 before adding them in f64.
fn vector_outputs(c: &mut Code, g: &ConvGeom, e: &Epilogue, nm: &Names, tile: WinogradTile, tb: usize, nb: usize) {
    let ([oh, ow], f) = (g.out_hw, g.f);
    let side = tile.side();
    let (tw, nv) = (ow / side, nb / LANES);
    let pooled = e.max_pool.is_some();
    let list = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ");
    if !pooled || e.residual {
        let poff: Vec<usize> = (0..side * side).map(|p| ((p / side) * ow + p % side) * f).collect();
        c.line(format!(
            "const POFF: [usize; {}] = [{}]; // the tile's pixels from its first",
            poff.len(),
            list(&poff)
        ));
    }
    // Pooled: the tile's 2×2 windows (their pixels in the tile, row-major), and where each one's
    // pooled pixel is from the tile's first.
    let (half, pw) = (side / 2, ow / 2);
    if pooled {
        let wins: Vec<String> = (0..half * half)
            .map(|w| {
                let (a, b) = (w / half, w % half);
                let px: Vec<usize> = (0..4).map(|k| (2 * a + k / 2) * side + 2 * b + k % 2).collect();
                format!("[{}]", list(&px))
            })
            .collect();
        let qoff: Vec<usize> = (0..half * half).map(|w| ((w / half) * pw + w % half) * f).collect();
        c.line(format!(
            "const WIN: [[usize; 4]; {}] = [{}];",
            wins.len(),
            wins.join(", ")
        ));
        c.line(format!("const QOFF: [usize; {}] = [{}];", qoff.len(), list(&qoff)));
    }
    c.open(format!("for m in 0..{tb}"));
    c.line("let t = t0 + m;");
    if !pooled || e.residual {
        c.line(format!(
            "let o0 = ((n * {oh} + {side} * (t / {tw})) * {ow} + {side} * (t % {tw})) * {f} + j0;"
        ));
    }
    if pooled {
        c.line(format!(
            "let q0 = ((n * {} + {half} * (t / {tw})) * {pw} + {half} * (t % {tw})) * {f} + j0;",
            oh / 2
        ));
    }
    c.open(format!("for j in 0..{nv}"));
    c.line(format!(
        "let {}o = {}(array_with(|xi| V::load(&wm[xi * {} + m * {nb} + {LANES} * j..])));",
        if e.bias || e.residual || e.act == Activation::Relu {
            "mut "
        } else {
            ""
        },
        transforms(tile)[2],
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
    } else {
        c.open("for (win, qo) in WIN.iter().zip(QOFF)");
        if e.argmax {
            // The first maximum keeps its index, as in `max_into`.
            c.line("let (mut best, mut arg) = (o[win[0]], V::zero());");
            c.line("for (p, &i) in win.iter().enumerate().skip(1) { let v = o[i]; arg = v.select_gt(best, V::splat(p as f32), arg); best = v.max(best); }");
            c.line(format!("arg.store(&mut argmax[q0 + qo + {LANES} * j..]);"));
        } else {
            c.line("let best = win[1..].iter().fold(o[win[0]], |b, &i| o[i].max(b));");
        }
        c.line(format!("best.store(&mut {y}[q0 + qo + {LANES} * j..]);"));
        c.close();
    }
    c.close();
    c.close();
}
