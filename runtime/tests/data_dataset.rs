//! Dataset validation, Keras's validation split, seeded per-epoch shuffling, batch gathering,
//! one-hot encoding, and the shipped MNIST files.

use std::path::Path;

use cnnc_runtime::data::{epoch_order, load_mnist_dir, one_hot, validation_split_at, DataError, Dataset};

/// `n` samples of shape `[2]` whose values are `[i, -i]`, labels `i % 3`.
fn numbered(n: usize) -> Dataset {
    let x = (0..n).flat_map(|i| [i as f32, -(i as f32)]).collect();
    let y = (0..n).map(|i| (i % 3) as f32).collect();
    Dataset::new(x, y, vec![2], 3).unwrap()
}

#[test]
fn new_checks_sizes_and_labels() {
    assert!(Dataset::new(vec![0.0; 5], vec![0.0; 3], vec![2], 3).is_err());
    let msg = Dataset::new(vec![0.0; 6], vec![0.0, 3.0, 1.0], vec![2], 3)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("sample 1 has label 3"), "{msg}");
    assert!(Dataset::new(vec![0.0; 6], vec![0.0, 1.5, 1.0], vec![2], 3).is_err());
    assert!(Dataset::new(vec![0.0; 6], vec![0.0, f32::NAN, 1.0], vec![2], 3).is_err());
}

#[test]
fn validation_split_takes_the_last_fraction_like_keras() {
    // Keras: split_at = floor(n * (1 - frac)); 10 * 0.75 = 7.5 -> 7.
    let (train, val) = numbered(10).split_validation(0.25).unwrap();
    assert_eq!((train.n, val.n), (7, 3));
    assert_eq!(train.x.len(), 14);
    assert_eq!(val.x, vec![7.0, -7.0, 8.0, -8.0, 9.0, -9.0]);
    assert_eq!(val.y, vec![1.0, 2.0, 0.0]);
    assert_eq!(train.y, numbered(7).y);
    assert_eq!(validation_split_at(60_000, 0.1).unwrap(), 54_000);
    assert_eq!(validation_split_at(100, 0.2).unwrap(), 80);
}

#[test]
fn degenerate_splits_are_errors() {
    // 0.95 of 10 leaves floor(0.5) = 0 training samples; 1e-20 leaves no validation sample.
    for frac in [0.0, 1.0, -0.5, f32::NAN, 0.95, 1e-20] {
        let err = numbered(10).split_validation(frac).unwrap_err();
        assert!(matches!(err, DataError::BadSplit { .. }), "{frac}: {err}");
    }
    assert_eq!(numbered(10).split_validation(0.01).unwrap().1.n, 1, "floor(9.9) = 9");
}

#[test]
fn epoch_order_is_a_seeded_permutation_that_changes_per_epoch() {
    let a = epoch_order(1000, 42, 0);
    assert_eq!(a, epoch_order(1000, 42, 0), "same seed and epoch, same order");
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>(), "a permutation");
    assert_ne!(a, epoch_order(1000, 42, 1), "another epoch, another order");
    assert_ne!(a, epoch_order(1000, 43, 0), "another seed, another order");
    assert_ne!(a, sorted, "actually shuffled");
}

#[test]
fn gathers_batches_and_one_hot_targets() {
    let d = numbered(5);
    let mut x = vec![0.0; 4];
    d.gather_x(&[4, 1], &mut x);
    assert_eq!(x, vec![4.0, -4.0, 1.0, -1.0]);
    let mut y = vec![9.0; 2];
    d.gather_y(&[4, 2], None, &mut y);
    assert_eq!(y, vec![1.0, 2.0]);
    let mut y = vec![9.0; 6];
    d.gather_y(&[4, 2], Some(3), &mut y);
    assert_eq!(y, vec![0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    assert_eq!(one_hot(&[2.0, 0.0], 3), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    assert_eq!(d.one_hot().len(), 15);
}

#[test]
fn truncate_keeps_the_first_samples() {
    let mut d = numbered(5);
    d.truncate(2);
    assert_eq!((d.n, d.x.len(), d.y.len()), (2, 4, 2));
    d.truncate(10);
    assert_eq!(d.n, 2);
}

/// The MNIST files shipped in `data/mnist` (checked against the published counts and the
/// well-known first labels: 5 in training, 7 in test).
#[test]
fn shipped_mnist_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist");
    let (train, test) = load_mnist_dir(&dir).unwrap();
    let test = test.unwrap();
    assert_eq!((train.n, test.n), (60_000, 10_000));
    assert_eq!(train.sample_shape, vec![28, 28, 1]);
    assert_eq!((train.y[0], test.y[0]), (5.0, 7.0));
    let mut counts = [0usize; 10];
    for &l in &train.y {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    assert!(train.x.iter().all(|&v| (0.0..=1.0).contains(&v)));
}
