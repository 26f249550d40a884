//! Robustness: arbitrary bytes, mutated model files and random code-built specs go through
//! parse → lower (both modes) → summary and must give a result or an error, never a panic
//! (a panic fails the test; lowering also runs the IR verifier in test builds).

use std::path::{Path, PathBuf};

use cnnc_compiler::ir::Mode;
use cnnc_compiler::lower::lower;
use cnnc_compiler::spec::{parse_model, Activation, LayerKind, LayerSpec, ModelSpec, Padding, MODEL_INPUT};
use cnnc_compiler::summary::summary;
use cnnc_runtime::rng::Rng;

const ALPHABET: &[u8] = b"{}[]:,-  \n\n#$&*!|>'\"0123456789abcdefghijklmnopqrstuvwxyz_.\t~";
const WORDS: [&str; 24] = [
    "conv2d",
    "dense",
    "add",
    "concatenate",
    "repeat",
    "times",
    "layers",
    "blocks",
    "params",
    "inputs",
    "input",
    "name",
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "same",
    "valid",
    "units",
    "rate",
    "$filters",
    "flatten",
    "batch_normalization",
    "max_pooling2d",
];
const NUMBERS: [&str; 10] = ["0", "-1", "1", "2", "3", "65537", "1000000", "4294967296", "1e9", "0.5"];

/// The texts of `models/*.yaml` (valid) or `models/invalid/*.yaml`.
fn model_texts(invalid: bool) -> Vec<String> {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    if invalid {
        dir.push("invalid");
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("models/ exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("utf-8 model"))
        .collect()
}

/// Parses, and lowers whatever parses; errors are fine, panics are not. Returns whether it
/// parsed and how many graphs it lowered.
fn exercise(text: &str) -> (bool, usize) {
    match parse_model(text, Path::new("fuzz.yaml")) {
        Ok(spec) => (true, exercise_spec(&spec)),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            (false, 0)
        }
    }
}

/// Lowers in both modes and summarises; returns how many lowerings succeeded.
fn exercise_spec(spec: &ModelSpec) -> usize {
    let mut ok = 0;
    for (batch, mode) in [(1, Mode::Inference), (2, Mode::Training)] {
        if let Ok(g) = lower(spec, batch, mode) {
            assert!(summary(&g).contains("Total params"));
            ok += 1;
        }
    }
    ok
}

fn random_bytes(rng: &mut Rng, n: usize, alphabet: Option<&[u8]>) -> Vec<u8> {
    (0..n)
        .map(|_| match alphabet {
            Some(a) => a[rng.below(a.len())],
            None => rng.next_u64() as u8,
        })
        .collect()
}

/// The byte range of the first run of bytes satisfying `f` at or after `at`.
fn run_from(text: &[u8], at: usize, f: impl Fn(u8) -> bool) -> Option<(usize, usize)> {
    let s = (at..text.len()).find(|&i| f(text[i]))?;
    let e = (s..text.len()).find(|&i| !f(text[i])).unwrap_or(text.len());
    Some((s, e))
}

/// One random edit of `text` at a random place: mostly token-level (numbers, words), which
/// keeps many mutants parseable so that lowering is exercised too.
fn mutate(rng: &mut Rng, text: &mut Vec<u8>) {
    let at = rng.below(text.len() + 1);
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    match rng.below(8) {
        0 => {
            let end = (at + 1 + rng.below(12)).min(text.len());
            text.drain(at.min(end)..end);
        }
        1 => {
            let n = 1 + rng.below(6);
            let ins = random_bytes(rng, n, Some(ALPHABET));
            text.splice(at..at, ins);
        }
        2 | 3 => {
            if let Some((s, e)) = run_from(text, at, |b| b.is_ascii_digit()) {
                let w = NUMBERS[rng.below(NUMBERS.len())].as_bytes().to_vec();
                text.splice(s..e, w);
            }
        }
        4 | 5 => {
            if let Some((s, e)) = run_from(text, at, word) {
                let w = WORDS[rng.below(WORDS.len())].as_bytes().to_vec();
                text.splice(s..e, w);
            }
        }
        6 => {
            // Duplicate a line.
            let s = text[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let e = text[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(text.len(), |i| at + i + 1);
            let line = text[s..e].to_vec();
            text.splice(e..e, line);
        }
        _ => {
            if !text.is_empty() {
                let i = at.min(text.len() - 1);
                text[i] = rng.next_u64() as u8;
            }
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::new(0xF0F0);
    for i in 0..2000 {
        let n = rng.below(300);
        let bytes = random_bytes(&mut rng, n, if i % 2 == 0 { None } else { Some(ALPHABET) });
        exercise(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn mutated_models_never_panic() {
    let (valid, invalid) = (model_texts(false), model_texts(true));
    let mut rng = Rng::new(7);
    let (mut parsed, mut lowered) = (0, 0);
    for _ in 0..6000 {
        let texts = if rng.below(4) == 0 { &invalid } else { &valid };
        let mut t = texts[rng.below(texts.len())].clone().into_bytes();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut t);
        }
        let (p, l) = exercise(&String::from_utf8_lossy(&t));
        parsed += p as usize;
        lowered += l;
    }
    // The mutants must reach the expander and the lowering often enough to test them.
    assert!(
        parsed >= 900 && lowered >= 900,
        "only {parsed} mutants parsed and {lowered} lowered"
    );
}

fn pick<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[rng.below(xs.len())]
}

fn random_kind(rng: &mut Rng) -> LayerKind {
    let size = |rng: &mut Rng| pick(rng, &[0, 1, 1, 2, 3, 5, 70_000]);
    let pair = |rng: &mut Rng| [size(rng), size(rng)];
    let padding = |rng: &mut Rng| pick(rng, &[Padding::Valid, Padding::Same]);
    let act = |rng: &mut Rng| pick(rng, &[Activation::Linear, Activation::Relu, Activation::Softmax]);
    match rng.below(12) {
        0 => LayerKind::Conv2d {
            filters: size(rng),
            kernel_size: pair(rng),
            strides: pair(rng),
            padding: padding(rng),
            activation: act(rng),
            use_bias: rng.below(2) == 0,
            kernel_initializer: cnnc_compiler::spec::Init::GlorotUniform,
            bias_initializer: cnnc_compiler::spec::Init::Zeros,
        },
        1 => LayerKind::BatchNormalization {
            axis: pick(rng, &[-1, 1, 3, 0, -9]),
            momentum: pick(rng, &[0.99, 1.5, f32::NAN]),
            epsilon: pick(rng, &[1e-3, 0.0]),
            center: rng.below(2) == 0,
            scale: rng.below(2) == 0,
        },
        2 => LayerKind::Activation(act(rng)),
        3 => LayerKind::MaxPooling2d {
            pool_size: pair(rng),
            strides: pair(rng),
            padding: padding(rng),
        },
        4 => LayerKind::AveragePooling2d {
            pool_size: pair(rng),
            strides: pair(rng),
            padding: padding(rng),
        },
        5 => LayerKind::GlobalAveragePooling2d,
        6 => LayerKind::Dropout {
            rate: pick(rng, &[0.0, 0.5, 1.0]),
            seed: None,
        },
        7 => LayerKind::Flatten,
        8 => LayerKind::Dense {
            units: size(rng),
            activation: act(rng),
            use_bias: true,
            kernel_initializer: cnnc_compiler::spec::Init::GlorotUniform,
            bias_initializer: cnnc_compiler::spec::Init::Zeros,
        },
        9 => LayerKind::Reshape {
            target_shape: (0..rng.below(4)).map(|_| size(rng)).collect(),
        },
        10 => LayerKind::Add,
        _ => LayerKind::Concatenate {
            axis: pick(rng, &[-1, 1, 3, 0, 9]),
        },
    }
}

#[test]
fn random_code_built_specs_never_panic() {
    let mut rng = Rng::new(42);
    let mut lowered = 0;
    for _ in 0..3000 {
        let input: Vec<usize> = (0..1 + rng.below(3))
            .map(|_| pick(&mut rng, &[1, 2, 3, 4, 7, 8]))
            .collect();
        let mut layers: Vec<LayerSpec> = Vec::new();
        for i in 0..1 + rng.below(8) {
            let kind = random_kind(&mut rng);
            let mut names: Vec<String> = vec![MODEL_INPUT.to_string()];
            names.extend(layers.iter().map(|l| l.name.clone()));
            let n_in = if kind.is_merge() { 1 + rng.below(3) } else { 1 };
            let inputs = (0..n_in)
                .map(|k| {
                    if k == 0 && rng.below(3) > 0 {
                        names[names.len() - 1].clone()
                    } else {
                        names[rng.below(names.len())].clone()
                    }
                })
                .collect();
            layers.push(LayerSpec {
                name: format!("l{i}"),
                kind,
                inputs,
                line: None,
            });
        }
        let mut spec = ModelSpec::sequential("random", input, Vec::new());
        spec.layers = layers;
        lowered += exercise_spec(&spec);
    }
    assert!(lowered >= 300, "only {lowered} random specs lowered");
}
