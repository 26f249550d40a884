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
    train_fails(
        &["--train-x".into(), s(&x), "--train-y".into(), s(&y)],
        &format!(
            "{} + {}: training data has samples of shape [32, 32, 3], but the model's input is [28, 28, 1]",
            x.display(),
            y.display()
        ),
    );
}

#[test]
fn half_an_npy_pair_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    write_npy_f32(&x, &[1, 28, 28, 1], &[0.0; 784]).unwrap();
    train_fails(
        &["--train-x".into(), s(&x), "--train-y".into(), s(&y)],
        &format!(
            "{}: no such file (the labels of the pair with {})",
            y.display(),
            x.display()
        ),
    );
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(&x, data.join("x_train.npy")).unwrap();
    train_fails(
        &["--data".into(), s(&data)],
        &format!("{}: x_train.npy found but y_train.npy is missing", data.display()),
    );
}

/// IDX files with a zero dimension, and a directory where a file belongs, are refused naming
/// the file, before anything is built or trained.
#[test]
fn empty_idx_files_and_directories_for_files_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let idx = |dims: &[u32]| -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        b.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
        b
    };
    std::fs::write(dir.path().join("train-images-idx3-ubyte"), idx(&[0, 28, 28])).unwrap();
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx(&[0])).unwrap();
    let images = dir.path().join("train-images-idx3-ubyte");
    train_fails(
        &["--data".into(), s(dir.path())],
        &format!("{}: IDX dimension 0 of [0, 28, 28] is 0", images.display()),
    );
    let y = dir.path().join("y.npy");
    write_npy_f32(&y, &[1], &[0.0]).unwrap();
    train_fails(
        &["--train-x".into(), s(dir.path()), "--train-y".into(), s(&y)],
        &format!("{}: is a directory, expected a file", dir.path().display()),
    );
}

/// 784 values per sample, but shaped [14, 14, 4]: the size matches, the shape does not.
#[test]
fn samples_of_the_right_size_but_the_wrong_shape_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    write_npy_f32(&x, &[2, 14, 14, 4], &[0.0; 2 * 784]).unwrap();
    write_npy_f32(&y, &[2], &[0.0, 1.0]).unwrap();
    train_fails(
        &["--train-x".into(), s(&x), "--train-y".into(), s(&y)],
        "training data has samples of shape [14, 14, 4], but the model's input is [28, 28, 1]",
    );
}

/// eval and predict refuse wrongly shaped samples with the same check, saying what the data
/// are for, before the weights are even read.
#[test]
fn eval_and_predict_name_their_data_when_its_shape_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    write_npy_f32(&x, &[2, 32, 32, 3], &[0.0; 2 * 3072]).unwrap();
    write_npy_f32(&y, &[2], &[0.0, 1.0]).unwrap();
    let m = s(&model("mnist_cnn.yaml"));
    let w = s(&dir.path().join("no-weights.safetensors"));
    let shapes = "has samples of shape [32, 32, 3], but the model's input is [28, 28, 1]";
    cnnc(["eval", &m, "--weights", &w, "--x", &s(&x), "--y", &s(&y)]).assert_fails_with(&format!(
        "{} + {}: evaluation data {shapes}",
        x.display(),
        y.display()
    ));
    let out = dir.path().join("out.npy");
    cnnc(["predict", &m, "--weights", &w, "--input", &s(&x), "--output", &s(&out)])
        .assert_fails_with(&format!("{}: prediction data {shapes}", x.display()));
    assert_eq!(files_in(dir.path()), ["x.npy", "y.npy"]);
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

/// Outputs in a missing or unwritable directory are refused before training starts (the full
/// MNIST for five epochs would take minutes), and nothing is trained or written.
#[test]
fn outputs_that_cannot_be_written_are_refused_before_training() {
    let data = s(&support::root().join("data/mnist"));
    let mut cases = vec![
        (
            "--save",
            "/no/such/dir/w.safetensors".to_string(),
            "directory /no/such/dir does not exist",
        ),
        (
            "--plot",
            "/no/such/dir/c.svg".to_string(),
            "directory /no/such/dir does not exist",
        ),
    ];
    // sysfs takes no new files, even from root (a chmod-ed directory would not stop root).
    if cfg!(target_os = "linux") && Path::new("/sys").is_dir() {
        cases.push(("--save", "/sys/w.safetensors".into(), "cannot write in directory /sys"));
        cases.push(("--history", "/sys/h.csv".into(), "cannot write in directory /sys"));
    }
    for (flag, path, needle) in cases {
        let run = cnnc([
            "train",
            &s(&model("mnist_cnn.yaml")),
            "--data",
            &data,
            "--epochs",
            "5",
            flag,
            &path,
        ]);
        run.assert_fails_with(&format!("{flag} {path}: {needle}"));
        assert!(!run.stderr.contains("Epoch"), "no training: {}", run.stderr);
    }
}

/// Zero counts and absurd thread counts are refused by their parsers, for every command alike,
/// before anything runs or is written.
#[test]
fn zero_counts_and_absurd_thread_counts_are_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let m = s(&model("mnist_cnn.yaml"));
    let data = s(&support::root().join("data/mnist"));
    let x = dir.path().join("x.npy");
    write_npy_f32(&x, &[1, 28, 28, 1], &[0.0; 784]).unwrap();
    let (x, w) = (s(&x), s(&dir.path().join("w.safetensors")));
    let out = s(&dir.path().join("out"));
    let (m, data, x, w, out) = (m.as_str(), data.as_str(), x.as_str(), w.as_str(), out.as_str());
    let train = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["train", m, "--data", data, "--save", w];
        a.extend(extra);
        a.into_iter().map(String::from).collect()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            train(&["--batch-size", "0"]),
            "'--batch-size <BATCH_SIZE>': must be at least 1",
        ),
        (train(&["--epochs", "0"]), "'--epochs <EPOCHS>': must be at least 1"),
        (train(&["--steps", "0"]), "'--steps <STEPS>': must be at least 1"),
        (
            train(&["--learning-rate", "1e-50"]),
            "'--learning-rate <LEARNING_RATE>': 1e-50 is closer to 0 than f32's smallest positive value",
        ),
        (
            train(&["--momentum", "1e50"]),
            "'--momentum <MOMENTUM>': 1e50 is beyond f32's range",
        ),
        (train(&["--threads", "0"]), "'--threads <THREADS>': must be at least 1"),
        (
            train(&["--threads", "20000"]),
            "'--threads <THREADS>': at most 1024 threads are allowed",
        ),
        (
            ["eval", m, "--weights", w, "--data", data, "--batch-size", "0"]
                .map(String::from)
                .to_vec(),
            "'--batch-size <BATCH_SIZE>': must be at least 1",
        ),
        (
            ["eval", m, "--weights", w, "--data", data, "--threads", "5000"]
                .map(String::from)
                .to_vec(),
            "at most 1024 threads",
        ),
        (
            [
                "predict",
                m,
                "--weights",
                w,
                "--input",
                x,
                "--output",
                out,
                "--batch-size",
                "0",
            ]
            .map(String::from)
            .to_vec(),
            "'--batch-size <BATCH_SIZE>': must be at least 1",
        ),
        (
            ["summary", m, "--batch-size", "0"].map(String::from).to_vec(),
            "'--batch-size <BATCH_SIZE>': must be at least 1",
        ),
        (
            ["compile", m, "-o", out, "--batch-size", "0"]
                .map(String::from)
                .to_vec(),
            "'--batch-size <BATCH_SIZE>': must be at least 1",
        ),
        (
            ["compile", m, "-o", out, "--threads", "20000"]
                .map(String::from)
                .to_vec(),
            "'--threads <THREADS>': at most 1024 threads are allowed",
        ),
    ];
    for (args, needle) in cases {
        cnnc(&args).assert_fails_with(needle);
        assert_eq!(files_in(dir.path()), ["x.npy"], "nothing written by {args:?}");
    }
}

#[test]
fn a_model_whose_output_is_not_a_vector_cannot_train_but_has_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maps.yaml");
    std::fs::write(
        &path,
        "input: [28, 28, 1]\nlayers:\n  - conv2d: {filters: 2, kernel_size: 3}\n",
    )
    .unwrap();
    let expected = format!(
        "{}:3: the model's output (layer conv2d) is [26, 26, 2]; a classifier needs [classes]: add flatten and dense",
        path.display()
    );
    let data = s(&support::root().join("data/mnist"));
    cnnc([
        "train".to_string(),
        s(&path),
        "--data".into(),
        data,
        "--steps".into(),
        "1".into(),
    ])
    .assert_fails_with(&expected);
    cnnc(["summary".to_string(), s(&path), "--mode".into(), "training".into()]).assert_fails_with(&expected);
    let run = cnnc(["summary".to_string(), s(&path)]);
    run.assert_ok();
    assert!(run.stdout.contains("(None, 26, 26, 2)"), "{}", run.stdout);
}

#[test]
fn half_an_mnist_test_pair_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let mnist = support::root().join("data/mnist");
    for f in std::fs::read_dir(&mnist).unwrap() {
        let f = f.unwrap().file_name().to_string_lossy().into_owned();
        if f.starts_with("train-") || f.starts_with("t10k-images") {
            std::fs::copy(mnist.join(&f), dir.path().join(&f)).unwrap();
        }
    }
    let found = files_in(dir.path())
        .into_iter()
        .find(|f| f.starts_with("t10k-images"))
        .expect("data/mnist has test images");
    train_fails(
        &["--data".into(), s(dir.path())],
        &format!(
            "{}: {found} found but t10k-labels-idx1-ubyte[.gz] is missing",
            dir.path().display()
        ),
    );
}

#[cfg(unix)]
#[test]
fn an_endless_model_file_is_refused() {
    cnnc(["summary", "/dev/zero"]).assert_fails_with("/dev/zero: the model file is larger than 16777216 bytes");
}

#[test]
fn a_long_layer_name_is_refused_and_summary_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.yaml");
    let name = "a".repeat(65_530);
    std::fs::write(
        &path,
        format!("input: [4]\nlayers:\n  - dense: {{name: {name}, units: 2}}\n"),
    )
    .unwrap();
    cnnc(["summary".to_string(), s(&path)]).assert_fails_with(&format!(
        "{}:3:5: invalid layer name `{}...` (65530 characters): names are at most 255 characters long",
        path.display(),
        &name[..40]
    ));
}

/// Output into a pipe closed early (`cnnc summary … | head -1`) ends quietly, as `cat` does,
/// instead of panicking in `println!`.
#[cfg(unix)]
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(["summary", &s(&model("resnet18.yaml"))])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before the table is written
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

/// Outputs that would overwrite an input or each other are refused before any work, naming
/// both; the inputs are left as they were.
#[test]
fn outputs_may_not_overwrite_inputs_or_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    write_npy_f32(&x, &[2, 28, 28, 1], &[0.5; 2 * 784]).unwrap();
    write_npy_f32(&y, &[2], &[0.0, 1.0]).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(&x, data.join("x_train.npy")).unwrap();
    std::fs::copy(&y, data.join("y_train.npy")).unwrap();
    let before = |p: &Path| std::fs::read(p).unwrap();
    let (x_bytes, y_bytes) = (before(&x), before(&y));
    let m = s(&model("mnist_cnn.yaml"));
    // The same file spelt another way.
    let x_again = dir.path().join(".").join("x.npy");
    let train = |extra: &[String]| {
        let mut args = vec!["train".to_string(), m.clone(), "--steps".into(), "1".into()];
        args.extend(extra.iter().cloned());
        cnnc(&args)
    };
    let pair = ["--train-x".to_string(), s(&x), "--train-y".into(), s(&y)];
    let with =
        |more: &[&str]| -> Vec<String> { pair.iter().cloned().chain(more.iter().map(|m| m.to_string())).collect() };
    train(&with(&["--save", &s(&x_again)])).assert_fails_with(&format!(
        "--save {} would overwrite --train-x {}",
        x_again.display(),
        x.display()
    ));
    train(&with(&["--history", &s(&y)])).assert_fails_with(&format!(
        "--history {} would overwrite --train-y {}",
        y.display(),
        y.display()
    ));
    let curves = s(&dir.path().join("c.svg"));
    train(&with(&["--history", &curves, "--plot", &curves]))
        .assert_fails_with(&format!("--history {curves} and --plot {curves} are the same file"));
    train(&with(&["--save", &m])).assert_fails_with(&format!("--save {m} would overwrite the model {m}"));
    let in_data = data.join("y_train.npy");
    train(&["--data".into(), s(&data), "--save".into(), s(&in_data)]).assert_fails_with(&format!(
        "--save {} would overwrite a file of --data {}",
        in_data.display(),
        in_data.display()
    ));
    let predict = |out: &Path| {
        cnnc([
            "predict".to_string(),
            m.clone(),
            "--weights".into(),
            s(&y),
            "--input".into(),
            s(&x),
            "--output".into(),
            s(out),
        ])
    };
    predict(&x_again).assert_fails_with(&format!(
        "--output {} would overwrite --input {}",
        x_again.display(),
        x.display()
    ));
    predict(&y).assert_fails_with(&format!(
        "--output {} would overwrite --weights {}",
        y.display(),
        y.display()
    ));
    assert_eq!((before(&x), before(&y)), (x_bytes.clone(), y_bytes.clone()));
    assert_eq!(before(&data.join("y_train.npy")), y_bytes);
    assert_eq!(files_in(dir.path()), ["data", "x.npy", "y.npy"]);
}

/// Weights holding a NaN are refused by train --init-weights and eval --weights, naming the
/// tensor and the index of the value; nothing is trained or written.
#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    write_npy_f32(&x, &[2, 4, 4, 1], &[0.5; 32]).unwrap();
    write_npy_f32(&y, &[2], &[0.0, 1.0]).unwrap();
    let yaml = dir.path().join("m.yaml");
    std::fs::write(
        &yaml,
        "name: m\ninput: [4, 4, 1]\nlayers:\n  - flatten\n  - dense: {units: 2, activation: softmax}\n",
    )
    .unwrap();
    let spec = |name: &str, shape: &[usize]| cnnc_runtime::ParamSpec {
        name: name.into(),
        shape: shape.to_vec(),
        init: cnnc_runtime::Init::Zeros,
        trainable: true,
    };
    let mut kernel = vec![0.1f32; 32];
    kernel[7] = f32::NAN;
    let w = dir.path().join("w.safetensors");
    cnnc_runtime::weights::save_weights(
        &w,
        &[spec("dense.kernel", &[16, 2]), spec("dense.bias", &[2])],
        &[
            cnnc_runtime::Tensor::from_vec(&[16, 2], kernel).unwrap(),
            cnnc_runtime::Tensor::zeros(&[2]),
        ],
    )
    .unwrap();
    let needle = format!(
        "{}: tensor dense.kernel holds NaN at index 7 (position [3, 1] of shape [16, 2])",
        w.display()
    );
    let (m, xs, ys, ws) = (s(&yaml), s(&x), s(&y), s(&w));
    let save = s(&dir.path().join("out.safetensors"));
    let train = cnnc([
        "train",
        &m,
        "--train-x",
        &xs,
        "--train-y",
        &ys,
        "--init-weights",
        &ws,
        "--save",
        &save,
    ]);
    train.assert_fails_with(&needle);
    assert!(!train.stderr.contains("Epoch"), "{}", train.stderr);
    cnnc(["eval", &m, "--weights", &ws, "--x", &xs, "--y", &ys]).assert_fails_with(&needle);
    // Before any backend is built: the native backend's cache stays empty.
    let cache = tempfile::tempdir().unwrap();
    let native = std::process::Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(["predict", &m, "--weights", &ws, "--input", &xs, "--backend", "native"])
        .args(["--output", &s(&dir.path().join("p.npy"))])
        .env("CNNC_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&native.stderr);
    assert!(!native.status.success() && stderr.contains(&needle), "{stderr}");
    assert!(files_in(cache.path()).is_empty(), "built: {:?}", files_in(cache.path()));
    assert_eq!(files_in(dir.path()), ["m.yaml", "w.safetensors", "x.npy", "y.npy"]);
}
