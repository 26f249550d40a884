//! The declaration as model YAML, checked by the compiler's front end. Each layer is one line
//! of the text, so the line an error names leads back to the layer's tokens.

use cnnc_compiler::ir::Mode;
use cnnc_compiler::lower::lower;
use cnnc_compiler::spec::parse_model;
use proc_macro2::Span;

use super::model::{Arg, Decl, Value};

/// Line (1-based) of the first layer in the generated text: `name`, `input`, `layers:`.
const FIRST_LAYER_LINE: usize = 4;

fn value(v: &Value) -> String {
    match v {
        Value::Int(i) => i.base10_digits().to_string(),
        Value::Float(f) => f.base10_digits().to_string(),
        Value::Str(s) => format!("{:?}", s.value()),
        Value::Bool(b) => b.value.to_string(),
        Value::Ident(i) => i.to_string(),
        Value::List(items) => format!("[{}]", items.iter().map(value).collect::<Vec<_>>().join(", ")),
    }
}

fn args(a: &[Arg]) -> String {
    let v: Vec<String> = a.iter().map(|a| format!("{}: {}", a.key, value(&a.value))).collect();
    format!("{{{}}}", v.join(", "))
}

/// The YAML text of `d`.
pub fn yaml(d: &Decl) -> String {
    let dims: Vec<String> = d.input.iter().map(|i| i.base10_digits().to_string()).collect();
    let mut s = format!("name: {}\ninput: [{}]\nlayers:\n", d.name, dims.join(", "));
    for l in &d.layers {
        s.push_str(&format!("  - {}: {}\n", l.kind, args(&l.args)));
    }
    if !d.training.is_empty() {
        s.push_str(&format!("training: {}\n", args(&d.training)));
    }
    s
}

/// The tokens an error on `line` of the generated text is about.
fn span_of_line(d: &Decl, line: Option<usize>) -> Span {
    match line {
        Some(1) => d.name.span(),
        Some(2) => d.input.first().map(|i| i.span()).unwrap_or_else(|| d.name.span()),
        Some(l) if l >= FIRST_LAYER_LINE && l - FIRST_LAYER_LINE < d.layers.len() => {
            d.layers[l - FIRST_LAYER_LINE].kind.span()
        }
        Some(l) if l >= FIRST_LAYER_LINE + d.layers.len() => d
            .training
            .first()
            .map(|a| a.key.span())
            .unwrap_or_else(|| d.name.span()),
        _ => d.name.span(),
    }
}

/// The front end's error as a compile error at the tokens it is about (the message without
/// the generated text's line prefix).
fn at_layer(d: &Decl, e: cnnc_compiler::error::CompileError) -> syn::Error {
    let loc = e.loc().map(|l| l.to_string()).unwrap_or_default();
    let msg = e.to_string();
    let msg = msg.strip_prefix(&loc).unwrap_or(&msg);
    syn::Error::new(span_of_line(d, e.loc().and_then(|l| l.line)), msg)
}

/// Runs the front end on the declaration: the YAML text if the model is valid, else an error
/// at the offending layer.
pub fn check(d: &Decl) -> syn::Result<String> {
    let text = yaml(d);
    let spec = parse_model(&text, std::path::Path::new("cnn!")).map_err(|e| at_layer(d, e))?;
    lower(&spec, 1, Mode::Inference).map_err(|e| at_layer(d, e))?;
    Ok(text)
}
