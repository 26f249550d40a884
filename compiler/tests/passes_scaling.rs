//! The middle end stays near-linear in the depth of a model.
//!
//! A 10,000-layer dense chain once took 12 minutes to compile for training: every fusion
//! pass rebuilt the use/def index (`Program::uses`, a walk over every kernel) for every
//! kernel it looked at, and the memory plan compared every buffer with every other. Tests are
//! never timed here, so this guard does not measure time. Instead it
//!
//! * counts the index builds through `kernel_ir::program::uses_built` (a per-thread counter,
//!   so tests running side by side cannot disturb it): compiling must build the index a fixed
//!   number of times, whatever the depth, and the count is exact, so it cannot flake; and
//! * compiles a 3,000-layer chain (~12,000 kernels, ~24,000 buffers) for training all the
//!   way to a checked memory plan, so quadratic work that does not go through the index (a
//!   scan of all kernels per kernel, a pairwise buffer check) shows up as a test taking
//!   seconds to minutes instead of a fraction of a second.

use std::path::Path;

use cnnc_compiler::ir::{Graph, LossKind, Mode};
use cnnc_compiler::kernel_ir::program::uses_built;
use cnnc_compiler::kernel_ir::{plan, Machine, Program, UpdateRule};
use cnnc_compiler::passes::{self, PipelineOptions};
use cnnc_compiler::{autodiff, lower, spec};

/// A chain of `layers` one-unit dense layers, for training.
fn chain(layers: usize) -> Graph {
    let text = format!(
        "input: [16]\nlayers:\n  - repeat:\n      times: {}\n      layers:\n        - dense: {{units: 1, activation: sigmoid}}\n",
        layers - 1
    );
    let model = spec::parse_model(&text, Path::new("chain.yaml")).expect("a valid model");
    let g = lower::lower(&model, 2, Mode::Training).expect("lowers");
    autodiff::training_graph(&g, LossKind::MeanSquaredError, false).expect("differentiates")
}

/// Compiles with fusion and Adam updates (no verifier: it builds the index too); returns the
/// program and how many times the use/def index was built.
fn compile(g: Graph) -> (Program, usize) {
    let opts = PipelineOptions {
        machine: Machine::reference(),
        update: Some(UpdateRule::adam()),
        verify: false,
        ..PipelineOptions::default()
    };
    let before = uses_built();
    let p = passes::compile(g, &opts).expect("compiles");
    (p, uses_built() - before)
}

#[test]
fn index_builds_do_not_grow_with_depth() {
    let (_, shallow) = compile(chain(3));
    let (_, deep) = compile(chain(300));
    assert_eq!(
        shallow, deep,
        "use/def index builds: 3 layers {shallow}, 300 layers {deep}"
    );
    // One per fusion pass and one for the memory plan, give or take.
    assert!(deep <= 16, "{deep} index builds");
}

#[test]
fn a_3000_layer_chain_compiles_for_training() {
    let (p, _) = compile(chain(3000));
    assert!(p.kernels.len() > 3 * 3000, "{} kernels", p.kernels.len());
    assert!(plan::check(&p).is_empty());
}
