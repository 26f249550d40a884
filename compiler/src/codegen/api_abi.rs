//! The generated crate's C ABI (`src/cnnc_abi.rs`, only with `CodegenOptions::c_abi`): the
//! fixed entry points of `support/abi.rs` plus the model-specific part (whether it trains,
//! its target and gradient sizes, where the inference and training runs leave their
//! predictions).

use super::api::{src, CrateInfo};
use super::writer::Code;

/// `src/cnnc_abi.rs` for `info`.
pub(crate) fn abi_rs(info: &CrateInfo) -> String {
    let mut c = Code::new();
    c.raw(include_str!("support/abi.rs"));
    c.line("");
    c.line("// ---- this model ----");
    c.line("");
    c.doc(
        "The inference program on the caller's parameter tensors `p`: its load-time kernels\n\
         (unless `reuse` and the arena still holds theirs for `p`), then its run, the predictions\n\
         to `preds`.",
    );
    c.open("fn predict(m: &mut Model, p: &[&[f32]; N_PARAMS], x: &[f32], preds: &mut [f32], reuse: bool)");
    c.open("if !(reuse && m.caller_folded)");
    c.line("infer_prepare(p, &mut m.arena);");
    c.close();
    c.line("// The arena's folded weights are now those of `p`, not of the model's parameters.");
    c.line("m.infer_ready = false;");
    c.line("m.caller_folded = true;");
    c.line("infer_run(p, x, &mut m.arena);");
    c.line(format!(
        "preds.copy_from_slice({});",
        src(&info.infer.prediction).replacen("self.", "m.", 1)
    ));
    c.close();
    c.line("");
    c.doc("Whether this crate has a training program.");
    c.line(format!("const TRAINING: bool = {};", info.train.is_some()));
    match &info.train {
        Some(t) => {
            c.line("const TARGET_LEN: usize = TARGET_F32S;");
            c.line("const GRADS_LEN: usize = GRADS_F32S;");
            c.line("");
            c.doc("[`Model::gradients`], and the training run's predictions to `preds`.");
            c.open(
                "fn train(m: &mut Model, x: &[f32], y: &[f32], step: u64, grads: &mut [f32], preds: &mut [f32]) -> f32",
            );
            c.line("let loss = m.gradients(x, y, step, grads);");
            c.line(format!(
                "preds.copy_from_slice({});",
                src(&t.code.prediction).replacen("self.", "m.", 1)
            ));
            c.line("loss");
            c.close();
        }
        None => {
            c.line("const TARGET_LEN: usize = 0;");
            c.line("const GRADS_LEN: usize = 0;");
            c.line("");
            c.doc("Never called: `cnnc_gradients` refuses an inference crate first.");
            c.open("fn train(_: &mut Model, _: &[f32], _: &[f32], _: u64, _: &mut [f32], _: &mut [f32]) -> f32");
            c.line("f32::NAN");
            c.close();
        }
    }
    c.finish()
}
