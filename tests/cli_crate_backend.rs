//! `--backend native` through the command line on mnist_cnn and a small slice of the shipped
//! MNIST: `train` builds the generated crate into `$CNNC_CACHE_DIR` and says so with its build
//! time, a second run says `cached`, and `predict` agrees with the kernels backend within
//! `Tolerance::KERNEL`.

mod support;

use std::path::Path;
use std::process::Command;

use cnnc_compiler::tolerance::Tolerance;
use cnnc_runtime::data::{load_mnist_dir, read_npy, write_npy_f32, NpyValues};
use support::{model, root, Run};

/// `cnnc` with the cache in `cache`.
fn cnnc(cache: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .env("CNNC_CACHE_DIR", cache)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("cnnc runs");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn predictions(path: &Path) -> Vec<f32> {
    match read_npy(path).unwrap().values {
        NpyValues::F32(v) => v,
        _ => panic!("predictions must be float32"),
    }
}

#[test]
fn train_and_predict_with_the_crate_backend_build_once_then_hit_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, data) = (dir.path().join("cache"), dir.path().join("mnist"));
    std::fs::create_dir(&data).unwrap();
    // Multiples of the batch: one library (training, batch 32) serves the whole run.
    let (train, test) = load_mnist_dir(&root().join("data/mnist")).unwrap();
    let test = test.expect("the shipped MNIST has a test set");
    for (d, n, x, y) in [
        (&train, 64, "x_train.npy", "y_train.npy"),
        (&test, 32, "x_test.npy", "y_test.npy"),
    ] {
        write_npy_f32(&data.join(x), &[n, 28, 28, 1], &d.x[..n * 784]).unwrap();
        write_npy_f32(&data.join(y), &[n], &d.y[..n]).unwrap();
    }
    let weights = dir.path().join("w.safetensors");
    let mnist = model("mnist_cnn.yaml");
    let args = [
        "train",
        mnist.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--batch-size",
        "32",
        "--validation-split",
        "0",
        "--steps",
        "2",
        "--backend",
        "native",
        "--save",
        weights.to_str().unwrap(),
    ];
    let first = cnnc(&cache, &args);
    first.assert_ok();
    assert!(
        first.stderr.contains("native backend (") && first.stderr.contains("cargo built 1 of its 1 library"),
        "the first run builds and says so:\n{}",
        first.stderr
    );
    // `crate`, the backend's older name, still selects it.
    let args: Vec<&str> = args.iter().map(|&a| if a == "native" { "crate" } else { a }).collect();
    let second = cnnc(&cache, &args);
    second.assert_ok();
    assert!(
        second.stderr.contains("s to build, cached)"),
        "the second run hits the cache:\n{}",
        second.stderr
    );

    // A batch of 5: an inference library of its own.
    let (input, out_native, out_kernels) = (
        dir.path().join("x.npy"),
        dir.path().join("c.npy"),
        dir.path().join("n.npy"),
    );
    write_npy_f32(&input, &[5, 28, 28, 1], &test.x[..5 * 784]).unwrap();
    for (backend, out) in [("native", &out_native), ("kernels", &out_kernels)] {
        let run = cnnc(
            &cache,
            &[
                "predict",
                mnist.to_str().unwrap(),
                "--weights",
                weights.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--backend",
                backend,
            ],
        );
        run.assert_ok();
    }
    Tolerance::KERNEL.assert_close(
        "native (generated crate) vs kernels predictions",
        &predictions(&out_native),
        &predictions(&out_kernels),
    );
}
