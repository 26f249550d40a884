//! The Rust backend's output without building it: insta snapshots of the generated
//! `src/lib.rs` of four small models (scheduled for the fixed reference machine, unformatted so
//! that they do not depend on the installed rustfmt), kernel-function sharing on resnet18, and
//! the output-directory rules.

use std::path::Path;

use cnnc_compiler::codegen::{generate, CodegenOptions};
use cnnc_compiler::kernel_ir::Machine;
use cnnc_compiler::spec::{load_model, parse_model};

fn options(model: &str, batch: usize) -> (cnnc_compiler::spec::ModelSpec, CodegenOptions) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(format!("{model}.yaml"));
    let spec = load_model(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut opts = CodegenOptions::new(&spec, batch);
    opts.machine = Machine {
        cores: 1,
        ..Machine::reference()
    };
    opts.rustfmt = false;
    (spec, opts)
}

#[test]
fn seed000_conv_pool_lib_rs() {
    let (spec, opts) = options("examples/seed000_conv_pool", 1);
    let c = generate(&spec, &opts).unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("codegen_snapshot");
    let _ = std::fs::remove_dir_all(&dir);
    c.write_to(&dir).unwrap();
    insta::assert_snapshot!(c.file("src/lib.rs").unwrap());
}

/// A tiny conv + BN + relu + pool + dense model: BN folded into the conv at load time
/// (prepare kernels) for inference, batch statistics and the fused BN backward for training.
const TINY_BN: &str = "
name: tiny_bn
input: [6, 6, 2]
layers:
  - conv2d: {filters: 4, kernel_size: 3, padding: same}
  - batch_normalization: {}
  - activation: {activation: relu}
  - max_pooling2d: {pool_size: 2}
  - flatten
  - dense: {units: 3, activation: softmax}
";

/// The generated `src/lib.rs` of the inline model `yaml` at batch 2, for the reference machine.
fn tiny_lib(yaml: &str, file: &str) -> String {
    let spec = parse_model(yaml, Path::new(file)).unwrap();
    let mut opts = CodegenOptions::new(&spec, 2);
    opts.machine = Machine {
        cores: 1,
        ..Machine::reference()
    };
    opts.rustfmt = false;
    generate(&spec, &opts).unwrap().file("src/lib.rs").unwrap().to_string()
}

#[test]
fn tiny_bn_lib_rs() {
    let lib = tiny_lib(TINY_BN, "tiny_bn.yaml");
    assert!(
        lib.contains("fn infer_prepare(p: &[&[f32]; N_PARAMS], a: &mut [f32])"),
        "BN is folded at load time, from the parameter tensors"
    );
    insta::assert_snapshot!(lib);
}

/// Sixteen channels: every conv and GEMM block of the forward and backward passes is whole
/// 16-lane vectors (`support::V`), with the padded-image scratch and the stride-1 input gradient
/// run as a conv.
const TINY_LANES: &str = "
name: tiny_lanes
input: [4, 4, 16]
layers:
  - conv2d: {filters: 16, kernel_size: 3, padding: same, activation: relu}
  - flatten
  - dense: {units: 16, activation: softmax}
";

#[test]
fn tiny_lanes_lib_rs() {
    let lib = tiny_lib(TINY_LANES, "tiny_lanes.yaml");
    assert!(lib.contains("V::splat"), "vector blocks");
    insta::assert_snapshot!(lib);
}

/// 10×10 maps of 16 channels: the 3×3 convs run as Winograd F(2×2, 3×3) (10 is not whole 4×4
/// tiles) — the first with BN's statistics in its epilogue (training), the second with ReLU and
/// its 2×2 max-pool (and the argmax in training) on the output transform's vectors, its input
/// gradient as a Winograd conv too. `{side}` is the map's side.
const TINY_WINOGRAD: &str = "
name: tiny_winograd
input: [{side}, {side}, 16]
layers:
  - conv2d: {filters: 16, kernel_size: 3, padding: same}
  - batch_normalization: {}
  - activation: {activation: relu}
  - conv2d: {filters: 16, kernel_size: 3, padding: same, activation: relu}
  - max_pooling2d: {pool_size: 2}
  - flatten
  - dense: {units: 16, activation: softmax}
";

fn tiny_winograd(side: usize) -> String {
    let yaml = TINY_WINOGRAD.replace("{side}", &side.to_string());
    tiny_lib(&yaml, "tiny_winograd.yaml")
}

#[test]
fn tiny_winograd_lib_rs() {
    let lib = tiny_winograd(10);
    assert!(
        lib.contains("winograd_input(") && lib.contains("winograd_output(") && !lib.contains("winograd_input4("),
        "Winograd F(2×2) convs"
    );
    assert!(lib.contains("select_gt"), "the argmax in vectors");
    insta::assert_snapshot!(lib);
}

/// The same model on 8×8 maps: whole 4×4 tiles, so F(4×4, 3×3), 6×6 windows (the input
/// gradient too; the kernel gradient stays F(3×3, 2×2), on 4×4 windows).
#[test]
fn tiny_winograd_f4_lib_rs() {
    let lib = tiny_winograd(8);
    assert!(
        ["winograd_kernel4(", "winograd_input4(", "winograd_output4("]
            .iter()
            .all(|f| lib.contains(f))
            && !lib.contains("winograd_output("),
        "Winograd F(4×4) convs"
    );
    assert!(lib.contains("winograd_dw("), "the F(3×3, 2×2) kernel gradient");
    insta::assert_snapshot!(lib);
}

/// Kernels with equal templates share a function: resnet18's repeated blocks.
#[test]
fn repeated_blocks_share_kernel_functions() {
    let (spec, opts) = options("resnet18", 1);
    let c = generate(&spec, &opts).unwrap();
    let kernels = c.inference_kernels + c.training_kernels.unwrap();
    assert!(c.functions < kernels, "{} functions for {kernels} kernels", c.functions);
    let lib = c.file("src/lib.rs").unwrap();
    assert_eq!(
        lib.matches("\nfn ").count(),
        c.functions + 5,
        "kernel functions plus four program functions and param_parts"
    );
}

/// The output directory: created, refused when foreign, rewritten when cnnc's (stale files
/// of the previous generation removed).
#[test]
fn writes_only_into_its_own_directories() {
    let (spec, opts) = options("examples/seed000_conv_pool", 1);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("codegen_dirs");
    let _ = std::fs::remove_dir_all(&root);
    let foreign = root.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let c = generate(&spec, &opts).unwrap();
    let err = c.write_to(&foreign).unwrap_err().to_string();
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1);

    let own = root.join("own");
    let mut with_weights = opts.clone();
    let w = root.join("w.safetensors");
    let specs = cnnc_compiler::interp::InterpExecutor::new(
        cnnc_compiler::lower::lower(&spec, 1, cnnc_compiler::ir::Mode::Training).unwrap(),
        cnnc_compiler::lower::lower(&spec, 1, cnnc_compiler::ir::Mode::Inference).unwrap(),
        cnnc_compiler::ir::LossKind::SparseCategoricalCrossentropy,
        false,
    )
    .unwrap();
    use cnnc_runtime::Executor;
    let params = cnnc_runtime::init::init_params(specs.params(), 1);
    cnnc_runtime::weights::save_weights(&w, specs.params(), &params).unwrap();
    with_weights.embed_weights = Some(w);
    generate(&spec, &with_weights).unwrap().write_to(&own).unwrap();
    assert!(own.join("weights.safetensors").is_file());
    std::fs::write(own.join("keep.txt"), "user file").unwrap();
    c.write_to(&own).unwrap();
    assert!(
        !own.join("weights.safetensors").exists(),
        "stale embedded weights are removed"
    );
    assert!(own.join("keep.txt").is_file() && own.join("src/lib.rs").is_file());
}

/// A batch-1 conv in a crate for two threads: the wrapper cutting it into two bands of output
/// rows (`codegen::threads_bands`), and the bands' own templates (the top one padded above, the
/// bottom one below, each reading its 17 input rows).
#[test]
fn batch1_conv_bands() {
    let (spec, mut opts) = options("cifar10_cnn", 1);
    opts.threads = 2;
    let lib = generate(&spec, &opts).unwrap().file("src/lib.rs").unwrap().to_string();
    let start = lib.find("fn conv2d_1(").expect("cifar10_cnn's second conv");
    let end = start + lib[start..].find("\n}\n").expect("the wrapper's end") + 2;
    let bands: Vec<&str> = lib
        .lines()
        .filter(|l| l.starts_with("/// One thread's share of [`conv2d_1`]"))
        .collect();
    assert_eq!(bands.len(), 2, "one template per band");
    insta::assert_snapshot!(format!("{}\n\n{}", &lib[start..end], bands.join("\n")));
}
