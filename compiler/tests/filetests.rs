//! IR file tests, after Cranelift's filetests: each `filetests/*.test` file describes a small
//! model in a tiny line format, says which dumps to print after the middle end, and holds the
//! expected text after an `expected:` line. `CNNC_BLESS=1 cargo test --test filetests`
//! rewrites the expected sections with the actual output.
//!
//! ```text
//! ; comment
//! test: kernels plan          sections: graph, kernels, buffers, plan, program
//! model: name batch=8 mode=training input=28x28x1
//! optimizer: adam             optional: adam | sgd | rmsprop (training)
//! fold_bn: off                optional
//! layers:
//!   conv2d filters=32 kernel=3 strides=1 padding=same activation=relu use_bias=true
//!   batch_norm
//!   activation relu
//!   max_pool size=2 strides=2 padding=valid
//!   avg_pool size=2
//!   flatten
//!   dropout rate=0.2
//!   dense units=10 activation=softmax
//! loss: sparse_categorical_crossentropy
//! expected:
//! ...
//! ```

mod passes_support;

use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;

use cnnc_compiler::ir::{self, Activation, Graph, LossKind, Mode};
use cnnc_compiler::kernel_ir::{self, dump::kernel_line, plan, Machine, Program, Stage, UpdateRule};
use cnnc_compiler::passes::{self, PipelineOptions};
use passes_support::Model;

const EXPECTED: &str = "expected:";

/// A parsed test file.
struct FileTest {
    sections: Vec<String>,
    graph: Graph,
    opts: PipelineOptions,
}

fn words(line: &str) -> (&str, HashMap<&str, &str>) {
    let mut it = line.split_whitespace();
    let head = it.next().unwrap_or("");
    let kv = it.filter_map(|w| w.split_once('=')).collect();
    (head, kv)
}

fn num(kv: &HashMap<&str, &str>, key: &str, default: Option<usize>, at: &str) -> Result<usize, String> {
    match kv.get(key) {
        Some(v) => v.parse().map_err(|_| format!("{at}: {key}={v} is not a number")),
        None => default.ok_or(format!("{at}: missing {key}=")),
    }
}

fn activation(name: &str, at: &str) -> Result<Activation, String> {
    Activation::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
        .ok_or(format!("{at}: unknown activation {name}"))
}

fn parse(text: &str, file: &str) -> Result<FileTest, String> {
    let mut sections = Vec::new();
    let mut model: Option<Model> = None;
    let mut opts = PipelineOptions {
        machine: Machine::reference(),
        verify: true,
        ..PipelineOptions::default()
    };
    let mut loss = LossKind::SparseCategoricalCrossentropy;
    let mut in_layers = false;
    for (n, raw) in text.lines().enumerate() {
        let at = format!("{file}:{}", n + 1);
        let line = raw.split(';').next().unwrap_or("").trim();
        if raw.trim() == EXPECTED {
            break;
        }
        if line.is_empty() {
            continue;
        }
        if let Some((key, rest)) = line.split_once(':') {
            in_layers = key == "layers";
            let rest = rest.trim();
            match key {
                "test" => sections = rest.split_whitespace().map(String::from).collect(),
                "model" => {
                    let (name, kv) = words(rest);
                    let mode = match kv.get("mode").copied().unwrap_or("inference") {
                        "inference" => Mode::Inference,
                        "training" => Mode::Training,
                        m => return Err(format!("{at}: unknown mode {m}")),
                    };
                    let input: Vec<usize> = kv
                        .get("input")
                        .ok_or(format!("{at}: missing input="))?
                        .split('x')
                        .map(|d| d.parse().map_err(|_| format!("{at}: bad input size {d}")))
                        .collect::<Result<_, _>>()?;
                    model = Some(Model::new(name, num(&kv, "batch", None, &at)?, mode, &input));
                }
                "optimizer" => {
                    opts.update = Some(match rest {
                        "adam" => UpdateRule::adam(),
                        "sgd" => UpdateRule::sgd(),
                        "rmsprop" => UpdateRule::rmsprop(),
                        o => return Err(format!("{at}: unknown optimizer {o}")),
                    })
                }
                "fold_bn" => opts.fold_bn = rest != "off",
                "loss" => {
                    loss = LossKind::ALL
                        .iter()
                        .find(|(n, _)| *n == rest)
                        .map(|(_, l)| *l)
                        .ok_or(format!("{at}: unknown loss {rest}"))?
                }
                "layers" => {}
                k => return Err(format!("{at}: unknown key {k}")),
            }
            continue;
        }
        if !in_layers {
            return Err(format!("{at}: expected `key: value`, got {line:?}"));
        }
        let m = model.as_mut().ok_or(format!("{at}: layers before model:"))?;
        let (kind, kv) = words(line);
        let act = activation(kv.get("activation").copied().unwrap_or("linear"), &at)?;
        let same = kv.get("padding").copied() == Some("same");
        match kind {
            "conv2d" => {
                let bias = kv.get("use_bias").copied() != Some("false");
                let (f, k) = (num(&kv, "filters", None, &at)?, num(&kv, "kernel", None, &at)?);
                m.conv2d(f, k, num(&kv, "strides", Some(1), &at)?, same, act, bias);
            }
            "dense" => {
                m.dense(num(&kv, "units", None, &at)?, act);
            }
            "batch_norm" => {
                m.batch_norm();
            }
            "activation" => {
                let name = line.split_whitespace().nth(1).unwrap_or("");
                m.act(activation(name, &at)?);
            }
            "max_pool" | "avg_pool" => {
                let size = num(&kv, "size", Some(2), &at)?;
                let stride = num(&kv, "strides", Some(size), &at)?;
                if kind == "max_pool" {
                    m.max_pool(size, stride, same);
                } else {
                    m.avg_pool(size, stride, same);
                }
            }
            "flatten" => {
                m.flatten();
            }
            "dropout" => {
                let rate: f32 = kv
                    .get("rate")
                    .and_then(|r| r.parse().ok())
                    .ok_or(format!("{at}: dropout needs rate="))?;
                m.dropout(rate);
            }
            l => return Err(format!("{at}: unknown layer {l}")),
        }
    }
    let graph = model.ok_or(format!("{file}: no model:"))?.finish(loss);
    Ok(FileTest { sections, graph, opts })
}

fn plan_section(p: &Program) -> String {
    let stats = plan::stats(p);
    let life = plan::lifetimes(p);
    let mut s = format!(
        "arena={} unshared={} persistent={}\n",
        stats.arena_bytes, stats.unshared_bytes, stats.persistent_bytes
    );
    for (b, l) in p.ids().zip(&life) {
        if let (Some(l), Some(off)) = (l, p.buffer(b).offset) {
            let buf = p.buffer(b);
            let _ = writeln!(
                s,
                "  {b} {:<9} [{off:>8}, {:>8}) k{}..k{}  {}",
                buf.kind.name(),
                off + buf.bytes(),
                l.first,
                l.last,
                buf.name
            );
        }
    }
    s
}

fn kernels_section(p: &Program, unfused: usize) -> String {
    let mut s = format!(
        "; {unfused} kernels unfused -> {} (prepare {}, forward {}, backward {}, update {})\n",
        p.kernels.len(),
        p.stage_kernels(Stage::Prepare),
        p.stage_kernels(Stage::Forward),
        p.stage_kernels(Stage::Backward),
        p.stage_kernels(Stage::Update)
    );
    for (i, k) in p.kernels.iter().enumerate() {
        s.push_str(&kernel_line(i, k));
        s.push('\n');
    }
    s
}

/// The text the file's `test:` line asks for.
fn run(t: &FileTest) -> Result<String, String> {
    let e = |e: passes::PassError| e.to_string();
    let g = passes::run_pipeline(t.graph.clone(), &t.opts).map_err(e)?;
    let lowered = passes::lower(&g, &t.opts).map_err(e)?;
    let unfused = {
        let o = PipelineOptions {
            fuse: false,
            ..t.opts.clone()
        };
        passes::run_kernel_pipeline(lowered.clone(), &o)
            .map_err(e)?
            .kernels
            .len()
    };
    let p = passes::run_kernel_pipeline(lowered, &t.opts).map_err(e)?;
    let mut out = String::new();
    for section in &t.sections {
        let text = match section.as_str() {
            "graph" => ir::dump(&g),
            "kernels" => kernels_section(&p, unfused),
            "plan" => plan_section(&p),
            "buffers" | "program" => kernel_ir::dump(&p),
            s => return Err(format!("unknown section {s}")),
        };
        let _ = writeln!(out, "== {section}");
        out.push_str(&text);
    }
    Ok(out)
}

#[test]
fn filetests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests");
    let bless = std::env::var("CNNC_BLESS").is_ok_and(|v| v == "1");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("filetests directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "expected at least 4 file tests in {}", dir.display());
    let mut failures = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let text = std::fs::read_to_string(path).expect("readable test file");
        let actual = match parse(&text, &name).and_then(|t| run(&t)) {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let (head, expected) = match text.find(&format!("\n{EXPECTED}\n")) {
            Some(i) => (&text[..i], &text[i + EXPECTED.len() + 2..]),
            None => (text.trim_end(), ""),
        };
        if expected == actual {
            continue;
        }
        if bless {
            std::fs::write(path, format!("{head}\n{EXPECTED}\n{actual}")).expect("writable test file");
            eprintln!("blessed {name}");
            continue;
        }
        let first_diff = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        failures.push(format!(
            "{name}: output differs from line {} of the expected section\n  expected: {:?}\n  actual:   {:?}\n(CNNC_BLESS=1 rewrites the expected sections)\n--- actual output ---\n{actual}",
            first_diff + 1,
            expected.lines().nth(first_diff).unwrap_or("<end>"),
            actual.lines().nth(first_diff).unwrap_or("<end>"),
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} file tests failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
