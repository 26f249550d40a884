//! Fuses the bias add, a residual add (a skip connection) and the activation that follow a conv
//! or gemm into its epilogue (`conv2d → bias_add → add → relu` becomes one
//! `conv2d +bias +residual +relu`), in that order. A softmax is fused into a gemm only (its
//! rows are whole output rows). Each fused kernel must be the only reader of the value it
//! consumes, so the intermediate is never stored.

use crate::ir::Activation;
use crate::kernel_ir::{EwOp, KernelOp, Program};

use super::fusion::{rewrite_each, Fuser};

fn try_at(p: &mut Fuser, i: usize) -> bool {
    let k = p.kernel(i);
    let Some(e) = k.op.epilogue().copied() else {
        return false;
    };
    if e.act != Activation::Linear || e.bn_stats || e.max_pool.is_some() {
        return false;
    }
    let out = k.outputs[0];
    let Some(j) = p.uses().sole_reader(out) else {
        return false;
    };
    let c = p.kernel(j);
    let adds = matches!(c.op, KernelOp::Elementwise { op: EwOp::Add, .. });
    if c.stage != k.stage || !(c.inputs.first() == Some(&out) || adds && c.inputs.get(1) == Some(&out)) {
        return false;
    }
    let mut e2 = e;
    let mut inputs = k.inputs.clone();
    match (&c.op, &k.op) {
        (KernelOp::Elementwise { op: EwOp::BiasAdd, .. }, _) if !e.bias && !e.residual && c.inputs[1] != out => {
            e2.bias = true;
            inputs.push(c.inputs[1]);
        }
        (KernelOp::Elementwise { op: EwOp::Add, .. }, _) if !e.residual && c.inputs[0] != c.inputs[1] => {
            e2.residual = true;
            inputs.push(if c.inputs[0] == out { c.inputs[1] } else { c.inputs[0] });
        }
        (KernelOp::Elementwise { op: EwOp::Act(a), .. }, _) => e2.act = *a,
        (KernelOp::Softmax { rows, cols }, KernelOp::Gemm { m, n, .. }) if rows == m && cols == n => {
            e2.act = Activation::Softmax
        }
        _ => return false,
    }
    let op = match k.op.clone() {
        KernelOp::Conv2d { geom, winograd_u, .. } => KernelOp::Conv2d {
            geom,
            epilogue: e2,
            winograd_u,
        },
        KernelOp::Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            bias_grad,
            ..
        } => KernelOp::Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            epilogue: e2,
            bias_grad,
        },
        _ => return false,
    };
    let mut outputs = vec![c.outputs[0]];
    outputs.extend(&k.outputs[1..]);
    p.fuse(&[i, j], op, inputs, outputs)
}

/// Fuses bias adds and activations into conv / gemm epilogues; returns the number of fusions.
pub fn run(p: &mut Program) -> usize {
    rewrite_each(p, try_at)
}
