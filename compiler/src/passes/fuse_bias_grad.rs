//! Training: the bias gradient `Σ dy` over rows is gathered by the kernel-gradient GEMM that
//! already streams `dy` as its B operand (`gemm ta` for dense, `conv_grad_kernel` for conv):
//! column sums are taken while B panels are packed, saving a separate pass over `dy`.

use crate::kernel_ir::{KernelOp, Program};

use super::fusion::{rewrite_each, Fuser};

fn try_at(p: &mut Fuser, r: usize) -> bool {
    let KernelOp::Reduce { rows, channels } = p.kernel(r).op else {
        return false;
    };
    let dy = p.kernel(r).inputs[0];
    let stage = p.kernel(r).stage;
    let Some(g) = p.first_reader(dy, |k| {
        let fits = match k.op {
            KernelOp::Gemm {
                n,
                k: kk,
                trans_a: true,
                trans_b: false,
                bias_grad: false,
                epilogue,
                ..
            } => n == channels && kk == rows && epilogue.is_none(),
            KernelOp::ConvGradKernel {
                geom,
                bias_grad: false,
                pooled: None,
            } => geom.f == channels && geom.n * geom.out_hw[0] * geom.out_hw[1] == rows,
            _ => false,
        };
        fits && k.stage == stage && k.inputs.get(1) == Some(&dy)
    }) else {
        return false;
    };
    let op = match p.kernel(g).op.clone() {
        KernelOp::Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            epilogue,
            ..
        } => KernelOp::Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            epilogue,
            bias_grad: true,
        },
        KernelOp::ConvGradKernel { geom, pooled, .. } => KernelOp::ConvGradKernel {
            geom,
            bias_grad: true,
            pooled,
        },
        _ => return false,
    };
    let inputs = p.kernel(g).inputs.clone();
    let mut outputs = p.kernel(g).outputs.clone();
    outputs.push(p.kernel(r).outputs[0]);
    p.fuse(&[r, g], op, inputs, outputs)
}

/// Fuses bias gradients into kernel-gradient GEMMs; returns the number of fusions.
pub fn run(p: &mut Program) -> usize {
    rewrite_each(p, try_at)
}
