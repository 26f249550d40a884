//! Register blocks in 16-lane vectors (`support::V`): the reduction loops of the GEMM-shaped
//! templates when their accumulator block is whole 16-lane vectors wide.
//!
//! A block of `mr` rows × `nv` vectors lives in `va: [[V; nv]; mr]`, loops of constant trip
//! count the compiler unrolls so that every accumulator is a register. Each reduction step
//! loads the `nv` vectors of B once and adds `splat(a_m)·b` to each row `m`: `nv` loads and
//! `mr` broadcasts per `mr·nv` multiply-adds. `mr` is the schedule's register tile height,
//! which it sized to the compiling machine's vector registers. The block is then stored to an
//! `[[f32; nb]; mr]` array, on which the scalar epilogue runs (once per block, not per step).

use super::writer::Code;
use crate::kernel_ir::{Schedule, Tiling};

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
    c.line(format!("let bv: [V; {nv}] = core::array::from_fn(|j| {load});"));
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
