//! Arbitrary bytes as a model file: parsing, expansion, validation and lowering must return
//! an error or a graph, never panic or exhaust memory.
#![no_main]

use std::path::Path;

use cnnc_compiler::ir::Mode;
use cnnc_compiler::lower::lower;
use cnnc_compiler::spec::parse_model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = parse_model(text, Path::new("fuzz.yaml")) {
        let _ = lower(&spec, 2, Mode::Training);
        let _ = lower(&spec, 1, Mode::Inference);
    }
});
