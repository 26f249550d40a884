//! One entry point for a dataset directory: recognises MNIST-style IDX files, CIFAR-10
//! binary batches, or NumPy arrays named as in Keras's `mnist.npz` (`x_train.npy`,
//! `y_train.npy`, optionally `x_test.npy`, `y_test.npy`).

use std::path::Path;

use super::{load_cifar10_dir, load_mnist_dir, load_npy_pair, DataError, Dataset};

/// Loads the training set (and the test set when present) from `dir`, whatever its format.
pub fn load_dataset_dir(dir: &Path) -> Result<(Dataset, Option<Dataset>), DataError> {
    let has = |name: &str| dir.join(name).is_file();
    if has("x_train.npy") && has("y_train.npy") {
        let train = load_npy_pair(&dir.join("x_train.npy"), &dir.join("y_train.npy"), None)?;
        let test = if has("x_test.npy") && has("y_test.npy") {
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
