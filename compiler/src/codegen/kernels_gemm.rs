//! Bodies of the GEMM-shaped templates: convolution (with its epilogue, including a fused
//! max-pool), both convolution gradients, and the GEMM.
//!
//! Loop order: output rows (pixels) outside, then blocks of `nb` output channels held in a
//! local accumulator array (the schedule's register tile width `nr`, or every channel when
//! there are few), then the reduction, whose innermost loop is an `axpy` over the block's
//! contiguous channels (HWIO kernels, `[k, n]` matrices) — the loop LLVM vectorises. The GEMM
//! also honours the schedule's column panel `nc` (a panel of B stays in cache across rows).
//! Reductions whose operands are only contiguous along the reduced axis (the input gradient,
//! GEMMs with a transposed B) use `dot`, which keeps eight partial sums to vectorise.

use crate::ir::Activation;
use crate::kernel_ir::kernel::pool_tiles;
use crate::kernel_ir::{ConvGeom, Epilogue, GemmTiles, Schedule, Tiling};

use super::kernels::act_fn;
use super::writer::{add, mul, Code};

/// Output channels per accumulator block: every channel when there are at most two register
/// tiles of them, else one register tile (`nr` of the schedule).
pub(crate) fn block_width(n: usize, s: &Schedule) -> usize {
    let nr = match s.tiling {
        Tiling::Gemm(GemmTiles { nr, .. }) => nr,
        Tiling::Rows { .. } => 2 * s.vector_width,
    }
    .max(1);
    if n <= 2 * nr {
        n.max(1)
    } else {
        nr
    }
}

/// The width of an accumulator block as source: the literal when every block is whole.
fn width(nb: usize, full: bool) -> String {
    if full {
        nb.to_string()
    } else {
        "wd".into()
    }
}

/// Binds `wd`, the live width of the block starting at `j0` (of a row of `n` channels ending
/// at `end`), and `name`, a zeroed accumulator of that width.
fn open_block(c: &mut Code, name: &str, nb: usize, n: usize, end: &str, full: bool) {
    if full || nb == n {
        c.line(format!("let wd = {nb};"));
    } else {
        c.line(format!("let wd = ({end} - j0).min({nb});"));
    }
    c.line(format!("let mut {name} = [0f32; {nb}];"));
    c.line(format!("let {name} = &mut {name}[..wd];"));
}

/// `for j0 in (FROM..TO).step_by(NB) {` or, with one block, `{ let j0 = FROM;`.
fn open_j0(c: &mut Code, from: &str, to: &str, nb: usize, single: bool) {
    if single {
        c.open("");
        c.line(format!("let j0 = {from};"));
    } else {
        c.open(format!("for j0 in ({from}..{to}).step_by({nb})"));
    }
}

/// Lines binding input coordinate `i` read by output coordinate `o` at tap `t`; `continue`
/// when the tap falls in the padding.
pub(crate) fn tap_coord(
    c: &mut Code,
    i: &str,
    o: &str,
    t: &str,
    stride: usize,
    pad_before: usize,
    in_size: usize,
    out_size: usize,
    taps: usize,
) {
    let expr = add(&mul(o, stride), t);
    if pad_before == 0 {
        c.line(format!("let {i} = {expr};"));
        if (out_size.max(1) - 1) * stride + taps.max(1) - 1 >= in_size {
            c.line(format!("if {i} >= {in_size} {{ continue; }}"));
        }
    } else {
        c.line(format!("let {i} = usize::wrapping_sub({expr}, {pad_before});"));
        c.line(format!("if {i} >= {in_size} {{ continue; }}"));
    }
}

/// Lines binding output coordinate `o` whose tap `t` reads input coordinate `i` (the inverse
/// of [`tap_coord`]); `continue` when there is none.
fn out_coord(c: &mut Code, o: &str, i: &str, t: &str, stride: usize, pad_before: usize, out_size: usize) {
    let shifted = if pad_before == 0 {
        i.to_string()
    } else {
        format!("{i} + {pad_before}")
    };
    if stride == 1 {
        c.line(format!("let {o} = usize::wrapping_sub({shifted}, {t});"));
    } else {
        c.line(format!("let q = usize::wrapping_sub({shifted}, {t});"));
        c.line(format!("if q % {stride} != 0 {{ continue; }}"));
        c.line(format!("let {o} = q / {stride};"));
    }
    c.line(format!("if {o} >= {out_size} {{ continue; }}"));
}

/// The epilogue on block `acc` of output row `row` (columns `j0..`): bias, residual,
/// activation (not softmax), statistics.
fn epilogue(c: &mut Code, e: &Epilogue, stats: bool) {
    if e.bias {
        c.line("for (v, &b) in acc.iter_mut().zip(&bias[j0..][..wd]) { *v += b; }");
    }
    if e.residual {
        c.line("for (v, &r) in acc.iter_mut().zip(&res[row + j0..][..wd]) { *v += r; }");
    }
    if let Some(f) = act_fn(e.act) {
        c.line(format!("for v in acc.iter_mut() {{ *v = {f}(*v); }}"));
    }
    if stats {
        stats_block(c, "acc", "j0");
    }
}

/// Accumulates Σv and Σv² (f64) of the values of `block` (columns from `j0`) into `s1`, `s2`.
fn stats_block(c: &mut Code, block: &str, j0: &str) {
    c.open(format!("for (j, &v) in {block}.iter().enumerate()"));
    c.line("let v = v as f64;");
    c.line(format!("s1[{j0} + j] += v;"));
    c.line(format!("s2[{j0} + j] += v * v;"));
    c.close();
}

fn declare_stats(c: &mut Code, n: usize) {
    c.line(format!("let mut s1 = [0f64; {n}]; // Σy per channel"));
    c.line(format!("let mut s2 = [0f64; {n}]; // Σy² per channel"));
}

/// `moments = [mean; biased variance]` from the sums over `rows` rows.
fn finish_stats(c: &mut Code, n: usize, rows: usize) {
    c.open(format!("for j in 0..{n}"));
    c.line(format!("let mean = s1[j] / {rows}.0;"));
    c.line("moments[j] = mean as f32;");
    c.line(format!("moments[{n} + j] = (s2[j] / {rows}.0 - mean * mean).max(0.0) as f32;"));
    c.close();
}

/// The taps of one output pixel `(n, oh, ow)` accumulated into `acc` (columns `j0..`);
/// `width` is the block's width as source (a literal for whole blocks).
fn conv_taps(c: &mut Code, g: &ConvGeom, width: &str) {
    let [h, w] = g.in_hw;
    let [kh, kw] = g.kernel_hw;
    let (cc, f) = (g.c, g.f);
    c.open(format!("for kh in 0..{kh}"));
    tap_coord(c, "ih", "oh", "kh", g.strides[0], g.pad.top, h, g.out_hw[0], kh);
    c.open(format!("for kw in 0..{kw}"));
    tap_coord(c, "iw", "ow", "kw", g.strides[1], g.pad.left, w, g.out_hw[1], kw);
    c.line(format!("let xs = &x[((n * {h} + ih) * {w} + iw) * {cc}..][..{cc}];"));
    c.line(format!("let ws = &w[(kh * {kw} + kw) * {} + j0..];", cc * f));
    c.open("for (ci, &xv) in xs.iter().enumerate()");
    c.line(format!("axpy(acc, xv, &ws[{}..][..{width}]);", mul("ci", f)));
    c.close();
    c.close();
    c.close();
}

/// Convolution forward: `(x, w, [bias], [res]) -> (y, [moments])`.
pub(crate) fn conv2d(c: &mut Code, g: &ConvGeom, e: &Epilogue, s: &Schedule) -> Result<(), String> {
    if e.act == Activation::Softmax {
        return Err("softmax in a convolution epilogue".into());
    }
    let (n, [oh, ow], f) = (g.n, g.out_hw, g.f);
    let nb = block_width(f, s);
    let full = f.is_multiple_of(nb);
    if e.bn_stats {
        declare_stats(c, f);
    }
    match &e.max_pool {
        None => {
            c.line(format!("// [{n}, {oh}, {ow}, {f}] outputs, {nb} channels at a time"));
            c.open(format!("for n in 0..{n}"));
            c.open(format!("for oh in 0..{oh}"));
            c.open(format!("for ow in 0..{ow}"));
            c.line(format!("let row = ((n * {oh} + oh) * {ow} + ow) * {f};"));
            open_j0(c, "0", &f.to_string(), nb, nb == f);
            open_block(c, "acc", nb, f, &f.to_string(), full);
            conv_taps(c, g, &width(nb, full));
            epilogue(c, e, e.bn_stats);
            c.line("y[row + j0..][..wd].copy_from_slice(acc);");
            c.close();
            c.close();
            c.close();
            c.close();
        }
        Some(win) => {
            if !pool_tiles(g.out_hw, win) {
                return Err("the fused max-pool window does not tile the convolution output".into());
            }
            let [sh, sw] = win.size;
            let (ph, pw) = (oh / sh, ow / sw);
            c.line(format!(
                "// [{n}, {ph}, {pw}, {f}] max-pooled outputs ({sh}x{sw} windows of the [{n}, {oh}, {ow}, {f}] convolution), {nb} channels at a time"
            ));
            c.open(format!("for n in 0..{n}"));
            c.open(format!("for ph in 0..{ph}"));
            c.open(format!("for pw in 0..{pw}"));
            c.line(format!("let prow = ((n * {ph} + ph) * {pw} + pw) * {f};"));
            open_j0(c, "0", &f.to_string(), nb, nb == f);
            open_block(c, "best", nb, f, &f.to_string(), full);
            c.open(format!("for t in 0..{}", sh * sw));
            c.line(format!("let oh = {};", add(&mul("ph", sh), &format!("t / {sw}"))));
            c.line(format!("let ow = {};", add(&mul("pw", sw), &format!("t % {sw}"))));
            if e.residual {
                c.line(format!("let row = ((n * {oh} + oh) * {ow} + ow) * {f};"));
            }
            open_block(c, "acc", nb, f, &f.to_string(), full);
            conv_taps(c, g, &width(nb, full));
            epilogue(c, e, e.bn_stats);
            c.open("if t == 0");
            c.line("best.copy_from_slice(acc);");
            c.else_();
            c.line("for (b, &v) in best.iter_mut().zip(acc.iter()) { if v > *b { *b = v; } }");
            c.close();
            c.close();
            c.line("y[prow + j0..][..wd].copy_from_slice(best);");
            c.close();
            c.close();
            c.close();
            c.close();
        }
    }
    if e.bn_stats {
        finish_stats(c, f, n * oh * ow);
    }
    Ok(())
}

/// Gradient of the input: `(dy, w) -> (dx)`, one `dot` over the output channels per
/// (input pixel, tap, input channel).
pub(crate) fn conv_grad_input(c: &mut Code, g: &ConvGeom) {
    let [h, w] = g.in_hw;
    let [oh, ow] = g.out_hw;
    let [kh, kw] = g.kernel_hw;
    let (n, cc, f) = (g.n, g.c, g.f);
    c.line(format!("// [{n}, {h}, {w}, {cc}] input gradients, every channel of a pixel at a time"));
    c.open(format!("for n in 0..{n}"));
    c.open(format!("for i in 0..{h}"));
    c.open(format!("for j in 0..{w}"));
    c.line(format!("let acc = &mut dx[((n * {h} + i) * {w} + j) * {cc}..][..{cc}];"));
    c.line("acc.fill(0.0);");
    c.open(format!("for kh in 0..{kh}"));
    out_coord(c, "oh", "i", "kh", g.strides[0], g.pad.top, oh);
    c.open(format!("for kw in 0..{kw}"));
    out_coord(c, "ow", "j", "kw", g.strides[1], g.pad.left, ow);
    c.line(format!("let ds = &dy[((n * {oh} + oh) * {ow} + ow) * {f}..][..{f}];"));
    c.line(format!("let ws = &w[(kh * {kw} + kw) * {}..][..{}];", cc * f, cc * f));
    c.open(format!("for (v, wr) in acc.iter_mut().zip(ws.chunks_exact({f}))"));
    c.line("*v += dot(ds, wr);");
    c.close();
    for _ in 0..5 {
        c.close();
    }
}

/// Gradient of the kernel: `(x, dy) -> (dw, [db])`, accumulated over the output pixels with an
/// `axpy` over output channels per (tap, input channel).
pub(crate) fn conv_grad_kernel(c: &mut Code, g: &ConvGeom, bias_grad: bool) {
    let [h, w] = g.in_hw;
    let [oh, ow] = g.out_hw;
    let [kh, kw] = g.kernel_hw;
    let (n, cc, f) = (g.n, g.c, g.f);
    c.line("dw.fill(0.0);");
    if bias_grad {
        c.line(format!("let mut sb = [0f64; {f}]; // Σdy per channel"));
    }
    c.line(format!("// Σ over the [{n}, {oh}, {ow}] output pixels"));
    c.open(format!("for n in 0..{n}"));
    c.open(format!("for oh in 0..{oh}"));
    c.open(format!("for ow in 0..{ow}"));
    c.line(format!("let ds = &dy[((n * {oh} + oh) * {ow} + ow) * {f}..][..{f}];"));
    if bias_grad {
        c.line("for (s, &d) in sb.iter_mut().zip(ds) { *s += d as f64; }");
    }
    c.open(format!("for kh in 0..{kh}"));
    tap_coord(c, "ih", "oh", "kh", g.strides[0], g.pad.top, h, oh, kh);
    c.open(format!("for kw in 0..{kw}"));
    tap_coord(c, "iw", "ow", "kw", g.strides[1], g.pad.left, w, ow, kw);
    c.line(format!("let xs = &x[((n * {h} + ih) * {w} + iw) * {cc}..][..{cc}];"));
    c.line(format!("let dws = &mut dw[(kh * {kw} + kw) * {}..][..{}];", cc * f, cc * f));
    c.open(format!("for (&xv, dwr) in xs.iter().zip(dws.chunks_exact_mut({f}))"));
    c.line("axpy(dwr, xv, ds);");
    c.close();
    for _ in 0..5 {
        c.close();
    }
    if bias_grad {
        c.line("for (o, &s) in db.iter_mut().zip(&sb) { *o = s as f32; }");
    }
}

/// The GEMM: `(a, b, [bias], [res]) -> (c, [moments], [db])`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    c: &mut Code,
    (m, n, k): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    e: &Epilogue,
    bias_grad: bool,
    s: &Schedule,
) -> Result<(), String> {
    if e.max_pool.is_some() {
        return Err("max-pool in a GEMM epilogue".into());
    }
    let softmax = e.act == Activation::Softmax;
    let nb = block_width(n, s);
    // The column panel: honoured when it splits the row into whole blocks.
    let nc = match s.tiling {
        Tiling::Gemm(t) if !softmax && t.nc < n && t.nc.is_multiple_of(nb) => t.nc,
        _ => n,
    };
    let full = n.is_multiple_of(nb) && nc.is_multiple_of(nb);
    if e.bn_stats {
        declare_stats(c, n);
    }
    let a_at = |i: &str, p: &str| {
        if trans_a {
            format!("a[{} + {i}]", mul(p, m))
        } else {
            format!("a[{} + {p}]", mul(i, k))
        }
    };
    c.line(format!(
        "// C [{m}, {n}] = {}·{}, {nb} columns at a time{}",
        if trans_a { "Aᵀ" } else { "A" },
        if trans_b { "Bᵀ" } else { "B" },
        if nc < n {
            format!(" in panels of {nc}")
        } else {
            String::new()
        }
    ));
    let panel = nc < n;
    let end = if panel { "jend".to_string() } else { n.to_string() };
    if panel {
        c.open(format!("for jc in (0..{n}).step_by({nc})"));
        c.line(format!("let jend = (jc + {nc}).min({n});"));
    }
    c.open(format!("for i in 0..{m}"));
    c.line(format!("let row = {};", mul("i", n)));
    if trans_b && !trans_a {
        c.line(format!("let ar = &a[{}..][..{k}];", mul("i", k)));
    }
    open_j0(c, if panel { "jc" } else { "0" }, &end, nb, !panel && nb == n);
    open_block(c, "acc", nb, n, &end, full);
    match (trans_a, trans_b) {
        (_, false) => {
            c.open(format!("for p in 0..{k}"));
            c.line(format!("axpy(acc, {}, &b[{} + j0..][..{}]);", a_at("i", "p"), mul("p", n), width(nb, full)));
            c.close();
        }
        (false, true) => {
            c.open("for (jj, v) in acc.iter_mut().enumerate()");
            c.line(format!("*v = dot(ar, &b[(j0 + jj) * {k}..][..{k}]);"));
            c.close();
        }
        (true, true) => {
            c.open("for (jj, v) in acc.iter_mut().enumerate()");
            c.line(format!("let br = &b[(j0 + jj) * {k}..][..{k}];"));
            c.line("let mut t = 0f32;");
            c.line(format!("for (p, &bv) in br.iter().enumerate() {{ t += {} * bv; }}", a_at("i", "p")));
            c.line("*v = t;");
            c.close();
        }
    }
    let before_softmax = Epilogue {
        act: if softmax { Activation::Linear } else { e.act },
        ..*e
    };
    epilogue(c, &before_softmax, e.bn_stats && !softmax);
    c.line("c[row + j0..][..wd].copy_from_slice(acc);");
    c.close();
    if softmax {
        c.line(format!("let cr = &mut c[row..][..{n}];"));
        c.line(format!("let mut t = [0f32; {n}];"));
        c.line("t.copy_from_slice(cr);");
        c.line("softmax_row(&t, cr);");
        if e.bn_stats {
            stats_block(c, "cr", "0");
        }
    }
    c.close();
    if panel {
        c.close();
    }
    if e.bn_stats {
        finish_stats(c, n, m);
    }
    if bias_grad {
        c.line(format!("// bias gradient: Σ of B over {k} rows"));
        c.line(format!("let mut sb = [0f64; {n}];"));
        if trans_b {
            c.open(format!("for (t, br) in sb.iter_mut().zip(b.chunks_exact({k}))"));
            c.line("*t = br.iter().map(|&v| v as f64).sum();");
        } else {
            c.open(format!("for br in b.chunks_exact({n})"));
            c.line("for (t, &v) in sb.iter_mut().zip(br) { *t += v as f64; }");
        }
        c.close();
        c.line("for (o, &t) in db.iter_mut().zip(&sb) { *o = t as f32; }");
    }
    Ok(())
}
