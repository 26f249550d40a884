//! The Rust backend: `cnnc compile` writes a standalone crate (no dependencies) with a model's
//! specialised code.
//!
//! [`generate`] lowers the model, compiles it with the middle end (`passes::compile`: the same
//! kernel-IR programs the kernels backend runs, so every fusion, schedule and arena offset comes
//! from the kernel IR) — an inference program with batch norm folded into the weights and,
//! unless inference-only, a training program (forward, loss, backward, then the optimiser's
//! update kernels with the model's rule, `kernels_optim`; their state slots are persistent
//! arena buffers) — and prints:
//!
//! - one Rust function per distinct kernel template (`kernels*`): loop nests with literal
//!   bounds over fixed-size array operands; the GEMM-shaped ones (conv forward and gradients,
//!   GEMM) hold `mr × nr` register blocks of the schedule in 16-lane vectors (`kernels_lanes`,
//!   `support::V`: AVX-512 registers when built with `avx512f`, arrays LLVM vectorises
//!   elsewhere) where the block is whole vectors wide, else `axpy`s over the channel axis;
//!   3×3 stride-1 convs and their input gradients on maps of 8×8 or more run as Winograd
//!   F(2×2, 3×3) where the schedule says so (`kernels_winograd`, `support/winograd.rs`), and
//!   input gradients into fewer channels than a vector by columns and col2im
//!   (`kernels_conv_scatter`);
//!   kernels with equal `KernelOp`s share a function, so repeated blocks cost nothing to build;
//! - per program a `*_prepare` function (load-time kernels) and a `*_run` function calling the
//!   kernels in order on pieces of one arena carved out with `split_at_mut` (`layout`; the
//!   optimiser updates behind `if update`): the only `unsafe` is the vector loads and stores
//!   of `support::V` (through slices checked to hold 16 values). The inference program's
//!   arena starts after the training program's persistent buffers, so `forward` between
//!   training steps keeps the optimiser state. It takes the parameters as one slice per tensor
//!   (`&[&[f32]; N_PARAMS]`: `Model` cuts its flat buffer, the C ABI passes a host's tensors
//!   where they lie), the training program flat (it updates moving statistics in place);
//! - the public API (`api`): constants (batch, shapes, arena size, the parameter layout), a
//!   small safetensors reader, and `Model` (`forward`, `train_step` with the optimiser and a
//!   step counter, `gradients` without) — or, for `no_std`, a `Model` over caller-owned
//!   parameters and arena.
//!
//! With [`CodegenOptions::c_abi`] (for `--backend native`, off for `cnnc compile`) the crate is
//! also a `cdylib` with `src/cnnc_abi.rs` (`api_abi`, `support/abi.rs`): `extern "C"` entry
//! points that check every length and pointer, for a host that loads the built library.
//!
//! The programs are re-planned with the generated kernels' scratch instead of the runtime
//! kernels' packing workspace, which plain loops do not use; this shrinks the arena.
//!
//! [`GeneratedCrate::write_to`] writes the files and a marker (`.cnnc-crate`) listing them, so
//! that regenerating into the same directory is allowed and removes files no longer written,
//! while a non-empty directory without the marker is refused. It writes beside the directory
//! and swaps the result into place (`out_dir`): a failed write leaves no half-written crate.

mod api;
mod api_abi;
mod api_check;
mod api_model;
mod kernels;
mod kernels_conv;
mod kernels_conv_grad;
mod kernels_conv_scatter;
mod kernels_gemm;
mod kernels_lanes;
mod kernels_norm;
mod kernels_optim;
mod kernels_rows;
mod kernels_winograd;
mod kernels_winograd_grad;
mod layout;
mod out_dir;
mod program;
mod threads;
mod threads_bands;
mod writer;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cnnc_runtime::weights::{load_weights, WeightsError};
use thiserror::Error;

use crate::autodiff::{training_graph, AutodiffError};
use crate::error::CompileError;
use crate::ir::{Graph, LossKind, Mode, Shape};
use crate::kernel_ir::{self, BufKind, Buffer, Machine, Program, Storage, UpdateRule};
use crate::lower::lower;
use crate::passes::{compile, PassError, PipelineOptions};
use crate::spec::ModelSpec;

use api::{CrateInfo, ParamInfo, TrainInfo};
use layout::Binder;
use program::{emit_program, Templates};
use writer::Code;

pub use kernels_optim::spec_optimizer;

/// The file marking a directory as a crate cnnc wrote; lists the files it wrote.
pub const MARKER: &str = ".cnnc-crate";

/// The embedded weights' file name in the crate.
pub const WEIGHTS_FILE: &str = "weights.safetensors";

#[derive(Debug, Error)]
pub enum CodegenError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Autodiff(#[from] AutodiffError),
    #[error(transparent)]
    Pass(#[from] PassError),
    /// A kernel the emitter cannot print (a compiler bug or an unsupported configuration).
    #[error("model '{model}', {program} program, kernel {kernel}: {msg}")]
    Kernel {
        model: String,
        program: &'static str,
        kernel: usize,
        msg: String,
    },
    #[error("model '{model}': {msg}")]
    Model { model: String, msg: String },
    #[error("weights to embed: {0}")]
    Weights(#[from] WeightsError),
    #[error("{}: {msg}", path.display())]
    Output { path: PathBuf, msg: String },
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct CodegenOptions {
    pub batch: usize,
    /// Also a training program and `Model::train_step`.
    pub training: bool,
    /// A `#![no_std]` crate without allocation (inference only).
    pub no_std: bool,
    /// Embed this safetensors file (checked against the model) with `include_bytes!`.
    pub embed_weights: Option<PathBuf>,
    pub loss: LossKind,
    pub from_logits: bool,
    /// The optimiser `Model::train_step` applies (required for training crates).
    pub update: Option<UpdateRule>,
    /// Schedules (tile sizes) are chosen for this machine, for one thread each.
    pub machine: Machine,
    /// Threads the generated convolutions and GEMMs split their samples across (a batch-1
    /// conv: bands of its output rows; a constant of the crate, `codegen::threads`,
    /// `codegen::threads_bands`; 1 for `no_std`).
    pub threads: usize,
    /// Format `src/lib.rs` with `rustfmt` when it is installed.
    pub rustfmt: bool,
    /// Also a C ABI (`src/cnnc_abi.rs`: `#[no_mangle] extern "C"` entry points) and
    /// `crate-type = ["cdylib"]`, for `--backend native` to load the built library; no
    /// `examples/check.rs` then (a cdylib has no Rust API to link it against). A training crate
    /// may then have no optimiser (`update: None`): the host applies its own to the gradients.
    /// Off for `cnnc compile`.
    pub c_abi: bool,
    /// The Cargo package name (default: the model's, [`package_name`]); `--backend native` makes
    /// it unique per cache key so that builds sharing a target directory never overwrite each
    /// other's library.
    pub package: Option<String>,
}

impl CodegenOptions {
    /// Training and inference for `batch` samples with the model's loss and optimiser (as
    /// `cnnc train` builds it: [`spec_optimizer`]), scheduled for this machine's caches and SIMD
    /// width, on one thread (set `threads` for more).
    pub fn new(spec: &ModelSpec, batch: usize) -> Self {
        CodegenOptions {
            batch,
            training: true,
            no_std: false,
            embed_weights: None,
            loss: spec.training.loss.unwrap_or(LossKind::SparseCategoricalCrossentropy),
            from_logits: spec.training.from_logits.unwrap_or(false),
            update: spec_optimizer(spec).map(|k| k.rule()),
            machine: Machine {
                cores: 1,
                ..Machine::detect()
            },
            threads: 1,
            rustfmt: true,
            c_abi: false,
            package: None,
        }
    }
}

/// A generated crate, in memory.
#[derive(Clone, Debug)]
pub struct GeneratedCrate {
    pub package: String,
    /// (path relative to the crate root, contents).
    pub files: Vec<(PathBuf, String)>,
    /// The safetensors file to copy to [`WEIGHTS_FILE`].
    pub weights: Option<PathBuf>,
    pub arena_bytes: usize,
    /// Kernels per inference and per training run, and generated kernel functions.
    pub inference_kernels: usize,
    pub training_kernels: Option<usize>,
    /// The optimiser `Model::train_step` applies (training crates).
    pub update: Option<UpdateRule>,
    pub functions: usize,
    /// Whether `rustfmt` formatted the sources.
    pub formatted: bool,
}

impl GeneratedCrate {
    /// The contents of `path` (relative to the crate root).
    pub fn file(&self, path: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(p, _)| p == Path::new(path))
            .map(|(_, s)| s.as_str())
    }

    /// Renames the Cargo package (and so the library's file) to `name`, which must be a
    /// valid package name (see [`package_name`]).
    pub fn rename_package(&mut self, name: &str) {
        let old = format!("\nname = \"{}\"\n", self.package);
        let new = format!("\nname = \"{name}\"\n");
        for (path, text) in &mut self.files {
            if path == Path::new("Cargo.toml") {
                *text = text.replacen(&old, &new, 1);
            }
        }
        self.package = name.to_string();
    }

    /// Writes the crate into `dir` (created when missing). Refuses a non-empty directory that
    /// has no [`MARKER`]; in one that has, the files the previous generation wrote are replaced
    /// and everything else (a `target/`, the user's files) kept. The crate is written beside
    /// `dir` and swapped into place (`out_dir`), so a failure leaves `dir` as it was. Returns
    /// the written paths.
    pub fn write_to(&self, dir: &Path) -> Result<Vec<PathBuf>, CodegenError> {
        let out_err = |path: &Path, msg: String| CodegenError::Output {
            path: path.to_path_buf(),
            msg,
        };
        fn io(path: &Path) -> impl Fn(std::io::Error) -> CodegenError + '_ {
            move |e| CodegenError::Output {
                path: path.to_path_buf(),
                msg: e.to_string(),
            }
        }
        let marker = dir.join(MARKER);
        let mut previous = Vec::new();
        if dir.exists() {
            if !dir.is_dir() {
                return Err(out_err(dir, "exists and is not a directory".into()));
            }
            let non_empty = std::fs::read_dir(dir).map_err(io(dir))?.next().is_some();
            if non_empty && !marker.is_file() {
                return Err(out_err(
                    dir,
                    format!("the directory is not empty and holds no {MARKER} (not a crate cnnc wrote); refusing to write into it"),
                ));
            }
            if marker.is_file() {
                let text = std::fs::read_to_string(&marker).map_err(io(&marker))?;
                previous = text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                    .map(PathBuf::from)
                    .collect();
            }
        }
        let mut written: Vec<PathBuf> = self.files.iter().map(|(p, _)| p.clone()).collect();
        if self.weights.is_some() {
            written.push(PathBuf::from(WEIGHTS_FILE));
        }
        let mut keep = Vec::new();
        if dir.is_dir() {
            kept_entries(dir, Path::new(""), &previous, &written, &mut keep).map_err(io(dir))?;
        }
        let staging = out_dir::Staging::new(dir).map_err(io(dir))?;
        let tmp = staging.path();
        for (rel, text) in &self.files {
            let path = tmp.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(&dir.join(rel)))?;
            }
            std::fs::write(&path, text).map_err(io(&dir.join(rel)))?;
        }
        if let Some(w) = &self.weights {
            let dst = dir.join(WEIGHTS_FILE);
            std::fs::copy(w, tmp.join(WEIGHTS_FILE))
                .map_err(|e| out_err(&dst, format!("copying {}: {e}", w.display())))?;
        }
        let mut list = String::from("# Written by `cnnc compile`; cnnc may overwrite or remove the files below.\n");
        for p in &written {
            list.push_str(&format!("{}\n", p.display()));
        }
        std::fs::write(tmp.join(MARKER), list).map_err(io(&marker))?;
        staging.commit(&keep).map_err(io(dir))?;
        written.push(PathBuf::from(MARKER));
        Ok(written.into_iter().map(|p| dir.join(p)).collect())
    }
}

/// The entries under `dir/rel` that a new generation keeps: all but the marker, the files the
/// previous generation wrote (`previous`) and those the new one writes (`written`, which
/// replace them); a directory holding none of these is kept whole.
fn kept_entries(
    dir: &Path,
    rel: &Path,
    previous: &[PathBuf],
    written: &[PathBuf],
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir.join(rel))? {
        let entry = entry?;
        let r = rel.join(entry.file_name());
        if r == Path::new(MARKER) || previous.contains(&r) || written.contains(&r) {
            continue;
        }
        let ours = |p: &PathBuf| p.starts_with(&r);
        if entry.file_type()?.is_dir() && (previous.iter().any(ours) || written.iter().any(ours)) {
            kept_entries(dir, &r, previous, written, out)?;
        } else {
            out.push(r);
        }
    }
    Ok(())
}

/// Rust's strict and reserved keywords (2021 edition, plus 2024's `gen`): a crate named so
/// cannot be `use`d (`use fn::*` does not parse, and `r#` is not allowed for crate names).
const RUST_KEYWORDS: [&str; 51] = [
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for", "if", "impl", "in",
    "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self", "static", "struct", "super", "trait",
    "true", "type", "unsafe", "use", "where", "while", "async", "await", "dyn", "abstract", "become", "box", "do",
    "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

/// A Cargo package name for model `name`: lowercase ASCII letters, digits and `_`; names that
/// cannot be a crate's (empty, leading digit or `_`, the standard crates' or a Rust keyword)
/// get a `model_` prefix.
pub fn package_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let reserved = ["test", "core", "std", "alloc", "proc_macro", "self", "crate", "super"];
    if s.is_empty()
        || s.starts_with(|c: char| c.is_ascii_digit() || c == '_')
        || reserved.contains(&s.as_str())
        || RUST_KEYWORDS.contains(&s.as_str())
    {
        s = format!("model_{s}");
    }
    s
}

/// Generates the crate for `spec`.
pub fn generate(spec: &ModelSpec, opts: &CodegenOptions) -> Result<GeneratedCrate, CodegenError> {
    let model = spec.name.clone();
    let model_err = |msg: String| CodegenError::Model {
        model: model.clone(),
        msg,
    };
    if opts.batch == 0 {
        return Err(model_err("the batch size must be at least 1".into()));
    }
    let threads = opts.threads.max(1);
    if opts.no_std && threads > 1 {
        return Err(model_err(format!(
            "a no_std crate runs on one thread (asked for {threads}: threads need std)"
        )));
    }
    if opts.c_abi && opts.no_std {
        return Err(model_err(
            "a crate with the C ABI needs std (no_std and c_abi exclude each other)".into(),
        ));
    }
    let training = opts.training && !opts.no_std;
    let update = match (training, opts.update) {
        (true, None) if !opts.c_abi => {
            return Err(model_err(format!(
                "a training crate needs an optimiser; training.optimizer {:?} is not one of adam, sgd, rmsprop",
                spec.training.optimizer.as_deref().unwrap_or("")
            )))
        }
        (_, u) => u,
    };
    let pipeline = PipelineOptions {
        machine: opts.machine,
        fold_bn: true,
        fuse: true,
        update,
        prepare_winograd: true,
        ..PipelineOptions::default()
    };
    let fwd_train = lower(spec, opts.batch, Mode::Training)?;
    let specs = fwd_train.param_specs();
    let inference_graph = lower(spec, opts.batch, Mode::Inference)?;
    let io_shapes = |g: &Graph| -> Option<(Vec<usize>, Vec<usize>)> {
        let input = g.shape(g.input()?).0.clone();
        let pred = g.shape(g.output(&crate::ir::OutputRole::Prediction)?).0.clone();
        Some((input, pred))
    };
    let (input, pred) = io_shapes(&inference_graph).ok_or_else(|| model_err("no input or prediction".into()))?;
    let replan = |p: Program| with_generated_scratch(p).map_err(|e| model_err(format!("re-planning the arena: {e}")));
    let infer = replan(compile(inference_graph, &pipeline)?)?;
    let train = if training {
        if opts.loss != LossKind::MeanSquaredError {
            crate::lower::check_classifier_output(spec, &fwd_train)?;
        }
        let g = training_graph(&fwd_train, opts.loss, opts.from_logits)?;
        Some(replan(compile(g, &pipeline)?)?)
    } else {
        None
    };
    if let Some(w) = &opts.embed_weights {
        load_weights(w, &specs)?;
    }

    let mut params = Vec::new();
    // Per parameter name: (index in `PARAMS`, f32 offset in the flat layout).
    let mut slots = HashMap::new();
    let mut at = 0;
    for (i, s) in specs.iter().enumerate() {
        slots.insert(s.name.clone(), (i, at));
        params.push(ParamInfo {
            name: s.name.clone(),
            shape: s.shape.clone(),
            offset: at,
            trainable: s.trainable,
        });
        at += s.shape.iter().product::<usize>();
    }
    let params_f32s = at;
    let programs: Vec<&Program> = std::iter::once(&infer).chain(train.as_ref()).collect();
    let shapes: HashMap<&str, &[usize]> = params.iter().map(|q| (q.name.as_str(), &q.shape[..])).collect();
    for p in &programs {
        for b in p.params() {
            let buf = p.buffer(b);
            if let BufKind::Param { name, .. } = &buf.kind {
                let known = shapes.get(name.as_str()) == Some(&&buf.shape.0[..]);
                if !known {
                    return Err(model_err(format!(
                        "parameter '{name}' {} is not a model parameter",
                        buf.shape
                    )));
                }
            }
        }
    }
    // The inference program's arena lies after the training program's persistent buffers.
    let infer_base = train.as_ref().map_or(0, persistent_f32s);
    let arena_f32s =
        (infer_base + infer.arena_bytes().div_ceil(4)).max(train.as_ref().map_or(0, |p| p.arena_bytes().div_ceil(4)));

    let mut templates = Templates::new(threads);
    let emit = |p: &Program, tag: &str, program: &'static str, t: &mut Templates| {
        let inference = program == "inference";
        let binder = Binder {
            program: p,
            params: &slots,
            parts: inference,
            arena_base: if inference { infer_base } else { 0 },
            arena_f32s,
        };
        emit_program(p, tag, &binder, t).map_err(|(kernel, msg)| CodegenError::Kernel {
            model: model.clone(),
            program,
            kernel,
            msg,
        })
    };
    let infer_code = emit(&infer, "infer", "inference", &mut templates)?;
    let train_code = match &train {
        Some(p) => Some(emit(p, "train", "training", &mut templates)?),
        None => None,
    };
    let mut kernels = Code::new();
    kernels.line("// ---- kernels: one function per distinct template ----");
    let mut functions = 0;
    for t in &templates.list {
        kernels.line("");
        let doc = format!("{}\n\nUsed by {}.", t.describe, t.uses.join(", "));
        functions +=
            kernels::emit_function(&mut kernels, &t.name, &t.op, &t.schedule, t.in_place, &doc).map_err(|msg| {
                CodegenError::Kernel {
                    model: model.clone(),
                    program: "any",
                    kernel: 0,
                    msg: format!("template {}: {msg}", t.name),
                }
            })?;
    }

    let target_f32s = train
        .as_ref()
        .and_then(|p| p.buffers.iter().find(|b| b.kind == BufKind::Target))
        .map_or(0, |b| b.numel());
    let info = CrateInfo {
        model: model.clone(),
        package: opts.package.clone().unwrap_or_else(|| package_name(&model)),
        batch: opts.batch,
        input_shape: input[1..].to_vec(),
        outputs: pred[1..].iter().product(),
        params,
        params_f32s,
        arena_f32s,
        no_std: opts.no_std,
        c_abi: opts.c_abi,
        embed: opts.embed_weights.is_some(),
        train: train_code.map(|code| TrainInfo {
            code,
            target_f32s,
            sparse_targets: opts.loss == LossKind::SparseCategoricalCrossentropy,
            loss: opts.loss.keras_name(),
            optimizer: update.map_or_else(
                || "none (gradients only: the host applies its optimiser)".to_string(),
                |u| u.to_string(),
            ),
        }),
        infer: infer_code,
        functions,
        threads,
    };
    let mut lib = Code::new();
    api::lib_head(&mut lib, &info);
    lib.line("// ---- programs ----");
    lib.line("");
    lib.raw(&info.infer.prepare_fn);
    lib.line("");
    lib.raw(&info.infer.run_fn);
    if let Some(t) = &info.train {
        lib.line("");
        lib.raw(&t.code.prepare_fn);
        lib.line("");
        lib.raw(&t.code.run_fn);
    }
    lib.line("");
    lib.raw(&kernels.finish());
    let mut lib = lib.finish();
    let mut check = api_check::check_rs(&info);
    let mut formatted = false;
    if opts.rustfmt {
        if let (Some(l), Some(c)) = (rustfmt(&lib), rustfmt(&check)) {
            (lib, check, formatted) = (l, c, true);
        }
    }
    let mut files = vec![
        (PathBuf::from("Cargo.toml"), api::cargo_toml(&info)),
        (PathBuf::from("src/lib.rs"), lib),
        (PathBuf::from("src/support.rs"), api::support_rs(opts.no_std)),
    ];
    if opts.c_abi {
        files.push((PathBuf::from("src/cnnc_abi.rs"), api_abi::abi_rs(&info)));
    } else {
        files.push((PathBuf::from("examples/check.rs"), check));
    }
    Ok(GeneratedCrate {
        package: info.package.clone(),
        files,
        weights: opts.embed_weights.clone(),
        arena_bytes: info.arena_f32s * 4,
        inference_kernels: info.infer.run_kernels,
        training_kernels: info.train.as_ref().map(|t| t.code.run_kernels),
        update: update.filter(|_| training),
        functions: info.functions,
        formatted,
    })
}

/// f32 values from the arena's start that hold `p`'s persistent buffers (the planner packs
/// them first).
fn persistent_f32s(p: &Program) -> usize {
    p.buffers
        .iter()
        .filter(|b| b.kind.storage() == Storage::Persistent)
        .filter_map(|b| Some(b.offset? + b.arena_bytes()))
        .max()
        .unwrap_or(0)
        .div_ceil(4)
}

/// `p` with the runtime kernels' scratch buffers (packed GEMM panels, per-thread partial
/// sums) replaced by what the generated kernels need (transposed operands, see
/// `kernels::scratch_of`; partial sums live on the stack), re-planned. Fusion,
/// schedules and everything else stay as the middle end decided.
fn with_generated_scratch(mut p: Program) -> Result<Program, String> {
    for i in 0..p.kernels.len() {
        p.kernels[i].scratch = kernels::scratch_of(&p.kernels[i].op).map(|(name, len)| {
            let name = format!("{}.{name}", p.kernels[i].op.mnemonic());
            p.add_buffer(Buffer::new(name, BufKind::Scratch, Shape(vec![4 * len])))
        });
    }
    p.compact();
    kernel_ir::plan(&mut p);
    let errs = kernel_ir::plan::check(&p);
    if errs.is_empty() {
        Ok(p)
    } else {
        Err(errs.join("; "))
    }
}

/// `src` formatted by `rustfmt --edition 2021` (its default style), if rustfmt runs.
fn rustfmt(src: &str) -> Option<String> {
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021"])
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let text = src.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

#[cfg(test)]
mod tests {
    use super::package_name;

    #[test]
    fn package_names_are_usable_crate_names() {
        assert_eq!(package_name("mnist_cnn"), "mnist_cnn");
        assert_eq!(package_name("ResNet-20"), "resnet_20");
        assert_eq!(package_name("std"), "model_std");
        assert_eq!(package_name("3layers"), "model_3layers");
        for keyword in ["fn", "Match", "async", "yield", "try", "gen", "self"] {
            assert_eq!(package_name(keyword), format!("model_{}", keyword.to_lowercase()));
        }
    }
}
