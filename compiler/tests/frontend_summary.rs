//! `summary`: the Keras-style table, its totals against the seeds' printed counts, and the full
//! MNIST CNN table as a snapshot.

use std::path::Path;

use cnnc_compiler::ir::Mode;
use cnnc_compiler::lower::lower;
use cnnc_compiler::spec::load_model;
use cnnc_compiler::summary::summary;

fn table(stem: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../models/{stem}.yaml"));
    let spec = load_model(&path).unwrap_or_else(|e| panic!("{e}"));
    let g = lower(&spec, 1, Mode::Inference).unwrap_or_else(|e| panic!("{e}"));
    summary(&g)
}

fn assert_totals(stem: &str, total: &str, trainable: &str, frozen: &str) {
    let s = table(stem);
    for want in [
        format!("Total params: {total}\n"),
        format!("Trainable params: {trainable}\n"),
        format!("Non-trainable params: {frozen}\n"),
    ] {
        assert!(s.contains(&want), "{stem}: missing {want:?} in\n{s}");
    }
}

#[test]
fn totals_match_the_seeds() {
    assert_totals("mnist_cnn", "421,642", "421,642", "0");
    assert_totals("cifar10_cnn", "1,337,002", "1,337,002", "0");
    assert_totals("vgg16", "138,357,544", "138,357,544", "0");
    assert_totals("lenet_mnist", "3,255,914", "3,255,914", "0");
    assert_totals("lenet_cifar10", "4,239,978", "4,239,978", "0");
}

#[test]
fn bn_moving_statistics_are_non_trainable() {
    assert_totals("baseline_cifar10", "198,506", "198,494", "12");
    assert_totals("resnet18", "11,183,562", "11,173,962", "9,600");
}

#[test]
fn rows_follow_the_seed_summary() {
    let s = table("cifar10_cnn");
    let rows: Vec<&str> = s.lines().filter(|l| l.contains(" (") && l.contains("(None")).collect();
    assert_eq!(rows.len(), 12, "{s}");
    assert!(
        rows[0].starts_with("conv2d (Conv2D)") && rows[0].contains("(None, 32, 32, 32)") && rows[0].ends_with("896")
    );
    assert!(rows[8].starts_with("flatten (Flatten)") && rows[8].contains("(None, 8192)"));
    assert!(rows[9].starts_with("dense (Dense)") && rows[9].ends_with("1048704"));
    assert!(rows[10].starts_with("dropout (Dropout)") && rows[10].contains("(None, 128)"));
    assert!(!s.contains("Connected to"), "a chain has no Connected to column");
}

#[test]
fn dags_show_connections() {
    let s = table("resnet18");
    assert!(s.contains("Connected to"), "{s}");
    let add = s
        .lines()
        .find(|l| l.starts_with("residual_block/add (Add)"))
        .unwrap_or_else(|| panic!("no add row in\n{s}"));
    assert!(add.ends_with("residual_block/b2, a1"), "{add}");
}

#[test]
fn mnist_cnn_table() {
    insta::assert_snapshot!(table("mnist_cnn"));
}
