//! MNIST / Fashion-MNIST in the IDX format (gzipped or not): big-endian header
//! `00 00 <type> <ndim>`, `ndim` u32 dimensions, then the values. Only unsigned-byte data
//! (type 0x08) occurs in these datasets and is supported.

use std::path::{Path, PathBuf};

use super::dataset::first_bad_label;
use super::gunzip::read_maybe_gzip;
use super::{DataError, Dataset};

/// MNIST and Fashion-MNIST both have ten classes.
pub const MNIST_CLASSES: usize = 10;

/// A decoded IDX file: its dimensions and its bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes.
pub fn read_idx(path: &Path) -> Result<Idx, DataError> {
    let bytes = read_maybe_gzip(path)?;
    parse_idx(&bytes).map_err(|reason| DataError::format(path, reason))
}

fn parse_idx(bytes: &[u8]) -> Result<Idx, String> {
    let Some(&[z0, z1, kind, ndim]) = bytes.get(..4) else {
        return Err(format!("{} bytes is too short for an IDX header", bytes.len()));
    };
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
    let ndim = ndim as usize;
    let header = 4 + 4 * ndim;
    let dims_bytes = bytes
        .get(4..header)
        .ok_or_else(|| format!("truncated IDX header: {ndim} dimensions need {header} bytes"))?;
    let dims: Vec<usize> = dims_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("IDX dimensions {dims:?} overflow"))?;
    let found = bytes.len() - header;
    if found != count {
        let what = if found < count { "truncated" } else { "trailing bytes" };
        return Err(format!(
            "{what}: dimensions {dims:?} need {count} data bytes, found {found}"
        ));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
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
    let (Some(train_x), Some(train_y)) = (find(dir, TRAIN_IMAGES), find(dir, TRAIN_LABELS)) else {
        return Err(missing());
    };
    let train = load_idx_pair(&train_x, &train_y, MNIST_CLASSES)?;
    let test = match (find(dir, TEST_IMAGES), find(dir, TEST_LABELS)) {
        (Some(x), Some(y)) => Some(load_idx_pair(&x, &y, MNIST_CLASSES)?),
        (None, None) => None,
        _ => return Err(missing()),
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

/// `stem`, `stem.gz`, or the same with the `-idx` dash written as a dot.
fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    [stem, dotted.as_str()]
        .iter()
        .flat_map(|s| [s.to_string(), format!("{s}.gz")])
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}
