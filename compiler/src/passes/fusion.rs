//! What every kernel fusion pass shares: scanning kernels for a pattern's anchor and replacing
//! a group of kernels by one fused kernel.

use crate::kernel_ir::{BufId, KernelOp, Program};

/// Replaces the kernels at `group` by one computing `op`, placed at the group's first position
/// with the earliest stage of the group and the union of their source layers. Returns false and
/// changes nothing when some input would not yet be written at that position.
pub(super) fn fuse(p: &mut Program, group: &[usize], op: KernelOp, inputs: Vec<BufId>, outputs: Vec<BufId>) -> bool {
    let Some(&at) = group.iter().min() else {
        return false;
    };
    let uses = p.uses();
    if !p.ready_before(&uses, &inputs, at) {
        return false;
    }
    let mut sorted = group.to_vec();
    sorted.sort_unstable();
    let stage = sorted
        .iter()
        .map(|&i| p.kernels[i].stage)
        .min()
        .unwrap_or(p.kernels[at].stage);
    let mut origin: Vec<String> = Vec::new();
    for &i in &sorted {
        for l in &p.kernels[i].origin {
            if !origin.contains(l) {
                origin.push(l.clone());
            }
        }
    }
    let k = p.make_kernel(op, inputs, outputs, stage, origin);
    p.replace_group(group, k);
    true
}

/// Calls `try_at(p, i)` for every kernel index `i`, retrying the same index after a rewrite
/// (a fused kernel may fuse again); returns the number of rewrites.
pub(super) fn rewrite_each(p: &mut Program, mut try_at: impl FnMut(&mut Program, usize) -> bool) -> usize {
    let (mut i, mut rewrites) = (0, 0);
    while i < p.kernels.len() {
        if try_at(p, i) {
            rewrites += 1;
        } else {
            i += 1;
        }
    }
    rewrites
}
