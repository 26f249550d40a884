//! A readable text form of a program: its buffers (kind, shape, arena offset), one line per
//! kernel (stage, template, operands, constant shapes, epilogue, schedule, source layers) and
//! its outputs. Used by `CNNC_DUMP_IR` and the IR file tests.

use std::fmt::Write;

use crate::ir::{Activation, Mode, Pad2d, Window2d};

use super::kernel::{BnSource, ConvGeom, Epilogue, EwOp, Kernel, KernelOp, PoolGeom, PoolKind};
use super::program::{BufId, BufKind, Buffer, OutRole, Program};
use super::schedule::Schedule;

fn hw(v: [usize; 2]) -> String {
    format!("{}x{}", v[0], v[1])
}

fn pad(p: &Pad2d) -> String {
    format!("pad={},{},{},{}", p.top, p.bottom, p.left, p.right)
}

fn window(w: &Window2d) -> String {
    format!("window={} strides={} {}", hw(w.size), hw(w.strides), pad(&w.pad))
}

fn conv(g: &ConvGeom) -> String {
    format!(
        "n={} in={}x{} kernel={}x{}x{} strides={} {} out={}",
        g.n,
        hw(g.in_hw),
        g.c,
        hw(g.kernel_hw),
        g.c,
        g.f,
        hw(g.strides),
        pad(&g.pad),
        hw(g.out_hw)
    )
}

fn pool(kind: PoolKind, g: &PoolGeom) -> String {
    let k = match kind {
        PoolKind::Max => "max",
        PoolKind::Avg => "avg",
        PoolKind::GlobalAvg => "global_avg",
    };
    format!(
        "{k} n={} in={}x{} {} out={}",
        g.n,
        hw(g.in_hw),
        g.c,
        window(&g.window),
        hw(g.out_hw)
    )
}

fn act(a: Activation) -> &'static str {
    a.keras_name()
}

fn epilogue(e: &Epilogue) -> String {
    let mut s = String::new();
    if e.bias {
        s.push_str(" +bias");
    }
    if e.residual {
        s.push_str(" +residual");
    }
    if e.act != Activation::Linear {
        let _ = write!(s, " +{}", act(e.act));
    }
    if e.bn_stats {
        s.push_str(" +bn_stats");
    }
    if let Some(w) = &e.max_pool {
        let _ = write!(s, " +max_pool({}/{})", hw(w.size), hw(w.strides));
    }
    if e.argmax {
        s.push_str(" +argmax");
    }
    s
}

/// The template's constants, as words.
fn attrs(op: &KernelOp) -> String {
    match op {
        KernelOp::Conv2d {
            geom,
            epilogue: e,
            winograd_u,
        } => {
            let u = winograd_u.map_or(String::new(), |t| format!(" kernel=u({t})"));
            format!("{}{}{u}", conv(geom), epilogue(e))
        }
        KernelOp::WinogradKernel { c, f, tile } => format!("kernel=3x3x{c}x{f} u={tile}"),
        KernelOp::ConvGradInput { geom } => conv(geom),
        KernelOp::ConvGradKernel {
            geom,
            bias_grad,
            pooled,
        } => {
            let mut d = format!("{}{}", conv(geom), if *bias_grad { " +bias_grad" } else { "" });
            if let Some(pd) = pooled {
                let _ = write!(d, " +pooled_dy({}/{})", hw(pd.window.size), hw(pd.window.strides));
                if let Some(a) = pd.act_grad {
                    let _ = write!(d, " +act_grad={}", act(a));
                }
            }
            d
        }
        KernelOp::Gemm {
            m,
            n,
            k,
            trans_a,
            trans_b,
            epilogue: e,
            bias_grad,
        } => format!(
            "m={m} n={n} k={k}{}{}{}{}",
            if *trans_a { " ta" } else { "" },
            if *trans_b { " tb" } else { "" },
            epilogue(e),
            if *bias_grad { " +bias_grad" } else { "" }
        ),
        KernelOp::Pool { kind, geom } => pool(*kind, geom),
        KernelOp::PoolGrad { kind, geom, act_grad } => {
            let mut d = pool(*kind, geom);
            if let Some(a) = act_grad {
                d.push_str(&format!(" +act_grad={}", act(*a)));
            }
            d
        }
        KernelOp::MaxPoolGradArgmax { geom, act_grad } => {
            let mut d = pool(PoolKind::Max, geom);
            if let Some(a) = act_grad {
                d.push_str(&format!(" +act_grad={}", act(*a)));
            }
            d
        }
        KernelOp::Elementwise { op, len, channels } => {
            let what = match op {
                EwOp::Act(a) | EwOp::ActGrad(a) => format!("{} ", act(*a)),
                EwOp::Dropout { rate, seed } => format!("rate={rate} seed={seed} "),
                EwOp::Fill(v) => format!("value={v} "),
                EwOp::BiasAdd | EwOp::Add | EwOp::Copy => String::new(),
            };
            format!("{what}len={len} channels={channels}")
        }
        KernelOp::Softmax { rows, cols } | KernelOp::SoftmaxGrad { rows, cols } => format!("rows={rows} cols={cols}"),
        KernelOp::Reduce { rows, channels } | KernelOp::Moments { rows, channels } => {
            format!("rows={rows} channels={channels}")
        }
        KernelOp::BnApply {
            rows,
            channels,
            epsilon,
            act: a,
            source,
            residual,
            pool,
        } => {
            let src = match source {
                BnSource::Batch => "batch",
                BnSource::Moving => "moving",
            };
            let a = if *a == Activation::Linear {
                String::new()
            } else {
                format!(" +{}", act(*a))
            };
            let r = if *residual { " +residual" } else { "" };
            let p = match pool {
                Some(g) => format!(
                    " +max_pool({}/{}) +argmax n={} in={}x{}",
                    hw(g.window.size),
                    hw(g.window.strides),
                    g.n,
                    g.in_hw[0],
                    g.in_hw[1]
                ),
                None => String::new(),
            };
            format!("{src} rows={rows} channels={channels} epsilon={epsilon}{r}{a}{p}")
        }
        KernelOp::BnGradInput {
            rows,
            channels,
            epsilon,
        }
        | KernelOp::BnGradGamma {
            rows,
            channels,
            epsilon,
        } => {
            format!("rows={rows} channels={channels} epsilon={epsilon}")
        }
        KernelOp::BnActBackward {
            rows,
            channels,
            epsilon,
            act: a,
            grad_gamma,
            grad_beta,
            mask_from_x,
        } => format!(
            "{} rows={rows} channels={channels} epsilon={epsilon}{}{}{}",
            act(*a),
            if *grad_gamma { " +dgamma" } else { "" },
            if *grad_beta { " +dbeta" } else { "" },
            if *mask_from_x { " mask=x" } else { "" }
        ),
        KernelOp::MovingAverage {
            channels,
            momentum,
            moment,
        } => format!(
            "{} channels={channels} momentum={momentum}",
            format!("{moment:?}").to_lowercase()
        ),
        KernelOp::Loss {
            kind,
            from_logits,
            rows,
            cols,
        }
        | KernelOp::LossGrad {
            kind,
            from_logits,
            rows,
            cols,
        } => format!(
            "{}{} rows={rows} cols={cols}",
            kind.keras_name(),
            if *from_logits { " from_logits" } else { "" }
        ),
        KernelOp::SoftmaxXent {
            rows,
            classes,
            sparse,
            probs,
        } => format!(
            "{} rows={rows} classes={classes}{}",
            if *sparse { "sparse" } else { "dense" },
            if *probs { " +probs" } else { "" }
        ),
        KernelOp::Concat { rows, parts } => format!("rows={rows} parts={parts:?}"),
        KernelOp::SliceChannels {
            rows,
            channels,
            offset,
            len,
        } => format!("rows={rows} channels={channels} offset={offset} len={len}"),
        KernelOp::OptimizerUpdate { rule, len } => format!("{rule} len={len}"),
    }
}

fn ids(v: &[BufId]) -> String {
    v.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ")
}

fn buffer_line(id: BufId, b: &Buffer) -> String {
    let mut s = format!("  {id} {}", b.kind.name());
    match &b.kind {
        BufKind::Scratch => {
            let _ = write!(s, " {}B", b.bytes());
        }
        BufKind::Constant(v) => {
            let _ = write!(s, "({v}) {}", b.shape);
        }
        BufKind::View { of } => {
            let _ = write!(s, " {} of {of}", b.shape);
        }
        BufKind::OptState { param, slot } => {
            let _ = write!(s, " {} {slot} of {param}", b.shape);
        }
        _ => {
            let _ = write!(s, " {}", b.shape);
        }
    }
    let _ = write!(s, " \"{}\"", b.name);
    if let Some(o) = b.offset {
        let _ = write!(s, " @{o}");
    }
    s
}

/// A template with its schedule, without operands: `gemm m=.. +bias +relu | schedule`.
pub fn op_line(op: &KernelOp, s: &Schedule) -> String {
    let attrs = attrs(op);
    if attrs.is_empty() {
        format!("{} | {s}", op.mnemonic())
    } else {
        format!("{} {attrs} | {s}", op.mnemonic())
    }
}

/// One kernel: `k3 forward gemm(b7, b8, b9) -> (b10) m=.. +bias +relu | schedule | scratch ; layers`.
pub fn kernel_line(i: usize, k: &Kernel) -> String {
    let mut s = format!(
        "  k{i} {} {}({}) -> ({}) {} | {}",
        k.stage.name(),
        k.op.mnemonic(),
        ids(&k.inputs),
        ids(&k.outputs),
        attrs(&k.op),
        k.schedule
    );
    if let Some(b) = k.scratch {
        let _ = write!(s, " scratch={b}");
    }
    if !k.origin.is_empty() {
        let _ = write!(s, " ; {}", k.origin.join(", "));
    }
    s
}

pub fn dump(p: &Program) -> String {
    let mode = match p.mode {
        Mode::Inference => "inference",
        Mode::Training => "training",
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "program {} batch={} {mode} machine=[{}] arena={}",
        p.name,
        p.batch,
        p.machine,
        p.arena_bytes()
    );
    let _ = writeln!(s, "buffers:");
    for id in p.ids() {
        let _ = writeln!(s, "{}", buffer_line(id, p.buffer(id)));
    }
    let _ = writeln!(s, "kernels:");
    for (i, k) in p.kernels.iter().enumerate() {
        let _ = writeln!(s, "{}", kernel_line(i, k));
    }
    for o in &p.outputs {
        let role = match o.role {
            OutRole::Prediction => "prediction".to_string(),
            OutRole::Loss => "loss".to_string(),
            OutRole::Gradient { param } => format!("grad({param})"),
            OutRole::StateUpdate { param } => format!("update({param})"),
        };
        let _ = writeln!(s, "  output {role} = {}", o.buf);
    }
    s
}
