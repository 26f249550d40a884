//! Kernel templates: each [`KernelOp`] variant is one fixed loop nest whose bounds are the
//! constants it carries; a [`Kernel`] instantiates it on buffers with a [`Schedule`].
//!
//! Every variant's doc lists its operands as `(inputs) -> (outputs)`; `[..]` marks an operand
//! present only when the flag named beside it is set. Layouts are the graph IR's: NHWC
//! activations, HWIO conv kernels, row-major matrices, `[2, C]` moments (mean row, then
//! biased-variance row).

use crate::ir::{Activation, LossKind, Moment, Pad2d, Window2d};

use super::program::BufId;
use super::schedule::{Schedule, WinogradTile};
use super::update::UpdateRule;

/// Geometry of a 2-D convolution: `x [n, in_hw, c]` ⋆ `kernel [kernel_hw, c, f]` → `[n, out_hw, f]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeom {
    pub n: usize,
    pub in_hw: [usize; 2],
    pub c: usize,
    pub kernel_hw: [usize; 2],
    pub f: usize,
    pub strides: [usize; 2],
    pub pad: Pad2d,
    pub out_hw: [usize; 2],
}

impl ConvGeom {
    pub fn input_len(&self) -> usize {
        self.n * self.in_hw[0] * self.in_hw[1] * self.c
    }
    pub fn kernel_len(&self) -> usize {
        self.kernel_hw[0] * self.kernel_hw[1] * self.c * self.f
    }
    pub fn output_len(&self) -> usize {
        self.n * self.out_hw[0] * self.out_hw[1] * self.f
    }

    /// The input gradient of a stride-1 conv as a forward conv: of `dy` padded by
    /// `kernel − 1 − pad` on each side, with the flipped kernel transposed to `[KH, KW, F, C]`,
    /// giving `dx` (`None` for strided convs, or pads past `kernel − 1`).
    pub fn grad_input_as_conv(&self) -> Option<ConvGeom> {
        let ([kh, kw], p) = (self.kernel_hw, self.pad);
        let fits = p.top < kh && p.bottom < kh && p.left < kw && p.right < kw;
        (self.strides == [1, 1] && fits).then_some(ConvGeom {
            n: self.n,
            in_hw: self.out_hw,
            c: self.f,
            kernel_hw: self.kernel_hw,
            f: self.c,
            strides: [1, 1],
            pad: Pad2d {
                top: kh - 1 - p.top,
                bottom: kh - 1 - p.bottom,
                left: kw - 1 - p.left,
                right: kw - 1 - p.right,
            },
            out_hw: self.in_hw,
        })
    }
}

/// Geometry of a 2-D pooling window over `[n, in_hw, c]` giving `[n, out_hw, c]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolGeom {
    pub n: usize,
    pub in_hw: [usize; 2],
    pub c: usize,
    pub window: Window2d,
    pub out_hw: [usize; 2],
}

impl PoolGeom {
    pub fn input_len(&self) -> usize {
        self.n * self.in_hw[0] * self.in_hw[1] * self.c
    }
    pub fn output_len(&self) -> usize {
        self.n * self.out_hw[0] * self.out_hw[1] * self.c
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Max,
    Avg,
    /// Average over the whole map; the output is `[n, c]`.
    GlobalAvg,
}

/// What a GEMM-shaped kernel does to each output tile while it is still in registers, in this
/// order: add the bias, add the residual, apply the activation, accumulate BN statistics,
/// max-pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Epilogue {
    /// Adds a per-output-channel bias (an extra input).
    pub bias: bool,
    /// Adds a tensor of the output's shape (an extra input after the bias): a skip connection.
    pub residual: bool,
    /// `Softmax` only on a `Gemm` whose schedule keeps a whole row in one tile (`nc >= n`).
    pub act: Activation,
    /// Also writes the output's per-channel mean and biased variance `[2, n]` (an extra output):
    /// tiles accumulate Σy and Σy² in f64 per thread (scratch), the kernel's tail turns them into
    /// moments. This replaces a separate `Moments` pass over the output.
    pub bn_stats: bool,
    /// Conv only: max-pools the activated output with this window, which tiles the output
    /// exactly ([`pool_tiles`]); output 0 is then the pooled map and the unpooled map is never
    /// stored. M tiles hold whole bands of `size[0]` output rows (see `schedule`).
    pub max_pool: Option<Window2d>,
    /// With `max_pool` (training): also writes, per pooled output, the row-major index in its
    /// window of the window's first maximum, as an f32 (an extra output after the statistics):
    /// all that [`KernelOp::MaxPoolGradArgmax`] needs, so the unpooled map is never stored.
    pub argmax: bool,
}

impl Epilogue {
    pub const NONE: Epilogue = Epilogue {
        bias: false,
        residual: false,
        act: Activation::Linear,
        bn_stats: false,
        max_pool: None,
        argmax: false,
    };

    pub fn is_none(&self) -> bool {
        *self == Epilogue::NONE
    }
}

/// Elementwise operations over `len` elements whose last axis has `channels` entries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EwOp {
    /// `(x) -> (y)`, never softmax (see [`KernelOp::Softmax`]).
    Act(Activation),
    /// `(y, dy) -> (dx)` from the activation's output; never softmax.
    ActGrad(Activation),
    /// `(x, bias [channels]) -> (y)`.
    BiasAdd,
    /// `(a, b) -> (y)`.
    Add,
    /// `(x) -> (y)`: `x·mask/(1 − rate)`, mask from `rng::dropout_keep(seed, step, index, rate)`.
    Dropout { rate: f32, seed: u64 },
    /// `(x) -> (y)`.
    Copy,
    /// `() -> (y)`: every element set to the value (materialises graph constants).
    Fill(f32),
}

/// Whether BN normalises with the batch's moments or the moving statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BnSource {
    /// Inputs `(x, moments [2, C], gamma, beta)`.
    Batch,
    /// Inputs `(x, gamma, beta, moving_mean, moving_variance)`.
    Moving,
}

/// Where a kernel gradient's `dy` comes from when a max-pool follows the conv: the pooled
/// gradient scattered through the pooled conv's argmax (see `passes::fuse_argmax_dw`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PooledDy {
    /// The pooling window over the conv's output (tiles it exactly).
    pub window: Window2d,
    /// The activation between conv and pool, whose derivative (at the pooled output) the
    /// gradient takes on the way.
    pub act_grad: Option<Activation>,
}

impl PooledDy {
    /// Whether the pooled activation `y` is an input (its derivative needs it).
    pub fn reads_y(&self) -> bool {
        self.act_grad.is_some_and(|a| a != Activation::Linear)
    }
}

/// One kernel template with every size a constant. "rows" is the product of all axes but the
/// last (channel) one.
#[derive(Clone, Debug, PartialEq)]
pub enum KernelOp {
    /// Implicit-GEMM convolution, M = n·oh·ow, N = f, K = kh·kw·c:
    /// `(x, kernel, [bias], [residual]) -> (y, [moments])`.
    Conv2d {
        geom: ConvGeom,
        epilogue: Epilogue,
        /// `Some(tile)`: the kernel operand is not HWIO but Winograd's transformed kernel for
        /// that output tile, `u [points, c, f]`, made once in the prepare stage by a
        /// [`KernelOp::WinogradKernel`] (`passes::prepare_winograd`); the schedule then runs
        /// this tile.
        winograd_u: Option<WinogradTile>,
    },
    /// Winograd's kernel transform of a 3×3 conv with `c` input and `f` output channels:
    /// `(kernel [3, 3, c, f]) -> (u [points, c, f])`, `u[ξ][ci][fo]` the point ξ of `G g Gᵀ`
    /// for `tile` (`g` the taps of `kernel[.., ci, fo]`).
    WinogradKernel {
        c: usize,
        f: usize,
        tile: WinogradTile,
    },
    /// Gradient of the input as an implicit GEMM, M = n·h·w, N = c, K = kh·kw·f:
    /// `(dy, kernel) -> (dx)`.
    ConvGradInput {
        geom: ConvGeom,
    },
    /// Gradient of the kernel as a GEMM, M = kh·kw·c, N = f, K = n·oh·ow:
    /// `(x, dy) -> (dkernel, [dbias = Σ dy per channel] if bias_grad)`; with `pooled`,
    /// `(x, argmax, [y], dy)` where the last three are the pooled conv's `[n, ph, pw, f]` maps
    /// and dy at a conv output is `act'(y)·dy` at its window's argmax, else 0.
    ConvGradKernel {
        geom: ConvGeom,
        bias_grad: bool,
        pooled: Option<PooledDy>,
    },
    /// `C[m, n] = op(A)·op(B)` with `A` stored `[m, k]` (`[k, m]` if `trans_a`) and `B` stored
    /// `[k, n]` (`[n, k]` if `trans_b`): `(a, b, [bias], [residual]) -> (c, [moments], [Σ_k B[k, j] if bias_grad])`.
    Gemm {
        m: usize,
        n: usize,
        k: usize,
        trans_a: bool,
        trans_b: bool,
        epilogue: Epilogue,
        /// Column sums of B gathered while packing B (the bias gradient when B is dy).
        bias_grad: bool,
    },
    /// `(x) -> (y)`.
    Pool {
        kind: PoolKind,
        geom: PoolGeom,
    },
    /// Max: `(x, dy) -> (dx)` (each window's gradient to its first maximum); Avg, GlobalAvg:
    /// `(dy) -> (dx)`. With `act_grad` (max only; `x` the activation's output), `dx` is also
    /// multiplied by that activation's derivative at `x` (the activation gradient before the
    /// pool, fused: see `passes::fuse_pool_act_grad`).
    PoolGrad {
        kind: PoolKind,
        geom: PoolGeom,
        act_grad: Option<Activation>,
    },
    /// Max-pool gradient through the argmax the pooled conv recorded (window tiling its input):
    /// `(argmax, [y] if act_grad, dy) -> (dx)`, `dx` = `act'(y)·dy` at each window's argmax and
    /// 0 elsewhere; `y` is the pooled activation (an activation before a max-pool commutes with
    /// the maximum, so its derivative at the argmax is the one at the pooled value).
    MaxPoolGradArgmax {
        geom: PoolGeom,
        act_grad: Option<Activation>,
    },
    Elementwise {
        op: EwOp,
        len: usize,
        channels: usize,
    },
    /// Row-wise softmax `(x [rows, cols]) -> (y)`.
    Softmax {
        rows: usize,
        cols: usize,
    },
    /// `(y, dy) -> (dx)`, `dx = y·(dy − Σ_row y·dy)`.
    SoftmaxGrad {
        rows: usize,
        cols: usize,
    },
    /// Sum over rows: `(x [rows, channels]) -> (y [channels])`.
    Reduce {
        rows: usize,
        channels: usize,
    },
    /// `(x [rows, channels]) -> (moments [2, channels])`.
    Moments {
        rows: usize,
        channels: usize,
    },
    /// `y = act(gamma·(x − mean)/√(var + ε) + beta [+ r])`: see [`BnSource`] for the inputs,
    /// followed by `r` (same shape as x) when `residual`; `-> (y)`. The residual add is a
    /// ResNet block's skip connection. With `pool` (training, batch statistics, no residual,
    /// a linear or ReLU `act`; `x` is `pool`'s input map and its windows tile it), `y` is
    /// max-pooled over them as it is made and never stored: `-> (pooled y, argmax)`, as a
    /// pooled conv (see `passes::fuse_pool_argmax`).
    BnApply {
        rows: usize,
        channels: usize,
        epsilon: f32,
        act: Activation,
        source: BnSource,
        residual: bool,
        pool: Option<PoolGeom>,
    },
    /// `(x, moments, gamma, dy) -> (dx)` through the batch statistics.
    BnGradInput {
        rows: usize,
        channels: usize,
        epsilon: f32,
    },
    /// `(x, moments, dy) -> (dgamma)`.
    BnGradGamma {
        rows: usize,
        channels: usize,
        epsilon: f32,
    },
    /// BN backward with the following activation's mask fused in:
    /// `(x, moments, gamma, [y = act output] unless act is linear, dy) -> (dx, [dgamma], [dbeta])`,
    /// or with `mask_from_x` `(x, moments, gamma, beta, dy) -> …`: a ReLU's mask recomputed from
    /// `x` as the forward's `BnApply` (batch statistics, no residual) computed it, bit for bit,
    /// so `y` is not read. One pass over rows gathers Σg and Σg·x̂ per channel
    /// (g = act'(y)·dy), a second writes dx.
    BnActBackward {
        rows: usize,
        channels: usize,
        epsilon: f32,
        act: Activation,
        grad_gamma: bool,
        grad_beta: bool,
        mask_from_x: bool,
    },
    /// `(moving, moments) -> (moving')`; may update `moving` in place.
    MovingAverage {
        channels: usize,
        momentum: f32,
        moment: Moment,
    },
    /// `(prediction [rows, cols], target) -> (loss [])`.
    Loss {
        kind: LossKind,
        from_logits: bool,
        rows: usize,
        cols: usize,
    },
    /// `(prediction, target) -> (dprediction)`.
    LossGrad {
        kind: LossKind,
        from_logits: bool,
        rows: usize,
        cols: usize,
    },
    /// Softmax + cross-entropy on logits in one pass per row:
    /// `(logits [rows, classes], target) -> (loss [], dlogits, [softmax] if probs)`; target is
    /// `[rows]` class ids when `sparse`, else `[rows, classes]`.
    SoftmaxXent {
        rows: usize,
        classes: usize,
        sparse: bool,
        probs: bool,
    },
    /// `(x_0 [rows, parts[0]], ...) -> (y [rows, Σ parts])`.
    Concat {
        rows: usize,
        parts: Vec<usize>,
    },
    /// `(x [rows, channels]) -> (y [rows, len])`, channels `offset..offset + len`.
    SliceChannels {
        rows: usize,
        channels: usize,
        offset: usize,
        len: usize,
    },
    /// `(grad) -> (param, slots...)`, all `len` long; outputs are read-modify-write in place.
    OptimizerUpdate {
        rule: UpdateRule,
        len: usize,
    },
}

/// Problem size of a GEMM-shaped kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmDims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

impl KernelOp {
    pub fn mnemonic(&self) -> &'static str {
        match self {
            KernelOp::Conv2d { .. } => "conv2d",
            KernelOp::WinogradKernel { .. } => "winograd_kernel",
            KernelOp::ConvGradInput { .. } => "conv_grad_input",
            KernelOp::ConvGradKernel { .. } => "conv_grad_kernel",
            KernelOp::Gemm { .. } => "gemm",
            KernelOp::Pool { .. } => "pool",
            KernelOp::PoolGrad { .. } => "pool_grad",
            KernelOp::MaxPoolGradArgmax { .. } => "max_pool_grad_argmax",
            KernelOp::Elementwise { op, .. } => match op {
                EwOp::Act(_) => "act",
                EwOp::ActGrad(_) => "act_grad",
                EwOp::BiasAdd => "bias_add",
                EwOp::Add => "add",
                EwOp::Dropout { .. } => "dropout",
                EwOp::Copy => "copy",
                EwOp::Fill(_) => "fill",
            },
            KernelOp::Softmax { .. } => "softmax",
            KernelOp::SoftmaxGrad { .. } => "softmax_grad",
            KernelOp::Reduce { .. } => "reduce",
            KernelOp::Moments { .. } => "moments",
            KernelOp::BnApply { .. } => "bn_apply",
            KernelOp::BnGradInput { .. } => "bn_grad_input",
            KernelOp::BnGradGamma { .. } => "bn_grad_gamma",
            KernelOp::BnActBackward { .. } => "bn_act_backward",
            KernelOp::MovingAverage { .. } => "moving_average",
            KernelOp::Loss { .. } => "loss",
            KernelOp::LossGrad { .. } => "loss_grad",
            KernelOp::SoftmaxXent { .. } => "softmax_xent",
            KernelOp::Concat { .. } => "concat",
            KernelOp::SliceChannels { .. } => "slice_channels",
            KernelOp::OptimizerUpdate { .. } => "optimizer_update",
        }
    }

    /// M, N, K of the GEMM-shaped templates (those the schedule tiles mc/kc/nc).
    pub fn gemm_dims(&self) -> Option<GemmDims> {
        let (m, n, k) = match self {
            KernelOp::Conv2d { geom: g, .. } => (
                g.n * g.out_hw[0] * g.out_hw[1],
                g.f,
                g.kernel_hw[0] * g.kernel_hw[1] * g.c,
            ),
            KernelOp::ConvGradInput { geom: g } => (
                g.n * g.in_hw[0] * g.in_hw[1],
                g.c,
                g.kernel_hw[0] * g.kernel_hw[1] * g.f,
            ),
            KernelOp::ConvGradKernel { geom: g, .. } => (
                g.kernel_hw[0] * g.kernel_hw[1] * g.c,
                g.f,
                g.n * g.out_hw[0] * g.out_hw[1],
            ),
            KernelOp::Gemm { m, n, k, .. } => (*m, *n, *k),
            _ => return None,
        };
        Some(GemmDims { m, n, k })
    }

    /// The epilogue of a GEMM-shaped forward template.
    pub fn epilogue(&self) -> Option<&Epilogue> {
        match self {
            KernelOp::Conv2d { epilogue, .. } | KernelOp::Gemm { epilogue, .. } => Some(epilogue),
            _ => None,
        }
    }

    /// Element counts of the inputs and of the outputs, in operand order.
    pub fn operand_sizes(&self) -> (Vec<usize>, Vec<usize>) {
        fn opt(flag: bool, n: usize) -> Option<usize> {
            flag.then_some(n)
        }
        let collect = |v: Vec<Option<usize>>| v.into_iter().flatten().collect::<Vec<_>>();
        let (ins, outs) = match self {
            KernelOp::Conv2d {
                geom: g,
                epilogue: e,
                winograd_u,
            } => {
                let y = match &e.max_pool {
                    Some(w) => {
                        let [ph, pw] = pooled_hw(g.out_hw, w);
                        g.n * ph * pw * g.f
                    }
                    None => g.output_len(),
                };
                let argmax = opt(e.argmax && e.max_pool.is_some(), y);
                (
                    vec![
                        Some(g.input_len()),
                        Some(winograd_u.map_or(g.kernel_len(), |t| t.points() * g.c * g.f)),
                        opt(e.bias, g.f),
                        opt(e.residual, g.output_len()),
                    ],
                    vec![Some(y), opt(e.bn_stats, 2 * g.f), argmax],
                )
            }
            KernelOp::WinogradKernel { c, f, tile } => (vec![Some(9 * c * f)], vec![Some(tile.points() * c * f)]),
            KernelOp::ConvGradInput { geom: g } => (
                vec![Some(g.output_len()), Some(g.kernel_len())],
                vec![Some(g.input_len())],
            ),
            KernelOp::ConvGradKernel {
                geom: g,
                bias_grad,
                pooled,
            } => {
                let ins = match pooled {
                    None => vec![Some(g.input_len()), Some(g.output_len())],
                    Some(pd) => {
                        let [ph, pw] = pooled_hw(g.out_hw, &pd.window);
                        let len = g.n * ph * pw * g.f;
                        vec![Some(g.input_len()), Some(len), opt(pd.reads_y(), len), Some(len)]
                    }
                };
                (ins, vec![Some(g.kernel_len()), opt(*bias_grad, g.f)])
            }
            KernelOp::Gemm {
                m,
                n,
                k,
                epilogue: e,
                bias_grad,
                ..
            } => (
                vec![Some(m * k), Some(k * n), opt(e.bias, *n), opt(e.residual, m * n)],
                vec![Some(m * n), opt(e.bn_stats, 2 * n), opt(*bias_grad, *n)],
            ),
            KernelOp::Pool { geom: g, .. } => (vec![Some(g.input_len())], vec![Some(g.output_len())]),
            KernelOp::PoolGrad { kind, geom: g, .. } => (
                vec![opt(*kind == PoolKind::Max, g.input_len()), Some(g.output_len())],
                vec![Some(g.input_len())],
            ),
            KernelOp::MaxPoolGradArgmax { geom: g, act_grad } => {
                let y = opt(act_grad.is_some_and(|a| a != Activation::Linear), g.output_len());
                (
                    vec![Some(g.output_len()), y, Some(g.output_len())],
                    vec![Some(g.input_len())],
                )
            }
            KernelOp::Elementwise { op, len, channels } => {
                let n = Some(*len);
                let ins = match op {
                    EwOp::Fill(_) => vec![],
                    EwOp::Act(_) | EwOp::Dropout { .. } | EwOp::Copy => vec![n],
                    EwOp::ActGrad(_) | EwOp::Add => vec![n, n],
                    EwOp::BiasAdd => vec![n, Some(*channels)],
                };
                (ins, vec![n])
            }
            KernelOp::Softmax { rows, cols } => (vec![Some(rows * cols)], vec![Some(rows * cols)]),
            KernelOp::SoftmaxGrad { rows, cols } => (vec![Some(rows * cols); 2], vec![Some(rows * cols)]),
            KernelOp::Reduce { rows, channels } => (vec![Some(rows * channels)], vec![Some(*channels)]),
            KernelOp::Moments { rows, channels } => (vec![Some(rows * channels)], vec![Some(2 * channels)]),
            KernelOp::BnApply {
                rows,
                channels,
                source,
                residual,
                pool,
                ..
            } => {
                let (x, c) = (Some(rows * channels), Some(*channels));
                let mut ins = match source {
                    BnSource::Batch => vec![x, Some(2 * channels), c, c],
                    BnSource::Moving => vec![x, c, c, c, c],
                };
                ins.push(opt(*residual, rows * channels));
                let outs = match pool {
                    Some(g) => vec![Some(g.output_len()); 2],
                    None => vec![x],
                };
                (ins, outs)
            }
            KernelOp::BnGradInput { rows, channels, .. } => {
                let x = Some(rows * channels);
                (vec![x, Some(2 * channels), Some(*channels), x], vec![x])
            }
            KernelOp::BnGradGamma { rows, channels, .. } => {
                let x = Some(rows * channels);
                (vec![x, Some(2 * channels), x], vec![Some(*channels)])
            }
            KernelOp::BnActBackward {
                rows,
                channels,
                act,
                grad_gamma,
                grad_beta,
                mask_from_x,
                ..
            } => {
                let (x, c) = (Some(rows * channels), Some(*channels));
                let y = match mask_from_x {
                    true => c,
                    false => opt(*act != Activation::Linear, rows * channels),
                };
                (
                    vec![x, Some(2 * channels), c, y, x],
                    vec![x, opt(*grad_gamma, *channels), opt(*grad_beta, *channels)],
                )
            }
            KernelOp::MovingAverage { channels, .. } => {
                (vec![Some(*channels), Some(2 * channels)], vec![Some(*channels)])
            }
            KernelOp::Loss { kind, rows, cols, .. } | KernelOp::LossGrad { kind, rows, cols, .. } => {
                let t = if *kind == LossKind::SparseCategoricalCrossentropy {
                    *rows
                } else {
                    rows * cols
                };
                let out = if matches!(self, KernelOp::Loss { .. }) {
                    1
                } else {
                    rows * cols
                };
                (vec![Some(rows * cols), Some(t)], vec![Some(out)])
            }
            KernelOp::SoftmaxXent {
                rows,
                classes,
                sparse,
                probs,
            } => {
                let p = Some(rows * classes);
                let t = if *sparse { *rows } else { rows * classes };
                (vec![p, Some(t)], vec![Some(1), p, opt(*probs, rows * classes)])
            }
            KernelOp::Concat { rows, parts } => (
                parts.iter().map(|c| Some(rows * c)).collect(),
                vec![Some(rows * parts.iter().sum::<usize>())],
            ),
            KernelOp::SliceChannels {
                rows, channels, len, ..
            } => (vec![Some(rows * channels)], vec![Some(rows * len)]),
            KernelOp::OptimizerUpdate { rule, len } => (vec![Some(*len)], vec![Some(*len); 1 + rule.slots().len()]),
        };
        (collect(ins), collect(outs))
    }

    /// Approximate floating-point operations, used to decide whether threads pay off.
    pub fn flops(&self) -> usize {
        if let Some(d) = self.gemm_dims() {
            return 2 * d.m * d.n * d.k;
        }
        let (ins, outs) = self.operand_sizes();
        let touched: usize = ins.iter().chain(&outs).sum();
        let per_element = match self {
            KernelOp::Pool { geom, .. }
            | KernelOp::PoolGrad { geom, .. }
            | KernelOp::MaxPoolGradArgmax { geom, .. } => geom.window.size[0] * geom.window.size[1],
            KernelOp::Softmax { .. } | KernelOp::SoftmaxXent { .. } | KernelOp::OptimizerUpdate { .. } => 8,
            KernelOp::BnActBackward { .. } | KernelOp::BnGradInput { .. } => 6,
            _ => 2,
        };
        touched * per_element
    }
}

/// Output `[ph, pw]` of a pooling window over `hw`; `[0, 0]` when the window does not fit
/// (the verifier reports the size mismatch).
pub fn pooled_hw(hw: [usize; 2], w: &Window2d) -> [usize; 2] {
    crate::ir::window_hw(hw, w.size, w.strides, w.pad).unwrap_or([0, 0])
}

/// Whether `w` tiles an `hw` map exactly: strides equal to the size, no padding, and both
/// sides multiples of the window (the condition for fusing a max-pool into a conv epilogue).
pub fn pool_tiles(hw: [usize; 2], w: &Window2d) -> bool {
    w.strides == w.size
        && w.pad == Pad2d::default()
        && w.size.iter().all(|&s| s > 0)
        && hw[0].is_multiple_of(w.size[0])
        && hw[1].is_multiple_of(w.size[1])
}

/// When a kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Once, when weights are loaded (inference programs only): constants, folded BN weights.
    Prepare,
    /// Every run: the forward pass and the loss.
    Forward,
    /// Every run of a training program: gradients.
    Backward,
    /// Every run of a training program, last: optimiser updates of parameters in place.
    Update,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::Forward => "forward",
            Stage::Backward => "backward",
            Stage::Update => "update",
        }
    }
}

/// One instantiated template: operands, a schedule and, when the template needs one, a
/// scratch buffer laid out by `schedule::scratch_layout`.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub op: KernelOp,
    pub inputs: Vec<BufId>,
    pub outputs: Vec<BufId>,
    pub scratch: Option<BufId>,
    pub schedule: Schedule,
    pub stage: Stage,
    /// The Keras layers whose graph nodes this kernel computes (for dumps and profiles).
    pub origin: Vec<String>,
}
