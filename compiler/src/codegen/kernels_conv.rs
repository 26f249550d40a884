//! Bodies of the convolution templates: forward (with its epilogue and a fused max-pool) and
//! both gradients. Shared pieces (blocks, tap coordinates, epilogue) are in `kernels_gemm`.
//!
//! Forward: per output row, pixels whose taps all lie inside the input (the interior, known
//! at emit time) go `mr` at a time — the block's `mr × nb` accumulators share every load of
//! the kernel — and border pixels one at a time with padding checks. A fused max-pool walks
//! the pooled map instead, each window's pixels through the same code, `mr` windows at a time.

use crate::ir::{Activation, Pad2d};
use crate::kernel_ir::kernel::{pool_tiles, pooled_hw};
use crate::kernel_ir::{ConvGeom, Epilogue, PooledDy, Schedule};

use super::kernels::act_grad_expr;
use super::kernels_lanes::{self, lane_rows, lane_vectors};
use super::kernels_gemm::{
    block_width, block_width_line, declare_stats, epilogue, finish_stats, open_block, open_j0, out_coord, row_block,
    tap_coord, tile_width, width,
};
use super::writer::{add, mul, Code};

/// `[hp, wp]` of the zero-padded image the forward taps read (scratch `xp`, one image at a
/// time), or `None` when the conv has no padding and its taps read `x` in place.
pub(crate) fn padded_hw(g: &ConvGeom) -> Option<[usize; 2]> {
    let p = g.pad;
    (p != Pad2d::default()).then_some([g.in_hw[0] + p.top + p.bottom, g.in_hw[1] + p.left + p.right])
}

/// Operand names of a forward conv loop nest: the conv's own, or those of the input gradient
/// run as a conv (`dy` padded into `dyp`, the flipped kernel `wt`, into `dx`).
struct Names {
    x: &'static str,
    w: &'static str,
    y: &'static str,
    xp: &'static str,
}

const FORWARD: Names = Names {
    x: "x",
    w: "w",
    y: "y",
    xp: "xp",
};

/// `(e) * k` as source (`mul` for a single term).
fn times(e: &str, k: usize) -> String {
    if e.contains(' ') && k != 1 {
        mul(&format!("({e})"), k)
    } else {
        mul(e, k)
    }
}

/// Binds `xr`, input row `ih` of image `n` as the taps read it (padded or in place).
fn input_row(c: &mut Code, g: &ConvGeom, nm: &Names, ih: &str) {
    let [h, w] = g.in_hw;
    let cc = g.c;
    match padded_hw(g) {
        Some([_, wp]) => c.line(format!("let xr = &{}[{}..][..{}];", nm.xp, times(ih, wp * cc), wp * cc)),
        None => c.line(format!("let xr = &{}[(n * {h} + {ih}) * {}..][..{}];", nm.x, w * cc, w * cc)),
    }
}

/// `acc: [[f32; nb]; mr]` holding the taps of the `mr` pixels `(n, oh, first + m·step)` (every
/// tap inside the padded image): a vector block when `lanes` is `Some(nv)`, else `axpy`s.
#[allow(clippy::too_many_arguments)]
fn block_taps(
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
    c.line(format!(
        "let ws = &{}[(kh * {kw} + kw) * {} + j0..][..{}];",
        nm.w,
        cc * f,
        (cc - 1) * f + nb
    ));
    c.open(format!("for ci in 0..{cc}"));
    let a = format!("xb[{} + ci]", mul("m", pitch));
    match lanes {
        Some(nv) => kernels_lanes::step(c, mr, nv, &format!("ws[{}..]", mul("ci", f)), &a),
        None => {
            c.line(format!("let wr = &ws[{}..][..{wdt}];", mul("ci", f)));
            c.open(format!("for m in 0..{mr}"));
            c.line(format!("axpy(&mut acc[m][..{wdt}], {a}, wr);"));
            c.close();
        }
    }
    c.close();
    c.close();
    c.close();
    if let Some(nv) = lanes {
        kernels_lanes::store(c, mr, nv);
    }
}

/// Runs `body(c, mr)` for the blocks that cover `avail` positions `mr` at a time (binding
/// `var`, the first position), then for the shorter tail block if any.
fn blocks_of(c: &mut Code, var: &str, avail: usize, mr: usize, mut body: impl FnMut(&mut Code, usize)) {
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

/// Convolution forward: `(x, w, [bias], [res]) -> (y, [moments])`, scratch `xp` (the padded
/// image) when the conv pads. Every output row is cut into register blocks of pixels (of
/// pooled windows, with a fused max-pool), each block's taps read from the padded image
/// without bounds tests.
pub(crate) fn conv2d(c: &mut Code, g: &ConvGeom, e: &Epilogue, s: &Schedule) -> Result<(), String> {
    conv_nest(c, g, e, s, &FORWARD)
}

/// [`conv2d`] over the operands `nm` names.
fn conv_nest(c: &mut Code, g: &ConvGeom, e: &Epilogue, s: &Schedule, nm: &Names) -> Result<(), String> {
    if e.act == Activation::Softmax {
        return Err("softmax in a convolution epilogue".into());
    }
    let (n, [oh, ow], f) = (g.n, g.out_hw, g.f);
    let nb = tile_width(f, s);
    let full = f.is_multiple_of(nb);
    let wdt = width(nb, full);
    let fs = f.to_string();
    let lanes = lane_vectors(nb, full);
    // Pixels (pooled windows) per register block.
    let rows = |avail: usize| match lanes {
        Some(_) => lane_rows(s, avail),
        None => row_block(s).min(avail).max(1),
    };
    if e.bn_stats {
        declare_stats(c, f);
    }
    let pad = padded_hw(g);
    if pad.is_some() {
        c.line(format!("{}.fill(0.0);", nm.xp));
    }
    c.open(format!("for n in 0..{n}"));
    if let Some([_, wp]) = pad {
        let ([h, w], cc, p) = (g.in_hw, g.c, g.pad);
        let (xp, x) = (nm.xp, nm.x);
        c.line(format!("// {xp} = image n of {x} zero-padded to [{}, {wp}, {cc}]", h + p.top + p.bottom));
        c.open(format!("for ih in 0..{h}"));
        c.line(format!(
            "{xp}[{}..][..{}].copy_from_slice(&{x}[(n * {h} + ih) * {}..][..{}]);",
            add(&times(&add("ih", &p.top.to_string()), wp * cc), &(p.left * cc).to_string()),
            w * cc,
            w * cc,
            w * cc
        ));
        c.close();
    }
    match &e.max_pool {
        None => {
            let mr = rows(ow);
            c.line(format!(
                "// [{n}, {oh}, {ow}, {f}] outputs, {nb} channels at a time, {mr} pixels at a time"
            ));
            c.open(format!("for oh in 0..{oh}"));
            blocks_of(c, "ow", ow, mr, |c, mr| {
                open_j0(c, "0", &fs, nb, nb == f);
                block_width_line(c, nb, f, &fs, full);
                block_taps(c, g, nm, "ow", 1, mr, nb, &wdt, lanes);
                c.open("for (m, acc) in acc.iter_mut().enumerate()");
                c.line(format!("let row = ((n * {oh} + oh) * {ow} + ow + m) * {f};"));
                c.line("let acc = &mut acc[..wd];");
                epilogue(c, e, e.bn_stats);
                c.line(format!("{}[row + j0..][..wd].copy_from_slice(acc);", nm.y));
                c.close();
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
            c.open(format!("for ph in 0..{ph}"));
            blocks_of(c, "pw", pw, mr, |c, mr| {
                open_j0(c, "0", &fs, nb, nb == f);
                block_width_line(c, nb, f, &fs, full);
                c.line(format!("let mut best = [[0f32; {nb}]; {mr}];"));
                if argmax {
                    c.line(format!("let mut arg = [[0f32; {nb}]; {mr}];"));
                }
                c.open(format!("for t in 0..{}", sh * sw));
                c.line(format!("let oh = {};", add(&mul("ph", sh), &format!("t / {sw}"))));
                c.line(format!("let owb = {};", add(&mul("pw", sw), &format!("t % {sw}"))));
                block_taps(c, g, nm, "owb", sw, mr, nb, &wdt, lanes);
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
                c.line("let (acc, best) = (&mut acc[..wd], &mut best[..wd]);");
                epilogue(c, e, e.bn_stats);
                max_into(c, "best", "acc", argmax.then_some("arg"));
                c.close();
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
                c.close();
            });
            c.close();
        }
    }
    c.close();
    if e.bn_stats {
        finish_stats(c, f, n * oh * ow);
    }
    Ok(())
}

/// `best = acc` on the window's first pixel (`t == 0`), else the elementwise maximum.
fn max_into(c: &mut Code, best: &str, acc: &str, arg: Option<&str>) {
    c.open("if t == 0");
    c.line(format!("{best}.copy_from_slice({acc});"));
    if let Some(a) = arg {
        c.line(format!("{a}.fill(0.0);"));
    }
    c.else_();
    match arg {
        None => c.line(format!(
            "for (b, &v) in {best}.iter_mut().zip({acc}.iter()) {{ if v > *b {{ *b = v; }} }}"
        )),
        // The first maximum keeps its index: a later equal value does not take over.
        Some(a) => c.line(format!(
            "for ((b, a), &v) in {best}.iter_mut().zip({a}.iter_mut()).zip({acc}.iter()) {{ if v > *b {{ *b = v; *a = t as f32; }} }}"
        )),
    }
    c.close();
}

/// The input gradient of a stride-1 conv `g` as a forward conv: of `dy` padded by
/// `kernel − 1 − pad` on each side, with the flipped kernel transposed to `[KH, KW, F, C]`,
/// giving `dx` (`None` for strided convs, or pads past `kernel − 1`).
pub(crate) fn grad_input_as_conv(g: &ConvGeom) -> Option<ConvGeom> {
    let ([kh, kw], p) = (g.kernel_hw, g.pad);
    let fits = p.top < kh && p.bottom < kh && p.left < kw && p.right < kw;
    (g.strides == [1, 1] && fits).then_some(ConvGeom {
        n: g.n,
        in_hw: g.out_hw,
        c: g.f,
        kernel_hw: g.kernel_hw,
        f: g.c,
        strides: [1, 1],
        pad: Pad2d {
            top: kh - 1 - p.top,
            bottom: kh - 1 - p.bottom,
            left: kw - 1 - p.left,
            right: kw - 1 - p.right,
        },
        out_hw: g.in_hw,
    })
}

/// Values of the input gradient's scratch: the transposed kernel `wt`, and for a stride-1 conv
/// whose equivalent forward conv pads, the padded `dyp` after it (together `work`).
pub(crate) fn grad_input_scratch(g: &ConvGeom) -> (&'static str, usize) {
    match grad_input_as_conv(g).and_then(|t| padded_hw(&t).map(|[hp, wp]| hp * wp * t.c)) {
        Some(dyp) => ("work", g.kernel_len() + dyp),
        None => ("wt", g.kernel_len()),
    }
}

/// Gradient of the input: `(dy, w) -> (dx)`, scratch [`grad_input_scratch`]. Stride 1: the
/// forward loop nest over `dy` with the flipped kernel ([`grad_input_as_conv`]). Otherwise the
/// kernel is transposed to `[KH, KW, F, C]` in `wt`, so that each input pixel accumulates, per
/// tap and output channel, an `axpy` over a block of contiguous input channels.
pub(crate) fn conv_grad_input(c: &mut Code, g: &ConvGeom, s: &Schedule) -> Result<(), String> {
    let (taps, cc, f) = (g.kernel_hw[0] * g.kernel_hw[1], g.c, g.f);
    if let Some(t) = grad_input_as_conv(g) {
        if grad_input_scratch(g).0 == "work" {
            c.line(format!("let (wt, dyp) = work.split_at_mut({});", g.kernel_len()));
        }
        c.line(format!("// wt = the kernel flipped and transposed to [{}, {}, {f}, {cc}]", g.kernel_hw[0], g.kernel_hw[1]));
        c.open(format!("for t in 0..{taps}"));
        c.open(format!("for ci in 0..{cc}"));
        c.open(format!("for fi in 0..{f}"));
        c.line(format!(
            "wt[({} * {f} + fi) * {cc} + ci] = w[(t * {cc} + ci) * {f} + fi];",
            if taps > 1 { format!("({} - t)", taps - 1) } else { "0".into() }
        ));
        c.close();
        c.close();
        c.close();
        let names = Names {
            x: "dy",
            w: "wt",
            y: "dx",
            xp: "dyp",
        };
        return conv_nest(c, &t, &Epilogue::NONE, s, &names);
    }
    let [h, w] = g.in_hw;
    let [oh, ow] = g.out_hw;
    let [kh, kw] = g.kernel_hw;
    let n = g.n;
    let nb = block_width(cc, s);
    let full = cc.is_multiple_of(nb);
    c.line(format!("// wt = the kernel as [{kh}, {kw}, {f}, {cc}]"));
    c.open(format!("for t in 0..{taps}"));
    c.open(format!("for ci in 0..{cc}"));
    c.open(format!("for fi in 0..{f}"));
    c.line(format!(
        "wt[(t * {f} + fi) * {cc} + ci] = w[(t * {cc} + ci) * {f} + fi];"
    ));
    c.close();
    c.close();
    c.close();
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

/// Gradient of the kernel: `(x, dy) -> (dw, [db])`. Per output row `(n, oh)`, tap and input
/// channel, a block of `dw` is held in an accumulator while the row's pixels add
/// `x·dy[pixel, block]` to it, so `dw` is read and written once per output row.
pub(crate) fn conv_grad_kernel(
    c: &mut Code,
    g: &ConvGeom,
    bias_grad: bool,
    pooled: Option<&PooledDy>,
    s: &Schedule,
) -> Result<(), String> {
    let [h, w] = g.in_hw;
    let [oh, ow] = g.out_hw;
    let [kh, kw] = g.kernel_hw;
    let (n, cc, f) = (g.n, g.c, g.f);
    let nb = block_width(f, s);
    let full = f.is_multiple_of(nb);
    c.line("dw.fill(0.0);");
    c.line(format!(
        "// Σ over the [{n}, {oh}, {ow}] output pixels, a row of {ow} at a time"
    ));
    c.open(format!("for n in 0..{n}"));
    c.open(format!("for oh in 0..{oh}"));
    match pooled {
        None => c.line(format!("let drow = &dy[(n * {oh} + oh) * {}..][..{}];", ow * f, ow * f)),
        Some(pd) => pooled_dy_row(c, g, pd)?,
    }
    c.open(format!("for kh in 0..{kh}"));
    tap_coord(c, "ih", "oh", "kh", g.strides[0], g.pad.top, h, oh, kh);
    c.line(format!("let xrow = &x[(n * {h} + ih) * {}..][..{}];", w * cc, w * cc));
    c.open(format!("for kw in 0..{kw}"));
    c.open(format!("for ci in 0..{cc}"));
    c.line(format!("let base = ((kh * {kw} + kw) * {cc} + ci) * {f};"));
    open_j0(c, "0", &f.to_string(), nb, nb == f);
    open_block(c, "acc", nb, f, &f.to_string(), full);
    c.line("acc.copy_from_slice(&dw[base + j0..][..wd]);");
    c.open(format!("for ow in 0..{ow}"));
    tap_coord(c, "iw", "ow", "kw", g.strides[1], g.pad.left, w, ow, kw);
    c.line(format!(
        "axpy(acc, xrow[{}], &drow[{} + j0..][..{}]);",
        add(&mul("iw", cc), "ci"),
        mul("ow", f),
        width(nb, full)
    ));
    c.close();
    c.line("dw[base + j0..][..wd].copy_from_slice(acc);");
    for _ in 0..6 {
        c.close();
    }
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

/// Binds `drow`, output row `oh` of image `n` of the conv's gradient, rebuilt from the pooled
/// gradient `dy`, the pooled activation `y` and the `argmax` of every window: the window's
/// gradient (times the activation's derivative) at its argmax, 0 elsewhere.
fn pooled_dy_row(c: &mut Code, g: &ConvGeom, pd: &PooledDy) -> Result<(), String> {
    let (ow, f) = (g.out_hw[1], g.f);
    if !pool_tiles(g.out_hw, &pd.window) {
        return Err("a pooled kernel gradient over windows that do not tile the output".into());
    }
    let ([sh, sw], [ph, pw]) = (pd.window.size, pooled_hw(g.out_hw, &pd.window));
    let grad = act_grad_expr(pd.act_grad.unwrap_or(Activation::Linear), "y[q]", "dy[q]")?;
    c.line(format!(
        "let mut drow = [0f32; {}]; // [{ow}, {f}] of output row oh",
        ow * f
    ));
    c.open(format!("for (owi, px) in drow.chunks_exact_mut({f}).enumerate()"));
    c.line(format!("let at = ((n * {ph} + oh / {sh}) * {pw} + owi / {sw}) * {f};"));
    c.line(format!("let t = ((oh % {sh}) * {sw} + owi % {sw}) as f32;"));
    c.open("for (ch, d) in px.iter_mut().enumerate()");
    c.line("let q = at + ch;");
    c.line(format!("*d = if argmax[q] == t {{ {grad} }} else {{ 0.0 }};"));
    c.close();
    c.close();
    c.line("let drow = &drow[..];");
    Ok(())
}
