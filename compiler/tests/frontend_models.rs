//! Every model in `models/` parses, lowers (batch 2, inference and training) through the
//! verifier, and has the parameter count its seed prints (or that Keras would print).

use std::path::{Path, PathBuf};

use cnnc_compiler::ir::{Graph, Mode, Op, OutputRole};
use cnnc_compiler::lower::lower;
use cnnc_compiler::spec::load_model;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// (file stem, total params, non-trainable params).
const EXPECTED: [(&str, usize, usize); 13] = [
    ("mnist_cnn", 421_642, 0),
    ("cifar10_cnn", 1_337_002, 0),
    ("vgg16", 138_357_544, 0),
    ("lenet5", 44_426, 0),
    ("lenet_mnist", 3_255_914, 0),
    ("lenet_cifar10", 4_239_978, 0),
    ("convnet_mnist", 104_202, 0),
    ("baseline_cifar10", 198_506, 12),
    ("lenet5_cifar10", 62_006, 0),
    ("alexnet8", 9_639_178, 704),
    ("vgg16_cifar10", 15_262_026, 8_448),
    ("inception10", 121_418, 1_184),
    ("resnet18", 11_183_562, 9_600),
];

/// (total, non-trainable) parameter elements of a graph.
fn param_totals(g: &Graph) -> (usize, usize) {
    let mut total = 0;
    let mut frozen = 0;
    for p in g.params() {
        let n = g.shape(p).numel();
        total += n;
        if let Some((_, role)) = g.param_info(p) {
            if !role.trainable() {
                frozen += n;
            }
        }
    }
    (total, frozen)
}

fn yaml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(models_dir())
        .expect("models/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_model_lowers_in_both_modes_with_its_parameter_count() {
    let files = yaml_files();
    assert!(files.len() >= EXPECTED.len(), "models/ holds {} models", files.len());
    for path in &files {
        let spec = load_model(path).unwrap_or_else(|e| panic!("{e}"));
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        for mode in [Mode::Inference, Mode::Training] {
            let g = lower(&spec, 2, mode).unwrap_or_else(|e| panic!("{}: {mode:?}: {e}", path.display()));
            let errs = cnnc_compiler::ir::verify(&g);
            let errs: Vec<_> = errs.iter().filter(|e| !e.contains("no loss output")).collect();
            assert!(errs.is_empty(), "{stem} {mode:?}: {errs:?}");
            assert_eq!(
                g.layers.len(),
                spec.layers.len(),
                "{stem}: one layer row per spec layer"
            );
            let got = param_totals(&g);
            if let Some(&(_, total, frozen)) = EXPECTED.iter().find(|(n, _, _)| *n == stem) {
                assert_eq!(got, (total, frozen), "{stem} {mode:?}: (total, non-trainable) params");
            }
            let updates = g
                .outputs
                .iter()
                .filter(|o| matches!(o.role, OutputRole::StateUpdate { .. }))
                .count();
            let bn = spec
                .layers
                .iter()
                .filter(|l| l.kind.keras_class() == "BatchNormalization")
                .count();
            let want = if mode == Mode::Training { 2 * bn } else { 0 };
            assert_eq!(updates, want, "{stem} {mode:?}: BN state updates");
            let dropouts = g.nodes.iter().filter(|n| matches!(n.op, Op::Dropout { .. })).count();
            if mode == Mode::Inference {
                assert_eq!(dropouts, 0, "{stem}: no dropout in inference");
            }
        }
    }
}

#[test]
fn every_expected_model_exists_and_has_a_training_section() {
    for (stem, _, _) in EXPECTED {
        let path = models_dir().join(format!("{stem}.yaml"));
        let spec = load_model(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(spec.training.loss.is_some(), "{stem}: training.loss");
        assert!(spec.training.optimizer.is_some(), "{stem}: training.optimizer");
        let text = std::fs::read_to_string(&path).expect("readable");
        assert!(text.starts_with("# "), "{stem}: starts with a comment naming its seed");
        assert!(
            text.lines().take(8).any(|l| l.contains("seed 00")),
            "{stem}: names its seed"
        );
    }
}
