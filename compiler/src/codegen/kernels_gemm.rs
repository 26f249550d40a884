//! The GEMM template, and the pieces every GEMM-shaped template (`kernels_conv`) shares:
//! accumulator blocks, tap coordinates, the epilogue and BN statistics.
//!
//! Loop order: blocks of output rows (GEMM rows, convolution pixels) outside, then blocks of
//! `nb` output channels (the schedule's register tile width `nr`) held in vector registers
//! (`kernels_lanes`; a convolution whose block is not whole vectors falls back to local arrays
//! and an `axpy` over the block's channels), then the reduction. A block of `mr` rows shares
//! each load of B (of the kernel). The GEMM's blocks are always vectors: B is copied with its
//! rows padded to whole vectors when `n` is not a multiple of 16, and a transposed B is
//! transposed into the same scratch. It also honours the schedule's column panel `nc` (a
//! panel of B stays in cache across rows). The epilogue runs on the whole block: the
//! activation over all its rows at once, then each row's statistics and store.

use crate::ir::Activation;
use crate::kernel_ir::{Epilogue, GemmTiles, Schedule, Tiling};

use super::kernels::act_fn;
use super::kernels_conv::blocks_of;
use super::kernels_lanes::{self, lane_rows, LANES};
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
pub(crate) fn width(nb: usize, full: bool) -> String {
    if full {
        nb.to_string()
    } else {
        "wd".into()
    }
}

/// Binds `wd`, the live width of the block starting at `j0` (of a row of `n` channels ending
/// at `end`).
pub(crate) fn block_width_line(c: &mut Code, nb: usize, n: usize, end: &str, full: bool) {
    if full || nb >= n {
        c.line(format!("let wd = {};", nb.min(n)));
    } else {
        c.line(format!("let wd = ({end} - j0).min({nb});"));
    }
}

/// Binds `wd` ([`block_width_line`]) and `name`, a zeroed accumulator of that width.
pub(crate) fn open_block(c: &mut Code, name: &str, nb: usize, n: usize, end: &str, full: bool) {
    block_width_line(c, nb, n, end, full);
    c.line(format!("let mut {name} = [0f32; {nb}];"));
    c.line(format!("let {name} = &mut {name}[..wd];"));
}

/// `for j0 in (FROM..TO).step_by(NB) {` or, with one block, `{ let j0 = FROM;`.
pub(crate) fn open_j0(c: &mut Code, from: &str, to: &str, nb: usize, single: bool) {
    if single {
        c.open("");
        c.line(format!("let j0 = {from};"));
    } else {
        c.open(format!("for j0 in ({from}..{to}).step_by({nb})"));
    }
}

/// Lines binding input coordinate `i` read by output coordinate `o` at tap `t`; `continue`
/// when the tap falls in the padding.
#[allow(clippy::too_many_arguments)]
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
        if (out_size.max(1) - 1) * stride + taps.max(1) > in_size {
            c.line(format!("if {i} >= {in_size} {{ continue; }}"));
        }
    } else {
        c.line(format!("let {i} = usize::wrapping_sub({expr}, {pad_before});"));
        c.line(format!("if {i} >= {in_size} {{ continue; }}"));
    }
}

/// Lines binding output coordinate `o` whose tap `t` reads input coordinate `i` (the inverse
/// of [`tap_coord`]); `continue` when there is none.
pub(crate) fn out_coord(c: &mut Code, o: &str, i: &str, t: &str, stride: usize, pad_before: usize, out_size: usize) {
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
pub(crate) fn epilogue(c: &mut Code, e: &Epilogue, stats: bool) {
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

/// Ends the vector block `va` of `mr` rows × `nv` vectors, leaving it in `acc` with the
/// epilogue up to the activation applied: on the registers before the store when all its
/// columns are live (`all_live`) and the activation allows, else by [`vector_block_epilogue`]
/// on the stored array (`live`, as there).
pub(crate) fn store_block(
    c: &mut Code,
    e: &Epilogue,
    (mr, nv): (usize, usize),
    row: &str,
    all_live: bool,
    live: Option<(usize, usize)>,
) {
    if kernels_lanes::epilogue_in_registers(e, all_live) {
        kernels_lanes::register_epilogue(c, e, mr, nv, row);
        kernels_lanes::store(c, mr, nv);
    } else {
        kernels_lanes::store(c, mr, nv);
        vector_block_epilogue(c, e, row, live);
    }
}

/// [`epilogue`] up to the activation on a whole vector block `acc: [[f32; nb]; mr]` whose
/// rows have `wd` live columns, before its rows are visited: bias and residual on each row's
/// live columns (block row `m` at output offset `row`, an expression of `m`), then the
/// activation on every column of the block at once. The block's rows are independent
/// whole-vector chains: one row at a time, a sigmoid's long `exp` would wait on its own
/// latency. Dead columns are never stored. Each row then takes [`row_stats`]. When the `mr`
/// rows of the block have the same `w` live columns, fewer than its width (`live = (w, mr)`:
/// LeNet's 6 channels in a 16-lane block), a sigmoid or tanh runs on those gathered side by
/// side instead: on 6 of 16 lanes otherwise.
pub(crate) fn vector_block_epilogue(c: &mut Code, e: &Epilogue, row: &str, live: Option<(usize, usize)>) {
    if e.bias || e.residual {
        if e.residual {
            c.open("for (m, acc) in acc.iter_mut().enumerate()");
        } else {
            c.open("for acc in acc.iter_mut()");
        }
        if e.bias {
            c.line("for (v, &b) in acc[..wd].iter_mut().zip(&bias[j0..][..wd]) { *v += b; }");
        }
        if e.residual {
            c.line(format!("let row = {row};"));
            c.line("for (v, &r) in acc[..wd].iter_mut().zip(&res[row + j0..][..wd]) { *v += r; }");
        }
        c.close();
    }
    let gather = live.filter(|_| matches!(e.act, Activation::Sigmoid | Activation::Tanh));
    match (act_fn(e.act), gather) {
        (None, _) => {}
        (Some(f), None) => c.line(format!("for v in acc.as_flattened_mut() {{ *v = {f}(*v); }}")),
        (Some(f), Some((w, mr))) => {
            c.line(format!("let mut live = [0f32; {}];", w * mr));
            c.line(format!(
                "for (l, a) in live.chunks_exact_mut({w}).zip(acc.iter()) {{ l.copy_from_slice(&a[..{w}]); }}"
            ));
            c.line(format!("for v in live.iter_mut() {{ *v = {f}(*v); }}"));
            c.line(format!(
                "for (l, a) in live.chunks_exact({w}).zip(acc.iter_mut()) {{ a[..{w}].copy_from_slice(l); }}"
            ));
        }
    }
}

/// The rest of [`vector_block_epilogue`] on one block row `acc`: rebound to its live columns,
/// their statistics.
pub(crate) fn row_stats(c: &mut Code, stats: bool) {
    c.line("let acc = &mut acc[..wd];");
    if stats {
        stats_block(c, "acc", "j0");
    }
}

/// Accumulates Σv and Σv² (f64) of the values of `block` (columns from `j0`) into `s1`, `s2`.
pub(crate) fn stats_block(c: &mut Code, block: &str, j0: &str) {
    c.open(format!("for (j, &v) in {block}.iter().enumerate()"));
    c.line("let v = v as f64;");
    c.line(format!("s1[{j0} + j] += v;"));
    c.line(format!("s2[{j0} + j] += v * v;"));
    c.close();
}

pub(crate) fn declare_stats(c: &mut Code, n: usize) {
    c.line(format!("let mut s1 = [0f64; {n}]; // Σy per channel"));
    c.line(format!("let mut s2 = [0f64; {n}]; // Σy² per channel"));
}

/// `moments = [mean; biased variance]` from the sums over `rows` rows.
pub(crate) fn finish_stats(c: &mut Code, n: usize, rows: usize) {
    c.open(format!("for j in 0..{n}"));
    c.line(format!("let mean = s1[j] / {rows}.0;"));
    c.line("moments[j] = mean as f32;");
    c.line(format!(
        "moments[{n} + j] = (s2[j] / {rows}.0 - mean * mean).max(0.0) as f32;"
    ));
    c.close();
}

/// Pixels per block of a convolution's scalar (`axpy`) path: the schedule's `mr`, at most 4 so
/// that the block's accumulators fit the registers of any x86-64 target the crate may be built
/// for.
pub(crate) fn row_block(s: &Schedule) -> usize {
    match s.tiling {
        Tiling::Gemm(t) => t.mr.clamp(1, 4),
        Tiling::Rows { .. } => 1,
    }
}

/// The schedule's register-tile width `nr` (columns per accumulator), at most `n`.
pub(crate) fn tile_width(n: usize, s: &Schedule) -> usize {
    match s.tiling {
        Tiling::Gemm(t) => t.nr,
        Tiling::Rows { .. } => 2 * s.vector_width,
    }
    .clamp(1, n.max(1))
}

/// Columns per row of the GEMM's copy of B when its `n` columns are not whole 16-lane vectors
/// (LeNet's dense layers: 120, 84, 10): rows zero-padded to whole vectors, so that every block
/// of C is a vector block whose dead columns are never stored.
pub(crate) fn padded_columns(n: usize) -> Option<usize> {
    (!n.is_multiple_of(LANES)).then_some(n.next_multiple_of(LANES))
}

/// The GEMM's scratch operand (`kernels::scratch_of`): `bt` (B transposed, `[k, n]`) when B is
/// stored transposed, `bp` (B) when its rows are padded ([`padded_columns`]), either with rows
/// of the padded width.
pub(crate) fn gemm_scratch(n: usize, k: usize, trans_b: bool) -> Option<(&'static str, usize)> {
    let np = padded_columns(n).unwrap_or(n);
    match (trans_b, np != n) {
        (true, _) => Some(("bt", k * np)),
        (false, true) => Some(("bp", k * np)),
        (false, false) => None,
    }
}

/// The GEMM: `(a, b, [bias], [res]) -> (c, [moments], [db])`, with scratch [`gemm_scratch`].
/// Blocks of `mr` rows × `nb` columns of C are accumulated in vector registers; each step of
/// the reduction loads one `nb`-wide piece of a row of B and adds it, scaled, to every row of
/// the block.
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
    // Rows of B (its copy) hold `np` columns; blocks are the schedule's tile width when whole
    // vectors that divide the row, the whole row when the tile covers it, else one or two
    // vectors.
    let np = padded_columns(n).unwrap_or(n);
    let nr = tile_width(n, s);
    let nb = if np == n && nr.is_multiple_of(LANES) && n.is_multiple_of(nr) {
        nr
    } else if nr >= n {
        // the whole (padded) row
        np
    } else if nr >= 2 * LANES && np.is_multiple_of(2 * LANES) {
        2 * LANES
    } else {
        LANES
    };
    let mr = lane_rows(s, m);
    // The column panel: honoured when it splits the row into whole blocks.
    let nc = match s.tiling {
        Tiling::Gemm(t) if !softmax && t.nc < n && t.nc.is_multiple_of(nb) => t.nc,
        _ => n,
    };
    let full = n.is_multiple_of(nb) && nc.is_multiple_of(nb);
    if e.bn_stats {
        declare_stats(c, n);
    }
    let bm = match gemm_scratch(n, k, trans_b) {
        Some((name, _)) => name,
        None => "b",
    };
    if np != n {
        c.line(format!("{bm}.fill(0.0);"));
    }
    if trans_b {
        // 16 rows of B at a time (in L1), so that each row of `bt` is written in whole lines
        // rather than one value per line (CIFAR-10's dense input gradient: 8192 × 128).
        c.line(format!("// bt = B as [{k}, {n}], rows {np} apart"));
        c.open(format!("for j0 in (0..{n}).step_by({LANES})"));
        c.line(format!("let jn = ({n} - j0).min({LANES});"));
        c.open(format!("for p in 0..{k}"));
        c.line(format!(
            "for (jj, t) in bt[p * {np} + j0..][..jn].iter_mut().enumerate() {{ *t = b[(j0 + jj) * {k} + p]; }}"
        ));
        c.close();
        c.close();
    } else if np != n {
        c.line(format!("// bp = B [{k}, {n}], rows padded to {np} columns"));
        c.open(format!(
            "for (d, r) in bp.chunks_exact_mut({np}).zip(b.chunks_exact({n}))"
        ));
        c.line(format!("d[..{n}].copy_from_slice(r);"));
        c.close();
    }
    let a_at = |i: &str, p: &str| {
        if trans_a {
            format!("a[{} + {i}]", mul(p, m))
        } else {
            format!("a[({i}) * {k} + {p}]")
        }
    };
    // B far larger than the caches: passes over K (`k_blocked`).
    let blocked = !softmax && !e.bn_stats && full && nc == n && np == n && (k > GEMM_KC || n >= BIG_N);
    c.line(format!(
        "// C [{m}, {n}] = {}·{}{}",
        if trans_a { "Aᵀ" } else { "A" },
        if trans_b { "Bᵀ" } else { "B" },
        if blocked {
            String::new()
        } else {
            format!(
                ": blocks of {mr} rows x {nb} columns{}",
                if nc < n {
                    format!(", in column panels of {nc}")
                } else {
                    String::new()
                }
            )
        }
    ));
    let panel = nc < n;
    if panel {
        c.open(format!("for jc in (0..{n}).step_by({nc})"));
        c.line(format!("let jend = (jc + {nc}).min({n});"));
    }
    let before_softmax = Epilogue {
        act: if softmax { Activation::Linear } else { e.act },
        ..*e
    };
    if blocked {
        k_blocked(c, (m, n, k), mr, nb, bm, &a_at, &before_softmax);
    } else {
        rows_then_columns(c, (m, n, k), (mr, nb, np, full, panel), bm, &a_at, e, &before_softmax);
    }
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

/// Most of K per pass of a [`k_blocked`] GEMM: a `kc × nb` piece of B stays in L1 across the
/// row blocks, the `m × kc` piece of A in L2.
const GEMM_KC: usize = 256;
/// Columns from which a GEMM walks column blocks outermost ([`k_blocked`]).
const BIG_N: usize = 1024;

/// A GEMM whose B is far larger than a core's caches (a dense layer's 8192 × 128 weights, or
/// their transpose): passes over K in pieces of [`GEMM_KC`], each over column blocks, each
/// over every block of rows, so that B is read from memory once and A once per pass. Between
/// passes a block's partial sums wait in C; the epilogue runs after the last.
fn k_blocked(
    c: &mut Code,
    (m, n, k): (usize, usize, usize),
    mr: usize,
    nb: usize,
    bm: &str,
    a_at: &dyn Fn(&str, &str) -> String,
    e: &Epilogue,
) {
    let nv = nb / LANES;
    let passes = k.div_ceil(GEMM_KC);
    c.line(format!(
        "// {passes} pass(es) over K, each over blocks of {nb} columns, each over blocks of {mr} rows"
    ));
    c.open(format!("for p0 in (0..{k}).step_by({GEMM_KC})"));
    c.line(format!("let pend = (p0 + {GEMM_KC}).min({k});"));
    open_j0(c, "0", &n.to_string(), nb, nb >= n);
    c.line(format!("let wd = {nb};"));
    blocks_of(c, "i0", m, mr, |c, mr| {
        kernels_lanes::declare(c, mr, nv);
        c.open("if p0 > 0");
        c.line(format!(
            "for m in 0..{mr} {{ for j in 0..{nv} {{ va[m][j] = V::load(&c[(i0 + m) * {n} + j0 + {LANES} * j..]); }} }}"
        ));
        c.close();
        c.open("for p in p0..pend");
        c.line(format!("let br = &{bm}[{} + j0..][..{nb}];", mul("p", n)));
        kernels_lanes::step(c, mr, nv, &kernels_lanes::row_load("br"), &a_at("i0 + m", "p"));
        c.close();
        c.open(format!("if pend < {k}"));
        kernels_lanes::store_rows(c, "va", mr, nv, "c", &format!("(i0 + m) * {n}"));
        c.else_();
        store_block(c, e, (mr, nv), &format!("(i0 + m) * {n}"), true, None);
        c.open("for (m, acc) in acc.iter().enumerate()");
        c.line(format!("c[(i0 + m) * {n} + j0..][..wd].copy_from_slice(acc);"));
        c.close();
        c.close();
    });
    c.close();
    c.close();
}

/// The GEMM's blocks of rows outermost, then blocks of columns, each over all of K: the
/// epilogue (up to the activation on the whole block, then per row) right after.
#[allow(clippy::too_many_arguments)]
fn rows_then_columns(
    c: &mut Code,
    (m, n, k): (usize, usize, usize),
    (mr, nb, np, full, panel): (usize, usize, usize, bool, bool),
    bm: &str,
    a_at: &dyn Fn(&str, &str) -> String,
    e: &Epilogue,
    before_softmax: &Epilogue,
) {
    let softmax = e.act == Activation::Softmax;
    let nv = nb / LANES;
    let end = if panel { "jend".to_string() } else { n.to_string() };
    let after_rows = |c: &mut Code| {
        if softmax {
            c.line(format!("let cr = &mut c[row..][..{n}];"));
            c.line(format!("let mut t = [0f32; {n}];"));
            c.line("t.copy_from_slice(cr);");
            c.line("softmax_row(&t, cr);");
            if e.bn_stats {
                stats_block(c, "cr", "0");
            }
        }
    };
    let from = if panel { "jc" } else { "0" };
    // Vector blocks over every row, the last block shorter; each block's epilogue (up to
    // the activation on the whole block, then per row) and store close its `j0` loop.
    blocks_of(c, "i0", m, mr, |c, mr| {
        open_j0(c, from, &end, nb, !panel && nb >= n);
        block_width_line(c, nb, n, &end, full);
        kernels_lanes::declare(c, mr, nv);
        c.open(format!("for p in 0..{k}"));
        c.line(format!("let br = &{bm}[{} + j0..][..{nb}];", mul("p", np)));
        kernels_lanes::step(c, mr, nv, &kernels_lanes::row_load("br"), &a_at("i0 + m", "p"));
        c.close();
        store_block(c, before_softmax, (mr, nv), &format!("(i0 + m) * {n}"), full, None);
        c.open("for (m, acc) in acc.iter_mut().enumerate()");
        c.line(format!("let row = (i0 + m) * {n};"));
        row_stats(c, e.bn_stats && !softmax);
        c.line("c[row + j0..][..wd].copy_from_slice(acc);");
        c.close();
        c.close();
        if softmax {
            c.open(format!("for m in 0..{mr}"));
            c.line(format!("let row = (i0 + m) * {n};"));
            after_rows(c);
            c.close();
        }
    });
}
