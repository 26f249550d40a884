//! Whole-file reads that transparently decompress gzip (detected by its magic bytes, not by
//! the file name), so `train-images-idx3-ubyte` and `train-images-idx3-ubyte.gz` both work.
//! Reads are bounded: neither a file nor what it decompresses to may exceed a ceiling, so a
//! device, a pipe or a gzip bomb is refused instead of filling memory.

use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::bounded::{open_file, read_capped, read_to_end_capped};
use super::DataError;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Largest dataset file accepted, before or after decompression (8 GiB: far above MNIST's
/// 47 MB or a CIFAR-10 batch's 30 MB, below what would exhaust memory silently).
pub const MAX_DATASET_FILE_BYTES: u64 = 8 << 30;

/// The file's bytes, gunzipped when it is a gzip stream; at most
/// [`MAX_DATASET_FILE_BYTES`] either way.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    read_maybe_gzip_capped(path, MAX_DATASET_FILE_BYTES)
}

/// [`read_maybe_gzip`] with a ceiling of `max` bytes on the file and on its decompressed content.
pub fn read_maybe_gzip_capped(path: &Path, max: u64) -> Result<Vec<u8>, DataError> {
    let raw = read_capped(path, max)
        .map_err(|e| DataError::io(path, e))?
        .ok_or_else(|| too_large(path, max, false))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    read_to_end_capped(MultiGzDecoder::new(raw.as_slice()), max, raw.len().saturating_mul(4))
        .map_err(|source| DataError::Gzip {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| too_large(path, max, true))
}

fn too_large(path: &Path, max: u64, decompressed: bool) -> DataError {
    let what = if decompressed { "decompresses to" } else { "holds" };
    DataError::format(
        path,
        format!("{what} more than {max} bytes (the most a dataset file may hold)"),
    )
}

/// A reader of the file's content, gunzipped when it is a gzip stream (and whether it is).
pub(crate) fn open_maybe_gzip(path: &Path) -> Result<(Box<dyn Read>, bool), DataError> {
    let mut file = open_file(path).map_err(|e| DataError::io(path, e))?;
    let mut magic = Vec::with_capacity(2);
    (&mut file)
        .take(2)
        .read_to_end(&mut magic)
        .map_err(|e| DataError::io(path, e))?;
    let gz = magic == GZIP_MAGIC;
    let reader = std::io::Cursor::new(magic).chain(file);
    Ok(if gz {
        (Box::new(MultiGzDecoder::new(BufReader::new(reader))), true)
    } else {
        (Box::new(reader), false)
    })
}
