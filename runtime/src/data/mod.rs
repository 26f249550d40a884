//! Datasets: MNIST / Fashion-MNIST (IDX), CIFAR-10 (binary batches) and NumPy `.npy` loaders
//! producing one in-memory [`Dataset`] (`[n, H, W, C]` f32 samples, class ids), plus the
//! validation split, per-epoch shuffling, one-hot encoding and crash-safe file writing.

mod atomic;
mod bounded;
mod cifar;
mod dataset;
mod detect;
mod error;
mod gunzip;
mod idx;
mod npy;

pub use atomic::{write_atomic, write_atomic_with};
pub use bounded::{read_capped, read_to_end_capped};
pub use cifar::{load_cifar10_batch, load_cifar10_dir, CIFAR10_CLASSES};
pub use dataset::{epoch_order, first_bad_label, one_hot, validation_split_at, Dataset};
pub use detect::{dataset_files, load_dataset_dir};
pub use error::DataError;
pub use gunzip::{read_maybe_gzip, read_maybe_gzip_capped, MAX_DATASET_FILE_BYTES};
pub use idx::{load_idx_pair, load_mnist_dir, read_idx, Idx, MNIST_CLASSES};
pub use npy::{
    load_npy_images, load_npy_labels, load_npy_pair, read_npy, write_npy_f32, NpyArray, NpyValues, MAX_NPY_BYTES,
};
