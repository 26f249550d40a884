//! Safetensors weight files: bit-exact round trips, atomic saving, and errors naming the
//! tensor for truncated, garbage, mismatched and incomplete files.

use std::path::Path;

use cnnc_runtime::init::init_params;
use cnnc_runtime::weights::{load_weights, save_weights, WeightsError};
use cnnc_runtime::{Init, ParamSpec, Tensor};
use tempfile::TempDir;

fn specs() -> Vec<ParamSpec> {
    let p = |name: &str, shape: &[usize], init, trainable| ParamSpec {
        name: name.into(),
        shape: shape.to_vec(),
        init,
        trainable,
    };
    vec![
        p("conv2d.kernel", &[3, 3, 1, 4], Init::GlorotUniform, true),
        p("conv2d.bias", &[4], Init::Zeros, true),
        p("batch_normalization.moving_mean", &[4], Init::Zeros, false),
        p("dense.kernel", &[36, 10], Init::HeNormal, true),
        p("dense.bias", &[10], Init::Zeros, true),
    ]
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn save_then_load_is_bit_exact() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("model.safetensors");
    let specs = specs();
    let mut params = init_params(&specs, 3);
    params[1].data = vec![f32::MIN_POSITIVE, -0.0, 1e-45, f32::MAX]; // subnormal, signed zero
    save_weights(&path, &specs, &params).unwrap();
    let loaded = load_weights(&path, &specs).unwrap();
    for (a, b) in params.iter().zip(&loaded) {
        assert_eq!(a.shape, b.shape);
        let bits = |t: &Tensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b));
    }
    assert_eq!(
        files_in(dir.path()),
        vec!["model.safetensors"],
        "no temporary files left"
    );

    // Overwriting replaces the file atomically.
    params[0].data[0] = 42.0;
    save_weights(&path, &specs, &params).unwrap();
    assert_eq!(load_weights(&path, &specs).unwrap()[0].data[0], 42.0);
    assert_eq!(files_in(dir.path()), vec!["model.safetensors"]);
}

#[test]
fn the_file_is_plain_safetensors_with_keras_names() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("w.safetensors");
    save_weights(&path, &specs(), &init_params(&specs(), 0)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        vec![
            "batch_normalization.moving_mean",
            "conv2d.bias",
            "conv2d.kernel",
            "dense.bias",
            "dense.kernel"
        ]
    );
    let k = st.tensor("conv2d.kernel").unwrap();
    assert_eq!(
        (k.dtype(), k.shape()),
        (safetensors::Dtype::F32, &[3usize, 3, 1, 4][..])
    );
}

#[test]
fn failed_save_leaves_no_file() {
    let dir = TempDir::new().unwrap();
    let missing_dir = dir.path().join("nope").join("w.safetensors");
    let err = save_weights(&missing_dir, &specs(), &init_params(&specs(), 0)).unwrap_err();
    assert!(matches!(err, WeightsError::Io { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");

    // Parameters that do not match their specs are refused before anything is written.
    let path = dir.path().join("w.safetensors");
    let mut params = init_params(&specs(), 0);
    params[3] = Tensor::zeros(&[10, 36]);
    let msg = save_weights(&path, &specs(), &params).unwrap_err().to_string();
    assert!(msg.contains("dense.kernel") && msg.contains("[10, 36]"), "{msg}");
    assert!(files_in(dir.path()).is_empty(), "{:?}", files_in(dir.path()));
}

#[test]
fn truncated_file_names_the_cut_tensor() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("w.safetensors");
    save_weights(&path, &specs(), &init_params(&specs(), 0)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
    let err = load_weights(&path, &specs()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WeightsError::Corrupt { .. }), "{msg}");
    assert!(msg.contains("truncated") && msg.contains("w.safetensors"), "{msg}");
    // Tensors are stored sorted by name: dense.kernel comes last.
    assert!(msg.contains("dense.kernel"), "{msg}");

    for len in [0, 5, 8, 30] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        assert!(
            matches!(load_weights(&path, &specs()), Err(WeightsError::Corrupt { .. })),
            "{len}"
        );
    }
}

#[test]
fn garbage_bytes_are_an_error() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("w.safetensors");
    for bytes in [
        &b"this is not a safetensors file at all"[..],
        &[0xff; 64],
        &[16, 0, 0, 0, 0, 0, 0, 0, b'{'],
    ] {
        std::fs::write(&path, bytes).unwrap();
        let msg = load_weights(&path, &specs()).unwrap_err().to_string();
        assert!(msg.contains("not a valid safetensors file"), "{msg}");
    }
    let missing = dir.path().join("absent.safetensors");
    assert!(matches!(load_weights(&missing, &specs()), Err(WeightsError::Io { .. })));
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("w.safetensors");
    save_weights(&path, &specs(), &init_params(&specs(), 0)).unwrap();
    let mut other = specs();
    other[3].shape = vec![36, 12];
    other[4].shape = vec![12];
    let err = load_weights(&path, &other).unwrap_err();
    assert!(
        matches!(&err, WeightsError::Shape { name, expected, found, .. }
            if name == "dense.kernel" && expected == &vec![36, 12] && found == &vec![36, 10]),
        "{err}"
    );
}

#[test]
fn missing_and_unexpected_tensors_are_listed() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("w.safetensors");
    let specs = specs();
    save_weights(&path, &specs[..3], &init_params(&specs[..3], 0)).unwrap();
    let msg = load_weights(&path, &specs).unwrap_err().to_string();
    assert!(msg.contains("missing tensor(s) dense.kernel, dense.bias"), "{msg}");

    save_weights(&path, &specs, &init_params(&specs, 0)).unwrap();
    let msg = load_weights(&path, &specs[..3]).unwrap_err().to_string();
    assert!(
        msg.contains("dense.bias, dense.kernel") && msg.contains("not parameters"),
        "{msg}"
    );
}

#[test]
fn wrong_dtype_is_an_error() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("w.safetensors");
    let data = vec![0u8; 8];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![1], &data).unwrap();
    std::fs::write(&path, safetensors::serialize([("conv2d.bias", view)], None).unwrap()).unwrap();
    let spec = vec![ParamSpec {
        name: "conv2d.bias".into(),
        shape: vec![1],
        init: Init::Zeros,
        trainable: true,
    }];
    let msg = load_weights(&path, &spec).unwrap_err().to_string();
    assert!(msg.contains("conv2d.bias") && msg.contains("F64"), "{msg}");
}

/// A device (or any file) longer than the model's weights plus the largest header is refused
/// after reading that much, not read to its end.
#[cfg(unix)]
#[test]
fn an_endless_file_is_refused() {
    let err = load_weights(Path::new("/dev/zero"), &specs()).unwrap_err();
    assert!(matches!(err, WeightsError::TooLarge { .. }), "{err}");
    assert!(err.to_string().starts_with("/dev/zero: more than"), "{err}");
}

#[test]
fn non_finite_values_are_refused_naming_tensor_and_index() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("w.safetensors");
    let specs = specs();
    for (value, shown) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf")] {
        let mut params = init_params(&specs, 1);
        params[3].data[45] = value; // dense.kernel [36, 10]: row 4, column 5
        params[3].data[300] = f32::NAN; // later bad values are not the ones reported
        save_weights(&path, &specs, &params).unwrap();
        let err = load_weights(&path, &specs).unwrap_err();
        assert!(matches!(err, WeightsError::NonFinite { index: 45, .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: tensor dense.kernel holds {shown} at index 45 (position [4, 5] of shape [36, 10]); \
                 weights must be finite",
                path.display()
            )
        );
    }
}

/// A safetensors file with `header` (JSON) and `data` bytes after it.
fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    f.extend_from_slice(data);
    f
}

/// Headers the `safetensors` crate refuses without naming the tensor (or at all clearly): the
/// message names the file and, where one is at fault, the tensor.
#[test]
fn bad_headers_name_the_file_and_the_tensor() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("w.safetensors");
    let spec = vec![ParamSpec {
        name: "conv2d.bias".into(),
        shape: vec![4],
        init: Init::Zeros,
        trainable: true,
    }];
    let cases = [
        (
            with_header("{\"conv2d.bias\": {", &[]),
            "the header is not a JSON object: EOF",
        ),
        (with_header("[1, 2]", &[]), "the header is not a JSON object"),
        (
            with_header(
                r#"{"conv2d.bias":{"dtype":"F33","shape":[4],"data_offsets":[0,16]}}"#,
                &[0; 16],
            ),
            "tensor conv2d.bias: unknown dtype \"F33\"",
        ),
        (
            with_header(
                r#"{"conv2d.bias":{"dtype":"F32","shape":"4","data_offsets":[0,16]}}"#,
                &[0; 16],
            ),
            "tensor conv2d.bias: shape \"4\" is not a list of sizes",
        ),
        (
            with_header(
                r#"{"conv2d.bias":{"dtype":"F32","shape":[4],"data_offsets":[0,4096]}}"#,
                &[0; 16],
            ),
            "truncated: tensor conv2d.bias ends at data byte 4096 but the file holds only 16 data bytes",
        ),
        (
            with_header(
                r#"{"conv2d.bias":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            "tensor conv2d.bias: data_offsets [0, 8] hold 8 bytes, but F32 of shape [4] needs 16",
        ),
        (
            with_header(
                r#"{"conv2d.bias":{"dtype":"F32","shape":[4],"data_offsets":[4,20]}}"#,
                &[0; 20],
            ),
            "tensor conv2d.bias: data_offsets [4, 20] do not start where the previous tensor ends (0)",
        ),
        (
            with_header(
                r#"{"conv2d.bias":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                &[0; 20],
            ),
            "4 bytes after the last tensor's data (padded file)",
        ),
        (
            vec![200, 0, 0, 0, 0, 0, 0, 0, b'{'],
            "the header length says 200 bytes but only 1 follow",
        ),
    ];
    for (bytes, want) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let err = load_weights(&path, &spec).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, WeightsError::Corrupt { .. }), "{msg}");
        assert!(
            msg.starts_with(&format!("{}: not a valid safetensors file: ", path.display())),
            "{msg}"
        );
        assert!(msg.contains(want), "{msg}\nwanted: {want}");
    }
    // A valid file of another dtype or shape names the tensor (checked against the model).
    let f16 = with_header(
        r#"{"conv2d.bias":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    std::fs::write(&path, f16).unwrap();
    let msg = load_weights(&path, &spec).unwrap_err().to_string();
    assert!(msg.contains("tensor conv2d.bias has dtype F16, expected F32"), "{msg}");
    let shape = with_header(
        r#"{"conv2d.bias":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
        &[0; 16],
    );
    std::fs::write(&path, shape).unwrap();
    let msg = load_weights(&path, &spec).unwrap_err().to_string();
    assert!(
        msg.contains("tensor conv2d.bias has shape [2, 2], expected [4]"),
        "{msg}"
    );
}
