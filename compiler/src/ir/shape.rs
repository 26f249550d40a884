//! Shape inference: the output shape of every op from its input shapes, or why there is none.

use thiserror::Error;

use super::graph::{NodeId, Shape};
use super::op::{LossKind, Op, Pad2d, Window2d};

/// Why an op cannot be applied to its inputs. The front end adds the layer name and file.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ShapeError {
    #[error("input {0} does not exist")]
    DanglingInput(NodeId),
    #[error("{op} takes {expected} input(s), got {found}")]
    Arity {
        op: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ShapeError {
    ShapeError::Invalid(msg.into())
}

/// Output extent of a window along one axis, or an error naming the axis.
fn window_out(len: usize, pad_lo: usize, pad_hi: usize, k: usize, s: usize) -> Option<usize> {
    let padded = len + pad_lo + pad_hi;
    if s == 0 || k == 0 || padded < k {
        None
    } else {
        Some((padded - k) / s + 1)
    }
}

/// Output `[OH, OW]` of a 2-D window over `[H, W]`.
pub fn window_hw(hw: [usize; 2], k: [usize; 2], s: [usize; 2], p: Pad2d) -> Result<[usize; 2], ShapeError> {
    let oh = window_out(hw[0], p.top, p.bottom, k[0], s[0]);
    let ow = window_out(hw[1], p.left, p.right, k[1], s[1]);
    match (oh, ow) {
        (Some(oh), Some(ow)) => Ok([oh, ow]),
        _ => Err(invalid(format!(
            "a {}x{} window with strides {}x{} on a {}x{} map would produce 0x0",
            k[0], k[1], s[0], s[1], hw[0], hw[1]
        ))),
    }
}

fn rank4<'a>(s: &'a Shape, what: &str) -> Result<&'a [usize], ShapeError> {
    if s.rank() == 4 {
        Ok(s.dims())
    } else {
        Err(invalid(format!("{what} needs a 4-D [N, H, W, C] input, got {s}")))
    }
}

fn same(a: &Shape, b: &Shape, what: &str) -> Result<(), ShapeError> {
    if a == b {
        Ok(())
    } else {
        Err(invalid(format!("{what} needs equal shapes, got {a} and {b}")))
    }
}

fn channels_vec(s: &Shape, c: usize, what: &str) -> Result<(), ShapeError> {
    if s.dims() == [c] {
        Ok(())
    } else {
        Err(invalid(format!("{what} must be [{c}], got {s}")))
    }
}

fn pool_shape(x: &Shape, w: &Window2d, what: &str) -> Result<Shape, ShapeError> {
    let d = rank4(x, what)?;
    let [oh, ow] = window_hw([d[1], d[2]], w.size, w.strides, w.pad)?;
    Ok(Shape(vec![d[0], oh, ow, d[3]]))
}

/// Infers the output shape of `op` applied to inputs of shapes `ins`. `given` supplies the
/// shape of leaves and of `Reshape`, and must be `None` for every other op.
pub fn infer_shape(op: &Op, ins: &[&Shape], given: Option<Shape>) -> Result<Shape, ShapeError> {
    if let Some(n) = op.arity() {
        if ins.len() != n {
            return Err(ShapeError::Arity {
                op: op.mnemonic(),
                expected: n,
                found: ins.len(),
            });
        }
    }
    let needs_given = op.is_leaf() || matches!(op, Op::Reshape);
    match (&given, needs_given) {
        (None, true) => return Err(invalid(format!("{} needs an explicit shape", op.mnemonic()))),
        (Some(_), false) => {
            return Err(invalid(format!(
                "{} infers its shape; none may be given",
                op.mnemonic()
            )))
        }
        _ => {}
    }
    let out = match op {
        Op::Input | Op::Target | Op::Param { .. } | Op::Constant(_) => given.unwrap_or_default(),
        Op::Reshape => {
            let to = given.unwrap_or_default();
            if to.numel() != ins[0].numel() {
                return Err(invalid(format!(
                    "cannot reshape {} ({} elements) to {} ({} elements)",
                    ins[0],
                    ins[0].numel(),
                    to,
                    to.numel()
                )));
            }
            to
        }
        Op::Conv2d { strides, pad } => {
            let x = rank4(ins[0], "conv2d")?;
            let k = ins[1].dims();
            if k.len() != 4 || k[2] != x[3] {
                return Err(invalid(format!(
                    "conv2d kernel {} does not fit input {}",
                    ins[1], ins[0]
                )));
            }
            let [oh, ow] = window_hw([x[1], x[2]], [k[0], k[1]], *strides, *pad)?;
            Shape(vec![x[0], oh, ow, k[3]])
        }
        Op::Conv2dGradInput { strides, pad, input_hw } => {
            let dy = rank4(ins[0], "conv2d_grad_input")?;
            let k = ins[1].dims();
            if k.len() != 4 || k[3] != dy[3] {
                return Err(invalid(format!("kernel {} does not fit gradient {}", ins[1], ins[0])));
            }
            let o = window_hw(*input_hw, [k[0], k[1]], *strides, *pad)?;
            if o != [dy[1], dy[2]] {
                return Err(invalid(format!(
                    "gradient {} does not match input size {:?}",
                    ins[0], input_hw
                )));
            }
            Shape(vec![dy[0], input_hw[0], input_hw[1], k[2]])
        }
        Op::Conv2dGradKernel {
            strides,
            pad,
            kernel_hw,
        } => {
            let x = rank4(ins[0], "conv2d_grad_kernel")?;
            let dy = rank4(ins[1], "conv2d_grad_kernel")?;
            let o = window_hw([x[1], x[2]], *kernel_hw, *strides, *pad)?;
            if o != [dy[1], dy[2]] || x[0] != dy[0] {
                return Err(invalid(format!("gradient {} does not match input {}", ins[1], ins[0])));
            }
            Shape(vec![kernel_hw[0], kernel_hw[1], x[3], dy[3]])
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            let (a, b) = (ins[0].dims(), ins[1].dims());
            if a.len() != 2 || b.len() != 2 {
                return Err(invalid(format!(
                    "matmul needs 2-D operands, got {} and {}",
                    ins[0], ins[1]
                )));
            }
            let (m, ka) = if *transpose_a { (a[1], a[0]) } else { (a[0], a[1]) };
            let (kb, n) = if *transpose_b { (b[1], b[0]) } else { (b[0], b[1]) };
            if ka != kb {
                return Err(invalid(format!("matmul inner sizes differ: {} and {}", ins[0], ins[1])));
            }
            Shape(vec![m, n])
        }
        Op::BiasAdd => {
            channels_vec(ins[1], ins[0].channels(), "bias")?;
            ins[0].clone()
        }
        Op::Act(_) | Op::Dropout { .. } => ins[0].clone(),
        Op::ActGrad(_) => {
            same(ins[0], ins[1], "act_grad")?;
            ins[0].clone()
        }
        Op::MaxPool2d(w) => pool_shape(ins[0], w, "max_pooling2d")?,
        Op::AvgPool2d(w) => pool_shape(ins[0], w, "average_pooling2d")?,
        Op::MaxPool2dGrad(w) => {
            let y = pool_shape(ins[0], w, "max_pool2d_grad")?;
            same(&y, ins[1], "max_pool2d_grad")?;
            ins[0].clone()
        }
        Op::AvgPool2dGrad { window, input_hw } => {
            let dy = rank4(ins[0], "avg_pool2d_grad")?;
            let x = Shape(vec![dy[0], input_hw[0], input_hw[1], dy[3]]);
            same(&pool_shape(&x, window, "avg_pool2d_grad")?, ins[0], "avg_pool2d_grad")?;
            x
        }
        Op::GlobalAvgPool => {
            let x = rank4(ins[0], "global_average_pooling2d")?;
            Shape(vec![x[0], x[3]])
        }
        Op::GlobalAvgPoolGrad { input_hw } => {
            let d = ins[0].dims();
            if d.len() != 2 {
                return Err(invalid(format!("global_avg_pool_grad needs [N, C], got {}", ins[0])));
            }
            Shape(vec![d[0], input_hw[0], input_hw[1], d[1]])
        }
        Op::Add => {
            same(ins[0], ins[1], "add")?;
            ins[0].clone()
        }
        Op::Concat => {
            let first = ins
                .first()
                .ok_or_else(|| invalid("concatenate needs at least one input"))?;
            let lead = &first.dims()[..first.rank().saturating_sub(1)];
            let mut c = 0;
            for s in ins {
                if s.rank() != first.rank() || &s.dims()[..s.rank() - 1] != lead {
                    return Err(invalid(format!(
                        "concatenate needs inputs equal but for the channel axis, got {first} and {s}"
                    )));
                }
                c += s.channels();
            }
            let mut d = lead.to_vec();
            d.push(c);
            Shape(d)
        }
        Op::SliceChannels { offset, len } => {
            let c = ins[0].channels();
            if offset + len > c || *len == 0 {
                return Err(invalid(format!("channel slice {offset}..{} out of {c}", offset + len)));
            }
            let mut d = ins[0].dims().to_vec();
            *d.last_mut().unwrap_or(&mut 0) = *len;
            Shape(d)
        }
        Op::BatchNormInference { .. } => {
            let c = ins[0].channels();
            for (s, what) in ins[1..].iter().zip(["gamma", "beta", "moving_mean", "moving_variance"]) {
                channels_vec(s, c, what)?;
            }
            ins[0].clone()
        }
        Op::Moments => Shape(vec![2, ins[0].channels()]),
        Op::BatchNormTrain { .. } => {
            let c = ins[0].channels();
            if ins[1].dims() != [2, c] {
                return Err(invalid(format!("moments must be [2, {c}], got {}", ins[1])));
            }
            channels_vec(ins[2], c, "gamma")?;
            channels_vec(ins[3], c, "beta")?;
            ins[0].clone()
        }
        Op::MovingAverage { .. } => {
            let c = ins[0].channels();
            if ins[0].rank() != 1 || ins[1].dims() != [2, c] {
                return Err(invalid(format!("moving average of {} with moments {}", ins[0], ins[1])));
            }
            ins[0].clone()
        }
        Op::BatchNormGradInput { .. } => {
            let c = ins[0].channels();
            if ins[1].dims() != [2, c] {
                return Err(invalid(format!("moments must be [2, {c}], got {}", ins[1])));
            }
            channels_vec(ins[2], c, "gamma")?;
            same(ins[0], ins[3], "batch_norm_grad_input")?;
            ins[0].clone()
        }
        Op::BatchNormGradGamma { .. } => {
            let c = ins[0].channels();
            if ins[1].dims() != [2, c] {
                return Err(invalid(format!("moments must be [2, {c}], got {}", ins[1])));
            }
            same(ins[0], ins[2], "batch_norm_grad_gamma")?;
            Shape(vec![c])
        }
        Op::ReduceToChannels => Shape(vec![ins[0].channels()]),
        Op::Loss { kind, .. } | Op::LossGrad { kind, .. } => {
            let (p, t) = (ins[0], ins[1]);
            let ok = match kind {
                LossKind::SparseCategoricalCrossentropy => p.rank() == 2 && t.dims() == [p.dims()[0]],
                LossKind::CategoricalCrossentropy => p.rank() == 2 && p == t,
                LossKind::MeanSquaredError => p == t,
            };
            if !ok {
                return Err(invalid(format!(
                    "{} cannot compare prediction {p} with target {t}",
                    kind.keras_name()
                )));
            }
            if matches!(op, Op::Loss { .. }) {
                Shape(vec![])
            } else {
                p.clone()
            }
        }
    };
    Ok(out)
}
