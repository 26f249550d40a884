//! CIFAR-10 in its binary distribution (`cifar-10-batches-bin`): each record is one label byte
//! followed by 3072 pixel bytes stored channel-major (`[3, 32, 32]`, R then G then B planes),
//! converted here to the runtime's `[32, 32, 3]` HWC layout and scaled to `[0, 1]`.

use std::path::{Path, PathBuf};

use super::gunzip::read_maybe_gzip_capped;
use super::{DataError, Dataset};

pub const CIFAR10_CLASSES: usize = 10;
const SIDE: usize = 32;
const CHANNELS: usize = 3;
const PLANE: usize = SIDE * SIDE;
const RECORD: usize = 1 + CHANNELS * PLANE;
/// Largest batch file read (a real one is 10,000 records, 30 MB).
const MAX_BATCH_BYTES: u64 = 1 << 30;

/// Reads one CIFAR-10 batch file (`data_batch_N.bin` or `test_batch.bin`).
pub fn load_cifar10_batch(path: &Path) -> Result<Dataset, DataError> {
    let bytes = read_maybe_gzip_capped(path, MAX_BATCH_BYTES)?;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(DataError::format(
            path,
            format!(
                "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (truncated or not CIFAR-10)",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / RECORD;
    let mut x = vec![0.0f32; n * RECORD - n]; // [n, 32, 32, 3]
    let mut y = Vec::with_capacity(n);
    for (index, (rec, out)) in bytes
        .chunks_exact(RECORD)
        .zip(x.chunks_exact_mut(CHANNELS * PLANE))
        .enumerate()
    {
        let label = rec[0];
        if label as usize >= CIFAR10_CLASSES {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                value: label as f64,
                classes: CIFAR10_CLASSES,
            });
        }
        y.push(label as f32);
        let chw = &rec[1..]; // [3, 32, 32]
        for (p, px) in out.chunks_exact_mut(CHANNELS).enumerate() {
            for (c, v) in px.iter_mut().enumerate() {
                *v = chw[c * PLANE + p] as f32 / 255.0;
            }
        }
    }
    Ok(Dataset {
        x,
        y,
        sample_shape: vec![SIDE, SIDE, CHANNELS],
        n,
        classes: CIFAR10_CLASSES,
    })
}

/// Loads CIFAR-10 from a directory holding `data_batch_1.bin` .. `data_batch_5.bin` and
/// optionally `test_batch.bin` (or from its `cifar-10-batches-bin` subdirectory, as the
/// archive unpacks). Returns the 50,000-sample training set and the test set if present.
pub fn load_cifar10_dir(dir: &Path) -> Result<(Dataset, Option<Dataset>), DataError> {
    let nested = dir.join("cifar-10-batches-bin");
    let base: PathBuf = if !dir.join("data_batch_1.bin").is_file() && nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    };
    let names: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}.bin")).collect();
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !base.join(n).is_file())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(DataError::MissingFiles {
            dir: base,
            expected: format!(
                "data_batch_1.bin .. data_batch_5.bin (optionally test_batch.bin); missing {}",
                missing.join(", ")
            ),
        });
    }
    let mut train = Dataset {
        sample_shape: vec![SIDE, SIDE, CHANNELS],
        classes: CIFAR10_CLASSES,
        ..Dataset::default()
    };
    for name in &names {
        let part = load_cifar10_batch(&base.join(name))?;
        train.x.extend_from_slice(&part.x);
        train.y.extend_from_slice(&part.y);
        train.n += part.n;
    }
    let test_path = base.join("test_batch.bin");
    let test = if test_path.is_file() {
        Some(load_cifar10_batch(&test_path)?)
    } else {
        None
    };
    Ok((train, test))
}
