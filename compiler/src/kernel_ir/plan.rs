//! Static memory planning: every arena buffer gets a byte offset such that no two buffers
//! live at the same time overlap.
//!
//! Liveness is over the kernel order: a transient buffer lives from the first kernel touching
//! it to the last (views count as their base; program outputs live to the end so the caller
//! can read them). In training programs the forward activations read by backward kernels are
//! therefore live across the loss — nothing special is needed. Persistent buffers (constants,
//! prepared weights, optimiser state) keep values across runs: they are packed first, from
//! offset 0, and never shared. Transient buffers are then placed greedily, largest first, each
//! into the smallest gap (best fit) left by the already-placed buffers whose lifetimes overlap
//! its own. Offsets and sizes are multiples of 64 bytes.

use super::program::{Program, Storage};

/// Inclusive range of kernel indices during which a buffer holds a needed value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub first: usize,
    pub last: usize,
}

impl Lifetime {
    pub fn overlaps(&self, o: &Lifetime) -> bool {
        self.first <= o.last && o.first <= self.last
    }
}

/// Sizes of a plan, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanStats {
    /// The arena: what the plan needs.
    pub arena_bytes: usize,
    /// Every arena buffer side by side: what no planning would need.
    pub unshared_bytes: usize,
    /// Constants, prepared weights and optimiser state.
    pub persistent_bytes: usize,
}

/// The lifetime of every buffer that owns arena memory (`None` for bound buffers, views and
/// buffers no kernel touches). Persistent buffers live over the whole program.
pub fn lifetimes(p: &Program) -> Vec<Option<Lifetime>> {
    let uses = p.uses();
    let end = p.kernels.len().saturating_sub(1);
    p.ids()
        .map(|b| {
            let i = b.index();
            match p.buffer(b).kind.storage() {
                Storage::Persistent => Some(Lifetime { first: 0, last: end }),
                Storage::Transient => {
                    let touched = uses.readers[i].iter().chain(&uses.writers[i]);
                    let first = touched.clone().min()?;
                    let last = if uses.is_output[i] { end } else { *touched.max()? };
                    Some(Lifetime { first: *first, last })
                }
                Storage::Bound | Storage::Alias => None,
            }
        })
        .collect()
}

/// Assigns arena offsets to every buffer with a lifetime and sets `p.arena_size`.
pub fn plan(p: &mut Program) -> PlanStats {
    let life = lifetimes(p);
    for b in &mut p.buffers {
        b.offset = None;
    }
    let mut persistent_bytes = 0;
    let mut unshared_bytes = 0;
    let mut transient = Vec::new();
    for (i, l) in life.iter().enumerate() {
        let Some(l) = l else { continue };
        let size = p.buffers[i].arena_bytes();
        unshared_bytes += size;
        if p.buffers[i].kind.storage() == Storage::Persistent {
            p.buffers[i].offset = Some(persistent_bytes);
            persistent_bytes += size;
        } else {
            transient.push((i, *l, size));
        }
    }
    transient.sort_by_key(|&(i, l, size)| (std::cmp::Reverse(size), l.first, i));
    // (lifetime, offset, size) of placed transient buffers.
    let mut placed: Vec<(Lifetime, usize, usize)> = Vec::new();
    let mut arena = persistent_bytes;
    for (i, l, size) in transient {
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|(pl, _, _)| pl.overlaps(&l))
            .map(|&(_, off, sz)| (off, sz))
            .collect();
        busy.sort_unstable();
        let mut cursor = persistent_bytes;
        let mut best: Option<(usize, usize)> = None; // (gap, offset)
        for (off, sz) in busy {
            if off >= cursor + size {
                let gap = off - cursor;
                if best.is_none_or(|(g, _)| gap < g) {
                    best = Some((gap, cursor));
                }
            }
            cursor = cursor.max(off + sz);
        }
        let offset = best.map_or(cursor, |(_, o)| o);
        p.buffers[i].offset = Some(offset);
        placed.push((l, offset, size));
        arena = arena.max(offset + size);
    }
    p.arena_size = arena;
    PlanStats {
        arena_bytes: arena,
        unshared_bytes,
        persistent_bytes,
    }
}

/// The sizes of an already planned program.
pub fn stats(p: &Program) -> PlanStats {
    let life = lifetimes(p);
    let (mut unshared_bytes, mut persistent_bytes) = (0, 0);
    for (b, l) in p.buffers.iter().zip(&life) {
        if l.is_some() {
            unshared_bytes += b.arena_bytes();
            if b.kind.storage() == Storage::Persistent {
                persistent_bytes += b.arena_bytes();
            }
        }
    }
    PlanStats {
        arena_bytes: p.arena_size,
        unshared_bytes,
        persistent_bytes,
    }
}

/// Every violation of the plan: unplaced or misaligned buffers, buffers past the arena's end,
/// and every pair of simultaneously live buffers whose bytes overlap (all pairs are checked).
pub fn check(p: &Program) -> Vec<String> {
    let life = lifetimes(p);
    let mut errs = Vec::new();
    let mut placed = Vec::new();
    for (i, l) in life.iter().enumerate() {
        let Some(l) = l else { continue };
        let b = &p.buffers[i];
        let Some(off) = b.offset else {
            errs.push(format!("b{i} ({}) is live but has no arena offset", b.name));
            continue;
        };
        if !off.is_multiple_of(super::schedule::ALIGN) {
            errs.push(format!("b{i} at offset {off} is not 64-byte aligned"));
        }
        if off + b.bytes() > p.arena_size {
            errs.push(format!(
                "b{i} [{off}, {}) ends past the arena ({} bytes)",
                off + b.bytes(),
                p.arena_size
            ));
        }
        placed.push((i, *l, off, off + b.bytes()));
    }
    for (x, &(i, li, si, ei)) in placed.iter().enumerate() {
        for &(j, lj, sj, ej) in &placed[x + 1..] {
            if li.overlaps(&lj) && si < ej && sj < ei {
                errs.push(format!(
                    "b{i} [{si}, {ei}) and b{j} [{sj}, {ej}) overlap while both live (kernels {}..={} and {}..={})",
                    li.first, li.last, lj.first, lj.last
                ));
            }
        }
    }
    errs
}
