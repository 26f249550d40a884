//! The middle end: graph passes, lowering to kernel IR, kernel-IR passes (fusion, optimiser
//! updates, memory planning).
//!
//! [`compile`] = [`run_pipeline`] (graph → graph) + [`kernel_ir::lower()`] +
//! [`run_kernel_pipeline`] (program → program). After every pass, debug and test builds run the
//! matching verifier (`ir::assert_valid` / `kernel_ir::assert_valid`; tests may force it with
//! [`PipelineOptions::verify`]). Set `CNNC_DUMP_IR` to
//! `1` or `all` to print the IR to stderr after every pass, or to a comma-separated list of
//! pass names (e.g. `fold_bn,plan`) to print it after those only.

pub mod compact;
pub mod dce;
pub mod fold_bn;
pub mod fuse_argmax_dw;
pub mod fuse_bias_act;
pub mod fuse_bias_grad;
pub mod fuse_bn_apply;
pub mod fuse_bn_backward;
pub mod fuse_bn_stats;
pub mod fuse_max_pool;
pub mod fuse_pool_act_grad;
pub mod fuse_pool_argmax;
pub mod fuse_softmax_xent;
mod fusion;
pub mod optimizer;
pub mod prepare_winograd;

use thiserror::Error;

use crate::ir::{self, Graph, Mode, ShapeError};
use crate::kernel_ir::{self, LowerError, Machine, Program, UpdateRule};

#[derive(Debug, Error)]
pub enum PassError {
    /// A graph pass built a node whose shape does not check (a compiler bug surfaced as an
    /// error rather than a panic, naming the pass and the layer).
    #[error("pass {pass}, layer {layer:?}: {source}")]
    Shape {
        pass: &'static str,
        layer: String,
        #[source]
        source: ShapeError,
    },
    #[error(transparent)]
    Lower(#[from] LowerError),
}

/// What the middle end does, and for which machine.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineOptions {
    /// Schedules are chosen for this machine.
    pub machine: Machine,
    /// Inference: fold BN into the preceding conv / dense weights at weight-load time.
    pub fold_bn: bool,
    /// Run the kernel fusion passes (off: one kernel per graph node, for debugging).
    pub fuse: bool,
    /// Training: append optimiser update kernels with this rule.
    pub update: Option<UpdateRule>,
    /// Inference: transform the kernels of Winograd convs once, in the prepare stage
    /// ([`prepare_winograd`]); for generated code (the kernels backend memoises its own).
    pub prepare_winograd: bool,
    /// Run the verifiers after every pass (default: in debug and test builds only).
    pub verify: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            machine: Machine::detect(),
            fold_bn: true,
            fuse: true,
            update: None,
            prepare_winograd: false,
            verify: cfg!(debug_assertions),
        }
    }
}

/// Whether `CNNC_DUMP_IR` asks for the IR after `pass`.
fn dump_requested(pass: &str) -> bool {
    match std::env::var("CNNC_DUMP_IR") {
        Ok(v) => v == "1" || v == "all" || v.split(',').any(|p| p.trim() == pass),
        Err(_) => false,
    }
}

fn graph_pass(
    g: Graph,
    opts: &PipelineOptions,
    name: &'static str,
    pass: impl FnOnce(Graph) -> Result<Graph, PassError>,
) -> Result<Graph, PassError> {
    let g = pass(g)?;
    if opts.verify {
        ir::assert_valid(&g, name);
    }
    if dump_requested(name) {
        eprintln!("=== graph after {name} ===\n{}", ir::dump(&g));
    }
    Ok(g)
}

/// Runs one kernel-IR pass; `pass` returns how many rewrites it made (shown in dumps).
fn kernel_pass(p: &mut Program, opts: &PipelineOptions, name: &'static str, pass: impl FnOnce(&mut Program) -> usize) {
    let rewrites = pass(p);
    if opts.verify {
        kernel_ir::assert_valid(p, name);
    }
    if dump_requested(name) {
        eprintln!(
            "=== kernel IR after {name} ({rewrites} rewrites, {} kernels) ===\n{}",
            p.kernels.len(),
            kernel_ir::dump(p)
        );
    }
}

/// The graph passes.
pub fn run_pipeline(g: Graph, opts: &PipelineOptions) -> Result<Graph, PassError> {
    let g = graph_pass(g, opts, "dce", |g| Ok(dce::run(g)))?;
    let g = if opts.fold_bn && g.mode == Mode::Inference {
        let g = graph_pass(g, opts, "fold_bn", fold_bn::run)?;
        graph_pass(g, opts, "dce", |g| Ok(dce::run(g)))?
    } else {
        g
    };
    Ok(g)
}

/// The kernel-IR passes, from the unfused lowering to a planned program.
pub fn run_kernel_pipeline(mut p: Program, opts: &PipelineOptions) -> Result<Program, PassError> {
    if opts.fuse {
        kernel_pass(&mut p, opts, "fuse_softmax_xent", fuse_softmax_xent::run);
        kernel_pass(&mut p, opts, "fuse_bias_act", fuse_bias_act::run);
        kernel_pass(&mut p, opts, "fuse_max_pool", fuse_max_pool::run);
        kernel_pass(&mut p, opts, "fuse_bn_stats", fuse_bn_stats::run);
        kernel_pass(&mut p, opts, "fuse_bn_apply", fuse_bn_apply::run);
        kernel_pass(&mut p, opts, "fuse_bn_backward", fuse_bn_backward::run);
        kernel_pass(&mut p, opts, "fuse_bias_grad", fuse_bias_grad::run);
        kernel_pass(&mut p, opts, "fuse_pool_act_grad", fuse_pool_act_grad::run);
        kernel_pass(&mut p, opts, "fuse_pool_argmax", fuse_pool_argmax::run);
        kernel_pass(&mut p, opts, "fuse_argmax_dw", fuse_argmax_dw::run);
    }
    if opts.prepare_winograd {
        kernel_pass(&mut p, opts, "prepare_winograd", |p| {
            prepare_winograd::run(p, &opts.machine)
        });
    }
    if let (Some(rule), Mode::Training) = (opts.update, p.mode) {
        kernel_pass(&mut p, opts, "optimizer", |p| optimizer::run(p, &rule));
    }
    kernel_pass(&mut p, opts, "compact", compact::run);
    kernel_pass(&mut p, opts, "plan", |p| {
        kernel_ir::plan(p);
        0
    });
    Ok(p)
}

/// Lowers a graph to kernel IR for `opts.machine`, verifying and dumping it like a pass.
pub fn lower(g: &Graph, opts: &PipelineOptions) -> Result<Program, PassError> {
    let mut p = kernel_ir::lower(g, &opts.machine)?;
    kernel_pass(&mut p, opts, "lower", |p| p.kernels.len());
    Ok(p)
}

/// The whole middle end: graph passes, lowering, kernel-IR passes.
pub fn compile(g: Graph, opts: &PipelineOptions) -> Result<Program, PassError> {
    let g = run_pipeline(g, opts)?;
    let p = lower(&g, opts)?;
    run_kernel_pipeline(p, opts)
}
