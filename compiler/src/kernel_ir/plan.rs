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
//!
//! Cost: a deep training program has tens of thousands of transient buffers, thousands of them
//! live at once (every saved activation across the loss), so the address ranges in use during
//! a lifetime are not gathered buffer by buffer: [`Occupancy`], a segment tree over kernel
//! indices, keeps merged address ranges per node, and a query merges O(log kernels) of those.

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
    let mut placed = Occupancy::new(p.kernels.len());
    let mut arena = persistent_bytes;
    let mut busy = Vec::new();
    for (i, l, size) in transient {
        placed.busy(l, &mut busy);
        // Best fit: the smallest free range (the first of equal ones) between the ranges in use
        // that holds `size`, else past the last of them.
        let mut cursor = persistent_bytes;
        let mut best: Option<(usize, usize)> = None; // (gap, offset)
        for &(start, end) in &busy {
            if start >= cursor + size {
                let gap = start - cursor;
                if best.is_none_or(|(g, _)| gap < g) {
                    best = Some((gap, cursor));
                }
            }
            cursor = cursor.max(end);
        }
        let offset = best.map_or(cursor, |(_, o)| o);
        p.buffers[i].offset = Some(offset);
        placed.insert(l, (offset, offset + size));
        arena = arena.max(offset + size);
    }
    p.arena_size = arena;
    PlanStats {
        arena_bytes: arena,
        unshared_bytes,
        persistent_bytes,
    }
}

/// Whether two of `placed` (buffer, lifetime, start, end) share bytes while both live, by a
/// sweep over kernel indices keeping the live byte ranges: while they are disjoint, the only
/// ones a new range can meet are its neighbours by start.
fn any_live_overlap(placed: &[(usize, Lifetime, usize, usize)]) -> bool {
    let mut by_first: Vec<_> = placed.iter().map(|&(_, l, s, e)| (l.first, l.last, s, e)).collect();
    by_first.sort_unstable();
    let mut by_last: Vec<_> = by_first.iter().map(|&(_, last, s, _)| (last, s)).collect();
    by_last.sort_unstable();
    // Live ranges: start -> end.
    let mut live = std::collections::BTreeMap::new();
    let mut ended = by_last.into_iter().peekable();
    for (first, _, start, end) in by_first {
        while let Some(&(last, s)) = ended.peek() {
            if last >= first {
                break;
            }
            live.remove(&s);
            ended.next();
        }
        let before = live.range(..end).next_back();
        if before.is_some_and(|(_, &e)| e > start) {
            return true;
        }
        live.insert(start, end);
    }
    false
}

/// Address ranges `[start, end)` in use over time, for [`plan`]: a segment tree over kernel
/// indices whose every node keeps (as sorted, merged ranges) the buffers whose lifetime covers
/// the node's span and is split there (`cover`), and the union of everything stored in its
/// subtree (`sub`). The ranges live during a lifetime are then the `sub` of the O(log n) nodes
/// tiling it plus the `cover` of their ancestors: merged ranges, not one entry per buffer.
///
/// Placing a zero-byte buffer would depend on where individual buffers start (a zero-length gap
/// between two touching ones); transient buffers always have at least one element.
struct Occupancy {
    /// Leaves (a power of two, at least the number of kernels).
    width: usize,
    cover: Vec<Vec<(usize, usize)>>,
    sub: Vec<Vec<(usize, usize)>>,
}

impl Occupancy {
    fn new(kernels: usize) -> Self {
        let width = kernels.max(1).next_power_of_two();
        Occupancy {
            width,
            cover: vec![Vec::new(); 2 * width],
            sub: vec![Vec::new(); 2 * width],
        }
    }

    /// Marks `range` in use during `life`.
    fn insert(&mut self, life: Lifetime, range: (usize, usize)) {
        self.insert_at(1, 0, self.width - 1, life, range);
    }

    fn insert_at(&mut self, node: usize, lo: usize, hi: usize, life: Lifetime, range: (usize, usize)) {
        if life.last < lo || hi < life.first {
            return;
        }
        add_range(&mut self.sub[node], range);
        if life.first <= lo && hi <= life.last {
            add_range(&mut self.cover[node], range);
            return;
        }
        let mid = (lo + hi) / 2;
        self.insert_at(2 * node, lo, mid, life, range);
        self.insert_at(2 * node + 1, mid + 1, hi, life, range);
    }

    /// Every range in use at some point of `life`, sorted and merged, into `out`.
    fn busy(&self, life: Lifetime, out: &mut Vec<(usize, usize)>) {
        out.clear();
        self.collect(1, 0, self.width - 1, life, out);
        out.sort_unstable();
        let mut merged = 0;
        for x in 0..out.len() {
            let (start, end) = out[x];
            if merged > 0 && start <= out[merged - 1].1 {
                out[merged - 1].1 = out[merged - 1].1.max(end);
            } else {
                out[merged] = (start, end);
                merged += 1;
            }
        }
        out.truncate(merged);
    }

    fn collect(&self, node: usize, lo: usize, hi: usize, life: Lifetime, out: &mut Vec<(usize, usize)>) {
        if life.last < lo || hi < life.first {
            return;
        }
        if life.first <= lo && hi <= life.last {
            out.extend_from_slice(&self.sub[node]);
            return;
        }
        // Buffers covering this node overlap `life`, which only partly covers it.
        out.extend_from_slice(&self.cover[node]);
        let mid = (lo + hi) / 2;
        self.collect(2 * node, lo, mid, life, out);
        self.collect(2 * node + 1, mid + 1, hi, life, out);
    }
}

/// Adds `[start, end)` to sorted, disjoint, non-touching ranges, merging what it meets.
fn add_range(set: &mut Vec<(usize, usize)>, (start, end): (usize, usize)) {
    // The first range ending at or after `start` and the first starting after `end`: all
    // between meet the new one.
    let a = set.partition_point(|&(_, e)| e < start);
    let b = set.partition_point(|&(s, _)| s <= end);
    if a == b {
        set.insert(a, (start, end));
    } else {
        let merged = (start.min(set[a].0), end.max(set[b - 1].1));
        set.splice(a..b, [merged]);
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
    // The pairwise check costs O(buffers²); run it only when a sweep over time finds some
    // overlap (or a zero-byte buffer, which the sweep does not model), to list every pair.
    let zero_sized = placed.iter().any(|&(_, _, s, e)| s == e);
    if zero_sized || any_live_overlap(&placed) {
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
    }
    errs
}
