//! Graph → kernel IR, one kernel per computing node (fusion happens afterwards, as kernel-IR
//! passes). Leaves become bound or persistent buffers, `Reshape` becomes a view, graph
//! constants get a `fill` kernel, and in inference programs every node that depends on no
//! batch data (e.g. BN folded into weights) runs once in the prepare stage.

use thiserror::Error;

use crate::ir::{Activation, Graph, LossKind, Mode, Node, NodeId, Op, OutputRole, Shape, Window2d};

use super::kernel::{BnSource, ConvGeom, Epilogue, EwOp, KernelOp, PoolGeom, PoolKind, Stage};
use super::machine::Machine;
use super::program::{BufId, BufKind, Buffer, OutRole, Output, Program};

#[derive(Debug, Error, Clone, PartialEq)]
pub enum LowerError {
    #[error("graph {graph}: node {node} ({op}) of layer {layer:?}: {message}")]
    Unsupported {
        graph: String,
        node: NodeId,
        op: &'static str,
        layer: String,
        message: String,
    },
}

fn dims4(s: &Shape) -> Result<[usize; 4], String> {
    <[usize; 4]>::try_from(s.dims()).map_err(|_| format!("expected a 4-D tensor, got {s}"))
}

fn dims2(s: &Shape) -> Result<[usize; 2], String> {
    <[usize; 2]>::try_from(s.dims()).map_err(|_| format!("expected a 2-D tensor, got {s}"))
}

/// `[rows, channels]` view of a tensor: channels is the last axis.
fn rows_channels(s: &Shape) -> (usize, usize) {
    let c = s.channels().max(1);
    (s.numel() / c, c)
}

fn pool_geom(x: &Shape, y: &Shape, window: Window2d) -> Result<PoolGeom, String> {
    let [n, h, w, c] = dims4(x)?;
    let out_hw = match y.dims() {
        [_, oh, ow, _] => [*oh, *ow],
        _ => [1, 1],
    };
    Ok(PoolGeom {
        n,
        in_hw: [h, w],
        c,
        window,
        out_hw,
    })
}

/// The whole-map window of a global average pool over `x`.
fn global_window(x: &Shape) -> Result<Window2d, String> {
    let [_, h, w, _] = dims4(x)?;
    Ok(Window2d {
        size: [h, w],
        strides: [h, w],
        pad: Default::default(),
    })
}

/// The unfused kernel template computing `node`.
fn kernel_op(g: &Graph, node: &Node) -> Result<KernelOp, String> {
    let ins: Vec<&Shape> = node.inputs.iter().map(|&i| g.shape(i)).collect();
    let out = &node.shape;
    let (rows, channels) = rows_channels(out);
    let len = out.numel();
    let ew = |op| KernelOp::Elementwise { op, len, channels };
    Ok(match &node.op {
        Op::Conv2d { strides, pad } => {
            let [n, h, w, c] = dims4(ins[0])?;
            let [kh, kw, _, f] = dims4(ins[1])?;
            let [_, oh, ow, _] = dims4(out)?;
            KernelOp::Conv2d {
                geom: ConvGeom {
                    n,
                    in_hw: [h, w],
                    c,
                    kernel_hw: [kh, kw],
                    f,
                    strides: *strides,
                    pad: *pad,
                    out_hw: [oh, ow],
                },
                epilogue: Epilogue::NONE,
                winograd_u: None,
            }
        }
        Op::Conv2dGradInput { strides, pad, input_hw } => {
            let [n, oh, ow, f] = dims4(ins[0])?;
            let [kh, kw, c, _] = dims4(ins[1])?;
            KernelOp::ConvGradInput {
                geom: ConvGeom {
                    n,
                    in_hw: *input_hw,
                    c,
                    kernel_hw: [kh, kw],
                    f,
                    strides: *strides,
                    pad: *pad,
                    out_hw: [oh, ow],
                },
            }
        }
        Op::Conv2dGradKernel {
            strides,
            pad,
            kernel_hw,
        } => {
            let [n, h, w, c] = dims4(ins[0])?;
            let [_, oh, ow, f] = dims4(ins[1])?;
            KernelOp::ConvGradKernel {
                geom: ConvGeom {
                    n,
                    in_hw: [h, w],
                    c,
                    kernel_hw: *kernel_hw,
                    f,
                    strides: *strides,
                    pad: *pad,
                    out_hw: [oh, ow],
                },
                bias_grad: false,
                pooled: None,
            }
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            let a = dims2(ins[0])?;
            let [m, n] = dims2(out)?;
            let k = if *transpose_a { a[0] } else { a[1] };
            KernelOp::Gemm {
                m,
                n,
                k,
                trans_a: *transpose_a,
                trans_b: *transpose_b,
                epilogue: Epilogue::NONE,
                bias_grad: false,
            }
        }
        Op::BiasAdd => ew(EwOp::BiasAdd),
        Op::Act(Activation::Softmax) => KernelOp::Softmax { rows, cols: channels },
        Op::Act(a) => ew(EwOp::Act(*a)),
        Op::ActGrad(Activation::Softmax) => KernelOp::SoftmaxGrad { rows, cols: channels },
        Op::ActGrad(a) => ew(EwOp::ActGrad(*a)),
        Op::Add => ew(EwOp::Add),
        Op::Dropout { rate, seed } => ew(EwOp::Dropout {
            rate: *rate,
            seed: *seed,
        }),
        Op::MaxPool2d(w) => KernelOp::Pool {
            kind: PoolKind::Max,
            geom: pool_geom(ins[0], out, *w)?,
        },
        Op::AvgPool2d(w) => KernelOp::Pool {
            kind: PoolKind::Avg,
            geom: pool_geom(ins[0], out, *w)?,
        },
        Op::GlobalAvgPool => KernelOp::Pool {
            kind: PoolKind::GlobalAvg,
            geom: pool_geom(ins[0], out, global_window(ins[0])?)?,
        },
        Op::MaxPool2dGrad(w) => KernelOp::PoolGrad {
            kind: PoolKind::Max,
            geom: pool_geom(ins[0], ins[1], *w)?,
            act_grad: None,
        },
        Op::AvgPool2dGrad { window, .. } => KernelOp::PoolGrad {
            kind: PoolKind::Avg,
            geom: pool_geom(out, ins[0], *window)?,
            act_grad: None,
        },
        Op::GlobalAvgPoolGrad { .. } => KernelOp::PoolGrad {
            kind: PoolKind::GlobalAvg,
            geom: pool_geom(out, ins[0], global_window(out)?)?,
            act_grad: None,
        },
        Op::Concat => KernelOp::Concat {
            rows,
            parts: ins.iter().map(|s| s.channels()).collect(),
        },
        Op::SliceChannels { offset, len: l } => KernelOp::SliceChannels {
            rows,
            channels: ins[0].channels(),
            offset: *offset,
            len: *l,
        },
        Op::BatchNormInference { epsilon } => KernelOp::BnApply {
            rows,
            channels,
            epsilon: *epsilon,
            act: Activation::Linear,
            source: BnSource::Moving,
            residual: false,
            pool: None,
        },
        Op::BatchNormTrain { epsilon } => KernelOp::BnApply {
            rows,
            channels,
            epsilon: *epsilon,
            act: Activation::Linear,
            source: BnSource::Batch,
            residual: false,
            pool: None,
        },
        Op::Moments => {
            let (rows, channels) = rows_channels(ins[0]);
            KernelOp::Moments { rows, channels }
        }
        Op::MovingAverage { momentum, moment } => KernelOp::MovingAverage {
            channels,
            momentum: *momentum,
            moment: *moment,
        },
        Op::BatchNormGradInput { epsilon } => KernelOp::BnGradInput {
            rows,
            channels,
            epsilon: *epsilon,
        },
        Op::BatchNormGradGamma { epsilon } => {
            let (rows, channels) = rows_channels(ins[0]);
            KernelOp::BnGradGamma {
                rows,
                channels,
                epsilon: *epsilon,
            }
        }
        Op::ReduceToChannels => {
            let (rows, channels) = rows_channels(ins[0]);
            KernelOp::Reduce { rows, channels }
        }
        Op::Loss { kind, from_logits } | Op::LossGrad { kind, from_logits } => {
            let (rows, cols) = rows_channels(ins[0]);
            if *kind != LossKind::MeanSquaredError && ins[0].rank() != 2 {
                return Err(format!("cross-entropy needs [N, K] predictions, got {}", ins[0]));
            }
            if matches!(node.op, Op::Loss { .. }) {
                KernelOp::Loss {
                    kind: *kind,
                    from_logits: *from_logits,
                    rows,
                    cols,
                }
            } else {
                KernelOp::LossGrad {
                    kind: *kind,
                    from_logits: *from_logits,
                    rows,
                    cols,
                }
            }
        }
        Op::Input | Op::Target | Op::Param { .. } | Op::Constant(_) | Op::Reshape => {
            return Err("leaves and reshapes have no kernel".into())
        }
    })
}

/// Per node: whether it depends on the batch (input or target), and whether it is part of the
/// backward pass (depends on a loss gradient).
fn classify(g: &Graph) -> (Vec<bool>, Vec<bool>) {
    let n = g.nodes.len();
    let (mut batch, mut backward) = (vec![false; n], vec![false; n]);
    for (i, node) in g.nodes.iter().enumerate() {
        batch[i] = matches!(node.op, Op::Input | Op::Target) || node.inputs.iter().any(|x| batch[x.index()]);
        backward[i] = matches!(node.op, Op::LossGrad { .. }) || node.inputs.iter().any(|x| backward[x.index()]);
    }
    (batch, backward)
}

fn buffer_name(node: &Node) -> String {
    match &node.op {
        Op::Param { name, .. } => name.clone(),
        op if node.layer.is_empty() => op.mnemonic().to_string(),
        op => format!("{}/{}", node.layer, op.mnemonic()),
    }
}

/// Lowers a verified graph to an unfused program scheduled for `machine`.
pub fn lower(g: &Graph, machine: &Machine) -> Result<Program, LowerError> {
    let mut p = Program::new(g.name.clone(), g.batch, g.mode, *machine);
    let (batch, backward) = classify(g);
    let mut readers = vec![0usize; g.nodes.len()];
    for n in &g.nodes {
        for i in &n.inputs {
            readers[i.index()] += 1;
        }
    }
    let mut bufs: Vec<BufId> = Vec::with_capacity(g.nodes.len());
    let (mut prepare, mut run) = (Vec::new(), Vec::new());
    for (i, node) in g.nodes.iter().enumerate() {
        let name = buffer_name(node);
        let origin = if node.layer.is_empty() {
            vec![]
        } else {
            vec![node.layer.clone()]
        };
        let kind = match &node.op {
            Op::Input => Some(BufKind::Input),
            Op::Target => Some(BufKind::Target),
            Op::Param { name, role, .. } => Some(BufKind::Param {
                name: name.clone(),
                role: *role,
                trainable: role.trainable(),
            }),
            Op::Reshape => Some(BufKind::View {
                of: p.base(bufs[node.inputs[0].index()]),
            }),
            Op::Constant(v) => {
                let b = p.add_buffer(Buffer::new(name, BufKind::Constant(*v), node.shape.clone()));
                let fill = KernelOp::Elementwise {
                    op: EwOp::Fill(*v),
                    len: node.shape.numel(),
                    channels: node.shape.channels(),
                };
                prepare.push(p.make_kernel(fill, vec![], vec![b], Stage::Prepare, origin));
                bufs.push(b);
                continue;
            }
            _ => None,
        };
        if let Some(kind) = kind {
            bufs.push(p.add_buffer(Buffer::new(name, kind, node.shape.clone())));
            continue;
        }
        let op = kernel_op(g, node).map_err(|message| LowerError::Unsupported {
            graph: g.name.clone(),
            node: NodeId(i as u32),
            op: node.op.mnemonic(),
            layer: node.layer.clone(),
            message,
        })?;
        let stage = if g.mode == Mode::Inference && !batch[i] {
            Stage::Prepare
        } else if backward[i] {
            Stage::Backward
        } else {
            Stage::Forward
        };
        // A moving statistic nothing else reads is updated in place in its parameter.
        let moving = node.inputs.first().map(|x| bufs[x.index()]);
        let in_place = matches!(node.op, Op::MovingAverage { .. })
            && readers[node.inputs[0].index()] == 1
            && matches!(g.node(node.inputs[0]).op, Op::Param { .. });
        let out = match (in_place, moving) {
            (true, Some(m)) => m,
            _ => {
                let kind = match stage {
                    Stage::Prepare => BufKind::Prepared,
                    Stage::Backward => BufKind::Grad,
                    _ => BufKind::Temp,
                };
                p.add_buffer(Buffer::new(name, kind, node.shape.clone()))
            }
        };
        bufs.push(out);
        let inputs = node.inputs.iter().map(|x| bufs[x.index()]).collect();
        let k = p.make_kernel(op, inputs, vec![out], stage, origin);
        if stage == Stage::Prepare {
            prepare.push(k);
        } else {
            run.push(k);
        }
    }
    p.kernels = prepare;
    p.kernels.extend(run);
    for o in &g.outputs {
        let role = match o.role {
            OutputRole::Prediction => OutRole::Prediction,
            OutputRole::Loss => OutRole::Loss,
            OutputRole::Gradient { param } => OutRole::Gradient {
                param: bufs[param.index()],
            },
            OutputRole::StateUpdate { param } => OutRole::StateUpdate {
                param: bufs[param.index()],
            },
        };
        p.outputs.push(Output {
            role,
            buf: bufs[o.node.index()],
        });
    }
    mark_saved(&mut p);
    Ok(p)
}

/// Forward values read by backward kernels are [`BufKind::Saved`], other forward values
/// [`BufKind::Temp`] (re-run after fusion changes who reads what).
pub fn mark_saved(p: &mut Program) {
    let mut saved = vec![false; p.buffers.len()];
    for k in p.kernels.iter().filter(|k| k.stage == Stage::Backward) {
        for &b in &k.inputs {
            saved[p.base(b).index()] = true;
        }
    }
    for (b, s) in p.buffers.iter_mut().zip(saved) {
        match (&b.kind, s) {
            (BufKind::Temp, true) => b.kind = BufKind::Saved,
            (BufKind::Saved, false) => b.kind = BufKind::Temp,
            _ => {}
        }
    }
}
