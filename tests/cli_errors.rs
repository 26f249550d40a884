//! Bad input to `cnnc`: a clear one-line error naming the file, layer or tensor, a non-zero
//! exit, no panic, and nothing written.

mod support;

use std::path::Path;

use cnnc_runtime::data::write_npy_f32;
use support::{cnnc, files_in, model};

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Runs `train` on the given data flags with `--save` into a fresh directory and checks the
/// failure message and that the directory stays empty.
fn train_fails(data_args: &[String], needle: &str) {
    let out = tempfile::tempdir().unwrap();
    let save = out.path().join("w.safetensors");
    let mut args = vec!["train".to_string(), s(&model("mnist_cnn.yaml"))];
    args.extend(data_args.iter().cloned());
    args.extend(["--save".into(), s(&save), "--steps".into(), "1".into()]);
    cnnc(&args).assert_fails_with(needle);
    assert!(
        files_in(out.path()).is_empty(),
        "nothing written: {:?}",
        files_in(out.path())
    );
}

#[test]
fn missing_model_file_names_it() {
    cnnc(["summary", "no/such/model.yaml"]).assert_fails_with("no/such/model.yaml");
}

#[test]
fn invalid_model_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "name: bad\ninput: [28, 28, 1]\nlayers:\n  - conv2d: {filters: 8, kernel_size: 3, colour: red}\n",
    )
    .unwrap();
    let run = cnnc(["summary".to_string(), s(&path)]);
    run.assert_fails_with("bad.yaml:4");
    assert!(run.stderr.contains("colour"), "{}", run.stderr);
}

#[test]
fn missing_data_directory() {
    train_fails(&["--data".into(), "/no/such/dir".into()], "/no/such/dir");
}

#[test]
fn directory_without_mnist_files() {
    let empty = tempfile::tempdir().unwrap();
    train_fails(&["--data".into(), s(empty.path())], &s(empty.path()));
}

#[test]
fn wrong_shaped_npy_images() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    write_npy_f32(&x, &[4, 32, 32, 3], &vec![0.0; 4 * 32 * 32 * 3]).unwrap();
    write_npy_f32(&y, &[4], &[0.0, 1.0, 2.0, 3.0]).unwrap();
    train_fails(&["--train-x".into(), s(&x), "--train-y".into(), s(&y)], "[32, 32, 3]");
}

#[test]
fn label_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    write_npy_f32(&x, &[3, 28, 28, 1], &vec![0.0; 3 * 784]).unwrap();
    write_npy_f32(&y, &[3], &[0.0, 12.0, 1.0]).unwrap();
    train_fails(&["--train-x".into(), s(&x), "--train-y".into(), s(&y)], "12");
}

#[test]
fn corrupt_safetensors_is_refused_and_predict_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    std::fs::write(&weights, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"conv2d.kern").unwrap();
    let x = dir.path().join("x.npy");
    write_npy_f32(&x, &[1, 28, 28, 1], &[0.0; 784]).unwrap();
    let out = dir.path().join("y.npy");
    let run = cnnc([
        "predict".to_string(),
        s(&model("mnist_cnn.yaml")),
        "--weights".into(),
        s(&weights),
        "--input".into(),
        s(&x),
        "--output".into(),
        s(&out),
    ]);
    run.assert_fails_with("w.safetensors");
    assert!(!out.exists());
}

#[test]
fn weights_of_another_model_name_the_tensor_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    // Every tensor of the MNIST CNN, but conv2d.kernel has LeNet-5's [5, 5, 1, 6] shape.
    let shapes: [(&str, &[usize]); 8] = [
        ("conv2d.kernel", &[5, 5, 1, 6]),
        ("conv2d.bias", &[32]),
        ("conv2d_1.kernel", &[3, 3, 32, 64]),
        ("conv2d_1.bias", &[64]),
        ("dense.kernel", &[3136, 128]),
        ("dense.bias", &[128]),
        ("dense_1.kernel", &[128, 10]),
        ("dense_1.bias", &[10]),
    ];
    let specs: Vec<cnnc_runtime::ParamSpec> = shapes
        .iter()
        .map(|(name, shape)| cnnc_runtime::ParamSpec {
            name: name.to_string(),
            shape: shape.to_vec(),
            init: cnnc_runtime::Init::Zeros,
            trainable: true,
        })
        .collect();
    let params: Vec<cnnc_runtime::Tensor> = shapes
        .iter()
        .map(|(_, shape)| cnnc_runtime::Tensor::zeros(shape))
        .collect();
    let weights = dir.path().join("w.safetensors");
    cnnc_runtime::weights::save_weights(&weights, &specs, &params).unwrap();
    let x = dir.path().join("x.npy");
    write_npy_f32(&x, &[1, 28, 28, 1], &[0.0; 784]).unwrap();
    let run = cnnc([
        "predict".to_string(),
        s(&model("mnist_cnn.yaml")),
        "--weights".into(),
        s(&weights),
        "--input".into(),
        s(&x),
        "--output".into(),
        s(&dir.path().join("y.npy")),
    ]);
    run.assert_fails_with("conv2d.kernel");
    assert!(
        run.stderr.contains("[3, 3, 1, 32]") && run.stderr.contains("[5, 5, 1, 6]"),
        "{}",
        run.stderr
    );
}

#[test]
fn unwritable_output_is_refused_before_training() {
    train_fails(
        &[
            "--data".into(),
            s(&support::root().join("data/mnist")),
            "--history".into(),
            "/no/such/dir/h.csv".into(),
        ],
        "/no/such/dir",
    );
}
