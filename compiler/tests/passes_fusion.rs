//! Each fusion pass, run alone on the unfused lowering of a seed-like model, with the number
//! of kernels before and after and the templates it leaves.

mod passes_support;

use cnnc_compiler::ir::{Activation, Graph, Mode};
use cnnc_compiler::kernel_ir::{self, EwOp, Kernel, KernelOp, Machine, Program, Stage};
use cnnc_compiler::passes::{self, PipelineOptions};
use passes_support::{bn_baseline, mnist_cnn};

fn opts() -> PipelineOptions {
    PipelineOptions {
        machine: Machine::reference(),
        verify: true,
        ..PipelineOptions::default()
    }
}

/// The unfused program: graph passes (incl. BN folding) and lowering only.
fn unfused(g: Graph, fold_bn: bool) -> Program {
    let o = PipelineOptions { fold_bn, ..opts() };
    let g = passes::run_pipeline(g, &o).expect("graph passes");
    passes::lower(&g, &o).expect("lowering")
}

/// Runs one pass, verifies the result and returns how many rewrites it made.
fn pass(p: &mut Program, name: &str, f: fn(&mut Program) -> usize) -> usize {
    let n = f(p);
    kernel_ir::assert_valid(p, name);
    n
}

fn count(p: &Program, pred: impl Fn(&KernelOp) -> bool) -> usize {
    p.kernels.iter().filter(|k| pred(&k.op)).count()
}

/// The first kernel whose op matches `pred`.
fn find(p: &Program, pred: impl Fn(&KernelOp) -> bool) -> &Kernel {
    p.kernels.iter().find(|k| pred(&k.op)).expect("a matching kernel")
}

fn mnemonics(p: &Program, stage: Stage) -> Vec<&'static str> {
    p.kernels
        .iter()
        .filter(|k| k.stage == stage)
        .map(|k| k.op.mnemonic())
        .collect()
}

#[test]
fn inference_conv_bias_relu_pool_become_one_kernel() {
    let mut p = unfused(mnist_cnn(128, Mode::Inference), true);
    assert_eq!(p.kernels.len(), 14);
    assert_eq!(pass(&mut p, "fuse_bias_act", passes::fuse_bias_act::run), 8);
    assert_eq!(p.kernels.len(), 6);
    assert_eq!(pass(&mut p, "fuse_max_pool", passes::fuse_max_pool::run), 2);
    assert_eq!(p.kernels.len(), 4);
    assert_eq!(mnemonics(&p, Stage::Forward), ["conv2d", "conv2d", "gemm", "gemm"]);
    let KernelOp::Conv2d { epilogue: e, .. } = &p.kernels[0].op else {
        panic!("expected a conv")
    };
    assert!(e.bias && e.act == Activation::Relu && e.max_pool.is_some());
    let KernelOp::Gemm { epilogue: e, .. } = &p.kernels[3].op else {
        panic!("expected a gemm")
    };
    assert!(e.bias && e.act == Activation::Softmax);
}

#[test]
fn inference_bn_is_folded_into_load_time_weights() {
    let before = unfused(bn_baseline(8, Mode::Inference), false);
    assert_eq!(before.kernels.len(), 11);
    assert_eq!(count(&before, |op| matches!(op, KernelOp::BnApply { .. })), 1);
    let p = unfused(bn_baseline(8, Mode::Inference), true);
    // fill(0) and two bn_apply computing k' and b' run once, at weight-load time.
    assert_eq!(mnemonics(&p, Stage::Prepare), ["fill", "bn_apply", "bn_apply"]);
    assert_eq!(p.run_kernels(), 10);
    let p = passes::run_kernel_pipeline(p, &opts()).expect("kernel passes");
    assert_eq!(mnemonics(&p, Stage::Forward), ["conv2d", "gemm", "gemm"]);
    assert_eq!(p.stage_kernels(Stage::Prepare), 3);
    // Without folding, BN + relu is one bn_apply between the conv and the pool.
    let mut q = unfused(bn_baseline(8, Mode::Inference), false);
    q = passes::run_kernel_pipeline(q, &opts()).expect("kernel passes");
    assert_eq!(
        mnemonics(&q, Stage::Forward),
        ["conv2d", "bn_apply", "pool", "gemm", "gemm"]
    );
}

#[test]
fn training_conv_epilogue_yields_bn_statistics() {
    let mut p = unfused(bn_baseline(8, Mode::Training), true);
    let total = p.kernels.len();
    assert_eq!(count(&p, |op| matches!(op, KernelOp::Moments { .. })), 1);
    pass(&mut p, "fuse_bias_act", passes::fuse_bias_act::run);
    let after_bias = p.kernels.len();
    assert_eq!(pass(&mut p, "fuse_bn_stats", passes::fuse_bn_stats::run), 1);
    assert_eq!(p.kernels.len(), after_bias - 1);
    assert_eq!(count(&p, |op| matches!(op, KernelOp::Moments { .. })), 0);
    let conv = find(&p, |op| matches!(op, KernelOp::Conv2d { .. }));
    assert!(conv.op.epilogue().is_some_and(|e| e.bias && e.bn_stats));
    assert_eq!(conv.outputs.len(), 2);
    assert!(total > p.kernels.len());
}

#[test]
fn training_bn_apply_includes_the_activation() {
    let mut p = unfused(bn_baseline(8, Mode::Training), true);
    let n = p.kernels.len();
    assert_eq!(pass(&mut p, "fuse_bn_apply", passes::fuse_bn_apply::run), 1);
    assert_eq!(p.kernels.len(), n - 1);
    let bn = find(&p, |op| matches!(op, KernelOp::BnApply { .. }));
    assert!(matches!(
        bn.op,
        KernelOp::BnApply {
            act: Activation::Relu,
            ..
        }
    ));
}

#[test]
fn training_bn_backward_absorbs_the_activation_mask() {
    let mut p = unfused(bn_baseline(8, Mode::Training), true);
    let n = p.kernels.len();
    let bn_grads = |p: &Program| {
        count(p, |op| {
            matches!(
                op,
                KernelOp::BnGradInput { .. }
                    | KernelOp::BnGradGamma { .. }
                    | KernelOp::Elementwise {
                        op: EwOp::ActGrad(Activation::Relu),
                        ..
                    }
            )
        })
    };
    // act_grad ×2 (dense relu and BN relu), bn_grad_input, bn_grad_gamma.
    assert_eq!(bn_grads(&p), 4);
    assert_eq!(pass(&mut p, "fuse_bn_backward", passes::fuse_bn_backward::run), 1);
    // act_grad + bn_grad_input + bn_grad_gamma + reduce (d beta) → one bn_act_backward.
    assert_eq!(p.kernels.len(), n - 3);
    assert_eq!(bn_grads(&p), 1, "only the dense layer's act_grad remains");
    let k = find(&p, |op| matches!(op, KernelOp::BnActBackward { .. }));
    assert!(matches!(
        k.op,
        KernelOp::BnActBackward {
            act: Activation::Relu,
            grad_gamma: true,
            grad_beta: true,
            ..
        }
    ));
    assert_eq!((k.inputs.len(), k.outputs.len()), (5, 3));
}

/// After `fuse_bn_apply` has put the ReLU into BN's normalise pass (no residual), the fused
/// backward recomputes the mask from BN's input and β instead of reading the activation.
#[test]
fn training_bn_backward_recomputes_a_relu_mask_from_bn_input() {
    let mut p = unfused(bn_baseline(8, Mode::Training), true);
    assert_eq!(pass(&mut p, "fuse_bn_apply", passes::fuse_bn_apply::run), 1);
    let (apply_inputs, y) = {
        let k = find(&p, |op| matches!(op, KernelOp::BnApply { .. }));
        (k.inputs.clone(), k.outputs[0])
    };
    assert_eq!(pass(&mut p, "fuse_bn_backward", passes::fuse_bn_backward::run), 1);
    let k = find(&p, |op| matches!(op, KernelOp::BnActBackward { .. }));
    assert!(matches!(
        k.op,
        KernelOp::BnActBackward {
            act: Activation::Relu,
            mask_from_x: true,
            ..
        }
    ));
    // (x, moments, gamma, beta, dy): the forward's operands, not its output.
    assert_eq!(k.inputs[..4], apply_inputs[..]);
    assert!(!k.inputs.contains(&y));
}

#[test]
fn training_softmax_and_cross_entropy_are_one_kernel() {
    let mut p = unfused(mnist_cnn(16, Mode::Training), true);
    let n = p.kernels.len();
    let loss_kernels = |p: &Program| {
        count(p, |op| {
            matches!(
                op,
                KernelOp::Softmax { .. } | KernelOp::Loss { .. } | KernelOp::LossGrad { .. }
            )
        })
    };
    assert_eq!(loss_kernels(&p), 3);
    assert_eq!(pass(&mut p, "fuse_softmax_xent", passes::fuse_softmax_xent::run), 1);
    assert_eq!(p.kernels.len(), n - 2);
    assert_eq!(loss_kernels(&p), 0);
    let k = find(&p, |op| matches!(op, KernelOp::SoftmaxXent { .. }));
    assert!(matches!(
        k.op,
        KernelOp::SoftmaxXent {
            sparse: true,
            probs: true,
            ..
        }
    ));
}

#[test]
fn training_bias_gradients_come_out_of_the_kernel_gradient_gemms() {
    let mut p = unfused(mnist_cnn(16, Mode::Training), true);
    let n = p.kernels.len();
    let reduces = |p: &Program| count(p, |op| matches!(op, KernelOp::Reduce { .. }));
    assert_eq!(reduces(&p), 4, "one bias gradient per layer");
    assert_eq!(pass(&mut p, "fuse_bias_grad", passes::fuse_bias_grad::run), 4);
    assert_eq!(reduces(&p), 0);
    assert_eq!(p.kernels.len(), n - 4);
}

/// The MNIST CNN's training program has two conv → ReLU → max-pool stages: both max-pool
/// gradients absorb the ReLU gradient that reads them (two kernels fewer), and BN's backward
/// keeps its own fusion of the mask (bn_baseline: nothing left for this pass).
#[test]
fn training_max_pool_gradients_absorb_the_activation_gradient() {
    let mut p = unfused(mnist_cnn(16, Mode::Training), true);
    let n = p.kernels.len();
    let fused = |p: &Program| count(p, |op| matches!(op, KernelOp::PoolGrad { act_grad: Some(_), .. }));
    assert_eq!(pass(&mut p, "fuse_pool_act_grad", passes::fuse_pool_act_grad::run), 2);
    assert_eq!(fused(&p), 2);
    assert_eq!(p.kernels.len(), n - 2);
    let mut p = unfused(bn_baseline(4, Mode::Training), true);
    pass(&mut p, "fuse_bn_backward", passes::fuse_bn_backward::run);
    assert_eq!(pass(&mut p, "fuse_pool_act_grad", passes::fuse_pool_act_grad::run), 0);
}

/// After `fuse_pool_act_grad`, both MNIST CNN stages (conv → ReLU → max-pool) pool in the
/// conv's epilogue with an argmax: the forward pools go (two kernels fewer), the pool gradients
/// read the argmax instead of the unpooled activation, which nothing stores any more. Inference
/// is left to `fuse_max_pool`.
#[test]
fn training_max_pools_fuse_into_the_convs_with_an_argmax() {
    let mut p = unfused(mnist_cnn(16, Mode::Training), true);
    pass(&mut p, "fuse_bias_act", passes::fuse_bias_act::run);
    pass(&mut p, "fuse_pool_act_grad", passes::fuse_pool_act_grad::run);
    let n = p.kernels.len();
    let pools = |p: &Program| count(p, |op| matches!(op, KernelOp::Pool { .. } | KernelOp::PoolGrad { .. }));
    let argmax_grads = |p: &Program| count(p, |op| matches!(op, KernelOp::MaxPoolGradArgmax { .. }));
    let argmax_convs = |p: &Program| {
        count(
            p,
            |op| matches!(op, KernelOp::Conv2d { epilogue, .. } if epilogue.argmax),
        )
    };
    assert_eq!((pools(&p), argmax_grads(&p), argmax_convs(&p)), (4, 0, 0));
    assert_eq!(pass(&mut p, "fuse_pool_argmax", passes::fuse_pool_argmax::run), 2);
    assert_eq!((pools(&p), argmax_grads(&p), argmax_convs(&p)), (0, 2, 2));
    assert_eq!(p.kernels.len(), n - 2);
    let mut p = unfused(mnist_cnn(16, Mode::Inference), false);
    assert_eq!(pass(&mut p, "fuse_pool_argmax", passes::fuse_pool_argmax::run), 0);
}

/// conv → BN → ReLU → max-pool in training: once BN's backward has taken the ReLU's mask, the
/// pool joins BN's normalise pass with an argmax (the forward pool goes; the pool gradient
/// reads the argmax and nothing stores the unpooled activation), as it joins a conv's epilogue.
#[test]
fn training_max_pools_fuse_into_bn_with_an_argmax() {
    let mut p = unfused(bn_baseline(8, Mode::Training), true);
    for (name, f) in [
        ("fuse_bn_stats", passes::fuse_bn_stats::run as fn(&mut Program) -> usize),
        ("fuse_bn_apply", passes::fuse_bn_apply::run),
        ("fuse_bn_backward", passes::fuse_bn_backward::run),
        ("fuse_pool_act_grad", passes::fuse_pool_act_grad::run),
    ] {
        pass(&mut p, name, f);
    }
    let n = p.kernels.len();
    let pools = |p: &Program| count(p, |op| matches!(op, KernelOp::Pool { .. } | KernelOp::PoolGrad { .. }));
    let argmax_grads = |p: &Program| count(p, |op| matches!(op, KernelOp::MaxPoolGradArgmax { .. }));
    let pooled_bn = |p: &Program| count(p, |op| matches!(op, KernelOp::BnApply { pool: Some(_), .. }));
    assert_eq!((pools(&p), argmax_grads(&p), pooled_bn(&p)), (2, 0, 0));
    assert_eq!(pass(&mut p, "fuse_pool_argmax", passes::fuse_pool_argmax::run), 1);
    assert_eq!((pools(&p), argmax_grads(&p), pooled_bn(&p)), (0, 1, 1));
    assert_eq!(p.kernels.len(), n - 1);
    // The pool gradient takes no derivative: BN's backward applies the ReLU's mask.
    assert!(p
        .kernels
        .iter()
        .any(|k| matches!(k.op, KernelOp::MaxPoolGradArgmax { act_grad: None, .. })));
}

/// Of the MNIST CNN's two argmax pool gradients, the first conv's feeds only its kernel
/// gradient (no input gradient for the model's input): that one fuses, the second conv's
/// gradient is also read by its input gradient and stays.
#[test]
fn the_first_convs_kernel_gradient_reads_the_pooled_gradient() {
    let mut p = unfused(mnist_cnn(16, Mode::Training), true);
    pass(&mut p, "fuse_bias_act", passes::fuse_bias_act::run);
    pass(&mut p, "fuse_bias_grad", passes::fuse_bias_grad::run);
    pass(&mut p, "fuse_pool_act_grad", passes::fuse_pool_act_grad::run);
    assert_eq!(pass(&mut p, "fuse_pool_argmax", passes::fuse_pool_argmax::run), 2);
    let n = p.kernels.len();
    let argmax_grads = |p: &Program| count(p, |op| matches!(op, KernelOp::MaxPoolGradArgmax { .. }));
    let pooled_dw = |p: &Program| count(p, |op| matches!(op, KernelOp::ConvGradKernel { pooled: Some(_), .. }));
    assert_eq!((argmax_grads(&p), pooled_dw(&p)), (2, 0));
    assert_eq!(pass(&mut p, "fuse_argmax_dw", passes::fuse_argmax_dw::run), 1);
    assert_eq!((argmax_grads(&p), pooled_dw(&p)), (1, 1));
    assert_eq!(p.kernels.len(), n - 1);
}

#[test]
fn whole_pipeline_kernel_counts() {
    let count_run = |g: Graph, fuse: bool| {
        let o = PipelineOptions { fuse, ..opts() };
        passes::compile(g, &o).expect("compile").run_kernels()
    };
    // (model, unfused kernels per run, fused)
    let cases = [
        ("mnist_cnn inference", mnist_cnn(128, Mode::Inference), 14, 4),
        ("mnist_cnn training", mnist_cnn(128, Mode::Training), 32, 14),
        ("bn_baseline inference", bn_baseline(32, Mode::Inference), 10, 3),
        ("bn_baseline training", bn_baseline(32, Mode::Training), 34, 19),
    ];
    for (what, g, before, after) in cases {
        assert_eq!(
            (count_run(g.clone(), false), count_run(g, true)),
            (before, after),
            "{what}"
        );
    }
}

#[test]
fn inference_winograd_kernel_transforms_move_to_the_prepare_stage() {
    let o = PipelineOptions {
        prepare_winograd: true,
        ..opts()
    };
    let winograd_convs = |p: &Program| {
        count(p, |op| {
            matches!(
                op,
                KernelOp::Conv2d {
                    winograd_u: Some(_),
                    ..
                }
            )
        })
    };
    let transforms = |p: &Program| count(p, |op| matches!(op, KernelOp::WinogradKernel { .. }));

    let p = passes::compile(mnist_cnn(1, Mode::Inference), &o).expect("compile");
    // conv2 (32 -> 64 channels, 3x3) runs as Winograd; conv1 (one input channel) does not.
    assert_eq!((winograd_convs(&p), transforms(&p)), (1, 1));
    assert_eq!(p.run_kernels(), 4, "the run stage keeps its kernel count");
    let t = find(&p, |op| matches!(op, KernelOp::WinogradKernel { .. }));
    assert_eq!(t.stage, Stage::Prepare);
    let conv = find(&p, |op| {
        matches!(
            op,
            KernelOp::Conv2d {
                winograd_u: Some(_),
                ..
            }
        )
    });
    assert_eq!(conv.inputs[1], t.outputs[0], "the conv reads the transformed kernel");

    // A transformed kernel that does not fit in L2 is streamed on every call: it stays in the conv.
    let small_l2 = PipelineOptions {
        machine: Machine {
            l2: 64 * 1024,
            ..Machine::reference()
        },
        prepare_winograd: true,
        ..opts()
    };
    let p = passes::compile(mnist_cnn(1, Mode::Inference), &small_l2).expect("compile");
    assert_eq!((winograd_convs(&p), transforms(&p)), (0, 0));

    // Training changes the weights every step: nothing moves.
    let p = passes::compile(mnist_cnn(8, Mode::Training), &o).expect("compile");
    assert_eq!((winograd_convs(&p), transforms(&p)), (0, 0));
    assert_eq!(p.run_kernels(), 14);
}
