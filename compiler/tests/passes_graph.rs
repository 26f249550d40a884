//! Graph passes: BN folding is checked numerically (a small evaluator of the ops involved runs
//! the graph before and after folding on the same random weights), and dead code elimination
//! keeps exactly what outputs and bindings need.

mod passes_support;

use cnnc_compiler::ir::{self, Activation, Graph, LossKind, Mode, Op, Window2d};
use cnnc_compiler::kernel_ir::{KernelOp, Machine, Stage};
use cnnc_compiler::passes::{self, dce, fold_bn, PipelineOptions};
use cnnc_compiler::tolerance::Tolerance;
use passes_support::{bn_baseline, Model};

/// Deterministic values in [lo, hi) from a seed string.
fn values(seed: &str, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01B3)
    });
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn conv(
    x: &[f32],
    xs: &[usize],
    k: &[f32],
    ks: &[usize],
    ys: &[usize],
    strides: [usize; 2],
    pad: ir::Pad2d,
) -> Vec<f32> {
    let mut y = vec![0.0; ys.iter().product()];
    for n in 0..ys[0] {
        for oh in 0..ys[1] {
            for ow in 0..ys[2] {
                for f in 0..ys[3] {
                    let mut acc = 0.0;
                    for kh in 0..ks[0] {
                        for kw in 0..ks[1] {
                            let ih = (oh * strides[0] + kh) as isize - pad.top as isize;
                            let iw = (ow * strides[1] + kw) as isize - pad.left as isize;
                            if ih < 0 || iw < 0 || ih as usize >= xs[1] || iw as usize >= xs[2] {
                                continue;
                            }
                            for c in 0..xs[3] {
                                let xi = ((n * xs[1] + ih as usize) * xs[2] + iw as usize) * xs[3] + c;
                                acc += x[xi] * k[((kh * ks[1] + kw) * ks[2] + c) * ks[3] + f];
                            }
                        }
                    }
                    y[((n * ys[1] + oh) * ys[2] + ow) * ys[3] + f] = acc;
                }
            }
        }
    }
    y
}

fn max_pool(x: &[f32], xs: &[usize], ys: &[usize], w: &Window2d) -> Vec<f32> {
    let mut y = vec![f32::NEG_INFINITY; ys.iter().product()];
    for n in 0..ys[0] {
        for oh in 0..ys[1] {
            for ow in 0..ys[2] {
                for c in 0..ys[3] {
                    let out = &mut y[((n * ys[1] + oh) * ys[2] + ow) * ys[3] + c];
                    for kh in 0..w.size[0] {
                        for kw in 0..w.size[1] {
                            let ih = (oh * w.strides[0] + kh) as isize - w.pad.top as isize;
                            let iw = (ow * w.strides[1] + kw) as isize - w.pad.left as isize;
                            if ih >= 0 && iw >= 0 && (ih as usize) < xs[1] && (iw as usize) < xs[2] {
                                let v = x[((n * xs[1] + ih as usize) * xs[2] + iw as usize) * xs[3] + c];
                                *out = out.max(v);
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

/// Evaluates an inference graph; parameters get values derived from their names.
fn eval(g: &Graph) -> Vec<f32> {
    let mut v: Vec<Vec<f32>> = Vec::new();
    for node in &g.nodes {
        let s = node.shape.dims();
        let n = node.shape.numel();
        let ins: Vec<&[f32]> = node.inputs.iter().map(|i| v[i.index()].as_slice()).collect();
        let shape_of = |j: usize| g.shape(node.inputs[j]).dims();
        let out = match &node.op {
            Op::Input => values("input", n, -1.0, 1.0),
            Op::Param { name, .. } if name.ends_with("variance") => values(name, n, 0.5, 1.5),
            Op::Param { name, .. } => values(name, n, -0.5, 0.5),
            Op::Constant(c) => vec![*c; n],
            Op::Conv2d { strides, pad } => conv(ins[0], shape_of(0), ins[1], shape_of(1), s, *strides, *pad),
            Op::MatMul { .. } => {
                let (m, k, cols) = (s[0], shape_of(0)[1], s[1]);
                let mut y = vec![0.0; n];
                for i in 0..m {
                    for j in 0..cols {
                        y[i * cols + j] = (0..k).map(|t| ins[0][i * k + t] * ins[1][t * cols + j]).sum();
                    }
                }
                y
            }
            Op::BiasAdd => ins[0]
                .iter()
                .enumerate()
                .map(|(i, x)| x + ins[1][i % s[s.len() - 1]])
                .collect(),
            Op::BatchNormInference { epsilon } => {
                let c = s[s.len() - 1];
                let [gamma, beta, mean, var] = [ins[1], ins[2], ins[3], ins[4]];
                ins[0]
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        let ch = i % c;
                        (x - mean[ch]) * gamma[ch] / (var[ch] + epsilon).sqrt() + beta[ch]
                    })
                    .collect()
            }
            Op::Act(Activation::Relu) => ins[0].iter().map(|x| x.max(0.0)).collect(),
            Op::Act(Activation::Softmax) => {
                let c = s[s.len() - 1];
                ins[0]
                    .chunks(c)
                    .flat_map(|row| {
                        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                        let e: Vec<f32> = row.iter().map(|x| (x - m).exp()).collect();
                        let sum: f32 = e.iter().sum();
                        e.into_iter().map(move |x| x / sum)
                    })
                    .collect()
            }
            Op::MaxPool2d(w) => max_pool(ins[0], shape_of(0), s, w),
            Op::Reshape => ins[0].to_vec(),
            op => panic!("the test evaluator does not implement {}", op.mnemonic()),
        };
        v.push(out);
    }
    let pred = g.output(&ir::OutputRole::Prediction).expect("prediction");
    v.swap_remove(pred.index())
}

/// conv → BN → relu → pool → flatten → dense → BN → relu → dense(softmax), with and without
/// conv bias, SAME and VALID, on small maps.
fn bn_models() -> Vec<Graph> {
    let (r, lin) = (Activation::Relu, Activation::Linear);
    let mut v = Vec::new();
    for (bias, same) in [(true, true), (false, false)] {
        v.push(
            Model::new("fold", 2, Mode::Inference, &[7, 6, 3])
                .conv2d(4, 3, 1, same, lin, bias)
                .batch_norm()
                .act(r)
                .max_pool(2, 2, true)
                .flatten()
                .dense(5, lin)
                .batch_norm()
                .act(r)
                .dense(3, Activation::Softmax)
                .finish(LossKind::SparseCategoricalCrossentropy),
        );
    }
    v
}

#[test]
fn folding_bn_preserves_predictions() {
    for g in bn_models() {
        let expected = eval(&g);
        let folded = dce::run(fold_bn::run(g.clone()).expect("fold"));
        assert!(ir::verify(&folded).is_empty(), "{:?}", ir::verify(&folded));
        // Every BN left normalises a parameter (load-time folding), never an activation.
        let bn_inputs = |g: &Graph| -> Vec<bool> {
            g.nodes
                .iter()
                .filter(|n| matches!(n.op, Op::BatchNormInference { .. }))
                .map(|n| matches!(g.node(n.inputs[0]).op, Op::Param { .. } | Op::Constant(_)))
                .collect()
        };
        assert_eq!(bn_inputs(&g), [false, false]);
        assert_eq!(bn_inputs(&folded), [true; 4]);
        assert_eq!(
            folded.params().len(),
            g.params().len(),
            "parameters are the binding order"
        );
        Tolerance::KERNEL.assert_close("folded prediction", &eval(&folded), &expected);
    }
}

#[test]
fn folded_weights_are_computed_at_load_time() {
    let opts = PipelineOptions {
        machine: Machine::reference(),
        verify: true,
        ..PipelineOptions::default()
    };
    for g in bn_models() {
        let p = passes::compile(g, &opts).expect("compile");
        let prepare: Vec<_> = p.kernels.iter().filter(|k| k.stage == Stage::Prepare).collect();
        // Per folded BN: k' and b' (and one fill of zeros).
        assert_eq!(
            prepare
                .iter()
                .filter(|k| matches!(k.op, KernelOp::BnApply { .. }))
                .count(),
            4
        );
        assert!(!p
            .kernels
            .iter()
            .any(|k| k.stage != Stage::Prepare && matches!(k.op, KernelOp::BnApply { .. })));
    }
}

#[test]
fn training_graphs_are_not_folded() {
    let g = bn_baseline(4, Mode::Training);
    assert_eq!(fold_bn::run(g.clone()).expect("fold"), g);
}

#[test]
fn bn_after_a_pool_is_left_alone() {
    let g = Model::new("pool_bn", 2, Mode::Inference, &[4, 4, 2])
        .max_pool(2, 2, false)
        .batch_norm()
        .flatten()
        .dense(3, Activation::Softmax)
        .finish(LossKind::SparseCategoricalCrossentropy);
    let folded = dce::run(fold_bn::run(g.clone()).expect("fold"));
    assert_eq!(folded, g);
}

#[test]
fn dce_keeps_outputs_and_bindings() {
    let g = bn_baseline(2, Mode::Inference);
    assert_eq!(dce::run(g.clone()), g, "nothing is dead in a fresh graph");
    let folded = fold_bn::run(g.clone()).expect("fold");
    let n = folded.nodes.len();
    let clean = dce::run(folded);
    // The unfolded conv and its bias add are gone; every parameter stays.
    assert_eq!(clean.nodes.len(), n - 2);
    assert_eq!(clean.params().len(), g.params().len());
    let conv_layer = clean.layers.iter().find(|l| l.name == "conv2d").expect("layer");
    assert!(matches!(clean.node(conv_layer.output).op, Op::BiasAdd));
}
