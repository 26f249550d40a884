//! Finite-difference checks of every forward op's gradient rule, through the whole
//! `training_graph` + `run` pipeline. Ops read trainable parameters filled with well-separated
//! values (no ReLU zeros or max-pool ties within the perturbation), so the parameter's gradient
//! is the gradient with respect to the op's input; a small dense + softmax head and sparse
//! crossentropy turn each op's output into a loss.

use cnnc_compiler::interp::gradcheck::{distinct_tensor, random_tensor, GradCheck, SINGLE_OP};
use cnnc_compiler::ir::{
    Activation, Graph, GraphOutput, LossKind, Mode, Moment, NodeId, Op, OutputRole, Pad2d, ParamRole, Shape, Window2d,
};
use cnnc_runtime::{Init, Tensor};

/// A training-mode forward graph under construction, with its parameters' values.
struct Net {
    g: Graph,
    params: Vec<Tensor>,
    input: NodeId,
    seed: u64,
}

impl Net {
    fn new(input_shape: &[usize]) -> Self {
        let mut g = Graph::new("gradcheck", input_shape[0], Mode::Training);
        let input = g
            .add(Op::Input, &[], Some(Shape(input_shape.to_vec())), "input")
            .unwrap();
        Net {
            g,
            params: Vec::new(),
            input,
            seed: 1,
        }
    }

    fn param_with(&mut self, name: &str, role: ParamRole, value: Tensor) -> NodeId {
        let op = Op::Param {
            name: name.into(),
            role,
            init: Init::Zeros,
        };
        let layer = name.split('.').next().unwrap_or("").to_string();
        let id = self.g.add(op, &[], Some(Shape(value.shape.clone())), &layer).unwrap();
        self.params.push(value);
        id
    }

    /// A trainable parameter holding distinct values in (-1, 1), away from 0.
    fn data(&mut self, name: &str, shape: &[usize]) -> NodeId {
        self.seed += 1;
        let v = distinct_tensor(shape, self.seed, 1.0);
        self.param_with(name, ParamRole::Kernel, v)
    }

    fn op(&mut self, op: Op, ins: &[NodeId]) -> NodeId {
        self.g.add(op, ins, None, "layer").unwrap()
    }

    fn reshape(&mut self, x: NodeId, shape: &[usize]) -> NodeId {
        self.g
            .add(Op::Reshape, &[x], Some(Shape(shape.to_vec())), "layer")
            .unwrap()
    }

    /// Flatten, dense to 3 classes (with bias), softmax: the prediction.
    fn head(&mut self, x: NodeId) -> NodeId {
        let d = self.g.shape(x).dims().to_vec();
        let n = d[0];
        let f: usize = d[1..].iter().product();
        let flat = self.reshape(x, &[n, f]);
        self.seed += 1;
        let scale = 2.0 / (f as f32).sqrt();
        let w = random_tensor(&[f, 3], self.seed, -scale, scale);
        let w = self.param_with("head.kernel", ParamRole::Kernel, w);
        let b = self.param_with(
            "head.bias",
            ParamRole::Bias,
            Tensor::from_vec(&[3], vec![0.1, -0.2, 0.05]).unwrap(),
        );
        let z = self.op(
            Op::MatMul {
                transpose_a: false,
                transpose_b: false,
            },
            &[flat, w],
        );
        let z = self.op(Op::BiasAdd, &[z, b]);
        self.op(Op::Act(Activation::Softmax), &[z])
    }

    /// Checks the gradients of sparse crossentropy on `pred` (from probabilities: the training
    /// graph feeds the softmax's logits to the loss) with the single-op tolerance.
    fn check(self, pred: NodeId) {
        let opts = GradCheck {
            tol: SINGLE_OP,
            ..GradCheck::default()
        };
        self.check_with(pred, opts);
    }

    fn check_with(mut self, pred: NodeId, opts: GradCheck) {
        self.g.outputs.push(GraphOutput {
            role: OutputRole::Prediction,
            node: pred,
        });
        let n = self.g.shape(pred).dims()[0];
        let target = Tensor::from_vec(&[n], (0..n).map(|i| (i % 3) as f32).collect()).unwrap();
        let input = random_tensor(self.g.shape(self.input).dims(), 99, -1.0, 1.0);
        let sparse = LossKind::SparseCategoricalCrossentropy;
        if let Err(e) = opts.check(&self.g, sparse, false, &self.params, &input, &target) {
            panic!("{e}");
        }
    }
}

fn pad(top: usize, bottom: usize, left: usize, right: usize) -> Pad2d {
    Pad2d {
        top,
        bottom,
        left,
        right,
    }
}

fn conv_check(x_shape: &[usize], k_shape: &[usize], strides: [usize; 2], p: Pad2d) {
    let mut net = Net::new(&[x_shape[0], 1]);
    let x = net.data("x.kernel", x_shape);
    let k = net.data("conv.kernel", k_shape);
    let b = net.data("conv.bias", &[k_shape[3]]);
    let y = net.op(Op::Conv2d { strides, pad: p }, &[x, k]);
    let y = net.op(Op::BiasAdd, &[y, b]);
    let pred = net.head(y);
    net.check(pred);
}

#[test]
fn conv_valid() {
    conv_check(&[2, 5, 5, 2], &[3, 3, 2, 3], [1, 1], Pad2d::default());
}

#[test]
fn conv_same() {
    conv_check(&[2, 4, 4, 2], &[3, 3, 2, 2], [1, 1], pad(1, 1, 1, 1));
}

/// SAME with stride 2 on 6x5 and a 3x2 kernel: TF pads 0 top / 1 bottom, 0 left / 1 right.
#[test]
fn conv_stride2_same_asymmetric() {
    conv_check(&[2, 6, 5, 2], &[3, 2, 2, 3], [2, 2], pad(0, 1, 0, 1));
}

#[test]
fn conv_unequal_strides_and_padding() {
    conv_check(&[1, 7, 5, 3], &[2, 3, 3, 2], [2, 1], pad(1, 0, 2, 1));
}

/// A convolution reading the model input: only the kernel gets a gradient.
#[test]
fn conv_on_input_then_conv() {
    let mut net = Net::new(&[2, 5, 5, 2]);
    let k1 = net.data("c1.kernel", &[3, 3, 2, 3]);
    let input = net.input;
    let y = net.op(
        Op::Conv2d {
            strides: [1, 1],
            pad: pad(1, 1, 1, 1),
        },
        &[input, k1],
    );
    let k2 = net.data("c2.kernel", &[2, 2, 3, 2]);
    let y = net.op(
        Op::Conv2d {
            strides: [2, 2],
            pad: Pad2d::default(),
        },
        &[y, k2],
    );
    let pred = net.head(y);
    net.check(pred);
}

fn matmul_check(transpose_a: bool, transpose_b: bool) {
    let (m, k, n) = (4, 5, 3);
    let mut net = Net::new(&[m, 1]);
    let a = net.data("a.kernel", &if transpose_a { [k, m] } else { [m, k] });
    let b = net.data("b.kernel", &if transpose_b { [n, k] } else { [k, n] });
    let z = net.op(
        Op::MatMul {
            transpose_a,
            transpose_b,
        },
        &[a, b],
    );
    let pred = net.op(Op::Act(Activation::Softmax), &[z]);
    net.check(pred);
}

#[test]
fn matmul_all_transposes() {
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        matmul_check(ta, tb);
    }
}

#[test]
fn dense_with_bias_on_input() {
    let mut net = Net::new(&[4, 6]);
    let input = net.input;
    let w = net.data("dense.kernel", &[6, 5]);
    let b = net.data("dense.bias", &[5]);
    let mm = Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    };
    let z = net.op(mm, &[input, w]);
    let z = net.op(Op::BiasAdd, &[z, b]);
    let pred = net.head(z);
    net.check(pred);
}

#[test]
fn each_activation() {
    for act in [
        Activation::Linear,
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Softmax,
    ] {
        let mut net = Net::new(&[4, 1]);
        let x = net.data("x.kernel", &[4, 6]);
        let y = net.op(Op::Act(act), &[x]);
        let pred = net.head(y);
        net.check(pred);
    }
}

fn window(k: [usize; 2], s: [usize; 2], p: Pad2d) -> Window2d {
    Window2d {
        size: k,
        strides: s,
        pad: p,
    }
}

/// Pool windows: VALID 2x2/2, SAME 3x3/2 on 5x4 (pads 1/1 rows, 0/1 columns), SAME 3x3/1.
fn pool_windows() -> [Window2d; 3] {
    [
        window([2, 2], [2, 2], Pad2d::default()),
        window([3, 3], [2, 2], pad(1, 1, 0, 1)),
        window([3, 3], [1, 1], pad(1, 1, 1, 1)),
    ]
}

#[test]
fn max_pool_valid_and_same() {
    for w in pool_windows() {
        let mut net = Net::new(&[2, 1]);
        let x = net.data("x.kernel", &[2, 5, 4, 3]);
        let y = net.op(Op::MaxPool2d(w), &[x]);
        let pred = net.head(y);
        net.check(pred);
    }
}

#[test]
fn avg_pool_valid_and_same() {
    for w in pool_windows() {
        let mut net = Net::new(&[2, 1]);
        let x = net.data("x.kernel", &[2, 5, 4, 3]);
        let y = net.op(Op::AvgPool2d(w), &[x]);
        let pred = net.head(y);
        net.check(pred);
    }
}

#[test]
fn global_avg_pool() {
    let mut net = Net::new(&[2, 1]);
    let x = net.data("x.kernel", &[2, 3, 4, 5]);
    let y = net.op(Op::GlobalAvgPool, &[x]);
    let pred = net.head(y);
    net.check(pred);
}

#[test]
fn reshape_round_trip() {
    let mut net = Net::new(&[2, 1]);
    let x = net.data("x.kernel", &[2, 3, 4, 2]);
    let y = net.reshape(x, &[2, 6, 2, 2]);
    let y = net.op(Op::Act(Activation::Tanh), &[y]);
    let y = net.reshape(y, &[2, 24]);
    let pred = net.head(y);
    net.check(pred);
}

/// `y = x + tanh(x)`: x is used twice, so its gradient is a sum of two contributions.
#[test]
fn add_with_fan_out() {
    let mut net = Net::new(&[3, 1]);
    let x = net.data("x.kernel", &[3, 4, 2]);
    let t = net.op(Op::Act(Activation::Tanh), &[x]);
    let y = net.op(Op::Add, &[x, t]);
    let pred = net.head(y);
    net.check(pred);
}

#[test]
fn concat_channels() {
    let mut net = Net::new(&[2, 1]);
    let a = net.data("a.kernel", &[2, 3, 3, 2]);
    let b = net.data("b.kernel", &[2, 3, 3, 3]);
    let a = net.op(Op::Act(Activation::Sigmoid), &[a]);
    let y = net.op(Op::Concat, &[a, b, a]);
    let pred = net.head(y);
    net.check(pred);
}

#[test]
fn dropout_same_mask_forward_and_backward() {
    let mut net = Net::new(&[4, 1]);
    let x = net.data("x.kernel", &[4, 10]);
    let y = net.op(Op::Dropout { rate: 0.4, seed: 3 }, &[x]);
    let pred = net.head(y);
    net.check(pred);
}

/// BatchNormTrain with trainable γ, β, the moving-average state updates beside it, then a
/// ReLU; `x_shape` may be 4-D (conv) or 2-D (dense).
fn batch_norm_check(x_shape: &[usize], constant_scale: bool) {
    let c = *x_shape.last().unwrap();
    let mut net = Net::new(&[x_shape[0], 1]);
    let x = net.data("x.kernel", x_shape);
    let (gamma, beta) = if constant_scale {
        let g = net.g.add(Op::Constant(1.0), &[], Some(Shape(vec![c])), "bn").unwrap();
        let b = net.g.add(Op::Constant(0.0), &[], Some(Shape(vec![c])), "bn").unwrap();
        (g, b)
    } else {
        net.seed += 1;
        let g = random_tensor(&[c], net.seed, 0.5, 1.5);
        let g = net.param_with("bn.gamma", ParamRole::Gamma, g);
        let b = random_tensor(&[c], net.seed + 100, -0.5, 0.5);
        (g, net.param_with("bn.beta", ParamRole::Beta, b))
    };
    let mm = net.param_with("bn.moving_mean", ParamRole::MovingMean, Tensor::zeros(&[c]));
    let mv = net.param_with("bn.moving_variance", ParamRole::MovingVariance, Tensor::full(&[c], 1.0));
    let m = net.op(Op::Moments, &[x]);
    let y = net.op(Op::BatchNormTrain { epsilon: 1e-3 }, &[x, m, gamma, beta]);
    for (moving, moment) in [(mm, Moment::Mean), (mv, Moment::Variance)] {
        let upd = net.op(Op::MovingAverage { momentum: 0.99, moment }, &[moving, m]);
        net.g.outputs.push(GraphOutput {
            role: OutputRole::StateUpdate { param: moving },
            node: upd,
        });
    }
    let y = net.op(Op::Act(Activation::Tanh), &[y]);
    let pred = net.head(y);
    net.check(pred);
}

#[test]
fn batch_norm_train_4d() {
    batch_norm_check(&[2, 3, 3, 4], false);
}

#[test]
fn batch_norm_train_2d() {
    batch_norm_check(&[6, 5], false);
}

#[test]
fn batch_norm_train_without_scale_and_center() {
    batch_norm_check(&[3, 2, 2, 3], true);
}

/// A small CNN in the shape of the seed models: conv → BN → ReLU → max-pool → conv → dropout →
/// flatten → dense → softmax, reading the model input.
#[test]
fn small_cnn_end_to_end() {
    let mut net = Net::new(&[2, 6, 6, 1]);
    let input = net.input;
    let k1 = net.data("c1.kernel", &[3, 3, 1, 4]);
    let b1 = net.data("c1.bias", &[4]);
    let y = net.op(
        Op::Conv2d {
            strides: [1, 1],
            pad: pad(1, 1, 1, 1),
        },
        &[input, k1],
    );
    let y = net.op(Op::BiasAdd, &[y, b1]);
    let gamma = net.param_with("bn.gamma", ParamRole::Gamma, Tensor::full(&[4], 1.2));
    let beta = net.param_with("bn.beta", ParamRole::Beta, Tensor::full(&[4], 0.1));
    let m = net.op(Op::Moments, &[y]);
    let y = net.op(Op::BatchNormTrain { epsilon: 1e-3 }, &[y, m, gamma, beta]);
    let y = net.op(Op::Act(Activation::Relu), &[y]);
    let y = net.op(Op::MaxPool2d(window([2, 2], [2, 2], Pad2d::default())), &[y]);
    let k2 = net.data("c2.kernel", &[2, 2, 4, 3]);
    let y = net.op(
        Op::Conv2d {
            strides: [1, 1],
            pad: Pad2d::default(),
        },
        &[y, k2],
    );
    let y = net.op(Op::Dropout { rate: 0.25, seed: 11 }, &[y]);
    let pred = net.head(y);
    // ReLU after BN: a perturbation may move a value across 0, so the model-level tolerance.
    net.check_with(pred, GradCheck::default());
}
