//! `cnnc compile` from the command line: what it writes and what it refuses. Building and
//! running the generated crates is tested in compiler/tests/codegen_build.rs.

mod support;

use support::{cnnc, files_in, model};

fn s(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn writes_a_crate_and_regenerates_it_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mnist_rs");
    let args = |batch: &str| {
        vec![
            "compile".to_string(),
            s(&model("mnist_cnn.yaml")),
            "-o".into(),
            s(&out),
            "--batch-size".into(),
            batch.into(),
        ]
    };
    let run = cnnc(args("4"));
    run.assert_ok();
    assert!(run.stdout.contains("applies the optimiser: adam"), "{}", run.stdout);
    let files = files_in(&out);
    for f in ["Cargo.toml", "src", "examples"] {
        assert!(files.iter().any(|x| x == f), "{f} in {files:?}");
    }
    let lib = std::fs::read_to_string(out.join("src/lib.rs")).unwrap();
    assert!(lib.contains("pub const BATCH: usize = 4;"), "batch constant");
    assert!(lib.contains("pub fn train_step"), "a training crate by default");
    // The model's optimiser (mnist_cnn: adam, Keras's defaults) is applied in the crate.
    assert!(
        lib.contains("pub const OPTIMIZER: &str = \"adam lr=0.001"),
        "the model's optimiser"
    );
    assert!(lib.contains("pub fn gradients"), "gradients without the update");
    // The directory holds a crate cnnc wrote: regenerating into it is allowed.
    cnnc(args("2")).assert_ok();
    let lib = std::fs::read_to_string(out.join("src/lib.rs")).unwrap();
    assert!(lib.contains("pub const BATCH: usize = 2;"));
}

#[test]
fn refuses_a_foreign_non_empty_directory_and_a_zero_batch() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let run = cnnc([
        "compile".to_string(),
        s(&model("lenet5.yaml")),
        "-o".into(),
        s(dir.path()),
    ]);
    run.assert_fails_with(&s(dir.path()));
    assert_eq!(files_in(dir.path()), ["notes.txt"]);
    let out = dir.path().join("x");
    let run = cnnc([
        "compile".to_string(),
        s(&model("lenet5.yaml")),
        "-o".into(),
        s(&out),
        "--batch-size".into(),
        "0".into(),
    ]);
    run.assert_fails_with("batch");
    assert!(!out.exists());
}

#[test]
fn no_std_crate_is_inference_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lenet_nostd");
    cnnc([
        "compile".to_string(),
        s(&model("lenet5.yaml")),
        "-o".into(),
        s(&out),
        "--no-std".into(),
    ])
    .assert_ok();
    let lib = std::fs::read_to_string(out.join("src/lib.rs")).unwrap();
    assert!(lib.contains("#![no_std]"));
    assert!(!lib.contains("pub fn train_step"));
}

#[test]
fn threads_split_the_kernels_of_a_std_crate_and_are_refused_for_no_std() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mnist_threads");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "compile".to_string(),
            s(&model("mnist_cnn.yaml")),
            "-o".into(),
            s(&out),
            "--batch-size".into(),
            "64".into(),
            "--threads".into(),
            "2".into(),
        ];
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    cnnc(args(&[])).assert_ok();
    let lib = std::fs::read_to_string(out.join("src/lib.rs")).unwrap();
    assert!(lib.contains("run_shares(shares"), "shares on the crate's threads");
    assert!(lib.contains("threads=2 split=samples"), "the schedule says so");
    assert!(lib.contains("on 2 threads"), "the crate docs say so");
    let nostd = dir.path().join("nostd");
    let run = cnnc([
        "compile".to_string(),
        s(&model("lenet5.yaml")),
        "-o".into(),
        s(&nostd),
        "--no-std".into(),
        "--threads".into(),
        "2".into(),
    ]);
    run.assert_fails_with("--no-std crates run on one thread");
    assert!(!nostd.exists());
    let run = cnnc([
        "compile".to_string(),
        s(&model("lenet5.yaml")),
        "-o".into(),
        s(&nostd),
        "--threads".into(),
        "0".into(),
    ]);
    run.assert_fails_with("'--threads <THREADS>': must be at least 1");
    assert!(!nostd.exists());
}

#[test]
fn a_model_named_after_a_rust_keyword_gets_a_usable_crate_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kw.yaml");
    std::fs::write(&path, "name: fn\ninput: [16]\nlayers:\n  - dense: {units: 2}\n").unwrap();
    let out = dir.path().join("crate");
    let run = cnnc(["compile".to_string(), s(&path), "-o".into(), s(&out)]);
    run.assert_ok();
    assert!(run.stdout.contains("Wrote crate `model_fn`"), "{}", run.stdout);
    let toml = std::fs::read_to_string(out.join("Cargo.toml")).unwrap();
    assert!(toml.contains("name = \"model_fn\""), "{toml}");
    let check = std::fs::read_to_string(out.join("examples/check.rs")).unwrap();
    assert!(check.contains("use model_fn::*;"), "{check}");
}

/// An output path that cannot be a directory (under a regular file) is refused by name, and
/// nothing is left behind: no crate, no temporary directory beside it.
#[test]
fn an_unwritable_output_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file.txt");
    std::fs::write(&file, "mine").unwrap();
    for out in [file.join("crate"), file.join("a/b/crate")] {
        let run = cnnc(["compile".to_string(), s(&model("lenet5.yaml")), "-o".into(), s(&out)]);
        run.assert_fails_with(&s(&file));
        assert_eq!(files_in(dir.path()), ["file.txt"]);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    }
}

/// Regenerating swaps a whole new crate into place: what cnnc did not write (a `target/` from
/// building it, the user's files) is kept, and no temporary or old directory is left beside it.
#[test]
fn regenerating_keeps_the_build_directory_and_user_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lenet");
    let args = || ["compile".to_string(), s(&model("lenet5.yaml")), "-o".into(), s(&out)];
    cnnc(args()).assert_ok();
    std::fs::create_dir_all(out.join("target/release")).unwrap();
    std::fs::write(out.join("target/release/built"), "x").unwrap();
    std::fs::write(out.join("src/mine.rs"), "user").unwrap();
    std::fs::write(out.join("Cargo.lock"), "lock").unwrap();
    cnnc(args()).assert_ok();
    assert_eq!(files_in(dir.path()), ["lenet"]);
    assert!(out.join("target/release/built").is_file());
    assert_eq!(std::fs::read_to_string(out.join("src/mine.rs")).unwrap(), "user");
    assert!(out.join("Cargo.lock").is_file() && out.join("src/lib.rs").is_file());
}
