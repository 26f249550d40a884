//! Conv → batch norm (training mode: batch statistics) → ReLU, forward and backward, three ways:
//!
//! * **fused**, the kernel calls the kernels backend makes after `fuse_bn_stats`,
//!   `fuse_bn_apply` and `fuse_bn_backward` (see `compiler/src/native/dispatch*.rs`): the conv
//!   with an epilogue that also yields BN's moments, then one normalise + scale + shift + ReLU
//!   pass; backward, one BN-backward pass with the ReLU mask folded in, then the two conv
//!   gradients;
//! * **unfused**, the calls the same program makes without those passes (what a framework
//!   without fusion runs): conv, a moments pass, a normalise pass, a ReLU pass; backward, a ReLU
//!   gradient pass, BN's input gradient, its γ gradient and its β reduction (each a pass over
//!   the activation), then the conv gradients;
//! * the reference **interpreter** on the same IR ops (`Conv2d`, `Moments`, `BatchNormTrain`,
//!   `Act`, and their gradients), built as a tiny graph and run with `interp::run`.
//!
//! FLOPs counted are the convolution's only (forward `2·M·K·F`, backward twice that): BN and
//! ReLU add O(output) work either way, so GFLOP/s ratios are time ratios.

use cnnc_compiler::interp;
use cnnc_compiler::ir::{Activation, Graph, GraphOutput, Mode, NodeId, Op, OutputRole, Pad2d, ParamRole, Shape};
use cnnc_runtime::init::Init;
use cnnc_runtime::kernels::elementwise as ew;
use cnnc_runtime::kernels::norm::{self, BnBackward};
use cnnc_runtime::kernels::{conv2d_forward, conv2d_grad_input, conv2d_grad_kernel, Act, ConvGeom, Ctx, Epilogue};
use cnnc_runtime::Tensor;

use crate::{data, ConvShape};

/// Keras' default BN epsilon.
pub const EPS: f32 = 1e-3;

/// Operands and every intermediate buffer of one conv → BN → ReLU layer.
pub struct ConvBn {
    pub g: ConvGeom,
    /// Whether the backward computes the conv's input gradient (not for a model's first layer).
    pub input_grad: bool,
    x: Vec<f32>,       // [N, H, W, C]
    w: Vec<f32>,       // [KH, KW, C, F]
    gamma: Vec<f32>,   // [F]
    beta: Vec<f32>,    // [F]
    dy: Vec<f32>,      // [N, OH, OW, F] gradient of the ReLU's output
    z: Vec<f32>,       // [N, OH, OW, F] conv output = BN input
    t: Vec<f32>,       // [N, OH, OW, F] BN output before the ReLU (unfused only)
    y: Vec<f32>,       // [N, OH, OW, F] ReLU output
    moments: Vec<f32>, // [2, F] batch mean, then biased variance
    scale: Vec<f32>,   // [F] γ / √(σ² + ε)
    g_act: Vec<f32>,   // [N, OH, OW, F] ReLU gradient = BN output gradient (unfused only)
    dz: Vec<f32>,      // [N, OH, OW, F] gradient of the conv output
    dx: Vec<f32>,      // [N, H, W, C]
    dw: Vec<f32>,      // [KH, KW, C, F]
    dgamma: Vec<f32>,  // [F]
    dbeta: Vec<f32>,   // [F]
}

impl ConvBn {
    /// Deterministic operands for `g`; runs the fused forward once so that the backward passes
    /// have the activations they read.
    pub fn new(ctx: &Ctx, g: ConvGeom) -> ConvBn {
        let (out, f) = (g.output_len(), g.f);
        let mut s = ConvBn {
            g,
            input_grad: true,
            x: data(g.input_len(), 1),
            w: data(g.kernel_len(), 2),
            gamma: data(f, 3).iter().map(|v| 1.0 + 0.5 * v).collect(),
            beta: data(f, 4),
            dy: data(out, 5),
            z: vec![0.0; out],
            t: vec![0.0; out],
            y: vec![0.0; out],
            moments: vec![0.0; 2 * f],
            scale: vec![0.0; f],
            g_act: vec![0.0; out],
            dz: vec![0.0; out],
            dx: vec![0.0; g.input_len()],
            dw: vec![0.0; g.kernel_len()],
            dgamma: vec![0.0; f],
            dbeta: vec![0.0; f],
        };
        s.forward_fused(ctx);
        s
    }

    /// [`ConvBn::new`] for a layer of the shape table: a first layer's backward has no input
    /// gradient, as in the compiled training program.
    pub fn for_shape(ctx: &Ctx, s: &ConvShape) -> ConvBn {
        ConvBn {
            input_grad: !s.input,
            ..ConvBn::new(ctx, s.geom())
        }
    }

    /// Forward FLOPs (the conv's).
    pub fn forward_flops(&self) -> u64 {
        self.g.flops() as u64
    }

    /// Backward FLOPs (the conv's kernel gradient, and its input gradient unless a first layer).
    pub fn backward_flops(&self) -> u64 {
        (1 + self.input_grad as u64) * self.g.flops() as u64
    }

    /// Output rows (pixels) BN reduces over.
    fn rows(&self) -> usize {
        self.g.m()
    }

    /// `Conv2d` with `bn_stats` in its epilogue, then `BnApply` with the ReLU.
    pub fn forward_fused(&mut self, ctx: &Ctx) {
        run(self, ctx, FORWARD_FUSED)
    }

    /// `Conv2d`, `Moments`, `BnApply` (linear), `Act(relu)`: four kernels, three extra passes.
    pub fn forward_unfused(&mut self, ctx: &Ctx) {
        run(self, ctx, FORWARD_UNFUSED)
    }

    /// `BnActBackward` (ReLU mask, dz, dγ, dβ in one kernel), then the conv gradients.
    pub fn backward_fused(&mut self, ctx: &Ctx) {
        run(self, ctx, BACKWARD_FUSED)
    }

    /// `ActGrad(relu)`, `BnGradInput`, `BnGradGamma`, `Reduce` (dβ), then the conv gradients.
    pub fn backward_unfused(&mut self, ctx: &Ctx) {
        run(self, ctx, BACKWARD_UNFUSED)
    }

    fn conv_moments(&mut self, ctx: &Ctx) {
        let epi = Epilogue::none().with_moments(&mut self.moments);
        conv2d_forward(ctx, &self.g, &self.x, &self.w, epi, &mut self.z);
    }

    fn conv(&mut self, ctx: &Ctx) {
        conv2d_forward(ctx, &self.g, &self.x, &self.w, Epilogue::none(), &mut self.z);
    }

    fn moments(&mut self, ctx: &Ctx) {
        norm::moments(ctx, self.rows(), self.g.f, &self.z, &mut self.moments);
    }

    /// `bn_scale` then `bn_apply` with `act`, into `y` (ReLU) or `t` (linear, ReLU to follow).
    fn bn_apply(&mut self, ctx: &Ctx, act: Act) {
        let f = self.g.f;
        let (mean, var) = self.moments.split_at(f);
        norm::bn_scale(var, Some(&self.gamma), EPS, &mut self.scale);
        let out = if act == Act::Linear { &mut self.t } else { &mut self.y };
        norm::bn_apply(ctx, f, &self.z, mean, &self.scale, &self.beta, None, act, out);
    }

    fn relu(&mut self, ctx: &Ctx) {
        ew::act(ctx, Act::Relu, &self.t, &mut self.y);
    }

    /// The BN backward operands; `act` = ReLU reads `y` and `dy`, linear reads `dy` as BN's
    /// output gradient.
    fn bn_backward_operands<'a>(&'a self, act: Act, dy: &'a [f32], gamma: Option<&'a [f32]>) -> BnBackward<'a> {
        BnBackward {
            c: self.g.f,
            x: &self.z,
            moments: &self.moments,
            gamma,
            eps: EPS,
            act,
            y: (act != Act::Linear).then_some(&self.y[..]),
            // The fused ReLU mask is recomputed from `z`, as the kernels backend does.
            beta: (act == Act::Relu).then_some(&self.beta[..]),
            dy,
        }
    }

    fn bn_act_backward(&mut self, ctx: &Ctx) {
        let mut dz = std::mem::take(&mut self.dz);
        let (mut dgamma, mut dbeta) = (std::mem::take(&mut self.dgamma), std::mem::take(&mut self.dbeta));
        let b = self.bn_backward_operands(Act::Relu, &self.dy, Some(&self.gamma));
        norm::bn_backward(ctx, &b, Some(&mut dz), Some(&mut dgamma), Some(&mut dbeta));
        (self.dz, self.dgamma, self.dbeta) = (dz, dgamma, dbeta);
    }

    fn relu_grad(&mut self, ctx: &Ctx) {
        ew::act_grad(ctx, Act::Relu, &self.y, &self.dy, &mut self.g_act);
    }

    fn bn_grad_input(&mut self, ctx: &Ctx) {
        let mut dz = std::mem::take(&mut self.dz);
        let b = self.bn_backward_operands(Act::Linear, &self.g_act, Some(&self.gamma));
        norm::bn_backward(ctx, &b, Some(&mut dz), None, None);
        self.dz = dz;
    }

    fn bn_grad_gamma(&mut self, ctx: &Ctx) {
        let mut dgamma = std::mem::take(&mut self.dgamma);
        let b = self.bn_backward_operands(Act::Linear, &self.g_act, None);
        norm::bn_backward(ctx, &b, None, Some(&mut dgamma), None);
        self.dgamma = dgamma;
    }

    fn reduce_beta(&mut self, ctx: &Ctx) {
        ew::reduce_rows(ctx, self.rows(), self.g.f, &self.g_act, &mut self.dbeta);
    }

    /// The conv's input gradient from `dz` (nothing for a first layer).
    fn conv_dx(&mut self, ctx: &Ctx) {
        if !self.input_grad {
            return;
        }
        conv2d_grad_input(ctx, &self.g, &self.dz, &self.w, &mut self.dx);
    }

    /// The conv's kernel gradient from `dz` (no bias: BN follows the conv).
    fn conv_dw(&mut self, ctx: &Ctx) {
        conv2d_grad_kernel(ctx, &self.g, &self.x, &self.dz, &mut self.dw, None);
    }

    /// The conv's input and kernel gradients from `dz`.
    fn conv_backward(&mut self, ctx: &Ctx) {
        self.conv_dx(ctx);
        self.conv_dw(ctx);
    }

    /// The conv alone (no epilogue): the floor under both forward sequences.
    pub fn conv_only_forward(&mut self, ctx: &Ctx) {
        self.conv(ctx);
    }

    /// The conv gradients alone: the floor under both backward sequences.
    pub fn conv_only_backward(&mut self, ctx: &Ctx) {
        self.conv_backward(ctx);
    }

    /// `(y, dx, dw, dγ, dβ)` after the last forward and backward.
    pub fn results(&self) -> [&[f32]; 5] {
        [&self.y, &self.dx, &self.dw, &self.dgamma, &self.dbeta]
    }
}

/// One kernel call of a sequence (and the small per-channel arithmetic around it).
pub type Step = fn(&mut ConvBn, &Ctx);

/// A sequence of named kernel calls.
pub type Steps = &'static [(&'static str, Step)];

fn run(l: &mut ConvBn, ctx: &Ctx, steps: Steps) {
    for (_, step) in steps {
        step(l, ctx);
    }
}

/// What the kernels backend runs for conv → BN → ReLU in training.
pub const FORWARD_FUSED: Steps = &[
    ("conv+moments", ConvBn::conv_moments),
    ("bn_apply+relu", |l, ctx| l.bn_apply(ctx, Act::Relu)),
];

/// The same without the BN fusion passes.
pub const FORWARD_UNFUSED: Steps = &[
    ("conv", ConvBn::conv),
    ("moments", ConvBn::moments),
    ("bn_apply", |l, ctx| l.bn_apply(ctx, Act::Linear)),
    ("relu", ConvBn::relu),
];

/// What the kernels backend runs for the gradient of conv → BN → ReLU.
pub const BACKWARD_FUSED: Steps = &[
    ("bn_act_backward", ConvBn::bn_act_backward),
    ("conv dx", ConvBn::conv_dx),
    ("conv dw", ConvBn::conv_dw),
];

/// The same without the BN fusion passes.
pub const BACKWARD_UNFUSED: Steps = &[
    ("relu grad", ConvBn::relu_grad),
    ("bn grad input", ConvBn::bn_grad_input),
    ("bn grad gamma", ConvBn::bn_grad_gamma),
    ("reduce (dbeta)", ConvBn::reduce_beta),
    ("conv dx", ConvBn::conv_dx),
    ("conv dw", ConvBn::conv_dw),
];

/// The same layer as two small IR graphs for the reference interpreter: the forward
/// (`Conv2d → Moments → BatchNormTrain → Act(relu)`) and the backward (`ActGrad(relu) →
/// BatchNormGradInput, BatchNormGradGamma, ReduceToChannels → Conv2dGradInput,
/// Conv2dGradKernel`), whose forward activations are parameters taken from a native run.
pub struct InterpConvBn {
    fwd: Graph,
    fwd_input: Tensor,       // x [N, H, W, C]
    fwd_params: Vec<Tensor>, // kernel, γ, β
    bwd: Graph,
    bwd_input: Tensor,       // dy [N, OH, OW, F]
    bwd_params: Vec<Tensor>, // x, kernel, γ, z, moments, y
}

fn param(g: &mut Graph, name: &str, shape: &[usize]) -> NodeId {
    let op = Op::Param {
        name: name.into(),
        role: ParamRole::Kernel,
        init: Init::Zeros,
    };
    g.add(op, &[], Some(Shape(shape.to_vec())), "").expect("parameter node")
}

fn node(g: &mut Graph, op: Op, inputs: &[NodeId]) -> NodeId {
    g.add(op, inputs, None, "conv_bn")
        .expect("shapes of the conv + BN graph")
}

fn tensor(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor {
        shape: shape.to_vec(),
        data: data.to_vec(),
    }
}

fn predict(g: &mut Graph, out: NodeId) {
    g.outputs.push(GraphOutput {
        role: OutputRole::Prediction,
        node: out,
    });
}

impl InterpConvBn {
    /// Graphs and bindings for `s`'s layer (its operands and forward activations).
    pub fn new(s: &ConvBn) -> InterpConvBn {
        let g = &s.g;
        let [xs, ws, ys, cs] = [
            vec![g.n, g.h, g.w, g.c],
            vec![g.kh, g.kw, g.c, g.f],
            vec![g.n, g.oh, g.ow, g.f],
            vec![g.f],
        ];
        let (strides, p) = (g.stride, g.pad);
        let pad = Pad2d {
            top: p.top,
            bottom: p.bottom,
            left: p.left,
            right: p.right,
        };

        let mut fwd = Graph::new("conv_bn_fwd", g.n, Mode::Inference);
        let x = fwd
            .add(Op::Input, &[], Some(Shape(xs.clone())), "")
            .expect("input node");
        let (w, gamma, beta) = (
            param(&mut fwd, "w", &ws),
            param(&mut fwd, "gamma", &cs),
            param(&mut fwd, "beta", &cs),
        );
        let z = node(&mut fwd, Op::Conv2d { strides, pad }, &[x, w]);
        let m = node(&mut fwd, Op::Moments, &[z]);
        let t = node(&mut fwd, Op::BatchNormTrain { epsilon: EPS }, &[z, m, gamma, beta]);
        let y = node(&mut fwd, Op::Act(Activation::Relu), &[t]);
        predict(&mut fwd, y);

        let mut bwd = Graph::new("conv_bn_bwd", g.n, Mode::Inference);
        let dy = bwd
            .add(Op::Input, &[], Some(Shape(ys.clone())), "")
            .expect("input node");
        let (x, w, gamma) = (
            param(&mut bwd, "x", &xs),
            param(&mut bwd, "w", &ws),
            param(&mut bwd, "gamma", &cs),
        );
        let (z, m, y) = (
            param(&mut bwd, "z", &ys),
            param(&mut bwd, "moments", &[2, g.f]),
            param(&mut bwd, "y", &ys),
        );
        let ga = node(&mut bwd, Op::ActGrad(Activation::Relu), &[y, dy]);
        let dz = node(&mut bwd, Op::BatchNormGradInput { epsilon: EPS }, &[z, m, gamma, ga]);
        node(&mut bwd, Op::BatchNormGradGamma { epsilon: EPS }, &[z, m, ga]);
        node(&mut bwd, Op::ReduceToChannels, &[ga]);
        let kernel_hw = [g.kh, g.kw];
        let dw = node(
            &mut bwd,
            Op::Conv2dGradKernel {
                strides,
                pad,
                kernel_hw,
            },
            &[x, dz],
        );
        if s.input_grad {
            let input_hw = [g.h, g.w];
            let dx = node(&mut bwd, Op::Conv2dGradInput { strides, pad, input_hw }, &[dz, w]);
            predict(&mut bwd, dx);
        } else {
            predict(&mut bwd, dw);
        }

        InterpConvBn {
            fwd,
            fwd_input: tensor(&xs, &s.x),
            fwd_params: vec![tensor(&ws, &s.w), tensor(&cs, &s.gamma), tensor(&cs, &s.beta)],
            bwd,
            bwd_input: tensor(&ys, &s.dy),
            bwd_params: vec![
                tensor(&xs, &s.x),
                tensor(&ws, &s.w),
                tensor(&cs, &s.gamma),
                tensor(&ys, &s.z),
                tensor(&[2, g.f], &s.moments),
                tensor(&ys, &s.y),
            ],
        }
    }

    /// Runs the forward graph; returns every node's value.
    pub fn forward(&self) -> interp::Values {
        interp::run(&self.fwd, &self.fwd_input, None, &self.fwd_params, 0).expect("interpreter forward")
    }

    /// Runs the backward graph; returns every node's value.
    pub fn backward(&self) -> interp::Values {
        interp::run(&self.bwd, &self.bwd_input, None, &self.bwd_params, 0).expect("interpreter backward")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CONV_SHAPES;
    use cnnc_runtime::pool::Pool;

    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())))
    }

    /// A small SAME conv with stride 2 (odd padding) and more rows than one statistics group.
    fn geom() -> ConvGeom {
        ConvGeom::same(3, [9, 9], 5, [3, 3], 7, [2, 2])
    }

    #[test]
    fn fused_and_unfused_sequences_agree() {
        let pool = Pool::new(2);
        let ctx = Ctx::new(&pool);
        let mut s = ConvBn::new(&ctx, geom());
        s.backward_fused(&ctx);
        let fused: Vec<Vec<f32>> = s.results().iter().map(|r| r.to_vec()).collect();
        s.forward_unfused(&ctx);
        s.backward_unfused(&ctx);
        for (i, (a, b)) in fused.iter().zip(s.results()).enumerate() {
            assert!(close(a, b, 1e-4), "result {i} differs between fused and unfused");
        }
    }

    #[test]
    fn interpreter_agrees_with_the_kernels() {
        let pool = Pool::new(1);
        let ctx = Ctx::new(&pool);
        let mut s = ConvBn::new(&ctx, geom());
        s.backward_fused(&ctx);
        let it = InterpConvBn::new(&s);
        let (fwd, bwd) = (it.forward(), it.backward());
        let [y, dx, dw, ..] = s.results();
        let last = |v: &interp::Values, from_end: usize| v.tensors()[v.tensors().len() - from_end].data.clone();
        assert!(close(&last(&fwd, 1), y, 1e-3), "forward differs");
        assert!(close(&last(&bwd, 1), dx, 1e-3), "input gradient differs");
        assert!(close(&last(&bwd, 2), dw, 1e-3), "kernel gradient differs");
    }

    /// A model's first layer: no input gradient anywhere, the kernel gradient as before.
    #[test]
    fn a_first_layer_computes_no_input_gradient() {
        let pool = Pool::new(1);
        let ctx = Ctx::new(&pool);
        let shape = CONV_SHAPES.iter().find(|s| s.input).expect("a first layer");
        let mut s = ConvBn::for_shape(&ctx, shape);
        assert_eq!(s.backward_flops(), s.forward_flops());
        s.backward_fused(&ctx);
        let [_, dx, dw, ..] = s.results();
        assert!(dx.iter().all(|&v| v == 0.0), "no input gradient");
        assert!(dw.iter().any(|&v| v != 0.0), "a kernel gradient");
        let it = InterpConvBn::new(&s);
        assert_eq!(it.bwd.outputs.len(), 1);
        let bwd = it.backward();
        let got = &bwd.tensors()[bwd.tensors().len() - 1].data;
        assert!(close(got, dw, 1e-3), "kernel gradient differs");
    }
}
