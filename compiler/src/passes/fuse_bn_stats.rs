//! Training: BN's batch statistics come out of the conv (or gemm) that produces BN's input.
//! The epilogue accumulates Σy and Σy² per channel while each tile is in registers and the
//! kernel's tail turns them into the `[2, C]` moments, so the separate `moments` kernel (a
//! full extra read of the activation) disappears.

use crate::kernel_ir::{KernelOp, Program};

use super::fusion::{rewrite_each, Fuser};

fn try_at(p: &mut Fuser, j: usize) -> bool {
    let KernelOp::Moments { .. } = p.kernel(j).op else {
        return false;
    };
    let x = p.kernel(j).inputs[0];
    let Some(i) = p.uses().producer(x) else {
        return false;
    };
    let k = p.kernel(i);
    let Some(e) = k.op.epilogue().copied() else {
        return false;
    };
    if k.outputs[0] != x || e.bn_stats || e.max_pool.is_some() || k.stage != p.kernel(j).stage {
        return false;
    }
    let mut e2 = e;
    e2.bn_stats = true;
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
            bias_grad: false,
            ..
        } => KernelOp::Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            epilogue: e2,
            bias_grad: false,
        },
        _ => return false,
    };
    let inputs = k.inputs.clone();
    let outputs = vec![x, p.kernel(j).outputs[0]];
    p.fuse(&[i, j], op, inputs, outputs)
}

/// Moves BN statistics into conv / gemm epilogues; returns the number of fusions.
pub fn run(p: &mut Program) -> usize {
    rewrite_each(p, try_at)
}
