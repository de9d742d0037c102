//! Documents the editor refuses before touching them: what it could not splice safely, or
//! what kustomize itself would refuse.

use std::collections::HashMap;

use yaml_rust2::Yaml;

use super::{EditError, Notice};
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

/// Keys that appear twice in one mapping. kubectl kustomize (5.5) reads such a file and
/// uses the last of the two, so outside `images:` a string key twice is only a warning:
/// the edit does not touch it. `images:` twice, or a key twice in its entries, is refused:
/// which of the two the edit should change, or which entry is the image's, would be a
/// guess. So is a key twice that is not a string (`~` and `null`, `1` and `0x1`).
pub(super) fn duplicate_keys(root: &Map) -> Result<Vec<Notice>, EditError> {
    let mut warnings = Vec::new();
    visit_keys(root, Place::Top, &mut warnings)?;
    Ok(warnings)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Top,
    Images,
    Elsewhere,
}

fn visit_keys(map: &Map, place: Place, warnings: &mut Vec<Notice>) -> Result<(), EditError> {
    let mut seen: HashMap<Yaml, usize> = HashMap::new();
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
        let is_images = place == Place::Top && identity == Yaml::String("images".into());
        let k = &scalar.value;
        let line = key.line();
        match seen.get(&identity) {
            Some(first) if is_images => {
                return Err(EditError::new(
                    line,
                    format!(
                        "the key `{k}` appears twice (first at line {first}); kustomize would use only this last list, so which one to edit is unclear"
                    ),
                    "merge the two `images:` lists into one",
                ));
            }
            Some(first) if place == Place::Images => {
                return Err(EditError::new(
                    line,
                    format!(
                        "the key `{k}` appears twice in one mapping of `images:` (first at line {first}); kustomize would use only this last one, so which one to edit is unclear"
                    ),
                    "remove one of the two",
                ));
            }
            // Not a string (`~`, `1`): kustomize refuses some such keys wherever they are.
            Some(first) if !matches!(identity, Yaml::String(_)) => {
                return Err(EditError::new(
                    line,
                    format!("the key `{k}` appears twice in one mapping (first at line {first})"),
                    "remove one of the two",
                ));
            }
            Some(first) => warnings.push(Notice {
                line,
                message: format!(
                    "the key `{k}` appears twice in one mapping (first at line {first}); kubectl kustomize uses the last one and stricter YAML tools refuse the file; it was left as it is"
                ),
            }),
            None => {
                seen.insert(identity, line);
            }
        }
        let inner = match place {
            Place::Images => Place::Images,
            _ if is_images => Place::Images,
            _ => Place::Elsewhere,
        };
        for_each_map(value, &mut |m| visit_keys(m, inner, warnings))?;
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
