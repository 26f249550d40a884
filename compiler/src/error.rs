//! The front end's error: every way a model file or a `ModelSpec` can be wrong, each message
//! naming where (`file:line:column`), which layer and why. Nothing the user writes may panic.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

use crate::ir::Shape;

/// Where in a model file something is; any part may be unknown (a spec built in Rust code has
/// no file). Displays as the `file:line:column: ` prefix of a message, or nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceLoc {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl SourceLoc {
    pub fn new(file: Option<PathBuf>, line: Option<usize>, column: Option<usize>) -> Self {
        SourceLoc { file, line, column }
    }
}

impl fmt::Display for SourceLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = &self.file {
            parts.push(p.display().to_string());
        }
        if let Some(l) = self.line {
            if self.file.is_none() {
                parts.push(format!("line {l}"));
            } else {
                parts.push(l.to_string());
                if let Some(c) = self.column {
                    parts.push(c.to_string());
                }
            }
        }
        if parts.is_empty() {
            Ok(())
        } else {
            write!(f, "{}: ", parts.join(":"))
        }
    }
}

/// Shapes as `[2, 8, 8, 16]` or `[2, 8, 8, 16] and [2, 8, 8, 32]`.
fn shapes(s: &[Shape]) -> String {
    let v: Vec<String> = s.iter().map(|s| s.to_string()).collect();
    v.join(" and ")
}

fn input_word(s: &[Shape]) -> &'static str {
    if s.len() == 1 {
        "input"
    } else {
        "inputs"
    }
}

/// Everything that can go wrong between a model file and a verified graph.
#[derive(Debug, Error)]
pub enum CompileError {
    /// The model file cannot be read.
    #[error("{}: cannot read the model file: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// The text is not YAML, or does not fit the model schema (unknown layer type or
    /// argument, wrong value type, missing argument). The message says what was expected.
    #[error("{loc}{message}")]
    Syntax { loc: SourceLoc, message: String },

    /// The model parses but is wrong: duplicate or unknown layer names, cycles, bad argument
    /// values, sizes beyond the compiler's limits.
    #[error("{loc}{message}")]
    Model { loc: SourceLoc, message: String },

    /// A layer cannot be applied to its input shape(s).
    #[error("{0}")]
    Shape(Box<LayerShapeError>),
}

/// Why a layer does not fit its input shapes, e.g. `model.yaml:12: layer max_pooling2d_2
/// (MaxPooling2D): input [1, 1, 1, 64]: a 2x2 window with strides 2x2 on a 1x1 map would
/// produce 0x0`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerShapeError {
    pub loc: SourceLoc,
    pub layer: String,
    pub class: &'static str,
    pub inputs: Vec<Shape>,
    pub message: String,
}

impl fmt::Display for LayerShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}layer {} ({}): {} {}: {}",
            self.loc,
            self.layer,
            self.class,
            input_word(&self.inputs),
            shapes(&self.inputs),
            self.message
        )
    }
}

impl CompileError {
    pub fn model(loc: SourceLoc, message: impl Into<String>) -> Self {
        CompileError::Model {
            loc,
            message: message.into(),
        }
    }

    pub fn syntax(loc: SourceLoc, message: impl Into<String>) -> Self {
        CompileError::Syntax {
            loc,
            message: message.into(),
        }
    }

    /// Where the error is, when known.
    pub fn loc(&self) -> Option<&SourceLoc> {
        match self {
            CompileError::Io { .. } => None,
            CompileError::Syntax { loc, .. } | CompileError::Model { loc, .. } => Some(loc),
            CompileError::Shape(e) => Some(&e.loc),
        }
    }
}
