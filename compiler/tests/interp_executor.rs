//! `InterpExecutor` through the runtime's `Executor` contract: metadata, a training step equal
//! to running the training graph directly (full and partial batches), state updates of the BN
//! moving statistics, inference with the inference graph, and loss going down under plain SGD.

use cnnc_compiler::autodiff::training_graph;
use cnnc_compiler::interp::gradcheck::random_tensor;
use cnnc_compiler::interp::{run, InterpExecutor};
use cnnc_compiler::ir::{
    rebatch, Activation, Graph, GraphOutput, LossKind, Mode, Moment, NodeId, Op, OutputRole, Pad2d, ParamRole, Shape,
    Window2d,
};
use cnnc_compiler::tolerance::Tolerance;
use cnnc_runtime::{Executor, Init, TargetLayout, Tensor};

const BATCH: usize = 4;

fn param(g: &mut Graph, name: &str, role: ParamRole, shape: &[usize]) -> NodeId {
    let op = Op::Param {
        name: name.into(),
        role,
        init: Init::Zeros,
    };
    let layer = name.split('.').next().unwrap_or("");
    g.add(op, &[], Some(Shape(shape.to_vec())), layer).unwrap()
}

/// Conv(3x3 SAME, 4) + bias → BN → ReLU → 2x2 max-pool → flatten → dropout (training only) →
/// dense(3) + bias → softmax, on `[batch, 6, 6, 1]`, lowered by hand for `mode`.
fn cnn(mode: Mode, batch: usize) -> Graph {
    let mut g = Graph::new("cnn", batch, mode);
    let x = g
        .add(Op::Input, &[], Some(Shape(vec![batch, 6, 6, 1])), "input")
        .unwrap();
    let k = param(&mut g, "conv.kernel", ParamRole::Kernel, &[3, 3, 1, 4]);
    let b = param(&mut g, "conv.bias", ParamRole::Bias, &[4]);
    let same = Pad2d {
        top: 1,
        bottom: 1,
        left: 1,
        right: 1,
    };
    let y = g
        .add(
            Op::Conv2d {
                strides: [1, 1],
                pad: same,
            },
            &[x, k],
            None,
            "conv",
        )
        .unwrap();
    let y = g.add(Op::BiasAdd, &[y, b], None, "conv").unwrap();
    let gamma = param(&mut g, "bn.gamma", ParamRole::Gamma, &[4]);
    let beta = param(&mut g, "bn.beta", ParamRole::Beta, &[4]);
    let mm = param(&mut g, "bn.moving_mean", ParamRole::MovingMean, &[4]);
    let mv = param(&mut g, "bn.moving_variance", ParamRole::MovingVariance, &[4]);
    let eps = 1e-3;
    let y = match mode {
        Mode::Training => {
            let m = g.add(Op::Moments, &[y], None, "bn").unwrap();
            for (p, moment) in [(mm, Moment::Mean), (mv, Moment::Variance)] {
                let avg = Op::MovingAverage { momentum: 0.9, moment };
                let u = g.add(avg, &[p, m], None, "bn").unwrap();
                g.outputs.push(GraphOutput {
                    role: OutputRole::StateUpdate { param: p },
                    node: u,
                });
            }
            g.add(Op::BatchNormTrain { epsilon: eps }, &[y, m, gamma, beta], None, "bn")
                .unwrap()
        }
        Mode::Inference => {
            let ins = [y, gamma, beta, mm, mv];
            g.add(Op::BatchNormInference { epsilon: eps }, &ins, None, "bn")
                .unwrap()
        }
    };
    let y = g.add(Op::Act(Activation::Relu), &[y], None, "bn").unwrap();
    let w = Window2d {
        size: [2, 2],
        strides: [2, 2],
        pad: Pad2d::default(),
    };
    let y = g.add(Op::MaxPool2d(w), &[y], None, "pool").unwrap();
    let mut y = g
        .add(Op::Reshape, &[y], Some(Shape(vec![batch, 36])), "flatten")
        .unwrap();
    if mode == Mode::Training {
        y = g
            .add(Op::Dropout { rate: 0.2, seed: 9 }, &[y], None, "dropout")
            .unwrap();
    }
    let wd = param(&mut g, "dense.kernel", ParamRole::Kernel, &[36, 3]);
    let bd = param(&mut g, "dense.bias", ParamRole::Bias, &[3]);
    let mm_op = Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    };
    let z = g.add(mm_op, &[y, wd], None, "dense").unwrap();
    let z = g.add(Op::BiasAdd, &[z, bd], None, "dense").unwrap();
    let p = g.add(Op::Act(Activation::Softmax), &[z], None, "dense").unwrap();
    g.outputs.push(GraphOutput {
        role: OutputRole::Prediction,
        node: p,
    });
    g
}

fn executor(loss: LossKind) -> InterpExecutor {
    InterpExecutor::new(cnn(Mode::Training, BATCH), cnn(Mode::Inference, BATCH), loss, false).unwrap()
}

fn initial_params(ex: &InterpExecutor) -> Vec<Tensor> {
    ex.params()
        .iter()
        .enumerate()
        .map(|(i, p)| match p.name.rsplit('.').next() {
            Some("gamma") | Some("moving_variance") => Tensor::full(&p.shape, 1.0),
            Some("beta") | Some("moving_mean") | Some("bias") => Tensor::zeros(&p.shape),
            _ => random_tensor(&p.shape, 100 + i as u64, -0.5, 0.5),
        })
        .collect()
}

#[test]
fn metadata() {
    let ex = executor(LossKind::SparseCategoricalCrossentropy);
    assert_eq!(ex.backend_name(), "interp");
    assert_eq!(ex.batch_size(), BATCH);
    assert_eq!(ex.input_shape(), &[6, 6, 1]);
    assert_eq!(ex.output_size(), 3);
    assert_eq!(ex.target_layout(), TargetLayout::ClassIds);
    let names: Vec<(&str, bool)> = ex.params().iter().map(|p| (p.name.as_str(), p.trainable)).collect();
    assert_eq!(
        names,
        [
            ("conv.kernel", true),
            ("conv.bias", true),
            ("bn.gamma", true),
            ("bn.beta", true),
            ("bn.moving_mean", false),
            ("bn.moving_variance", false),
            ("dense.kernel", true),
            ("dense.bias", true),
        ]
    );
    assert_eq!(
        executor(LossKind::CategoricalCrossentropy).target_layout(),
        TargetLayout::Dense
    );
}

/// A train step on `n` samples equals running the re-batched training graph directly.
fn step_matches_direct_run(n: usize) {
    let mut ex = executor(LossKind::SparseCategoricalCrossentropy);
    let mut params = initial_params(&ex);
    let before = params.clone();
    let x = random_tensor(&[n, 6, 6, 1], 7, 0.0, 1.0);
    let y: Vec<f32> = (0..n).map(|i| (i % 3) as f32).collect();
    let mut grads: Vec<Tensor> = ex
        .params()
        .iter()
        .filter(|p| p.trainable)
        .map(|_| Tensor::default())
        .collect();
    let mut preds = vec![0f32; n * 3];
    let step = 3;
    let res = ex.train_step(&mut params, &mut grads, &x.data, &y, n, step, &mut preds);

    let tg = training_graph(
        &cnn(Mode::Training, BATCH),
        LossKind::SparseCategoricalCrossentropy,
        false,
    )
    .unwrap();
    let tg = rebatch(&tg, n).unwrap();
    let target = Tensor::from_vec(&[n], y.clone()).unwrap();
    let v = run(&tg, &x, Some(&target), &before, step).unwrap();
    Tolerance::EXACT.assert_close("loss", &[res.loss], &[v.loss(&tg).unwrap()]);
    let pred = v.output(&tg, &OutputRole::Prediction).unwrap();
    Tolerance::EXACT.assert_close("predictions", &preds, &pred.data);
    let trainable: Vec<NodeId> = tg
        .params()
        .into_iter()
        .filter(|&p| tg.param_info(p).unwrap().1.trainable())
        .collect();
    assert_eq!(trainable.len(), grads.len());
    for (p, gr) in trainable.iter().zip(&grads) {
        let want = v.gradient(&tg, *p).unwrap();
        assert_eq!(gr.shape, want.shape);
        Tolerance::EXACT.assert_close(tg.param_info(*p).unwrap().0, &gr.data, &want.data);
    }
    // Moving statistics were replaced by their updates; trainable parameters are untouched.
    for (i, p) in tg.params().into_iter().enumerate() {
        let name = tg.param_info(p).unwrap().0;
        match tg.output(&OutputRole::StateUpdate { param: p }) {
            Some(u) => {
                Tolerance::EXACT.assert_close(name, &params[i].data, &v.get(u).data);
                assert_ne!(params[i], before[i], "{name} should move");
            }
            None => assert_eq!(params[i], before[i], "{name} changed"),
        }
    }
}

#[test]
fn train_step_full_batch() {
    step_matches_direct_run(BATCH);
}

#[test]
fn train_step_partial_batch() {
    step_matches_direct_run(1);
    step_matches_direct_run(3);
}

#[test]
fn predict_runs_the_inference_graph() {
    let mut ex = executor(LossKind::SparseCategoricalCrossentropy);
    let mut params = initial_params(&ex);
    // Non-trivial moving statistics.
    params[4] = Tensor::from_vec(&[4], vec![0.1, -0.2, 0.3, 0.0]).unwrap();
    params[5] = Tensor::from_vec(&[4], vec![0.5, 2.0, 1.5, 1.0]).unwrap();
    let n = 2;
    let x = random_tensor(&[n, 6, 6, 1], 8, 0.0, 1.0);
    let mut preds = vec![0f32; n * 3];
    ex.predict(&params, &x.data, n, &mut preds);
    let g = rebatch(&cnn(Mode::Inference, BATCH), n).unwrap();
    let v = run(&g, &x, None, &params, 0).unwrap();
    Tolerance::EXACT.assert_close(
        "inference",
        &preds,
        &v.output(&g, &OutputRole::Prediction).unwrap().data,
    );
    for row in preds.chunks(3) {
        Tolerance::EXACT.assert_close("softmax row sums", &[row.iter().sum::<f32>()], &[1.0]);
    }
}

/// Class = which half of the image is brighter (top, bottom) or neither (uniform); SGD on the
/// interpreter's gradients must cut the loss well below its starting value.
#[test]
fn sgd_training_reduces_the_loss() {
    let mut ex = executor(LossKind::SparseCategoricalCrossentropy);
    let mut params = initial_params(&ex);
    let mut grads: Vec<Tensor> = ex
        .params()
        .iter()
        .filter(|p| p.trainable)
        .map(|_| Tensor::default())
        .collect();
    let trainable: Vec<usize> = (0..params.len()).filter(|&i| ex.params()[i].trainable).collect();
    let noise = random_tensor(&[400 * 36], 5, -0.1, 0.1);
    let sample = |k: usize| -> (Vec<f32>, f32) {
        let class = k % 3;
        let img = (0..36)
            .map(|p| {
                let top = p < 18;
                let v = match class {
                    0 if top => 0.9,
                    1 if !top => 0.9,
                    2 => 0.5,
                    _ => 0.1,
                };
                v + noise.data[(k % 400) * 36 + p]
            })
            .collect();
        (img, class as f32)
    };
    let mut preds = vec![0f32; BATCH * 3];
    let mut losses = Vec::new();
    for step in 0..60u64 {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for j in 0..BATCH {
            let (img, c) = sample(step as usize * BATCH + j);
            x.extend(img);
            y.push(c);
        }
        let r = ex.train_step(&mut params, &mut grads, &x, &y, BATCH, step, &mut preds);
        losses.push(r.loss);
        for (&pi, gr) in trainable.iter().zip(&grads) {
            for (w, d) in params[pi].data.iter_mut().zip(&gr.data) {
                *w -= 0.1 * d;
            }
        }
    }
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    assert!(last < 0.5 * first, "loss {first} -> {last}: {losses:?}");
}

#[test]
fn inference_graph_with_unknown_parameter_is_rejected() {
    let mut inf = cnn(Mode::Inference, BATCH);
    for n in &mut inf.nodes {
        if let Op::Param { name, .. } = &mut n.op {
            if name == "dense.bias" {
                *name = "other.bias".into();
            }
        }
    }
    let err = InterpExecutor::new(
        cnn(Mode::Training, BATCH),
        inf,
        LossKind::SparseCategoricalCrossentropy,
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("'other.bias'"), "{err}");
}

/// Seed 000's MNIST CNN (conv 32 → pool → conv 64 → pool → dense 128 → dense 10) at batch 32:
/// a few SGD steps on one fixed batch must lower its loss. Prints the time per step, which
/// bounds CI-scale training runs on the interpreter.
#[test]
fn seed000_mnist_cnn_fits_one_batch() {
    let (fwd, inf) = (mnist_cnn(Mode::Training), mnist_cnn(Mode::Inference));
    let mut ex = InterpExecutor::new(fwd, inf, LossKind::SparseCategoricalCrossentropy, false).unwrap();
    let mut params: Vec<Tensor> = ex
        .params()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let fan_in: usize = p.shape[..p.shape.len() - 1].iter().product();
            let s = if p.shape.len() > 1 {
                (3.0 / fan_in as f32).sqrt()
            } else {
                0.0
            };
            random_tensor(&p.shape, 200 + i as u64, -s, s)
        })
        .collect();
    let mut grads: Vec<Tensor> = ex.params().iter().map(|_| Tensor::default()).collect();
    let n = 32;
    let x = random_tensor(&[n, 28, 28, 1], 3, 0.0, 1.0);
    let y: Vec<f32> = (0..n).map(|i| (i % 10) as f32).collect();
    let mut preds = vec![0f32; n * 10];
    let steps = 4;
    let start = std::time::Instant::now();
    let mut losses = Vec::new();
    for step in 0..steps {
        let r = ex.train_step(&mut params, &mut grads, &x.data, &y, n, step, &mut preds);
        losses.push(r.loss);
        for (p, gr) in params.iter_mut().zip(&grads) {
            for (w, d) in p.data.iter_mut().zip(&gr.data) {
                *w -= 0.05 * d;
            }
        }
    }
    let per_step = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
    eprintln!("interp: seed 000 MNIST CNN, batch 32: {per_step:.1} ms per training step; losses {losses:?}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[steps as usize - 1] < losses[0], "{losses:?}");
}

/// Seed 000 §9.2.1's model, lowered by hand at batch 32.
fn mnist_cnn(mode: Mode) -> Graph {
    let n = 32;
    let mut g = Graph::new("mnist_cnn", n, mode);
    let x = g.add(Op::Input, &[], Some(Shape(vec![n, 28, 28, 1])), "input").unwrap();
    let same = Pad2d {
        top: 1,
        bottom: 1,
        left: 1,
        right: 1,
    };
    let pool = Window2d {
        size: [2, 2],
        strides: [2, 2],
        pad: Pad2d::default(),
    };
    let mut y = x;
    for (layer, c, f) in [("conv2d", 1, 32), ("conv2d_1", 32, 64)] {
        let k = param(&mut g, &format!("{layer}.kernel"), ParamRole::Kernel, &[3, 3, c, f]);
        let b = param(&mut g, &format!("{layer}.bias"), ParamRole::Bias, &[f]);
        y = g
            .add(
                Op::Conv2d {
                    strides: [1, 1],
                    pad: same,
                },
                &[y, k],
                None,
                layer,
            )
            .unwrap();
        y = g.add(Op::BiasAdd, &[y, b], None, layer).unwrap();
        y = g.add(Op::Act(Activation::Relu), &[y], None, layer).unwrap();
        y = g.add(Op::MaxPool2d(pool), &[y], None, "pool").unwrap();
    }
    y = g.add(Op::Reshape, &[y], Some(Shape(vec![n, 3136])), "flatten").unwrap();
    for (layer, i, o, act) in [
        ("dense", 3136, 128, Activation::Relu),
        ("dense_1", 128, 10, Activation::Softmax),
    ] {
        let w = param(&mut g, &format!("{layer}.kernel"), ParamRole::Kernel, &[i, o]);
        let b = param(&mut g, &format!("{layer}.bias"), ParamRole::Bias, &[o]);
        let mm = Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        };
        y = g.add(mm, &[y, w], None, layer).unwrap();
        y = g.add(Op::BiasAdd, &[y, b], None, layer).unwrap();
        y = g.add(Op::Act(act), &[y], None, layer).unwrap();
    }
    g.outputs.push(GraphOutput {
        role: OutputRole::Prediction,
        node: y,
    });
    g
}
