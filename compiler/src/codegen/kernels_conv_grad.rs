//! The convolution gradient templates. Input gradient: into fewer channels than a vector, by
//! columns and col2im (`kernels_conv_scatter`); of a stride-1 conv, the forward loop
//! nest (`kernels_conv`) over the padded output gradient with the flipped kernel; of a strided
//! conv with 16·k input channels, vector blocks of input columns of one residue class modulo
//! the stride (`strided_grad_input`); otherwise, per input pixel, `axpy`s over the taps that
//! reach it. Kernel gradient: a GEMM with `KW·C` rows (a tap column and an input channel:
//! consecutive values of a padded input row), `F` columns and the output pixels of a group of
//! images as the reduction, in register blocks that stay in registers across the group.

use crate::ir::Activation;
use crate::kernel_ir::kernel::{pool_tiles, pooled_hw};
use crate::kernel_ir::schedule::{
    grad_input_scatters, grad_input_winograd, grad_kernel_winograd, images_per_group, ConvLayout,
};
use crate::kernel_ir::{ConvGeom, Epilogue, PooledDy, Schedule};

use super::kernels::act_grad_expr;
use super::kernels_conv::{
    blocks_of, conv_nest, input_row, layout, pad_image, padded_hw, panel_len, scratch, split_work, times, Names,
    FORWARD,
};
use super::kernels_conv_scatter::{grad_input_scatter, scatter_parts};
use super::kernels_gemm::{
    block_width, block_width_line, open_block, open_j0, out_coord, row_block, tile_width, width,
};
use super::kernels_lanes::{self, lane_rows, lane_vectors, panel_block, LANES};
use super::kernels_rows::unpool_window;
use super::kernels_winograd::{winograd_nest, winograd_parts};
use super::kernels_winograd_grad::{winograd_grad_kernel, winograd_grad_parts};
use super::writer::{add, mul, Code};

/// Parts of the input gradient's scratch: the transposed kernel `wt`, and for a stride-1 conv
/// whose equivalent forward conv pads, the padded `dyp`.
fn grad_input_parts(g: &ConvGeom) -> Vec<(&'static str, usize)> {
    if grad_input_scatters(g) {
        return scatter_parts(g);
    }
    if let Some(t) = grad_input_winograd(g) {
        let mut parts = vec![("wt", g.kernel_len())];
        parts.extend(winograd_parts(&t, "dyp", None));
        return parts;
    }
    let wt = match g.grad_input_as_conv() {
        Some(t) => panel_len(t.kernel_len() / t.f, t.f),
        None => g.kernel_len(),
    };
    let mut parts = vec![("wt", wt)];
    if let Some([hp, wp]) = g.grad_input_as_conv().and_then(|t| padded_hw(&t)) {
        parts.push(("dyp", hp * wp * g.f));
    } else if let Some(p) = strided_plan(g) {
        parts.push(("dyp", g.out_hw[0] * p.width * g.f));
    }
    parts
}

/// How a strided conv's input gradient runs in vector blocks (input channels a multiple of 16):
/// input columns by residue class `j = r + sw·b`. In class `r`, the kernel columns `kw` with
/// `r + pl − kw ≡ 0 (mod sw)` reach it, from output column `b + d`, `d = (r + pl − kw) / sw`,
/// so each row of `dy` is padded on the left and right for every `b + d` to exist.
struct StridedPlan {
    /// Zero columns before each row of `dy` in `dyp`.
    left: usize,
    /// Columns of a padded row.
    width: usize,
    /// Per class `r`: its columns, and its kernel columns with their offsets `d`.
    classes: Vec<(usize, Vec<(usize, isize)>)>,
}

fn strided_plan(g: &ConvGeom) -> Option<StridedPlan> {
    if g.strides == [1, 1] || !g.c.is_multiple_of(LANES) {
        return None;
    }
    let (sw, pl, kw, w, ow) = (g.strides[1], g.pad.left, g.kernel_hw[1], g.in_hw[1], g.out_hw[1]);
    let classes: Vec<(usize, Vec<(usize, isize)>)> = (0..sw.min(w))
        .map(|r| {
            let cols = (w - r).div_ceil(sw);
            let taps = (0..kw)
                .filter(|&k| (r + pl).abs_diff(k).is_multiple_of(sw))
                .map(|k| (k, (r as isize + pl as isize - k as isize) / sw as isize))
                .collect();
            (cols, taps)
        })
        .collect();
    // (columns of the class, offset d) of every class and kernel column.
    let reach: Vec<(isize, isize)> = classes
        .iter()
        .flat_map(|(cols, taps)| taps.iter().map(move |&(_, d)| (*cols as isize, d)))
        .collect();
    let left = reach.iter().map(|&(_, d)| -d).max().unwrap_or(0).max(0) as usize;
    let right = reach
        .iter()
        .map(|&(cols, d)| cols - 1 + d - (ow as isize - 1))
        .max()
        .unwrap_or(0)
        .max(0) as usize;
    Some(StridedPlan {
        left,
        width: left + ow + right,
        classes,
    })
}

/// Emits `wt` = the kernel `w` (HWIO) transposed to `[KH, KW, F, C]`, its taps reversed when
/// `flip` (the stride-1 input gradient's conv), in 16-lane panels over `C` (`[⌈C / 16⌉][K][16]`,
/// K = KH·KW·F, the last one zero-padded) when `panels`, else row-major.
fn transpose_kernel(c: &mut Code, g: &ConvGeom, flip: bool, panels: bool) {
    let ([kh, kw], cc, f) = (g.kernel_hw, g.c, g.f);
    let taps = kh * kw;
    // `tap · f +`: the tap's row offset (none for a single tap: clippy denies `0 * f`).
    let tap = match (taps, flip) {
        (1, _) => String::new(),
        (_, true) => format!("({} - t) * {f} + ", taps - 1),
        (_, false) => format!("t * {f} + "),
    };
    let what = if flip { "flipped and transposed" } else { "transposed" };
    let store = if panels {
        let k = taps * f;
        c.line(format!(
            "// wt = the kernel {what} to [{kh}, {kw}, {f}, {cc}], in {} panels of [{k}, {LANES}]",
            cc.div_ceil(LANES)
        ));
        if !cc.is_multiple_of(LANES) {
            c.line("wt.fill(0.0);");
        }
        format!("wt[((ci / {LANES}) * {k} + {tap}fi) * {LANES} + ci % {LANES}]")
    } else {
        c.line(format!("// wt = the kernel {what} to [{kh}, {kw}, {f}, {cc}]"));
        format!("wt[({tap}fi) * {cc} + ci]")
    };
    c.open(format!("for t in 0..{taps}"));
    c.open(format!("for ci in 0..{cc}"));
    c.open(format!("for fi in 0..{f}"));
    c.line(format!("{store} = w[(t * {cc} + ci) * {f} + fi];"));
    c.close();
    c.close();
    c.close();
}

/// The strided input gradient in vector blocks ([`strided_plan`]): `wt` holds the kernel
/// transposed to `[KH, KW, F, C]` in 16-lane panels; per channel block, image, input row `i`
/// and class `r`, blocks of `mr` columns accumulate, for each kernel row `kh` whose output row
/// `(i + pt − kh) / sh` exists and each of the class's kernel columns, `dy · wt` over `F`.
fn strided_grad_input(c: &mut Code, g: &ConvGeom, s: &Schedule, p: &StridedPlan) {
    let ([h, w], [oh, ow], [kh, kw]) = (g.in_hw, g.out_hw, g.kernel_hw);
    let (n, cc, f, sh, sw, pt) = (g.n, g.c, g.f, g.strides[0], g.strides[1], g.pad.top);
    let k = kh * kw * f;
    let nb = panel_block(cc, tile_width(cc, s));
    let nv = nb / LANES;
    transpose_kernel(c, g, false, true);
    c.line("dyp.fill(0.0);");
    c.open(format!("for j0 in (0..{cc}).step_by({nb})"));
    c.open(format!("for n in 0..{n}"));
    c.line(format!(
        "// dyp = image n of dy, its rows padded to {} columns ({} zero columns first)",
        p.width, p.left
    ));
    c.open(format!("for q in 0..{oh}"));
    c.line(format!(
        "dyp[{}..][..{}].copy_from_slice(&dy[(n * {oh} + q) * {}..][..{}]);",
        add(&mul("q", p.width * f), &(p.left * f).to_string()),
        ow * f,
        ow * f,
        ow * f
    ));
    c.close();
    c.open(format!("for i in 0..{h}"));
    for (r, (cols, taps)) in p.classes.iter().enumerate() {
        let mr = lane_rows(s, *cols);
        c.line(format!("// columns {r} + {sw}·b of row i, {mr} at a time"));
        blocks_of(c, "b0", *cols, mr, |c, mr| {
            if taps.is_empty() {
                // No kernel column reaches this class: its gradient is zero.
                c.line(format!("let va = [[V::zero(); {nv}]; {mr}];"));
            } else {
                kernels_lanes::declare(c, mr, nv);
                c.open(format!("for kh in 0..{kh}"));
                c.line(format!("let q = usize::wrapping_sub(i + {pt}, kh);"));
                c.line(format!("if q % {sh} != 0 || q / {sh} >= {oh} {{ continue; }}"));
                c.line(format!(
                    "let dr = &dyp[q / {sh} * {}..][..{}];",
                    p.width * f,
                    p.width * f
                ));
                for &(kc, d) in taps {
                    let col = (p.left as isize + d) as usize;
                    c.line(format!(
                        "let db = &dr[{}..][..{}];",
                        times(&add("b0", &col.to_string()), f),
                        mr * f
                    ));
                    c.line(format!(
                        "let ws = &wt[j0 * {k} + (kh * {kw} + {kc}) * {}..][..{}];",
                        f * LANES,
                        (nv - 1) * k * LANES + f * LANES
                    ));
                    c.open(format!("for fi in 0..{f}"));
                    let load = format!("V::load(&ws[j * {} + {}..])", k * LANES, mul("fi", LANES));
                    kernels_lanes::step(c, mr, nv, &load, &format!("db[{} + fi]", mul("m", f)));
                    c.close();
                }
                c.close();
            }
            let row = format!(
                "((n * {h} + i) * {w} + {}) * {cc}",
                add(&r.to_string(), &times(&add("b0", "m"), sw))
            );
            kernels_lanes::store_rows(c, "va", mr, nv, "dx", &row);
        });
    }
    c.close();
    c.close();
    c.close();
}

/// The input gradient's scratch operand (`kernels::scratch_of`).
pub(crate) fn grad_input_scratch(g: &ConvGeom) -> (&'static str, usize) {
    scratch(&grad_input_parts(g)).expect("the transposed kernel")
}

/// Gradient of the input: `(dy, w) -> (dx)`, scratch [`grad_input_scratch`]. Stride 1: the
/// forward loop nest over `dy` with the flipped kernel ([`ConvGeom::grad_input_as_conv`]). Otherwise the
/// kernel is transposed to `[KH, KW, F, C]` in `wt`, so that each input pixel accumulates, per
/// tap and output channel, an `axpy` over a block of contiguous input channels.
pub(crate) fn conv_grad_input(c: &mut Code, g: &ConvGeom, s: &Schedule) -> Result<(), String> {
    let (cc, f) = (g.c, g.f);
    if let ConvLayout::GradInput { scatter: true, .. } = layout(s)? {
        return grad_input_scatter(c, g, s);
    }
    if let Some(t) = g.grad_input_as_conv() {
        split_work(c, &grad_input_parts(g));
        // Winograd transforms the kernel from HWIO; the direct nest reads it in panels.
        let winograd = layout(s)?.winograd();
        transpose_kernel(c, g, true, !winograd);
        let names = Names {
            x: "dy",
            w: "wt",
            y: "dx",
            xp: "dyp",
            panels: !winograd,
        };
        return if winograd {
            winograd_nest(c, &t, &Epilogue::NONE, s, &names, None)
        } else {
            conv_nest(c, &t, &Epilogue::NONE, s, &names)
        };
    }
    if let Some(p) = strided_plan(g) {
        split_work(c, &grad_input_parts(g));
        strided_grad_input(c, g, s, &p);
        return Ok(());
    }
    let [h, w] = g.in_hw;
    let [oh, ow] = g.out_hw;
    let [kh, kw] = g.kernel_hw;
    let n = g.n;
    let nb = block_width(cc, s);
    let full = cc.is_multiple_of(nb);
    transpose_kernel(c, g, false, false);
    c.line(format!(
        "// [{n}, {h}, {w}, {cc}] input gradients, {nb} channels at a time"
    ));
    c.open(format!("for n in 0..{n}"));
    c.open(format!("for i in 0..{h}"));
    c.open(format!("for j in 0..{w}"));
    c.line(format!("let row = ((n * {h} + i) * {w} + j) * {cc};"));
    open_j0(c, "0", &cc.to_string(), nb, nb == cc);
    open_block(c, "acc", nb, cc, &cc.to_string(), full);
    c.open(format!("for kh in 0..{kh}"));
    out_coord(c, "oh", "i", "kh", g.strides[0], g.pad.top, oh);
    c.open(format!("for kw in 0..{kw}"));
    out_coord(c, "ow", "j", "kw", g.strides[1], g.pad.left, ow);
    c.line(format!("let ds = &dy[((n * {oh} + oh) * {ow} + ow) * {f}..][..{f}];"));
    c.line(format!("let wts = &wt[(kh * {kw} + kw) * {} + j0..];", f * cc));
    c.open("for (fi, &d) in ds.iter().enumerate()");
    c.line(format!(
        "axpy(acc, d, &wts[{}..][..{}]);",
        mul("fi", cc),
        width(nb, full)
    ));
    c.close();
    c.close();
    c.close();
    c.line("dx[row + j0..][..wd].copy_from_slice(acc);");
    for _ in 0..4 {
        c.close();
    }
    Ok(())
}

/// Parts of the kernel gradient's scratch: the padded image `xp` of a padding conv, and the
/// image's output gradient `dyi` rebuilt from a pooled one.
fn grad_kernel_parts(g: &ConvGeom, pooled: bool) -> Vec<(&'static str, usize)> {
    if grad_kernel_winograd(g, pooled) {
        return winograd_grad_parts(g);
    }
    let group = images_per_group(g);
    let mut parts = Vec::new();
    if let Some([hp, wp]) = padded_hw(g) {
        parts.push(("xp", group * hp * wp * g.c));
    }
    if pooled || narrow_dy(g) {
        parts.push(("dyi", group * g.out_hw[0] * g.out_hw[1] * dy_pitch(g)));
    }
    parts
}

/// Whether the kernel gradient copies `dy` into `dyi` with each pixel's channels zero-padded to
/// whole 16-lane vectors ([`dy_pitch`]): output channels that are not a multiple of 16 (LeNet's
/// 6 and 16·k + r), which then still accumulate in vectors.
fn narrow_dy(g: &ConvGeom) -> bool {
    !g.f.is_multiple_of(LANES)
}

/// Floats per pixel of `dyi`: the output channels, padded to whole vectors when [`narrow_dy`].
fn dy_pitch(g: &ConvGeom) -> usize {
    g.f.next_multiple_of(LANES)
}

/// The kernel gradient's scratch operand (`kernels::scratch_of`).
pub(crate) fn grad_kernel_scratch(g: &ConvGeom, pooled: bool) -> Option<(&'static str, usize)> {
    scratch(&grad_kernel_parts(g, pooled))
}

/// Gradient of the kernel: `(x, dy) -> (dw, [db])` (with a pooled `dy`: `(x, y, argmax, dy)`),
/// scratch [`grad_kernel_scratch`]. Per group of the schedule's `images_per_group` images
/// (padded, and their output gradients rebuilt when pooled), for each kernel row `kh`: `dw[kh]`
/// as a `[KW·C, F]` matrix, row `r = kw·C + ci`, gains
/// `Σ_{image, oh, ow} x[oh·sh + kh, ow·sw·C + r] · dy[oh, ow, :]`, block by block, each block
/// loaded from `dw` once per group and stored back. A Winograd conv's (schedule) runs as
/// F(3×3, 2×2) instead (`kernels_winograd_grad`).
pub(crate) fn conv_grad_kernel(
    c: &mut Code,
    g: &ConvGeom,
    bias_grad: bool,
    pooled: Option<&PooledDy>,
    s: &Schedule,
) -> Result<(), String> {
    let [oh, ow] = g.out_hw;
    let [kh, kw] = g.kernel_hw;
    let (n, cc, f) = (g.n, g.c, g.f);
    let rows = kw * cc;
    let pitch = g.strides[1] * cc;
    // Register tiles of the schedule's width in vectors, else (scalar) up to two tiles wide;
    // narrow channels one padded vector at a time.
    let narrow = narrow_dy(g);
    let fp = dy_pitch(g);
    let nr = if narrow { LANES } else { tile_width(f, s) };
    let lanes = if narrow {
        Some(1)
    } else {
        lane_vectors(nr, f.is_multiple_of(nr))
    };
    let nb = if lanes.is_some() { nr } else { block_width(f, s) };
    let full = f.is_multiple_of(nb);
    let wdt = width(nb, full);
    let mr = match lanes {
        Some(_) => lane_rows(s, rows),
        None => row_block(s).min(rows).max(1),
    };
    split_work(c, &grad_kernel_parts(g, pooled.is_some()));
    if layout(s)?.winograd() {
        winograd_grad_kernel(c, g, s)?;
        return bias_gradient(c, g, bias_grad, pooled);
    }
    c.line("dw.fill(0.0);");
    if narrow {
        // (the padding lanes stay zero: only the live ones are written)
        c.line("dyi.fill(0.0);");
    }
    if padded_hw(g).is_some() {
        c.line("xp.fill(0.0);");
    }
    let group = layout(s)?.images_per_group();
    c.open(format!("for n0 in (0..{n}).step_by({group})"));
    let padded = padded_hw(g);
    let rebuilt = pooled.is_some() || narrow;
    if padded.is_some() || rebuilt {
        c.open(format!("for gi in 0..{group}"));
        c.line("let n = n0 + gi;");
        if let Some([_, wp]) = padded {
            pad_image(c, g, &FORWARD, wp, "gi");
        }
        match pooled {
            Some(pd) => pooled_dy_image(c, g, pd, fp)?,
            None if narrow => padded_dy_image(c, g, fp),
            None => {}
        }
        c.close();
    }
    let dy_row = if rebuilt {
        format!("&dyi[(gi * {oh} + oh) * {}..][..{}]", ow * fp, ow * fp)
    } else {
        format!("&dy[(n * {oh} + oh) * {}..][..{}]", ow * f, ow * f)
    };
    // Input row `oh·sh + kh` of image `gi` of the group (padded) or of image `n` (in place).
    let ih = add(&mul("oh", g.strides[0]), "kh");
    let ih = match padded_hw(g) {
        Some([hp, _]) => add(&mul("gi", hp), &ih),
        None => ih,
    };
    c.line(format!(
        "// dw[kh] as [{rows}, {f}] += x rows · dy over the [{oh}, {ow}] output pixels of {group} image(s), {mr} rows at a time"
    ));
    c.open(format!("for kh in 0..{kh}"));
    blocks_of(c, "r0", rows, mr, |c, mr| {
        c.line(format!("let base = (kh * {rows} + r0) * {f};"));
        open_j0(c, "0", &f.to_string(), nb, nb >= f);
        if lanes.is_none() || narrow {
            block_width_line(c, nb, f, &f.to_string(), full);
        }
        match lanes {
            // Live lanes from dw, the others zero.
            Some(_) if narrow => c.line(format!(
                "let mut va: [[V; 1]; {mr}] = array_with(|m| {{ let mut t = [0f32; {LANES}]; t[..wd].copy_from_slice(&dw[base + m * {f} + j0..][..wd]); [V::load(&t)] }});"
            )),
            Some(nv) => c.line(format!(
                "let mut va: [[V; {nv}]; {mr}] = array_with(|m| array_with(|j| V::load(&dw[base + m * {f} + j0 + {} * j..])));",
                kernels_lanes::LANES
            )),
            None => {
                c.line(format!("let mut acc = [[0f32; {nb}]; {mr}];"));
                c.line(format!(
                    "for (m, a) in acc.iter_mut().enumerate() {{ a[..wd].copy_from_slice(&dw[base + m * {f} + j0..][..wd]); }}"
                ));
            }
        }
        c.open(format!("for gi in 0..{group}"));
        if padded.is_none() || !rebuilt {
            c.line("let n = n0 + gi;");
        }
        c.open(format!("for oh in 0..{oh}"));
        input_row(c, g, &FORWARD, &ih);
        c.line(format!("let xb = &xr[r0..][..{}];", (ow - 1) * pitch + mr));
        c.line(format!("let dr = {dy_row};"));
        c.open(format!("for ow in 0..{ow}"));
        let a = format!("xb[{} + m]", mul("ow", pitch));
        let pitch_dy = if rebuilt { fp } else { f };
        kernels_lanes::accumulate(c, mr, lanes, &format!("dr[{} + j0..]", mul("ow", pitch_dy)), &wdt, &a);
        c.close();
        c.close();
        c.close();
        match lanes {
            Some(_) if narrow => c.line(format!(
                "for m in 0..{mr} {{ let mut t = [0f32; {LANES}]; va[m][0].store(&mut t); dw[base + m * {f} + j0..][..wd].copy_from_slice(&t[..wd]); }}"
            )),
            Some(nv) => kernels_lanes::store_rows(c, "va", mr, nv, "dw", &format!("base + m * {f}")),
            None => c.line(format!(
                "for (m, a) in acc.iter().enumerate() {{ dw[base + m * {f} + j0..][..wd].copy_from_slice(&a[..wd]); }}"
            )),
        }
        c.close();
    });
    c.close();
    c.close();
    bias_gradient(c, g, bias_grad, pooled)
}

/// `db = Σ dy` per channel, when `bias_grad`.
fn bias_gradient(c: &mut Code, g: &ConvGeom, bias_grad: bool, pooled: Option<&PooledDy>) -> Result<(), String> {
    let f = g.f;
    if bias_grad {
        c.line(format!("let mut sb = [0f64; {f}]; // Σdy per channel"));
        match pooled {
            None => {
                c.open(format!("for dr in dy.chunks_exact({f})"));
                c.line("for (s, &d) in sb.iter_mut().zip(dr) { *s += d as f64; }");
            }
            // dy is 0 but at each window's argmax, where it is the pooled gradient.
            Some(pd) => {
                c.open(format!("for q in 0..{}", dy_len(g, pd)));
                c.line(format!(
                    "sb[q % {f}] += ({}) as f64;",
                    act_grad_expr(pd.act_grad.unwrap_or(Activation::Linear), "y[q]", "dy[q]")?
                ));
            }
        }
        c.close();
        c.line("for (o, &s) in db.iter_mut().zip(&sb) { *o = s as f32; }");
    }
    Ok(())
}

/// Pooled `[n, ph, pw, f]` elements of the conv `g` pooled by `pd`.
fn dy_len(g: &ConvGeom, pd: &PooledDy) -> usize {
    let [ph, pw] = pooled_hw(g.out_hw, &pd.window);
    g.n * ph * pw * g.f
}

/// Fills slot `gi` of `dyi` (`fp` floats per pixel) with image `n` of `dy`, each pixel's `f`
/// channels first.
fn padded_dy_image(c: &mut Code, g: &ConvGeom, fp: usize) {
    let ([oh, ow], f) = (g.out_hw, g.f);
    let px = oh * ow;
    c.line(format!(
        "// dyi[gi] = image n of dy, [{oh}, {ow}, {f}] padded to [{oh}, {ow}, {fp}]"
    ));
    c.open(format!(
        "for (d, s) in dyi[gi * {}..][..{}].chunks_exact_mut({fp}).zip(dy[n * {}..][..{}].chunks_exact({f}))",
        px * fp,
        px * fp,
        px * f,
        px * f
    ));
    c.line(format!("d[..{f}].copy_from_slice(s);"));
    c.close();
}

/// Fills slot `gi` of `dyi` (`fp` floats per pixel, its `f` channels first) with image `n` of
/// the conv's output gradient, rebuilt from the pooled gradient `dy`, the pooled activation `y`
/// and the `argmax` of every window: the window's gradient (times the activation's derivative)
/// at its argmax, 0 elsewhere.
fn pooled_dy_image(c: &mut Code, g: &ConvGeom, pd: &PooledDy, fp: usize) -> Result<(), String> {
    let ([oh, ow], f) = (g.out_hw, g.f);
    if !pool_tiles(g.out_hw, &pd.window) {
        return Err("a pooled kernel gradient over windows that do not tile the output".into());
    }
    let ([sh, sw], [ph, pw]) = (pd.window.size, pooled_hw(g.out_hw, &pd.window));
    let len = oh * ow * fp;
    // Window by window, each pixel of the window written once, channels contiguous: a select,
    // no branch, and no second pass over the image.
    c.line(format!(
        "// dyi[gi] = [{oh}, {ow}, {f}], the output gradient of image n: zero, but at each window's argmax"
    ));
    c.line(format!("let d = &mut dyi[gi * {len}..][..{len}];"));
    c.open(format!("for pp in 0..{}", ph * pw));
    c.line(format!("let (phi, pwi) = (pp / {pw}, pp % {pw});"));
    c.line(format!("let q0 = (n * {} + pp) * {f};", ph * pw));
    unpool_window(
        c,
        [sh, sw],
        f,
        &format!("((phi * {sh} + t / {sw}) * {ow} + pwi * {sw} + t % {sw}) * {fp}"),
        "d",
        "q0",
        pd.act_grad,
    )?;
    c.close();
    Ok(())
}
