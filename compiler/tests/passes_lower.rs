//! Lowering covers every graph op: a graph using each one (not a sensible model) lowers to one
//! verified kernel per computing node, and the kernel passes keep it valid.

use cnnc_compiler::ir::{
    Activation, Graph, GraphOutput, LossKind, Mode, Moment, NodeId, Op, OutputRole, Pad2d, ParamRole, Shape, Window2d,
};
use cnnc_compiler::kernel_ir::{self, BufKind, KernelOp, Machine, Stage};
use cnnc_compiler::passes::{self, PipelineOptions};
use cnnc_runtime::init::Init;

struct B(Graph);

impl B {
    fn op(&mut self, op: Op, ins: &[NodeId]) -> NodeId {
        self.0.add(op, ins, None, "l").unwrap_or_else(|e| panic!("{e}"))
    }
    fn leaf(&mut self, op: Op, shape: &[usize]) -> NodeId {
        self.0.add(op, &[], Some(Shape(shape.to_vec())), "l").expect("leaf")
    }
    fn param(&mut self, name: &str, role: ParamRole, shape: &[usize]) -> NodeId {
        let init = Init::Zeros;
        self.leaf(
            Op::Param {
                name: name.into(),
                role,
                init,
            },
            shape,
        )
    }
}

fn every_op_graph() -> Graph {
    let mut b = B(Graph::new("every_op", 2, Mode::Training));
    let w2 = Window2d {
        size: [2, 2],
        strides: [2, 2],
        pad: Pad2d::default(),
    };
    let same = Pad2d {
        top: 1,
        bottom: 1,
        left: 1,
        right: 1,
    };
    let x = b.leaf(Op::Input, &[2, 8, 8, 4]);
    let k = b.param("c.kernel", ParamRole::Kernel, &[3, 3, 4, 4]);
    let bias = b.param("c.bias", ParamRole::Bias, &[4]);
    let c = b.op(
        Op::Conv2d {
            strides: [1, 1],
            pad: same,
        },
        &[x, k],
    );
    let cb = b.op(Op::BiasAdd, &[c, bias]);
    let r = b.op(Op::Act(Activation::Relu), &[cb]);
    let mp = b.op(Op::MaxPool2d(w2), &[r]);
    let ap = b.op(Op::AvgPool2d(w2), &[r]);
    let a = b.op(Op::Add, &[mp, ap]);
    let cat = b.op(Op::Concat, &[a, mp]);
    let sl = b.op(Op::SliceChannels { offset: 2, len: 4 }, &[cat]);
    let gamma = b.param("bn.gamma", ParamRole::Gamma, &[4]);
    let beta = b.param("bn.beta", ParamRole::Beta, &[4]);
    let mean = b.param("bn.moving_mean", ParamRole::MovingMean, &[4]);
    let var = b.param("bn.moving_variance", ParamRole::MovingVariance, &[4]);
    let m = b.op(Op::Moments, &[sl]);
    let bn = b.op(Op::BatchNormTrain { epsilon: 1e-3 }, &[sl, m, gamma, beta]);
    let ma = b.op(
        Op::MovingAverage {
            momentum: 0.99,
            moment: Moment::Mean,
        },
        &[mean, m],
    );
    b.op(Op::BatchNormInference { epsilon: 1e-3 }, &[sl, gamma, beta, mean, var]);
    let d = b.op(Op::Dropout { rate: 0.5, seed: 7 }, &[bn]);
    let gp = b.op(Op::GlobalAvgPool, &[d]);
    let w = b.param("d.kernel", ParamRole::Kernel, &[4, 3]);
    let mm = b.op(
        Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        },
        &[gp, w],
    );
    let sm = b.op(Op::Act(Activation::Softmax), &[mm]);
    let t = b.leaf(Op::Target, &[2, 3]);
    let ce = LossKind::CategoricalCrossentropy;
    let loss = b.op(
        Op::Loss {
            kind: ce,
            from_logits: false,
        },
        &[sm, t],
    );
    b.op(
        Op::Loss {
            kind: LossKind::MeanSquaredError,
            from_logits: false,
        },
        &[sm, t],
    );
    let lg = b.op(
        Op::LossGrad {
            kind: ce,
            from_logits: false,
        },
        &[sm, t],
    );
    let sg = b.op(Op::ActGrad(Activation::Softmax), &[sm, lg]);
    let dw = b.op(
        Op::MatMul {
            transpose_a: true,
            transpose_b: false,
        },
        &[gp, sg],
    );
    let dgp = b.op(
        Op::MatMul {
            transpose_a: false,
            transpose_b: true,
        },
        &[sg, w],
    );
    let dd = b.op(Op::GlobalAvgPoolGrad { input_hw: [4, 4] }, &[dgp]);
    let dsl = b.op(Op::BatchNormGradInput { epsilon: 1e-3 }, &[sl, m, gamma, dd]);
    b.op(Op::BatchNormGradGamma { epsilon: 1e-3 }, &[sl, m, dd]);
    b.op(Op::ReduceToChannels, &[dd]);
    let dmp = b.op(Op::MaxPool2dGrad(w2), &[r, dsl]);
    let dap = b.op(
        Op::AvgPool2dGrad {
            window: w2,
            input_hw: [8, 8],
        },
        &[dsl],
    );
    let dr = b.op(Op::Add, &[dmp, dap]);
    let one = b.leaf(Op::Constant(1.0), &[4]);
    let dr = b.op(Op::BiasAdd, &[dr, one]);
    let dc = b.op(Op::ActGrad(Activation::Relu), &[r, dr]);
    b.op(
        Op::Conv2dGradInput {
            strides: [1, 1],
            pad: same,
            input_hw: [8, 8],
        },
        &[dc, k],
    );
    let dk = b.op(
        Op::Conv2dGradKernel {
            strides: [1, 1],
            pad: same,
            kernel_hw: [3, 3],
        },
        &[x, dc],
    );
    let flat =
        b.0.add(Op::Reshape, &[dk], Some(Shape(vec![36, 4])), "l")
            .expect("reshape");
    b.op(Op::ReduceToChannels, &[flat]);
    let mut g = b.0;
    g.outputs = vec![
        GraphOutput {
            role: OutputRole::Prediction,
            node: sm,
        },
        GraphOutput {
            role: OutputRole::Loss,
            node: loss,
        },
        GraphOutput {
            role: OutputRole::Gradient { param: k },
            node: dk,
        },
        GraphOutput {
            role: OutputRole::Gradient { param: w },
            node: dw,
        },
        GraphOutput {
            role: OutputRole::StateUpdate { param: mean },
            node: ma,
        },
    ];
    g
}

#[test]
fn every_op_lowers_to_a_verified_kernel() {
    let g = every_op_graph();
    assert!(
        cnnc_compiler::ir::verify(&g).is_empty(),
        "{:?}",
        cnnc_compiler::ir::verify(&g)
    );
    let computing = g
        .nodes
        .iter()
        .filter(|n| !n.op.is_leaf() && !matches!(n.op, Op::Reshape))
        .count();
    let p = kernel_ir::lower(&g, &Machine::reference()).expect("lower");
    kernel_ir::assert_valid(&p, "lower");
    // One kernel per computing node, plus the fill of the constant.
    assert_eq!(p.kernels.len(), computing + 1);
    assert_eq!(p.stage_kernels(Stage::Prepare), 1);
    assert!(p.kernels.iter().any(|k| matches!(k.op, KernelOp::SoftmaxGrad { .. })));
    // The moving mean is read by BN inference too, so it is not updated in place.
    let update = p
        .outputs
        .iter()
        .find(|o| matches!(o.role, kernel_ir::OutRole::StateUpdate { .. }));
    assert!(matches!(
        p.buffer(update.expect("state update").buf).kind,
        BufKind::Temp
    ));
    let opts = PipelineOptions {
        machine: Machine::reference(),
        verify: true,
        update: Some(kernel_ir::UpdateRule::adam()),
        ..PipelineOptions::default()
    };
    let fused = passes::run_kernel_pipeline(p, &opts).expect("kernel passes");
    assert!(fused.kernels.len() < computing + 1);
    assert_eq!(fused.stage_kernels(Stage::Update), 2);
}

#[test]
fn pipeline_on_the_whole_graph() {
    let opts = PipelineOptions {
        machine: Machine::reference(),
        verify: true,
        ..PipelineOptions::default()
    };
    let p = passes::compile(every_op_graph(), &opts).expect("compile");
    // DCE removed the nodes no output needs (second loss, BN inference, input gradient...).
    assert!(!p.kernels.iter().any(|k| matches!(k.op, KernelOp::ConvGradInput { .. })));
    assert!(kernel_ir::verify(&p).is_empty());
}
