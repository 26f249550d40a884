//! MNIST / Fashion-MNIST in the IDX format (gzipped or not): big-endian header
//! `00 00 <type> <ndim>`, `ndim` u32 dimensions, then the values. Only unsigned-byte data
//! (type 0x08) occurs in these datasets and is supported.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::bounded::read_to_end_capped;
use super::dataset::first_bad_label;
use super::gunzip::{open_maybe_gzip, MAX_DATASET_FILE_BYTES};
use super::{DataError, Dataset};

/// MNIST and Fashion-MNIST both have ten classes.
pub const MNIST_CLASSES: usize = 10;

/// A decoded IDX file: its dimensions and its bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes. The file is streamed: no more is read than its
/// header's dimensions call for (and at most [`MAX_DATASET_FILE_BYTES`]), so a device or a
/// decompression bomb cannot fill memory.
pub fn read_idx(path: &Path) -> Result<Idx, DataError> {
    let (mut reader, gz) = open_maybe_gzip(path)?;
    let read_err = |source: std::io::Error| {
        if gz {
            DataError::Gzip {
                path: path.to_path_buf(),
                source,
            }
        } else {
            DataError::io(path, source)
        }
    };
    // A file named .gz that is not gzip is read as it is (gzip is recognised by its magic), but
    // if it is not an IDX file either, its name is likely why.
    let misnamed = !gz && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let bad = |reason: String| {
        let hint = if misnamed {
            "; the file is named .gz but is not gzip-compressed"
        } else {
            ""
        };
        DataError::format(path, format!("{reason}{hint}"))
    };
    let mut head = [0u8; 4];
    let got = read_up_to(&mut reader, &mut head).map_err(read_err)?;
    let [z0, z1, kind, ndim] = head;
    if got < 4 {
        return Err(bad(format!("{got} bytes is too short for an IDX header")));
    }
    check_magic(z0, z1, kind, ndim).map_err(bad)?;
    let ndim = ndim as usize;
    let header = 4 + 4 * ndim;
    let mut dims_bytes = vec![0u8; 4 * ndim];
    if read_up_to(&mut reader, &mut dims_bytes).map_err(read_err)? < dims_bytes.len() {
        return Err(bad(format!(
            "truncated IDX header: {ndim} dimensions need {header} bytes"
        )));
    }
    let dims = dims_of(&dims_bytes);
    if let Some(i) = dims.iter().position(|&d| d == 0) {
        return Err(bad(format!(
            "IDX dimension {i} of {dims:?} is 0: the file holds no samples"
        )));
    }
    let count = element_count(&dims).map_err(bad)?;
    let limit = count.min(MAX_DATASET_FILE_BYTES as usize);
    let data = read_to_end_capped(&mut reader, limit as u64, limit.min(1 << 30)).map_err(read_err)?;
    match data {
        Some(data) if data.len() == count => Ok(Idx { dims, data }),
        Some(data) => Err(bad(format!(
            "truncated: dimensions {dims:?} need {count} data bytes, found {}",
            data.len()
        ))),
        None if limit == count => Err(bad(format!(
            "trailing bytes: dimensions {dims:?} need {count} data bytes, found more"
        ))),
        None => Err(bad(format!(
            "dimensions {dims:?} need {count} data bytes, more than the {MAX_DATASET_FILE_BYTES} a dataset file may hold"
        ))),
    }
}

/// Fills `buf` as far as the reader allows; returns how many bytes were read.
fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn check_magic(z0: u8, z1: u8, kind: u8, ndim: u8) -> Result<(), String> {
    if z0 != 0 || z1 != 0 {
        return Err(format!(
            "not an IDX file (magic {z0:02x} {z1:02x} {kind:02x} {ndim:02x}, expected 00 00 08 <ndim>)"
        ));
    }
    if kind != 0x08 {
        return Err(format!(
            "IDX element type 0x{kind:02x} is not supported (only 0x08, unsigned byte)"
        ));
    }
    Ok(())
}

fn dims_of(bytes: &[u8]) -> Vec<usize> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect()
}

fn element_count(dims: &[usize]) -> Result<usize, String> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("IDX dimensions {dims:?} overflow"))
}

/// Reads an images file (`[n, rows, cols]` bytes) and a labels file (`[n]`) into a dataset of
/// `[n, rows, cols, 1]` pixels scaled to `[0, 1]`, labels checked against `classes`.
pub fn load_idx_pair(images: &Path, labels: &Path, classes: usize) -> Result<Dataset, DataError> {
    let img = read_idx(images)?;
    let &[n, rows, cols] = img.dims.as_slice() else {
        return Err(DataError::format(
            images,
            format!("expected 3 dimensions [n, rows, cols] for images, found {:?}", img.dims),
        ));
    };
    let lab = read_idx(labels)?;
    let &[n_labels] = lab.dims.as_slice() else {
        return Err(DataError::format(
            labels,
            format!("expected 1 dimension [n] for labels, found {:?}", lab.dims),
        ));
    };
    if n != n_labels {
        return Err(DataError::CountMismatch {
            images_path: images.to_path_buf(),
            images: n,
            labels_path: labels.to_path_buf(),
            labels: n_labels,
        });
    }
    let y: Vec<f32> = lab.data.iter().map(|&b| b as f32).collect();
    if let Some((index, value)) = first_bad_label(&y, classes) {
        return Err(DataError::LabelOutOfRange {
            path: labels.to_path_buf(),
            index,
            value: value as f64,
            classes,
        });
    }
    Ok(Dataset {
        x: bytes_to_unit(&img.data),
        y,
        sample_shape: vec![rows, cols, 1],
        n,
        classes,
    })
}

/// Pixel bytes scaled by 1/255 (as `x / 255.0` in Keras tutorials).
pub(crate) fn bytes_to_unit(bytes: &[u8]) -> Vec<f32> {
    bytes.iter().map(|&b| b as f32 / 255.0).collect()
}

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Loads MNIST or Fashion-MNIST from a directory holding the standard file names
/// (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, and optionally
/// `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`; the `train-images.idx3-ubyte`
/// spelling is accepted too). Returns the training set and, when present, the test set.
pub fn load_mnist_dir(dir: &Path) -> Result<(Dataset, Option<Dataset>), DataError> {
    let missing = || DataError::MissingFiles {
        dir: dir.to_path_buf(),
        expected: format!(
            "{TRAIN_IMAGES}[.gz] and {TRAIN_LABELS}[.gz] (optionally {TEST_IMAGES}[.gz] and {TEST_LABELS}[.gz])"
        ),
    };
    if !dir.is_dir() {
        return Err(DataError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "dataset directory not found"),
        ));
    }
    // One file of a pair without the other: name both rather than list every format.
    let half = |found: &Path, missing: &str| DataError::IncompletePair {
        dir: dir.to_path_buf(),
        found: found
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        missing: format!("{missing}[.gz]"),
    };
    let (train_x, train_y) = match (find(dir, TRAIN_IMAGES), find(dir, TRAIN_LABELS)) {
        (Some(x), Some(y)) => (x, y),
        (Some(x), None) => return Err(half(&x, TRAIN_LABELS)),
        (None, Some(y)) => return Err(half(&y, TRAIN_IMAGES)),
        (None, None) => return Err(missing()),
    };
    let train = load_idx_pair(&train_x, &train_y, MNIST_CLASSES)?;
    let test = match (find(dir, TEST_IMAGES), find(dir, TEST_LABELS)) {
        (Some(x), Some(y)) => Some(load_idx_pair(&x, &y, MNIST_CLASSES)?),
        (None, None) => None,
        (Some(x), None) => return Err(half(&x, TEST_LABELS)),
        (None, Some(y)) => return Err(half(&y, TEST_IMAGES)),
    };
    if let Some(t) = &test {
        if t.sample_shape != train.sample_shape {
            return Err(DataError::SampleShapeMismatch {
                path: dir.join(TEST_IMAGES),
                expected: train.sample_shape.clone(),
                found: t.sample_shape.clone(),
            });
        }
    }
    Ok((train, test))
}

/// The four file stems of an MNIST-style directory.
pub(crate) const MNIST_STEMS: [&str; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

/// `stem`, `stem.gz`, or the same with the `-idx` dash written as a dot.
fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    names_of(stem)
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// The file names `stem` is looked up by, in order.
pub(crate) fn names_of(stem: &str) -> Vec<String> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    [stem, dotted.as_str()]
        .iter()
        .flat_map(|s| [s.to_string(), format!("{s}.gz")])
        .collect()
}
