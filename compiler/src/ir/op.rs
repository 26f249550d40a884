//! The closed set of graph operations. Every pass, autodiff rule and backend matches on [`Op`]
//! exhaustively, so adding an op is a compile error everywhere it must be handled.
//!
//! Layout conventions (Keras): activations NHWC, conv kernels HWIO `[KH, KW, C, F]`, dense
//! kernels `[in, out]`. Shapes always include the batch dimension, fixed at compile time.

use cnnc_runtime::init::Init;

/// Elementwise activation functions (softmax acts on the last axis).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Linear,
    Relu,
    Sigmoid,
    Tanh,
    Softmax,
}

impl Activation {
    pub const ALL: [(&'static str, Activation); 5] = [
        ("linear", Activation::Linear),
        ("relu", Activation::Relu),
        ("sigmoid", Activation::Sigmoid),
        ("tanh", Activation::Tanh),
        ("softmax", Activation::Softmax),
    ];

    pub fn keras_name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map(|(n, _)| *n)
            .unwrap_or("linear")
    }
}

/// Explicit zero padding of a 2-D window op. TensorFlow's `SAME` is resolved to this at
/// lowering time (the extra row/column of an odd total goes to the bottom/right).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Pad2d {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

/// A 2-D sliding window: size, strides and padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window2d {
    pub size: [usize; 2],
    pub strides: [usize; 2],
    pub pad: Pad2d,
}

/// What a parameter is to its layer; gives the Keras weight name suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamRole {
    Kernel,
    Bias,
    Gamma,
    Beta,
    MovingMean,
    MovingVariance,
}

impl ParamRole {
    pub fn keras_suffix(self) -> &'static str {
        match self {
            ParamRole::Kernel => "kernel",
            ParamRole::Bias => "bias",
            ParamRole::Gamma => "gamma",
            ParamRole::Beta => "beta",
            ParamRole::MovingMean => "moving_mean",
            ParamRole::MovingVariance => "moving_variance",
        }
    }

    /// Moving statistics are updated by training but not by the optimiser (Keras: non-trainable).
    pub fn trainable(self) -> bool {
        !matches!(self, ParamRole::MovingMean | ParamRole::MovingVariance)
    }
}

/// Training losses, as `tf.keras.losses`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossKind {
    /// Targets are class ids `[N]` (stored as f32).
    SparseCategoricalCrossentropy,
    /// Targets are one-hot (or soft) `[N, K]`.
    CategoricalCrossentropy,
    /// Targets have the prediction's shape; mean over all elements.
    MeanSquaredError,
}

impl LossKind {
    /// How a backend expects this loss's targets: class ids for the sparse loss, else the
    /// prediction's shape.
    pub fn target_layout(self) -> cnnc_runtime::TargetLayout {
        match self {
            LossKind::SparseCategoricalCrossentropy => cnnc_runtime::TargetLayout::ClassIds,
            _ => cnnc_runtime::TargetLayout::Dense,
        }
    }

    pub const ALL: [(&'static str, LossKind); 3] = [
        (
            "sparse_categorical_crossentropy",
            LossKind::SparseCategoricalCrossentropy,
        ),
        ("categorical_crossentropy", LossKind::CategoricalCrossentropy),
        ("mean_squared_error", LossKind::MeanSquaredError),
    ];

    pub fn keras_name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, l)| *l == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// Which moving statistic a [`Op::MovingAverage`] updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Moment {
    Mean,
    Variance,
}

/// One graph operation. Each node has exactly one output tensor whose shape is inferred when
/// the node is added (see `shape.rs`). Inputs are listed in the order given in each comment.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    // ---- leaves -------------------------------------------------------------------------
    /// The model input, `[N, H, W, C]` (or `[N, F]`).
    Input,
    /// Training targets: `[N]` class ids for sparse losses, else the prediction's shape.
    Target,
    /// A named parameter `<layer>.<role>` with its initialiser.
    Param { name: String, role: ParamRole, init: Init },
    /// A tensor filled with one value (BN's gamma when `scale: false`, beta when `center: false`).
    Constant(f32),

    // ---- forward --------------------------------------------------------------------------
    /// (x `[N,H,W,C]`, kernel `[KH,KW,C,F]`) -> `[N,OH,OW,F]`. Cross-correlation, as TF.
    Conv2d { strides: [usize; 2], pad: Pad2d },
    /// (a, b) -> a·b with optional transposes; 2-D only. Dense is `MatMul` + `BiasAdd`.
    MatMul { transpose_a: bool, transpose_b: bool },
    /// (x `[..., C]`, bias `[C]`) -> x + bias broadcast over the last axis.
    BiasAdd,
    /// Elementwise activation; softmax over the last axis.
    Act(Activation),
    /// (x) -> max over each window; padding never wins (TF semantics).
    MaxPool2d(Window2d),
    /// (x) -> mean over the real (unpadded) elements of each window (TF semantics).
    AvgPool2d(Window2d),
    /// (x `[N,H,W,C]`) -> `[N,C]`.
    GlobalAvgPool,
    /// (x) -> the node's shape; element order unchanged (row-major, so Flatten is over H, W, C).
    Reshape,
    /// (a, b) -> a + b, equal shapes.
    Add,
    /// (x0, x1, ...) -> concatenation along the last (channel) axis.
    Concat,
    /// (x) -> x * mask / (1 - rate); mask drawn from (seed, step, element index). Training only.
    Dropout { rate: f32, seed: u64 },
    /// (x, gamma, beta, moving_mean, moving_var) -> normalised with the moving statistics.
    BatchNormInference { epsilon: f32 },
    /// (x `[..., C]`) -> `[2, C]`: per-channel batch mean and biased variance.
    Moments,
    /// (x, moments `[2,C]`, gamma, beta) -> normalised with the batch statistics.
    BatchNormTrain { epsilon: f32 },
    /// (moving `[C]`, moments `[2,C]`) -> momentum * moving + (1 - momentum) * batch statistic.
    MovingAverage { momentum: f32, moment: Moment },
    /// (prediction, target) -> scalar `[]`: the loss averaged over the batch.
    Loss { kind: LossKind, from_logits: bool },

    // ---- backward -------------------------------------------------------------------------
    /// (prediction, target) -> d loss / d prediction.
    LossGrad { kind: LossKind, from_logits: bool },
    /// (y = act(x), dy) -> dx, computed from the activation's output.
    ActGrad(Activation),
    /// (dy `[N,OH,OW,F]`, kernel) -> dx `[N,H,W,C]`.
    Conv2dGradInput {
        strides: [usize; 2],
        pad: Pad2d,
        input_hw: [usize; 2],
    },
    /// (x, dy) -> d kernel `[KH,KW,C,F]`.
    Conv2dGradKernel {
        strides: [usize; 2],
        pad: Pad2d,
        kernel_hw: [usize; 2],
    },
    /// (dy `[..., C]`) -> `[C]`: sum over every axis but the last (bias and beta gradients).
    ReduceToChannels,
    /// (x, dy) -> dx: each window's gradient goes to its first maximum (TF semantics).
    MaxPool2dGrad(Window2d),
    /// (dy) -> dx `[N,H,W,C]`, spread over each window's real elements.
    AvgPool2dGrad { window: Window2d, input_hw: [usize; 2] },
    /// (dy `[N,C]`) -> dx `[N,H,W,C]`.
    GlobalAvgPoolGrad { input_hw: [usize; 2] },
    /// (x) -> channels `[offset, offset + len)` of the last axis (Concat's gradient).
    SliceChannels { offset: usize, len: usize },
    /// (x, moments, gamma, dy) -> dx of [`Op::BatchNormTrain`], through the batch statistics.
    BatchNormGradInput { epsilon: f32 },
    /// (x, moments, dy) -> d gamma `[C]`.
    BatchNormGradGamma { epsilon: f32 },
}

impl Op {
    /// Short lower-case mnemonic used by the IR dump.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Target => "target",
            Op::Param { .. } => "param",
            Op::Constant(_) => "constant",
            Op::Conv2d { .. } => "conv2d",
            Op::MatMul { .. } => "matmul",
            Op::BiasAdd => "bias_add",
            Op::Act(_) => "act",
            Op::MaxPool2d(_) => "max_pool2d",
            Op::AvgPool2d(_) => "avg_pool2d",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Reshape => "reshape",
            Op::Add => "add",
            Op::Concat => "concat",
            Op::Dropout { .. } => "dropout",
            Op::BatchNormInference { .. } => "batch_norm_inference",
            Op::Moments => "moments",
            Op::BatchNormTrain { .. } => "batch_norm_train",
            Op::MovingAverage { .. } => "moving_average",
            Op::Loss { .. } => "loss",
            Op::LossGrad { .. } => "loss_grad",
            Op::ActGrad(_) => "act_grad",
            Op::Conv2dGradInput { .. } => "conv2d_grad_input",
            Op::Conv2dGradKernel { .. } => "conv2d_grad_kernel",
            Op::ReduceToChannels => "reduce_to_channels",
            Op::MaxPool2dGrad(_) => "max_pool2d_grad",
            Op::AvgPool2dGrad { .. } => "avg_pool2d_grad",
            Op::GlobalAvgPoolGrad { .. } => "global_avg_pool_grad",
            Op::SliceChannels { .. } => "slice_channels",
            Op::BatchNormGradInput { .. } => "batch_norm_grad_input",
            Op::BatchNormGradGamma { .. } => "batch_norm_grad_gamma",
        }
    }

    /// Number of inputs the op takes, or `None` when variadic (Concat).
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::Input | Op::Target | Op::Param { .. } | Op::Constant(_) => 0,
            Op::Act(_)
            | Op::MaxPool2d(_)
            | Op::AvgPool2d(_)
            | Op::GlobalAvgPool
            | Op::Reshape
            | Op::Dropout { .. }
            | Op::Moments
            | Op::ReduceToChannels
            | Op::AvgPool2dGrad { .. }
            | Op::GlobalAvgPoolGrad { .. }
            | Op::SliceChannels { .. } => 1,
            Op::Conv2d { .. }
            | Op::MatMul { .. }
            | Op::BiasAdd
            | Op::Add
            | Op::MovingAverage { .. }
            | Op::Loss { .. }
            | Op::LossGrad { .. }
            | Op::ActGrad(_)
            | Op::Conv2dGradInput { .. }
            | Op::Conv2dGradKernel { .. }
            | Op::MaxPool2dGrad(_) => 2,
            Op::BatchNormGradGamma { .. } => 3,
            Op::BatchNormTrain { .. } | Op::BatchNormGradInput { .. } => 4,
            Op::BatchNormInference { .. } => 5,
            Op::Concat => return None,
        })
    }

    /// Leaves have no inputs and are bound by the caller (input, target, parameters, constants).
    pub fn is_leaf(&self) -> bool {
        self.arity() == Some(0)
    }
}
