//! Each optimiser against three steps computed by hand (in f64) from Keras 3's update rules.

mod support;

use cnnc_runtime::optim::{OptimError, Optimizer, OptimizerKind};
use cnnc_runtime::Tensor;
use support::{assert_close, Tol};

const P0: [f32; 3] = [1.0, -2.0, 0.5];
const GRADS: [[f32; 3]; 3] = [[0.5, -0.25, 0.0], [0.1, 0.3, -1.0], [-0.2, 0.05, 2.0]];

/// Runs three steps on one `[3]` parameter and checks the parameter after each (expected
/// values computed in f64).
fn check(kind: OptimizerKind, expected: [[f64; 3]; 3]) {
    let mut opt = Optimizer::new(kind, &[vec![3]]);
    let mut p = Tensor::from_vec(&[3], P0.to_vec()).unwrap();
    for (t, (g, want)) in GRADS.iter().zip(expected).enumerate() {
        let g = Tensor::from_vec(&[3], g.to_vec()).unwrap();
        opt.step(&mut [&mut p], &[g]).unwrap();
        let want = want.map(|v| v as f32);
        assert_close(&p.data, &want, Tol::TIGHT, &format!("{kind} after step {}", t + 1));
    }
    assert_eq!(opt.iterations(), 3);
}

#[test]
fn sgd_plain() {
    let kind = OptimizerKind::sgd_default().with_learning_rate(0.1);
    check(kind, [[0.95, -1.975, 0.5], [0.94, -2.005, 0.6], [0.96, -2.01, 0.4]]);
}

#[test]
fn sgd_momentum() {
    let kind = OptimizerKind::Sgd {
        learning_rate: 0.1,
        momentum: 0.9,
        nesterov: false,
    };
    check(
        kind,
        [[0.95, -1.975, 0.5], [0.895, -1.9825, 0.6], [0.8655, -1.99425, 0.49]],
    );
}

#[test]
fn sgd_nesterov() {
    let kind = OptimizerKind::Sgd {
        learning_rate: 0.1,
        momentum: 0.9,
        nesterov: true,
    };
    check(
        kind,
        [
            [0.905, -1.9525, 0.5],
            [0.8455, -1.98925, 0.69],
            [0.83895, -2.004825, 0.391],
        ],
    );
}

#[test]
fn adam_defaults() {
    check(
        OptimizerKind::adam_default(),
        [
            [0.999000006, -1.999000013, 0.5],
            [0.998196970, -1.999142956, 0.500744134],
            [0.997852619, -1.999333741, 0.500429849],
        ],
    );
}

#[test]
fn adam_large_learning_rate() {
    check(
        OptimizerKind::adam_default().with_learning_rate(0.1),
        [
            [0.900000632, -1.900001265, 0.5],
            [0.819697033, -1.914295622, 0.574413447],
            [0.785261856, -1.933374112, 0.542984875],
        ],
    );
}

#[test]
fn rmsprop_plain() {
    check(
        OptimizerKind::rmsprop_default().with_learning_rate(0.01),
        [
            [0.968377287, -1.968377476, 0.5],
            [0.961854020, -1.993184338, 0.531622761],
            [0.974465328, -1.997501651, 0.503051335],
        ],
    );
}

#[test]
fn rmsprop_momentum() {
    check(
        OptimizerKind::rmsprop_default()
            .with_learning_rate(0.01)
            .with_momentum(0.5),
        [
            [0.968377287, -1.968377476, 0.5],
            [0.946042663, -1.977373077, 0.531622761],
            [0.947486659, -1.986188190, 0.518862716],
        ],
    );
}

#[test]
fn keras_defaults() {
    assert_eq!(
        OptimizerKind::from_keras_name("Adam"),
        Some(OptimizerKind::Adam {
            learning_rate: 0.001,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7
        })
    );
    assert_eq!(OptimizerKind::sgd_default().learning_rate(), 0.01);
    assert_eq!(
        OptimizerKind::rmsprop_default(),
        OptimizerKind::RmsProp {
            learning_rate: 0.001,
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7
        }
    );
    assert_eq!(OptimizerKind::from_keras_name("adagrad"), None);
}

#[test]
fn several_parameters_keep_separate_state() {
    let kind = OptimizerKind::adam_default();
    let mut joint = Optimizer::new(kind, &[vec![3], vec![2]]);
    let mut a = Tensor::from_vec(&[3], P0.to_vec()).unwrap();
    let mut b = Tensor::full(&[2], 0.25);
    let mut alone = Optimizer::new(kind, &[vec![3]]);
    let mut a2 = a.clone();
    for g in GRADS {
        let ga = Tensor::from_vec(&[3], g.to_vec()).unwrap();
        let gb = Tensor::full(&[2], 1.0);
        joint.step(&mut [&mut a, &mut b], &[ga.clone(), gb]).unwrap();
        alone.step(&mut [&mut a2], &[ga]).unwrap();
    }
    assert_eq!(a, a2, "the second parameter must not disturb the first");
}

#[test]
fn mismatches_are_errors() {
    let mut opt = Optimizer::new(OptimizerKind::adam_default(), &[vec![3]]);
    let mut p = Tensor::zeros(&[3]);
    let err = opt.step(&mut [&mut p], &[]).unwrap_err();
    assert!(matches!(err, OptimError::Count { expected: 1, .. }), "{err}");
    let err = opt.step(&mut [&mut p], &[Tensor::zeros(&[4])]).unwrap_err();
    assert!(matches!(err, OptimError::Shape { index: 0, .. }), "{err}");
    assert_eq!(opt.iterations(), 0, "a rejected step changes nothing");
}

/// Keras 3's RMSprop divides by `sqrt(v + ε)`, not `sqrt(v) + ε`; a tiny gradient tells the
/// two apart by a factor of ten.
#[test]
fn rmsprop_epsilon_is_inside_the_root() {
    let mut opt = Optimizer::new(OptimizerKind::rmsprop_default(), &[vec![1]]);
    let mut p = Tensor::zeros(&[1]);
    opt.step(&mut [&mut p], &[Tensor::full(&[1], 1e-4)]).unwrap();
    assert_close(&p.data, &[-3.146_584e-4], Tol::TIGHT, "rmsprop tiny gradient");
}

/// `step_on` a pool splits large parameters across its threads; every rule is elementwise, so
/// the parameters and the state after several steps are bit-identical to one thread's.
#[test]
fn pooled_updates_match_one_thread_exactly() {
    use cnnc_runtime::kernels::set_parallel_min_flops;
    use cnnc_runtime::pool::Pool;
    set_parallel_min_flops(0);
    let shapes = [vec![1001, 3], vec![7], vec![64, 65]];
    let rmsprop = OptimizerKind::RmsProp {
        learning_rate: 0.01,
        rho: 0.9,
        momentum: 0.5,
        epsilon: 1e-7,
    };
    for kind in [OptimizerKind::adam_default(), OptimizerKind::sgd_default(), rmsprop] {
        let mut runs = Vec::new();
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            let mut opt = Optimizer::new(kind, &shapes);
            let mut params: Vec<Tensor> = shapes
                .iter()
                .map(|s| {
                    let n: usize = s.iter().product();
                    Tensor::from_vec(s, (0..n).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap()
                })
                .collect();
            for step in 0..3 {
                let grads: Vec<Tensor> = params
                    .iter()
                    .map(|p| {
                        let g = p
                            .data
                            .iter()
                            .enumerate()
                            .map(|(i, v)| v * 0.5 - (i + step) as f32 * 1e-3);
                        Tensor::from_vec(&p.shape, g.collect()).unwrap()
                    })
                    .collect();
                let mut refs: Vec<&mut Tensor> = params.iter_mut().collect();
                opt.step_on(&pool, &mut refs, &grads).unwrap();
            }
            runs.push(params.into_iter().flat_map(|p| p.data).collect::<Vec<f32>>());
        }
        for (threads, run) in [2, 3].iter().zip(&runs[1..]) {
            let same = run.iter().zip(&runs[0]).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{kind} on {threads} threads differs from one thread");
        }
    }
}
