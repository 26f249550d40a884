//! Source locations: YAML errors become `file:line:column: message`, and each layer item
//! learns the line and column of its type key.
//!
//! yaml_serde reports locations only in errors (it has no spans or marks for values), so items
//! are located by a light scan of the text for the items of `layers:` sequences, wherever
//! layers are listed: the model's `layers:`, a block's and a `repeat`'s. Block style
//! (`- conv2d: ...`, `- flatten`) is followed by indentation, so list items elsewhere (a block's
//! `inputs:` list, `params:`) are not taken for layers, and block scalars (`name: |`), whose
//! lines are text, are skipped. Flow nodes (`[...]`, `{...}`, possibly over several lines) are
//! read token by token ([`Flow`]), minding quotes and comments. serde visits items in document
//! order, so each item takes the next scanned entry with its key; an item the scan missed has
//! no location (or that of a later item with its key). The names of the top-level `blocks:`
//! mapping (block or flow style) are located the same way, and matched to blocks by name.
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
    /// The items of `layers:` sequences, by their type key: `- key: ...`, `- key`,
    /// `- {key: ...}`, or the entries of a flow sequence `[key, {key: ...}, key: ...]`.
    items: Vec<Entry>,
    /// The keys of the top-level `blocks:` mapping (block names).
    blocks: Vec<Entry>,
}

/// Scans the text for layer items and block names, line by line, handing flow nodes to [`Flow`].
fn scan(text: &str) -> Scanned {
    let lines: Vec<Vec<char>> = text.lines().map(|l| l.chars().collect()).collect();
    let mut out = Scanned::default();
    // The indentation of the top-level keys (that of the first line), and inside `blocks:`, its
    // key's column and that of the block names (`None` until the first name shows it).
    let mut top = None;
    let mut blocks: Option<(usize, Option<usize>)> = None;
    // Every enclosing `layers:` sequence, innermost last: its key's column and that of its
    // dashes (`None` until its first item shows it).
    let mut seqs: Vec<(usize, Option<usize>)> = Vec::new();
    // Inside a block scalar: lines indented more than this column are its text.
    let mut scalar: Option<usize> = None;
    // The last line's key if nothing followed it (its value may be a flow node on this line):
    // the key's column and the value's role.
    let mut pending: Option<(usize, Role)> = None;
    // Lines before this one were read as part of a flow node.
    let mut resume = 0;
    for (i, chars) in lines.iter().enumerate() {
        if i < resume {
            continue;
        }
        let indent = match doc_start(chars) {
            Some(p) if matches!(chars.get(p), Some('{' | '[')) => p,
            // The marker alone, or with a comment or node properties: nothing to locate.
            Some(_) => continue,
            None => chars.iter().take_while(|&&c| c == ' ').count(),
        };
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
        // A line starting with a flow node: the whole document, or the value of the last key.
        let flow = matches!(chars.get(indent), Some('{' | '['));
        let role = match (pending.take(), top) {
            (_, None) if flow => Some(Role::Root),
            (Some((key_col, role)), _) if flow && indent > key_col => Some(role),
            _ => None,
        };
        if let Some(role) = role {
            resume = scan_flow(&lines, (i, indent), role, false, &mut out) + 1;
            continue;
        }
        let top = *top.get_or_insert(indent);
        let dash = is_dash(chars, indent);
        if let Some((key_col, names_col)) = &mut blocks {
            if indent <= *key_col {
                blocks = None;
            } else if *names_col.get_or_insert(indent) == indent && !dash {
                if let Some((name, col, _)) = mapping_key(chars, indent) {
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
        let mut item = false;
        if let Some(last) = seqs.last_mut() {
            item = *last.1.get_or_insert(indent) == indent && dash;
        }
        // What the line holds after any `- ` markers: a block scalar, a flow node, or a key
        // (an item's type, or one opening a `layers:` sequence or the `blocks:` mapping).
        let (mut p, mut last_dash) = (indent, indent);
        while is_dash(chars, p) {
            last_dash = p;
            p = skip_blanks(chars, p + 1);
        }
        let item = item && last_dash == indent;
        match chars.get(p) {
            Some('|' | '>') => {
                scalar = Some(last_dash);
                continue;
            }
            Some('{' | '[') => {
                resume = scan_flow(&lines, (i, p), Role::Other, item, &mut out) + 1;
                continue;
            }
            _ => {}
        }
        if item {
            out.items.extend(item_key(chars, i, p));
        }
        let key_col = p;
        let Some((key, _, after)) = mapping_key(chars, p) else {
            continue;
        };
        let p = skip_blanks(chars, after);
        let role = if key_col == top { Role::Root } else { Role::Other }.child(&key);
        match chars.get(p) {
            None | Some('#') => {
                pending = Some((key_col, role));
                match role {
                    Role::Layers => seqs.push((key_col, None)),
                    Role::Blocks => blocks = Some((key_col, None)),
                    _ => {}
                }
            }
            Some('{' | '[') => resume = scan_flow(&lines, (i, p), role, false, &mut out) + 1,
            Some('|' | '>') => scalar = Some(key_col),
            _ => {}
        }
    }
    out
}

/// After a document start marker `---` (at the start of a line): the position of what
/// follows it on the line.
fn doc_start(chars: &[char]) -> Option<usize> {
    let marker = chars.starts_with(&['-'; 3]) && matches!(chars.get(3), None | Some(' ' | '\t'));
    marker.then(|| skip_blanks(chars, 3))
}

/// The first position from `p` that is not a space or tab.
fn skip_blanks(chars: &[char], mut p: usize) -> usize {
    while matches!(chars.get(p), Some(' ' | '\t')) {
        p += 1;
    }
    p
}

/// What a flow node's entries are to the scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The document: its `blocks:` is the top-level one.
    Root,
    /// The top-level `blocks:` mapping: its keys are block names (even one called `layers`).
    Blocks,
    /// A `layers:` sequence: its entries are items.
    Layers,
    /// Anything else, where only `layers:` keys inside matter.
    Other,
}

impl Role {
    /// The role of the value of `key` in a mapping of this role.
    fn child(self, key: &str) -> Role {
        match (self, key) {
            (Role::Root, "blocks") => Role::Blocks,
            (Role::Blocks, _) => Role::Other,
            (_, "layers") => Role::Layers,
            _ => Role::Other,
        }
    }
}

/// Flow nodes nested deeper than this end the scan (yaml_serde refuses them anyway).
const MAX_FLOW_DEPTH: usize = 128;

/// Scans the flow collection (`{...}` or `[...]`) at `at` (0-based line and column) in
/// `role`, or as a layer item with `item`; returns the line it ends on.
fn scan_flow(lines: &[Vec<char>], at: (usize, usize), role: Role, item: bool, out: &mut Scanned) -> usize {
    let mut flow = Flow {
        lines,
        line: at.0,
        col: at.1,
        depth: 0,
        out,
    };
    flow.collection(role, item);
    flow.line
}

/// A reader of flow-style YAML, which may span lines, recording the items and block names in
/// it as [`scan`] does for block style.
struct Flow<'a> {
    lines: &'a [Vec<char>],
    /// The position, 0-based; the end of a line reads as `'\n'`.
    line: usize,
    col: usize,
    /// How many collections enclose the position.
    depth: usize,
    out: &'a mut Scanned,
}

impl Flow<'_> {
    /// The character `off` places after the position on its line, if any.
    fn at(&self, off: usize) -> Option<char> {
        self.lines.get(self.line)?.get(self.col + off).copied()
    }

    /// The character at the position: `'\n'` at the end of a line, `None` at the end of the text.
    fn peek(&self) -> Option<char> {
        let line = self.lines.get(self.line)?;
        Some(line.get(self.col).copied().unwrap_or('\n'))
    }

    /// Moves past the character at the position.
    fn bump(&mut self) {
        match self.lines.get(self.line) {
            Some(l) if self.col < l.len() => self.col += 1,
            Some(_) => (self.line, self.col) = (self.line + 1, 0),
            None => {}
        }
    }

    /// Whether the position follows a space, a tab or a line break (so `#` starts a comment).
    fn after_blank(&self) -> bool {
        let prev = self.col.checked_sub(1).and_then(|c| self.lines.get(self.line)?.get(c));
        matches!(prev, None | Some(' ' | '\t'))
    }

    /// Skips spaces, line breaks and comments.
    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' => self.bump(),
                '#' if self.after_blank() => self.col = self.lines.get(self.line).map_or(0, Vec::len),
                _ => break,
            }
        }
    }

    /// Skips a node's properties (`&anchor`, `!tag`) and an explicit key's `? `.
    fn skip_props(&mut self) {
        self.skip_space();
        while matches!(self.peek(), Some('&' | '!')) || self.peek() == Some('?') && self.at(1).is_none_or(ends_token) {
            while !self.peek().is_none_or(ends_token) {
                self.bump();
            }
            self.skip_space();
        }
    }

    /// A collection (at `{` or `[`) in `role`; with `item`, a mapping is a layer item, its first
    /// key the type.
    fn collection(&mut self, role: Role, item: bool) {
        if self.depth >= MAX_FLOW_DEPTH {
            (self.line, self.col) = (self.lines.len(), 0);
            return;
        }
        let map = self.peek() == Some('{');
        self.bump();
        self.depth += 1;
        let mut first = true;
        while self.more() {
            let before = (self.line, self.col);
            match (map, role) {
                (true, _) => self.entry(role, item && first),
                (false, Role::Layers) => self.entry(Role::Other, true),
                (false, _) => self.entry(Role::Other, false),
            }
            if (self.line, self.col) == before {
                self.bump();
            }
            first = false;
        }
        self.depth -= 1;
    }

    /// Whether the collection has another entry: skips commas, and the closing bracket.
    fn more(&mut self) -> bool {
        loop {
            self.skip_space();
            match self.peek() {
                None => return false,
                Some('}' | ']') => {
                    self.bump();
                    return false;
                }
                Some(',') => self.bump(),
                Some(_) => return true,
            }
        }
    }

    /// An entry of a mapping of `role` (`key: value`, or a lone key), or of a sequence (a node,
    /// or a one-pair mapping `key: value`). With `item` the entry is a layer item: its key (that
    /// of the mapping it is, or the scalar itself) is recorded.
    fn entry(&mut self, role: Role, item: bool) {
        self.skip_props();
        let key = match self.peek() {
            Some('{' | '[') => {
                self.collection(Role::Other, item);
                None
            }
            Some(_) => Some(self.scalar()),
            None => return,
        };
        match &key {
            Some(k) if item => self.out.items.push(k.clone()),
            Some(k) if role == Role::Blocks => self.out.blocks.push(k.clone()),
            _ => {}
        }
        self.skip_space();
        if self.peek() == Some(':') {
            self.bump();
            self.value(role.child(key.as_ref().map_or("", |k| k.2.as_str())));
        }
    }

    /// A value in `role`.
    fn value(&mut self, role: Role) {
        self.skip_props();
        match self.peek() {
            Some('{' | '[') => self.collection(role, false),
            Some(_) => {
                self.scalar();
            }
            None => {}
        }
    }

    /// A scalar, plain or quoted (escapes not undone): its 1-based position (inside any quote)
    /// and text.
    fn scalar(&mut self) -> Entry {
        let quote = self.peek().filter(|c| matches!(c, '"' | '\''));
        if quote.is_some() {
            self.bump();
        }
        let (line, col) = (self.line + 1, self.col + 1);
        let text = match quote {
            Some(q) => self.quoted(q),
            None => self.plain(),
        };
        (line, col, text)
    }

    /// The rest of a scalar quoted with `q`, reading past the closing quote.
    fn quoted(&mut self, q: char) -> String {
        let mut text = String::new();
        while let Some(c) = self.peek() {
            self.bump();
            match c {
                '\\' if q == '"' => {
                    text.push(c);
                    if let Some(e) = self.peek() {
                        text.push(e);
                        self.bump();
                    }
                }
                '\'' if q == '\'' && self.peek() == Some('\'') => {
                    text.push(c);
                    self.bump();
                }
                c if c == q => break,
                '\n' => text.push(' '),
                c => text.push(c),
            }
        }
        text
    }

    /// A plain scalar, up to a flow indicator, a `: ` or a comment.
    fn plain(&mut self) -> String {
        let mut text = String::new();
        while let Some(c) = self.peek() {
            let end = match c {
                ',' | '[' | ']' | '{' | '}' => true,
                ':' => self.at(1).is_none_or(ends_token),
                '#' => self.after_blank(),
                _ => false,
            };
            if end {
                break;
            }
            text.push(if c == '\n' { ' ' } else { c });
            self.bump();
        }
        text.trim_end().to_string()
    }
}

/// Whether `c` ends a token in flow style: a blank, a line break or a flow indicator.
fn ends_token(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | ',' | '[' | ']' | '{' | '}')
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

/// A mapping key at `p`, plain (`a b:`) or quoted (`"a b":`, escapes not undone), the
/// position of its first character and the position after its colon.
fn mapping_key(chars: &[char], p: usize) -> Option<(String, usize, usize)> {
    let (start, end, after) = match chars.get(p)? {
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
    let after = skip_blanks(chars, after);
    let key: String = chars[start..end].iter().collect();
    (chars.get(after) == Some(&':')).then(|| (key.trim_end().to_string(), start, after + 1))
}

/// The layer key of a block-style list item whose content starts at `p` (`key:`, `key`).
fn item_key(chars: &[char], line: usize, p: usize) -> Option<Entry> {
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
    // libyaml takes a lone CR (old Mac line endings) for a line break too; the scan, by lines,
    // must see the same lines. Same length, so byte offsets in messages stay right.
    let text = &lone_crs_as_lf(text);
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

/// `text` with each CR not followed by LF replaced by LF.
fn lone_crs_as_lf(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\r') {
        return text.into();
    }
    let mut chars = text.chars().peekable();
    let mut out = String::with_capacity(text.len());
    while let Some(c) = chars.next() {
        out.push(if c == '\r' && chars.peek() != Some(&'\n') {
            '\n'
        } else {
            c
        });
    }
    out.into()
}

/// The 1-based line and column (in characters, as libyaml counts) just after `before`; LF,
/// CRLF and a lone CR each end a line.
pub fn line_col(before: &str) -> (usize, usize) {
    let before = lone_crs_as_lf(before);
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

    /// The scanned items as (line, column, key).
    fn items(text: &str) -> Vec<(usize, usize, String)> {
        scan(text).items
    }

    fn entries(list: &[(usize, usize, &str)]) -> Vec<Entry> {
        list.iter().map(|&(l, c, k)| (l, c, k.to_string())).collect()
    }

    #[test]
    fn scan_finds_flow_items_on_one_line() {
        let text = "input: [4]\nlayers: [{dense: {units: 2}}, flatten, 'add': {}, {\"conv2d\": {filters: 1}}]\n";
        let want = [(2, 11, "dense"), (2, 31, "flatten"), (2, 41, "add"), (2, 53, "conv2d")];
        assert_eq!(items(text), entries(&want));
    }

    #[test]
    fn scan_reads_flow_over_lines_past_quotes_and_comments() {
        let text = "layers: [   # a comment, with [brackets] and {braces: }\n  \
                    {dense: {units: 2, name: \"a, b]: {c\"}},  # } ] ,\n  \
                    {conv2d: {name: 'it''s [x]', filters: 1,\n     kernel_size: 3}}, [nested, [list]],\n  \
                    {\n    flatten: {}\n  },\n  \
                    dense: {units: a#b}\n]\ninput: [4]\n";
        let want = [(2, 4, "dense"), (3, 4, "conv2d"), (6, 5, "flatten"), (8, 3, "dense")];
        assert_eq!(items(text), entries(&want));
    }

    #[test]
    fn scan_finds_flow_values_and_items_in_block_sequences() {
        let text = "layers:\n  - {conv2d: {filters: 8,\n      kernel_size: 3}}\n  \
                    - dense: {units: 4,\n      name: \"- flatten\"}\n  \
                    - repeat: {times: 2, layers: [dense, {conv2d: {filters: 1}}]}\n  \
                    - repeat:\n      times: 2\n      layers:\n        [flatten,\n         dense]\n  - flatten\n";
        let want = [
            (2, 6, "conv2d"),
            (4, 5, "dense"),
            (6, 5, "repeat"),
            (6, 33, "dense"),
            (6, 41, "conv2d"),
            (7, 5, "repeat"),
            (10, 10, "flatten"),
            (11, 10, "dense"),
            (12, 5, "flatten"),
        ];
        assert_eq!(items(text), entries(&want));
    }

    #[test]
    fn scan_finds_flow_block_maps() {
        let text = "input: [4]\nblocks: {res: {params: [f], layers: [{dense: {units: $f}}]},\n  \
                    \"b 2\": {layers: [flatten]}, 'layers': {layers: [dense]}}\nlayers: [res: {f: 2}]\n";
        let s = scan(text);
        assert_eq!(s.blocks, entries(&[(2, 10, "res"), (3, 4, "b 2"), (3, 32, "layers")]));
        let want = [(2, 39, "dense"), (3, 20, "flatten"), (3, 51, "dense"), (4, 10, "res")];
        assert_eq!(s.items, entries(&want));
        // A flow map on the line after `blocks:`, and a block name's flow value on the next line.
        let text = "blocks:\n  {a: {layers: [flatten]}}\nlayers: [a]\n";
        assert_eq!(scan(text).blocks, entries(&[(2, 4, "a")]));
        let text = "blocks:\n  a:\n    {layers: [flatten]}\nlayers:\n- a\n";
        let s = scan(text);
        assert_eq!(s.blocks, entries(&[(2, 3, "a")]));
        assert_eq!(s.items, entries(&[(3, 15, "flatten"), (5, 3, "a")]));
        // Only the top-level `blocks:` names blocks.
        assert!(scan("layers: [{repeat: {blocks: {x: 1}, layers: [dense]}}]\n")
            .blocks
            .is_empty());
    }

    #[test]
    fn scan_takes_documents_after_a_start_marker_and_in_flow_style() {
        let text = "--- # the model\nlayers:\n  - dense\n";
        assert_eq!(items(text), entries(&[(3, 5, "dense")]));
        let text = "---\n{input: [4], blocks: {b: {layers: [flatten]}},\n layers: [b, dense]}\n";
        assert_eq!(scan(text).blocks, entries(&[(2, 23, "b")]));
        assert_eq!(
            items(text),
            entries(&[(2, 36, "flatten"), (3, 11, "b"), (3, 14, "dense")])
        );
        let text = "--- {layers: [dense]}\n";
        assert_eq!(items(text), entries(&[(1, 15, "dense")]));
    }

    #[test]
    fn scan_never_panics() {
        let texts = [
            "layers: [{dense: {units: 2, name: \"a, b]: c\"}}, 'x''y', [[]], {? a: b, &x c: !t d}]\n",
            "blocks: {res: {layers: [\n  {conv2d: {filters: 8}}, # ]\n  flatten]}}\n---\n--- [\n",
            "layers:\n  - {a: \"\\\"\n  - b: |\n    - c\n  - [d, 'e\n",
        ];
        for text in texts {
            for (i, _) in text.char_indices() {
                scan(&text[..i]);
                scan(&text[i..]);
            }
        }
        scan(&"[".repeat(100_000));
        scan(&"layers: [{a: ".repeat(10_000));
    }
}
