//! The kernel gradient of a Winograd conv (`ConvLayout::GradKernel::winograd`), F(3×3, 2×2):
//! the transpose of the forward's F(2×2, 3×3) (transforms in `support/winograd.rs`), 16
//! multiplies per 2×2 tile of `dy` and channel pair instead of 36.
//!
//! Per image, the tiles go in blocks of up to [`GRAD_TILES`]: their input windows are
//! transformed into `wv [16, tb, C]` as in the forward (`Bᵀ d B`), their `dy` tiles into
//! `ww [16, tb, F]` (`A' u A'ᵀ`); then for each point ξ, `gm[ξ] [C, F] += wv[ξ]ᵀ · ww[ξ]`, a
//! register block of input channels × output-channel vectors loaded from `gm`, reduced over
//! the block's tiles and stored back. After the last image, `dw = G'ᵀ gm G'` per channel pair.

use crate::kernel_ir::schedule::WinogradTile;
use crate::kernel_ir::{ConvGeom, Schedule};

use super::kernels_conv::{blocks_of, pad_image, padded_hw, FORWARD};
use super::kernels_gemm::open_j0;
use super::kernels_lanes::{self, lane_rows, LANES};
use super::kernels_winograd::{
    channel_block, input_transform, per_channel_pair, point_stride, transform_window, winograd_geometry,
};
use super::writer::Code;

/// Points of the F(3×3, 2×2) tiles (those of the forward's F(2×2, 3×3)).
const POINTS: usize = 16;

/// Most tiles per block: the accumulators are loaded from `gm` and stored back once per block.
const GRAD_TILES: usize = 32;

/// Parts of a Winograd kernel gradient's scratch: the reduced products `gm`, the padded image
/// `xp` of a padding conv, the block's transformed input windows `wv` and `dy` tiles `ww`.
pub(super) fn winograd_grad_parts(g: &ConvGeom) -> Vec<(&'static str, usize)> {
    let mut parts = vec![("gm", POINTS * g.c * g.f)];
    if let Some([hp, wp]) = padded_hw(g) {
        parts.push(("xp", hp * wp * g.c));
    }
    parts.push(("wv", POINTS * point_stride(GRAD_TILES, g.c)));
    parts.push(("ww", POINTS * point_stride(GRAD_TILES, g.f)));
    parts
}

/// `dw` of the conv `g` (3×3, stride 1, even output map, `C` and `F` multiples of 16) from `x`
/// and `dy`, in the scratch of [`winograd_grad_parts`] (already split).
pub(super) fn winograd_grad_kernel(c: &mut Code, g: &ConvGeom, s: &Schedule) -> Result<(), String> {
    let (n, [oh, ow], cc, f) = (g.n, g.out_hw, g.c, g.f);
    if !winograd_geometry(g) {
        return Err(
            "a Winograd kernel gradient that is not 3x3, stride 1, 16k channels, with an even output map".into(),
        );
    }
    let tiles = (oh / 2) * (ow / 2);
    let tb = tiles.div_ceil(tiles.div_ceil(GRAD_TILES));
    let nb = channel_block(f, s);
    let mr = lane_rows(s, cc);
    c.line("gm.fill(0.0);");
    let pad = padded_hw(g);
    if pad.is_some() {
        c.line("xp.fill(0.0);");
    }
    c.open(format!("for n in 0..{n}"));
    if let Some([_, wp]) = pad {
        pad_image(c, g, &FORWARD, wp, "0");
    }
    c.line(format!(
        "// gm[ξ] [{cc}, {f}] += wv[ξ]ᵀ · ww[ξ] over the [{oh}, {ow}] outputs' 2x2 tiles, {tb} at a time"
    ));
    blocks_of(c, "t0", tiles, tb, |c, tb| {
        input_transform(c, g, &FORWARD, WinogradTile::F2, tb);
        dy_transform(c, g, tb);
        reduce(c, g, tb, mr, nb);
    });
    c.close();
    c.line(format!("// dw = G'ᵀ gm G': [3, 3, {cc}, {f}]"));
    per_channel_pair(c, (g.c, g.f), "winograd_dw", "gm", "dw");
    Ok(())
}

/// `ww[ξ][m][fo]` = point ξ of `A' u A'ᵀ`, u the 2×2 tile `t0 + m` of image `n` of `dy`.
fn dy_transform(c: &mut Code, g: &ConvGeom, tb: usize) {
    let ([oh, ow], f) = (g.out_hw, g.f);
    let tw = ow / 2;
    c.line(format!(
        "// ww = A' u A'ᵀ of the block's dy tiles: [{POINTS}, {tb}, {f}]"
    ));
    c.open(format!("for m in 0..{tb}"));
    c.line("let t = t0 + m;");
    c.line(format!(
        "let ds = &dy[((n * {oh} + 2 * (t / {tw})) * {ow} + 2 * (t % {tw})) * {f}..][..{}];",
        (ow + 2) * f
    ));
    transform_window(c, "winograd_dy", "ds", ow * f, f, "ww", tb);
    c.close();
}

/// `gm[ξ] += wv[ξ]ᵀ · ww[ξ]` for the 16 points: blocks of `mr` input channels × `nb` output
/// channels, reduced over the block's `tb` tiles in registers.
fn reduce(c: &mut Code, g: &ConvGeom, tb: usize, mr: usize, nb: usize) {
    let (cc, f) = (g.c, g.f);
    let nv = nb / LANES;
    c.open(format!("for xi in 0..{POINTS}"));
    c.line(format!("let vs = &wv[xi * {}..][..{}];", point_stride(tb, cc), tb * cc));
    c.line(format!("let ws = &ww[xi * {}..][..{}];", point_stride(tb, f), tb * f));
    blocks_of(c, "r0", cc, mr, |c, mr| {
        open_j0(c, "0", &f.to_string(), nb, nb >= f);
        c.line(format!("let at = (xi * {cc} + r0) * {f} + j0;"));
        c.line(format!(
            "let mut va: [[V; {nv}]; {mr}] = array_with(|m| array_with(|j| V::load(&gm[at + m * {f} + {LANES} * j..])));"
        ));
        c.open(format!("for t in 0..{tb}"));
        kernels_lanes::step(
            c,
            mr,
            nv,
            &format!("V::load(&ws[t * {f} + j0 + {LANES} * j..])"),
            &format!("vs[t * {cc} + r0 + m]"),
        );
        c.close();
        c.line(format!(
            "for m in 0..{mr} {{ for j in 0..{nv} {{ va[m][j].store(&mut gm[at + m * {f} + {LANES} * j..]); }} }}"
        ));
        c.close();
    });
    c.close();
}
