//! One entry point for a dataset directory: recognises MNIST-style IDX files, CIFAR-10
//! binary batches, or NumPy arrays named as in Keras's `mnist.npz` (`x_train.npy`,
//! `y_train.npy`, optionally `x_test.npy`, `y_test.npy`).

use std::path::{Path, PathBuf};

use super::idx::{names_of, MNIST_STEMS};
use super::{load_cifar10_dir, load_mnist_dir, load_npy_pair, DataError, Dataset};

/// The files of `dir` that [`load_dataset_dir`] may read, those that exist: a command writing
/// its outputs refuses to overwrite one of them.
pub fn dataset_files(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<String> = [
        "x_train.npy",
        "y_train.npy",
        "x_test.npy",
        "y_test.npy",
        "test_batch.bin",
    ]
    .map(String::from)
    .to_vec();
    names.extend((1..=5).map(|i| format!("data_batch_{i}.bin")));
    names.extend(MNIST_STEMS.iter().flat_map(|s| names_of(s)));
    [dir.to_path_buf(), dir.join("cifar-10-batches-bin")]
        .iter()
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .filter(|p| p.is_file())
        .collect()
}

/// Loads the training set (and the test set when present) from `dir`, whatever its format.
pub fn load_dataset_dir(dir: &Path) -> Result<(Dataset, Option<Dataset>), DataError> {
    let has = |name: &str| dir.join(name).is_file();
    for (x, y) in [("x_train.npy", "y_train.npy"), ("x_test.npy", "y_test.npy")] {
        check_pair(dir, x, y, has(x), has(y))?;
    }
    if has("x_train.npy") {
        let train = load_npy_pair(&dir.join("x_train.npy"), &dir.join("y_train.npy"), None)?;
        let test = if has("x_test.npy") {
            let test = load_npy_pair(&dir.join("x_test.npy"), &dir.join("y_test.npy"), Some(train.classes))?;
            if test.sample_shape != train.sample_shape {
                return Err(DataError::SampleShapeMismatch {
                    path: dir.join("x_test.npy"),
                    expected: train.sample_shape,
                    found: test.sample_shape,
                });
            }
            Some(test)
        } else {
            None
        };
        return Ok((train, test));
    }
    if has("data_batch_1.bin") || dir.join("cifar-10-batches-bin").is_dir() {
        return load_cifar10_dir(dir);
    }
    match load_mnist_dir(dir) {
        Err(DataError::MissingFiles { dir, .. }) => Err(DataError::MissingFiles {
            dir,
            expected: "MNIST-style IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]), \
                       CIFAR-10 batches (data_batch_1.bin .. data_batch_5.bin) or NumPy arrays \
                       (x_train.npy, y_train.npy)"
                .into(),
        }),
        other => other,
    }
}

/// Half of a NumPy pair names the missing file rather than every format a directory may hold
/// (or, for the test pair, is not silently ignored).
fn check_pair(dir: &Path, x: &str, y: &str, has_x: bool, has_y: bool) -> Result<(), DataError> {
    let half = |found: &str, missing: &str| DataError::IncompletePair {
        dir: dir.to_path_buf(),
        found: found.into(),
        missing: missing.into(),
    };
    match (has_x, has_y) {
        (true, false) => Err(half(x, y)),
        (false, true) => Err(half(y, x)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_files_lists_the_files_a_load_may_read() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&nested).unwrap();
        for p in [
            dir.path().join("x_train.npy"),
            dir.path().join("train-images.idx3-ubyte.gz"),
            dir.path().join("notes.txt"),
            nested.join("data_batch_3.bin"),
        ] {
            std::fs::write(p, b"").unwrap();
        }
        let mut found = dataset_files(dir.path());
        found.sort();
        assert_eq!(
            found,
            [
                nested.join("data_batch_3.bin"),
                dir.path().join("train-images.idx3-ubyte.gz"),
                dir.path().join("x_train.npy"),
            ]
        );
    }

    #[test]
    fn half_a_numpy_pair_names_the_missing_file() {
        for (present, missing) in [
            ("x_train.npy", "y_train.npy"),
            ("y_train.npy", "x_train.npy"),
            ("x_test.npy", "y_test.npy"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(present), b"").unwrap();
            let err = load_dataset_dir(dir.path()).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("{}: {present} found but {missing} is missing", dir.path().display())
            );
        }
    }
}
