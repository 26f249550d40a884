//! Finite-difference checks of each loss × `from_logits`, through `training_graph` + `run`:
//! a dense layer on the model input, an optional output activation, and the loss.

use cnnc_compiler::interp::gradcheck::{random_tensor, GradCheck, SINGLE_OP};
use cnnc_compiler::ir::{Activation, Graph, GraphOutput, LossKind, Mode, Op, OutputRole, ParamRole, Shape};
use cnnc_runtime::{Init, Tensor};

const N: usize = 4;
const FEATURES: usize = 5;
const CLASSES: usize = 3;

/// `act(input · W + b)` as a Training-mode forward graph, with the values of W and b.
fn dense_model(act: Option<Activation>) -> (Graph, Vec<Tensor>) {
    let mut g = Graph::new("loss_check", N, Mode::Training);
    let x = g.add(Op::Input, &[], Some(Shape(vec![N, FEATURES])), "input").unwrap();
    let param = |g: &mut Graph, name: &str, role, shape: Vec<usize>| {
        let op = Op::Param {
            name: name.into(),
            role,
            init: Init::Zeros,
        };
        g.add(op, &[], Some(Shape(shape)), "dense").unwrap()
    };
    let w = param(&mut g, "dense.kernel", ParamRole::Kernel, vec![FEATURES, CLASSES]);
    let b = param(&mut g, "dense.bias", ParamRole::Bias, vec![CLASSES]);
    let mm = Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    };
    let z = g.add(mm, &[x, w], None, "dense").unwrap();
    let mut y = g.add(Op::BiasAdd, &[z, b], None, "dense").unwrap();
    if let Some(a) = act {
        y = g.add(Op::Act(a), &[y], None, "dense").unwrap();
    }
    g.outputs.push(GraphOutput {
        role: OutputRole::Prediction,
        node: y,
    });
    let params = vec![
        random_tensor(&[FEATURES, CLASSES], 5, -0.8, 0.8),
        random_tensor(&[CLASSES], 6, -0.3, 0.3),
    ];
    (g, params)
}

fn class_ids() -> Tensor {
    Tensor::from_vec(&[N], vec![0.0, 2.0, 1.0, 2.0]).unwrap()
}

fn one_hot() -> Tensor {
    let mut t = Tensor::zeros(&[N, CLASSES]);
    for (i, &c) in class_ids().data.iter().enumerate() {
        t.data[i * CLASSES + c as usize] = 1.0;
    }
    t
}

/// Label-smoothed rows (sum 1) and one row that does not sum to 1.
fn soft_targets() -> Tensor {
    let mut t = one_hot();
    for v in &mut t.data {
        *v = 0.8 * *v + 0.2 / CLASSES as f32;
    }
    t.data[0] = 0.5;
    t
}

fn check(act: Option<Activation>, loss: LossKind, from_logits: bool, target: Tensor) {
    let (g, params) = dense_model(act);
    let input = random_tensor(&[N, FEATURES], 17, -1.0, 1.0);
    let opts = GradCheck {
        tol: SINGLE_OP,
        ..GradCheck::default()
    };
    if let Err(e) = opts.check(&g, loss, from_logits, &params, &input, &target) {
        panic!("{} from_logits={from_logits} act={act:?}: {e}", loss.keras_name());
    }
}

#[test]
fn sparse_crossentropy_from_logits() {
    check(None, LossKind::SparseCategoricalCrossentropy, true, class_ids());
}

/// Softmax output, from probabilities: the training graph uses the logits (stable).
#[test]
fn sparse_crossentropy_from_softmax_probabilities() {
    let act = Some(Activation::Softmax);
    check(act, LossKind::SparseCategoricalCrossentropy, false, class_ids());
}

/// A non-softmax probability output goes through Keras's clipped `-log p`.
#[test]
fn sparse_crossentropy_from_sigmoid_probabilities() {
    let act = Some(Activation::Sigmoid);
    check(act, LossKind::SparseCategoricalCrossentropy, false, class_ids());
}

/// `from_logits: true` on a softmax output treats the probabilities as logits (as Keras).
#[test]
fn sparse_crossentropy_logits_flag_on_softmax_output() {
    let act = Some(Activation::Softmax);
    check(act, LossKind::SparseCategoricalCrossentropy, true, class_ids());
}

#[test]
fn categorical_crossentropy_from_logits() {
    check(None, LossKind::CategoricalCrossentropy, true, one_hot());
    check(None, LossKind::CategoricalCrossentropy, true, soft_targets());
}

#[test]
fn categorical_crossentropy_from_softmax_probabilities() {
    let act = Some(Activation::Softmax);
    check(act, LossKind::CategoricalCrossentropy, false, one_hot());
    check(act, LossKind::CategoricalCrossentropy, false, soft_targets());
}

#[test]
fn categorical_crossentropy_from_sigmoid_probabilities() {
    let act = Some(Activation::Sigmoid);
    check(act, LossKind::CategoricalCrossentropy, false, soft_targets());
}

#[test]
fn mean_squared_error() {
    let target = random_tensor(&[N, CLASSES], 23, -1.0, 1.0);
    for act in [None, Some(Activation::Softmax), Some(Activation::Tanh)] {
        for from_logits in [false, true] {
            check(act, LossKind::MeanSquaredError, from_logits, target.clone());
        }
    }
}
