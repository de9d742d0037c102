//! Documents the editor refuses before touching them: what it could not splice safely, or
//! what kustomize itself would refuse.

use std::collections::HashSet;

use yaml_rust2::Yaml;

use super::EditError;
use crate::yaml::tree::{Map, Node, Seq, Style};

/// A lone CR is a line break to YAML but not to the editor, which finds lines by LF: it
/// would splice at the wrong places. Such files (classic Mac line endings) are refused.
pub(super) fn check_line_breaks(source: &str) -> Result<(), EditError> {
    let bytes = source.as_bytes();
    let lone = (0..bytes.len()).find(|&i| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
    match lone {
        None => Ok(()),
        Some(at) => {
            let before = &source[..at];
            let line = 1 + before.matches('\n').count() + before.matches('\r').count()
                - before.matches("\r\n").count();
            Err(EditError::new(
                line,
                "a carriage return (CR) without a line feed ends this line",
                "save the file with LF or CRLF line endings",
            ))
        }
    }
}

/// Anchors and aliases would make one edit change several places, or none.
pub(super) fn check_plain_images(seq: &Seq) -> Result<(), EditError> {
    fn visit(node: &Node) -> Result<(), EditError> {
        match node {
            Node::Alias(p) => Err(EditError::new(
                p.line,
                "`images:` uses a YAML alias (`*name`)",
                "write the entry out in full instead of using anchors and aliases",
            )),
            Node::Seq(s) => s.items.iter().try_for_each(visit),
            Node::Map(m) => m
                .entries
                .iter()
                .try_for_each(|(k, v)| visit(k).and(visit(v))),
            Node::Scalar(_) => Ok(()),
        }
    }
    seq.items.iter().try_for_each(visit)
}

/// Duplicate keys are an error to kustomize's YAML parser; refuse them before it does.
pub(super) fn check_duplicate_keys(map: &Map) -> Result<(), EditError> {
    let mut seen = HashSet::new();
    for (key, value) in &map.entries {
        let Node::Scalar(scalar) = key else {
            return Err(EditError::new(
                key.line(),
                format!("a key is {} (a `?` complex key)", key.kind_name()),
                "write the kustomization with plain `key: value` pairs",
            ));
        };
        // Keys are the same when YAML reads them as the same value: `~` and `null`, `1`
        // and `0x1`, `a` and `"a"`.
        let identity = match (scalar.style, scalar.tagged) {
            (Style::Plain, false) if scalar.value.is_empty() => Yaml::Null,
            (Style::Plain, false) => Yaml::from_str(&scalar.value),
            _ => Yaml::String(scalar.value.clone()),
        };
        if !seen.insert(identity) {
            let k = &scalar.value;
            return Err(EditError::new(
                key.line(),
                format!("the key `{k}` appears twice in one mapping"),
                "remove one of the two; kustomize refuses duplicate keys",
            ));
        }
        for_each_map(value, &mut |m| check_duplicate_keys(m))?;
    }
    Ok(())
}

fn for_each_map(
    node: &Node,
    f: &mut dyn FnMut(&Map) -> Result<(), EditError>,
) -> Result<(), EditError> {
    match node {
        Node::Map(m) => f(m),
        Node::Seq(s) => s.items.iter().try_for_each(|i| for_each_map(i, f)),
        _ => Ok(()),
    }
}
