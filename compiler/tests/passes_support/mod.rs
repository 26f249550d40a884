//! Test support for the middle-end tests: a Keras-style sequential model builder producing
//! graphs with the front end's conventions (see notes/common.md), and a stand-in reverse-mode
//! differentiation for training graphs until `autodiff::training_graph` lands.
#![allow(dead_code)]

use std::collections::HashMap;

use cnnc_compiler::ir::{
    Activation, Graph, GraphOutput, Layer, LossKind, Mode, Moment, NodeId, Op, OutputRole, Pad2d, ParamRole, Shape,
    Window2d,
};
use cnnc_runtime::init::Init;

/// Keras's BN defaults.
const BN_MOMENTUM: f32 = 0.99;
const BN_EPSILON: f32 = 1e-3;

/// TensorFlow's SAME padding along one axis: (before, after).
fn same_pad(len: usize, k: usize, s: usize) -> (usize, usize) {
    let total = ((len.div_ceil(s) - 1) * s + k).saturating_sub(len);
    (total / 2, total - total / 2)
}

fn pad2d(hw: &[usize], k: [usize; 2], s: [usize; 2], same: bool) -> Pad2d {
    if !same {
        return Pad2d::default();
    }
    let (top, bottom) = same_pad(hw[0], k[0], s[0]);
    let (left, right) = same_pad(hw[1], k[1], s[1]);
    Pad2d {
        top,
        bottom,
        left,
        right,
    }
}

/// A sequential model under construction.
pub struct Model {
    g: Graph,
    cur: NodeId,
    counts: HashMap<&'static str, usize>,
    state_updates: Vec<(NodeId, NodeId)>,
}

impl Model {
    pub fn new(name: &str, batch: usize, mode: Mode, input: &[usize]) -> Model {
        let mut g = Graph::new(name, batch, mode);
        let mut shape = vec![batch];
        shape.extend_from_slice(input);
        let cur = g.add(Op::Input, &[], Some(Shape(shape)), "").expect("input");
        Model {
            g,
            cur,
            counts: HashMap::new(),
            state_updates: Vec::new(),
        }
    }

    fn mode(&self) -> Mode {
        self.g.mode
    }

    fn shape(&self) -> Vec<usize> {
        self.g.shape(self.cur).0.clone()
    }

    /// Keras's automatic layer name: `dense`, `dense_1`, ...
    fn name(&mut self, base: &'static str) -> String {
        let n = self.counts.entry(base).or_insert(0);
        let name = if *n == 0 {
            base.to_string()
        } else {
            format!("{base}_{n}")
        };
        *n += 1;
        name
    }

    fn param(&mut self, layer: &str, role: ParamRole, shape: Vec<usize>, init: Init) -> NodeId {
        let op = Op::Param {
            name: format!("{layer}.{}", role.keras_suffix()),
            role,
            init,
        };
        self.g.add(op, &[], Some(Shape(shape)), layer).expect("param")
    }

    fn node(&mut self, op: Op, inputs: &[NodeId], layer: &str) -> NodeId {
        self.g.add(op, inputs, None, layer).expect("node")
    }

    fn push_layer(&mut self, name: String, class: &str, params: Vec<NodeId>) {
        self.g.layers.push(Layer {
            name,
            class: class.into(),
            output: self.cur,
            params,
        });
    }

    fn activate(&mut self, act: Activation, layer: &str) {
        if act != Activation::Linear {
            self.cur = self.node(Op::Act(act), &[self.cur], layer);
        }
    }

    pub fn conv2d(
        &mut self,
        filters: usize,
        k: usize,
        stride: usize,
        same: bool,
        act: Activation,
        bias: bool,
    ) -> &mut Self {
        let name = self.name("conv2d");
        let x = self.shape();
        let kernel = self.param(&name, ParamRole::Kernel, vec![k, k, x[3], filters], Init::GlorotUniform);
        let mut params = vec![kernel];
        let pad = pad2d(&x[1..3], [k, k], [stride, stride], same);
        self.cur = self.node(
            Op::Conv2d {
                strides: [stride, stride],
                pad,
            },
            &[self.cur, kernel],
            &name,
        );
        if bias {
            let b = self.param(&name, ParamRole::Bias, vec![filters], Init::Zeros);
            params.push(b);
            self.cur = self.node(Op::BiasAdd, &[self.cur, b], &name);
        }
        self.activate(act, &name);
        self.push_layer(name, "Conv2D", params);
        self
    }

    pub fn dense(&mut self, units: usize, act: Activation) -> &mut Self {
        let name = self.name("dense");
        let x = self.shape();
        let kernel = self.param(&name, ParamRole::Kernel, vec![x[1], units], Init::GlorotUniform);
        let b = self.param(&name, ParamRole::Bias, vec![units], Init::Zeros);
        let mm = Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        };
        self.cur = self.node(mm, &[self.cur, kernel], &name);
        self.cur = self.node(Op::BiasAdd, &[self.cur, b], &name);
        self.activate(act, &name);
        self.push_layer(name, "Dense", vec![kernel, b]);
        self
    }

    pub fn batch_norm(&mut self) -> &mut Self {
        let name = self.name("batch_normalization");
        let c = *self.shape().last().expect("rank");
        let gamma = self.param(&name, ParamRole::Gamma, vec![c], Init::Ones);
        let beta = self.param(&name, ParamRole::Beta, vec![c], Init::Zeros);
        let mean = self.param(&name, ParamRole::MovingMean, vec![c], Init::Zeros);
        let var = self.param(&name, ParamRole::MovingVariance, vec![c], Init::Ones);
        let x = self.cur;
        self.cur = match self.mode() {
            Mode::Inference => self.node(
                Op::BatchNormInference { epsilon: BN_EPSILON },
                &[x, gamma, beta, mean, var],
                &name,
            ),
            Mode::Training => {
                let m = self.node(Op::Moments, &[x], &name);
                let y = self.node(Op::BatchNormTrain { epsilon: BN_EPSILON }, &[x, m, gamma, beta], &name);
                for (param, moment) in [(mean, Moment::Mean), (var, Moment::Variance)] {
                    let op = Op::MovingAverage {
                        momentum: BN_MOMENTUM,
                        moment,
                    };
                    let u = self.node(op, &[param, m], &name);
                    self.state_updates.push((param, u));
                }
                y
            }
        };
        self.push_layer(name, "BatchNormalization", vec![gamma, beta, mean, var]);
        self
    }

    pub fn act(&mut self, a: Activation) -> &mut Self {
        let name = self.name("activation");
        self.activate(a, &name);
        self.push_layer(name, "Activation", vec![]);
        self
    }

    fn pool(&mut self, max: bool, size: usize, stride: usize, same: bool) -> &mut Self {
        let name = self.name(if max { "max_pooling2d" } else { "average_pooling2d" });
        let x = self.shape();
        let w = Window2d {
            size: [size, size],
            strides: [stride, stride],
            pad: pad2d(&x[1..3], [size, size], [stride, stride], same),
        };
        let op = if max { Op::MaxPool2d(w) } else { Op::AvgPool2d(w) };
        self.cur = self.node(op, &[self.cur], &name);
        self.push_layer(name, if max { "MaxPooling2D" } else { "AveragePooling2D" }, vec![]);
        self
    }

    pub fn max_pool(&mut self, size: usize, stride: usize, same: bool) -> &mut Self {
        self.pool(true, size, stride, same)
    }

    pub fn avg_pool(&mut self, size: usize, stride: usize, same: bool) -> &mut Self {
        self.pool(false, size, stride, same)
    }

    pub fn flatten(&mut self) -> &mut Self {
        let name = self.name("flatten");
        let x = self.shape();
        let to = Shape(vec![x[0], x[1..].iter().product()]);
        self.cur = self.g.add(Op::Reshape, &[self.cur], Some(to), &name).expect("reshape");
        self.push_layer(name, "Flatten", vec![]);
        self
    }

    pub fn dropout(&mut self, rate: f32) -> &mut Self {
        let name = self.name("dropout");
        if self.mode() == Mode::Training {
            let seed = 1000 + self.g.nodes.len() as u64;
            self.cur = self.node(Op::Dropout { rate, seed }, &[self.cur], &name);
        }
        self.push_layer(name, "Dropout", vec![]);
        self
    }

    /// The finished graph: inference graphs output the prediction; training graphs add the
    /// loss, the backward pass, every trainable parameter's gradient and the BN state updates.
    pub fn finish(&mut self, loss: LossKind) -> Graph {
        let mut g = self.g.clone();
        g.outputs.push(GraphOutput {
            role: OutputRole::Prediction,
            node: self.cur,
        });
        if g.mode == Mode::Training {
            backward(&mut g, self.cur, loss);
            for &(param, node) in &self.state_updates {
                g.outputs.push(GraphOutput {
                    role: OutputRole::StateUpdate { param },
                    node,
                });
            }
        }
        g
    }
}

fn add(g: &mut Graph, op: Op, inputs: &[NodeId]) -> NodeId {
    g.add(op, inputs, None, "").expect("backward node")
}

/// Stand-in reverse-mode differentiation with the rules the real autodiff uses.
fn backward(g: &mut Graph, pred: NodeId, loss: LossKind) {
    let ce = loss != LossKind::MeanSquaredError;
    let (out, from_logits) = match g.node(pred).op {
        Op::Act(Activation::Softmax) if ce => (g.node(pred).inputs[0], true),
        _ => (pred, false),
    };
    let tshape = match loss {
        LossKind::SparseCategoricalCrossentropy => Shape(vec![g.batch]),
        _ => g.shape(out).clone(),
    };
    let target = g.add(Op::Target, &[], Some(tshape), "").expect("target");
    let l = add(
        g,
        Op::Loss {
            kind: loss,
            from_logits,
        },
        &[out, target],
    );
    g.outputs.push(GraphOutput {
        role: OutputRole::Loss,
        node: l,
    });
    let n_fwd = out.index() + 1;
    let mut needs = vec![false; n_fwd];
    for i in 0..n_fwd {
        let node = g.node(NodeId(i as u32));
        needs[i] = match &node.op {
            Op::Param { role, .. } => role.trainable(),
            op if op.is_leaf() => false,
            _ => node.inputs.iter().any(|x| needs[x.index()]),
        };
    }
    let mut grads: HashMap<NodeId, NodeId> = HashMap::new();
    let dl = add(
        g,
        Op::LossGrad {
            kind: loss,
            from_logits,
        },
        &[out, target],
    );
    grads.insert(out, dl);
    let acc = |g: &mut Graph, grads: &mut HashMap<NodeId, NodeId>, x: NodeId, d: NodeId| {
        let d = match grads.get(&x) {
            Some(&e) => add(g, Op::Add, &[e, d]),
            None => d,
        };
        grads.insert(x, d);
    };
    for i in (0..n_fwd).rev() {
        let id = NodeId(i as u32);
        let Some(&dy) = grads.get(&id) else { continue };
        let node = g.node(id).clone();
        let ins = node.inputs.clone();
        let want = |j: usize| needs[ins[j].index()];
        match node.op {
            Op::Conv2d { strides, pad } => {
                if want(0) {
                    let s = g.shape(ins[0]).0.clone();
                    let op = Op::Conv2dGradInput {
                        strides,
                        pad,
                        input_hw: [s[1], s[2]],
                    };
                    let d = add(g, op, &[dy, ins[1]]);
                    acc(g, &mut grads, ins[0], d);
                }
                if want(1) {
                    let k = g.shape(ins[1]).0.clone();
                    let op = Op::Conv2dGradKernel {
                        strides,
                        pad,
                        kernel_hw: [k[0], k[1]],
                    };
                    let d = add(g, op, &[ins[0], dy]);
                    acc(g, &mut grads, ins[1], d);
                }
            }
            Op::MatMul { .. } => {
                if want(0) {
                    let op = Op::MatMul {
                        transpose_a: false,
                        transpose_b: true,
                    };
                    let d = add(g, op, &[dy, ins[1]]);
                    acc(g, &mut grads, ins[0], d);
                }
                if want(1) {
                    let op = Op::MatMul {
                        transpose_a: true,
                        transpose_b: false,
                    };
                    let d = add(g, op, &[ins[0], dy]);
                    acc(g, &mut grads, ins[1], d);
                }
            }
            Op::BiasAdd => {
                if want(0) {
                    acc(g, &mut grads, ins[0], dy);
                }
                if want(1) {
                    let d = add(g, Op::ReduceToChannels, &[dy]);
                    acc(g, &mut grads, ins[1], d);
                }
            }
            Op::Act(a) => {
                let d = add(g, Op::ActGrad(a), &[id, dy]);
                acc(g, &mut grads, ins[0], d);
            }
            Op::MaxPool2d(w) => {
                let d = add(g, Op::MaxPool2dGrad(w), &[ins[0], dy]);
                acc(g, &mut grads, ins[0], d);
            }
            Op::AvgPool2d(window) => {
                let s = g.shape(ins[0]).0.clone();
                let op = Op::AvgPool2dGrad {
                    window,
                    input_hw: [s[1], s[2]],
                };
                let d = add(g, op, &[dy]);
                acc(g, &mut grads, ins[0], d);
            }
            Op::Reshape => {
                let s = g.shape(ins[0]).clone();
                let d = g.add(Op::Reshape, &[dy], Some(s), "").expect("reshape grad");
                acc(g, &mut grads, ins[0], d);
            }
            Op::Dropout { rate, seed } => {
                let d = add(g, Op::Dropout { rate, seed }, &[dy]);
                acc(g, &mut grads, ins[0], d);
            }
            Op::BatchNormTrain { epsilon } => {
                if want(0) {
                    let d = add(g, Op::BatchNormGradInput { epsilon }, &[ins[0], ins[1], ins[2], dy]);
                    acc(g, &mut grads, ins[0], d);
                }
                if want(2) {
                    let d = add(g, Op::BatchNormGradGamma { epsilon }, &[ins[0], ins[1], dy]);
                    acc(g, &mut grads, ins[2], d);
                }
                if want(3) {
                    let d = add(g, Op::ReduceToChannels, &[dy]);
                    acc(g, &mut grads, ins[3], d);
                }
            }
            _ => {}
        }
    }
    for p in g.params() {
        let trainable = g.param_info(p).is_some_and(|(_, r)| r.trainable());
        if let (true, Some(&d)) = (trainable, grads.get(&p)) {
            g.outputs.push(GraphOutput {
                role: OutputRole::Gradient { param: p },
                node: d,
            });
        }
    }
}

/// The seed MNIST CNN (seed 000 §9.2.1): conv(32, 3×3, same, relu) → max-pool 2 →
/// conv(64, 3×3, same, relu) → max-pool 2 → flatten → dense(128, relu) → dense(10, softmax).
pub fn mnist_cnn(batch: usize, mode: Mode) -> Graph {
    let r = Activation::Relu;
    Model::new("mnist_cnn", batch, mode, &[28, 28, 1])
        .conv2d(32, 3, 1, true, r, true)
        .max_pool(2, 2, false)
        .conv2d(64, 3, 1, true, r, true)
        .max_pool(2, 2, false)
        .flatten()
        .dense(128, r)
        .dense(10, Activation::Softmax)
        .finish(LossKind::SparseCategoricalCrossentropy)
}

/// The course's BN baseline (seed 003): conv(6, 5×5, same) → BN → relu → max-pool(2, same) →
/// dropout(0.2) → flatten → dense(128, relu) → dropout(0.2) → dense(10, softmax), on 32×32×3.
pub fn bn_baseline(batch: usize, mode: Mode) -> Graph {
    let lin = Activation::Linear;
    Model::new("bn_baseline", batch, mode, &[32, 32, 3])
        .conv2d(6, 5, 1, true, lin, true)
        .batch_norm()
        .act(Activation::Relu)
        .max_pool(2, 2, true)
        .dropout(0.2)
        .flatten()
        .dense(128, Activation::Relu)
        .dropout(0.2)
        .dense(10, Activation::Softmax)
        .finish(LossKind::SparseCategoricalCrossentropy)
}
