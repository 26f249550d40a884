//! Forward values of single ops against numbers worked by hand (softmax, the losses with and
//! without logits, batch normalisation, moving averages, dropout, concat/slice, global pooling),
//! and the interpreter's binding errors, which must name the offending tensor.

// Reference values are written with all the digits they were worked out to.
#![allow(clippy::excessive_precision)]

use cnnc_compiler::interp::{run, InterpError};
use cnnc_compiler::ir::{
    Activation, Graph, GraphOutput, LossKind, Mode, Moment, NodeId, Op, OutputRole, ParamRole, Shape,
};
use cnnc_compiler::tolerance::Tolerance;
use cnnc_runtime::rng::dropout_keep;
use cnnc_runtime::{Init, Tensor};

fn t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_vec(shape, data.to_vec()).unwrap()
}

/// A training graph whose input is `x` and whose first node after it is built by `build`; the
/// built node is the prediction, and a mean-squared-error loss of it against the target (of the
/// same shape) makes the graph valid.
fn eval_with(
    x: &Tensor,
    params: &[(&str, ParamRole, Tensor)],
    build: impl FnOnce(&mut Graph, NodeId, &[NodeId]) -> NodeId,
    step: u64,
) -> Result<Tensor, InterpError> {
    let mut g = Graph::new("ops", x.shape[0], Mode::Training);
    let input = g.add(Op::Input, &[], Some(Shape(x.shape.clone())), "input").unwrap();
    let ids: Vec<NodeId> = params
        .iter()
        .map(|(name, role, v)| {
            let op = Op::Param {
                name: name.to_string(),
                role: *role,
                init: Init::Zeros,
            };
            g.add(op, &[], Some(Shape(v.shape.clone())), "layer").unwrap()
        })
        .collect();
    let y = build(&mut g, input, &ids);
    let ys = g.shape(y).clone();
    let target = g.add(Op::Target, &[], Some(ys.clone()), "").unwrap();
    let mse = Op::Loss {
        kind: LossKind::MeanSquaredError,
        from_logits: false,
    };
    let loss = g.add(mse, &[y, target], None, "").unwrap();
    g.outputs.push(GraphOutput {
        role: OutputRole::Prediction,
        node: y,
    });
    g.outputs.push(GraphOutput {
        role: OutputRole::Loss,
        node: loss,
    });
    let values: Vec<Tensor> = params.iter().map(|(_, _, v)| v.clone()).collect();
    let v = run(&g, x, Some(&Tensor::zeros(&ys.0)), &values, step)?;
    Ok(v.get(y).clone())
}

fn unary(x: &Tensor, op: Op) -> Tensor {
    eval_with(x, &[], |g, input, _| g.add(op, &[input], None, "layer").unwrap(), 0).unwrap()
}

/// The loss of `pred` against `target` as a scalar.
fn loss_value(pred: &Tensor, target: &Tensor, kind: LossKind, from_logits: bool) -> Result<f32, InterpError> {
    let mut g = Graph::new("loss", pred.shape[0], Mode::Training);
    let p = g.add(Op::Input, &[], Some(Shape(pred.shape.clone())), "input").unwrap();
    let tt = g.add(Op::Target, &[], Some(Shape(target.shape.clone())), "").unwrap();
    let l = g.add(Op::Loss { kind, from_logits }, &[p, tt], None, "loss").unwrap();
    g.outputs.push(GraphOutput {
        role: OutputRole::Prediction,
        node: p,
    });
    g.outputs.push(GraphOutput {
        role: OutputRole::Loss,
        node: l,
    });
    Ok(run(&g, pred, Some(target), &[], 0)?.loss(&g).unwrap())
}

#[test]
fn softmax_is_stable_for_large_logits() {
    let y = unary(
        &t(&[2, 3], &[1000.0, 1001.0, 1002.0, -5.0, 0.0, 5.0]),
        Op::Act(Activation::Softmax),
    );
    let want = [
        0.09003057,
        0.24472847,
        0.66524096,
        4.5094041e-5,
        6.6925491e-3,
        0.99326236,
    ];
    Tolerance::EXACT.assert_close("softmax", &y.data, &want);
}

#[test]
fn elementwise_activations() {
    let x = t(&[1, 4], &[-2.0, -0.5, 0.0, 1.5]);
    let relu = unary(&x, Op::Act(Activation::Relu));
    Tolerance::EXACT.assert_close("relu", &relu.data, &[0.0, 0.0, 0.0, 1.5]);
    let sig = unary(&x, Op::Act(Activation::Sigmoid));
    Tolerance::EXACT.assert_close("sigmoid", &sig.data, &[0.11920292, 0.37754067, 0.5, 0.81757448]);
    let tanh = unary(&x, Op::Act(Activation::Tanh));
    Tolerance::EXACT.assert_close("tanh", &tanh.data, &[-0.96402758, -0.46211716, 0.0, 0.90514825]);
}

#[test]
fn crossentropy_values() {
    let sparse = LossKind::SparseCategoricalCrossentropy;
    let cat = LossKind::CategoricalCrossentropy;
    // Logits [1, 2, 3]: log-sum-exp = 3.40760596; class 2 costs 0.40760596, class 0 2.40760596.
    let z = t(&[2, 3], &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    let l = loss_value(&z, &t(&[2], &[2.0, 0.0]), sparse, true).unwrap();
    Tolerance::EXACT.assert_close("sparse from logits", &[l], &[1.40760596]);
    let onehot = t(&[2, 3], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    let l = loss_value(&z, &onehot, cat, true).unwrap();
    Tolerance::EXACT.assert_close("categorical from logits", &[l], &[1.40760596]);
    // Probabilities: -ln 0.3 = 1.2039728; a zero probability is clipped to 1e-7: 16.118095.
    let p = t(&[2, 3], &[0.2, 0.3, 0.5, 0.0, 0.4, 0.6]);
    let l = loss_value(&p, &t(&[2], &[1.0, 0.0]), sparse, false).unwrap();
    Tolerance::EXACT.assert_close("sparse from probabilities", &[l], &[(1.2039728 + 16.118095) / 2.0]);
    // Soft targets: -(0.5 ln 0.2 + 0.5 ln 0.5) = 1.1512925 and -(ln 0.6) = 0.5108256.
    let soft = t(&[2, 3], &[0.5, 0.0, 0.5, 0.0, 0.0, 1.0]);
    let l = loss_value(&p, &soft, cat, false).unwrap();
    Tolerance::EXACT.assert_close("categorical from probabilities", &[l], &[(1.1512925 + 0.5108256) / 2.0]);
}

#[test]
fn mean_squared_error_is_mean_over_elements_then_batch() {
    let p = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let y = t(&[2, 2], &[0.0, 0.0, 1.0, 1.0]);
    // Sample means: (1 + 4)/2 = 2.5 and (4 + 9)/2 = 6.5; batch mean 4.5.
    let l = loss_value(&p, &y, LossKind::MeanSquaredError, false).unwrap();
    Tolerance::EXACT.assert_close("mse", &[l], &[4.5]);
}

#[test]
fn bad_class_id_names_the_layer_and_sample() {
    let z = t(&[2, 3], &[0.0; 6]);
    let err = loss_value(&z, &t(&[2], &[1.0, 3.0]), LossKind::SparseCategoricalCrossentropy, true).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, InterpError::Op { .. }), "{msg}");
    assert!(
        msg.contains("'loss'") && msg.contains("sample 1") && msg.contains("0..3"),
        "{msg}"
    );
    let err = loss_value(&z, &t(&[2], &[0.5, 1.0]), LossKind::SparseCategoricalCrossentropy, true).unwrap_err();
    assert!(err.to_string().contains("sample 0"), "{err}");
}

#[test]
fn batch_norm_train_and_inference_and_moving_averages() {
    // Channel 0: [1, 2, 3, 4] (mean 2.5, biased var 1.25); channel 1: [0, 0, 2, 2] (1, 1).
    let x = t(&[2, 1, 2, 2], &[1.0, 0.0, 2.0, 0.0, 3.0, 2.0, 4.0, 2.0]);
    let eps = 0.25;
    let params = [
        ("bn.gamma", ParamRole::Gamma, t(&[2], &[2.0, 1.0])),
        ("bn.beta", ParamRole::Beta, t(&[2], &[0.5, -1.0])),
    ];
    let y = eval_with(
        &x,
        &params,
        |g, x, p| {
            let m = g.add(Op::Moments, &[x], None, "bn").unwrap();
            g.add(Op::BatchNormTrain { epsilon: eps }, &[x, m, p[0], p[1]], None, "bn")
                .unwrap()
        },
        0,
    )
    .unwrap();
    // sqrt(1.25 + 0.25) = 1.2247449; sqrt(1 + 0.25) = 1.118034.
    let (s0, s1) = (1.2247449f32, 1.118034f32);
    let want: Vec<f32> = [(1.0, -1.0), (2.0, -1.0), (3.0, 1.0), (4.0, 1.0)]
        .iter()
        .flat_map(|&(a, b): &(f32, f32)| [2.0 * (a - 2.5) / s0 + 0.5, b / s1 - 1.0])
        .collect();
    Tolerance::EXACT.assert_close("batch norm train", &y.data, &want);

    let moments = eval_with(&x, &[], |g, x, _| g.add(Op::Moments, &[x], None, "bn").unwrap(), 0).unwrap();
    Tolerance::EXACT.assert_close("moments", &moments.data, &[2.5, 1.0, 1.25, 1.0]);

    let moving = [
        ("bn.moving_mean", ParamRole::MovingMean, t(&[2], &[1.0, -1.0])),
        ("bn.moving_variance", ParamRole::MovingVariance, t(&[2], &[3.0, 0.75])),
    ];
    let upd = eval_with(
        &x,
        &moving,
        |g, x, p| {
            let m = g.add(Op::Moments, &[x], None, "bn").unwrap();
            let ma = |moment| Op::MovingAverage { momentum: 0.9, moment };
            let a = g.add(ma(Moment::Mean), &[p[0], m], None, "bn").unwrap();
            let b = g.add(ma(Moment::Variance), &[p[1], m], None, "bn").unwrap();
            g.add(Op::Concat, &[a, b], None, "").unwrap()
        },
        0,
    )
    .unwrap();
    // 0.9·moving + 0.1·batch: means 1.15, -0.8; variances 2.825, 0.775.
    Tolerance::EXACT.assert_close("moving averages", &upd.data, &[1.15, -0.8, 2.825, 0.775]);

    let all = [
        params[0].clone(),
        params[1].clone(),
        moving[0].clone(),
        moving[1].clone(),
    ];
    let y = eval_with(
        &x,
        &all,
        |g, x, p| {
            let ins = [x, p[0], p[1], p[2], p[3]];
            g.add(Op::BatchNormInference { epsilon: eps }, &ins, None, "bn")
                .unwrap()
        },
        0,
    )
    .unwrap();
    // Moving statistics: channel 0 (x - 1)/sqrt(3.25)·2 + 0.5, channel 1 (x + 1)/1·1 - 1.
    let s = 3.25f32.sqrt();
    let want: Vec<f32> = [(1.0, 0.0), (2.0, 0.0), (3.0, 2.0), (4.0, 2.0)]
        .iter()
        .flat_map(|&(a, b): &(f32, f32)| [2.0 * (a - 1.0) / s + 0.5, b + 1.0 - 1.0])
        .collect();
    Tolerance::EXACT.assert_close("batch norm inference", &y.data, &want);
}

#[test]
fn dropout_uses_the_shared_mask_and_scales_kept_elements() {
    let x = t(&[4, 25], &(1..=100).map(|i| i as f32).collect::<Vec<_>>());
    let (rate, seed, step) = (0.3f32, 42u64, 5u64);
    let y = eval_with(
        &x,
        &[],
        |g, x, _| g.add(Op::Dropout { rate, seed }, &[x], None, "drop").unwrap(),
        step,
    )
    .unwrap();
    let want: Vec<f32> = x
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if dropout_keep(seed, step, i as u64, rate) {
                v / 0.7
            } else {
                0.0
            }
        })
        .collect();
    Tolerance::EXACT.assert_close("dropout", &y.data, &want);
    let dropped = y.data.iter().filter(|&&v| v == 0.0).count();
    assert!((10..=50).contains(&dropped), "{dropped} of 100 dropped at rate 0.3");
}

#[test]
fn concat_slice_and_global_pool() {
    let x = t(&[1, 2, 1, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = eval_with(
        &x,
        &[],
        |g, x, _| {
            let a = g.add(Op::SliceChannels { offset: 1, len: 2 }, &[x], None, "").unwrap();
            g.add(Op::Concat, &[a, x], None, "").unwrap()
        },
        0,
    )
    .unwrap();
    assert_eq!(y.shape, vec![1, 2, 1, 5]);
    let want = [2.0, 3.0, 1.0, 2.0, 3.0, 5.0, 6.0, 4.0, 5.0, 6.0];
    Tolerance::EXACT.assert_close("slice + concat", &y.data, &want);
    let gap = unary(&x, Op::GlobalAvgPool);
    Tolerance::EXACT.assert_close("global avg pool", &gap.data, &[2.5, 3.5, 4.5]);
}

fn dense_graph() -> Graph {
    let mut g = Graph::new("dense_model", 2, Mode::Inference);
    let x = g.add(Op::Input, &[], Some(Shape(vec![2, 3])), "input").unwrap();
    let op = Op::Param {
        name: "dense.kernel".into(),
        role: ParamRole::Kernel,
        init: Init::Zeros,
    };
    let w = g.add(op, &[], Some(Shape(vec![3, 4])), "dense").unwrap();
    let mm = Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    };
    let y = g.add(mm, &[x, w], None, "dense").unwrap();
    g.outputs.push(GraphOutput {
        role: OutputRole::Prediction,
        node: y,
    });
    g
}

#[test]
fn binding_errors_name_the_tensor() {
    let g = dense_graph();
    let x = Tensor::zeros(&[2, 3]);
    let err = run(&g, &x, None, &[], 0).unwrap_err();
    assert!(
        matches!(
            err,
            InterpError::ParamCount {
                expected: 1,
                found: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("dense_model"), "{err}");

    let err = run(&g, &x, None, &[Tensor::zeros(&[4, 3])], 0).unwrap_err();
    assert!(
        err.to_string().contains("'dense.kernel'") && err.to_string().contains("[3, 4]"),
        "{err}"
    );

    let err = run(&g, &Tensor::zeros(&[2, 4]), None, &[Tensor::zeros(&[3, 4])], 0).unwrap_err();
    assert!(
        matches!(err, InterpError::InputShape { .. }) && err.to_string().starts_with("input"),
        "{err}"
    );

    let broken = Tensor {
        shape: vec![3, 4],
        data: vec![0.0; 5],
    };
    let err = run(&g, &x, None, &[broken], 0).unwrap_err();
    assert!(
        err.to_string().contains("'dense.kernel'") && err.to_string().contains("12"),
        "{err}"
    );

    let mut tg = dense_graph();
    tg.mode = Mode::Training;
    let y = tg.output(&OutputRole::Prediction).unwrap();
    let target = tg.add(Op::Target, &[], Some(Shape(vec![2, 4])), "").unwrap();
    let mse = Op::Loss {
        kind: LossKind::MeanSquaredError,
        from_logits: false,
    };
    let loss = tg.add(mse, &[y, target], None, "").unwrap();
    tg.outputs.push(GraphOutput {
        role: OutputRole::Loss,
        node: loss,
    });
    let err = run(&tg, &x, None, &[Tensor::zeros(&[3, 4])], 0).unwrap_err();
    assert!(matches!(err, InterpError::MissingTarget { .. }), "{err}");
    let err = run(&tg, &x, Some(&Tensor::zeros(&[2])), &[Tensor::zeros(&[3, 4])], 0).unwrap_err();
    assert!(err.to_string().starts_with("target"), "{err}");
}
