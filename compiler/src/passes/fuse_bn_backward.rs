//! Training: BN's backward in one kernel. `batch_norm_grad_input`, `batch_norm_grad_gamma` and
//! the `reduce` giving d beta all read the same upstream gradient; the `act_grad` producing
//! that gradient (the mask of the activation after BN) is folded in too when nothing else
//! reads its result. The fused `bn_act_backward` gathers Σg and Σg·x̂ per channel in one pass
//! (g = act'(y)·dy) and writes dx in a second, instead of five passes over the activation.

use crate::ir::Activation;
use crate::kernel_ir::{EwOp, KernelOp, Program};

use super::fusion::{fuse, rewrite_each};

fn try_at(p: &mut Program, gi: usize) -> bool {
    let KernelOp::BnGradInput {
        rows,
        channels,
        epsilon,
    } = p.kernels[gi].op
    else {
        return false;
    };
    let &[x, moments, gamma, dy] = p.kernels[gi].inputs.as_slice() else {
        return false;
    };
    let stage = p.kernels[gi].stage;
    let find = |pred: &dyn Fn(&KernelOp, &[crate::kernel_ir::BufId]) -> bool| {
        p.kernels
            .iter()
            .position(|k| k.stage == stage && pred(&k.op, &k.inputs))
    };
    let gg = find(&|op, ins| {
        matches!(op, KernelOp::BnGradGamma { rows: r, channels: c, epsilon: e }
            if *r == rows && *c == channels && *e == epsilon)
            && ins == [x, moments, dy]
    });
    let rd = find(&|op, ins| {
        matches!(op, KernelOp::Reduce { rows: r, channels: c } if *r == rows && *c == channels) && ins == [dy]
    });
    let uses = p.uses();
    let mut group: Vec<usize> = [Some(gi), gg, rd].into_iter().flatten().collect();
    // The activation's gradient joins when every reader of its result is in the group.
    let act_grad = uses.producer(dy).filter(|&pa| {
        let k = &p.kernels[pa];
        matches!(
            k.op,
            KernelOp::Elementwise {
                op: EwOp::ActGrad(_),
                ..
            }
        ) && k.outputs[0] == dy
            && !uses.is_output[dy.index()]
            && uses.readers[dy.index()].iter().all(|r| group.contains(r))
    });
    if gg.is_none() && rd.is_none() && act_grad.is_none() {
        return false;
    }
    let (act, mut inputs) = (Activation::Linear, vec![x, moments, gamma]);
    let act = match act_grad {
        Some(pa) => {
            let k = &p.kernels[pa];
            inputs.extend([k.inputs[0], k.inputs[1]]);
            group.push(pa);
            match k.op {
                KernelOp::Elementwise {
                    op: EwOp::ActGrad(a), ..
                } => a,
                _ => act,
            }
        }
        None => {
            inputs.push(dy);
            act
        }
    };
    let mut outputs = vec![p.kernels[gi].outputs[0]];
    outputs.extend(gg.map(|k| p.kernels[k].outputs[0]));
    outputs.extend(rd.map(|k| p.kernels[k].outputs[0]));
    let op = KernelOp::BnActBackward {
        rows,
        channels,
        epsilon,
        act,
        grad_gamma: gg.is_some(),
        grad_beta: rd.is_some(),
    };
    fuse(p, &group, op, inputs, outputs)
}

/// Fuses BN backward (with the activation mask after BN); returns the number of fusions.
pub fn run(p: &mut Program) -> usize {
    rewrite_each(p, try_at)
}
