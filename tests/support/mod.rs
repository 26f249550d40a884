//! Runs the `cnnc` binary the way a user does and inspects what it leaves behind.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (models/, data/).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn model(name: &str) -> PathBuf {
    root().join("models").join(name)
}

/// What one `cnnc` run printed and how it ended.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub fn cnnc<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out: Output = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("cnnc runs");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    /// Asserts a clean failure: non-zero exit, one `error:` line containing `needle`, no panic.
    pub fn assert_fails_with(&self, needle: &str) {
        assert!(
            !self.ok,
            "expected failure, got success:\n{}{}",
            self.stdout, self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "panicked:\n{}", self.stderr);
        assert!(
            self.stderr.contains("error:") && self.stderr.contains(needle),
            "expected an error mentioning {needle:?}, got:\n{}",
            self.stderr
        );
    }

    pub fn assert_ok(&self) {
        assert!(self.ok, "cnnc failed:\n{}{}", self.stdout, self.stderr);
    }
}

/// The names of the files in `dir`, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
