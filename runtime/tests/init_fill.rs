//! Initialisers: Keras's fans, bounds and moments on large fills, and seeding of
//! `init_params`.

use cnnc_runtime::init::{fans, init_params};
use cnnc_runtime::rng::Rng;
use cnnc_runtime::{Init, ParamSpec};

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Checks the bound, and that mean and standard deviation are within 3% of `std` (the
/// sampling error of either is below 0.5% at these sizes).
fn check(init: Init, shape: &[usize], mean: f64, std: f64, bound: f64) {
    let v = init.fill(shape, &mut Rng::new(7));
    assert_eq!(v.len(), shape.iter().product::<usize>());
    let worst = v.iter().map(|&x| (x as f64 - mean).abs()).fold(0.0, f64::max);
    assert!(
        worst <= bound * (1.0 + 1e-6),
        "{init} {shape:?}: |x - mean| reaches {worst} > {bound}"
    );
    let (m, s) = mean_std(&v);
    assert!(
        (m - mean).abs() < 0.03 * std,
        "{init} {shape:?}: mean {m}, expected {mean}"
    );
    assert!(
        (s - std).abs() < 0.03 * std,
        "{init} {shape:?}: std {s}, expected {std}"
    );
}

#[test]
fn fans_follow_keras() {
    assert_eq!(fans(&[784, 128]), (784, 128));
    assert_eq!(fans(&[3, 3, 16, 32]), (144, 288));
    assert_eq!(fans(&[5, 5, 1, 6]), (25, 150));
    assert_eq!(fans(&[10]), (10, 10));
    assert_eq!(fans(&[]), (1, 1));
}

#[test]
fn glorot_uniform_dense_and_conv() {
    let limit = (6.0f64 / (300.0 + 200.0)).sqrt();
    check(Init::GlorotUniform, &[300, 200], 0.0, limit / 3f64.sqrt(), limit);
    let limit = (6.0f64 / (144.0 + 288.0)).sqrt();
    check(Init::GlorotUniform, &[3, 3, 16, 32], 0.0, limit / 3f64.sqrt(), limit);
}

#[test]
fn he_uniform() {
    let limit = (6.0f64 / 576.0).sqrt();
    check(Init::HeUniform, &[3, 3, 64, 128], 0.0, limit / 3f64.sqrt(), limit);
}

#[test]
fn he_normal_is_truncated_with_the_requested_std() {
    // Keras: stddev = sqrt(2 / fan_in) / 0.8796..., truncated at two of those stddevs; the
    // truncated draws then have standard deviation sqrt(2 / fan_in).
    let std = (2.0f64 / 576.0).sqrt();
    check(
        Init::HeNormal,
        &[3, 3, 64, 128],
        0.0,
        std,
        2.0 * std / 0.879_625_661_034_239_8,
    );
}

#[test]
fn glorot_normal_is_truncated_with_the_requested_std() {
    let std = (2.0f64 / (400.0 + 300.0)).sqrt();
    check(
        Init::GlorotNormal,
        &[400, 300],
        0.0,
        std,
        2.0 * std / 0.879_625_661_034_239_8,
    );
}

#[test]
fn random_normal_and_uniform() {
    check(
        Init::RandomNormal {
            mean: 0.5,
            stddev: 0.05,
        },
        &[200_000],
        0.5,
        0.05,
        0.05 * 6.0,
    );
    check(
        Init::RandomUniform { min: -0.2, max: 0.6 },
        &[500, 400],
        0.2,
        0.8 / 12f64.sqrt(),
        0.4,
    );
}

#[test]
fn constants() {
    let mut rng = Rng::new(1);
    assert_eq!(Init::Zeros.fill(&[2, 3], &mut rng), vec![0.0; 6]);
    assert_eq!(Init::Ones.fill(&[4], &mut rng), vec![1.0; 4]);
    assert_eq!(Init::Constant(0.25).fill(&[2], &mut rng), vec![0.25; 2]);
}

fn spec(name: &str, shape: &[usize], init: Init) -> ParamSpec {
    ParamSpec {
        name: name.into(),
        shape: shape.to_vec(),
        init,
        trainable: true,
    }
}

#[test]
fn init_params_is_seeded_and_each_parameter_has_its_own_stream() {
    let specs = vec![
        spec("conv2d.kernel", &[3, 3, 1, 8], Init::GlorotUniform),
        spec("conv2d.bias", &[8], Init::Zeros),
        spec("dense.kernel", &[72, 10], Init::HeNormal),
    ];
    let a = init_params(&specs, 1);
    assert_eq!(a, init_params(&specs, 1), "same seed, same values");
    assert_ne!(a[0], init_params(&specs, 2)[0], "another seed, other values");
    assert_eq!(a[1].data, vec![0.0; 8]);
    assert_eq!(a[2].shape, vec![72, 10]);

    // Resizing the first layer leaves the later parameters' values alone.
    let mut resized = specs.clone();
    resized[0].shape = vec![5, 5, 1, 8];
    assert_eq!(init_params(&resized, 1)[2], a[2]);
}
