//! The input gradient of a conv whose input has fewer channels than a vector (LeNet's second
//! conv: 6), where the schedule says `scatter` ([`grad_input_scatters`]): per image,
//! `cols = dy · wᵀ` (`[pixels, KH·KW·C]`, vector blocks along the taps × channels: 150 of 160
//! lanes live for LeNet, where blocks along the 6 channels would keep 6 of 16), then col2im
//! adds each output pixel's columns into the input pixels its taps read. This is how the
//! kernels backend runs it (`runtime::kernels::conv_backward`, `scatter`).

use crate::kernel_ir::schedule::grad_input_scatters;
use crate::kernel_ir::{ConvGeom, Schedule};

use super::kernels_conv::{blocks_of, split_work};
use super::kernels_gemm::{open_j0, tap_coord};
use super::kernels_lanes::{self, lane_rows, LANES};
use super::writer::Code;

/// Columns of a row of `cols` (and of `wt`): `KH·KW·C`, zero-padded to whole vectors.
fn cols_width(g: &ConvGeom) -> usize {
    (g.kernel_hw[0] * g.kernel_hw[1] * g.c).next_multiple_of(LANES)
}

/// Parts of the scratch: the transposed kernel `wt` `[F, cols]` and one image's `cols`.
pub(crate) fn scatter_parts(g: &ConvGeom) -> Vec<(&'static str, usize)> {
    let kp = cols_width(g);
    vec![("wt", g.f * kp), ("cols", g.out_hw[0] * g.out_hw[1] * kp)]
}

/// `(dy, w) -> (dx)` by columns and col2im (module docs); scratch [`scatter_parts`].
pub(crate) fn grad_input_scatter(c: &mut Code, g: &ConvGeom, s: &Schedule) -> Result<(), String> {
    if !grad_input_scatters(g) {
        return Err("a scattered input gradient with a vector's worth of input channels".into());
    }
    let ([h, w], [oh, ow], [kh, kw]) = (g.in_hw, g.out_hw, g.kernel_hw);
    let (n, cc, f) = (g.n, g.c, g.f);
    let (k, kp, px) = (kh * kw * cc, cols_width(g), oh * ow);
    split_work(c, &scatter_parts(g));
    c.line(format!(
        "// wt = the kernel transposed to [{f}, {kp}] (columns: kh, kw, c{})",
        if kp > k { ", zero past the last" } else { "" }
    ));
    if kp > k {
        c.line("wt.fill(0.0);");
    }
    c.open(format!("for (kk, wr) in w.chunks_exact({f}).enumerate()"));
    c.line(format!(
        "for (fi, &v) in wr.iter().enumerate() {{ wt[fi * {kp} + kk] = v; }}"
    ));
    c.close();
    c.open(format!("for n in 0..{n}"));
    c.line(format!("let dyi = &dy[n * {}..][..{}];", px * f, px * f));
    c.line(format!("// cols [{px}, {kp}] = dy of image n [{px}, {f}] · wt"));
    let (pairs, single) = (kp / (2 * LANES), !kp.is_multiple_of(2 * LANES));
    blocks_of(c, "i0", px, lane_rows(s, px), |c, mr| {
        if pairs > 0 {
            open_j0(c, "0", &(pairs * 2 * LANES).to_string(), 2 * LANES, pairs == 1);
            columns_block(c, f, kp, mr, 2);
            c.close();
        }
        if single {
            c.open("");
            c.line(format!("let j0 = {};", pairs * 2 * LANES));
            columns_block(c, f, kp, mr, 1);
            c.close();
        }
    });
    let img = h * w * cc;
    c.line(format!(
        "// [{h}, {w}, {cc}] image n of dx: each pixel's columns added to what its taps read"
    ));
    c.line(format!("let dxi = &mut dx[n * {img}..][..{img}];"));
    c.line("dxi.fill(0.0);");
    c.open(format!("for oh in 0..{oh}"));
    c.open(format!("for ow in 0..{ow}"));
    c.line(format!("let cr = &cols[(oh * {ow} + ow) * {kp}..][..{k}];"));
    c.open(format!("for kh in 0..{kh}"));
    tap_coord(c, "ih", "oh", "kh", g.strides[0], g.pad.top, h, oh, kh);
    c.open(format!("for kw in 0..{kw}"));
    tap_coord(c, "iw", "ow", "kw", g.strides[1], g.pad.left, w, ow, kw);
    c.line(format!(
        "for (d, &v) in dxi[(ih * {w} + iw) * {cc}..][..{cc}].iter_mut().zip(&cr[(kh * {kw} + kw) * {cc}..][..{cc}]) {{ *d += v; }}"
    ));
    for _ in 0..5 {
        c.close();
    }
    Ok(())
}

/// Rows `i0..i0 + mr` of `cols`, columns `j0..` in `nv` vectors: Σ over `F` of a `dy` value
/// times a row of `wt`.
fn columns_block(c: &mut Code, f: usize, kp: usize, mr: usize, nv: usize) {
    kernels_lanes::declare(c, mr, nv);
    c.open(format!("for fi in 0..{f}"));
    kernels_lanes::step(
        c,
        mr,
        nv,
        &format!("V::load(&wt[fi * {kp} + j0 + {LANES} * j..])"),
        &format!("dyi[(i0 + m) * {f} + fi]"),
    );
    c.close();
    kernels_lanes::store_rows(c, "va", mr, nv, "cols", &format!("(i0 + m) * {kp}"));
}
