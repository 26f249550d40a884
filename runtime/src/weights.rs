//! Parameter files: safetensors with Keras names (`<layer>.kernel`, ...), F32, Keras layouts
//! (the shapes `ParamSpec` gives). Saving is atomic — a killed run leaves the previous file or
//! the complete new one — and loading checks every tensor against the model's specs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use thiserror::Error;

use crate::data::write_atomic;
use crate::exec::ParamSpec;
use crate::tensor::Tensor;

/// Why a weights file could not be written or read.
#[derive(Debug, Error)]
pub enum WeightsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: missing tensor(s) {}", path.display(), names.join(", "))]
    Missing { path: PathBuf, names: Vec<String> },
    #[error("{}: tensor(s) {} are not parameters of this model", path.display(), names.join(", "))]
    Unexpected { path: PathBuf, names: Vec<String> },
    #[error("{}: tensor {name} has shape {found:?}, expected {expected:?}", path.display())]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{}: tensor {name} has dtype {found}, expected F32", path.display())]
    Dtype { path: PathBuf, name: String, found: String },
    /// The file is larger than any weights file of this model can be (or is endless).
    #[error(
        "{}: more than {max} bytes, larger than a weights file of this model can be ({data} bytes of tensors \
         and their header)",
        path.display()
    )]
    TooLarge { path: PathBuf, max: u64, data: u64 },
    /// A NaN or infinity, which would poison every output and gradient it touches.
    #[error(
        "{}: tensor {name} holds {value} at index {index} (position {position:?} of shape {shape:?}); \
         weights must be finite",
        path.display()
    )]
    NonFinite {
        path: PathBuf,
        name: String,
        index: usize,
        position: Vec<usize>,
        shape: Vec<usize>,
        value: f32,
    },
    /// The parameters handed to `save_weights` do not match their specs.
    #[error("{}: cannot save: {reason}", path.display())]
    Params { path: PathBuf, reason: String },
}

/// Longest safetensors header the `safetensors` crate accepts.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Writes `params` (in `specs` order) to `path` atomically: a temporary file in the same
/// directory is written, fsynced and renamed over `path`, then the directory is fsynced.
pub fn save_weights(path: &Path, specs: &[ParamSpec], params: &[Tensor]) -> Result<(), WeightsError> {
    let bad = |reason: String| WeightsError::Params {
        path: path.to_path_buf(),
        reason,
    };
    if specs.len() != params.len() {
        return Err(bad(format!("{} parameters for {} specs", params.len(), specs.len())));
    }
    let mut seen = HashSet::new();
    let mut bytes = Vec::with_capacity(params.len());
    for (spec, p) in specs.iter().zip(params) {
        if !seen.insert(spec.name.as_str()) {
            return Err(bad(format!("duplicate tensor name {}", spec.name)));
        }
        if p.shape != spec.shape || p.data.len() != spec.shape.iter().product::<usize>() {
            return Err(bad(format!(
                "tensor {} has shape {:?} ({} values), expected {:?}",
                spec.name,
                p.shape,
                p.data.len(),
                spec.shape
            )));
        }
        bytes.push(p.data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    }
    let views = specs
        .iter()
        .zip(&bytes)
        .map(|(spec, b)| {
            TensorView::new(Dtype::F32, spec.shape.clone(), b)
                .map(|v| (spec.name.as_str(), v))
                .map_err(|e| bad(format!("tensor {}: {e}", spec.name)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([("producer".to_string(), "cnnc".to_string())]);
    let file = safetensors::serialize(views, Some(metadata)).map_err(|e| bad(e.to_string()))?;
    write_atomic(path, &file).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the parameters `specs` names from `path`, in `specs` order. Every tensor must be
/// present, F32 and shaped as its spec; tensors the model does not have are an error too (a
/// file from a different model is almost certainly a mistake).
pub fn load_weights(path: &Path, specs: &[ParamSpec]) -> Result<Vec<Tensor>, WeightsError> {
    // The file holds the tensors as F32 plus a header of at most MAX_HEADER_BYTES (the
    // safetensors crate's own bound); reading stops there, whatever the file is.
    let data: u64 = specs.iter().map(|s| 4 * s.shape.iter().product::<usize>() as u64).sum();
    let max = data.saturating_add(8 + MAX_HEADER_BYTES);
    let file = crate::data::read_capped(path, max)
        .map_err(|source| WeightsError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| WeightsError::TooLarge {
            path: path.to_path_buf(),
            max,
            data,
        })?;
    let st = SafeTensors::deserialize(&file).map_err(|e| WeightsError::Corrupt {
        path: path.to_path_buf(),
        reason: header_problem(&file).unwrap_or_else(|| describe(&e)),
    })?;
    let wanted: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let mut unexpected: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| !wanted.contains(n))
        .map(str::to_string)
        .collect();
    let missing: Vec<String> = specs
        .iter()
        .filter(|s| st.tensor(&s.name).is_err())
        .map(|s| s.name.clone())
        .collect();
    if !missing.is_empty() {
        return Err(WeightsError::Missing {
            path: path.to_path_buf(),
            names: missing,
        });
    }
    if !unexpected.is_empty() {
        unexpected.sort();
        return Err(WeightsError::Unexpected {
            path: path.to_path_buf(),
            names: unexpected,
        });
    }
    specs
        .iter()
        .map(|spec| {
            let view = st.tensor(&spec.name).map_err(|e| WeightsError::Corrupt {
                path: path.to_path_buf(),
                reason: describe(&e),
            })?;
            if view.dtype() != Dtype::F32 {
                return Err(WeightsError::Dtype {
                    path: path.to_path_buf(),
                    name: spec.name.clone(),
                    found: view.dtype().to_string(),
                });
            }
            if view.shape() != spec.shape.as_slice() {
                return Err(WeightsError::Shape {
                    path: path.to_path_buf(),
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                    found: view.shape().to_vec(),
                });
            }
            // safetensors validated that the byte range matches shape × dtype.
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if let Some(index) = data.iter().position(|v| !v.is_finite()) {
                return Err(WeightsError::NonFinite {
                    path: path.to_path_buf(),
                    name: spec.name.clone(),
                    index,
                    position: unravel(index, &spec.shape),
                    shape: spec.shape.clone(),
                    value: data[index],
                });
            }
            Ok(Tensor {
                shape: spec.shape.clone(),
                data,
            })
        })
        .collect()
}

/// The row-major position of flat `index` in `shape`.
fn unravel(mut index: usize, shape: &[usize]) -> Vec<usize> {
    let mut position = vec![0; shape.len()];
    for (p, &d) in position.iter_mut().zip(shape).rev() {
        *p = index % d.max(1);
        index /= d.max(1);
    }
    position
}

/// Why `file` is not a safetensors file, naming the tensor at fault when there is one: the
/// `safetensors` crate's errors often do not (a tensor whose offsets run past the end, or
/// disagree with its shape, or whose dtype is unknown). Reads the JSON header itself; `None`
/// when it finds nothing wrong.
fn header_problem(file: &[u8]) -> Option<String> {
    let Some(len) = file.get(..8) else {
        return Some(format!(
            "truncated: {} bytes, shorter than the 8-byte header length",
            file.len()
        ));
    };
    let n = u64::from_le_bytes(len.try_into().ok()?);
    let rest = file.len() as u64 - 8;
    if n > rest {
        return Some(format!(
            "the header length says {n} bytes but only {rest} follow (truncated, or not a safetensors file)"
        ));
    }
    let (header, data) = file[8..].split_at(n as usize);
    let Ok(header) = std::str::from_utf8(header) else {
        return Some("the header is not UTF-8 text".into());
    };
    let entries: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(header) {
        Ok(m) => m,
        Err(e) => return Some(format!("the header is not a JSON object: {e}")),
    };
    let mut tensors = Vec::new();
    for (name, v) in entries.iter().filter(|(k, _)| *k != "__metadata__") {
        let field = |key: &str| v.get(key).cloned().unwrap_or_default();
        let dtype = match serde_json::from_value::<Dtype>(field("dtype")) {
            Ok(d) => d,
            Err(_) => return Some(format!("tensor {name}: unknown dtype {}", field("dtype"))),
        };
        let Ok(shape) = serde_json::from_value::<Vec<usize>>(field("shape")) else {
            return Some(format!(
                "tensor {name}: shape {} is not a list of sizes",
                field("shape")
            ));
        };
        let Ok([begin, end]) = serde_json::from_value::<[usize; 2]>(field("data_offsets")) else {
            return Some(format!(
                "tensor {name}: data_offsets {} is not [begin, end]",
                field("data_offsets")
            ));
        };
        tensors.push((begin, end, name, dtype, shape));
    }
    tensors.sort_by_key(|t| (t.0, t.1));
    let mut at = 0;
    for (begin, end, name, dtype, shape) in tensors {
        let bytes = shape
            .iter()
            .try_fold(dtype.bitsize(), |a, &d| a.checked_mul(d))
            .map(|bits| bits.div_ceil(8));
        let problem = if end > data.len() {
            format!(
                "truncated: tensor {name} ends at data byte {end} but the file holds only {} data bytes",
                data.len()
            )
        } else if begin != at || end < begin {
            format!("tensor {name}: data_offsets [{begin}, {end}] do not start where the previous tensor ends ({at})")
        } else if bytes != Some(end - begin) {
            format!(
                "tensor {name}: data_offsets [{begin}, {end}] hold {} bytes, but {dtype} of shape {shape:?} needs {}",
                end - begin,
                bytes.map_or("more than can be addressed".into(), |b| b.to_string())
            )
        } else {
            at = end;
            continue;
        };
        return Some(problem);
    }
    (at != data.len()).then(|| format!("{} bytes after the last tensor's data (padded file)", data.len() - at))
}

fn describe(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => {
            "truncated or garbage header".to_string()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "data section does not match the header (truncated or padded file)".to_string()
        }
        other => other.to_string(),
    }
}
