//! `cnnc predict` end to end: seed 000 §9.1's printed numbers through the command line, any
//! number of samples for a fixed compiled batch, and atomic output.

mod support;

use cnnc_compiler::tolerance::Tolerance;
use cnnc_runtime::data::{read_npy, write_npy_f32, NpyValues};
use cnnc_runtime::weights::save_weights;
use cnnc_runtime::{Init, ParamSpec, Tensor};
use support::{cnnc, model};

#[rustfmt::skip]
const IMAGE: [f32; 16] = [
    0.0, 1.0, -1.0, 2.0,
    -1.0, 2.0, 1.0, 0.1,
    0.0, 0.1, 1.0, -1.0,
    3.0, 1.0, 1.0, 1.0,
];
#[rustfmt::skip]
const KERNEL: [f32; 9] = [
    -0.20663663, -0.52216303, -0.18993356,
    0.35366662, -0.25309275, -0.4699023,
    -0.44492979, -0.28197704, 0.03117762,
];
/// The pooled 2x2 map the seed prints.
const PRINTED_POOL: [f32; 4] = [0.12896288, -0.01473809, 0.09585495, 0.41610027];

fn seed_weights(dir: &std::path::Path) -> std::path::PathBuf {
    let spec = |name: &str, shape: &[usize]| ParamSpec {
        name: name.into(),
        shape: shape.to_vec(),
        init: Init::Zeros,
        trainable: true,
    };
    let specs = [spec("conv2d.kernel", &[3, 3, 1, 1]), spec("conv2d.bias", &[1])];
    let params = [
        Tensor::from_vec(&[3, 3, 1, 1], KERNEL.to_vec()).unwrap(),
        Tensor::from_vec(&[1], vec![0.0]).unwrap(),
    ];
    let path = dir.join("seed000.safetensors");
    save_weights(&path, &specs, &params).unwrap();
    path
}

fn read_f32(path: &std::path::Path) -> (Vec<usize>, Vec<f32>) {
    let arr = read_npy(path).unwrap();
    match arr.values {
        NpyValues::F32(v) => (arr.shape, v),
        _ => panic!("predictions must be float32"),
    }
}

#[test]
fn seed000_example_through_the_cli_gives_the_printed_pool() {
    let dir = tempfile::tempdir().unwrap();
    let weights = seed_weights(dir.path());
    let input = dir.path().join("x.npy");
    write_npy_f32(&input, &[1, 4, 4, 1], &IMAGE).unwrap();
    let output = dir.path().join("y.npy");
    let run = cnnc([
        "predict".as_ref(),
        model("examples/seed000_conv_pool.yaml").as_os_str(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        output.as_os_str(),
    ]);
    run.assert_ok();
    let (shape, y) = read_f32(&output);
    assert_eq!(shape, vec![1, 4]);
    Tolerance::EXACT.assert_close("seed 000 pooled map via cnnc predict", &y, &PRINTED_POOL);
}

/// Seven samples through a model compiled for batches of 3: two full batches and a partial one,
/// each row equal to the single-sample answer.
#[test]
fn predict_accepts_any_number_of_samples() {
    let dir = tempfile::tempdir().unwrap();
    let weights = seed_weights(dir.path());
    let n = 7;
    let x: Vec<f32> = (0..n)
        .flat_map(|i| IMAGE.iter().map(move |v| v * (i as f32 + 1.0)))
        .collect();
    let input = dir.path().join("x.npy");
    write_npy_f32(&input, &[n, 4, 4, 1], &x).unwrap();
    let output = dir.path().join("y.npy");
    let args = |batch: &str, out: &std::path::Path| {
        vec![
            "predict".into(),
            model("examples/seed000_conv_pool.yaml").into_os_string(),
            "--weights".into(),
            weights.clone().into_os_string(),
            "--input".into(),
            input.clone().into_os_string(),
            "--output".into(),
            out.as_os_str().to_owned(),
            "--batch-size".into(),
            batch.into(),
        ]
    };
    cnnc(args("3", &output)).assert_ok();
    let (shape, y) = read_f32(&output);
    assert_eq!(shape, vec![n, 4]);
    // Scaling the input by s > 0 scales conv (zero bias) and max-pool outputs by s.
    for i in 0..n {
        let want: Vec<f32> = PRINTED_POOL.iter().map(|v| v * (i as f32 + 1.0)).collect();
        Tolerance::KERNEL.assert_close(&format!("sample {i}"), &y[i * 4..(i + 1) * 4], &want);
    }
    let output1 = dir.path().join("y1.npy");
    cnnc(args("1", &output1)).assert_ok();
    let (_, y1) = read_f32(&output1);
    Tolerance::EXACT.assert_close("batch 1 vs batch 3", &y1, &y);
}

/// A model ending in feature maps (no flatten, no classifier) writes `[N, H, W, C]`, each value
/// the convolution's: a 3x3 `same` conv with an all-0.1 kernel on a constant 0.5 image.
#[test]
fn a_model_ending_in_feature_maps_writes_them_with_their_shape() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("maps.yaml");
    std::fs::write(
        &yaml,
        "name: maps\ninput: [4, 4, 1]\nlayers:\n  - conv2d: {filters: 2, kernel_size: 3, padding: same}\n",
    )
    .unwrap();
    let spec = |name: &str, shape: &[usize]| ParamSpec {
        name: name.into(),
        shape: shape.to_vec(),
        init: Init::Zeros,
        trainable: true,
    };
    let weights = dir.path().join("w.safetensors");
    save_weights(
        &weights,
        &[spec("conv2d.kernel", &[3, 3, 1, 2]), spec("conv2d.bias", &[2])],
        &[
            Tensor::from_vec(&[3, 3, 1, 2], vec![0.1; 18]).unwrap(),
            Tensor::from_vec(&[2], vec![0.0, 1.0]).unwrap(),
        ],
    )
    .unwrap();
    let input = dir.path().join("x.npy");
    write_npy_f32(&input, &[3, 4, 4, 1], &[0.5; 48]).unwrap();
    // Neighbours inside the image: 4 at a corner, 6 on an edge, 9 inside.
    #[rustfmt::skip]
    let taps = [4.0, 6.0, 6.0, 4.0, 6.0, 9.0, 9.0, 6.0, 6.0, 9.0, 9.0, 6.0, 4.0, 6.0, 6.0, 4.0f32];
    let want: Vec<f32> = (0..3)
        .flat_map(|_| taps.iter().flat_map(|t| [0.05 * t, 0.05 * t + 1.0]))
        .collect();
    for backend in ["kernels", "interp"] {
        let output = dir.path().join(format!("y-{backend}.npy"));
        let run = cnnc([
            "predict".as_ref(),
            yaml.as_os_str(),
            "--weights".as_ref(),
            weights.as_os_str(),
            "--input".as_ref(),
            input.as_os_str(),
            "--output".as_ref(),
            output.as_os_str(),
            "--backend".as_ref(),
            backend.as_ref(),
            "--batch-size".as_ref(),
            "2".as_ref(),
        ]);
        run.assert_ok();
        let (shape, y) = read_f32(&output);
        assert_eq!(shape, vec![3, 4, 4, 2], "{backend}");
        Tolerance::KERNEL.assert_close(backend, &y, &want);
    }
}
