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

/// Loads `dir`, or the `x`/`y` pair, for a model with `classes` outputs and per-sample input
/// `input` (checked here so the message names the data files).
pub fn load(
    dir: Option<&Path>,
    pair: Option<(&PathBuf, &PathBuf)>,
    classes: usize,
    input: &[usize],
) -> Result<Loaded, CliError> {
    let loaded = match (dir, pair) {
        (Some(dir), _) => {
            if !dir.is_dir() {
                return Err(CliError::new(format!("--data {}: no such directory", dir.display())));
            }
            let (train, test) = load_dataset_dir(dir).or_cli()?;
            Loaded {
                train,
                test,
                source: dir.display().to_string(),
            }
        }
        (None, Some((x, y))) => Loaded {
            train: load_npy_pair(x, y, Some(classes)).or_cli()?,
            test: None,
            source: format!("{} + {}", x.display(), y.display()),
        },
        (None, None) => {
            return Err(CliError::new(
                "no data: pass --data DIR (MNIST, Fashion-MNIST or CIFAR-10 files) or a pair of .npy files",
            ))
        }
    };
    for (what, d) in
        std::iter::once(("training data", &loaded.train)).chain(loaded.test.iter().map(|t| ("test data", t)))
    {
        check(&loaded.source, what, d, classes, input)?;
    }
    Ok(loaded)
}

/// Refuses data whose samples or labels do not fit the model, naming the source.
pub fn check(source: &str, what: &str, d: &Dataset, classes: usize, input: &[usize]) -> Result<(), CliError> {
    let want: usize = input.iter().product();
    if d.sample_len() != want {
        return Err(CliError::new(format!(
            "{source}: {what} has samples of shape {:?}, but the model's input is {input:?}",
            d.sample_shape
        )));
    }
    if let Some((i, v)) = cnnc_runtime::data::first_bad_label(&d.y, classes) {
        return Err(CliError::new(format!(
            "{source}: {what} sample {i} has label {v}, but the model has {classes} outputs (labels 0..{})",
            classes - 1
        )));
    }
    Ok(())
}
