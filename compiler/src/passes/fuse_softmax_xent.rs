//! Training: softmax and cross-entropy on logits in one row-wise kernel. The `loss` and
//! `loss_grad` kernels of a from-logits cross-entropy read the same logits and target, and the
//! prediction's `softmax` (when the model ends in one) reads the same logits: one pass per row
//! computes the max, the exponentials and their sum once, and writes the loss, d logits
//! (`(softmax − onehot)/N`) and the probabilities.

use crate::ir::LossKind;
use crate::kernel_ir::{KernelOp, Program};

use super::fusion::{fuse, rewrite_each};

fn try_at(p: &mut Program, a: usize) -> bool {
    let KernelOp::Loss {
        kind,
        from_logits: true,
        rows,
        cols,
    } = p.kernels[a].op
    else {
        return false;
    };
    if kind == LossKind::MeanSquaredError {
        return false;
    }
    let ins = p.kernels[a].inputs.clone();
    let Some(b) = p.kernels.iter().position(|k| {
        k.inputs == ins && matches!(k.op, KernelOp::LossGrad { kind: k2, from_logits: true, .. } if k2 == kind)
    }) else {
        return false;
    };
    let s = p.kernels.iter().position(|k| {
        k.inputs == ins[..1] && matches!(k.op, KernelOp::Softmax { rows: r, cols: c } if r == rows && c == cols)
    });
    let mut group = vec![a, b];
    let mut outputs = vec![p.kernels[a].outputs[0], p.kernels[b].outputs[0]];
    if let Some(s) = s {
        group.push(s);
        outputs.push(p.kernels[s].outputs[0]);
    }
    let op = KernelOp::SoftmaxXent {
        rows,
        classes: cols,
        sparse: kind == LossKind::SparseCategoricalCrossentropy,
        probs: s.is_some(),
    };
    fuse(p, &group, op, ins, outputs)
}

/// Fuses softmax + cross-entropy + its gradient; returns the number of fusions.
pub fn run(p: &mut Program) -> usize {
    rewrite_each(p, try_at)
}
