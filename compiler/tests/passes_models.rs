//! The middle end on every model in `models/`, through the real front end and autodiff:
//! inference and training programs compile, verify after every pass, plan without overlap,
//! and fusion leaves fewer kernels than nodes.

use std::path::Path;

use cnnc_compiler::ir::{Graph, LossKind, Mode, Op};
use cnnc_compiler::kernel_ir::{plan, EwOp, KernelOp, Machine, Program, Stage, UpdateRule};
use cnnc_compiler::passes::{self, PipelineOptions};
use cnnc_compiler::{autodiff, lower, spec};

fn opts() -> PipelineOptions {
    PipelineOptions {
        machine: Machine::reference(),
        verify: true,
        update: Some(UpdateRule::adam()),
        ..PipelineOptions::default()
    }
}

/// The model's graph for batch 2 in `mode`, differentiated with its own loss for training.
fn graph(path: &Path, mode: Mode) -> Graph {
    let name = path.display();
    let model = spec::load_model(path).unwrap_or_else(|e| panic!("{e}"));
    let g = lower::lower(&model, 2, mode).unwrap_or_else(|e| panic!("{name}: {e}"));
    if mode == Mode::Inference {
        return g;
    }
    let loss = model.training.loss.unwrap_or(LossKind::SparseCategoricalCrossentropy);
    let from_logits = model.training.from_logits.unwrap_or(false);
    autodiff::training_graph(&g, loss, from_logits).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn forward_adds(p: &Program) -> usize {
    let add = |op: &KernelOp| matches!(op, KernelOp::Elementwise { op: EwOp::Add, .. });
    p.kernels
        .iter()
        .filter(|k| k.stage == Stage::Forward && add(&k.op))
        .count()
}

#[test]
fn resnet_skip_connections_are_fused() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/resnet18.yaml");
    // Inference: BN folds into the convs, whose epilogues add the skip and apply relu.
    let p = passes::compile(graph(&path, Mode::Inference), &opts()).expect("compile");
    assert_eq!(forward_adds(&p), 0);
    let skips = p
        .kernels
        .iter()
        .filter(|k| matches!(&k.op, KernelOp::Conv2d { epilogue: e, .. } if e.residual && e.bias))
        .count();
    assert_eq!(skips, 8, "one per residual block");
    // Training: bn_apply adds the skip before the activation.
    let p = passes::compile(graph(&path, Mode::Training), &opts()).expect("compile");
    assert_eq!(forward_adds(&p), 0);
    let skips = p
        .kernels
        .iter()
        .filter(|k| matches!(k.op, KernelOp::BnApply { residual: true, .. }))
        .count();
    assert_eq!(skips, 8);
}

#[test]
fn every_seed_model_compiles() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("models directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for path in files {
        for mode in [Mode::Inference, Mode::Training] {
            let g = graph(&path, mode);
            let name = g.name.clone();
            let nodes = g
                .nodes
                .iter()
                .filter(|n| !n.op.is_leaf() && !matches!(n.op, Op::Reshape))
                .count();
            let p = passes::compile(g, &opts()).unwrap_or_else(|e| panic!("{name} ({mode:?}): {e}"));
            assert!(plan::check(&p).is_empty(), "{name} ({mode:?})");
            assert!(
                p.run_kernels() < nodes,
                "{name} ({mode:?}): {} kernels for {nodes} nodes",
                p.run_kernels()
            );
            let s = plan::stats(&p);
            eprintln!(
                "{name:<18} {:<9} {nodes:>4} nodes -> {:>3} kernels, arena {:>10} B (unshared {:>10} B)",
                format!("{mode:?}"),
                p.run_kernels(),
                s.arena_bytes,
                s.unshared_bytes
            );
        }
    }
}
