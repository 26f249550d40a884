//! Source locations: YAML errors become `file:line:column: message`, and each layer item
//! learns the line and column of its type key.
//!
//! yaml_serde reports locations only in errors (it has no spans or marks for values), so items
//! are located by a light scan of the text for the block-style items of `layers:` sequences
//! (`- conv2d: ...`, `- flatten`), wherever layers are listed: the model's `layers:`, a
//! block's and a `repeat`'s. The scan follows indentation, so list items elsewhere (a block
//! `inputs:` list, `params:`) are not taken for layers, and skips block scalars (`name: |`),
//! whose lines are text. serde visits items in document order, so each item takes the next
//! scanned entry with its key; an item the scan missed (flow style, `[{conv2d: ...}]`) simply
//! has no location. The names of the top-level `blocks:` mapping are located the same way,
//! and matched to blocks by name.
use std::cell::RefCell;
use std::collections::HashMap;
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

/// What [`scan`] finds in the text.
#[derive(Debug, Default)]
struct Scanned {
    /// The items of block sequences under a `layers:` key: `- key:` / `- key` / `- {key: ...}`,
    /// one per line at most.
    items: Vec<Entry>,
    /// The keys of a block-style top-level `blocks:` mapping (block names).
    blocks: Vec<Entry>,
}

fn scan(text: &str) -> Scanned {
    let mut out = Scanned::default();
    // The indentation of the top-level keys (that of the first line), and inside `blocks:`, its
    // key's column and that of the block names (`None` until the first name shows it).
    let mut top = None;
    let mut blocks: Option<(usize, Option<usize>)> = None;
    // The column of every enclosing `layers:` sequence's dashes, innermost last; `None` until
    // its first item shows it.
    let mut seqs: Vec<(usize, Option<usize>)> = Vec::new(); // (key column, dash column)
                                                            // Inside a block scalar: lines indented more than this column are its text.
    let mut scalar: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let indent = chars.iter().take_while(|&&c| c == ' ').count();
        let blank = matches!(chars.get(indent), None | Some('#'));
        if let Some(parent) = scalar {
            if blank || indent > parent {
                continue;
            }
            scalar = None;
        }
        if blank {
            continue;
        }
        let top = *top.get_or_insert(indent);
        let dash = is_dash(&chars, indent);
        if let Some((key_col, names_col)) = &mut blocks {
            if indent <= *key_col {
                blocks = None;
            } else if *names_col.get_or_insert(indent) == indent && !dash {
                if let Some((name, col)) = mapping_key(&chars, indent) {
                    out.blocks.push((i + 1, col + 1, name));
                }
            }
        }
        // Leave the sequences this line is not inside of.
        while let Some(&(key_col, dash_col)) = seqs.last() {
            let inside = match dash_col {
                Some(d) => indent > d || indent == d && dash,
                None => dash && indent >= key_col,
            };
            if inside {
                break;
            }
            seqs.pop();
        }
        if let Some(last) = seqs.last_mut() {
            if last.1.is_none() {
                last.1 = Some(indent);
            }
            if last.1 == Some(indent) && dash {
                if let Some(e) = item_key(&chars, i, indent + 1) {
                    out.items.push(e);
                }
            }
        }
        // What the line opens: a `layers:` sequence or a block scalar, after any `- ` markers.
        let (mut p, mut last_dash) = (indent, indent);
        while is_dash(&chars, p) {
            last_dash = p;
            p += 1;
            while chars.get(p) == Some(&' ') {
                p += 1;
            }
        }
        if matches!(chars.get(p), Some('|' | '>')) {
            scalar = Some(last_dash);
            continue;
        }
        let key_col = p;
        let (key, after) = plain_key(&chars, p);
        let Some(mut p) = after.filter(|&a| chars.get(a) == Some(&':')) else {
            continue;
        };
        p += 1;
        while chars.get(p) == Some(&' ') {
            p += 1;
        }
        match chars.get(p) {
            None | Some('#') if key == "layers" => seqs.push((key_col, None)),
            None | Some('#') if key == "blocks" && key_col == top => blocks = Some((key_col, None)),
            Some('|' | '>') => scalar = Some(key_col),
            _ => {}
        }
    }
    out
}

/// Whether a `- ` (or a lone `-`) sequence marker is at `p`.
fn is_dash(chars: &[char], p: usize) -> bool {
    chars.get(p) == Some(&'-') && matches!(chars.get(p + 1), None | Some(' ' | '\t'))
}

/// A key (plain or quoted) at `p`: the key and the position after it, if any.
fn plain_key(chars: &[char], mut p: usize) -> (String, Option<usize>) {
    let quote = matches!(chars.get(p), Some('"' | '\''));
    if quote {
        p += 1;
    }
    let start = p;
    while p < chars.len() && (chars[p].is_ascii_alphanumeric() || chars[p] == '_') {
        p += 1;
    }
    if p == start {
        return (String::new(), None);
    }
    let key: String = chars[start..p].iter().collect();
    if quote {
        p += 1;
    }
    while matches!(chars.get(p), Some(' ' | '\t')) {
        p += 1;
    }
    (key, Some(p))
}

/// A mapping key at `p`, plain (`a b:`) or quoted (`"a b":`, escapes not undone), and the
/// position of its first character.
fn mapping_key(chars: &[char], p: usize) -> Option<(String, usize)> {
    let (start, end, mut after) = match chars.get(p)? {
        q @ ('"' | '\'') => {
            let len = chars[p + 1..].iter().position(|c| c == q)?;
            (p + 1, p + 1 + len, p + 2 + len)
        }
        _ => {
            let colon =
                (p..chars.len()).find(|&i| chars[i] == ':' && matches!(chars.get(i + 1), None | Some(' ' | '\t')))?;
            (p, colon, colon)
        }
    };
    while matches!(chars.get(after), Some(' ' | '\t')) {
        after += 1;
    }
    let key: String = chars[start..end].iter().collect();
    (chars.get(after) == Some(&':')).then(|| (key.trim_end().to_string(), start))
}

/// The layer key of a list item whose content starts after column `p` (just past its dash).
fn item_key(chars: &[char], line: usize, mut p: usize) -> Option<Entry> {
    while matches!(chars.get(p), Some(' ' | '\t')) {
        p += 1;
    }
    if chars.get(p) == Some(&'{') {
        p += 1;
        while matches!(chars.get(p), Some(' ' | '\t')) {
            p += 1;
        }
    }
    let col = p + usize::from(matches!(chars.get(p), Some('"' | '\'')));
    let (key, after) = plain_key(chars, p);
    let after = after?;
    matches!(chars.get(after), None | Some(':' | '#')).then(|| (line + 1, col + 1, key))
}

/// Parses the text into the raw model, locating items and block names; errors carry
/// `file:line:column`.
pub fn parse_located(text: &str, path: &Path) -> Result<RawModel, CompileError> {
    // A byte-order mark (editors on Windows write one) is not part of the YAML; dropping it
    // keeps lines and columns as the user sees them.
    let (text, bom) = match text.strip_prefix('\u{feff}') {
        Some(t) => (t, text.len() - t.len()),
        None => (text, 0),
    };
    if text.trim().is_empty() {
        return Err(CompileError::syntax(
            SourceLoc::new(Some(path.to_path_buf()), None, None),
            "the model file is empty; expected a mapping with `input:` and `layers:`",
        ));
    }
    let Scanned { items, blocks } = scan(text);
    CURSOR.with(|c| {
        *c.borrow_mut() = Some(Cursor {
            entries: items,
            next: 0,
        })
    });
    let _installed = Installed;
    let mut raw = yaml_serde::from_str::<RawModel>(text).map_err(|e| yaml_error(&e, text, bom, path))?;
    let mut found = HashMap::new();
    for (line, col, name) in &blocks {
        found.entry(name.as_str()).or_insert((*line, *col));
    }
    for (name, block) in &mut raw.blocks {
        block.pos = found.get(name.as_str()).copied();
    }
    Ok(raw)
}

/// The 1-based line and column (in characters, as libyaml counts) just after `before`.
pub fn line_col(before: &str) -> (usize, usize) {
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// A yaml_serde error as a `CompileError::Syntax` with the location moved to the front.
/// `bom` is the length of the byte-order mark dropped before `text`.
fn yaml_error(e: &yaml_serde::Error, text: &str, bom: usize, path: &Path) -> CompileError {
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
    let (line, column) = match reader_position(e, &mut message, text, bom) {
        Some((l, c)) => (Some(l), Some(c)),
        None => (line, column),
    };
    CompileError::syntax(SourceLoc::new(Some(path.to_path_buf()), line, column), message)
}

/// A libyaml reader error (a control character such as NUL) has no line and column, only
/// ` at position <byte offset>` at the end of its message: its line and column, with the
/// message ending in the character and its offset in the file instead.
fn reader_position(e: &yaml_serde::Error, message: &mut String, text: &str, bom: usize) -> Option<(usize, usize)> {
    if e.location().is_some_and(|l| l.index() != 0) {
        return None;
    }
    const AT: &str = " at position ";
    let i = message.rfind(AT)?;
    let offset: usize = message[i + AT.len()..].parse().ok()?;
    let c = text.get(offset..)?.chars().next()?;
    let pos = line_col(text.get(..offset)?);
    let in_file = offset + bom;
    message.replace_range(i.., &format!(": U+{:04X} (byte offset {in_file})", u32::from(c)));
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_block_items() {
        let text = "layers:\n  - conv2d: {filters: 1}\n  - flatten\n  - {dense: {units: 2}}\n  - 'add': {}\n";
        let e = scan(text).items;
        let keys: Vec<_> = e.iter().map(|(l, c, k)| (*l, *c, k.as_str())).collect();
        assert_eq!(
            keys,
            vec![(2, 5, "conv2d"), (3, 5, "flatten"), (4, 6, "dense"), (5, 6, "add")]
        );
    }

    fn lines_of(text: &str) -> Vec<(usize, &str)> {
        let e = scan(text).items;
        e.into_iter()
            .map(|(l, _, k)| (l, if k == "dense" { "dense" } else { "other" }))
            .collect()
    }

    #[test]
    fn scan_skips_inputs_lists_and_block_scalars() {
        let text = "name: |\n  - dense: a multi-line name\ninput: [16]\nlayers:\n  - add:\n      inputs:\n        - dense\n        - other\n  - dense: {units: 0}\n";
        assert_eq!(lines_of(text), vec![(5, "other"), (9, "dense")]);
    }

    #[test]
    fn scan_finds_items_of_blocks_and_repeats_at_any_indentation() {
        let text = "blocks:\n  b:\n    params: [f]\n    layers:\n    - dense: {units: $f}\n    - dense:\n        name: >-\n          - dense\n        units: 2\nlayers:\n- repeat:\n    times: 2\n    layers:\n      - dense\n- b: {f: 3}\ntraining: {loss: mse}\n";
        let s = scan(text);
        let keys: Vec<_> = s.items.iter().map(|(l, c, k)| (*l, *c, k.as_str())).collect();
        assert_eq!(
            keys,
            vec![
                (5, 7, "dense"),
                (6, 7, "dense"),
                (11, 3, "repeat"),
                (14, 9, "dense"),
                (15, 3, "b")
            ]
        );
        assert_eq!(s.blocks, vec![(2, 3, "b".to_string())]);
    }

    #[test]
    fn scan_finds_top_level_block_names_plain_or_quoted() {
        let text = "input: [4]\nblocks:\n  # a comment\n  'a b': {layers: [flatten]}\n  c d :\n    layers:\n      \
                    - blocks:\n          x: 1\n    params: [f]\n  \"e\": {layers: [flatten]}\nlayers: [flatten]\n";
        let want = [(4, 4, "a b"), (5, 3, "c d"), (10, 4, "e")].map(|(l, c, k)| (l, c, k.to_string()));
        assert_eq!(scan(text).blocks, want);
    }
}
