//! Register blocks in 16-lane vectors (`support::V`): the reduction loops of the GEMM-shaped
//! templates when their accumulator block is whole 16-lane vectors wide.
//!
//! A block of `mr` rows × `nv` vectors lives in `va: [[V; nv]; mr]`, loops of constant trip
//! count the compiler unrolls so that every accumulator is a register. Each reduction step
//! loads the `nv` vectors of B once and adds `splat(a_m)·b` to each row `m`: `nv` loads and
//! `mr` broadcasts per `mr·nv` multiply-adds. `mr` is the schedule's register tile height,
//! which it sized to the compiling machine's vector registers. When every column of the block
//! is live, the epilogue up to a ReLU (and a fused max-pool) runs on those registers; otherwise
//! the block is stored to an `[[f32; nb]; mr]` array, on which the scalar epilogue runs (once
//! per block, not per step).

use super::writer::Code;
use crate::ir::Activation;
use crate::kernel_ir::{Epilogue, Schedule, Tiling};

/// f32 lanes of `support::V`.
pub(crate) const LANES: usize = 16;

/// Vectors per block row when a block of `nb` columns, all of them live (`full`), is whole
/// vectors wide; `None`: the block goes through the scalar `axpy` path.
pub(crate) fn lane_vectors(nb: usize, full: bool) -> Option<usize> {
    (full && nb.is_multiple_of(LANES)).then_some(nb / LANES)
}

/// Most rows of a vector block.
pub(crate) const MAX_ROWS: usize = 14;

/// The schedule's register tile height `mr` (at most [`MAX_ROWS`]): rows of a vector block.
fn lane_mr(s: &Schedule) -> usize {
    match s.tiling {
        Tiling::Gemm(t) => t.mr.clamp(1, MAX_ROWS),
        Tiling::Rows { .. } => 1,
    }
}

/// Rows per vector block for `avail` rows: [`lane_mr`], lowered to cut `avail` into
/// near-equal blocks (26 rows with `mr` 14: two of 13; 32 rows: 11, 11 and a last block of 10).
pub(crate) fn lane_rows(s: &Schedule, avail: usize) -> usize {
    if avail == 0 {
        return 1;
    }
    avail.div_ceil(avail.div_ceil(lane_mr(s)))
}

/// `let mut va = [[V::zero(); nv]; mr];`
pub(crate) fn declare(c: &mut Code, mr: usize, nv: usize) {
    c.line(format!("let mut va = [[V::zero(); {nv}]; {mr}];"));
}

/// One reduction step: `nv` vectors of B (`load` is the expression loading vector `j`), times
/// `a` (an expression of the block row `m`), added to every row of the block.
pub(crate) fn step(c: &mut Code, mr: usize, nv: usize, load: &str, a: &str) {
    c.line(format!("let bv: [V; {nv}] = array_with(|j| {load});"));
    c.open(format!("for m in 0..{mr}"));
    c.line(format!("let a = V::splat({a});"));
    c.line(format!("for j in 0..{nv} {{ va[m][j] = va[m][j].fma(a, bv[j]); }}"));
    c.close();
}

/// `V::load` of vector `j` of a row of B starting at slice `row` (vectors side by side).
pub(crate) fn row_load(row: &str) -> String {
    format!("V::load(&{row}[{LANES} * j..])")
}

/// One reduction step of a block whose B row starts at slice `row`: in vectors
/// (`lanes = Some(nv)`, accumulators `va`) or, scalar, an `axpy` of width `wdt` into each row
/// of `acc`.
pub(crate) fn accumulate(c: &mut Code, mr: usize, lanes: Option<usize>, row: &str, wdt: &str, a: &str) {
    match lanes {
        Some(nv) => step(c, mr, nv, &row_load(row), a),
        None => {
            c.line(format!("let br = &{row}[..{wdt}];"));
            c.open(format!("for m in 0..{mr}"));
            c.line(format!("axpy(&mut acc[m][..{wdt}], {a}, br);"));
            c.close();
        }
    }
}

/// Columns per vector block of a conv whose weights are packed in 16-lane panels (`f` a
/// multiple of [`LANES`]): two vectors when `f` and the schedule's tile allow, else one.
pub(crate) fn panel_block(f: usize, nr: usize) -> usize {
    if f.is_multiple_of(2 * LANES) && nr >= 2 * LANES {
        2 * LANES
    } else {
        LANES
    }
}

/// Stores the block into `let mut acc = [[0f32; nb]; mr]`.
pub(crate) fn store(c: &mut Code, mr: usize, nv: usize) {
    let nb = nv * LANES;
    c.line(format!("let mut acc = [[0f32; {nb}]; {mr}];"));
    c.line(format!(
        "for m in 0..{mr} {{ for j in 0..{nv} {{ va[m][j].store(&mut acc[m][{LANES} * j..]); }} }}"
    ));
}

/// Whether the epilogue of a vector block whose columns are all live (`live`) runs on its
/// accumulators ([`register_epilogue`]): bias, residual and ReLU are vector adds and a max.
/// (Left to the array, LLVM vectorised the bias add across the block's rows, with gathers.)
pub(crate) fn epilogue_in_registers(e: &Epilogue, live: bool) -> bool {
    live && matches!(e.act, Activation::Linear | Activation::Relu)
}

/// The epilogue up to the activation on the accumulators `va` of a block of `mr` rows × `nv`
/// vectors from column `j0`, every lane live; `row` is the output offset of block row `m`
/// (without `j0`), which the residual reads at. The same operations in the same order as
/// the scalar epilogue, so the same values.
pub(crate) fn register_epilogue(c: &mut Code, e: &Epilogue, mr: usize, nv: usize, row: &str) {
    if e.bias {
        c.open(format!("for j in 0..{nv}"));
        c.line(format!("let b = V::load(&bias[j0 + {LANES} * j..]);"));
        c.line(format!("for m in 0..{mr} {{ va[m][j] = va[m][j] + b; }}"));
        c.close();
    }
    if e.residual {
        c.open(format!("for m in 0..{mr}"));
        c.line(format!("let row = {row};"));
        c.line(format!(
            "for j in 0..{nv} {{ va[m][j] = va[m][j] + V::load(&res[row + j0 + {LANES} * j..]); }}"
        ));
        c.close();
    }
    if e.act == Activation::Relu {
        c.line(format!(
            "for m in 0..{mr} {{ for j in 0..{nv} {{ va[m][j] = va[m][j].max(V::zero()); }} }}"
        ));
    }
}

/// `best` (and `arg`), the running maximum of a pool window's pixels in registers: `[[V; nv];
/// mr]` declared zero.
pub(crate) fn declare_max(c: &mut Code, mr: usize, nv: usize, argmax: bool) {
    c.line(format!("let mut best = [[V::zero(); {nv}]; {mr}];"));
    if argmax {
        c.line(format!("let mut arg = [[V::zero(); {nv}]; {mr}];"));
    }
}

/// Folds the block `va` of window pixel `t` into `best` (and its index into `arg`): the
/// first pixel's values, then `if v > best { v } else { best }` per lane, so a later equal
/// value does not take over (as `max_into` in the scalar epilogue).
pub(crate) fn max_into(c: &mut Code, mr: usize, nv: usize, argmax: bool) {
    c.open("if t == 0");
    c.line("best = va;");
    c.else_();
    if argmax {
        c.line("let tv = V::splat(t as f32);");
    }
    c.open(format!("for m in 0..{mr}"));
    c.open(format!("for j in 0..{nv}"));
    if argmax {
        c.line("arg[m][j] = va[m][j].select_gt(best[m][j], tv, arg[m][j]);");
    }
    c.line("best[m][j] = va[m][j].max(best[m][j]);");
    c.close();
    c.close();
    c.close();
}

/// Stores block `name` (`[[V; nv]; mr]`) to `dst` at `row + j0` for block row `m` (`row` an
/// expression of `m`).
pub(crate) fn store_rows(c: &mut Code, name: &str, mr: usize, nv: usize, dst: &str, row: &str) {
    c.open(format!("for m in 0..{mr}"));
    c.line(format!("let row = {row};"));
    c.line(format!(
        "for j in 0..{nv} {{ {name}[m][j].store(&mut {dst}[row + j0 + {LANES} * j..]); }}"
    ));
    c.close();
}
