//! Fuses what follows a batch norm into it: normalise, scale, shift, add a skip connection
//! (ResNet's `bn → add → relu`) and activate in one pass (`bn_apply +residual +relu`), in
//! training (batch statistics) and in inference when BN could not be folded into weights
//! (moving statistics). Each absorbed kernel must be the only reader of the BN's output.

use crate::ir::Activation;
use crate::kernel_ir::{EwOp, KernelOp, Program};

use super::fusion::{rewrite_each, Fuser};

fn try_at(p: &mut Fuser, i: usize) -> bool {
    let KernelOp::BnApply {
        rows,
        channels,
        epsilon,
        act: Activation::Linear,
        source,
        residual,
        pool: None,
    } = p.kernel(i).op
    else {
        return false;
    };
    let y = p.kernel(i).outputs[0];
    let Some(j) = p.uses().sole_reader(y) else {
        return false;
    };
    let c = p.kernel(j);
    if c.stage != p.kernel(i).stage {
        return false;
    }
    let mut inputs = p.kernel(i).inputs.clone();
    let (act, residual) = match c.op {
        KernelOp::Elementwise { op: EwOp::Act(a), .. } if c.inputs[0] == y => (a, residual),
        KernelOp::Elementwise { op: EwOp::Add, .. }
            if !residual && c.inputs[0] != c.inputs[1] && c.inputs.contains(&y) =>
        {
            inputs.push(if c.inputs[0] == y { c.inputs[1] } else { c.inputs[0] });
            (Activation::Linear, true)
        }
        _ => return false,
    };
    let op = KernelOp::BnApply {
        rows,
        channels,
        epsilon,
        act,
        source,
        residual,
        pool: None,
    };
    let outputs = vec![c.outputs[0]];
    p.fuse(&[i, j], op, inputs, outputs)
}

/// Fuses skip connections and activations into BN; returns the number of fusions.
pub fn run(p: &mut Program) -> usize {
    rewrite_each(p, try_at)
}
