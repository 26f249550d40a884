//! The model specification: what a user declares, fully expanded (blocks and repeats resolved,
//! every layer named, every input explicit), independent of YAML so the `cnn!` macro can build
//! it directly.
//!
//! Pipeline: YAML text → `yaml` (serde structs that mirror the file, with locations) →
//! `expand` (blocks, `repeat`, automatic Keras names, scoped `inputs:`) → [`ModelSpec`] →
//! `validate` (names, references, cycles, argument ranges, size limits). The file format is
//! documented in `yaml.rs`.

mod arg;
mod convert;
mod expand;
mod keywords;
mod kind;
mod locate;
mod validate;
mod yaml;

use std::path::{Path, PathBuf};

use crate::error::{CompileError, SourceLoc};

pub use crate::ir::{Activation, LossKind};
pub use cnnc_runtime::init::Init;
pub use expand::MAX_BLOCK_DEPTH;
pub use keywords::f32_as_written;
pub use kind::{defaults, LayerKind, Padding};
pub(crate) use validate::checked_order;
pub use validate::{
    validate, MAX_INPUT_DIM, MAX_LAYERS, MAX_LAYER_PATH_CHARS, MAX_NAME_CHARS, MAX_TENSOR_ELEMENTS, MAX_WEIGHT_ELEMENTS,
};

/// Name by which layers refer to the model's input.
pub const MODEL_INPUT: &str = "input";

/// A model: its input shape (per sample, batch excluded) and its layers in declaration order.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    /// `[H, W, C]` for images, `[F]` for flat inputs; the batch size is chosen at compile time.
    pub input: Vec<usize>,
    pub layers: Vec<LayerSpec>,
    pub training: TrainingSpec,
    /// The file the model came from, for error messages.
    pub source: Option<PathBuf>,
}

/// One layer, fully expanded.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    /// Unique; layers inside a block instance are `<instance>/<local name>`.
    pub name: String,
    pub kind: LayerKind,
    /// Names of the layers feeding this one, in order; [`MODEL_INPUT`] is the model's input.
    pub inputs: Vec<String>,
    /// Line of the layer's declaration in the model file.
    pub line: Option<usize>,
}

/// Defaults for `cnnc train`, from the model file's `training:` section (as Keras's
/// `compile`/`fit` arguments). The CLI's flags override them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainingSpec {
    /// `adam`, `sgd` or `rmsprop`.
    pub optimizer: Option<String>,
    pub learning_rate: Option<f32>,
    pub momentum: Option<f32>,
    pub loss: Option<LossKind>,
    pub from_logits: Option<bool>,
    pub batch_size: Option<usize>,
    pub epochs: Option<usize>,
    pub validation_split: Option<f32>,
}

impl TrainingSpec {
    /// Optimiser names accepted in `training.optimizer`.
    pub const OPTIMIZERS: [&'static str; 3] = ["adam", "sgd", "rmsprop"];
}

impl ModelSpec {
    /// A sequential model: each layer feeds the next, names are Keras's automatic ones
    /// (`conv2d`, `conv2d_1`, ...). Handy for tests and code-built models.
    pub fn sequential(name: &str, input: Vec<usize>, kinds: Vec<LayerKind>) -> ModelSpec {
        let mut namer = kind::AutoNamer::default();
        let mut prev = MODEL_INPUT.to_string();
        let mut layers = Vec::new();
        for kind in kinds {
            let name = namer.next(kind.auto_name_base(), |_| false);
            layers.push(LayerSpec {
                name: name.clone(),
                kind,
                inputs: vec![prev],
                line: None,
            });
            prev = name;
        }
        ModelSpec {
            name: name.to_string(),
            input,
            layers,
            training: TrainingSpec::default(),
            source: None,
        }
    }

    /// Location of a layer's declaration, for error messages.
    pub fn loc(&self, layer: &LayerSpec) -> SourceLoc {
        SourceLoc::new(self.source.clone(), layer.line, None)
    }

    pub fn layer(&self, name: &str) -> Option<&LayerSpec> {
        self.layers.iter().find(|l| l.name == name)
    }
}

/// Parses and expands a model file's text; `path` is used in error messages and for the
/// default model name (the file stem). The result is validated.
pub fn parse_model(text: &str, path: &Path) -> Result<ModelSpec, CompileError> {
    let raw = locate::parse_located(text, path)?;
    let spec = expand::expand(raw, path)?;
    validate(&spec)?;
    Ok(spec)
}

/// Largest model file accepted (a model is a few kilobytes; this only guards memory).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads and parses a model file; read errors name the file. At most [`MAX_FILE_BYTES`] are
/// read, whatever the file is (a device or a pipe has no length to check beforehand).
pub fn load_model(path: &Path) -> Result<ModelSpec, CompileError> {
    let io = |source| CompileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = match cnnc_runtime::data::read_capped(path, MAX_FILE_BYTES).map_err(io)? {
        Some(bytes) => bytes,
        None => {
            return Err(CompileError::model(
                SourceLoc::new(Some(path.to_path_buf()), None, None),
                format!("the model file is larger than {MAX_FILE_BYTES} bytes; a model file is a few kilobytes"),
            ))
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        let (bytes, offset) = (e.as_bytes(), e.utf8_error().valid_up_to());
        let before = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
        let (line, column) = locate::line_col(before.strip_prefix('\u{feff}').unwrap_or(before));
        let byte = bytes.get(offset).map(|b| format!(" 0x{b:02X}")).unwrap_or_default();
        CompileError::syntax(
            SourceLoc::new(Some(path.to_path_buf()), Some(line), Some(column)),
            format!("the model file is not UTF-8 text: invalid byte{byte} (byte offset {offset})"),
        )
    })?;
    parse_model(&text, path)
}
