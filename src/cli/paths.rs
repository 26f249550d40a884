//! Checks on the files a command will write, made before any work so that a bad path costs
//! nothing: the destination can be written, and writing it loses no input nor another output.

use std::path::{Path, PathBuf};

use super::error::CliError;

/// Refuses an output path that cannot be written, before any work is done: its directory must
/// exist and take new files (outputs are written to a temporary file there, then renamed),
/// and the path must not be a directory.
pub fn check_output_path(flag: &str, path: &Path) -> Result<(), CliError> {
    if path.is_dir() {
        return Err(CliError::new(format!("{flag} {}: is a directory", path.display())));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(CliError::new(format!(
            "{flag} {}: directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    probe_writable(dir).map_err(|e| {
        CliError::new(format!(
            "{flag} {}: cannot write in directory {}: {e}",
            path.display(),
            dir.display()
        ))
    })
}

/// Creates and removes a file in `dir`: the one reliable test that it takes new files
/// (permissions, read-only mounts, ACLs and special file systems all have their say).
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".cnnc-probe.{}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create_new(true).open(&probe)?;
    std::fs::remove_file(&probe)
}

/// A path as the file system resolves it, so that `w.npy`, `./w.npy` and a symlink to it
/// compare equal: the file canonicalised when it exists, else its canonicalised directory
/// joined with its name, else the path as given.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (dir.canonicalize(), path.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => path.to_path_buf(),
    }
}

/// A path named on the command line, with the flag that named it.
pub type Named<'a> = (&'a str, &'a Path);

/// Refuses, before any work, an output that would overwrite an input or another output,
/// naming both. `may_replace` lists (output flag, input flag) pairs that may be the same file
/// (`--save` over `--init-weights`: resuming in place is legitimate, and the weights are
/// replaced atomically after training).
pub fn check_no_clobber(outputs: &[Named], inputs: &[Named], may_replace: &[(&str, &str)]) -> Result<(), CliError> {
    for (i, &(flag, out)) in outputs.iter().enumerate() {
        let target = resolved(out);
        for &(other, earlier) in &outputs[..i] {
            if resolved(earlier) == target {
                return Err(CliError::new(format!(
                    "{other} {} and {flag} {} are the same file",
                    earlier.display(),
                    out.display()
                )));
            }
        }
        for &(input_flag, input) in inputs {
            if resolved(input) == target && !may_replace.contains(&(flag, input_flag)) {
                return Err(CliError::new(format!(
                    "{flag} {} would overwrite {input_flag} {}",
                    out.display(),
                    input.display()
                )));
            }
        }
    }
    Ok(())
}
