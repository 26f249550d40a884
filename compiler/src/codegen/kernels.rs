//! One generated Rust function per distinct kernel template: the signature (operands as
//! fixed-size arrays, named by role, in the template's operand order, then the scratch the
//! generated template needs, if any, then the step for dropout) and the body, whose
//! every bound is a literal constant. Bodies live in `kernels_conv` (convolutions),
//! `kernels_gemm` (the GEMM and the pieces GEMM-shaped templates share),
//! `kernels_rows` (pooling, elementwise, softmax, data movement) and `kernels_norm` (batch
//! norm, losses) and `kernels_optim` (the optimiser update, one function per rule over slices).

use crate::ir::Activation;
use crate::kernel_ir::{dump, BnSource, EwOp, KernelOp, PoolKind, Schedule, Split};

use super::kernels_norm::Mask;
use super::threads::{emit_wrapper, thread_split};
use super::threads_bands::{band_split, emit_band_wrapper};
use super::writer::Code;
use super::{
    kernels_conv as conv, kernels_conv_grad as conv_grad, kernels_gemm as gemm, kernels_norm as norm,
    kernels_optim as optim, kernels_rows as rows,
};

/// The support function applying `a` elementwise (`None`: the identity). Softmax is not
/// elementwise; callers handle it before asking.
pub(crate) fn act_fn(a: Activation) -> Option<&'static str> {
    match a {
        Activation::Linear | Activation::Softmax => None,
        Activation::Relu => Some("relu"),
        Activation::Sigmoid => Some("sigmoid"),
        Activation::Tanh => Some("tanh_act"),
    }
}

/// `dy` through activation `a` given its output `y` (source expressions), as source.
pub(crate) fn act_grad_expr(a: Activation, y: &str, dy: &str) -> Result<String, String> {
    Ok(match a {
        Activation::Linear => dy.to_string(),
        Activation::Relu => format!("if {y} > 0.0 {{ {dy} }} else {{ 0.0 }}"),
        Activation::Sigmoid => format!("{dy} * {y} * (1.0 - {y})"),
        Activation::Tanh => format!("{dy} * (1.0 - {y} * {y})"),
        Activation::Softmax => return Err("softmax is not an elementwise activation".into()),
    })
}

/// Operand names of `op`, inputs then outputs, matching `KernelOp::operand_sizes`.
pub(crate) fn operand_names(op: &KernelOp) -> Result<(Vec<String>, Vec<String>), String> {
    fn v(names: &[(&str, bool)]) -> Vec<String> {
        names.iter().filter(|(_, on)| *on).map(|(n, _)| n.to_string()).collect()
    }
    let t = true;
    Ok(match op {
        KernelOp::Conv2d {
            epilogue: e,
            winograd_u,
            ..
        } => (
            v(&[
                ("x", t),
                ("w", winograd_u.is_none()),
                ("u", winograd_u.is_some()),
                ("bias", e.bias),
                ("res", e.residual),
            ]),
            v(&[
                ("y", t),
                ("moments", e.bn_stats),
                ("argmax", e.argmax && e.max_pool.is_some()),
            ]),
        ),
        KernelOp::WinogradKernel { .. } => (v(&[("w", t)]), v(&[("u", t)])),
        KernelOp::ConvGradInput { .. } => (v(&[("dy", t), ("w", t)]), v(&[("dx", t)])),
        KernelOp::ConvGradKernel {
            bias_grad,
            pooled: None,
            ..
        } => (v(&[("x", t), ("dy", t)]), v(&[("dw", t), ("db", *bias_grad)])),
        // dy is the pooled gradient here, y the pooled activation.
        KernelOp::ConvGradKernel {
            bias_grad,
            pooled: Some(pd),
            ..
        } => (
            v(&[("x", t), ("argmax", t), ("y", pd.reads_y()), ("dy", t)]),
            v(&[("dw", t), ("db", *bias_grad)]),
        ),
        KernelOp::Gemm {
            epilogue: e, bias_grad, ..
        } => (
            v(&[("a", t), ("b", t), ("bias", e.bias), ("res", e.residual)]),
            v(&[("c", t), ("moments", e.bn_stats), ("db", *bias_grad)]),
        ),
        KernelOp::Pool { .. } => (v(&[("x", t)]), v(&[("y", t)])),
        KernelOp::PoolGrad { kind, .. } => (v(&[("x", *kind == PoolKind::Max), ("dy", t)]), v(&[("dx", t)])),
        KernelOp::MaxPoolGradArgmax { act_grad, .. } => {
            let y = act_grad.is_some_and(|a| a != Activation::Linear);
            (v(&[("argmax", t), ("y", y), ("dy", t)]), v(&[("dx", t)]))
        }
        KernelOp::Elementwise { op, .. } => {
            let ins = match op {
                EwOp::Fill(_) => v(&[]),
                EwOp::Act(_) | EwOp::Dropout { .. } | EwOp::Copy => v(&[("x", t)]),
                EwOp::ActGrad(_) => v(&[("y", t), ("dy", t)]),
                EwOp::Add => v(&[("a", t), ("b", t)]),
                EwOp::BiasAdd => v(&[("x", t), ("bias", t)]),
            };
            let out = if matches!(op, EwOp::ActGrad(_)) { "dx" } else { "y" };
            (ins, v(&[(out, t)]))
        }
        KernelOp::Softmax { .. } => (v(&[("x", t)]), v(&[("y", t)])),
        KernelOp::SoftmaxGrad { .. } => (v(&[("y", t), ("dy", t)]), v(&[("dx", t)])),
        KernelOp::Reduce { .. } => (v(&[("x", t)]), v(&[("y", t)])),
        KernelOp::Moments { .. } => (v(&[("x", t)]), v(&[("moments", t)])),
        KernelOp::BnApply {
            source, residual, pool, ..
        } => {
            let ins = match source {
                BnSource::Batch => v(&[("x", t), ("moments", t), ("gamma", t), ("beta", t), ("res", *residual)]),
                BnSource::Moving => v(&[
                    ("x", t),
                    ("gamma", t),
                    ("beta", t),
                    ("mean", t),
                    ("var", t),
                    ("res", *residual),
                ]),
            };
            (ins, v(&[("y", t), ("argmax", pool.is_some())]))
        }
        KernelOp::BnGradInput { .. } => (v(&[("x", t), ("moments", t), ("gamma", t), ("dy", t)]), v(&[("dx", t)])),
        KernelOp::BnGradGamma { .. } => (v(&[("x", t), ("moments", t), ("dy", t)]), v(&[("dgamma", t)])),
        KernelOp::BnActBackward {
            act,
            grad_gamma,
            grad_beta,
            mask_from_x,
            ..
        } => (
            v(&[
                ("x", t),
                ("moments", t),
                ("gamma", t),
                ("y", *act != Activation::Linear && !mask_from_x),
                ("beta", *mask_from_x),
                ("dy", t),
            ]),
            v(&[("dx", t), ("dgamma", *grad_gamma), ("dbeta", *grad_beta)]),
        ),
        KernelOp::MovingAverage { .. } => (v(&[("moving", t), ("moments", t)]), v(&[("out", t)])),
        KernelOp::Loss { .. } => (v(&[("pred", t), ("target", t)]), v(&[("loss", t)])),
        KernelOp::LossGrad { .. } => (v(&[("pred", t), ("target", t)]), v(&[("dpred", t)])),
        KernelOp::SoftmaxXent { probs, .. } => (
            v(&[("logits", t), ("target", t)]),
            v(&[("loss", t), ("dlogits", t), ("probs", *probs)]),
        ),
        KernelOp::Concat { parts, .. } => ((0..parts.len()).map(|i| format!("x{i}")).collect(), v(&[("y", t)])),
        KernelOp::SliceChannels { .. } => (v(&[("x", t)]), v(&[("y", t)])),
        KernelOp::OptimizerUpdate { rule, .. } => {
            let mut outs = vec!["w".to_string()];
            outs.extend(rule.slots().iter().map(|s| s.to_string()));
            (v(&[("g", t)]), outs)
        }
    })
}

/// The scratch operand a generated template needs (name, f32 values): a padding conv's padded
/// image, the input gradient's transposed kernel, a GEMM's transposed or padded B. It follows
/// the outputs.
pub(crate) fn scratch_of(op: &KernelOp) -> Option<(&'static str, usize)> {
    match op {
        KernelOp::ConvGradInput { geom } => Some(super::kernels_conv_grad::grad_input_scratch(geom)),
        KernelOp::ConvGradKernel { geom, pooled, .. } => {
            super::kernels_conv_grad::grad_kernel_scratch(geom, pooled.is_some())
        }
        KernelOp::Conv2d {
            geom,
            epilogue,
            winograd_u,
        } => super::kernels_conv::conv_scratch(geom, epilogue, *winograd_u),
        KernelOp::Gemm { n, k, trans_b, .. } => super::kernels_gemm::gemm_scratch(*n, *k, *trans_b),
        _ => None,
    }
}

/// Whether the template reads the training step (dropout masks).
pub(crate) fn needs_step(op: &KernelOp) -> bool {
    match op {
        KernelOp::Elementwise {
            op: EwOp::Dropout { .. },
            ..
        } => true,
        KernelOp::OptimizerUpdate { rule, .. } => optim::needs_step(rule),
        _ => false,
    }
}

/// Whether the template's function takes its operands as slices of any length rather than
/// fixed-size arrays: the optimiser update, one function per rule for every parameter.
pub(crate) fn takes_slices(op: &KernelOp) -> bool {
    matches!(op, KernelOp::OptimizerUpdate { .. })
}

/// Emits `fn name(operands..) { body }`, and for a template whose schedule splits it by
/// samples or bands (`threads::schedule_for`) the shares' functions after it; returns the
/// functions written. `in_place`: a moving average whose output is its input (the function then takes
/// that operand once, `&mut`, after the others).
pub(crate) fn emit_function(
    c: &mut Code,
    name: &str,
    op: &KernelOp,
    s: &Schedule,
    in_place: bool,
    doc: &str,
) -> Result<usize, String> {
    if let KernelOp::OptimizerUpdate { rule, .. } = op {
        optim::emit_function(c, name, rule, doc);
        return Ok(1);
    }
    let params = params(op, in_place)?;
    c.doc(doc);
    c.line("#[inline(never)]");
    c.open(format!("fn {name}({})", params.join(", ")));
    // The shares: one template for a split by samples, one per band of a batch-1 conv.
    let parts: Vec<(String, KernelOp)> = match s.split {
        Split::Samples => {
            let sp = thread_split(op, s.threads).ok_or("a split by samples the template does not have")?;
            emit_wrapper(c, op, &sp, &format!("{name}_part"))?;
            vec![(format!("{name}_part"), sp.part)]
        }
        Split::Bands => {
            let bands = band_split(op, s.threads).ok_or("a split into bands the template does not have")?;
            emit_band_wrapper(c, op, &bands, &format!("{name}_band"))?;
            bands
                .into_iter()
                .enumerate()
                .map(|(i, b)| (format!("{name}_band{i}"), b.part))
                .collect()
        }
        _ => {
            body(c, op, s, in_place)?;
            Vec::new()
        }
    };
    c.close();
    let mut written = 1;
    for (part_name, part) in parts {
        // The share runs on one thread, with the same tiles.
        let one = Schedule {
            threads: 1,
            split: Split::None,
            // Its layout is the share's (a kernel gradient of fewer images groups fewer).
            conv: crate::kernel_ir::schedule::conv_layout(
                &part,
                match s.tiling {
                    crate::kernel_ir::Tiling::Gemm(t) => t.mr,
                    crate::kernel_ir::Tiling::Rows { .. } => 1,
                },
            ),
            ..*s
        };
        c.line("");
        let doc = format!("One thread's share of [`{name}`]: {}.", dump::op_line(&part, &one));
        written += emit_function(c, &part_name, &part, &one, false, &doc)?;
    }
    Ok(written)
}

/// The function's parameters: inputs, outputs, scratch, step.
fn params(op: &KernelOp, in_place: bool) -> Result<Vec<String>, String> {
    let (in_names, out_names) = operand_names(op)?;
    let (in_sizes, out_sizes) = op.operand_sizes();
    if in_names.len() != in_sizes.len() || out_names.len() != out_sizes.len() {
        return Err("operand names do not match the template's operands".into());
    }
    let mut params = Vec::new();
    for (i, (n, len)) in in_names.iter().zip(&in_sizes).enumerate() {
        if !(in_place && i == 0) {
            params.push(format!("{n}: &[f32; {len}]"));
        }
    }
    for (j, (n, len)) in out_names.iter().zip(&out_sizes).enumerate() {
        let n = if in_place && j == 0 { &in_names[0] } else { n };
        params.push(format!("{n}: &mut [f32; {len}]"));
    }
    if let Some((n, len)) = scratch_of(op) {
        params.push(format!("{n}: &mut [f32; {len}]"));
    }
    if needs_step(op) {
        params.push("step: u64".into());
    }
    Ok(params)
}

fn body(c: &mut Code, op: &KernelOp, s: &Schedule, in_place: bool) -> Result<(), String> {
    match op {
        KernelOp::Conv2d {
            geom,
            epilogue,
            winograd_u,
        } => conv::conv2d(c, geom, epilogue, *winograd_u, s)?,
        KernelOp::WinogradKernel { c: cc, f, tile } => super::kernels_winograd::prepared_kernel(c, *cc, *f, *tile)?,
        KernelOp::ConvGradInput { geom } => conv_grad::conv_grad_input(c, geom, s)?,
        KernelOp::ConvGradKernel {
            geom,
            bias_grad,
            pooled,
        } => conv_grad::conv_grad_kernel(c, geom, *bias_grad, pooled.as_ref(), s)?,
        KernelOp::Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            epilogue,
            bias_grad,
        } => gemm::gemm(c, (*m, *n, *k), *trans_a, *trans_b, epilogue, *bias_grad, s)?,
        KernelOp::Pool { kind, geom } => rows::pool(c, *kind, geom)?,
        KernelOp::PoolGrad { kind, geom, act_grad } => rows::pool_grad(c, *kind, geom, *act_grad)?,
        KernelOp::MaxPoolGradArgmax { geom, act_grad } => rows::max_pool_grad_argmax(c, geom, *act_grad)?,
        KernelOp::Elementwise { op, len, channels } => rows::elementwise(c, op, *len, *channels)?,
        KernelOp::Softmax { rows: r, cols } => rows::softmax(c, *r, *cols),
        KernelOp::SoftmaxGrad { rows: r, cols } => rows::softmax_grad(c, *r, *cols),
        KernelOp::Reduce { rows: r, channels } => rows::reduce(c, *r, *channels),
        KernelOp::Moments { rows: r, channels } => norm::moments(c, *r, *channels),
        KernelOp::BnApply {
            rows: r,
            channels,
            epsilon,
            act,
            source,
            residual,
            pool,
        } => norm::bn_apply(c, *r, *channels, *epsilon, *act, *source, *residual, pool.as_ref())?,
        KernelOp::BnGradInput {
            rows: r,
            channels,
            epsilon,
        } => norm::bn_backward(
            c,
            *r,
            *channels,
            *epsilon,
            Activation::Linear,
            Mask::None,
            true,
            false,
            false,
        )?,
        KernelOp::BnGradGamma {
            rows: r,
            channels,
            epsilon,
        } => norm::bn_backward(
            c,
            *r,
            *channels,
            *epsilon,
            Activation::Linear,
            Mask::None,
            false,
            true,
            false,
        )?,
        KernelOp::BnActBackward {
            rows: r,
            channels,
            epsilon,
            act,
            grad_gamma,
            grad_beta,
            mask_from_x,
        } => {
            let mask = if *mask_from_x { Mask::FromX } else { Mask::of(*act) };
            norm::bn_backward(c, *r, *channels, *epsilon, *act, mask, true, *grad_gamma, *grad_beta)?
        }
        KernelOp::MovingAverage {
            channels,
            momentum,
            moment,
        } => norm::moving_average(c, *channels, *momentum, *moment, in_place),
        KernelOp::Loss {
            kind,
            from_logits,
            rows: r,
            cols,
        } => norm::loss(c, *kind, *from_logits, *r, *cols),
        KernelOp::LossGrad {
            kind,
            from_logits,
            rows: r,
            cols,
        } => norm::loss_grad(c, *kind, *from_logits, *r, *cols),
        KernelOp::SoftmaxXent {
            rows: r,
            classes,
            sparse,
            probs,
        } => norm::softmax_xent(c, *r, *classes, *sparse, *probs),
        KernelOp::Concat { rows: r, parts } => rows::concat(c, *r, parts),
        KernelOp::SliceChannels {
            rows: r,
            channels,
            offset,
            len,
        } => rows::slice_channels(c, *r, *channels, *offset, *len)?,
        KernelOp::OptimizerUpdate { .. } => return Err("optimiser updates have their own emitter".into()),
    }
    Ok(())
}
