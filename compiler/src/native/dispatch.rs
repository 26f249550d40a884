//! Kernel-IR templates → runtime kernel calls: [`check`] validates a template's constants once
//! (and sizes its workspace), [`run`] executes one resolved kernel. Convolutions and GEMMs
//! (epilogues) are in `dispatch_gemm`.

use cnnc_runtime::kernels::activation::Act;
use cnnc_runtime::kernels::conv::Pad;
use cnnc_runtime::kernels::norm::{self, BnBackward};
use cnnc_runtime::kernels::optim;
use cnnc_runtime::kernels::pool2d::{self, PoolGeom as RtPool};
use cnnc_runtime::kernels::softmax::{self, LossKind as RtLoss, Targets};
use cnnc_runtime::kernels::{bn_act_max_pool_argmax, elementwise as ew, BnAffine, Ctx};

use super::compiled::{Mem, Step};
use super::dispatch_gemm;
use crate::ir::{Activation, LossKind, Moment, Pad2d};
use crate::kernel_ir::{BnSource, EwOp, KernelOp, PoolGeom, PoolKind};

/// The runtime activation of `a`; softmax is not elementwise.
pub(super) fn act_of(a: Activation) -> Result<Act, String> {
    Ok(match a {
        Activation::Linear => Act::Linear,
        Activation::Relu => Act::Relu,
        Activation::Sigmoid => Act::Sigmoid,
        Activation::Tanh => Act::Tanh,
        Activation::Softmax => return Err("softmax is not an elementwise activation".into()),
    })
}

/// [`act_of`] for a template [`check`] accepted.
pub(super) fn act(a: Activation) -> Act {
    act_of(a).unwrap_or(Act::Linear)
}

pub(super) fn pad(p: Pad2d) -> Pad {
    Pad {
        top: p.top,
        bottom: p.bottom,
        left: p.left,
        right: p.right,
    }
}

/// The runtime geometry of a pooling template.
pub(super) fn pool_geom(g: &PoolGeom) -> RtPool {
    let w = &g.window;
    RtPool::new(g.n, g.in_hw, g.c, w.size, w.strides, pad(w.pad))
}

fn check_pool(kind: PoolKind, g: &PoolGeom) -> Result<(), String> {
    if kind == PoolKind::GlobalAvg {
        return match g.out_hw {
            [1, 1] => Ok(()),
            hw => Err(format!("global pooling to {hw:?}")),
        };
    }
    let r = pool_geom(g);
    if g.c == 0 || [r.oh, r.ow] != g.out_hw {
        return Err(format!(
            "pooling window gives {}x{}, the template says {:?}",
            r.oh, r.ow, g.out_hw
        ));
    }
    Ok(())
}

fn rt_loss(kind: LossKind) -> RtLoss {
    match kind {
        LossKind::SparseCategoricalCrossentropy => RtLoss::SparseCategoricalCrossentropy,
        LossKind::CategoricalCrossentropy => RtLoss::CategoricalCrossentropy,
        LossKind::MeanSquaredError => RtLoss::MeanSquaredError,
    }
}

fn targets(sparse: bool, t: &[f32]) -> Targets<'_> {
    if sparse {
        Targets::Sparse(t)
    } else {
        Targets::Dense(t)
    }
}

/// Checks what operand sizes cannot (geometry, activations); returns the f32 workspace the
/// kernel needs.
pub(super) fn check(op: &KernelOp) -> Result<usize, String> {
    Ok(match op {
        // The runtime's Winograd convs transform their kernels themselves (a weight memo).
        KernelOp::WinogradKernel { .. }
        | KernelOp::Conv2d {
            winograd_u: Some(_), ..
        } => return Err("a prepared Winograd kernel (passes::prepare_winograd is for generated code)".into()),
        KernelOp::Conv2d { .. }
        | KernelOp::ConvGradInput { .. }
        | KernelOp::ConvGradKernel { .. }
        | KernelOp::Gemm { .. } => dispatch_gemm::check(op)?,
        KernelOp::Pool { kind, geom } | KernelOp::PoolGrad { kind, geom, .. } => {
            check_pool(*kind, geom)?;
            0
        }
        KernelOp::MaxPoolGradArgmax { geom, act_grad } => {
            check_pool(PoolKind::Max, geom)?;
            if !crate::kernel_ir::kernel::pool_tiles(geom.in_hw, &geom.window) {
                return Err("an argmax max-pool gradient over windows that do not tile the map".into());
            }
            act_of(act_grad.unwrap_or(Activation::Linear))?;
            0
        }
        KernelOp::Elementwise { op, len, channels } => {
            match op {
                EwOp::Act(a) | EwOp::ActGrad(a) => {
                    act_of(*a)?;
                }
                EwOp::BiasAdd if *channels == 0 || !len.is_multiple_of(*channels) => {
                    return Err(format!("bias add of {len} values over {channels} channels"))
                }
                EwOp::Dropout { rate, .. } if !(0.0..1.0).contains(rate) => {
                    return Err(format!("dropout rate {rate} outside [0, 1)"))
                }
                _ => {}
            }
            0
        }
        KernelOp::BnApply {
            act, channels, pool, ..
        } => {
            act_of(*act)?;
            if let Some(g) = pool {
                check_pool(PoolKind::Max, g)?;
                if !crate::kernel_ir::kernel::pool_tiles(g.in_hw, &g.window)
                    || !matches!(act, Activation::Linear | Activation::Relu)
                {
                    return Err("a pooled batch norm needs tiling windows and a linear or ReLU activation".into());
                }
            }
            *channels
        }
        KernelOp::BnActBackward { act, .. } => {
            act_of(*act)?;
            0
        }
        KernelOp::Concat { parts, .. } if parts.is_empty() => return Err("concatenation of nothing".into()),
        KernelOp::SliceChannels {
            channels, offset, len, ..
        } if offset + len > *channels => return Err(format!("channels {offset}..{} of {channels}", offset + len)),
        _ => 0,
    })
}

/// Runs one kernel. `t` is the 1-based step (dropout masks, Adam's bias correction).
pub(super) fn run(s: &Step, m: &Mem, ctx: &Ctx, ws: &mut [f32], t: u64) {
    let (i, o) = (&s.ins, &s.outs);
    match &s.op {
        KernelOp::Conv2d { .. }
        | KernelOp::ConvGradInput { .. }
        | KernelOp::ConvGradKernel { .. }
        | KernelOp::Gemm { .. } => dispatch_gemm::run(s, m, ctx, ws),
        KernelOp::WinogradKernel { .. } => unreachable!("refused by `check`"),
        KernelOp::Pool { kind, geom } => {
            let (x, y) = (m.get(i[0]), m.get_mut(o[0]));
            match kind {
                PoolKind::Max => pool2d::max_pool(ctx, &pool_geom(geom), x, y),
                PoolKind::Avg => pool2d::avg_pool(ctx, &pool_geom(geom), x, y),
                PoolKind::GlobalAvg => {
                    pool2d::global_avg_pool(ctx, geom.n, geom.in_hw[0] * geom.in_hw[1], geom.c, x, y)
                }
            }
        }
        KernelOp::PoolGrad { kind, geom, act_grad } => {
            let dx = m.get_mut(o[0]);
            match kind {
                PoolKind::Max => {
                    let a = act(act_grad.unwrap_or(Activation::Linear));
                    pool2d::max_pool_grad_act(ctx, &pool_geom(geom), m.get(i[0]), m.get(i[1]), a, dx)
                }
                PoolKind::Avg => pool2d::avg_pool_grad(ctx, &pool_geom(geom), m.get(i[0]), dx),
                PoolKind::GlobalAvg => {
                    let hw = geom.in_hw[0] * geom.in_hw[1];
                    pool2d::global_avg_pool_grad(ctx, geom.n, hw, geom.c, m.get(i[0]), dx)
                }
            }
        }
        KernelOp::MaxPoolGradArgmax { geom, act_grad } => {
            let a = act(act_grad.unwrap_or(Activation::Linear));
            // (argmax, [y], dy): y only with a non-linear activation.
            let (y, dy) = if a == Act::Linear {
                (&[][..], m.get(i[1]))
            } else {
                (m.get(i[1]), m.get(i[2]))
            };
            cnnc_runtime::kernels::max_pool_grad_argmax(ctx, &pool_geom(geom), m.get(i[0]), y, dy, a, m.get_mut(o[0]));
        }
        KernelOp::Elementwise { op, channels, .. } => {
            let y = m.get_mut(o[0]);
            match *op {
                EwOp::Act(a) => ew::act(ctx, act(a), m.get(i[0]), y),
                EwOp::ActGrad(a) => ew::act_grad(ctx, act(a), m.get(i[0]), m.get(i[1]), y),
                EwOp::BiasAdd => ew::bias_add(ctx, *channels, m.get(i[0]), m.get(i[1]), y),
                EwOp::Add => ew::add(ctx, m.get(i[0]), m.get(i[1]), y),
                EwOp::Dropout { rate, seed } => ew::dropout(ctx, rate, seed, t, m.get(i[0]), y),
                EwOp::Copy => ew::copy(ctx, m.get(i[0]), y),
                EwOp::Fill(v) => ew::fill(y, v),
            }
        }
        KernelOp::Softmax { rows, cols } => softmax::softmax(ctx, *rows, *cols, m.get(i[0]), m.get_mut(o[0])),
        KernelOp::SoftmaxGrad { rows, cols } => {
            softmax::softmax_grad(ctx, *rows, *cols, m.get(i[0]), m.get(i[1]), m.get_mut(o[0]))
        }
        KernelOp::Reduce { rows, channels } => ew::reduce_rows(ctx, *rows, *channels, m.get(i[0]), m.get_mut(o[0])),
        KernelOp::Moments { rows, channels } => norm::moments(ctx, *rows, *channels, m.get(i[0]), m.get_mut(o[0])),
        KernelOp::BnApply {
            channels,
            epsilon,
            act: a,
            source,
            residual,
            pool,
            ..
        } => {
            let c = *channels;
            let (mean, var, gamma, beta, r) = match source {
                BnSource::Batch => {
                    let mo = m.get(i[1]);
                    (&mo[..c], &mo[c..], m.get(i[2]), m.get(i[3]), 4)
                }
                BnSource::Moving => (m.get(i[3]), m.get(i[4]), m.get(i[1]), m.get(i[2]), 5),
            };
            let scale = &mut ws[..c];
            norm::bn_scale(var, Some(gamma), *epsilon, scale);
            let res = residual.then(|| m.get(i[r]));
            match pool {
                Some(g) => {
                    let bn = BnAffine { mean, scale, beta };
                    let (y, argmax) = (m.get_mut(o[0]), m.get_mut(o[1]));
                    bn_act_max_pool_argmax(ctx, &pool_geom(g), m.get(i[0]), bn, act(*a), y, argmax)
                }
                None => norm::bn_apply(ctx, c, m.get(i[0]), mean, scale, beta, res, act(*a), m.get_mut(o[0])),
            }
        }
        KernelOp::BnGradInput { channels, epsilon, .. } => {
            let b = BnBackward {
                c: *channels,
                x: m.get(i[0]),
                moments: m.get(i[1]),
                gamma: Some(m.get(i[2])),
                eps: *epsilon,
                act: Act::Linear,
                y: None,
                beta: None,
                dy: m.get(i[3]),
            };
            norm::bn_backward(ctx, &b, Some(m.get_mut(o[0])), None, None);
        }
        KernelOp::BnGradGamma { channels, epsilon, .. } => {
            let b = BnBackward {
                c: *channels,
                x: m.get(i[0]),
                moments: m.get(i[1]),
                gamma: None,
                eps: *epsilon,
                act: Act::Linear,
                y: None,
                beta: None,
                dy: m.get(i[2]),
            };
            norm::bn_backward(ctx, &b, None, Some(m.get_mut(o[0])), None);
        }
        KernelOp::BnActBackward {
            channels,
            epsilon,
            act: a,
            grad_gamma,
            grad_beta,
            mask_from_x,
            ..
        } => {
            // Input 3 is y, or β with `mask_from_x`, or dy (linear).
            let has_3 = *a != Activation::Linear;
            let b = BnBackward {
                c: *channels,
                x: m.get(i[0]),
                moments: m.get(i[1]),
                gamma: Some(m.get(i[2])),
                eps: *epsilon,
                act: act(*a),
                y: (has_3 && !mask_from_x).then(|| m.get(i[3])),
                beta: mask_from_x.then(|| m.get(i[3])),
                dy: m.get(i[if has_3 { 4 } else { 3 }]),
            };
            let dgamma = grad_gamma.then(|| m.get_mut(o[1]));
            let dbeta = grad_beta.then(|| m.get_mut(o[1 + usize::from(*grad_gamma)]));
            norm::bn_backward(ctx, &b, Some(m.get_mut(o[0])), dgamma, dbeta);
        }
        KernelOp::MovingAverage {
            channels,
            momentum,
            moment,
        } => {
            let mo = m.get(i[1]);
            let stat = match moment {
                Moment::Mean => &mo[..*channels],
                Moment::Variance => &mo[*channels..],
            };
            if i[0] == o[0] {
                norm::moving_average_in_place(m.get_mut(o[0]), stat, *momentum);
            } else {
                norm::moving_average(m.get(i[0]), stat, *momentum, m.get_mut(o[0]));
            }
        }
        KernelOp::Loss {
            kind,
            from_logits,
            rows,
            cols,
        } => {
            let tg = targets(*kind == LossKind::SparseCategoricalCrossentropy, m.get(i[1]));
            m.get_mut(o[0])[0] = softmax::loss(rt_loss(*kind), *from_logits, *rows, *cols, m.get(i[0]), tg);
        }
        KernelOp::LossGrad {
            kind,
            from_logits,
            rows,
            cols,
        } => {
            let tg = targets(*kind == LossKind::SparseCategoricalCrossentropy, m.get(i[1]));
            softmax::loss_grad(
                rt_loss(*kind),
                *from_logits,
                *rows,
                *cols,
                m.get(i[0]),
                tg,
                m.get_mut(o[0]),
            );
        }
        KernelOp::SoftmaxXent {
            rows,
            classes,
            sparse,
            probs,
        } => {
            let tg = targets(*sparse, m.get(i[1]));
            let p = probs.then(|| m.get_mut(o[2]));
            let loss = softmax::softmax_xent(*rows, *classes, m.get(i[0]), tg, m.get_mut(o[1]), p);
            m.get_mut(o[0])[0] = loss;
        }
        KernelOp::Concat { rows, parts } => {
            let total = parts.iter().sum();
            let y = m.get_mut(o[0]);
            let mut offset = 0;
            for (&loc, &w) in i.iter().zip(parts) {
                ew::concat_part(*rows, total, offset, w, m.get(loc), y);
                offset += w;
            }
        }
        KernelOp::SliceChannels {
            rows,
            channels,
            offset,
            len,
        } => ew::slice_channels(*rows, *channels, *offset, *len, m.get(i[0]), m.get_mut(o[0])),
        KernelOp::OptimizerUpdate { rule: r, .. } => {
            let [param, slots @ ..] = o.as_slice() else {
                return;
            };
            let mut slots: Vec<&mut [f32]> = slots.iter().map(|&l| m.get_mut(l)).collect();
            optim::update(ctx, r, t, m.get_mut(*param), m.get(i[0]), &mut slots);
        }
    }
}
