//! Training: the kernel gradient of a pooled conv reads the pooled gradient and the argmax
//! directly, when nothing else needs the conv's unpooled gradient (the first conv of a model,
//! whose input gradient is not computed).
//!
//! After `fuse_pool_argmax`, `max_pool_grad_argmax` writes the unpooled gradient — four times
//! the pooled one for 2×2 windows, and mostly zeros — only for the kernel gradient to read it
//! back. Fused, the kernel gradient rebuilds each output row's gradient from the pooled maps as
//! it goes, and the unpooled gradient is never stored. The bias gradient (already fused into
//! the kernel gradient by `fuse_bias_grad`) comes along.

use crate::kernel_ir::{KernelOp, PooledDy, Program};

use super::fusion::{rewrite_each, Fuser};

fn try_at(p: &mut Fuser, i: usize) -> bool {
    let KernelOp::MaxPoolGradArgmax { geom: pg, act_grad } = p.kernel(i).op else {
        return false;
    };
    let dy = p.kernel(i).outputs[0];
    let Some(j) = p.uses().sole_reader(dy) else {
        return false;
    };
    let KernelOp::ConvGradKernel {
        geom,
        bias_grad,
        pooled: None,
    } = p.kernel(j).op
    else {
        return false;
    };
    let k = p.kernel(j);
    if j <= i
        || k.stage != p.kernel(i).stage
        || k.inputs[1] != dy
        || [geom.n, geom.out_hw[0], geom.out_hw[1], geom.f] != [pg.n, pg.in_hw[0], pg.in_hw[1], pg.c]
    {
        return false;
    }
    let op = KernelOp::ConvGradKernel {
        geom,
        bias_grad,
        pooled: Some(PooledDy {
            window: pg.window,
            act_grad,
        }),
    };
    // (x, argmax, [y], pooled dy)
    let mut inputs = vec![k.inputs[0]];
    inputs.extend(p.kernel(i).inputs.iter().copied());
    let outputs = k.outputs.clone();
    p.fuse(&[i, j], op, inputs, outputs)
}

/// Fuses argmax pool gradients into the kernel gradients that alone read them; returns how many.
pub fn run(p: &mut Program) -> usize {
    rewrite_each(p, try_at)
}
