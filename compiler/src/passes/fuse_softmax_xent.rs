//! Training: softmax and cross-entropy on logits in one row-wise kernel. The `loss` and
//! `loss_grad` kernels of a from-logits cross-entropy read the same logits and target, and the
//! prediction's `softmax` (when the model ends in one) reads the same logits: one pass per row
//! computes the max, the exponentials and their sum once, and writes the loss, d logits
//! (`(softmax − onehot)/N`) and the probabilities.

use crate::ir::LossKind;
use crate::kernel_ir::{KernelOp, Program};

use super::fusion::{rewrite_each, Fuser};

fn try_at(p: &mut Fuser, a: usize) -> bool {
    let KernelOp::Loss {
        kind,
        from_logits: true,
        rows,
        cols,
    } = p.kernel(a).op
    else {
        return false;
    };
    if kind == LossKind::MeanSquaredError {
        return false;
    }
    let ins = p.kernel(a).inputs.clone();
    let Some(&logits) = ins.first() else {
        return false;
    };
    let Some(b) = p.first_reader(logits, |k| {
        k.inputs == ins && matches!(k.op, KernelOp::LossGrad { kind: k2, from_logits: true, .. } if k2 == kind)
    }) else {
        return false;
    };
    let s = p.first_reader(logits, |k| {
        k.inputs == ins[..1] && matches!(k.op, KernelOp::Softmax { rows: r, cols: c } if r == rows && c == cols)
    });
    let mut group = vec![a, b];
    let mut outputs = vec![p.kernel(a).outputs[0], p.kernel(b).outputs[0]];
    if let Some(s) = s {
        group.push(s);
        outputs.push(p.kernel(s).outputs[0]);
    }
    let op = KernelOp::SoftmaxXent {
        rows,
        classes: cols,
        sparse: kind == LossKind::SparseCategoricalCrossentropy,
        probs: s.is_some(),
    };
    p.fuse(&group, op, ins, outputs)
}

/// Fuses softmax + cross-entropy + its gradient; returns the number of fusions.
pub fn run(p: &mut Program) -> usize {
    rewrite_each(p, try_at)
}
