//! A readable text form of the graph, used by `CNNC_DUMP_IR` and the IR file tests.

use std::fmt::Write;

use super::graph::{Graph, Mode, OutputRole};
use super::op::{Op, Pad2d, Window2d};

fn pad(p: &Pad2d) -> String {
    format!("pad={},{},{},{}", p.top, p.bottom, p.left, p.right)
}

fn window(w: &Window2d) -> String {
    format!(
        "size={}x{} strides={}x{} {}",
        w.size[0],
        w.size[1],
        w.strides[0],
        w.strides[1],
        pad(&w.pad)
    )
}

/// The op's attributes as `key=value` words.
fn attrs(op: &Op) -> String {
    match op {
        Op::Param { name, role, init } => format!("\"{name}\" {} init={init}", role.keras_suffix()),
        Op::Constant(v) => format!("{v}"),
        Op::Conv2d { strides, pad: p } => format!("strides={}x{} {}", strides[0], strides[1], pad(p)),
        Op::Conv2dGradInput {
            strides,
            pad: p,
            input_hw,
        } => {
            format!(
                "strides={}x{} {} input={}x{}",
                strides[0],
                strides[1],
                pad(p),
                input_hw[0],
                input_hw[1]
            )
        }
        Op::Conv2dGradKernel {
            strides,
            pad: p,
            kernel_hw,
        } => {
            format!(
                "strides={}x{} {} kernel={}x{}",
                strides[0],
                strides[1],
                pad(p),
                kernel_hw[0],
                kernel_hw[1]
            )
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            let mut s = String::new();
            if *transpose_a {
                s.push_str("ta ");
            }
            if *transpose_b {
                s.push_str("tb");
            }
            s.trim_end().to_string()
        }
        Op::Act(a) | Op::ActGrad(a) => a.keras_name().to_string(),
        Op::MaxPool2d(w) | Op::AvgPool2d(w) | Op::MaxPool2dGrad(w) => window(w),
        Op::AvgPool2dGrad { window: w, .. } => window(w),
        Op::Dropout { rate, seed } => format!("rate={rate} seed={seed}"),
        Op::BatchNormInference { epsilon }
        | Op::BatchNormTrain { epsilon }
        | Op::BatchNormGradInput { epsilon }
        | Op::BatchNormGradGamma { epsilon } => format!("epsilon={epsilon}"),
        Op::MovingAverage { momentum, moment } => format!("momentum={momentum} {moment:?}").to_lowercase(),
        Op::Loss { kind, from_logits } | Op::LossGrad { kind, from_logits } => {
            format!(
                "{}{}",
                kind.keras_name(),
                if *from_logits { " from_logits" } else { "" }
            )
        }
        Op::SliceChannels { offset, len } => format!("offset={offset} len={len}"),
        Op::Input
        | Op::Target
        | Op::BiasAdd
        | Op::GlobalAvgPool
        | Op::GlobalAvgPoolGrad { .. }
        | Op::Reshape
        | Op::Add
        | Op::Concat
        | Op::Moments
        | Op::ReduceToChannels => String::new(),
    }
}

/// One line per node: `%i = op(inputs) attrs : shape  ; layer`, then the outputs.
pub fn dump(g: &Graph) -> String {
    let mut s = String::new();
    let mode = match g.mode {
        Mode::Inference => "inference",
        Mode::Training => "training",
    };
    let _ = writeln!(s, "graph {} batch={} {mode}", g.name, g.batch);
    for (i, n) in g.nodes.iter().enumerate() {
        let ins: Vec<String> = n.inputs.iter().map(|x| x.to_string()).collect();
        let a = attrs(&n.op);
        let _ = write!(s, "  %{i} = {}({})", n.op.mnemonic(), ins.join(", "));
        if !a.is_empty() {
            let _ = write!(s, " {a}");
        }
        let _ = write!(s, " : {}", n.shape);
        if !n.layer.is_empty() {
            let _ = write!(s, "  ; {}", n.layer);
        }
        s.push('\n');
    }
    for o in &g.outputs {
        let role = match &o.role {
            OutputRole::Prediction => "prediction".to_string(),
            OutputRole::Loss => "loss".to_string(),
            OutputRole::Gradient { param } => format!("grad({param})"),
            OutputRole::StateUpdate { param } => format!("update({param})"),
        };
        let _ = writeln!(s, "  output {role} = {}", o.node);
    }
    s
}
