//! The GEMM-shaped templates: convolution forward (with its epilogue), both convolution
//! gradients, and the GEMM. The runtime kernels apply bias, an elementwise activation and BN
//! statistics per tile; a residual add or a softmax (which must follow the bias and precede the
//! activation or the statistics) runs as a pass over the output right after, and a fused
//! max-pool reduces the unpooled map from the workspace.

use cnnc_runtime::kernels::conv::ConvGeom as RtConv;
use cnnc_runtime::kernels::pool2d::{self, PoolGeom as RtPool};
use cnnc_runtime::kernels::{
    conv2d_forward, conv2d_forward_packed, conv2d_forward_pooled, conv2d_grad_input, conv2d_grad_kernel,
    conv2d_grad_kernel_small, elementwise as ew, gemm, max_pool_grad_argmax, norm, pooled_conv_workspace,
    small_conv_applies, softmax, Ctx, Epilogue, GemmGeom, SmallDy,
};

use super::compiled::{Mem, Step};
use super::dispatch::{act, act_of, pad};
use crate::ir::Activation;
use crate::kernel_ir::kernel::{pool_tiles, pooled_hw};
use crate::kernel_ir::{ConvGeom, Epilogue as IrEpilogue, KernelOp};

/// The runtime geometry of a convolution template.
pub(super) fn conv_geom(g: &ConvGeom) -> RtConv {
    RtConv::new(g.n, g.in_hw, g.c, g.kernel_hw, g.f, g.strides, pad(g.pad))
}

fn check_conv(g: &ConvGeom) -> Result<(), String> {
    let r = conv_geom(g);
    let fits = g.in_hw[0] + g.pad.top + g.pad.bottom >= g.kernel_hw[0]
        && g.in_hw[1] + g.pad.left + g.pad.right >= g.kernel_hw[1];
    if !fits || g.strides.contains(&0) || g.kernel_hw.contains(&0) || [r.oh, r.ow] != g.out_hw {
        return Err(format!(
            "convolution geometry {:?} does not give the output {:?}",
            r, g.out_hw
        ));
    }
    Ok(())
}

/// The pooling window fused into a conv epilogue, over the conv's output.
fn fused_pool(g: &ConvGeom, e: &IrEpilogue) -> Option<RtPool> {
    let w = e.max_pool?;
    Some(RtPool::new(g.n, g.out_hw, g.f, w.size, w.strides, pad(w.pad)))
}

/// `[ph, pw]` of the fused pool as the IR computes it.
fn pooled(g: &ConvGeom, e: &IrEpilogue) -> [usize; 2] {
    e.max_pool.map_or([0, 0], |w| pooled_hw(g.out_hw, &w))
}

/// See `dispatch::check`.
pub(super) fn check(op: &KernelOp) -> Result<usize, String> {
    match op {
        KernelOp::Conv2d { geom, epilogue, .. } => {
            check_conv(geom)?;
            if epilogue.act == Activation::Softmax {
                return Err("softmax in a convolution epilogue".into());
            }
            if epilogue.argmax && (epilogue.max_pool.is_none() || epilogue.residual) {
                return Err("argmax without a max-pool, or after a residual add".into());
            }
            if epilogue.max_pool.is_some() && epilogue.bn_stats {
                return Err("BN statistics of a max-pooled convolution".into());
            }
            Ok(match fused_pool(geom, epilogue) {
                Some(p) if [p.oh, p.ow] != pooled(geom, epilogue) || p.oh == 0 || p.ow == 0 => {
                    return Err("the fused pooling window does not fit the convolution's output".into())
                }
                Some(_) if epilogue.residual => geom.output_len(),
                Some(_) => pooled_conv_workspace(&conv_geom(geom)),
                None => 0,
            })
        }
        KernelOp::ConvGradInput { geom } | KernelOp::ConvGradKernel { geom, pooled: None, .. } => {
            check_conv(geom).map(|_| 0)
        }
        KernelOp::ConvGradKernel {
            geom, pooled: Some(pd), ..
        } => {
            check_conv(geom)?;
            if !pool_tiles(geom.out_hw, &pd.window) {
                return Err("a pooled kernel gradient over windows that do not tile the output".into());
            }
            act_of(pd.act_grad.unwrap_or(Activation::Linear))?;
            // The unpooled gradient, rebuilt when no fused kernel applies.
            Ok(geom.output_len())
        }
        KernelOp::Gemm { epilogue, .. } if epilogue.max_pool.is_some() => Err("max-pool in a GEMM epilogue".into()),
        KernelOp::Gemm { epilogue, .. } => {
            if epilogue.act != Activation::Softmax {
                act_of(epilogue.act)?;
            }
            Ok(0)
        }
        _ => Ok(0),
    }
}

/// Runs a GEMM-shaped product (`product(epilogue, y)`) into `y [rows, n]` followed by the rest
/// of the IR epilogue: bias, residual, activation, statistics — in that order.
///
/// BN statistics come out of the product's epilogue (per group of rows, centred, combined in a
/// fixed order: see `kernels::epilogue`), except after a residual add or a softmax, which
/// happen after the product: then a separate shifted pass (`norm::moments`) takes them.
#[allow(clippy::too_many_arguments)]
fn with_epilogue(
    ctx: &Ctx,
    rows: usize,
    n: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    activation: Activation,
    moments: Option<&mut [f32]>,
    y: &mut [f32],
    product: impl FnOnce(Epilogue, &mut [f32]),
) {
    let softmax = activation == Activation::Softmax;
    let mut epi = Epilogue::none();
    if let Some(b) = bias {
        epi = epi.with_bias(b);
    }
    let mut moments = moments;
    if residual.is_none() && !softmax {
        epi = epi.with_act(act(activation));
        if let Some(mo) = moments.take() {
            epi = epi.with_moments(mo);
        }
    }
    product(epi, y);
    if let Some(r) = residual {
        ew::add_act_in_place(
            ctx,
            if softmax {
                act(Activation::Linear)
            } else {
                act(activation)
            },
            y,
            r,
        );
    }
    if softmax {
        softmax::softmax_in_place(ctx, rows, n, y);
    }
    if let Some(mo) = moments {
        norm::moments(ctx, rows, n, y, mo);
    }
}

/// The bias and residual operands of an epilogue, after the two main inputs.
fn extras<'m>(s: &Step, m: &'m Mem, e: &IrEpilogue) -> (Option<&'m [f32]>, Option<&'m [f32]>) {
    let bias = e.bias.then(|| m.get(s.ins[2]));
    let residual = e.residual.then(|| m.get(s.ins[2 + usize::from(e.bias)]));
    (bias, residual)
}

pub(super) fn run(s: &Step, m: &Mem, ctx: &Ctx, ws: &mut [f32]) {
    let (i, o) = (&s.ins, &s.outs);
    match &s.op {
        KernelOp::Conv2d { geom, epilogue: e, .. } => {
            let g = conv_geom(geom);
            let (x, w) = (m.get(i[0]), m.get(i[1]));
            let (bias, residual) = extras(s, m, e);
            let moments = e.bn_stats.then(|| m.get_mut(o[1]));
            let pack = s.session_pack.borrow();
            let conv = |epi: Epilogue, y: &mut [f32]| match pack.as_ref() {
                Some(p) => conv2d_forward_packed(ctx, &g, x, p, epi, y),
                None => conv2d_forward(ctx, &g, x, w, epi, y),
            };
            match fused_pool(geom, e) {
                None => with_epilogue(ctx, g.m(), g.f, bias, residual, e.act, moments, m.get_mut(o[0]), conv),
                // Pooled chunk by chunk of images while the unpooled map is in cache.
                Some(p) if residual.is_none() => {
                    let mut epi = Epilogue::none().with_act(act(e.act));
                    if let Some(b) = bias {
                        epi = epi.with_bias(b);
                    }
                    let argmax = e.argmax.then(|| m.get_mut(o[1]));
                    conv2d_forward_pooled(ctx, &g, x, w, epi, &p, m.get_mut(o[0]), argmax, ws);
                }
                Some(p) => {
                    let tmp = &mut ws[..g.output_len()];
                    with_epilogue(ctx, g.m(), g.f, bias, residual, e.act, moments, tmp, conv);
                    pool2d::max_pool(ctx, &p, tmp, m.get_mut(o[0]));
                }
            }
        }
        KernelOp::ConvGradInput { geom } => {
            conv2d_grad_input(ctx, &conv_geom(geom), m.get(i[0]), m.get(i[1]), m.get_mut(o[0]));
        }
        KernelOp::ConvGradKernel {
            geom,
            bias_grad,
            pooled,
        } => {
            let g = conv_geom(geom);
            let db = bias_grad.then(|| m.get_mut(o[1]));
            let (x, dw) = (m.get(i[0]), m.get_mut(o[0]));
            match pooled {
                None => conv2d_grad_kernel(ctx, &g, x, m.get(i[1]), dw, db),
                Some(pd) => {
                    // (x, argmax, [y], dy): y only with a non-linear activation.
                    let a = act(pd.act_grad.unwrap_or(Activation::Linear));
                    let (argmax, y, dy) = if pd.reads_y() {
                        (m.get(i[1]), m.get(i[2]), m.get(i[3]))
                    } else {
                        // A linear activation's derivative ignores y: dy stands in for it.
                        (m.get(i[1]), m.get(i[2]), m.get(i[2]))
                    };
                    let w = pd.window;
                    let p = RtPool::new(g.n, [g.oh, g.ow], g.f, w.size, w.strides, pad(w.pad));
                    if small_conv_applies(ctx.isa, &g) {
                        // The unpooled gradient is rebuilt chunk by chunk inside the kernel.
                        let pooled = SmallDy::Pooled {
                            pool: &p,
                            argmax,
                            y,
                            dy,
                            act: a,
                        };
                        conv2d_grad_kernel_small(ctx, &g, x, pooled, dw, db);
                    } else {
                        let full = &mut ws[..g.output_len()]; // [n, oh, ow, f]
                        max_pool_grad_argmax(ctx, &p, argmax, y, dy, a, full);
                        conv2d_grad_kernel(ctx, &g, x, full, dw, db);
                    }
                }
            }
        }
        KernelOp::Gemm {
            m: rows,
            n,
            k,
            trans_a,
            trans_b,
            epilogue: e,
            bias_grad,
        } => {
            let g = GemmGeom {
                m: *rows,
                n: *n,
                k: *k,
                trans_a: *trans_a,
                trans_b: *trans_b,
            };
            let (a, b) = (m.get(i[0]), m.get(i[1]));
            let (bias, residual) = extras(s, m, e);
            let moments = e.bn_stats.then(|| m.get_mut(o[1]));
            let product = |epi: Epilogue, y: &mut [f32]| gemm(ctx, &g, a, b, y, false, epi);
            with_epilogue(ctx, *rows, *n, bias, residual, e.act, moments, m.get_mut(o[0]), product);
            if *bias_grad {
                let db = m.get_mut(o[1 + usize::from(e.bn_stats)]);
                if *trans_b {
                    ew::reduce_cols(*n, *k, b, db);
                } else {
                    ew::reduce_rows(ctx, *k, *n, b, db);
                }
            }
        }
        _ => {}
    }
}
