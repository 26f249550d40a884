//! Source locations: YAML errors become `file:line:column: message`, and each layer item
//! learns the line and column of its type key.
//!
//! yaml_serde reports locations only in errors, so items are located by a light scan of the
//! text for block-style list items (`- conv2d: ...`, `- flatten`). serde visits items in
//! document order, so each item takes the next scanned entry with its key; an item the scan
//! missed (flow style, `[{conv2d: ...}]`) simply has no location.

use std::cell::RefCell;
use std::path::Path;

use super::yaml::RawModel;
use crate::error::{CompileError, SourceLoc};

/// A list item's key as found in the text: (line, column, key), both 1-based.
type Entry = (usize, usize, String);

struct Cursor {
    entries: Vec<Entry>,
    next: usize,
}

thread_local! {
    static CURSOR: RefCell<Option<Cursor>> = const { RefCell::new(None) };
}

/// Removes the cursor when parsing ends, even on error.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        CURSOR.with(|c| *c.borrow_mut() = None);
    }
}

/// The position of the next list item whose key is `key`, consuming it.
pub fn take_pos(key: &str) -> Option<(usize, usize)> {
    CURSOR.with(|c| {
        let mut c = c.borrow_mut();
        let cur = c.as_mut()?;
        let found = cur.entries[cur.next..].iter().position(|(_, _, k)| k == key)?;
        let (line, col, _) = &cur.entries[cur.next + found];
        let pos = (*line, *col);
        cur.next += found + 1;
        Some(pos)
    })
}

/// Finds `- key:` / `- key` / `- {key: ...}` list items, one per line at most.
fn scan(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut p = 0;
        let skip_ws = |p: &mut usize| {
            while *p < chars.len() && (chars[*p] == ' ' || chars[*p] == '\t') {
                *p += 1;
            }
        };
        skip_ws(&mut p);
        if chars.get(p) != Some(&'-') || !matches!(chars.get(p + 1), Some(' ' | '\t')) {
            continue;
        }
        p += 1;
        skip_ws(&mut p);
        if chars.get(p) == Some(&'{') {
            p += 1;
            skip_ws(&mut p);
        }
        let quote = matches!(chars.get(p), Some('"' | '\''));
        if quote {
            p += 1;
        }
        let start = p;
        while p < chars.len() && (chars[p].is_ascii_alphanumeric() || chars[p] == '_') {
            p += 1;
        }
        if p == start {
            continue;
        }
        let key: String = chars[start..p].iter().collect();
        if quote {
            p += 1;
        }
        skip_ws(&mut p);
        if matches!(chars.get(p), None | Some(':' | '#')) {
            out.push((i + 1, start + 1, key));
        }
    }
    out
}

/// Parses the text into the raw model, locating items; errors carry `file:line:column`.
pub fn parse_located(text: &str, path: &Path) -> Result<RawModel, CompileError> {
    if text.trim().is_empty() {
        return Err(CompileError::syntax(
            SourceLoc::new(Some(path.to_path_buf()), None, None),
            "the model file is empty; expected a mapping with `input:` and `layers:`",
        ));
    }
    CURSOR.with(|c| {
        *c.borrow_mut() = Some(Cursor {
            entries: scan(text),
            next: 0,
        })
    });
    let _installed = Installed;
    yaml_serde::from_str::<RawModel>(text).map_err(|e| yaml_error(&e, path))
}

/// A yaml_serde error as a `CompileError::Syntax` with the location moved to the front.
fn yaml_error(e: &yaml_serde::Error, path: &Path) -> CompileError {
    let mut message = e.to_string();
    let (line, column) = match e.location() {
        Some(l) => {
            for suffix in [
                format!(" at line {} column {}", l.line(), l.column()),
                format!(" at position {}", l.index()),
            ] {
                if let Some(i) = message.find(&suffix) {
                    message.replace_range(i..i + suffix.len(), "");
                }
            }
            (Some(l.line()), Some(l.column()))
        }
        None => (None, None),
    };
    CompileError::syntax(SourceLoc::new(Some(path.to_path_buf()), line, column), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_block_items() {
        let text = "layers:\n  - conv2d: {filters: 1}\n  - flatten\n  - {dense: {units: 2}}\n  - 'add': {}\n";
        let e = scan(text);
        let keys: Vec<_> = e.iter().map(|(l, c, k)| (*l, *c, k.as_str())).collect();
        assert_eq!(
            keys,
            vec![(2, 5, "conv2d"), (3, 5, "flatten"), (4, 6, "dense"), (5, 6, "add")]
        );
    }
}
