//! `model.summary()` as Keras prints it: one row per layer with its output shape (batch shown
//! as `None`) and parameter count, then the totals with thousands separators. BN moving
//! statistics count as non-trainable, as in Keras. Models that are not a plain chain get a
//! "Connected to" column. Columns widen to fit instead of truncating names.

use std::collections::HashMap;
use std::fmt::Write;

use crate::ir::{Graph, NodeId, Op, ParamRole, Shape};

/// `1234567` → `"1,234,567"`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `[2, 28, 28, 32]` → `"(None, 28, 28, 32)"`.
fn keras_shape(s: &Shape) -> String {
    match s.dims() {
        [] => "()".into(),
        [_] => "(None,)".into(),
        [_, rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(|d| d.to_string()).collect();
            format!("(None, {})", rest.join(", "))
        }
    }
}

/// Parameter counts: (trainable, non-trainable).
fn count(g: &Graph, params: &[NodeId]) -> (usize, usize) {
    let mut t = (0, 0);
    for &p in params {
        let n = g.shape(p).numel();
        match g.param_info(p) {
            Some((_, role)) if !ParamRole::trainable(role) => t.1 += n,
            _ => t.0 += n,
        }
    }
    t
}

/// For each layer, the layers (or `input`) whose outputs it reads.
fn connections(g: &Graph) -> Vec<Vec<String>> {
    let mut producers: HashMap<NodeId, Vec<usize>> = HashMap::new();
    for (i, l) in g.layers.iter().enumerate() {
        producers.entry(l.output).or_default().push(i);
    }
    // The latest layer before `li` whose output is `node`, else the node's own layer tag.
    let source = |node: NodeId, li: usize| -> String {
        let by_layer = producers
            .get(&node)
            .and_then(|v| v.iter().rev().find(|&&j| j < li))
            .map(|&j| g.layers[j].name.clone());
        by_layer.unwrap_or_else(|| match g.node(node).op {
            Op::Input => "input".into(),
            _ => g.node(node).layer.clone(),
        })
    };
    // Each layer's nodes, grouped once (a scan of all nodes per layer was quadratic in depth).
    let mut nodes_of: HashMap<&str, Vec<&crate::ir::Node>> = HashMap::new();
    for n in &g.nodes {
        nodes_of.entry(n.layer.as_str()).or_default().push(n);
    }
    g.layers
        .iter()
        .enumerate()
        .map(|(li, l)| {
            let mut from: Vec<String> = Vec::new();
            let mut push = |s: String| {
                if !from.contains(&s) {
                    from.push(s);
                }
            };
            let own: &[&crate::ir::Node] = nodes_of.get(l.name.as_str()).map_or(&[], Vec::as_slice);
            if own.is_empty() {
                push(source(l.output, li));
            }
            for n in own {
                for &i in &n.inputs {
                    if g.node(i).layer != l.name {
                        push(source(i, li));
                    }
                }
            }
            from
        })
        .collect()
}

/// The Keras-style summary table of `g`'s layers.
pub fn summary(g: &Graph) -> String {
    let conns = connections(g);
    let chain = conns.iter().enumerate().all(|(i, c)| {
        let prev = if i == 0 {
            "input".to_string()
        } else {
            g.layers[i - 1].name.clone()
        };
        c.len() == 1 && c[0] == prev
    });
    let mut rows = Vec::new();
    let (mut trainable, mut frozen) = (0, 0);
    for (l, c) in g.layers.iter().zip(&conns) {
        let (t, f) = count(g, &l.params);
        trainable += t;
        frozen += f;
        rows.push([
            format!("{} ({})", l.name, l.class),
            keras_shape(g.shape(l.output)),
            (t + f).to_string(),
            c.join(", "),
        ]);
    }
    let header = ["Layer (type)", "Output Shape", "Param #", "Connected to"];
    let columns = if chain { 3 } else { 4 };
    let mut widths = [29, 26, 10, 14];
    for r in rows.iter().chain(std::iter::once(&header.map(String::from))) {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count() + 1);
        }
    }
    let total_width: usize = widths[..columns].iter().sum();
    let line = |s: &mut String, cells: &[String]| {
        let mut text = String::new();
        for (cell, w) in cells.iter().zip(widths).take(columns) {
            // Padded by hand: `{:<w$}` panics for widths over 65,535.
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count())));
        }
        let _ = writeln!(s, "{}", text.trim_end());
    };
    let rule = |ch: char| ch.to_string().repeat(total_width);
    let mut s = String::new();
    let _ = writeln!(s, "Model: \"{}\"", g.name);
    let _ = writeln!(s, "{}", rule('_'));
    line(&mut s, &header.map(String::from));
    let _ = writeln!(s, "{}", rule('='));
    for (i, r) in rows.iter().enumerate() {
        line(&mut s, r);
        if i + 1 < rows.len() {
            let _ = writeln!(s, "{}", rule('_'));
        }
    }
    let _ = writeln!(s, "{}", rule('='));
    let _ = writeln!(s, "Total params: {}", thousands(trainable + frozen));
    let _ = writeln!(s, "Trainable params: {}", thousands(trainable));
    let _ = writeln!(s, "Non-trainable params: {}", thousands(frozen));
    let _ = writeln!(s, "{}", rule('_'));
    s
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn names_wider_than_any_format_width_do_not_panic() {
        let name = "x".repeat(70_000);
        let spec = crate::spec::ModelSpec::sequential("m", vec![4], vec![crate::spec::LayerKind::Flatten]);
        let mut g = crate::lower::lower(&spec, 1, crate::ir::Mode::Inference).unwrap();
        g.layers[0].name = name.clone();
        let text = super::summary(&g);
        assert!(text.contains(&format!("{name} (Flatten) ")), "the name is shown whole");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(421_642), "421,642");
        assert_eq!(thousands(138_357_544), "138,357,544");
    }
}
