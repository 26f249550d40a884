//! [`Code`]: an indenting line writer for generated Rust source, plus number formatting that
//! round-trips (`f32` literals print the shortest text that parses back to the same bits).

use std::fmt::Write;

/// Generated source under construction: lines at the current indentation (4 spaces a level).
#[derive(Default)]
pub(crate) struct Code {
    out: String,
    depth: usize,
}

impl Code {
    pub fn new() -> Self {
        Code::default()
    }

    /// One line at the current indentation (an empty `s` writes an empty line).
    pub fn line(&mut self, s: impl AsRef<str>) {
        let s = s.as_ref();
        if !s.is_empty() {
            for _ in 0..self.depth {
                self.out.push_str("    ");
            }
            self.out.push_str(s);
        }
        self.out.push('\n');
    }

    /// `head {` and one level deeper.
    pub fn open(&mut self, head: impl AsRef<str>) {
        let head = head.as_ref();
        if head.is_empty() {
            self.line("{");
        } else {
            self.line(format!("{head} {{"));
        }
        self.depth += 1;
    }

    /// `}` one level up.
    pub fn close(&mut self) {
        self.close_with("");
    }

    /// `}` followed by `tail` (e.g. `;` or ` else {`), one level up.
    pub fn close_with(&mut self, tail: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.line(format!("}}{tail}"));
    }

    /// `} else {` at the enclosing level, staying inside the block.
    pub fn else_(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.line("} else {");
        self.depth += 1;
    }

    /// Text appended verbatim (no indentation), e.g. a support file.
    pub fn raw(&mut self, text: &str) {
        self.out.push_str(text);
        if !text.ends_with('\n') {
            self.out.push('\n');
        }
    }

    /// `/// text` doc lines.
    pub fn doc(&mut self, text: &str) {
        for l in text.lines() {
            if l.is_empty() {
                self.line("///");
            } else {
                self.line(format!("/// {l}"));
            }
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A Rust `f32` literal for `v` that parses back to the same value.
pub(crate) fn f32_lit(v: f32) -> String {
    if v.is_nan() {
        return "f32::NAN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "f32::INFINITY" } else { "f32::NEG_INFINITY" }.into();
    }
    let s = format!("{v:?}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

/// [`f32_lit`] typed as f32 (`0.001_f32`), for casts such as `0.001_f32 as f64`.
pub(crate) fn f32_typed(v: f32) -> String {
    let s = f32_lit(v);
    if v.is_finite() {
        format!("{s}_f32")
    } else {
        s
    }
}

/// `v * k` as source, with the trivial factors folded.
pub(crate) fn mul(v: &str, k: usize) -> String {
    match k {
        0 => "0".into(),
        1 => v.to_string(),
        _ => format!("{v} * {k}"),
    }
}

/// `a + b` as source, dropping a literal zero.
pub(crate) fn add(a: &str, b: &str) -> String {
    match (a, b) {
        ("0", b) => b.to_string(),
        (a, "0") => a.to_string(),
        (a, b) => format!("{a} + {b}"),
    }
}

/// `[a, b, c]` for a slice of sizes.
pub(crate) fn list(v: &[usize]) -> String {
    let mut s = String::from("[");
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{x}");
    }
    s.push(']');
    s
}

/// A Rust string literal (escapes quotes, backslashes and control characters).
pub(crate) fn str_lit(s: &str) -> String {
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_round_trip() {
        for v in [0.0f32, 1.0, 0.2, 1e-7, -3.5, 123456.0, f32::MIN_POSITIVE] {
            let s = f32_lit(v);
            assert_eq!(s.parse::<f32>().unwrap().to_bits(), v.to_bits(), "{s}");
        }
        assert_eq!(f32_lit(1.0), "1.0");
        assert_eq!(mul("n", 1), "n");
        assert_eq!(add("0", "x"), "x");
        assert_eq!(list(&[3, 4]), "[3, 4]");
    }

    #[test]
    fn indents() {
        let mut c = Code::new();
        c.open("fn f()");
        c.line("let x = 1;");
        c.close();
        assert_eq!(c.finish(), "fn f() {\n    let x = 1;\n}\n");
    }
}
