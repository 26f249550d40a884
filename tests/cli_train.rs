//! `cnnc train` / `cnnc eval` end to end on real MNIST (the shipped `data/mnist`): training
//! learns, the files it writes are complete, and the same seed gives the same weights.

mod support;

use std::path::{Path, PathBuf};

use cnnc_runtime::data::{load_mnist_dir, write_npy_f32, Dataset};
use support::{cnnc, files_in, model, root};

/// Writes the first `n_train` training and `n_test` test images of the shipped MNIST as the
/// `x_train.npy`/`y_train.npy`/`x_test.npy`/`y_test.npy` directory layout, so the test stays
/// short on the reference interpreter.
fn mnist_subset(dir: &Path, n_train: usize, n_test: usize) {
    let (train, test) = load_mnist_dir(&root().join("data/mnist")).unwrap();
    let test = test.expect("the shipped MNIST has a test set");
    let write = |d: &Dataset, n: usize, x: &str, y: &str| {
        let len = d.sample_len();
        write_npy_f32(&dir.join(x), &[n, 28, 28, 1], &d.x[..n * len]).unwrap();
        write_npy_f32(&dir.join(y), &[n], &d.y[..n]).unwrap();
    };
    write(&train, n_train, "x_train.npy", "y_train.npy");
    write(&test, n_test, "x_test.npy", "y_test.npy");
}

fn arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Parses `test accuracy: 0.1234` out of the output.
fn test_accuracy(stdout: &str) -> f32 {
    let at = stdout.find("test accuracy: ").expect("a test accuracy line") + "test accuracy: ".len();
    stdout[at..].split_whitespace().next().unwrap().parse().unwrap()
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> support::Run {
    let mut args: Vec<String> = vec![
        "train".into(),
        arg(&model("mnist_cnn.yaml")),
        "--data".into(),
        arg(data),
        "--save".into(),
        arg(out),
        "--threads".into(),
        "1".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    cnnc(args)
}

#[test]
fn training_on_real_mnist_learns_and_writes_weights_history_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mnist");
    std::fs::create_dir(&data).unwrap();
    mnist_subset(&data, 3000, 1000);
    let weights = dir.path().join("w.safetensors");
    let history = dir.path().join("history.csv");
    let plot = dir.path().join("curves.svg");
    let run = train(
        &data,
        &weights,
        &[
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--validation-split",
            "0.1",
            "--history",
            &arg(&history),
            "--plot",
            &arg(&plot),
        ],
    );
    run.assert_ok();
    assert!(run.stdout.contains("val_accuracy"), "an epoch line:\n{}", run.stdout);
    let acc = test_accuracy(&run.stdout);
    assert!(
        acc > 0.85,
        "test accuracy {acc} after one epoch on 2,700 images:\n{}",
        run.stdout
    );
    let csv = std::fs::read_to_string(&history).unwrap();
    assert!(csv.starts_with("epoch,") && csv.lines().count() == 2, "{csv}");
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"));
    let left = support::files_in(plot.parent().unwrap());
    assert!(
        left.iter().all(|f| !f.contains(".tmp.")),
        "the plot's temporary file is gone: {left:?}"
    );

    // `eval` of the saved weights reproduces the test score printed by `train`.
    let eval = cnnc([
        "eval".to_string(),
        arg(&model("mnist_cnn.yaml")),
        "--weights".into(),
        arg(&weights),
        "--data".into(),
        arg(&data),
    ]);
    eval.assert_ok();
    let at = eval.stdout.find("accuracy: ").unwrap() + "accuracy: ".len();
    let eval_acc: f32 = eval.stdout[at..].split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        (eval_acc - acc).abs() < 1e-3,
        "eval {eval_acc} vs train's test accuracy {acc}"
    );
}

#[test]
fn same_seed_gives_identical_weights_and_steps_stop_early() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mnist");
    std::fs::create_dir(&data).unwrap();
    mnist_subset(&data, 600, 100);
    let files: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("w{i}.safetensors"))).collect();
    let common = [
        "--batch-size",
        "32",
        "--steps",
        "5",
        "--seed",
        "7",
        "--validation-split",
        "0",
    ];
    for f in &files[..2] {
        train(&data, f, &common).assert_ok();
    }
    let other_seed = [
        "--batch-size",
        "32",
        "--steps",
        "5",
        "--seed",
        "8",
        "--validation-split",
        "0",
    ];
    train(&data, &files[2], &other_seed).assert_ok();
    let bytes: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(bytes[0] == bytes[1], "same seed, same weights");
    assert!(bytes[0] != bytes[2], "another seed, other weights");
    // Only the weights files (and the data directory) were written: no temporaries left.
    assert_eq!(
        files_in(dir.path()),
        ["mnist", "w0.safetensors", "w1.safetensors", "w2.safetensors"]
    );
}

#[test]
fn profile_prints_each_programs_kernels_and_is_refused_without_kernel_timing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mnist");
    std::fs::create_dir(&data).unwrap();
    mnist_subset(&data, 64, 32);
    let w = dir.path().join("w.safetensors");
    let common = ["--batch-size", "32", "--steps", "2", "--validation-split", "0"];
    let run = train(&data, &w, &[&common[..], &["--profile"]].concat());
    run.assert_ok();
    // The training program (2 steps) and the test set's inference program, fused kernels named.
    assert!(run.stderr.contains("Training n=32 (2 calls)"), "{}", run.stderr);
    assert!(run.stderr.contains("Inference n=32 (1 calls)"), "{}", run.stderr);
    assert!(run.stderr.contains("+pool conv2d,max_pooling2d"), "{}", run.stderr);
    let interp = train(
        &data,
        &w,
        &[&common[..], &["--profile", "--backend", "interp"]].concat(),
    );
    assert!(!interp.ok);
    assert!(
        interp
            .stderr
            .contains("--profile: the interp backend has no per-kernel timing"),
        "{}",
        interp.stderr
    );
}

/// A model whose input is flat `[784]` trains, evaluates and predicts on 28x28 MNIST images.
#[test]
fn a_flat_input_takes_images_of_as_many_values() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mnist");
    std::fs::create_dir(&data).unwrap();
    mnist_subset(&data, 64, 32);
    let flat = dir.path().join("flat.yaml");
    std::fs::write(
        &flat,
        "name: flat\ninput: [784]\nlayers:\n  - dense: {units: 10, activation: softmax}\n",
    )
    .unwrap();
    let w = dir.path().join("w.safetensors");
    let common = ["--data".to_string(), arg(&data), "--threads".into(), "1".into()];
    let mut args = vec![
        "train".to_string(),
        arg(&flat),
        "--save".into(),
        arg(&w),
        "--steps".into(),
        "2".into(),
    ];
    args.extend(common.iter().cloned());
    cnnc(&args).assert_ok();
    let mut args = vec!["eval".to_string(), arg(&flat), "--weights".into(), arg(&w)];
    args.extend(common.iter().cloned());
    let eval = cnnc(&args);
    eval.assert_ok();
    assert!(eval.stdout.contains("32 samples (test of"), "{}", eval.stdout);
    let out = dir.path().join("p.npy");
    cnnc([
        "predict".to_string(),
        arg(&flat),
        "--weights".into(),
        arg(&w),
        "--input".into(),
        arg(&data.join("x_test.npy")),
        "--output".into(),
        arg(&out),
    ])
    .assert_ok();
    assert_eq!(cnnc_runtime::data::read_npy(&out).unwrap().shape, vec![32, 10]);
}

/// `--init-weights w --save w` resumes and overwrites in place (atomically, after training).
#[test]
fn resuming_may_overwrite_the_initial_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mnist");
    std::fs::create_dir(&data).unwrap();
    mnist_subset(&data, 64, 32);
    let w = dir.path().join("w.safetensors");
    let steps = ["--batch-size", "32", "--steps", "1", "--validation-split", "0"];
    train(&data, &w, &steps).assert_ok();
    let first = std::fs::read(&w).unwrap();
    train(
        &data,
        &w,
        &[&steps[..], &["--init-weights", &arg(&w), "--seed", "3"]].concat(),
    )
    .assert_ok();
    assert_ne!(std::fs::read(&w).unwrap(), first, "trained one more step");
    assert_eq!(files_in(dir.path()), ["mnist", "w.safetensors"]);
}
