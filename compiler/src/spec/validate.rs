//! Checks a [`ModelSpec`] before lowering (it may come from YAML or be built in Rust code):
//! names, references, cycles, unused layers, argument ranges and the compiler's size limits.
//! Shapes are checked by lowering, which knows them.

use std::collections::HashMap;

use super::{LayerKind, LayerSpec, ModelSpec, TrainingSpec, MODEL_INPUT};
use crate::error::{CompileError, SourceLoc};

/// Most layers a model may have once blocks and repeats are expanded.
pub const MAX_LAYERS: usize = 10_000;
/// Largest input dimension, kernel, pool or stride size.
pub const MAX_INPUT_DIM: usize = 65_536;
/// Largest tensor (activation or weight), in elements.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 31;
/// Largest total of weights, in elements (16 GiB of f32).
pub const MAX_WEIGHT_ELEMENTS: usize = 1 << 32;
/// Longest name a model, block or layer may be declared with, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// Longest full layer name (`<instance>/.../<name>` inside nested blocks), in characters.
pub const MAX_LAYER_PATH_CHARS: usize = 1024;

/// `name`, or its first characters and `...` when it is too long to repeat in a message.
pub(crate) fn shortened(name: &str) -> String {
    const SHOWN: usize = 40;
    if name.chars().count() <= SHOWN + 8 {
        name.to_string()
    } else {
        format!("{}...", name.chars().take(SHOWN).collect::<String>())
    }
}

/// Every check that needs no shapes; `Ok` when the model can be lowered.
pub fn validate(spec: &ModelSpec) -> Result<(), CompileError> {
    checked_order(spec).map(|_| ())
}

/// Validates `spec` and returns its layers' indices in a topological order (declaration order
/// where the data flow allows).
pub(crate) fn checked_order(spec: &ModelSpec) -> Result<Vec<usize>, CompileError> {
    let file = || SourceLoc::new(spec.source.clone(), None, None);
    if spec.name.is_empty() {
        return Err(CompileError::model(file(), "the model's name is empty"));
    }
    let len = spec.name.chars().count();
    if len > MAX_NAME_CHARS {
        return Err(CompileError::model(
            file(),
            format!(
                "the model's name `{}` is {len} characters long, more than the {MAX_NAME_CHARS} allowed",
                shortened(&spec.name)
            ),
        ));
    }
    check_input(&spec.input).map_err(|m| CompileError::model(file(), m))?;
    check_training(&spec.training).map_err(|m| CompileError::model(file(), format!("training: {m}")))?;
    if spec.layers.is_empty() {
        return Err(CompileError::model(file(), "the model has no layers"));
    }
    if spec.layers.len() > MAX_LAYERS {
        return Err(CompileError::model(
            file(),
            format!(
                "the model has {} layers, more than the {MAX_LAYERS} allowed",
                spec.layers.len()
            ),
        ));
    }
    let mut index = HashMap::new();
    for (i, l) in spec.layers.iter().enumerate() {
        let err =
            |m: String| CompileError::model(spec.loc(l), format!("layer {} ({}): {m}", l.name, l.kind.keras_class()));
        if l.name.is_empty() || l.name == MODEL_INPUT {
            return Err(err("a layer must have a name other than `input`".into()));
        }
        let len = l.name.chars().count();
        if len > MAX_LAYER_PATH_CHARS {
            return Err(CompileError::model(
                spec.loc(l),
                format!(
                    "layer `{}` ({}): its name is {len} characters long, more than the {MAX_LAYER_PATH_CHARS} allowed",
                    shortened(&l.name),
                    l.kind.keras_class()
                ),
            ));
        }
        if let Some(j) = index.insert(l.name.as_str(), i) {
            let at = spec.layers[j]
                .line
                .map(|n| format!(" (first declared at line {n})"))
                .unwrap_or_default();
            return Err(CompileError::model(
                spec.loc(l),
                format!("duplicate layer name `{}`{at}", l.name),
            ));
        }
        check_args(&l.kind).map_err(err)?;
        check_arity(l).map_err(err)?;
    }
    for l in &spec.layers {
        for r in &l.inputs {
            if r != MODEL_INPUT && !index.contains_key(r.as_str()) {
                return Err(CompileError::model(
                    spec.loc(l),
                    format!("layer `{}`: unknown input `{r}`", l.name),
                ));
            }
        }
    }
    let order = topological(spec, &index)?;
    check_all_used(spec, &index)?;
    Ok(order)
}

fn check_input(input: &[usize]) -> Result<(), String> {
    if input.is_empty() || input.len() > 3 {
        return Err(format!(
            "input {input:?}: expected [height, width, channels] or [features] (the batch size is not written)"
        ));
    }
    let mut n: usize = 1;
    for &d in input {
        if d == 0 || d > MAX_INPUT_DIM {
            return Err(format!(
                "input {input:?}: every dimension must be in 1..={MAX_INPUT_DIM}"
            ));
        }
        n = n.saturating_mul(d);
    }
    if n > MAX_TENSOR_ELEMENTS {
        return Err(format!(
            "input {input:?} has {n} elements per sample, more than {MAX_TENSOR_ELEMENTS}"
        ));
    }
    Ok(())
}

fn check_training(t: &TrainingSpec) -> Result<(), String> {
    if let Some(o) = &t.optimizer {
        if !TrainingSpec::OPTIMIZERS.contains(&o.as_str()) {
            return Err(format!(
                "unknown optimizer `{o}`, expected one of: {}",
                TrainingSpec::OPTIMIZERS.join(", ")
            ));
        }
    }
    fn named(what: &str) -> impl Fn(String) -> String + '_ {
        move |m| format!("{what} {m}")
    }
    t.momentum.map_or(Ok(()), fraction).map_err(named("momentum"))?;
    t.validation_split
        .map_or(Ok(()), fraction)
        .map_err(named("validation_split"))?;
    t.learning_rate
        .map_or(Ok(()), learning_rate)
        .map_err(named("learning_rate"))?;
    t.batch_size.map_or(Ok(()), count).map_err(named("batch_size"))?;
    t.epochs.map_or(Ok(()), count).map_err(named("epochs"))
}

// The checks of single `training:` values, shared with the YAML reader (`yaml.rs`), which
// applies them where the value stands so that the error has its line and column.

/// `momentum`, `validation_split`: in [0, 1).
pub(super) fn fraction(x: f32) -> Result<(), String> {
    if x.is_finite() && (0.0..1.0).contains(&x) {
        Ok(())
    } else {
        Err(format!("must be in [0, 1), got {x}"))
    }
}

pub(super) fn learning_rate(lr: f32) -> Result<(), String> {
    if lr.is_finite() && lr > 0.0 {
        Ok(())
    } else {
        Err(format!("must be positive, got {lr}"))
    }
}

/// `batch_size`, `epochs`.
pub(super) fn count(n: usize) -> Result<(), String> {
    if n >= 1 {
        Ok(())
    } else {
        Err("must be at least 1".into())
    }
}

fn size(v: usize, what: &str, max: usize) -> Result<(), String> {
    if v == 0 || v > max {
        Err(format!("{what} must be in 1..={max}, got {v}"))
    } else {
        Ok(())
    }
}

fn window(k: [usize; 2], s: [usize; 2], what: &str) -> Result<(), String> {
    for d in k {
        size(d, what, MAX_INPUT_DIM)?;
    }
    for d in s {
        size(d, "strides", MAX_INPUT_DIM)?;
    }
    Ok(())
}

fn check_args(kind: &LayerKind) -> Result<(), String> {
    match kind {
        LayerKind::Conv2d {
            filters,
            kernel_size,
            strides,
            ..
        } => {
            size(*filters, "filters", MAX_TENSOR_ELEMENTS)?;
            window(*kernel_size, *strides, "kernel_size")
        }
        LayerKind::BatchNormalization { momentum, epsilon, .. } => {
            if !(momentum.is_finite() && (0.0..=1.0).contains(momentum)) {
                return Err(format!("momentum must be in [0, 1], got {momentum}"));
            }
            if !(epsilon.is_finite() && *epsilon > 0.0) {
                return Err(format!("epsilon must be positive, got {epsilon}"));
            }
            Ok(())
        }
        LayerKind::MaxPooling2d { pool_size, strides, .. } | LayerKind::AveragePooling2d { pool_size, strides, .. } => {
            window(*pool_size, *strides, "pool_size")
        }
        LayerKind::Dropout { rate, .. } => {
            if rate.is_finite() && (0.0..1.0).contains(rate) {
                Ok(())
            } else {
                Err(format!("rate must be in [0, 1), got {rate}"))
            }
        }
        LayerKind::Dense { units, .. } => size(*units, "units", MAX_TENSOR_ELEMENTS),
        LayerKind::Reshape { target_shape } => {
            if target_shape.is_empty() {
                return Err("target_shape must not be empty".into());
            }
            target_shape
                .iter()
                .try_for_each(|&d| size(d, "every target_shape dimension", MAX_TENSOR_ELEMENTS))
        }
        LayerKind::Activation(_)
        | LayerKind::GlobalAveragePooling2d
        | LayerKind::Flatten
        | LayerKind::Add
        | LayerKind::Concatenate { .. } => Ok(()),
    }
}

fn check_arity(l: &LayerSpec) -> Result<(), String> {
    let n = l.inputs.len();
    if l.kind.is_merge() {
        if n < 2 {
            return Err(format!("needs at least 2 inputs, got {n}"));
        }
    } else if n != 1 {
        return Err(format!("takes exactly 1 input, got {n} ({})", l.inputs.join(", ")));
    }
    Ok(())
}

/// Kahn's algorithm, taking the earliest-declared ready layer first; a leftover is a cycle.
fn topological(spec: &ModelSpec, index: &HashMap<&str, usize>) -> Result<Vec<usize>, CompileError> {
    let n = spec.layers.len();
    let mut pending = vec![0usize; n];
    let mut users = vec![Vec::new(); n];
    for (i, l) in spec.layers.iter().enumerate() {
        for r in &l.inputs {
            if let Some(&j) = index.get(r.as_str()) {
                pending[i] += 1;
                users[j].push(i);
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            pending[u] -= 1;
            if pending[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk backwards through unfinished inputs until a layer repeats: that is a cycle.
    let mut path = Vec::new();
    let mut at = (0..n).find(|&i| pending[i] > 0).unwrap_or(0);
    while !path.contains(&at) {
        path.push(at);
        let next = spec.layers[at]
            .inputs
            .iter()
            .filter_map(|r| index.get(r.as_str()).copied())
            .find(|&j| pending[j] > 0);
        match next {
            Some(j) => at = j,
            None => break,
        }
    }
    // The cycle in data-flow order, starting from its earliest-declared layer.
    let start = path.iter().position(|&p| p == at).unwrap_or(0);
    let mut members: Vec<usize> = path[start..].iter().rev().copied().collect();
    let first = members.iter().enumerate().min_by_key(|(_, &m)| m).map_or(0, |(k, _)| k);
    members.rotate_left(first);
    let at = members.first().copied().unwrap_or(at);
    let mut cycle: Vec<&str> = members.iter().map(|&i| spec.layers[i].name.as_str()).collect();
    if let Some(first) = cycle.first().copied() {
        cycle.push(first);
    }
    Err(CompileError::model(
        spec.loc(&spec.layers[at]),
        format!("the layers form a cycle: {}", cycle.join(" -> ")),
    ))
}

/// Every layer must feed the model's output (its last layer); a dangling branch is an error.
fn check_all_used(spec: &ModelSpec, index: &HashMap<&str, usize>) -> Result<(), CompileError> {
    let n = spec.layers.len();
    let mut used = vec![false; n];
    let mut stack = vec![n - 1];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut used[i], true) {
            continue;
        }
        stack.extend(
            spec.layers[i]
                .inputs
                .iter()
                .filter_map(|r| index.get(r.as_str()).copied()),
        );
    }
    match used.iter().position(|u| !u) {
        None => Ok(()),
        Some(i) => {
            let l = &spec.layers[i];
            Err(CompileError::model(
                spec.loc(l),
                format!(
                    "layer `{}` does not feed the model's output (its last layer, `{}`)",
                    l.name,
                    spec.layers[n - 1].name
                ),
            ))
        }
    }
}
