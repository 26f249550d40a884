//! Whole-file reads that transparently decompress gzip (detected by its magic bytes, not by
//! the file name), so `train-images-idx3-ubyte` and `train-images-idx3-ubyte.gz` both work.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::DataError;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The file's bytes, gunzipped when it is a gzip stream.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|source| DataError::Gzip {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(out)
}
