//! What every kernel fusion pass shares: [`rewrite_each`] offers each kernel to a pass's
//! `try_at` as a possible anchor of its pattern, and [`Fuser::fuse`] replaces a group of
//! kernels by one fused kernel.
//!
//! Cost: a pass is linear in the number of kernels (times the few readers of a buffer), which
//! matters for deep models (a 10,000-layer chain lowers to ~60,000 kernels in training). The
//! use/def index ([`Uses`]) is built once per pass and updated by each rewrite, never rebuilt,
//! and a fused-away kernel leaves an empty slot until the pass ends instead of shifting every
//! later kernel. So `try_at` gets *slots*: indices that stay valid for the whole pass and are
//! ordered like the kernels; patterns find their partners through the index
//! ([`Uses::sole_reader`], [`Fuser::first_reader`], ...), never by scanning all kernels.

use crate::kernel_ir::{BufId, Buffer, Kernel, KernelOp, Program, Uses};

/// A program under rewriting by one pass: its kernels by slot (`None` once fused away) and the
/// use/def index over those slots.
pub(super) struct Fuser<'a> {
    /// The program being rewritten; its kernels are in `slots` until the pass ends.
    p: &'a mut Program,
    slots: Vec<Option<Kernel>>,
    uses: Uses,
    /// Slots emptied by the current `try_at` call (see [`rewrite_each`]).
    emptied: Vec<usize>,
}

impl<'a> Fuser<'a> {
    fn new(p: &'a mut Program) -> Self {
        let uses = p.uses();
        let slots = std::mem::take(&mut p.kernels).into_iter().map(Some).collect();
        Fuser {
            p,
            slots,
            uses,
            emptied: Vec::new(),
        }
    }

    /// The kernel at slot `i`, which must hold one (every index from `rewrite_each` or the use
    /// index does).
    pub(super) fn kernel(&self, i: usize) -> &Kernel {
        self.slots[i].as_ref().expect("a fused-away kernel slot was used")
    }

    /// Readers and writers of every buffer, by slot.
    pub(super) fn uses(&self) -> &Uses {
        &self.uses
    }

    /// The first kernel (in program order) reading `b` (or a view of its base) for which
    /// `pred` holds.
    pub(super) fn first_reader(&self, b: BufId, pred: impl Fn(&Kernel) -> bool) -> Option<usize> {
        self.uses.readers[self.p.base(b).index()]
            .iter()
            .copied()
            .find(|&r| pred(self.kernel(r)))
    }

    pub(super) fn buffer(&self, b: BufId) -> &Buffer {
        self.p.buffer(b)
    }

    /// The buffer owning `b`'s memory (see [`Program::base`]).
    pub(super) fn base(&self, b: BufId) -> BufId {
        self.p.base(b)
    }

    pub(super) fn add_buffer(&mut self, b: Buffer) -> BufId {
        let id = self.p.add_buffer(b);
        self.grow_index();
        id
    }

    /// Replaces the kernels at `group` by one computing `op`, placed at the group's first slot
    /// with the earliest stage of the group and the union of their source layers. Returns
    /// false and changes nothing when some input would not yet be written at that position.
    pub(super) fn fuse(&mut self, group: &[usize], op: KernelOp, inputs: Vec<BufId>, outputs: Vec<BufId>) -> bool {
        let Some(&at) = group.iter().min() else {
            return false;
        };
        if !self.p.ready_before(&self.uses, &inputs, at) {
            return false;
        }
        let mut sorted = group.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let stage = sorted
            .iter()
            .map(|&i| self.kernel(i).stage)
            .min()
            .unwrap_or(self.kernel(at).stage);
        let mut origin: Vec<String> = Vec::new();
        for &i in &sorted {
            for l in &self.kernel(i).origin {
                if !origin.contains(l) {
                    origin.push(l.clone());
                }
            }
        }
        let k = self.p.make_kernel(op, inputs, outputs, stage, origin);
        self.grow_index();
        for &i in &sorted {
            let old = self.slots[i].take().expect("a live kernel");
            self.index(i, &old, false);
            if i != at {
                self.emptied.push(i);
            }
        }
        self.index(at, &k, true);
        self.slots[at] = Some(k);
        true
    }

    /// Adds (or removes) kernel `k` at slot `i` to (from) the use index. Each list stays sorted
    /// by slot, as [`Program::uses`] builds it.
    fn index(&mut self, i: usize, k: &Kernel, add: bool) {
        let edit = |list: &mut Vec<usize>| {
            if add {
                list.insert(list.partition_point(|&s| s < i), i);
            } else {
                let at = list.iter().position(|&s| s == i).expect("indexed use");
                list.remove(at);
            }
        };
        for &b in &k.inputs {
            edit(&mut self.uses.readers[self.p.base(b).index()]);
        }
        for &b in k.outputs.iter().chain(&k.scratch) {
            edit(&mut self.uses.writers[self.p.base(b).index()]);
        }
    }

    /// Extends the use index to buffers added since (none is a program output).
    fn grow_index(&mut self) {
        let n = self.p.buffers.len();
        self.uses.readers.resize_with(n, Vec::new);
        self.uses.writers.resize_with(n, Vec::new);
        self.uses.is_output.resize(n, false);
    }

    /// The first slot at or after `i` holding a kernel, after skipping `skip` such slots.
    fn live_from(&self, mut i: usize, mut skip: usize) -> usize {
        loop {
            while i < self.slots.len() && self.slots[i].is_none() {
                i += 1;
            }
            if skip == 0 || i >= self.slots.len() {
                return i;
            }
            skip -= 1;
            i += 1;
        }
    }
}

/// Calls `try_at(f, i)` for every kernel slot `i` in order, retrying the same position after
/// a rewrite (a fused kernel may fuse again); returns the number of rewrites.
///
/// "The same position" is the kernel's index in the compacted program: after a rewrite, the
/// position is retried on the kernel that now has that many kernels before it, as if fused
/// kernels had been removed from a vector at once. This keeps every pass's choices (and so its
/// output) the same as rewriting a plain kernel vector.
pub(super) fn rewrite_each(p: &mut Program, mut try_at: impl FnMut(&mut Fuser, usize) -> bool) -> usize {
    let mut f = Fuser::new(p);
    let (mut i, mut rewrites) = (f.live_from(0, 0), 0);
    while i < f.slots.len() {
        f.emptied.clear();
        if try_at(&mut f, i) {
            rewrites += 1;
            // Kernels removed before `i` (other than the one the fused kernel replaced) moved
            // later kernels up: that many more live slots are skipped.
            let shift = f.emptied.iter().filter(|&&s| s < i).count();
            i = f.live_from(i, shift);
        } else {
            i = f.live_from(i + 1, 0);
        }
    }
    let Fuser { p, slots, .. } = f;
    p.kernels = slots.into_iter().flatten().collect();
    rewrites
}
