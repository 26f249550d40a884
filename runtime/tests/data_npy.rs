//! `.npy` files as NumPy writes them (float32, uint8, float64 images; integer, float and
//! one-hot labels) read back; the atomic writer round trip; and corrupt files.

mod support;

use cnnc_runtime::data::{load_npy_pair, read_npy, write_npy_f32, DataError, NpyValues};
use support::{npy_bytes, write};
use tempfile::TempDir;

fn f32_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn float32_nhwc_images_with_int64_labels() {
    let dir = TempDir::new().unwrap();
    let (xp, yp) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    let x: Vec<f32> = (0..8).map(|i| i as f32 * 0.5).collect();
    write(&xp, &npy_bytes("<f4", &[2, 2, 2, 1], &f32_le(&x)));
    let y: Vec<u8> = [3i64, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    write(&yp, &npy_bytes("<i8", &[2], &y));
    let d = load_npy_pair(&xp, &yp, Some(4)).unwrap();
    assert_eq!((d.n, d.classes), (2, 4));
    assert_eq!(d.sample_shape, vec![2, 2, 1]);
    assert_eq!(d.x, x, "float data is taken as is");
    assert_eq!(d.y, vec![3.0, 1.0]);
}

#[test]
fn uint8_images_are_scaled_and_get_a_channel_axis() {
    let dir = TempDir::new().unwrap();
    let (xp, yp) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    // keras.datasets.mnist.load_data() gives uint8 [n, 28, 28]; here [2, 1, 2].
    write(&xp, &npy_bytes("|u1", &[2, 1, 2], &[0, 51, 255, 102]));
    write(&yp, &npy_bytes("|u1", &[2], &[0, 2]));
    let d = load_npy_pair(&xp, &yp, None).unwrap();
    assert_eq!(d.sample_shape, vec![1, 2, 1]);
    assert_eq!(d.x, vec![0.0, 0.2, 1.0, 0.4]);
    assert_eq!(d.classes, 3, "inferred as the largest label + 1");
}

#[test]
fn float64_images_big_endian_float_labels_and_one_hot_labels() {
    let dir = TempDir::new().unwrap();
    let (xp, yp) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    let x: Vec<u8> = [0.25f64, -1.5, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    write(&xp, &npy_bytes("<f8", &[3, 1], &x));
    let y: Vec<u8> = [2.0f32, 0.0, 1.0].iter().flat_map(|v| v.to_be_bytes()).collect();
    write(&yp, &npy_bytes(">f4", &[3, 1], &y));
    let d = load_npy_pair(&xp, &yp, Some(3)).unwrap();
    assert_eq!(d.sample_shape, vec![1]);
    assert_eq!(d.x, vec![0.25, -1.5, 2.0]);
    assert_eq!(d.y, vec![2.0, 0.0, 1.0]);

    let one_hot = f32_le(&[0., 0., 1., 0., 1., 0., 0., 0., 0., 0., 0., 1.]);
    write(&yp, &npy_bytes("<f4", &[3, 4], &one_hot));
    let d = load_npy_pair(&xp, &yp, None).unwrap();
    assert_eq!((d.y.clone(), d.classes), (vec![2.0, 0.0, 3.0], 4));
    let not_one_hot = f32_le(&[0., 0.5, 0.5, 0., 1., 0., 0., 0., 0., 0., 0., 1.]);
    write(&yp, &npy_bytes("<f4", &[3, 4], &not_one_hot));
    let msg = load_npy_pair(&xp, &yp, None).unwrap_err().to_string();
    assert!(msg.contains("row 0 is not one-hot"), "{msg}");
    // One-hot rows of another width than the model's classes.
    write(&yp, &npy_bytes("<f4", &[3, 4], &one_hot));
    let msg = load_npy_pair(&xp, &yp, Some(10)).unwrap_err().to_string();
    assert!(
        msg.contains("y.npy") && msg.contains("one-hot rows of 4 classes, but 10 are expected"),
        "{msg}"
    );
}

#[test]
fn bad_labels_name_file_index_and_value() {
    let dir = TempDir::new().unwrap();
    let (xp, yp) = (dir.path().join("x.npy"), dir.path().join("labels.npy"));
    write(&xp, &npy_bytes("<f4", &[3, 1], &f32_le(&[0.0; 3])));
    let y: Vec<u8> = [1i32, 7, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    write(&yp, &npy_bytes("<i4", &[3], &y));
    let err = load_npy_pair(&xp, &yp, Some(5)).unwrap_err();
    assert!(
        matches!(err, DataError::LabelOutOfRange { index: 1, value, .. } if value == 7.0),
        "{err}"
    );
    assert!(err.to_string().contains("labels.npy"));

    write(&yp, &npy_bytes("<f4", &[3], &f32_le(&[1.0, 0.5, 2.0])));
    let msg = load_npy_pair(&xp, &yp, None).unwrap_err().to_string();
    assert!(msg.contains("sample 1 has label 0.5"), "{msg}");
    let y: Vec<u8> = [1i32, -2, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    write(&yp, &npy_bytes("<i4", &[3], &y));
    assert!(load_npy_pair(&xp, &yp, None)
        .unwrap_err()
        .to_string()
        .contains("sample 1 has label -2"));

    let y: Vec<u8> = [1i32, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    write(&yp, &npy_bytes("<i4", &[2], &y));
    assert!(matches!(
        load_npy_pair(&xp, &yp, None),
        Err(DataError::CountMismatch {
            images: 3,
            labels: 2,
            ..
        })
    ));
}

#[test]
fn writer_round_trips_and_numpy_header_is_valid() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("w.npy");
    let data: Vec<f32> = (0..24).map(|i| (i as f32).sin()).collect();
    write_npy_f32(&path, &[2, 3, 4], &data).unwrap();
    let arr = read_npy(&path).unwrap();
    assert_eq!(arr.shape, vec![2, 3, 4]);
    assert_eq!(arr.values, NpyValues::F32(data.clone()));
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY"));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["w.npy"], "no temporary file left behind");

    assert!(write_npy_f32(&path, &[5], &data).is_err(), "shape must match the data");
    let missing = dir.path().join("no-such-dir").join("w.npy");
    assert!(matches!(
        write_npy_f32(&missing, &[24], &data),
        Err(DataError::Io { .. })
    ));
}

#[test]
fn corrupt_and_truncated_files_are_errors() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("bad.npy");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"garbage garbage garbage".to_vec(), "not a valid .npy file"),
        (npy_bytes("<f4", &[4, 2], &f32_le(&[1.0; 7])), "truncated"),
        (npy_bytes("<c8", &[1], &[0; 8]), "not supported"),
        (npy_bytes("<f4", &[1 << 40, 1 << 40, 1 << 40], &[]), "impossibly large"),
        (
            npy_bytes("<f4", &[1 << 20, 1 << 20], &[]),
            "more than the 17179869184 allowed",
        ),
        (
            [&b"\x93NUMPY\x02\x00\xff\xff\xff\xff"[..], b"{'descr': '<f4'"].concat(),
            "the header claims 4294967295 bytes",
        ),
        (
            npy_bytes("<f4", &[1], &[0; 4])
                .iter()
                .map(|&b| if b == b'F' { b'T' } else { b })
                .collect(),
            "not a valid .npy file",
        ),
    ];
    for (bytes, needle) in cases {
        write(&path, &bytes);
        let msg = read_npy(&path).unwrap_err().to_string();
        assert!(msg.contains(needle) && msg.contains("bad.npy"), "{needle}: {msg}");
    }
}

#[test]
fn fortran_order_is_rejected_with_advice() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("f.npy");
    let mut bytes = npy_bytes("<f4", &[2, 2], &f32_le(&[0.0; 4]));
    let at = bytes.windows(5).position(|w| w == b"False").unwrap();
    bytes[at..at + 5].copy_from_slice(b"True ");
    write(&path, &bytes);
    let msg = read_npy(&path).unwrap_err().to_string();
    assert!(msg.contains("Fortran") && msg.contains("ascontiguousarray"), "{msg}");
}

#[test]
fn dataset_directories_are_recognised_by_their_files() {
    let dir = TempDir::new().unwrap();
    let msg = cnnc_runtime::data::load_dataset_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("x_train.npy") && msg.contains("data_batch_1.bin") && msg.contains("idx3"),
        "{msg}"
    );

    write(
        &dir.path().join("x_train.npy"),
        &npy_bytes("|u1", &[2, 1, 1], &[0, 255]),
    );
    write(&dir.path().join("y_train.npy"), &npy_bytes("|u1", &[2], &[1, 4]));
    write(&dir.path().join("x_test.npy"), &npy_bytes("|u1", &[1, 1, 1], &[51]));
    write(&dir.path().join("y_test.npy"), &npy_bytes("|u1", &[1], &[2]));
    let (train, test) = cnnc_runtime::data::load_dataset_dir(dir.path()).unwrap();
    assert_eq!(
        (train.n, train.classes, train.sample_shape.clone()),
        (2, 5, vec![1, 1, 1])
    );
    assert_eq!(test.unwrap().x, vec![0.2]);

    let mnist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist");
    let (train, _) = cnnc_runtime::data::load_dataset_dir(&mnist).unwrap();
    assert_eq!(train.n, 60_000);
}

#[test]
fn half_a_pair_names_the_missing_file() {
    let dir = TempDir::new().unwrap();
    let (xp, yp) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    write(&xp, &npy_bytes("|u1", &[1, 1, 1], &[0]));
    let msg = load_npy_pair(&xp, &yp, None).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: no such file (the labels of the pair with {})",
            yp.display(),
            xp.display()
        )
    );
    let msg = load_npy_pair(&yp, &xp, None).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}: no such file (the images", yp.display())),
        "{msg}"
    );
}
