use std::path::Path;
use cnnc_compiler::interp::InterpExecutor;
use cnnc_compiler::ir::{LossKind, Mode};
use cnnc_compiler::lower::lower;
use cnnc_compiler::native::{NativeExecutor, NativeOptions};
use cnnc_compiler::spec::load_model;
use cnnc_runtime::init::init_params;
use cnnc_runtime::rng::Rng;
use cnnc_runtime::{Executor, Tensor};

fn ratio(a: &[f32], b: &[f32]) -> (f32, usize) {
    let mut w = (0f32, 0);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let r = (x - y).abs() / (1e-4 + 1e-3 * x.abs().max(y.abs()));
        if r > w.0 { w = (r, i); }
    }
    w
}

#[test]
fn debug_model() {
    let model = std::env::var("MODEL").unwrap_or("resnet18".into());
    let fuse = std::env::var("NOFUSE").is_err();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(format!("{model}.yaml"));
    let spec = load_model(&path).unwrap();
    let loss = spec.training.loss.unwrap_or(LossKind::SparseCategoricalCrossentropy);
    let from_logits = spec.training.from_logits.unwrap_or(false);
    let batch = 2;
    let train = lower(&spec, batch, Mode::Training).unwrap();
    let inference = lower(&spec, batch, Mode::Inference).unwrap();
    let mut interp = InterpExecutor::new(train.clone(), inference.clone(), loss, from_logits).unwrap();
    let opts = NativeOptions { threads: std::env::var("THREADS").map_or(1, |v| v.parse().unwrap()), fuse, ..NativeOptions::default() };
    let mut native = NativeExecutor::with_options(train, inference, loss, from_logits, opts).unwrap();
    let seed: u64 = std::env::var("SEED").map_or(5, |v| v.parse().unwrap());
    let mut rng = Rng::new(seed);
    let len: usize = native.input_shape().iter().product();
    let x: Vec<f32> = (0..batch * len).map(|_| -1.0 + 2.0 * rng.uniform()).collect();
    let y: Vec<f32> = (0..batch).map(|_| rng.below(10) as f32).collect();
    let mut p0 = init_params(native.params(), seed);
    if std::env::var("PERTURB").is_ok() {
        let mut rng = Rng::new(seed);
        for (p, spec) in p0.iter_mut().zip(native.params()) {
            let (lo, hi) = match spec.name.rsplit('.').next() {
                Some("gamma") | Some("moving_variance") => (0.6, 1.4),
                Some("beta") | Some("moving_mean") | Some("bias") => (-0.2, 0.2),
                _ => continue,
            };
            for v in p.data.iter_mut() { *v = lo + (hi - lo) * rng.uniform(); }
        }
    }
    let gz: Vec<Tensor> = native.params().iter().filter(|s| s.trainable).map(|s| Tensor::zeros(&s.shape)).collect();
    let (mut pi, mut gi, mut yi) = (p0.clone(), gz.clone(), vec![0f32; batch * 10]);
    let (mut pn, mut gn, mut yn) = (p0.clone(), gz.clone(), vec![0f32; batch * 10]);
    let ri = interp.train_step(&mut pi, &mut gi, &x, &y, batch, 3, &mut yi);
    let rn = native.train_step(&mut pn, &mut gn, &x, &y, batch, 3, &mut yn);
    println!("loss {} {}", ri.loss, rn.loss);
    let names: Vec<_> = native.params().iter().filter(|s| s.trainable).map(|s| s.name.clone()).collect();
    for ((n, a), b) in names.iter().zip(&gn).zip(&gi) {
        let (r, i) = ratio(&a.data, &b.data);
        println!("{n:30} ratio {r:8.3} at {i}: {} vs {}", a.data[i], b.data[i]);
    }
    for ((s, a), b) in native.params().iter().zip(&pn).zip(&pi) {
        if !s.trainable { let (r, i) = ratio(&a.data, &b.data); println!("{:30} state ratio {r:8.3} at {i}", s.name); }
    }
}
