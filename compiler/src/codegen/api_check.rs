//! The generated crate's `examples/check.rs`: the crate run on raw little-endian f32 files, as
//! cnnc's tests drive it.

use super::api::CrateInfo;
use super::writer::Code;

/// `examples/check.rs`: runs the crate on raw little-endian f32 files.
pub(crate) fn check_rs(info: &CrateInfo) -> String {
    let lib = info.lib();
    let mut c = Code::new();
    c.line("//! Runs the compiled model on raw little-endian f32 files. cnnc's tests compare its");
    c.line("//! results with cnnc's interpreter; it also shows the crate's API.");
    c.line("//!");
    c.line("//! ```text");
    c.line("//! cargo run --release --example check -- forward WEIGHTS INPUT OUT");
    if info.train.is_some() {
        c.line("//! cargo run --release --example check -- train WEIGHTS INPUT TARGET STEPS OUT");
    }
    c.line("//! ```");
    c.line("//! WEIGHTS is a safetensors file, or `embedded` for the weights a crate embeds.");
    if info.train.is_some() {
        c.line("//! `train` takes STEPS training steps on the batch; per step it writes the loss, the");
        c.line("//! gradients the step applied, the parameters after it and the predictions then.");
    }
    c.line("");
    c.line("use std::process::ExitCode;");
    c.line("");
    c.line(format!("use {lib}::*;"));
    c.line("");
    c.open("fn read_f32(path: &str, len: usize) -> Result<Vec<f32>, String>");
    c.line("let b = std::fs::read(path).map_err(|e| format!(\"{path}: {e}\"))?;");
    c.open("if b.len() != 4 * len");
    c.line("return Err(format!(\"{path}: {} bytes, expected {len} f32 values\", b.len()));");
    c.close();
    c.line("Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())");
    c.close();
    c.line("");
    c.open("fn write_f32(path: &str, v: &[f32]) -> Result<(), String>");
    c.line("let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();");
    c.line("std::fs::write(path, b).map_err(|e| format!(\"{path}: {e}\"))");
    c.close();
    c.line("");
    c.open("fn params(weights: &str) -> Result<Vec<f32>, String>");
    c.open("let bytes = if weights == \"embedded\"");
    if info.embed {
        c.line("WEIGHTS.to_vec()");
    } else {
        c.line("return Err(\"this crate embeds no weights\".into());");
    }
    c.else_();
    c.line("std::fs::read(weights).map_err(|e| format!(\"{weights}: {e}\"))?");
    c.close_with(";");
    c.line("let mut p = vec![0f32; PARAMS_F32S];");
    c.line("load_params(&bytes, &mut p).map_err(|e| format!(\"{weights}: {e}\"))?;");
    c.line("Ok(p)");
    c.close();
    c.line("");
    c.open("fn run(args: &[String]) -> Result<(), String>");
    c.open("match args");
    c.open("[cmd, w, x, out] if cmd == \"forward\" =>");
    c.line("let x = read_f32(x, INPUT_F32S)?;");
    c.line("let mut y = vec![0f32; OUTPUT_F32S];");
    if info.no_std {
        c.line("let p = params(w)?;");
        c.line("let mut arena: Box<[f32; ARENA_F32S]> = vec![0f32; ARENA_F32S]");
        c.line("    .into_boxed_slice()");
        c.line("    .try_into()");
        c.line("    .map_err(|_| \"arena\".to_string())?;");
        c.line("let mut model = Model::new(&p, &mut arena).map_err(|e| e.to_string())?;");
    } else if info.embed {
        c.open("let mut model = if w == \"embedded\"");
        c.line("Model::new()");
        c.else_();
        c.line("Model::from_params(params(w)?)?");
        c.close_with(";");
    } else {
        c.line("let mut model = Model::from_params(params(w)?)?;");
    }
    c.line("model.forward(&x, &mut y);");
    c.line("write_f32(out, &y)");
    c.close();
    if info.train.is_some() {
        c.open("[cmd, w, x, t, steps, out] if cmd == \"train\" =>");
        c.line("let mut model = Model::from_params(params(w)?)?;");
        c.line("let (x, t) = (read_f32(x, INPUT_F32S)?, read_f32(t, TARGET_F32S)?);");
        c.line("let steps: u64 = steps.parse().map_err(|_| format!(\"steps {steps}: not a number\"))?;");
        c.line("let (mut grads, mut y) = (vec![0f32; GRADS_F32S], vec![0f32; OUTPUT_F32S]);");
        c.line("let mut all = Vec::new();");
        c.open("for _ in 0..steps");
        c.line("// The gradients the step applies, from a copy (`gradients` updates BN statistics too).");
        c.line("model.clone().gradients(&x, &t, model.iterations() + 1, &mut grads);");
        c.line("all.push(model.train_step(&x, &t));");
        c.line("all.extend_from_slice(&grads);");
        c.line("all.extend_from_slice(model.params());");
        c.line("model.forward(&x, &mut y);");
        c.line("all.extend_from_slice(&y);");
        c.close();
        c.line("write_f32(out, &all)");
        c.close();
    }
    c.line("_ => Err(\"usage: check forward WEIGHTS INPUT OUT | check train WEIGHTS INPUT TARGET STEPS OUT\".into()),");
    c.close();
    c.close();
    c.line("");
    c.open("fn main() -> ExitCode");
    c.line("let args: Vec<String> = std::env::args().skip(1).collect();");
    c.open("match run(&args)");
    c.line("Ok(()) => ExitCode::SUCCESS,");
    c.open("Err(e) =>");
    c.line("eprintln!(\"error: {e}\");");
    c.line("ExitCode::FAILURE");
    c.close();
    c.close();
    c.close();
    c.finish()
}
