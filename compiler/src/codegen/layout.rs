//! Where each operand lives when the generated code runs, and the call of one kernel function
//! with its operands carved out of their regions without `unsafe`.
//!
//! Regions are the generated program functions' arguments: `a` (the arena, `&mut [f32]`), `p`
//! (the parameters: for the training program flat in `PARAMS` order, `&mut` since moving
//! averages update them in place; for the inference program one slice per tensor, `p[i]`, so
//! that a host's tensors are read where they lie), `x` (the input) and `y` (the target). A
//! call splits each region that holds outputs of the kernel at the outputs' edges with
//! `split_at_mut`, so that every output is its own `&mut` piece and every input lies inside
//! one of the gaps between them. The checks below are the ones the kernels backend makes
//! (outputs overlap no other operand; only the in-place moving average reads what it writes);
//! if the plan broke them the emitter fails instead of emitting code that would not compile or
//! would panic.

use std::collections::HashMap;
use std::fmt::Write;

use crate::kernel_ir::{BufId, BufKind, DType, Program, Storage};

use super::writer::Code;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Region {
    Arena,
    /// The flat parameter buffer (`p: &mut [f32]`).
    Params,
    /// Parameter tensor `i` of `PARAMS` (`p[i]`, with `p: &[&[f32]; N_PARAMS]`).
    Param(usize),
    Input,
    Target,
}

impl Region {
    /// The program function's argument that holds the region.
    pub fn var(self) -> &'static str {
        match self {
            Region::Arena => "a",
            Region::Params | Region::Param(_) => "p",
            Region::Input => "x",
            Region::Target => "y",
        }
    }

    /// The region as an expression of the program function (`p[3]` for a parameter tensor).
    pub fn expr(self) -> String {
        match self {
            Region::Param(i) => format!("p[{i}]"),
            r => r.var().to_string(),
        }
    }
}

/// `len` f32 values from index `start` of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub region: Region,
    pub start: usize,
    pub len: usize,
}

impl Loc {
    pub fn end(&self) -> usize {
        self.start + self.len
    }

    fn overlaps(&self, o: &Loc) -> bool {
        self.region == o.region && self.len > 0 && o.len > 0 && self.start < o.end() && o.start < self.end()
    }
}

/// Resolves a program's buffers to [`Loc`]s.
pub(crate) struct Binder<'a> {
    pub program: &'a Program,
    /// Per parameter (by Keras name): its index in `PARAMS` and its f32 offset in the flat
    /// parameter buffer.
    pub params: &'a HashMap<String, (usize, usize)>,
    /// Whether the program takes the parameters one slice per tensor ([`Region::Param`]; the
    /// inference program) rather than flat ([`Region::Params`]).
    pub parts: bool,
    /// Where the program's arena starts in the crate's arena (f32 values): the inference
    /// program lies after the training program's persistent buffers (its constants and the
    /// optimiser state), so that inference between training steps leaves them intact.
    pub arena_base: usize,
    pub arena_f32s: usize,
}

impl Binder<'_> {
    pub fn locate(&self, b: BufId) -> Result<Loc, String> {
        let p = self.program;
        let base = p.base(b);
        let buf = p.buffer(base);
        let len = match p.buffer(b).dtype {
            DType::F32 => p.buffer(b).numel(),
            // Scratch is sized in bytes.
            DType::U8 => p.buffer(b).numel() / 4,
        };
        let (region, start, cap) = match (&buf.kind, buf.kind.storage()) {
            (BufKind::Input, _) => (Region::Input, 0, buf.numel()),
            (BufKind::Target, _) => (Region::Target, 0, buf.numel()),
            (BufKind::Param { name, .. }, _) => {
                let &(i, off) = self
                    .params
                    .get(name)
                    .ok_or_else(|| format!("parameter '{name}' is not in the parameter layout"))?;
                if self.parts {
                    (Region::Param(i), 0, buf.numel())
                } else {
                    (Region::Params, off, off + buf.numel())
                }
            }
            (_, Storage::Persistent | Storage::Transient) => {
                let off = buf
                    .offset
                    .ok_or_else(|| format!("buffer {base} ({}) has no arena offset", buf.name))?;
                if !off.is_multiple_of(4) {
                    return Err(format!("buffer {base} ({}) is not f32-aligned", buf.name));
                }
                (Region::Arena, self.arena_base + off / 4, self.arena_f32s)
            }
            _ => return Err(format!("buffer {base} ({}) has no memory", buf.name)),
        };
        if start + len > cap {
            return Err(format!("buffer {b} ({}) does not fit its region", p.buffer(b).name));
        }
        Ok(Loc { region, start, len })
    }
}

/// Checks a kernel's operands: outputs in the arena (or, for `writes_params` kernels, the
/// parameters), pairwise disjoint, and disjoint from every input except input 0 when
/// `in_place` (then output 0 is input 0).
pub(crate) fn check_operands(ins: &[Loc], outs: &[Loc], in_place: bool, writes_params: bool) -> Result<(), String> {
    for (j, o) in outs.iter().enumerate() {
        match o.region {
            Region::Arena => {}
            Region::Params if writes_params => {}
            r => return Err(format!("output {j} would write the {r:?} region")),
        }
        for (i, x) in ins.iter().enumerate() {
            let same = in_place && i == 0 && j == 0;
            if same && x != o {
                return Err("an in-place kernel's input and output differ".into());
            }
            if !same && o.overlaps(x) {
                return Err(format!("output {j} overlaps input {i}"));
            }
        }
        for (i, x) in outs.iter().enumerate() {
            if i != j && o.overlaps(x) {
                return Err(format!("outputs {j} and {i} overlap"));
            }
        }
    }
    Ok(())
}

/// A region piece after splitting: its variable and the region index it starts at.
struct Piece {
    var: String,
    start: usize,
    end: usize,
    used: bool,
}

/// Emits the call `fname(inputs.., outputs.., [step])` as a statement. `ins` excludes input 0
/// of an in-place kernel (its output 0 stands for it). Operands are fixed-size arrays (`at`,
/// `at_mut`), or with `slices` slices of their length. Operands must have passed
/// [`check_operands`].
pub(crate) fn emit_call(
    c: &mut Code,
    fname: &str,
    ins: &[Loc],
    outs: &[Loc],
    step: bool,
    slices: bool,
) -> Result<(), String> {
    let mut lines: Vec<String> = Vec::new();
    // Per split region: the gap pieces between outputs; per output: its piece variable.
    let mut gaps: HashMap<Region, Vec<Piece>> = HashMap::new();
    let mut out_vars = vec![String::new(); outs.len()];
    for region in [Region::Arena, Region::Params] {
        let mut mine: Vec<(usize, &Loc)> = outs.iter().enumerate().filter(|(_, o)| o.region == region).collect();
        if mine.is_empty() {
            continue;
        }
        mine.sort_by_key(|(_, o)| o.start);
        let v = region.var();
        let mut pieces = Vec::new();
        let (mut cursor, mut rest) = (0usize, v.to_string());
        for (n, &(j, o)) in mine.iter().enumerate() {
            let gap = format!("{v}{n}");
            let last = n + 1 == mine.len();
            let rest_var = format!("r{v}");
            lines.push(format!(
                "let ({gap}, {rest_var}) = {rest}.split_at_mut({});",
                o.start - cursor
            ));
            pieces.push(Piece {
                var: gap,
                start: cursor,
                end: o.start,
                used: false,
            });
            let out = format!("o{j}");
            let tail = if last {
                format!("{v}{}", n + 1)
            } else {
                rest_var.clone()
            };
            lines.push(format!("let ({out}, {tail}) = {rest_var}.split_at_mut({});", o.len));
            out_vars[j] = out;
            cursor = o.end();
            rest = rest_var;
            if last {
                pieces.push(Piece {
                    var: tail,
                    start: cursor,
                    end: usize::MAX,
                    used: false,
                });
            }
        }
        gaps.insert(region, pieces);
    }
    let input = |var: &str, at: usize, len: usize| {
        if slices {
            format!("&{var}[{at}..{}]", at + len)
        } else {
            format!("at({var}, {at})")
        }
    };
    let mut args = Vec::new();
    for l in ins {
        match gaps.get_mut(&l.region) {
            None => args.push(input(&l.region.expr(), l.start, l.len)),
            Some(pieces) => {
                let piece = pieces
                    .iter_mut()
                    .find(|g| g.start <= l.start && l.end() <= g.end)
                    .ok_or_else(|| format!("input at {:?} {} straddles an output", l.region, l.start))?;
                piece.used = true;
                args.push(input(&piece.var, l.start - piece.start, l.len));
            }
        }
    }
    for v in &out_vars {
        args.push(if slices { v.clone() } else { format!("at_mut({v}, 0)") });
    }
    if step {
        args.push("step".into());
    }
    let call = format!("{fname}({});", args.join(", "));
    if lines.is_empty() {
        c.line(call);
        return Ok(());
    }
    // Unused gaps are named `_`-prefixed so the generated crate builds without warnings.
    for pieces in gaps.values() {
        for g in pieces.iter().filter(|g| !g.used) {
            for l in &mut lines {
                *l = rename(l, &g.var, &format!("_{}", g.var));
            }
        }
    }
    c.open("");
    for l in &lines {
        c.line(l);
    }
    c.line(call);
    c.close();
    Ok(())
}

/// `line` with the binding `let (var,` / `, var)` renamed (only in binding position).
fn rename(line: &str, var: &str, to: &str) -> String {
    let mut s = String::new();
    let a = format!("let ({var}, ");
    let b = format!(", {var}) =");
    if let Some(rest) = line.strip_prefix(&a) {
        let _ = write!(s, "let ({to}, {rest}");
        return s;
    }
    line.replacen(&b, &format!(", {to}) ="), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena(start: usize, len: usize) -> Loc {
        Loc {
            region: Region::Arena,
            start,
            len,
        }
    }

    #[test]
    fn splits_around_outputs() {
        let mut c = Code::new();
        let ins = [arena(0, 4), arena(20, 2)];
        let outs = [arena(8, 4)];
        check_operands(&ins, &outs, false, false).unwrap();
        emit_call(&mut c, "k", &ins, &outs, false, false).unwrap();
        let s = c.finish();
        assert!(s.contains("let (a0, ra) = a.split_at_mut(8);"), "{s}");
        assert!(s.contains("let (o0, a1) = ra.split_at_mut(4);"), "{s}");
        assert!(s.contains("k(at(a0, 0), at(a1, 8), at_mut(o0, 0));"), "{s}");
    }

    #[test]
    fn parameter_tensors_are_read_in_place() {
        let mut c = Code::new();
        let w = Loc {
            region: Region::Param(3),
            start: 0,
            len: 6,
        };
        let outs = [arena(0, 4)];
        check_operands(&[w], &outs, false, false).unwrap();
        assert!(check_operands(&[], &[w], false, false).is_err(), "never written");
        emit_call(&mut c, "k", &[w], &outs, false, false).unwrap();
        emit_call(&mut c, "u", &[w], &outs, false, true).unwrap();
        let s = c.finish();
        assert!(s.contains("k(at(p[3], 0), at_mut(o0, 0));"), "{s}");
        assert!(s.contains("u(&p[3][0..6], o0);"), "{s}");
    }

    #[test]
    fn refuses_overlaps() {
        assert!(check_operands(&[arena(0, 8)], &[arena(4, 8)], false, false).is_err());
        assert!(check_operands(&[], &[arena(0, 8), arena(4, 8)], false, false).is_err());
        let p = Loc {
            region: Region::Params,
            start: 0,
            len: 4,
        };
        assert!(check_operands(&[], &[p], false, false).is_err());
        assert!(check_operands(&[p], &[p], true, true).is_ok());
    }
}
