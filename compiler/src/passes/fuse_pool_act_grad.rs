//! Training: the gradient of the activation before a max-pool is taken by the pool's gradient.
//! `act_grad(y, max_pool_grad(y, dy))` — conv → ReLU → max-pool in training — becomes one
//! `pool_grad +act_grad` kernel writing `act'(y)·pool_grad` straight into the activation
//! gradient's output, which saves a write and two reads of the unpooled map.

use crate::ir::Activation;
use crate::kernel_ir::{EwOp, KernelOp, PoolKind, Program};

use super::fusion::{rewrite_each, Fuser};

fn try_at(p: &mut Fuser, i: usize) -> bool {
    let KernelOp::PoolGrad {
        kind: PoolKind::Max,
        geom,
        act_grad: None,
    } = p.kernel(i).op
    else {
        return false;
    };
    let k = p.kernel(i);
    let Some(j) = p.uses().sole_reader(k.outputs[0]) else {
        return false;
    };
    let next = p.kernel(j);
    let KernelOp::Elementwise {
        op: EwOp::ActGrad(a), ..
    } = next.op
    else {
        return false;
    };
    // The activation's output must be what the pool read (its gradient is a function of it).
    let reads_pool_input = p.base(next.inputs[0]) == p.base(k.inputs[0]);
    if j <= i
        || next.stage != k.stage
        || !reads_pool_input
        || next.inputs[1] != k.outputs[0]
        || a == Activation::Softmax
    {
        return false;
    }
    let op = KernelOp::PoolGrad {
        kind: PoolKind::Max,
        geom,
        act_grad: Some(a),
    };
    let (inputs, outputs) = (k.inputs.clone(), next.outputs.clone());
    p.fuse(&[i, j], op, inputs, outputs)
}

/// Fuses activation gradients into the max-pool gradients before them; returns how many.
pub fn run(p: &mut Program) -> usize {
    rewrite_each(p, try_at)
}
