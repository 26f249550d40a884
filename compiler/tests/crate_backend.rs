//! `--backend native` end to end on a tiny conv + batch norm + dropout + dense model: the
//! generated crate built by cargo into a fresh cache, loaded, and compared with the
//! interpreter elementwise within `Tolerance::KERNEL` — the loss, every gradient, the batch-norm
//! moving statistics and the predictions of a training step, and inference — at the full batch
//! and at a partial batch (its own library: batch statistics over the real samples only),
//! inference again after the parameters changed (folded again on every call), and in inference
//! sessions over both libraries (folded once per library and session). Then: a second
//! executor finds its library in the cache (no cargo run), a truncated library or a missing
//! marker is rebuilt rather than loaded, and the library refuses wrong lengths and null
//! pointers with an error code.
//!
//! One test, so that its cargo builds run one after the other (the model is tiny: each takes a
//! few seconds).

use std::path::{Path, PathBuf};

use cnnc_compiler::crate_backend::abi::{Library, Sizes};
use cnnc_compiler::crate_backend::{CrateExecutor, CrateOptions, Purpose};
use cnnc_compiler::interp::InterpExecutor;
use cnnc_compiler::ir::{LossKind, Mode};
use cnnc_compiler::lower::lower;
use cnnc_compiler::spec::{parse_model, ModelSpec};
use cnnc_compiler::tolerance::Tolerance;
use cnnc_runtime::init::init_params;
use cnnc_runtime::rng::Rng;
use cnnc_runtime::{Executor, InferenceSession, Tensor};

const TOL: Tolerance = Tolerance::KERNEL;
const BATCH: usize = 4;
const PARTIAL: usize = 3;

const TINY: &str = "
name: tiny_crate
input: [6, 6, 2]
layers:
  - conv2d: {filters: 4, kernel_size: 3, padding: same}
  - batch_normalization: {}
  - activation: {activation: relu}
  - max_pooling2d: {pool_size: 2}
  - flatten
  - dropout: {rate: 0.25}
  - dense: {units: 3, activation: softmax}
";

fn spec() -> ModelSpec {
    parse_model(TINY, Path::new("tiny_crate.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn options(cache: &Path) -> CrateOptions {
    CrateOptions {
        cache_dir: Some(cache.to_path_buf()),
        purpose: Purpose::Training,
        ..CrateOptions::default()
    }
}

fn uniform(len: usize, rng: &mut Rng, lo: f32, hi: f32) -> Vec<f32> {
    (0..len).map(|_| lo + (hi - lo) * rng.uniform()).collect()
}

/// Parameters with the BN statistics off their defaults, inputs and class ids for `BATCH`.
fn case(interp: &InterpExecutor) -> (Vec<Tensor>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(21);
    let mut params = init_params(interp.params(), 21);
    for (p, s) in params.iter_mut().zip(interp.params()) {
        let (lo, hi) = match s.name.rsplit('.').next() {
            Some("gamma") | Some("moving_variance") => (0.6, 1.4),
            Some("beta") | Some("moving_mean") | Some("bias") => (-0.2, 0.2),
            _ => continue,
        };
        p.data = uniform(p.data.len(), &mut rng, lo, hi);
    }
    let len: usize = interp.input_shape().iter().product();
    let x = uniform(BATCH * len, &mut rng, -1.0, 1.0);
    let y = (0..BATCH).map(|_| rng.below(interp.output_size()) as f32).collect();
    (params, x, y)
}

/// One training step on the first `n` samples by both executors, from the same parameters:
/// loss, gradients, predictions and the parameters after (moving statistics) must agree.
fn compare_step(
    ex: &mut CrateExecutor,
    interp: &mut InterpExecutor,
    params: &[Tensor],
    x: &[f32],
    y: &[f32],
    n: usize,
) {
    let len: usize = interp.input_shape().iter().product();
    let out = interp.output_size();
    let specs = interp.params().to_vec();
    let run = |e: &mut dyn Executor| {
        let mut p = params.to_vec();
        let mut grads: Vec<Tensor> = specs
            .iter()
            .filter(|s| s.trainable)
            .map(|s| Tensor::zeros(&s.shape))
            .collect();
        let mut preds = vec![0f32; n * out];
        let r = e.train_step(&mut p, &mut grads, &x[..n * len], &y[..n], n, 1, &mut preds);
        (r.loss, grads, preds, p)
    };
    let (loss, grads, preds, after) = run(ex);
    let (want_loss, want_grads, want_preds, want_after) = run(interp);
    let at = |what: &str| format!("batch of {n}: {what}");
    TOL.assert_close(&at("loss"), &[loss], &[want_loss]);
    let trainable = specs.iter().filter(|s| s.trainable);
    for ((g, w), s) in grads.iter().zip(&want_grads).zip(trainable) {
        TOL.assert_close(&at(&format!("gradient of {}", s.name)), &g.data, &w.data);
    }
    TOL.assert_close(&at("training predictions"), &preds, &want_preds);
    for ((p, w), s) in after.iter().zip(&want_after).zip(&specs) {
        TOL.assert_close(&at(&format!("{} after the step", s.name)), &p.data, &w.data);
    }

    let mut got = vec![0f32; n * out];
    let mut want = vec![0f32; n * out];
    ex.predict(params, &x[..n * len], n, &mut got);
    interp.predict(params, &x[..n * len], n, &mut want);
    TOL.assert_close(&at("predictions"), &got, &want);
}

#[test]
fn crate_backend_matches_the_interpreter_caches_and_rebuilds_broken_entries() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    let cache = tmp.path().join("cache");
    let spec = spec();
    let loss = LossKind::SparseCategoricalCrossentropy;
    let train = lower(&spec, BATCH, Mode::Training).unwrap();
    let infer = lower(&spec, BATCH, Mode::Inference).unwrap();
    let mut interp = InterpExecutor::new(train, infer, loss, false).unwrap();

    let mut ex = CrateExecutor::new(&spec, BATCH, loss, false, options(&cache)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ex.backend_name(), "native");
    assert_eq!(ex.params(), interp.params(), "the same parameters in the same order");
    assert_eq!(ex.builds().len(), 1);
    assert!(!ex.builds()[0].cached, "a fresh cache builds");
    let (params, x, y) = case(&interp);
    compare_step(&mut ex, &mut interp, &params, &x, &y, BATCH);

    // Inference reads the caller's tensors on every call: changed batch-norm statistics are
    // folded into the weights again.
    let mut changed = params.clone();
    for (p, s) in changed.iter_mut().zip(interp.params()) {
        if s.name.ends_with("moving_mean") || s.name.ends_with("gamma") {
            p.data.iter_mut().for_each(|v| *v = 0.5 - *v);
        }
    }
    let (mut got, mut want) = (vec![0f32; BATCH * 3], vec![0f32; BATCH * 3]);
    for p in [&changed, &params] {
        ex.predict(p, &x, BATCH, &mut got);
        interp.predict(p, &x, BATCH, &mut want);
        TOL.assert_close("predictions after a parameter change", &got, &want);
    }

    // Inference sessions fold once per library: the same predictions as plain calls, across
    // two libraries (the partial batch's is built here), and a new session with other
    // parameters folds again in both (the partial batch's library last folded the first
    // session's parameters).
    for p in [&params, &changed, &params] {
        let mut session = InferenceSession::new(&mut ex, p);
        for n in [BATCH, PARTIAL, BATCH, PARTIAL] {
            let (mut got, mut want) = (vec![0f32; n * 3], vec![0f32; n * 3]);
            session.predict(&x[..n * 72], n, &mut got);
            interp.predict(p, &x[..n * 72], n, &mut want);
            TOL.assert_close("predictions in a session", &got, &want);
        }
    }

    // A partial batch: its own library (built above), trained through.
    compare_step(&mut ex, &mut interp, &params, &x, &y, PARTIAL);
    assert_eq!(
        ex.builds().len(),
        3,
        "inference and training libraries for the full and partial batches"
    );
    let library: PathBuf = ex.builds()[0].library.clone();
    drop(ex);

    // The same model again: found in the cache, and it computes the same.
    let mut again = CrateExecutor::new(&spec, BATCH, loss, false, options(&cache)).unwrap();
    assert!(again.builds()[0].cached, "the second construction is a cache hit");
    assert_eq!(again.builds()[0].library, library);
    compare_step(&mut again, &mut interp, &params, &x, &y, BATCH);
    drop(again);

    // A truncated library (its marker no longer matches) is rebuilt, not loaded.
    let bytes = std::fs::read(&library).unwrap();
    std::fs::write(&library, &bytes[..bytes.len() / 2]).unwrap();
    let mut rebuilt = CrateExecutor::new(&spec, BATCH, loss, false, options(&cache)).unwrap();
    assert!(!rebuilt.builds()[0].cached, "a truncated library is rebuilt");
    assert_eq!(std::fs::read(&library).unwrap(), bytes);
    compare_step(&mut rebuilt, &mut interp, &params, &x, &y, BATCH);
    drop(rebuilt);

    // A library without its marker (as a build interrupted between the two) likewise.
    std::fs::remove_file(library.with_extension("sha256")).unwrap();
    let rebuilt = CrateExecutor::new(&spec, BATCH, loss, false, options(&cache)).unwrap();
    assert!(!rebuilt.builds()[0].cached, "a library without its marker is rebuilt");
    let hit = CrateExecutor::new(&spec, BATCH, loss, false, options(&cache)).unwrap();
    assert!(hit.builds()[0].cached);
    drop((rebuilt, hit));

    // The host refuses a library whose sizes differ from what it expects...
    let numel = |s: &cnnc_runtime::ParamSpec| s.shape.iter().product::<usize>();
    let expected = Sizes {
        batch: BATCH,
        input: BATCH * 72,
        output: BATCH * 3,
        target: BATCH,
        params: interp.params().iter().map(numel).sum(),
        grads: interp.params().iter().filter(|s| s.trainable).map(numel).sum(),
        arena: 0,
        training: true,
        param_tensors: interp.params().len(),
    };
    let mut lib = Library::open(&library, &expected).unwrap_or_else(|e| panic!("{e}"));
    let wrong = Sizes {
        batch: BATCH + 1,
        ..expected
    };
    let err = Library::open(&library, &wrong).unwrap_err();
    assert!(err.contains("expected"), "{err}");
    // ... and checks lengths before calling (the wrapper), as the library does itself (raw).
    let parts = || params.iter().map(|p| &p.data[..]);
    let mut preds = vec![0f32; BATCH * 3];
    assert!(lib.predict(parts(), &x[1..], &mut preds, false).is_err());
    assert!(
        lib.predict(parts().skip(1), &x, &mut preds, false).is_err(),
        "a tensor short"
    );
    lib.predict(parts(), &x, &mut preds, false).unwrap();
    let raw = unsafe { libloading::Library::new(&library) }.unwrap();
    type PredictFn = unsafe extern "C" fn(
        *mut std::ffi::c_void,
        *const *const f32,
        *const usize,
        usize,
        *const f32,
        usize,
        *mut f32,
        usize,
        i32,
    ) -> i32;
    type NewFn = unsafe extern "C" fn() -> *mut std::ffi::c_void;
    type FreeFn = unsafe extern "C" fn(*mut std::ffi::c_void);
    // SAFETY: the generated crate's signatures (codegen/support/abi.rs).
    let (predict, new, free) = unsafe {
        (
            *raw.get::<PredictFn>(b"cnnc_predict_parts\0").unwrap(),
            *raw.get::<NewFn>(b"cnnc_model_new\0").unwrap(),
            *raw.get::<FreeFn>(b"cnnc_model_free\0").unwrap(),
        )
    };
    let ptrs: Vec<*const f32> = params.iter().map(|p| p.data.as_ptr()).collect();
    let lens: Vec<usize> = params.iter().map(|p| p.data.len()).collect();
    let mut long = lens.clone();
    long[0] += 1;
    let mut null = ptrs.clone();
    null[1] = std::ptr::null();
    let (pp, pl, np) = (ptrs.as_ptr(), lens.as_ptr(), ptrs.len());
    let (xp, xl, out, ol) = (x.as_ptr(), x.len(), preds.as_mut_ptr(), preds.len());
    // SAFETY: valid buffers of the given lengths (the lengths are what is wrong), or null.
    unsafe {
        let m = new();
        assert!(!m.is_null());
        assert_eq!(
            predict(m, pp, pl, np, xp, xl - 1, out, ol, 0),
            2,
            "a short input is refused"
        );
        assert_eq!(
            predict(m, pp, pl, np, xp, xl, out, ol + 1, 0),
            2,
            "a long output is refused"
        );
        assert_eq!(
            predict(m, pp, pl, np - 1, xp, xl, out, ol, 0),
            2,
            "a missing tensor is refused"
        );
        assert_eq!(
            predict(m, pp, long.as_ptr(), np, xp, xl, out, ol, 0),
            2,
            "a tensor of the wrong length is refused"
        );
        assert_eq!(
            predict(m, null.as_ptr(), pl, np, xp, xl, out, ol, 0),
            1,
            "a null tensor is refused"
        );
        assert_eq!(
            predict(m, std::ptr::null(), pl, np, xp, xl, out, ol, 0),
            1,
            "null parameters are refused"
        );
        assert_eq!(
            predict(std::ptr::null_mut(), pp, pl, np, xp, xl, out, ol, 0),
            1,
            "a null model is refused"
        );
        preds.fill(f32::NAN);
        assert_eq!(predict(m, pp, pl, np, xp, xl, preds.as_mut_ptr(), ol, 0), 0);
        free(m);
    }
    let mut want = vec![0f32; BATCH * 3];
    interp.predict(&params, &x, BATCH, &mut want);
    TOL.assert_close("raw cnnc_predict_parts", &preds, &want);
}
