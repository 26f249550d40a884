//! One gradient rule per differentiable forward op; the list is in the `autodiff` module docs.
//! Each rule adds backward nodes for the inputs that need a gradient and records them as
//! contributions, which the driver sums once every user of a node has been visited.

use super::{AutodiffError, Builder};
use crate::ir::{Graph, NodeId, Op};

/// `[H, W]` of an NHWC node.
fn hw(fwd: &Graph, x: NodeId) -> [usize; 2] {
    let d = fwd.shape(x).dims();
    [d[1], d[2]]
}

/// Adds `op(inputs)` as the gradient of `to`, when `to` needs one.
fn grad_to(
    b: &mut Builder,
    to: NodeId,
    op: Op,
    inputs: &[NodeId],
    layer: &str,
    fwd: &Graph,
) -> Result<(), AutodiffError> {
    if b.needs(to) {
        let shape = matches!(op, Op::Reshape).then(|| fwd.shape(to).clone());
        let g = b.add(op, inputs, shape, layer)?;
        b.contribute(to, g);
    }
    Ok(())
}

/// Propagates `dy`, the summed gradient of forward node `id`, to its inputs.
pub(super) fn backprop(b: &mut Builder, fwd: &Graph, id: NodeId, dy: NodeId) -> Result<(), AutodiffError> {
    let node = fwd.node(id);
    let layer = node.layer.as_str();
    let ins = node.inputs.as_slice();
    match &node.op {
        Op::Conv2d { strides, pad } => {
            let (x, k) = (ins[0], ins[1]);
            let (strides, pad) = (*strides, *pad);
            let input_hw = hw(fwd, x);
            let kd = fwd.shape(k).dims();
            let kernel_hw = [kd[0], kd[1]];
            let gi = Op::Conv2dGradInput { strides, pad, input_hw };
            grad_to(b, x, gi, &[dy, k], layer, fwd)?;
            let gk = Op::Conv2dGradKernel {
                strides,
                pad,
                kernel_hw,
            };
            grad_to(b, k, gk, &[x, dy], layer, fwd)?;
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            let (a, w) = (ins[0], ins[1]);
            let mm = |ta, tb| Op::MatMul {
                transpose_a: ta,
                transpose_b: tb,
            };
            // C = op(a)·op(w); each pair is (transposes, operands) of the gradient's matmul.
            let ((da_op, da_in), (dw_op, dw_in)) = match (transpose_a, transpose_b) {
                (false, false) => ((mm(false, true), [dy, w]), (mm(true, false), [a, dy])),
                (false, true) => ((mm(false, false), [dy, w]), (mm(true, false), [dy, a])),
                (true, false) => ((mm(false, true), [w, dy]), (mm(false, false), [a, dy])),
                (true, true) => ((mm(true, true), [w, dy]), (mm(true, true), [dy, a])),
            };
            grad_to(b, a, da_op, &da_in, layer, fwd)?;
            grad_to(b, w, dw_op, &dw_in, layer, fwd)?;
        }
        Op::BiasAdd => {
            b.contribute(ins[0], dy);
            grad_to(b, ins[1], Op::ReduceToChannels, &[dy], layer, fwd)?;
        }
        Op::Act(a) => grad_to(b, ins[0], Op::ActGrad(*a), &[id, dy], layer, fwd)?,
        Op::MaxPool2d(w) => grad_to(b, ins[0], Op::MaxPool2dGrad(*w), &[ins[0], dy], layer, fwd)?,
        Op::AvgPool2d(w) => {
            let op = Op::AvgPool2dGrad {
                window: *w,
                input_hw: hw(fwd, ins[0]),
            };
            grad_to(b, ins[0], op, &[dy], layer, fwd)?;
        }
        Op::GlobalAvgPool => {
            let op = Op::GlobalAvgPoolGrad {
                input_hw: hw(fwd, ins[0]),
            };
            grad_to(b, ins[0], op, &[dy], layer, fwd)?;
        }
        Op::Reshape => grad_to(b, ins[0], Op::Reshape, &[dy], layer, fwd)?,
        Op::Add => {
            b.contribute(ins[0], dy);
            b.contribute(ins[1], dy);
        }
        Op::Concat => {
            let mut offset = 0;
            for &x in ins {
                let len = fwd.shape(x).channels();
                grad_to(b, x, Op::SliceChannels { offset, len }, &[dy], layer, fwd)?;
                offset += len;
            }
        }
        Op::Dropout { rate, seed } => {
            let op = Op::Dropout {
                rate: *rate,
                seed: *seed,
            };
            grad_to(b, ins[0], op, &[dy], layer, fwd)?;
        }
        Op::BatchNormTrain { epsilon } => {
            let (x, m, gamma, beta) = (ins[0], ins[1], ins[2], ins[3]);
            let own_moments = fwd.node(m).op == Op::Moments && fwd.node(m).inputs.first() == Some(&x);
            if (b.needs(x) || b.needs(m)) && !own_moments {
                return Err(AutodiffError::Unsupported {
                    op: node.op.mnemonic(),
                    layer: layer.to_string(),
                    msg: "the statistics input is not the moments of its own input, so the input \
                          gradient cannot go through them"
                        .into(),
                });
            }
            let eps = *epsilon;
            grad_to(
                b,
                x,
                Op::BatchNormGradInput { epsilon: eps },
                &[x, m, gamma, dy],
                layer,
                fwd,
            )?;
            grad_to(
                b,
                gamma,
                Op::BatchNormGradGamma { epsilon: eps },
                &[x, m, dy],
                layer,
                fwd,
            )?;
            grad_to(b, beta, Op::ReduceToChannels, &[dy], layer, fwd)?;
        }
        op => {
            let hint = match op {
                Op::BatchNormInference { .. } => " (lower the model in training mode)",
                Op::Moments => " (batch moments are differentiable only as a BatchNormTrain's statistics)",
                _ => "",
            };
            return Err(AutodiffError::NoGradientRule {
                op: op.mnemonic(),
                layer: layer.to_string(),
                node: id,
                hint,
            });
        }
    }
    Ok(())
}
