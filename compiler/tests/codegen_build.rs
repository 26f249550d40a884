//! Generated crates built with cargo and run against the interpreter and the runtime optimiser
//! (`cnnc_runtime::optim::Optimizer`, which `cnnc train`'s fit loop uses), elementwise within
//! `Tolerance::KERNEL`, for every seed model at batch 2. Per model: forward predictions, then
//! two training steps on one batch (so the optimiser's state carries over) — per step the
//! loss, every parameter after the optimiser's update (and the BN moving statistics) and the
//! predictions after it (`forward` between steps must keep the optimiser state), and at step 1
//! every gradient (see `compare_train` for step 2). Each crate runs through the
//! `examples/check.rs` it ships, on raw f32 files.
//!
//! The models cover: conv + fused max-pool and dense (mnist_cnn, Adam), batch norm and dropout
//! (baseline_cifar10, cifar10_cnn, alexnet8), RMSprop (convnet_mnist), sigmoid with the loss
//! on probabilities and SGD (lenet5, with the weights embedded in the crate), a flat input
//! reshaped (lenet_mnist), concatenation, channel slices, padded max-pool and global average
//! pool (inception10), residual epilogues and strided convs (resnet18), and a deep conv stack
//! (vgg16_cifar10: the layers of vgg16, whose 224×224 input only makes the same crate bigger
//! in its constants and slower to check, so vgg16 itself is not built here), and strided convs
//! on odd-sized maps, one reading 6 channels (the test model `examples/strided_odd`). LeNet's
//! and that model's 6-channel input gradients run by columns and col2im.
//!
//! Two more crates split their kernels across two threads (`codegen::threads`): mnist_cnn at
//! batch 16 and resnet18, checked the same way; two more at batch 1 cut their convs into bands
//! of output rows instead (`codegen::threads_bands`): cifar10_cnn and resnet18.
//!
//! To keep the suite fast, the seventeen crates are generated into one cargo workspace (their
//! `Cargo.toml` turned into members: no `[workspace]`/profile of their own, the example renamed
//! `check_<package>`) and built by one `cargo build`, the first test to need them doing it for
//! all. A `no_std` crate with embedded weights is built standalone, as `cnnc compile` writes
//! it, and must refuse a weights file of another model.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use cnnc_compiler::codegen::{generate, package_name, spec_optimizer, CodegenOptions, MARKER};
use cnnc_compiler::interp::InterpExecutor;
use cnnc_compiler::ir::{LossKind, Mode};
use cnnc_compiler::kernel_ir::Machine;
use cnnc_compiler::lower::lower;
use cnnc_compiler::spec::{load_model, ModelSpec};
use cnnc_compiler::tolerance::{self, Tolerance};
use cnnc_runtime::init::init_params;
use cnnc_runtime::optim::Optimizer;
use cnnc_runtime::rng::Rng;
use cnnc_runtime::weights::save_weights;
use cnnc_runtime::{Executor, TargetLayout, Tensor};

const TOL: Tolerance = Tolerance::KERNEL;
const BATCH: usize = 2;
/// Training steps compared per model.
const STEPS: u64 = 2;

/// One generated crate of the workspace.
struct Built {
    /// The crate's name in the workspace (its package name), the model's unless it is built twice.
    name: &'static str,
    model: &'static str,
    /// Seed of its case.
    seed: u64,
    /// Whether the crate embeds the weights.
    embed: bool,
    batch: usize,
    /// Threads its kernels split across (`codegen::threads`), and how many of its kernel
    /// functions split (a scoped-thread wrapper with a `_part` function each).
    threads: usize,
    splits: usize,
    /// Range of the BN β (and biases) its case draws.
    beta: [f32; 2],
}

/// The BN β range of most cases: ReLU inputs near zero, both sides of every mask exercised.
const BETA: [f32; 2] = [-0.2, 0.2];

/// The BN β range of the ResNet18 cases. A step has ~10⁶ ReLU inputs, and the Winograd convs
/// round differently from the interpreter's direct sums (~1e-6 relative): at β ≈ 0 one or two
/// inputs a step lie within that of zero and take the other side of the kink (a near tie: one
/// BN β gradient off by a `dy`, everything upstream with it, see [`gradient_report`]); most
/// seeds failed so. With β ≥ 2 a normalised input must fall below −2 to be cut, ~20× fewer
/// near zero, and still ~1 % of inputs (thousands a layer) are masked.
const BETA_CLEAR_OF_RELU_TIES: [f32; 2] = [2.0, 3.0];

const fn one(model: &'static str, seed: u64, embed: bool) -> Built {
    Built {
        name: model,
        model,
        seed,
        embed,
        batch: BATCH,
        threads: 1,
        splits: 0,
        beta: BETA,
    }
}

const MODELS: &[Built] = &[
    one("mnist_cnn", 5, false),
    one("baseline_cifar10", 7, false),
    one("cifar10_cnn", 8, false),
    one("convnet_mnist", 10, false),
    one("lenet5", 11, true),
    one("lenet5_cifar10", 12, false),
    one("lenet_mnist", 14, false),
    one("lenet_cifar10", 15, false),
    one("alexnet8", 16, false),
    one("inception10", 13, false),
    Built {
        beta: BETA_CLEAR_OF_RELU_TIES,
        ..one("resnet18", 17, false)
    },
    one("vgg16_cifar10", 18, false),
    Built {
        name: "strided_odd",
        ..one("examples/strided_odd", 21, false)
    },
    // Two threads: every convolution and GEMM worth a thread split by samples, the pooled
    // kernel gradient and the dense weight gradients as reductions (mnist_cnn at batch 16 for
    // the dense layers' flops), residual epilogues and strided convs (resnet18).
    Built {
        name: "mnist_cnn_threads",
        model: "mnist_cnn",
        seed: 19,
        embed: false,
        batch: 16,
        threads: 2,
        // conv2's forward (inference; training with its argmax), input and kernel gradients,
        // and the first dense layer's forward (one function for both programs), input and
        // weight gradients: every GEMM-shaped kernel of at least 8 MFLOP.
        splits: 7,
        beta: BETA,
    },
    Built {
        name: "resnet18_threads",
        model: "resnet18",
        seed: 22,
        embed: false,
        batch: 2,
        threads: 2,
        // The convs (inference ones with BN folded; training ones with their BN statistics,
        // each share's moments combined in thread order) and every conv gradient of ≥ 8 MFLOP.
        splits: 47,
        beta: BETA_CLEAR_OF_RELU_TIES,
    },
    // Batch 1 on two threads: the convs worth a thread cut into bands of output rows
    // (`codegen::threads_bands`), padded and pooled (cifar10_cnn: its five inference convs of
    // ≥ 8 MFLOP, three of which read a prepared Winograd kernel, the other two sharing their
    // functions with the training program's; the training program's three unpooled ones and its
    // two pooled ones with their argmax), strided and
    // with residuals (resnet18's inference convs; its training convs take BN statistics and
    // stay whole).
    Built {
        name: "cifar10_cnn_bands",
        model: "cifar10_cnn",
        seed: 23,
        embed: false,
        batch: 1,
        threads: 2,
        splits: 8,
        beta: BETA,
    },
    Built {
        name: "resnet18_bands",
        model: "resnet18",
        seed: 24,
        embed: false,
        batch: 1,
        threads: 2,
        splits: 14,
        beta: BETA_CLEAR_OF_RELU_TIES,
    },
];

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("codegen").join(name)
}

fn spec(model: &str) -> ModelSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(format!("{model}.yaml"));
    load_model(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// `cargo build --offline` in `dir` (`args` added) with the target directory `target` and
/// `RUSTFLAGS=rustflags`; the build must succeed without warnings.
fn cargo_build(dir: &Path, target: &Path, args: &[&str], rustflags: &str) -> Result<(), String> {
    let t = Instant::now();
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--offline", "--quiet"])
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env("RUSTFLAGS", rustflags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .map_err(|e| format!("cargo: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("cargo build {args:?} in {} failed:\n{stderr}", dir.display()));
    }
    if stderr.contains("warning") {
        return Err(format!("the generated code builds with warnings:\n{stderr}"));
    }
    eprintln!(
        "cargo build {args:?} of {}: {:.1}s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How the workspace is built: for the baseline x86-64 target (the kernels' vector blocks as
/// portable arrays), and for this machine (`-C target-cpu=native`, as `--backend native` builds:
/// AVX-512 registers where the CPU has them).
const BUILDS: [(&str, &str); 2] = [("portable", ""), ("native", "-C target-cpu=native")];

/// Generates every model's crate into one workspace and builds their `check` examples once per
/// [`BUILDS`] entry; returns the directories of the binaries (`check_<package>`).
fn build_workspace() -> Result<Vec<PathBuf>, String> {
    let root = tmp("workspace");
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut members = Vec::new();
    for b in MODELS {
        let spec = spec(b.model);
        let mut opts = CodegenOptions::new(&spec, b.batch);
        // The reference machine's caches, so that schedules (and the split counts below) do
        // not depend on the host's; the host's vector width, so that the code suits it.
        opts.machine = Machine {
            vector_width: opts.machine.vector_width,
            cores: 1,
            ..Machine::reference()
        };
        opts.threads = b.threads;
        opts.package = Some(package_name(b.name));
        if b.embed {
            let (w, _) = inputs(&case(&spec, b.batch, b.seed, b.beta), &tmp(&format!("{}-run", b.name)));
            opts.embed_weights = Some(w);
        }
        let c = generate(&spec, &opts).map_err(|e| format!("{}: {e}", b.name))?;
        let lib = c.file("src/lib.rs").unwrap();
        let splits = lib.matches("run_shares(shares").count();
        assert_eq!(
            (
                splits,
                lib.matches("_part(").count() + lib.matches("_band0(").count() >= splits
            ),
            (b.splits, true),
            "{}: kernel functions split across threads",
            b.name
        );
        let dir = root.join(b.name);
        c.write_to(&dir).map_err(|e| e.to_string())?;
        assert!(dir.join(MARKER).is_file());
        // As a member: the workspace's profile, and an example name of its own (the binaries
        // share one target directory).
        let toml = c.file("Cargo.toml").unwrap();
        let package = toml.split("[profile.release]").next().unwrap().replacen(
            "[package]\n",
            "[package]\nautoexamples = false\n",
            1,
        );
        let example = format!(
            "[[example]]\nname = \"check_{}\"\npath = \"examples/check.rs\"\n",
            c.package
        );
        std::fs::write(dir.join("Cargo.toml"), format!("{package}{example}")).map_err(|e| e.to_string())?;
        members.push(format!("\"{}\"", b.name));
    }
    eprintln!("generated {} crates in {:.1}s", MODELS.len(), t.elapsed().as_secs_f64());
    let manifest = format!(
        "[workspace]\nmembers = [{}]\nresolver = \"2\"\n\n[profile.release]\nopt-level = 3\n",
        members.join(", ")
    );
    std::fs::write(root.join("Cargo.toml"), manifest).map_err(|e| e.to_string())?;
    let mut dirs = Vec::new();
    for (tag, flags) in BUILDS {
        let target = tmp(&format!("workspace-target-{tag}"));
        cargo_build(&root, &target, &["--release", "--examples"], flags)?;
        dirs.push(target.join("release/examples"));
    }
    Ok(dirs)
}

/// The check binaries of crate `name`, one per [`BUILDS`] entry, building every crate on first
/// use.
fn check_binaries(name: &str) -> Vec<PathBuf> {
    static BUILT: OnceLock<Result<Vec<PathBuf>, String>> = OnceLock::new();
    match BUILT.get_or_init(build_workspace) {
        Ok(dirs) => dirs
            .iter()
            .map(|d| d.join(format!("check_{}", package_name(name))))
            .collect(),
        Err(e) => panic!("{e}"),
    }
}

fn write_f32(path: &Path, v: &[f32]) {
    std::fs::write(path, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap();
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Runs the check binary; returns what it wrote.
fn check(bin: &Path, args: &[&Path], out: &Path) -> Vec<f32> {
    let o = Command::new(bin).args(args).arg(out).output().expect("check runs");
    assert!(
        o.status.success(),
        "check failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    read_f32(out)
}

fn uniform(len: usize, rng: &mut Rng, lo: f32, hi: f32) -> Vec<f32> {
    (0..len).map(|_| lo + (hi - lo) * rng.uniform()).collect()
}

/// The interpreter for `spec` at `batch`, parameters (BN statistics off their defaults), an
/// input and targets.
struct Case {
    interp: InterpExecutor,
    params: Vec<Tensor>,
    x: Vec<f32>,
    y: Vec<f32>,
}

fn case(spec: &ModelSpec, batch: usize, seed: u64, beta: [f32; 2]) -> Case {
    let loss = spec.training.loss.unwrap_or(LossKind::SparseCategoricalCrossentropy);
    let from_logits = spec.training.from_logits.unwrap_or(false);
    let train = lower(spec, batch, Mode::Training).unwrap();
    let inference = lower(spec, batch, Mode::Inference).unwrap();
    let interp = InterpExecutor::new(train, inference, loss, from_logits).unwrap();
    let mut rng = Rng::new(seed);
    let mut params = init_params(interp.params(), seed);
    for (p, s) in params.iter_mut().zip(interp.params()) {
        let (lo, hi) = match s.name.rsplit('.').next() {
            Some("gamma") | Some("moving_variance") => (0.6, 1.4),
            Some("beta") | Some("bias") => (beta[0], beta[1]),
            Some("moving_mean") => (-0.2, 0.2),
            _ => continue,
        };
        p.data = uniform(p.data.len(), &mut rng, lo, hi);
    }
    let len: usize = interp.input_shape().iter().product();
    let x = uniform(batch * len, &mut rng, -1.0, 1.0);
    let k = interp.output_size();
    let ids: Vec<usize> = (0..batch).map(|_| rng.below(k)).collect();
    let y = match interp.target_layout() {
        TargetLayout::ClassIds => ids.iter().map(|&c| c as f32).collect(),
        TargetLayout::Dense => {
            let mut t = vec![0f32; batch * k];
            for (i, &c) in ids.iter().enumerate() {
                t[i * k + c] = 1.0;
            }
            t
        }
    };
    Case { interp, params, x, y }
}

/// Writes the case's weights and input; returns (weights, input) paths in `dir`.
fn inputs(c: &Case, dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (w, x) = (dir.join("weights.safetensors"), dir.join("x.f32"));
    save_weights(&w, c.interp.params(), &c.params).unwrap();
    write_f32(&x, &c.x);
    (w, x)
}

/// `check forward` against `InterpExecutor::predict`.
fn compare_forward(model: &str, c: &mut Case, bin: &Path, weights: &Path, x: &Path) {
    let batch = c.interp.batch_size();
    let mut want = vec![0f32; batch * c.interp.output_size()];
    c.interp.predict(&c.params, &c.x, batch, &mut want);
    let got = check(bin, &["forward".as_ref(), weights, x], &x.with_file_name("out.f32"));
    TOL.assert_close(&format!("{model}: forward predictions"), &got, &want);
}

/// `check train` ([`STEPS`] steps) against `InterpExecutor::train_step` and the runtime
/// optimiser, step by step: the loss, every gradient, every parameter after the update, the
/// predictions after it.
///
/// Each step is compared from the same starting point: the reference optimiser is given the
/// crate's gradients (step 1: once they compared equal to the interpreter's), and step 2 starts
/// from the crate's parameters (once they compared equal to the reference's). A training step
/// is discontinuous in its inputs: Adam's update `lr·m/(√v + ε)` maps a gradient that is zero
/// in exact arithmetic but f32 rounding noise (a bias before batch norm) to a sizeable fraction
/// of the learning rate, and a ReLU input or a max-pool tie within rounding error of zero
/// flips a mask and moves a gradient entry far beyond the tolerance. Step 1's gradients are
/// compared elementwise; step 2's are not, because after step 1 such near-ties occur (with
/// alexnet8 and cifar10_cnn from parameters an ulp apart; with resnet18 even from equal
/// parameters, a residual_block_down_1/b1 output of 1.6e-6 that the crate's and the
/// interpreter's f32 sums put on both sides of zero). Step 2 still checks the loss, the
/// predictions and the update, i.e. that the optimiser state carried over: a lost or zeroed
/// Adam or RMSprop state moves step-2 parameters by a quarter of the learning rate or more.
fn compare_train(model: &str, spec: &ModelSpec, c: &mut Case, bin: &Path, weights: &Path, x: &Path) {
    let batch = c.interp.batch_size();
    let dir = x.parent().unwrap();
    let yp = dir.join("y.f32");
    write_f32(&yp, &c.y);
    let specs = c.interp.params().to_vec();
    let trainable: Vec<usize> = (0..specs.len()).filter(|&i| specs[i].trainable).collect();
    let shapes: Vec<Vec<usize>> = trainable.iter().map(|&i| specs[i].shape.clone()).collect();
    let kind = spec_optimizer(spec).expect("the model's optimiser");
    let mut opt = Optimizer::new(kind, &shapes);
    let mut params = c.params.clone();
    let outputs = batch * c.interp.output_size();
    let steps = STEPS.to_string();
    let got = check(
        bin,
        &["train".as_ref(), weights, x, &yp, steps.as_ref()],
        &dir.join("train.f32"),
    );
    let grads_len: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let params_len: usize = params.iter().map(|p| p.data.len()).sum();
    let per_step = 1 + grads_len + params_len + outputs;
    assert_eq!(got.len(), STEPS as usize * per_step, "{model}: check train output");
    let (x_, y_) = (c.x.clone(), c.y.clone());
    for (step, got) in (1..=STEPS).zip(got.chunks_exact(per_step)) {
        let at_step = |what: &str| format!("{model}, step {step}: {what}");
        let mut grads: Vec<Tensor> = shapes.iter().map(|s| Tensor::zeros(s)).collect();
        let mut preds = vec![0f32; outputs];
        let r = c
            .interp
            .train_step(&mut params, &mut grads, &x_, &y_, batch, step, &mut preds);
        TOL.assert_close(&at_step("loss"), &got[..1], &[r.loss]);
        let mut at = 1;
        let mut crate_grads = Vec::new();
        let mut report = Vec::new();
        for (&i, g) in trainable.iter().zip(&grads) {
            let n = g.data.len();
            let mine = &got[at..at + n];
            if step == 1 {
                report.push((specs[i].name.as_str(), TOL.compare(mine, &g.data).err()));
            }
            crate_grads.push(Tensor::from_vec(&g.shape, mine.to_vec()).unwrap());
            at += n;
        }
        if report.iter().any(|(_, m)| m.is_some()) {
            panic!("{}", at_step(&gradient_report(&report)));
        }
        let mut refs: Vec<&mut Tensor> = params
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| specs[*i].trainable)
            .map(|(_, p)| p)
            .collect();
        opt.step(&mut refs, &crate_grads).unwrap();
        for (s, p) in specs.iter().zip(&params) {
            let n = p.data.len();
            TOL.assert_close(
                &at_step(&format!("{} after the update", s.name)),
                &got[at..at + n],
                &p.data,
            );
            at += n;
        }
        c.interp.predict(&params, &x_, batch, &mut preds);
        TOL.assert_close(&at_step("predictions after the update"), &got[at..], &preds);
        // The next step starts from the crate's parameters.
        let mut at = 1 + grads_len;
        for p in &mut params {
            let n = p.data.len();
            p.data.copy_from_slice(&got[at..at + n]);
            at += n;
        }
    }
}

/// Every gradient's comparison, in parameter order (input to output), for a failure message.
/// A ReLU input within rounding of zero in one program and not the other (a near tie, with
/// ~10⁶ such inputs per ResNet18 step) reads as: every parameter after the flip matching, one
/// channel of the BN β just before it off by one `dy`, and everything upstream off with it.
fn gradient_report(report: &[(&str, Option<tolerance::Mismatch>)]) -> String {
    let mut s = String::from("gradients differ:\n");
    for (name, m) in report {
        match m {
            Some(m) => s += &format!("  {name}: {m}\n"),
            None => s += &format!("  {name}: ok\n"),
        }
    }
    s
}

/// Builds (once, all crates), then compares forward and [`STEPS`] training steps of crate
/// `name`, in each of its [`BUILDS`].
fn check_model(name: &str) {
    let b = MODELS.iter().find(|m| m.name == name).expect("a listed crate");
    let spec = spec(b.model);
    for (bin, (tag, _)) in check_binaries(name).iter().zip(BUILDS) {
        let label = format!("{name} ({tag})");
        let mut case = case(&spec, b.batch, b.seed, b.beta);
        let (w, x) = inputs(&case, &tmp(&format!("{name}-{tag}-run")));
        let w = if b.embed { PathBuf::from("embedded") } else { w };
        compare_forward(&label, &mut case, bin, &w, &x);
        compare_train(&label, &spec, &mut case, bin, &w, &x);
    }
}

/// Every generated crate passes clippy with warnings denied, as a user's CI would run it (the
/// workspace `check_binaries` generated and built; skipped where clippy is not installed).
#[test]
fn generated_crates_pass_clippy() {
    check_binaries("mnist_cnn");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_clippy = Command::new(&cargo)
        .args(["clippy", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_clippy {
        eprintln!("clippy is not installed: skipped");
        return;
    }
    let out = Command::new(&cargo)
        .args([
            "clippy",
            "--offline",
            "--quiet",
            "--release",
            "--examples",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(tmp("workspace"))
        .env("CARGO_TARGET_DIR", tmp("workspace-target-clippy"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cargo clippy runs");
    assert!(
        out.status.success(),
        "clippy on the generated crates:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mnist_cnn_crate_matches_the_interpreter() {
    check_model("mnist_cnn");
}

#[test]
fn baseline_cifar10_bn_dropout_crate_matches_the_interpreter() {
    check_model("baseline_cifar10");
}

#[test]
fn cifar10_cnn_crate_matches_the_interpreter() {
    check_model("cifar10_cnn");
}

#[test]
fn convnet_mnist_rmsprop_crate_matches_the_interpreter() {
    check_model("convnet_mnist");
}

#[test]
fn lenet5_sigmoid_sgd_embedded_weights_crate_matches_the_interpreter() {
    check_model("lenet5");
}

#[test]
fn lenet5_cifar10_crate_matches_the_interpreter() {
    check_model("lenet5_cifar10");
}

#[test]
fn lenet_mnist_flat_input_crate_matches_the_interpreter() {
    check_model("lenet_mnist");
}

#[test]
fn lenet_cifar10_crate_matches_the_interpreter() {
    check_model("lenet_cifar10");
}

#[test]
fn alexnet8_crate_matches_the_interpreter() {
    check_model("alexnet8");
}

#[test]
fn inception10_concat_slices_pools_crate_matches_the_interpreter() {
    check_model("inception10");
}

#[test]
fn resnet18_residual_blocks_crate_matches_the_interpreter() {
    check_model("resnet18");
}

#[test]
fn mnist_cnn_on_two_threads_crate_matches_the_interpreter() {
    check_model("mnist_cnn_threads");
}

#[test]
fn resnet18_on_two_threads_crate_matches_the_interpreter() {
    check_model("resnet18_threads");
}

#[test]
fn cifar10_cnn_batch1_crate_on_two_threads_by_bands_matches_the_interpreter() {
    check_model("cifar10_cnn_bands");
}

#[test]
fn resnet18_batch1_crate_on_two_threads_by_bands_matches_the_interpreter() {
    check_model("resnet18_bands");
}

/// vgg16 (224×224) has the same layers: see the module docs.
/// Strided input gradients on odd-sized maps (column classes of different lengths).
#[test]
fn strided_odd_crate_matches_the_interpreter() {
    check_model("strided_odd");
}

#[test]
fn vgg16_cifar10_crate_matches_the_interpreter() {
    check_model("vgg16_cifar10");
}

#[test]
fn no_std_crate_with_embedded_weights_builds_and_matches() {
    let bn = spec("baseline_cifar10");
    let mut bn_case = case(&bn, 1, 9, BETA);
    let (w, x) = inputs(&bn_case, &tmp("no_std-run"));
    let mut opts = CodegenOptions::new(&bn, 1);
    opts.no_std = true;
    opts.embed_weights = Some(w.clone());
    let c = generate(&bn, &opts).unwrap();
    assert!(c.training_kernels.is_none());
    let lib = c.file("src/lib.rs").unwrap();
    assert!(lib.contains("#![no_std]") && lib.contains("include_bytes!"));
    assert!(!lib.contains("Vec<") && !c.file("src/support.rs").unwrap().contains("Vec<"));
    let dir = tmp("no_std");
    let _ = std::fs::remove_dir_all(&dir);
    c.write_to(&dir).unwrap();
    let target = tmp("no_std-target");
    cargo_build(&dir, &target, &[], "").unwrap_or_else(|e| panic!("{e}"));
    cargo_build(
        &dir,
        &target,
        &["--release", "--example", "check"],
        "-C target-cpu=native",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let bin = target.join("release/examples/check");
    compare_forward("baseline_cifar10", &mut bn_case, &bin, "embedded".as_ref(), &x);

    // The crate's own safetensors reader refuses another model's weights.
    let other = inputs(&case(&spec("mnist_cnn"), 1, 1, BETA), &tmp("mnist_cnn-weights")).0;
    let o = Command::new(&bin)
        .args([
            "forward".as_ref(),
            other.as_path(),
            x.as_path(),
            tmp("no_std-run/bad.f32").as_path(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not a parameter of this model"),
        "{err}"
    );
}
