//! CIFAR-10 binary batches written record by record and read back (CHW → HWC), plus
//! truncated files, bad labels and missing batches.

mod support;

use std::path::Path;

use cnnc_runtime::data::{load_cifar10_batch, load_cifar10_dir, DataError};
use support::{gzip, write};
use tempfile::TempDir;

/// A record whose pixel (c, h, w) is `(c * 7 + h * 3 + w + seed) % 256`.
fn record(label: u8, seed: usize) -> Vec<u8> {
    let mut r = vec![label];
    for c in 0..3 {
        for h in 0..32 {
            for w in 0..32 {
                r.push(((c * 7 + h * 3 + w + seed) % 256) as u8);
            }
        }
    }
    r
}

fn batch(labels: &[u8]) -> Vec<u8> {
    labels.iter().enumerate().flat_map(|(i, &l)| record(l, i)).collect()
}

#[test]
fn converts_chw_records_to_hwc_pixels() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("test_batch.bin");
    write(&path, &batch(&[3, 9]));
    let d = load_cifar10_batch(&path).unwrap();
    assert_eq!((d.n, d.classes), (2, 10));
    assert_eq!(d.sample_shape, vec![32, 32, 3]);
    assert_eq!(d.y, vec![3.0, 9.0]);
    for (i, h, w, c) in [(0, 0, 0, 0), (0, 5, 17, 2), (1, 31, 31, 1), (1, 2, 0, 2)] {
        let got = d.x[((i * 32 + h) * 32 + w) * 3 + c];
        let want = ((c * 7 + h * 3 + w + i) % 256) as f32 / 255.0;
        assert_eq!(got, want, "sample {i} pixel ({h}, {w}) channel {c}");
    }
}

fn write_dir(dir: &Path, with_test: bool) {
    for b in 1..=5u8 {
        write(&dir.join(format!("data_batch_{b}.bin")), &batch(&[b, b + 1]));
    }
    if with_test {
        write(&dir.join("test_batch.bin"), &gzip(&batch(&[0])));
    }
}

#[test]
fn loads_all_five_batches_in_order_and_the_test_batch() {
    let dir = TempDir::new().unwrap();
    write_dir(dir.path(), true);
    let (train, test) = load_cifar10_dir(dir.path()).unwrap();
    assert_eq!(train.n, 10);
    assert_eq!(train.y, vec![1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0, 6.0]);
    assert_eq!(train.x.len(), 10 * 3072);
    assert_eq!(test.unwrap().n, 1, "gzipped batches are read too");
}

#[test]
fn finds_the_unpacked_archive_directory() {
    let dir = TempDir::new().unwrap();
    let nested = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&nested).unwrap();
    write_dir(&nested, false);
    let (train, test) = load_cifar10_dir(dir.path()).unwrap();
    assert_eq!((train.n, test.is_none()), (10, true));
}

#[test]
fn missing_batches_are_listed() {
    let dir = TempDir::new().unwrap();
    write_dir(dir.path(), false);
    std::fs::remove_file(dir.path().join("data_batch_4.bin")).unwrap();
    let msg = load_cifar10_dir(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("missing data_batch_4.bin"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn truncated_batch_is_an_error() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("data_batch_1.bin");
    let mut bytes = batch(&[1, 2]);
    bytes.pop();
    write(&path, &bytes);
    let msg = load_cifar10_batch(&path).unwrap_err().to_string();
    assert!(msg.contains("data_batch_1.bin") && msg.contains("6145 bytes"), "{msg}");
    write(&path, b"");
    assert!(load_cifar10_batch(&path).is_err());
}

#[test]
fn label_out_of_range_names_file_index_and_value() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("data_batch_2.bin");
    write(&path, &batch(&[1, 2, 10]));
    let err = load_cifar10_batch(&path).unwrap_err();
    assert!(
        matches!(err, DataError::LabelOutOfRange { index: 2, value, .. } if value == 10.0),
        "{err}"
    );
    assert!(err.to_string().contains("data_batch_2.bin"));
}
