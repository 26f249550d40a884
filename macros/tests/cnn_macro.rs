//! `cnn!` declares the same model as the YAML file, and its compile errors point at the layer.

use cnnc_compiler::ir::Mode;
use cnnc_compiler::lower::lower;
use cnnc_compiler::spec::load_model;
use cnnc_compiler::summary::summary;
use cnnc_macros::cnn;

#[test]
fn mnist_cnn_matches_the_yaml_model() {
    let spec = cnn! {
        name: mnist_cnn,
        input: [28, 28, 1],
        layers: [
            conv2d { filters: 32, kernel_size: 3, strides: 1, padding: same, activation: relu },
            max_pooling2d { pool_size: 2 },
            conv2d { filters: 64, kernel_size: 3, strides: 1, padding: same, activation: relu },
            max_pooling2d { pool_size: 2 },
            flatten,
            dense { units: 128, activation: relu },
            dense { units: 10, activation: softmax },
        ],
        training: { optimizer: adam, loss: sparse_categorical_crossentropy, batch_size: 128 },
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist_cnn.yaml");
    let yaml = load_model(&path).unwrap();
    let (a, b) = (
        lower(&spec, 1, Mode::Inference).unwrap(),
        lower(&yaml, 1, Mode::Inference).unwrap(),
    );
    assert_eq!(summary(&a), summary(&b));
    assert_eq!(spec.training.batch_size, Some(128));
}

#[test]
fn compile_errors_point_at_the_layer() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
