//! Training: BN's backward in one kernel. `batch_norm_grad_input`, `batch_norm_grad_gamma` and
//! the `reduce` giving d beta all read the same upstream gradient; the `act_grad` producing
//! that gradient (the mask of the activation after BN) is folded in too when nothing else
//! reads its result. The fused `bn_act_backward` gathers Σg and Σg·x̂ per channel in one pass
//! (g = act'(y)·dy) and writes dx in a second, instead of five passes over the activation.
//! When the activation is a ReLU that the forward's `bn_apply` applied (batch statistics, no
//! residual), its mask is recomputed from BN's input and β instead of read from `y`: one
//! activation-sized operand fewer in each pass.

use crate::ir::Activation;
use crate::kernel_ir::{BnSource, BufId, EwOp, KernelOp, Program};

use super::fusion::{rewrite_each, Fuser};

fn try_at(p: &mut Fuser, gi: usize) -> bool {
    let KernelOp::BnGradInput {
        rows,
        channels,
        epsilon,
    } = p.kernel(gi).op
    else {
        return false;
    };
    let &[x, moments, gamma, dy] = p.kernel(gi).inputs.as_slice() else {
        return false;
    };
    let stage = p.kernel(gi).stage;
    // Both partners read `dy`.
    let find =
        |pred: &dyn Fn(&KernelOp, &[BufId]) -> bool| p.first_reader(dy, |k| k.stage == stage && pred(&k.op, &k.inputs));
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
        let k = p.kernel(pa);
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
    let mut mask_from_x = false;
    let act = match act_grad {
        Some(pa) => {
            let k = p.kernel(pa);
            let y = k.inputs[0];
            match relu_beta(p, y, [x, moments, gamma]) {
                Some(beta)
                    if matches!(
                        k.op,
                        KernelOp::Elementwise {
                            op: EwOp::ActGrad(Activation::Relu),
                            ..
                        }
                    ) =>
                {
                    mask_from_x = true;
                    inputs.extend([beta, k.inputs[1]]);
                }
                _ => inputs.extend([y, k.inputs[1]]),
            }
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
    let mut outputs = vec![p.kernel(gi).outputs[0]];
    outputs.extend(gg.map(|k| p.kernel(k).outputs[0]));
    outputs.extend(rd.map(|k| p.kernel(k).outputs[0]));
    let op = KernelOp::BnActBackward {
        rows,
        channels,
        epsilon,
        act,
        grad_gamma: gg.is_some(),
        grad_beta: rd.is_some(),
        mask_from_x,
    };
    p.fuse(&group, op, inputs, outputs)
}

/// β, when `y` is the output of a forward `bn_apply` with a ReLU, batch statistics and no
/// residual over `(x, moments, gamma)`: the mask of `y` can then be recomputed from `x`.
fn relu_beta(p: &Fuser, y: BufId, [x, moments, gamma]: [BufId; 3]) -> Option<BufId> {
    let k = p.kernel(p.uses().producer(y)?);
    match (&k.op, k.inputs.as_slice()) {
        (
            KernelOp::BnApply {
                act: Activation::Relu,
                source: BnSource::Batch,
                residual: false,
                ..
            },
            &[kx, km, kg, beta],
        ) if [kx, km, kg] == [x, moments, gamma] && k.outputs[0] == y => Some(beta),
        _ => None,
    }
}

/// Fuses BN backward (with the activation mask after BN); returns the number of fusions.
pub fn run(p: &mut Program) -> usize {
    rewrite_each(p, try_at)
}
