//! A batch too large for the machine's memory: a clear error naming the graph, the batch and
//! the size, and a non-zero exit (not the allocator's abort). Linux: the limit is `ulimit -v`.

mod support;

use std::process::Command;

use support::{model, root};

#[test]
#[cfg(target_os = "linux")]
fn an_arena_too_large_for_memory_is_an_error() {
    // mnist_cnn's training arena at batch 60,000 is 7.7 GiB; the process may map 4 GiB.
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -v 4000000 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_cnnc"))
        .args(["train", &model("mnist_cnn.yaml").to_string_lossy(), "--data"])
        .arg(root().join("data/mnist"))
        .args(["--batch-size", "60000", "--steps", "1", "--threads", "1"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("sh runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    for needle in [
        "error:",
        "'mnist_cnn' at 60000 samples",
        "an arena of 7.71 GiB",
        "smaller batch size",
    ] {
        assert!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
    }
}
