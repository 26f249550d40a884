//! Whole-file reads with a ceiling: a regular file's length is checked before reading, and
//! anything else (a device such as `/dev/zero`, a pipe) is read only up to the ceiling, so no
//! input can make a loader allocate without bound.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Opens `path` for reading, refusing a directory (which Unix opens, only for reads to fail
/// with a bare "Is a directory").
pub(crate) fn open_file(path: &Path) -> std::io::Result<File> {
    let file = File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a directory, expected a file",
        ));
    }
    Ok(file)
}

/// The bytes of `path` if it holds at most `max` of them; `Ok(None)` if it holds more.
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let file = open_file(path)?;
    let meta = file.metadata()?;
    if meta.is_file() && meta.len() > max {
        return Ok(None);
    }
    let capacity = if meta.is_file() { meta.len() as usize } else { 0 };
    read_to_end_capped(file, max, capacity)
}

/// Reads from `reader` to its end if it yields at most `max` bytes; `Ok(None)` if it yields
/// more (only `max + 1` are read).
pub fn read_to_end_capped(reader: impl Read, max: u64, capacity: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::with_capacity(capacity.min(max as usize));
    reader.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_and_over_the_ceiling() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, [7u8; 10]).unwrap();
        assert_eq!(read_capped(&p, 10).unwrap(), Some(vec![7u8; 10]));
        assert_eq!(read_capped(&p, 9).unwrap(), None);
    }

    #[cfg(unix)]
    #[test]
    fn an_endless_device_stops_at_the_ceiling() {
        assert_eq!(read_capped(Path::new("/dev/zero"), 1 << 20).unwrap(), None);
    }

    #[test]
    fn a_directory_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_capped(dir.path(), 10).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::IsADirectory);
        assert_eq!(err.to_string(), "is a directory, expected a file");
    }

    #[test]
    fn readers_stop_at_the_ceiling() {
        assert_eq!(read_to_end_capped(&[1u8, 2, 3][..], 3, 8).unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(read_to_end_capped(std::io::repeat(0), 100, 8).unwrap(), None);
    }
}
