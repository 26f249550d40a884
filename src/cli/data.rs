//! Where samples come from: a dataset directory (MNIST / Fashion-MNIST IDX, CIFAR-10 binary,
//! `x_train.npy` + `y_train.npy`) or an explicit pair of `.npy` files.

use std::path::{Path, PathBuf};

use cnnc_runtime::data::{load_dataset_dir, load_npy_pair, Dataset};

use super::error::{CliError, OrCli};

/// A training set and, when the source has one, its test set.
pub struct Loaded {
    pub train: Dataset,
    pub test: Option<Dataset>,
    /// Shown to the user: where the data came from.
    pub source: String,
}

/// Loads `dir`, or the `x`/`y` pair for a model with `classes` outputs. The caller checks the
/// sets it uses against the model ([`check`]), naming them for what they are used for.
pub fn load(dir: Option<&Path>, pair: Option<(&PathBuf, &PathBuf)>, classes: usize) -> Result<Loaded, CliError> {
    match (dir, pair) {
        (Some(dir), _) => {
            if !dir.is_dir() {
                return Err(CliError::new(format!("--data {}: no such directory", dir.display())));
            }
            let (train, test) = load_dataset_dir(dir).or_cli()?;
            Ok(Loaded {
                train,
                test,
                source: dir.display().to_string(),
            })
        }
        (None, Some((x, y))) => Ok(Loaded {
            train: load_npy_pair(x, y, Some(classes)).or_cli()?,
            test: None,
            source: format!("{} + {}", x.display(), y.display()),
        }),
        (None, None) => Err(CliError::new(
            "no data: pass --data DIR (MNIST, Fashion-MNIST or CIFAR-10 files) or a pair of .npy files",
        )),
    }
}

/// Refuses data whose samples or labels do not fit the model, naming the source and what the
/// data are for (`training data`, `evaluation data`...).
pub fn check(source: &str, what: &str, d: &Dataset, classes: usize, input: &[usize]) -> Result<(), CliError> {
    check_sample_shape(source, what, &d.sample_shape, input)?;
    if let Some((i, v)) = cnnc_runtime::data::first_bad_label(&d.y, classes) {
        return Err(CliError::new(format!(
            "{source}: {what} sample {i} has label {v}, but the model has {classes} outputs (labels 0..{})",
            classes - 1
        )));
    }
    Ok(())
}

/// Refuses samples shaped unlike the model's input, for train, eval and predict alike (the
/// backends only compare sizes, so a [28, 28, 1] image would silently feed a [14, 14, 4]
/// input). A flat input `[k]` takes samples of any shape holding k values (MNIST's 28x28
/// images for `[784]`); trailing axes of 1 do not count (`.npy` images `[n, H, W]` are read
/// as `[n, H, W, 1]`).
pub fn check_sample_shape(source: &str, what: &str, sample: &[usize], input: &[usize]) -> Result<(), CliError> {
    let size = |s: &[usize]| s.iter().product::<usize>();
    let fits = match input {
        [k] => size(sample) == *k,
        _ => trim_ones(sample) == trim_ones(input),
    };
    if fits {
        return Ok(());
    }
    Err(CliError::new(format!(
        "{source}: {what} has samples of shape {sample:?}, but the model's input is {input:?}"
    )))
}

/// `shape` without its trailing axes of 1.
fn trim_ones(shape: &[usize]) -> &[usize] {
    let end = shape.iter().rposition(|&d| d != 1).map_or(0, |i| i + 1);
    &shape[..end]
}
