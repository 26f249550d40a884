//! Training: a conv whose activation only a max-pool reads pools in its epilogue and records
//! each window's argmax, and the pool's gradient scatters through that argmax.
//!
//! Unfused, the step writes the unpooled activation in forward, reads it back to pool, and
//! reads it again in backward to find each window's maximum (`pool_grad`, with the
//! activation's gradient fused in by `fuse_pool_act_grad`, which must run first). Here the
//! conv writes the pooled map and an argmax map of the same size (a quarter each of the
//! unpooled map for 2×2 windows), and `max_pool_grad_argmax` needs only those and the pooled
//! gradient: the unpooled activation is never stored. Any activation qualifies but softmax: the
//! others are non-decreasing, so they commute with the maximum and their derivative at the
//! argmax is their derivative at the pooled value.
//!
//! Applies when the conv's output has exactly two readers, the forward max-pool and its
//! gradient, the window tiles the map (as `fuse_max_pool`), and the epilogue has no BN
//! statistics or residual.
//!
//! A batch norm's normalise pass (`bn_apply`, batch statistics, no residual, linear or ReLU)
//! pools the same way: conv → BN → ReLU → max-pool then neither stores the unpooled
//! activation nor reads it back. Its pool gradient may carry no activation derivative, when
//! `fuse_bn_backward` took the ReLU's mask into BN's backward (recomputed from BN's input).

use crate::ir::{Activation, Mode, Shape};
use crate::kernel_ir::{BnSource, BufKind, Buffer, KernelOp, PoolGeom, PoolKind, Program};

use super::fusion::{rewrite_each, Fuser};

/// The kernel that can pool its output: a conv's epilogue, or BN's normalise pass.
enum Producer {
    Conv,
    Bn,
}

fn try_at(p: &mut Fuser, i: usize) -> bool {
    let (producer, act, out_hw) = match p.kernel(i).op {
        KernelOp::Conv2d { geom, epilogue: e, .. }
            if e.max_pool.is_none() && !e.bn_stats && !e.residual && e.act != Activation::Softmax =>
        {
            (Producer::Conv, e.act, Some(geom.out_hw))
        }
        KernelOp::BnApply {
            act: act @ (Activation::Linear | Activation::Relu),
            source: BnSource::Batch,
            residual: false,
            pool: None,
            ..
        } => (Producer::Bn, act, None),
        _ => return false,
    };
    let out = p.kernel(i).outputs[0];
    let uses = p.uses();
    let base = p.base(out);
    if uses.is_output[base.index()] || base != out {
        return false;
    }
    let readers = &uses.readers[out.index()];
    let find = |want_grad: bool| {
        readers.iter().copied().find(|&r| {
            let k = p.kernel(r);
            k.inputs.first() == Some(&out)
                && match k.op {
                    KernelOp::Pool {
                        kind: PoolKind::Max, ..
                    } => !want_grad,
                    KernelOp::PoolGrad {
                        kind: PoolKind::Max, ..
                    } => want_grad,
                    _ => false,
                }
        })
    };
    let (Some(j), Some(k)) = (find(false), find(true)) else {
        return false;
    };
    let (KernelOp::Pool { geom: pg, .. }, KernelOp::PoolGrad { geom: gg, act_grad, .. }) =
        (&p.kernel(j).op, &p.kernel(k).op)
    else {
        return false;
    };
    let (pg, gg, grad_act) = (*pg, *gg, act_grad.unwrap_or(Activation::Linear));
    // The pool gradient takes the activation's derivative, or (BN only) none: BN's backward
    // takes it.
    let derivative_ok = grad_act == act || matches!(producer, Producer::Bn) && grad_act == Activation::Linear;
    if readers.len() != 2
        || pg != gg
        || !derivative_ok
        || p.kernel(j).stage != p.kernel(i).stage
        || out_hw.is_some_and(|hw| hw != pg.in_hw)
        || !crate::kernel_ir::kernel::pool_tiles(pg.in_hw, &pg.window)
    {
        return false;
    }
    let act = grad_act;
    let pooled = p.kernel(j).outputs[0];
    let argmax = p.add_buffer(Buffer::new(
        format!("{}.argmax", p.buffer(pooled).name),
        BufKind::Saved,
        Shape(p.buffer(pooled).shape.0.clone()),
    ));
    let inputs = p.kernel(i).inputs.clone();
    if k < j || !p.fuse(&[i, j], pooled_op(&p.kernel(i).op, pg), inputs, vec![pooled, argmax]) {
        return false;
    }
    // The pair [i, j] became one kernel at slot i; the gradient (k > j) keeps its slot.
    let (dy, dx) = (p.kernel(k).inputs[1], p.kernel(k).outputs[0]);
    let grad_inputs = if act == Activation::Linear {
        vec![argmax, dy]
    } else {
        vec![argmax, pooled, dy]
    };
    let grad = KernelOp::MaxPoolGradArgmax {
        geom: gg,
        act_grad: (act != Activation::Linear).then_some(act),
    };
    // Its inputs are written by the fused conv (before it) and by what wrote dy.
    let fused = p.fuse(&[k], grad, grad_inputs, vec![dx]);
    debug_assert!(fused, "the argmax pool gradient's inputs are ready");
    fused
}

/// `op` (a [`Producer`]) pooling its output with `pool` and recording the argmax.
fn pooled_op(op: &KernelOp, pool: PoolGeom) -> KernelOp {
    let mut op = op.clone();
    match &mut op {
        KernelOp::Conv2d { epilogue, .. } => {
            epilogue.max_pool = Some(pool.window);
            epilogue.argmax = true;
        }
        KernelOp::BnApply { pool: p, .. } => *p = Some(pool),
        _ => unreachable!("only producers are pooled"),
    }
    op
}

/// Fuses training max-pools into conv epilogues and BN passes with an argmax; returns the
/// number of fusions.
pub fn run(p: &mut Program) -> usize {
    if p.mode != Mode::Training {
        return 0;
    }
    rewrite_each(p, try_at)
}
