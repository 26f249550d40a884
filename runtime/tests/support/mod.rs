//! Helpers shared by the runtime's integration tests: an elementwise closeness check (the
//! runtime cannot depend on the compiler's `Tolerance`) and writers of the real file formats.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// `|a - e| <= abs + rel * max(|a|, |e|)` elementwise.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs: f32,
    pub rel: f32,
}

impl Tol {
    pub const TIGHT: Tol = Tol { abs: 1e-6, rel: 1e-5 };
}

/// Panics naming the worst element when `actual` and `expected` differ beyond `tol`.
pub fn assert_close(actual: &[f32], expected: &[f32], tol: Tol, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let mut worst: Option<(usize, f32)> = None;
    let mut failures = 0;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let d = (a - e).abs();
        let ok = !a.is_nan() && !e.is_nan() && d <= tol.abs + tol.rel * a.abs().max(e.abs());
        if !ok {
            failures += 1;
            let d = if d.is_nan() { f32::INFINITY } else { d };
            if worst.is_none_or(|(_, w)| d > w) {
                worst = Some((i, d));
            }
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: {failures} element(s) differ beyond {tol:?}; worst at [{i}]: actual {} expected {}",
            actual[i], expected[i]
        );
    }
}

/// An IDX file of unsigned bytes: `00 00 08 ndim`, big-endian u32 dims, data.
pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// A `.npy` file as NumPy writes it (format 1.0, header padded to 64 bytes) with a given
/// `descr` and raw little-endian data.
pub fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}
