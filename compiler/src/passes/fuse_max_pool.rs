//! Fuses a max-pool into the epilogue of the conv before it (inference, or any conv whose
//! unpooled output nothing else reads): the conv's M tiles cover whole bands of pooling rows,
//! so each window is reduced while its outputs are still in registers and the unpooled map is
//! never written. Only windows that tile the conv output exactly (strides = size, no
//! padding, output height and width multiples of the window), so that every band of pooled
//! rows lies within one image.
//!
//! In training the unpooled activation is read again by `max_pool_grad` (and the activation's
//! gradient), so it must be stored and this fusion does not apply.

use crate::ir::Activation;
use crate::kernel_ir::{KernelOp, PoolKind, Program};

use super::fusion::{rewrite_each, Fuser};

fn try_at(p: &mut Fuser, i: usize) -> bool {
    let KernelOp::Conv2d {
        geom,
        epilogue,
        winograd_u,
    } = p.kernel(i).op
    else {
        return false;
    };
    if epilogue.max_pool.is_some() || epilogue.bn_stats || epilogue.act == Activation::Softmax {
        return false;
    }
    let out = p.kernel(i).outputs[0];
    let Some(j) = p.uses().sole_reader(out) else {
        return false;
    };
    let pool = p.kernel(j);
    let KernelOp::Pool {
        kind: PoolKind::Max,
        geom: pg,
    } = pool.op
    else {
        return false;
    };
    let w = pg.window;
    if pool.stage != p.kernel(i).stage
        || pool.inputs[0] != out
        || !crate::kernel_ir::kernel::pool_tiles(geom.out_hw, &w)
        || pg.in_hw != geom.out_hw
    {
        return false;
    }
    let mut e = epilogue;
    e.max_pool = Some(w);
    let inputs = p.kernel(i).inputs.clone();
    let outputs = vec![pool.outputs[0]];
    let op = KernelOp::Conv2d {
        geom,
        epilogue: e,
        winograd_u,
    };
    p.fuse(&[i, j], op, inputs, outputs)
}

/// Fuses max-pools into conv epilogues; returns the number of fusions.
pub fn run(p: &mut Program) -> usize {
    rewrite_each(p, try_at)
}
