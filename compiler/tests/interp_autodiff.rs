//! The structure of `training_graph`'s output: refusals (with the op and layer named), zero
//! gradients for unused parameters, the softmax→logits substitution, target shapes, kept
//! forward outputs, no gradient for the model input, and fan-out summed with `Add`.

use cnnc_compiler::autodiff::{training_graph, AutodiffError};
use cnnc_compiler::interp::run;
use cnnc_compiler::ir::{
    Activation, Graph, GraphOutput, LossKind, Mode, Moment, NodeId, Op, OutputRole, Pad2d, ParamRole, Shape,
};
use cnnc_runtime::{Init, Tensor};

fn param(g: &mut Graph, name: &str, role: ParamRole, shape: &[usize]) -> NodeId {
    let op = Op::Param {
        name: name.into(),
        role,
        init: Init::Zeros,
    };
    let layer = name.split('.').next().unwrap_or("");
    g.add(op, &[], Some(Shape(shape.to_vec())), layer).unwrap()
}

fn conv(g: &mut Graph, x: NodeId, k: NodeId, layer: &str) -> NodeId {
    let same = Pad2d {
        top: 1,
        bottom: 1,
        left: 1,
        right: 1,
    };
    g.add(
        Op::Conv2d {
            strides: [1, 1],
            pad: same,
        },
        &[x, k],
        None,
        layer,
    )
    .unwrap()
}

/// Flatten + dense to 3 classes + softmax; pushes the prediction output.
fn head(g: &mut Graph, x: NodeId) -> NodeId {
    let d = g.shape(x).dims().to_vec();
    let f: usize = d[1..].iter().product();
    let flat = g.add(Op::Reshape, &[x], Some(Shape(vec![d[0], f])), "flatten").unwrap();
    let w = param(g, "dense.kernel", ParamRole::Kernel, &[f, 3]);
    let mm = Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    };
    let z = g.add(mm, &[flat, w], None, "dense").unwrap();
    let p = g.add(Op::Act(Activation::Softmax), &[z], None, "dense").unwrap();
    g.outputs.push(GraphOutput {
        role: OutputRole::Prediction,
        node: p,
    });
    p
}

/// Input [2,4,4,1] → conv (layer "conv1") → returns (graph, input, conv output).
fn conv_start(mode: Mode) -> (Graph, NodeId, NodeId) {
    let mut g = Graph::new("t", 2, mode);
    let x = g.add(Op::Input, &[], Some(Shape(vec![2, 4, 4, 1])), "input").unwrap();
    let k = param(&mut g, "conv1.kernel", ParamRole::Kernel, &[3, 3, 1, 2]);
    let y = conv(&mut g, x, k, "conv1");
    (g, x, y)
}

#[test]
fn refuses_batch_norm_inference_on_the_path() {
    let (mut g, _, y) = conv_start(Mode::Training);
    let bn: Vec<NodeId> = [
        ("bn1.gamma", ParamRole::Gamma),
        ("bn1.beta", ParamRole::Beta),
        ("bn1.moving_mean", ParamRole::MovingMean),
        ("bn1.moving_variance", ParamRole::MovingVariance),
    ]
    .iter()
    .map(|&(n, r)| param(&mut g, n, r, &[2]))
    .collect();
    let ins = [y, bn[0], bn[1], bn[2], bn[3]];
    let z = g
        .add(Op::BatchNormInference { epsilon: 1e-3 }, &ins, None, "bn1")
        .unwrap();
    head(&mut g, z);
    let err = training_graph(&g, LossKind::SparseCategoricalCrossentropy, false).unwrap_err();
    assert!(matches!(err, AutodiffError::NoGradientRule { .. }), "{err:?}");
    let msg = err.to_string();
    for part in [
        "layer 'bn1'",
        "batch_norm_inference",
        "no gradient rule",
        "training mode",
    ] {
        assert!(msg.contains(part), "error {msg:?} lacks {part:?}");
    }
}

#[test]
fn refuses_moving_average_on_the_path() {
    let (mut g, _, y) = conv_start(Mode::Training);
    let mm = param(&mut g, "bn1.moving_mean", ParamRole::MovingMean, &[2]);
    let m = g.add(Op::Moments, &[y], None, "bn1").unwrap();
    let avg = Op::MovingAverage {
        momentum: 0.9,
        moment: Moment::Mean,
    };
    let upd = g.add(avg, &[mm, m], None, "bn1").unwrap();
    let z = g.add(Op::BiasAdd, &[y, upd], None, "weird").unwrap();
    head(&mut g, z);
    let msg = training_graph(&g, LossKind::MeanSquaredError, false)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("moving_average") && msg.contains("'bn1'"), "{msg}");
}

#[test]
fn refuses_inference_graphs_and_graphs_with_a_loss() {
    let (mut g, _, y) = conv_start(Mode::Inference);
    head(&mut g, y);
    let err = training_graph(&g, LossKind::MeanSquaredError, false).unwrap_err();
    assert!(matches!(err, AutodiffError::NotTraining { .. }), "{err}");

    let (mut g, _, y) = conv_start(Mode::Training);
    head(&mut g, y);
    let tg = training_graph(&g, LossKind::SparseCategoricalCrossentropy, true).unwrap();
    let err = training_graph(&tg, LossKind::SparseCategoricalCrossentropy, true).unwrap_err();
    assert!(matches!(err, AutodiffError::NotForward { .. }), "{err}");
}

#[test]
fn loss_that_does_not_fit_the_prediction_is_an_error() {
    let (mut g, _, y) = conv_start(Mode::Training);
    g.outputs.push(GraphOutput {
        role: OutputRole::Prediction,
        node: y,
    });
    // Sparse crossentropy needs a [N, K] prediction; this one is [2, 4, 4, 2].
    let err = training_graph(&g, LossKind::SparseCategoricalCrossentropy, true).unwrap_err();
    assert!(matches!(err, AutodiffError::Shape { .. }), "{err}");
    assert!(err.to_string().contains("sparse_categorical_crossentropy"), "{err}");
}

#[test]
fn unused_trainable_parameter_gets_a_zero_gradient() {
    let (mut g, _, y) = conv_start(Mode::Training);
    let spare = param(&mut g, "spare.kernel", ParamRole::Kernel, &[3, 2]);
    head(&mut g, y);
    let tg = training_graph(&g, LossKind::SparseCategoricalCrossentropy, false).unwrap();
    let gnode = tg.output(&OutputRole::Gradient { param: spare }).unwrap();
    assert_eq!(tg.node(gnode).op, Op::Constant(0.0));
    assert_eq!(tg.shape(gnode).dims(), &[3, 2]);
    let params = vec![
        Tensor::full(&[3, 3, 1, 2], 0.1),
        Tensor::full(&[3, 2], 5.0),
        Tensor::full(&[32, 3], 0.2),
    ];
    let input = Tensor::full(&[2, 4, 4, 1], 1.0);
    let target = Tensor::from_vec(&[2], vec![0.0, 1.0]).unwrap();
    let v = run(&tg, &input, Some(&target), &params, 0).unwrap();
    assert_eq!(v.gradient(&tg, spare).unwrap().data, vec![0.0; 6]);
}

#[test]
fn softmax_with_probability_crossentropy_feeds_logits_to_the_loss() {
    let (mut g, _, y) = conv_start(Mode::Training);
    let p = head(&mut g, y);
    let logits = g.node(p).inputs[0];
    for kind in [
        LossKind::SparseCategoricalCrossentropy,
        LossKind::CategoricalCrossentropy,
    ] {
        let tg = training_graph(&g, kind, false).unwrap();
        let loss = tg.output(&OutputRole::Loss).unwrap();
        let from_logits = true;
        assert_eq!(tg.node(loss).op, Op::Loss { kind, from_logits });
        assert_eq!(tg.node(loss).inputs[0], logits);
        assert_eq!(tg.output(&OutputRole::Prediction), Some(p));
        let has_grad = |op: &Op| tg.nodes.iter().any(|n| &n.op == op);
        assert!(has_grad(&Op::LossGrad { kind, from_logits }));
        assert!(!has_grad(&Op::ActGrad(Activation::Softmax)), "softmax is bypassed");
    }
    // Mean squared error differentiates through the softmax.
    let tg = training_graph(&g, LossKind::MeanSquaredError, false).unwrap();
    let loss = tg.output(&OutputRole::Loss).unwrap();
    assert_eq!(tg.node(loss).inputs[0], p);
    assert!(tg.nodes.iter().any(|n| n.op == Op::ActGrad(Activation::Softmax)));
}

#[test]
fn target_shape_follows_the_loss() {
    let (mut g, _, y) = conv_start(Mode::Training);
    head(&mut g, y);
    for (kind, shape) in [
        (LossKind::SparseCategoricalCrossentropy, vec![2]),
        (LossKind::CategoricalCrossentropy, vec![2, 3]),
        (LossKind::MeanSquaredError, vec![2, 3]),
    ] {
        let tg = training_graph(&g, kind, true).unwrap();
        let t = tg.target().unwrap();
        assert_eq!(tg.shape(t).dims(), shape.as_slice(), "{}", kind.keras_name());
    }
}

/// Prediction and state updates stay; the loss and one gradient per trainable parameter (in
/// parameter order, none for moving statistics) are added; the model input gets no gradient.
#[test]
fn outputs_and_gradient_coverage() {
    let (mut g, _, y) = conv_start(Mode::Training);
    let k2 = param(&mut g, "conv2.kernel", ParamRole::Kernel, &[3, 3, 2, 2]);
    let y2 = conv(&mut g, y, k2, "conv2");
    let gamma = param(&mut g, "bn.gamma", ParamRole::Gamma, &[2]);
    let beta = param(&mut g, "bn.beta", ParamRole::Beta, &[2]);
    let mm = param(&mut g, "bn.moving_mean", ParamRole::MovingMean, &[2]);
    let m = g.add(Op::Moments, &[y2], None, "bn").unwrap();
    let z = g
        .add(Op::BatchNormTrain { epsilon: 1e-3 }, &[y2, m, gamma, beta], None, "bn")
        .unwrap();
    let avg = Op::MovingAverage {
        momentum: 0.99,
        moment: Moment::Mean,
    };
    let upd = g.add(avg, &[mm, m], None, "bn").unwrap();
    g.outputs.push(GraphOutput {
        role: OutputRole::StateUpdate { param: mm },
        node: upd,
    });
    head(&mut g, z);
    let tg = training_graph(&g, LossKind::SparseCategoricalCrossentropy, false).unwrap();
    assert!(cnnc_compiler::ir::verify(&tg).is_empty());
    assert_eq!(tg.mode, Mode::Training);
    assert_eq!(tg.output(&OutputRole::StateUpdate { param: mm }), Some(upd));
    assert!(tg.output(&OutputRole::Prediction).is_some() && tg.output(&OutputRole::Loss).is_some());
    let grads: Vec<NodeId> = tg
        .outputs
        .iter()
        .filter_map(|o| match o.role {
            OutputRole::Gradient { param } => Some(param),
            _ => None,
        })
        .collect();
    let names: Vec<&str> = grads.iter().map(|&p| tg.param_info(p).unwrap().0).collect();
    assert_eq!(
        names,
        ["conv1.kernel", "conv2.kernel", "bn.gamma", "bn.beta", "dense.kernel"]
    );
    let count = |f: &dyn Fn(&Op) -> bool| tg.nodes.iter().filter(|n| f(&n.op)).count();
    // conv2's input gets a gradient, conv1's (the model input) does not.
    assert_eq!(count(&|op| matches!(op, Op::Conv2dGradInput { .. })), 1);
    assert_eq!(count(&|op| matches!(op, Op::Conv2dGradKernel { .. })), 2);
    assert_eq!(count(&|op| matches!(op, Op::BatchNormGradInput { .. })), 1);
}

/// `y = x + relu(x)` after a conv: the conv output's gradient is the `Add` of two contributions.
#[test]
fn fan_out_gradients_are_summed_with_add() {
    let (mut g, _, y) = conv_start(Mode::Training);
    let r = g.add(Op::Act(Activation::Relu), &[y], None, "relu").unwrap();
    let s = g.add(Op::Add, &[y, r], None, "add").unwrap();
    head(&mut g, s);
    let tg = training_graph(&g, LossKind::SparseCategoricalCrossentropy, false).unwrap();
    let fwd_len = g.nodes.len();
    let adds = tg.nodes[fwd_len..].iter().filter(|n| n.op == Op::Add).count();
    assert_eq!(adds, 1);
    let sum = tg.nodes[fwd_len..].iter().find(|n| n.op == Op::Add).unwrap();
    assert_eq!(sum.layer, "conv1", "the sum belongs to the node whose gradient it is");
}
