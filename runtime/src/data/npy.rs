//! NumPy `.npy` arrays: images (`float32` as is; `uint8` scaled by 1/255; `float64` narrowed),
//! labels (any integer or float dtype, `[n]`, `[n, 1]` or one-hot `[n, k]`), and an atomic
//! `float32` writer.

use std::io::Read;
use std::path::Path;

use npyz::{DType, NpyFile, NpyHeader, Order, TypeChar, WriteOptions, WriterBuilder};

use super::atomic::write_atomic_with;
use super::bounded::open_file;
use super::idx::bytes_to_unit;
use super::{DataError, Dataset};

/// The values of an `.npy` file, in the element type it was stored with.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyValues {
    U8(Vec<u8>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// Any other integer dtype, widened.
    Int(Vec<i64>),
}

/// A whole `.npy` array (C order).
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub values: NpyValues,
}

/// Largest `.npy` data accepted (16 GiB: CIFAR-10's training set as float32 is 0.6 GB).
pub const MAX_NPY_BYTES: u64 = 16 << 30;

/// Longest `.npy` header accepted (NumPy writes a few hundred bytes; its own reader refuses
/// more than 10,000 by default).
const MAX_NPY_HEADER_BYTES: usize = 1 << 16;

/// Reads a C-ordered `.npy` file of bytes, integers or floats. The file is streamed: no more
/// is read than the header's shape calls for, and at most [`MAX_NPY_BYTES`].
pub fn read_npy(path: &Path) -> Result<NpyArray, DataError> {
    let io = |e| DataError::io(path, e);
    let bad = |reason: String| DataError::format(path, reason);
    let mut file = open_file(path).map_err(io)?;
    let mut head = Vec::new();
    (&mut file)
        .take(MAX_NPY_HEADER_BYTES as u64 + 12)
        .read_to_end(&mut head)
        .map_err(io)?;
    check_header_size(&head).map_err(bad)?;
    check_declared_shape(&head).map_err(bad)?;
    let mut reader = head.as_slice().chain(&mut file);
    let header = NpyHeader::from_reader(&mut reader).map_err(|e| bad(format!("not a valid .npy file: {e}")))?;
    if header.order() == Order::Fortran {
        return Err(bad(
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into(),
        ));
    }
    let shape: Vec<usize> = header.shape().iter().map(|&d| d as usize).collect();
    let DType::Plain(ts) = header.dtype() else {
        return Err(bad(format!(
            "structured dtype {} is not supported",
            header.dtype().descr()
        )));
    };
    let size = ts.size_field() as usize;
    let needed = (header.len() as usize).saturating_mul(size);
    if needed as u64 > MAX_NPY_BYTES {
        return Err(bad(format!(
            "shape {shape:?} of {ts} needs {needed} data bytes, more than the {MAX_NPY_BYTES} allowed"
        )));
    }
    let mut rest = Vec::with_capacity(needed.min(1 << 30));
    reader.take(needed as u64).read_to_end(&mut rest).map_err(io)?;
    if rest.len() < needed {
        return Err(bad(format!(
            "truncated: shape {shape:?} of {} needs {needed} data bytes, found {}",
            ts,
            rest.len()
        )));
    }
    let file = NpyFile::with_header(header, rest.as_slice());
    let read_err = |e: std::io::Error| bad(format!("cannot read {ts} data: {e}"));
    let values = match (ts.type_char(), size) {
        (TypeChar::Uint, 1) => NpyValues::U8(file.into_vec().map_err(read_err)?),
        (TypeChar::Float, 4) => NpyValues::F32(file.into_vec().map_err(read_err)?),
        (TypeChar::Float, 8) => NpyValues::F64(file.into_vec().map_err(read_err)?),
        (TypeChar::Int, 1) => widen::<i8>(file).map_err(read_err)?,
        (TypeChar::Int, 2) => widen::<i16>(file).map_err(read_err)?,
        (TypeChar::Int, 4) => widen::<i32>(file).map_err(read_err)?,
        (TypeChar::Int, 8) => widen::<i64>(file).map_err(read_err)?,
        (TypeChar::Uint, 2) => widen::<u16>(file).map_err(read_err)?,
        (TypeChar::Uint, 4) => widen::<u32>(file).map_err(read_err)?,
        (TypeChar::Uint, 8) => NpyValues::Int(
            file.into_vec::<u64>()
                .map_err(read_err)?
                .into_iter()
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
                .collect(),
        ),
        _ => {
            return Err(bad(format!(
                "dtype {ts} is not supported (use uint8, an integer type, float32 or float64)"
            )))
        }
    };
    Ok(NpyArray { shape, values })
}

fn widen<T: npyz::Deserialize + Into<i64>>(file: NpyFile<&[u8]>) -> std::io::Result<NpyValues> {
    Ok(NpyValues::Int(
        file.into_vec::<T>()?.into_iter().map(Into::into).collect(),
    ))
}

/// Rejects a preamble announcing a header longer than [`MAX_NPY_HEADER_BYTES`] (npyz would
/// allocate whatever it says). Anything else is left to npyz's own checks.
fn check_header_size(bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(b"\x93NUMPY") {
        return Ok(());
    }
    let len = match bytes.get(6) {
        Some(1) => bytes.get(8..10).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize),
        Some(_) => bytes
            .get(8..12)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize),
        None => None,
    };
    match len {
        Some(n) if n > MAX_NPY_HEADER_BYTES => Err(format!(
            "the header claims {n} bytes, more than the {MAX_NPY_HEADER_BYTES} allowed (not a NumPy file?)"
        )),
        _ => Ok(()),
    }
}

/// Rejects headers whose shape overflows before npyz multiplies it out (it would panic with
/// overflow checks on). Headers this scan cannot read are left to npyz's own errors.
fn check_declared_shape(bytes: &[u8]) -> Result<(), String> {
    let head = &bytes[..bytes.len().min(1 << 16)];
    let Some(text) = head.windows(7).position(|w| w == b"'shape'").map(|p| &head[p..]) else {
        return Ok(());
    };
    let (Some(open), Some(close)) = (
        text.iter().position(|&b| b == b'('),
        text.iter().position(|&b| b == b')'),
    ) else {
        return Ok(());
    };
    if open > close {
        return Ok(());
    }
    let dims: Vec<u64> = String::from_utf8_lossy(&text[open + 1..close])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.trim_end_matches('L').parse().ok())
        .collect();
    let fits = dims
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .is_some_and(|total| total <= isize::MAX as u64);
    if fits {
        Ok(())
    } else {
        Err(format!("declared shape {dims:?} is impossibly large"))
    }
}

/// Reads images `[n, H, W, C]` (or `[n, H, W]`, given one channel, or `[n, features]`) as f32.
/// `uint8` pixels are scaled by 1/255; float data is taken as is.
pub fn load_npy_images(path: &Path) -> Result<(Vec<usize>, Vec<f32>), DataError> {
    let arr = read_npy(path)?;
    let mut shape = arr.shape;
    if shape.len() < 2 {
        return Err(DataError::format(
            path,
            format!("images need a sample axis and at least one more, found shape {shape:?}"),
        ));
    }
    if shape.len() == 3 {
        shape.push(1);
    }
    let x = match arr.values {
        NpyValues::U8(v) => bytes_to_unit(&v),
        NpyValues::F32(v) => v,
        NpyValues::F64(v) => v.into_iter().map(|f| f as f32).collect(),
        NpyValues::Int(_) => {
            return Err(DataError::format(
                path,
                "images must be uint8, float32 or float64 (found a wider integer type)",
            ))
        }
    };
    Ok((shape, x))
}

/// Reads labels: class ids `[n]` or `[n, 1]` (integer or integral float), or one-hot rows
/// `[n, k]`. Returns the class ids and, for one-hot files, `k`.
pub fn load_npy_labels(path: &Path) -> Result<(Vec<f32>, Option<usize>), DataError> {
    let arr = read_npy(path)?;
    let values: Vec<f64> = match arr.values {
        NpyValues::U8(v) => v.into_iter().map(f64::from).collect(),
        NpyValues::F32(v) => v.into_iter().map(f64::from).collect(),
        NpyValues::F64(v) => v,
        NpyValues::Int(v) => v.into_iter().map(|i| i as f64).collect(),
    };
    match arr.shape.as_slice() {
        [_] | [_, 1] => {
            let ids = values
                .iter()
                .enumerate()
                .map(|(index, &v)| {
                    // Exact in f32 up to 2^24; no dataset has more classes.
                    if v >= 0.0 && v.fract() == 0.0 && v < (1u32 << 24) as f64 {
                        Ok(v as f32)
                    } else {
                        Err(DataError::format(
                            path,
                            format!("sample {index} has label {v}, expected a non-negative integer class id"),
                        ))
                    }
                })
                .collect::<Result<Vec<f32>, _>>()?;
            Ok((ids, None))
        }
        &[_, k] if k > 1 => {
            let ids = values
                .chunks_exact(k)
                .enumerate()
                .map(|(index, row)| {
                    let hot = row.iter().position(|&v| v == 1.0);
                    let clean =
                        row.iter().all(|&v| v == 0.0 || v == 1.0) && row.iter().filter(|&&v| v == 1.0).count() == 1;
                    match hot {
                        Some(c) if clean => Ok(c as f32),
                        _ => Err(DataError::format(
                            path,
                            format!("labels row {index} is not one-hot: {row:?}"),
                        )),
                    }
                })
                .collect::<Result<Vec<f32>, _>>()?;
            Ok((ids, Some(k)))
        }
        other => Err(DataError::format(
            path,
            format!("labels must be shaped [n], [n, 1] or one-hot [n, k], found {other:?}"),
        )),
    }
}

/// Loads an image file and a label file. `classes` bounds the labels; when `None` it is
/// inferred (the one-hot width, else the largest label + 1).
pub fn load_npy_pair(images: &Path, labels: &Path, classes: Option<usize>) -> Result<Dataset, DataError> {
    // Before reading either: a missing labels file is found without reading the images first.
    for (path, what, other) in [(images, "images", labels), (labels, "labels", images)] {
        if !path.exists() {
            let reason = format!("no such file (the {what} of the pair with {})", other.display());
            return Err(DataError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, reason),
            ));
        }
    }
    let (shape, x) = load_npy_images(images)?;
    let (y, width) = load_npy_labels(labels)?;
    if shape[0] != y.len() {
        return Err(DataError::CountMismatch {
            images_path: images.to_path_buf(),
            images: shape[0],
            labels_path: labels.to_path_buf(),
            labels: y.len(),
        });
    }
    let inferred = width.unwrap_or_else(|| y.iter().fold(0.0f32, |m, &v| m.max(v + 1.0)) as usize);
    let classes = classes.unwrap_or(inferred);
    // One-hot rows narrower than the classes would pass the range check below unnoticed.
    if let Some(k) = width.filter(|&k| k != classes) {
        return Err(DataError::format(
            labels,
            format!("labels are one-hot rows of {k} classes, but {classes} are expected (the model's outputs)"),
        ));
    }
    if let Some((index, value)) = super::dataset::first_bad_label(&y, classes) {
        return Err(DataError::LabelOutOfRange {
            path: labels.to_path_buf(),
            index,
            value: value as f64,
            classes,
        });
    }
    Ok(Dataset {
        x,
        y,
        n: shape[0],
        sample_shape: shape[1..].to_vec(),
        classes,
    })
}

/// Writes a float32 C-ordered `.npy` array atomically (temporary file, fsync, rename).
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), DataError> {
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if count != Some(data.len()) {
        return Err(DataError::format(
            path,
            format!("cannot write {} values as shape {shape:?}", data.len()),
        ));
    }
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    write_atomic_with(path, |w| {
        let mut npy = WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&dims)
            .writer(w)
            .begin_nd()?;
        npy.extend(data.iter().copied())?;
        npy.finish()
    })
    .map_err(|e| DataError::io(path, e))
}
