//! Expansion of the raw model into a [`ModelSpec`]: block instances and `repeat` are inlined,
//! unnamed layers get Keras's automatic names, and every input becomes an explicit layer name.
//!
//! Each block instance is a scope with its own name table and automatic-name counters; its
//! layers are named `<instance>/<local>`. Input references are recorded symbolically
//! (scope, local name) and resolved once every scope is complete, so a layer may refer to one
//! declared after it (a cycle is then reported by `validate`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use yaml_serde::{Mapping, Value};

use super::arg::{lookup, param_ref, show, Env};
use super::convert::layer_kind;
use super::kind::AutoNamer;
use super::validate::{shortened, MAX_LAYERS, MAX_NAME_CHARS};
use super::yaml::{RawBlock, RawItem, RawKind, RawLayer, RawModel, RawRepeat, RawTraining, LAYER_TYPES};
use super::{LayerSpec, ModelSpec, TrainingSpec, MODEL_INPUT};
use crate::error::{CompileError, SourceLoc};

/// Bound on items and repeat iterations visited, so nested repeats cannot spin for ages.
const MAX_WORK: usize = 100 * MAX_LAYERS;
/// Deepest nesting of block instances (a block using a block using ...): expansion recurses
/// once per level, and no sane model comes near this.
pub const MAX_BLOCK_DEPTH: usize = 64;

type Pos = Option<(usize, usize)>;

/// An input reference: a resolved layer name, or a local name in a scope.
#[derive(Clone, Debug, PartialEq)]
enum Ref {
    Full(String),
    Local { scope: usize, name: String },
}

/// A declared name: the full name of the layer that is its output, and where it was declared.
struct Decl {
    output: String,
    pos: Pos,
}

/// The state of one list of items being expanded (the model, or a block instance).
struct Scope {
    id: usize,
    /// `""` at the top, `"<instance>/"` inside a block instance.
    prefix: String,
    input: Ref,
    prev: Ref,
    env: Env,
    namer: AutoNamer,
    /// Enclosing `repeat`s of this scope: names declared in the body, current iteration.
    repeats: Vec<(HashSet<String>, usize)>,
    /// `" in block `b` (instance `x`)"`, or empty at the top.
    context: String,
}

struct Expander<'a> {
    file: &'a Path,
    blocks: &'a BTreeMap<String, RawBlock>,
    layers: Vec<LayerSpec>,
    /// Per layer: its unresolved inputs and position.
    refs: Vec<(Vec<Ref>, Pos)>,
    /// Per scope: local name → declaration.
    tables: Vec<HashMap<String, Decl>>,
    /// Block instances being expanded (to refuse recursion).
    stack: Vec<String>,
    work: usize,
}

pub fn expand(raw: RawModel, path: &Path) -> Result<ModelSpec, CompileError> {
    let mut ex = Expander {
        file: path,
        blocks: &raw.blocks,
        layers: Vec::new(),
        refs: Vec::new(),
        tables: vec![HashMap::new()],
        stack: Vec::new(),
        work: 0,
    };
    ex.check_blocks()?;
    let input = Ref::Full(MODEL_INPUT.to_string());
    let mut top = Scope {
        id: 0,
        prefix: String::new(),
        input: input.clone(),
        prev: input,
        env: Env::new(),
        namer: AutoNamer::default(),
        repeats: Vec::new(),
        context: String::new(),
    };
    ex.items(&mut top, &raw.layers)?;
    let layers = ex.resolve()?;
    let name = match raw.name {
        Some(n) => n,
        None => path.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_string(),
    };
    Ok(ModelSpec {
        name,
        input: raw.input,
        layers,
        training: training(raw.training.unwrap_or_default()),
        source: Some(path.to_path_buf()),
    })
}

fn training(t: RawTraining) -> TrainingSpec {
    TrainingSpec {
        optimizer: t.optimizer.map(|o| o.0.to_string()),
        learning_rate: t.learning_rate.map(|v| v.0),
        momentum: t.momentum.map(|v| v.0),
        loss: t.loss.map(|l| l.0),
        from_logits: t.from_logits,
        batch_size: t.batch_size.map(|v| v.0),
        epochs: t.epochs.map(|v| v.0),
        validation_split: t.validation_split.map(|v| v.0),
    }
}

/// Names declared (by `name:`, `$param`s substituted) directly in `items` or in nested repeats:
/// the names a repeat suffixes per iteration.
fn declared_names(items: &[RawItem], env: &Env, out: &mut HashSet<String>) {
    for item in items {
        let name = match &item.kind {
            RawKind::Layer(l) => l.common().0.as_deref(),
            RawKind::Call(args) => args.get("name").and_then(Value::as_str),
            RawKind::Repeat(r) => {
                declared_names(&r.layers, env, out);
                None
            }
        };
        out.extend(name.map(|n| layer_name(n, env).unwrap_or_else(|_| n.to_string())));
    }
}

/// A layer's `name:` or an `inputs:` entry: a `$param` there stands for the parameter's value,
/// which must be a string (`name: $prefix` names each instance's layer after an argument).
fn layer_name(s: &str, env: &Env) -> Result<String, String> {
    let Some(p) = param_ref(s) else {
        return Ok(s.to_string());
    };
    match lookup(p, env)? {
        Value::String(v) => Ok(v.clone()),
        v => Err(format!("${p} = {}: a layer name must be a string", show(v))),
    }
}

/// Replaces `$param` strings anywhere inside `v` by their values in `env`.
fn substitute(v: &Value, env: &Env) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => match param_ref(s) {
            Some(p) => lookup(p, env)?.clone(),
            None => v.clone(),
        },
        Value::Sequence(seq) => Value::Sequence(seq.iter().map(|x| substitute(x, env)).collect::<Result<_, _>>()?),
        Value::Mapping(m) => {
            let mut out = Mapping::new();
            for (k, x) in m {
                out.insert(k.clone(), substitute(x, env)?);
            }
            Value::Mapping(out)
        }
        _ => v.clone(),
    })
}

/// Why `n` cannot name a layer, block or block instance, if it cannot: (the name as shown in
/// a message, the reason).
fn name_problem(n: &str) -> Option<(String, String)> {
    let len = n.chars().count();
    if len > MAX_NAME_CHARS {
        Some((
            format!("`{}` ({len} characters)", shortened(n)),
            format!("names are at most {MAX_NAME_CHARS} characters long"),
        ))
    } else if n.is_empty() || n == MODEL_INPUT || n.contains('/') || n.chars().any(char::is_whitespace) {
        Some((
            format!("`{n}`"),
            "names are non-empty, without `/` or spaces, and `input` is reserved for the model's input".into(),
        ))
    } else {
        None
    }
}

/// Applies the enclosing repeats' suffixes to a name declared or referenced in their bodies.
fn renamed(scope: &Scope, name: &str) -> String {
    let mut n = name.to_string();
    for (names, i) in &scope.repeats {
        if *i > 0 && names.contains(name) {
            n = format!("{n}_{i}");
        }
    }
    n
}

fn reference(scope: &Scope, name: &str) -> Ref {
    if name == MODEL_INPUT {
        scope.input.clone()
    } else {
        Ref::Local {
            scope: scope.id,
            name: renamed(scope, name),
        }
    }
}

impl Expander<'_> {
    fn err(&self, pos: Pos, message: impl Into<String>) -> CompileError {
        CompileError::model(
            SourceLoc::new(Some(self.file.to_path_buf()), pos.map(|p| p.0), pos.map(|p| p.1)),
            message,
        )
    }

    /// Block names must not shadow layer types; parameters must be unique identifiers.
    fn check_blocks(&self) -> Result<(), CompileError> {
        for (name, block) in self.blocks {
            if let Some((shown, why)) = name_problem(name) {
                return Err(self.err(block.pos, format!("invalid block name {shown}: {why}")));
            }
            if LAYER_TYPES.contains(&name.as_str()) || name == "repeat" {
                return Err(self.err(
                    block.pos,
                    format!("block name `{name}` is a layer type; choose another"),
                ));
            }
            let mut seen = HashSet::new();
            for p in &block.params {
                if !super::arg::is_identifier(&p.name) || p.name == "name" || p.name == "inputs" {
                    return Err(self.err(
                        block.pos,
                        format!(
                            "block `{name}`: parameter `{}` must be an identifier other than `name` and `inputs`",
                            p.name
                        ),
                    ));
                }
                if !seen.insert(p.name.as_str()) {
                    return Err(self.err(
                        block.pos,
                        format!("block `{name}`: parameter `{}` is declared twice", p.name),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Counts work; refuses models that expand without bound.
    fn tick(&mut self, pos: Pos) -> Result<(), CompileError> {
        self.work += 1;
        if self.work > MAX_WORK || self.layers.len() > MAX_LAYERS {
            return Err(self.err(pos, format!("the model expands to more than {MAX_LAYERS} layers")));
        }
        Ok(())
    }

    fn items(&mut self, scope: &mut Scope, items: &[RawItem]) -> Result<(), CompileError> {
        for item in items {
            self.tick(item.pos)?;
            match &item.kind {
                RawKind::Layer(l) => self.layer(scope, item, l)?,
                RawKind::Repeat(r) => self.repeat(scope, item, r)?,
                RawKind::Call(args) => self.call(scope, item, args)?,
            }
        }
        Ok(())
    }

    /// Declares a name in `scope` (explicit, or Keras's next automatic one); returns it.
    fn declare(
        &mut self,
        scope: &mut Scope,
        explicit: Option<&str>,
        base: &str,
        pos: Pos,
    ) -> Result<String, CompileError> {
        let table = &self.tables[scope.id];
        let local = match explicit {
            Some(n) => {
                if let Some((shown, why)) = name_problem(n) {
                    return Err(self.err(pos, format!("invalid layer name {shown}{}: {why}", scope.context)));
                }
                if n.contains('$') {
                    return Err(self.err(
                        pos,
                        format!(
                            "invalid layer name `{}`{}: `$param` stands only for a whole name (`name: $param`)",
                            shortened(n),
                            scope.context
                        ),
                    ));
                }
                renamed(scope, n)
            }
            None => scope.namer.next(base, |n| table.contains_key(n)),
        };
        if let Some(first) = table.get(&local) {
            let at = first
                .pos
                .map(|p| format!(" (first declared at line {})", p.0))
                .unwrap_or_default();
            return Err(self.err(pos, format!("duplicate layer name `{local}`{}{at}", scope.context)));
        }
        Ok(local)
    }

    fn push(&mut self, layer: LayerSpec, refs: Vec<Ref>, pos: Pos) {
        self.layers.push(layer);
        self.refs.push((refs, pos));
    }

    fn inputs(&self, scope: &Scope, list: &Option<Vec<String>>, pos: Pos) -> Result<Vec<Ref>, CompileError> {
        match list {
            None => Ok(vec![scope.prev.clone()]),
            Some(l) if l.is_empty() => Err(self.err(pos, format!("`inputs:` is empty{}", scope.context))),
            Some(l) => Ok(l.iter().map(|r| reference(scope, r)).collect()),
        }
    }

    fn layer(&mut self, scope: &mut Scope, item: &RawItem, raw: &RawLayer) -> Result<(), CompileError> {
        let (name, inputs) = raw.common();
        let fail = |who: Option<&str>, m: String| {
            let who = who.map(|n| format!(" `{n}`")).unwrap_or_default();
            self.err(item.pos, format!("{} layer{who}{}: {m}", item.key, scope.context))
        };
        let name = name
            .as_deref()
            .map(|n| layer_name(n, &scope.env).map_err(|m| fail(None, format!("argument `name`: {m}"))))
            .transpose()?;
        let inputs = inputs
            .as_ref()
            .map(|l| {
                let named = |r: &String| layer_name(r, &scope.env);
                let l = l.iter().map(named).collect::<Result<Vec<_>, _>>();
                l.map_err(|m| fail(name.as_deref(), format!("argument `inputs`: {m}")))
            })
            .transpose()?;
        let kind = layer_kind(raw, &scope.env).map_err(|m| fail(name.as_deref(), m))?;
        let local = self.declare(scope, name.as_deref(), kind.auto_name_base(), item.pos)?;
        let full = format!("{}{local}", scope.prefix);
        let refs = self.inputs(scope, &inputs, item.pos)?;
        let spec = LayerSpec {
            name: full.clone(),
            kind,
            inputs: Vec::new(),
            line: item.pos.map(|p| p.0),
        };
        self.push(spec, refs, item.pos);
        self.tables[scope.id].insert(
            local,
            Decl {
                output: full.clone(),
                pos: item.pos,
            },
        );
        scope.prev = Ref::Full(full);
        Ok(())
    }

    fn repeat(&mut self, scope: &mut Scope, item: &RawItem, r: &RawRepeat) -> Result<(), CompileError> {
        let times = r
            .times
            .resolve(&scope.env)
            .map_err(|m| self.err(item.pos, format!("repeat{}: argument `times`: {m}", scope.context)))?;
        if times > MAX_LAYERS {
            return Err(self.err(
                item.pos,
                format!("repeat: {times} times is more than the {MAX_LAYERS} allowed"),
            ));
        }
        let mut names = HashSet::new();
        declared_names(&r.layers, &scope.env, &mut names);
        for i in 0..times {
            self.tick(item.pos)?;
            scope.repeats.push((names.clone(), i));
            let res = self.items(scope, &r.layers);
            scope.repeats.pop();
            res?;
        }
        Ok(())
    }

    fn call(&mut self, scope: &mut Scope, item: &RawItem, args: &BTreeMap<String, Value>) -> Result<(), CompileError> {
        let key = &item.key;
        let Some(block) = self.blocks.get(key) else {
            let blocks: Vec<&str> = self.blocks.keys().map(String::as_str).collect();
            let blocks = if blocks.is_empty() {
                "no blocks are defined".to_string()
            } else {
                format!("blocks: {}", blocks.join(", "))
            };
            return Err(self.err(
                item.pos,
                format!(
                    "unknown layer type `{key}`{}; expected one of: {}, repeat ({blocks})",
                    scope.context,
                    LAYER_TYPES.join(", ")
                ),
            ));
        };
        if self.stack.len() >= MAX_BLOCK_DEPTH {
            let chain: Vec<&str> = self.stack.iter().map(String::as_str).chain([key.as_str()]).collect();
            let shown = if chain.len() > 6 {
                let mut v = chain[..3].to_vec();
                v.push("...");
                v.extend_from_slice(&chain[chain.len() - 2..]);
                v
            } else {
                chain
            };
            return Err(self.err(
                item.pos,
                format!(
                    "blocks nest more than {MAX_BLOCK_DEPTH} deep ({})",
                    shown.iter().map(|b| shortened(b)).collect::<Vec<_>>().join(" -> ")
                ),
            ));
        }
        if self.stack.iter().any(|b| b == key) {
            return Err(self.err(
                item.pos,
                format!("block `{key}` uses itself ({} -> {key})", self.stack.join(" -> ")),
            ));
        }
        let ctx = scope.context.clone();
        let here = |m: String| format!("block `{key}`{ctx}: {m}");
        let mut name = None;
        let mut inputs = None;
        let mut env = Env::new();
        for (k, v) in args {
            let v = substitute(v, &scope.env).map_err(|m| self.err(item.pos, here(format!("argument `{k}`: {m}"))))?;
            match k.as_str() {
                "name" => match v.as_str() {
                    Some(s) => name = Some(s.to_string()),
                    None => return Err(self.err(item.pos, here("`name` must be a string".into()))),
                },
                "inputs" => match yaml_serde::from_value::<Vec<String>>(v) {
                    Ok(l) => inputs = Some(l),
                    Err(_) => return Err(self.err(item.pos, here("`inputs` must be a list of layer names".into()))),
                },
                _ if block.params.iter().any(|p| &p.name == k) => {
                    env.insert(k.clone(), v);
                }
                _ => {
                    let params: Vec<&str> = block.params.iter().map(|p| p.name.as_str()).collect();
                    return Err(self.err(
                        item.pos,
                        here(format!(
                            "unknown argument `{k}`, expected one of: {}",
                            params
                                .iter()
                                .chain(&["name", "inputs"])
                                .copied()
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    ));
                }
            }
        }
        for p in &block.params {
            if !env.contains_key(&p.name) {
                match &p.default {
                    Some(d) => {
                        env.insert(p.name.clone(), d.clone());
                    }
                    None => return Err(self.err(item.pos, here(format!("missing argument `{}`", p.name)))),
                }
            }
        }
        let local = self.declare(scope, name.as_deref(), key, item.pos)?;
        let input = match &inputs {
            Some(l) if l.len() != 1 => {
                return Err(self.err(item.pos, here("a block instance takes exactly one input".into())));
            }
            _ => self.inputs(scope, &inputs, item.pos)?.remove(0),
        };
        let id = self.tables.len();
        self.tables.push(HashMap::new());
        let prefix = format!("{}{local}/", scope.prefix);
        let mut inner = Scope {
            id,
            context: format!(" in block `{key}` (instance `{}`)", prefix.trim_end_matches('/')),
            prefix,
            input: input.clone(),
            prev: input,
            env,
            namer: AutoNamer::default(),
            repeats: Vec::new(),
        };
        let before = self.layers.len();
        self.stack.push(key.clone());
        let res = self.items(&mut inner, &block.layers);
        self.stack.pop();
        res?;
        let out = match inner.prev {
            Ref::Full(out) if self.layers.len() > before => out,
            _ => return Err(self.err(item.pos, here("the block has no layers".into()))),
        };
        self.tables[scope.id].insert(
            local,
            Decl {
                output: out.clone(),
                pos: item.pos,
            },
        );
        scope.prev = Ref::Full(out);
        Ok(())
    }

    /// Turns every symbolic input into a full layer name.
    fn resolve(mut self) -> Result<Vec<LayerSpec>, CompileError> {
        for (i, (refs, pos)) in self.refs.iter().enumerate() {
            let mut inputs = Vec::with_capacity(refs.len());
            for r in refs {
                match r {
                    Ref::Full(s) => inputs.push(s.clone()),
                    Ref::Local { scope, name } => match self.tables[*scope].get(name) {
                        Some(d) => inputs.push(d.output.clone()),
                        None => {
                            let me = &self.layers[i].name;
                            let mut known: Vec<&str> = self.tables[*scope]
                                .iter()
                                .filter(|(_, d)| &d.output != me)
                                .map(|(k, _)| k.as_str())
                                .collect();
                            known.sort_unstable();
                            known.insert(0, MODEL_INPUT);
                            let more = known.len() > 24;
                            known.truncate(24);
                            return Err(self.err(
                                *pos,
                                format!(
                                    "layer `{}`: unknown input `{name}`; names known here: {}{}",
                                    self.layers[i].name,
                                    known.join(", "),
                                    if more { ", ..." } else { "" }
                                ),
                            ));
                        }
                    },
                }
            }
            self.layers[i].inputs = inputs;
        }
        Ok(self.layers)
    }
}
