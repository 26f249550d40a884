//! IDX (MNIST / Fashion-MNIST) files written in the real format, raw and gzipped, read back;
//! plus corrupt, truncated and missing files.

mod support;

use cnnc_runtime::data::{load_dataset_dir, load_idx_pair, load_mnist_dir, read_idx, DataError};
use support::{gzip, idx_bytes, write};
use tempfile::TempDir;

/// Three 2×2 images with pixel values 0..12 and labels 7, 0, 9.
fn tiny_mnist(dir: &TempDir, gz: bool, prefix: &str) {
    let images = idx_bytes(&[3, 2, 2], &(0u8..12).map(|v| v * 20).collect::<Vec<_>>());
    let labels = idx_bytes(&[3], &[7, 0, 9]);
    let (images, labels, ext) = if gz {
        (gzip(&images), gzip(&labels), ".gz")
    } else {
        (images, labels, "")
    };
    write(&dir.path().join(format!("{prefix}-images-idx3-ubyte{ext}")), &images);
    write(&dir.path().join(format!("{prefix}-labels-idx1-ubyte{ext}")), &labels);
}

#[test]
fn reads_raw_and_gzipped_files_alike() {
    for gz in [false, true] {
        let dir = TempDir::new().unwrap();
        tiny_mnist(&dir, gz, "train");
        let (train, test) = load_mnist_dir(dir.path()).unwrap();
        assert!(test.is_none());
        assert_eq!(train.n, 3);
        assert_eq!(train.sample_shape, vec![2, 2, 1]);
        assert_eq!(train.classes, 10);
        assert_eq!(train.y, vec![7.0, 0.0, 9.0]);
        let expected: Vec<f32> = (0u8..12).map(|v| (v * 20) as f32 / 255.0).collect();
        assert_eq!(train.x, expected, "pixels scaled by 1/255 (gz = {gz})");
    }
}

#[test]
fn gzip_is_detected_by_magic_not_by_name() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("labels-without-gz-suffix");
    write(&path, &gzip(&idx_bytes(&[2], &[1, 2])));
    assert_eq!(read_idx(&path).unwrap().data, vec![1, 2]);
}

#[test]
fn loads_the_test_set_when_present() {
    let dir = TempDir::new().unwrap();
    tiny_mnist(&dir, true, "train");
    tiny_mnist(&dir, false, "t10k");
    let (_, test) = load_mnist_dir(dir.path()).unwrap();
    assert_eq!(test.unwrap().n, 3);
}

#[test]
fn missing_files_name_the_directory_and_the_expected_names() {
    let dir = TempDir::new().unwrap();
    let msg = load_mnist_dir(dir.path()).unwrap_err().to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("train-images-idx3-ubyte[.gz]"), "{msg}");
    assert!(msg.contains("train-labels-idx1-ubyte[.gz]"), "{msg}");

    // Half a test set is an error too, not silently ignored.
    tiny_mnist(&dir, false, "train");
    write(
        &dir.path().join("t10k-images-idx3-ubyte"),
        &idx_bytes(&[1, 2, 2], &[0; 4]),
    );
    let err = load_mnist_dir(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::IncompletePair { .. }), "{err}");
    // The dataset-directory entry point keeps that message rather than listing every format.
    let msg = load_dataset_dir(dir.path()).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: t10k-images-idx3-ubyte found but t10k-labels-idx1-ubyte[.gz] is missing",
            dir.path().display()
        )
    );
}

#[test]
fn half_a_training_pair_names_the_missing_file() {
    let dir = TempDir::new().unwrap();
    write(
        &dir.path().join("train-images-idx3-ubyte.gz"),
        &gzip(&idx_bytes(&[1, 2, 2], &[0; 4])),
    );
    let msg = load_dataset_dir(dir.path()).unwrap_err().to_string();
    assert!(
        msg.ends_with("train-images-idx3-ubyte.gz found but train-labels-idx1-ubyte[.gz] is missing"),
        "{msg}"
    );
}

#[test]
fn an_endless_or_oversized_idx_is_refused_without_reading_it_all() {
    let dir = TempDir::new().unwrap();
    // Dimensions asking for more than a dataset file may hold.
    let path = dir.path().join("huge");
    write(&path, &[0, 0, 0x08, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 1, 2, 3]);
    let msg = read_idx(&path).unwrap_err().to_string();
    assert!(msg.contains("huge") && msg.contains("truncated"), "{msg}");
    // A gzip stream whose content goes on past what its header declares.
    let path = dir.path().join("long.gz");
    let mut bytes = idx_bytes(&[4], &[1, 2, 3, 4]);
    bytes.extend(std::iter::repeat_n(0u8, 1 << 20));
    write(&path, &gzip(&bytes));
    let msg = read_idx(&path).unwrap_err().to_string();
    assert!(msg.contains("long.gz") && msg.contains("trailing bytes"), "{msg}");
}

#[test]
fn truncated_data_is_an_error_naming_the_file() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("train-images-idx3-ubyte");
    let mut bytes = idx_bytes(&[3, 2, 2], &[0; 12]);
    bytes.truncate(bytes.len() - 1);
    write(&path, &bytes);
    let msg = read_idx(&path).unwrap_err().to_string();
    assert!(
        msg.contains("train-images-idx3-ubyte") && msg.contains("truncated"),
        "{msg}"
    );
    assert!(msg.contains("12") && msg.contains("11"), "{msg}");
}

#[test]
fn truncated_gzip_stream_is_an_error() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("x.gz");
    let gz = gzip(&idx_bytes(&[100], &[3; 100]));
    write(&path, &gz[..gz.len() / 2]);
    assert!(matches!(read_idx(&path), Err(DataError::Gzip { .. })));
}

#[test]
fn bad_headers_are_errors() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("f");
    let cases: [(&[u8], &str); 5] = [
        (b"", "too short"),
        (b"PK\x03\x04 not idx at all", "not an IDX file"),
        (&[0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0], "not supported"),
        (&[0, 0, 0x08, 3, 0, 0, 0, 1], "truncated IDX header"),
        (
            &[0, 0, 0x08, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            "truncated",
        ),
    ];
    for (bytes, needle) in cases {
        write(&path, bytes);
        let msg = read_idx(&path).unwrap_err().to_string();
        assert!(
            msg.contains(needle) && msg.contains(&path.display().to_string()),
            "{needle}: {msg}"
        );
    }
}

#[test]
fn label_out_of_range_names_file_index_and_value() {
    let dir = TempDir::new().unwrap();
    let (images, labels) = (dir.path().join("i"), dir.path().join("l"));
    write(&images, &idx_bytes(&[3, 1, 1], &[0, 1, 2]));
    write(&labels, &idx_bytes(&[3], &[1, 12, 3]));
    let err = load_idx_pair(&images, &labels, 10).unwrap_err();
    assert!(
        matches!(err, DataError::LabelOutOfRange { index: 1, value, classes: 10, .. } if value == 12.0),
        "{err}"
    );
    assert!(err.to_string().contains(&labels.display().to_string()));
}

#[test]
fn count_and_rank_mismatches_are_errors() {
    let dir = TempDir::new().unwrap();
    let (images, labels) = (dir.path().join("i"), dir.path().join("l"));
    write(&images, &idx_bytes(&[3, 1, 1], &[0, 1, 2]));
    write(&labels, &idx_bytes(&[2], &[1, 2]));
    assert!(matches!(
        load_idx_pair(&images, &labels, 10),
        Err(DataError::CountMismatch {
            images: 3,
            labels: 2,
            ..
        })
    ));
    // Images given as labels and vice versa.
    let msg = load_idx_pair(&labels, &images, 10).unwrap_err().to_string();
    assert!(msg.contains("expected 3 dimensions"), "{msg}");
}

#[test]
fn a_gz_file_that_is_not_gzip_says_so_when_it_is_not_idx_either() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("train-images-idx3-ubyte.gz");
    write(&path, b"hello world, not gzip");
    let msg = read_idx(&path).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: not an IDX file (magic 68 65 6c 6c, expected 00 00 08 <ndim>); the file is named .gz but is not \
             gzip-compressed",
            path.display()
        )
    );
    // Raw IDX under a .gz name still reads: gzip is recognised by its magic.
    write(&path, &idx_bytes(&[2], &[1, 2]));
    assert_eq!(read_idx(&path).unwrap().data, vec![1, 2]);
}

#[test]
fn a_directory_is_not_an_idx_file() {
    let dir = TempDir::new().unwrap();
    let msg = read_idx(dir.path()).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!("{}: is a directory, expected a file", dir.path().display())
    );
}

#[test]
fn a_zero_dimension_is_refused_naming_the_file() {
    let dir = TempDir::new().unwrap();
    for (dims, i) in [([0u32, 28, 28], 0), ([5, 0, 28], 1)] {
        let path = dir.path().join("images");
        write(&path, &idx_bytes(&dims, &[]));
        let msg = read_idx(&path).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "{}: IDX dimension {i} of {dims:?} is 0: the file holds no samples",
                path.display()
            )
        );
    }
}
