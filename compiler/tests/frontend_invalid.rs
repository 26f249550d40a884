//! Every broken model in `models/invalid/` fails with the error its `.expected` file describes:
//! each non-empty line of `foo.expected` must appear in the message that `foo.yaml` produces
//! (loading, then lowering at batch 1 in inference and training mode).

use std::path::{Path, PathBuf};

use cnnc_compiler::error::CompileError;
use cnnc_compiler::ir::Mode;
use cnnc_compiler::lower::lower;
use cnnc_compiler::spec::load_model;

fn invalid_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/invalid")
}

/// The first error the model produces, or `None` if it compiles.
fn first_error(path: &Path) -> Option<CompileError> {
    let spec = match load_model(path) {
        Ok(s) => s,
        Err(e) => return Some(e),
    };
    [Mode::Inference, Mode::Training]
        .into_iter()
        .find_map(|mode| lower(&spec, 1, mode).err())
}

#[test]
fn every_invalid_model_gives_its_expected_error() {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(invalid_dir())
        .expect("models/invalid exists")
        .map(|e| e.expect("readable entry").path())
        .collect();
    entries.sort();
    let yamls: Vec<&PathBuf> = entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    let mut failures = Vec::new();
    for p in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "expected"))
    {
        if !p.with_extension("yaml").exists() {
            failures.push(format!("{}: no matching .yaml", p.display()));
        }
    }
    for yaml in &yamls {
        let name = yaml
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let Ok(expected) = std::fs::read_to_string(yaml.with_extension("expected")) else {
            failures.push(format!("{name}: no .expected file beside it"));
            continue;
        };
        let Some(err) = first_error(yaml) else {
            failures.push(format!("{name}: compiled without error"));
            continue;
        };
        let msg = err.to_string();
        let missing: Vec<&str> = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .filter(|l| !msg.contains(l))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{name}:\n    actual:  {msg}\n    missing: {}",
                missing.join("\n             ")
            ));
        }
    }
    assert!(yamls.len() >= 12, "only {} invalid models", yamls.len());
    assert!(
        failures.is_empty(),
        "{} of {} invalid models:\n{}",
        failures.len(),
        yamls.len(),
        failures.join("\n")
    );
}
