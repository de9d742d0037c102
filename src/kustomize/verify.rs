//! The re-parse check: the edited file, read as data, must equal the original with exactly
//! the intended change applied. It does not trust the editor; it catches its mistakes.
//!
//! The data is read straight from yaml-rust2's parser events rather than its loader, which
//! refuses duplicate keys that kustomize accepts, and keeps what the check needs: every
//! entry of a mapping, and whether a plain scalar is a string to every YAML reader (so a
//! value written plain that some reader takes for a number is caught here too).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{ScanError, TScalarStyle};

use super::{Change, EditError, ImageSpec};
use crate::yaml::resolve;

/// Re-parses the edited text and checks it equals the original with exactly the intended
/// change applied to entry `entry` of `images:` (a new entry when `None`); anything else
/// means the splice went wrong, and nothing is written.
pub(super) fn verify(
    old: &str,
    new: &str,
    spec: &ImageSpec,
    entry: Option<usize>,
    changes: &[Change],
) -> Result<(), EditError> {
    let refused = |why: String| {
        EditError::new(
            None,
            format!("refusing the edit: the re-parsed result {why}; nothing was changed"),
            "please report this with the kustomization file attached",
        )
    };
    let old_docs = load(old).map_err(|e| refused(format!("of the original failed ({e})")))?;
    let new_docs = load(new).map_err(|e| refused(format!("is not valid YAML ({e})")))?;
    let [new_root] = new_docs.as_slice() else {
        return Err(refused(format!("has {} documents", new_docs.len())));
    };
    let mut expected = old_docs.into_iter().next().unwrap_or(Data::Map(Vec::new()));
    apply_to_data(&mut expected, spec, entry, changes);
    if same(&expected, new_root) {
        Ok(())
    } else {
        Err(refused(
            "differs from the original by more than the image values".into(),
        ))
    }
}

/// A YAML node as the check compares it.
#[derive(Debug, Clone, PartialEq)]
enum Data {
    /// A quoted scalar, or a plain one every YAML reader takes for a string.
    Str(String),
    /// A plain scalar some reader takes for something else: a number, a boolean, null.
    Plain(String),
    /// A scalar with an explicit tag, and the tag.
    Tagged(String, String),
    Seq(Vec<Data>),
    /// Every entry, in order, duplicates included.
    Map(Vec<(Data, Data)>),
}

/// An open collection while loading.
enum Open {
    Seq(Vec<Data>, usize),
    Map(Vec<(Data, Data)>, Option<Data>, usize),
}

/// Every document of `text`, without recursion (nesting depth was bounded by the tree).
fn load(text: &str) -> Result<Vec<Data>, ScanError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut anchors: HashMap<usize, Data> = HashMap::new();
    let mut root: Option<Data> = None;
    loop {
        let (event, _) = parser.next_token()?;
        let (node, anchor) = match event {
            Event::StreamEnd => return Ok(docs),
            Event::DocumentEnd => {
                docs.push(root.take().unwrap_or(Data::Plain(String::new())));
                continue;
            }
            Event::SequenceStart(anchor, _) => {
                open.push(Open::Seq(Vec::new(), anchor));
                continue;
            }
            Event::MappingStart(anchor, _) => {
                open.push(Open::Map(Vec::new(), None, anchor));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match open.pop() {
                Some(Open::Seq(items, anchor)) => (Data::Seq(items), anchor),
                Some(Open::Map(entries, _, anchor)) => (Data::Map(entries), anchor),
                None => continue,
            },
            Event::Scalar(value, style, anchor, tag) => {
                let data = match tag {
                    // `!!str key` is the string `key`, as every reader takes it.
                    Some(tag) if tag.handle == "tag:yaml.org,2002:" && tag.suffix == "str" => {
                        Data::Str(value)
                    }
                    Some(tag) => Data::Tagged(format!("{}{}", tag.handle, tag.suffix), value),
                    None if style != TScalarStyle::Plain => Data::Str(value),
                    None if resolve::reads_as_string_everywhere(&value) => Data::Str(value),
                    None => Data::Plain(value),
                };
                (data, anchor)
            }
            Event::Alias(id) => (
                anchors
                    .get(&id)
                    .cloned()
                    .unwrap_or(Data::Plain(String::new())),
                0,
            ),
            Event::StreamStart | Event::DocumentStart | Event::Nothing => continue,
        };
        if anchor > 0 {
            anchors.insert(anchor, node.clone());
        }
        match open.last_mut() {
            None => root = Some(node),
            Some(Open::Seq(items, _)) => items.push(node),
            Some(Open::Map(entries, key, _)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

fn string(s: &str) -> Data {
    Data::Str(s.to_string())
}

/// The value of the first entry whose key is `key`, added at the end when absent.
fn entry_of<'d>(entries: &'d mut Vec<(Data, Data)>, key: &str, absent: Data) -> &'d mut Data {
    let key = string(key);
    let index = if let Some(i) = entries.iter().position(|(k, _)| *k == key) {
        i
    } else {
        entries.push((key, absent));
        entries.len() - 1
    };
    &mut entries[index].1
}

fn apply_to_data(root: &mut Data, spec: &ImageSpec, entry: Option<usize>, changes: &[Change]) {
    if !matches!(root, Data::Map(_)) {
        *root = Data::Map(Vec::new());
    }
    let Data::Map(top) = root else { return };
    let images = entry_of(top, "images", Data::Seq(Vec::new()));
    if !matches!(images, Data::Seq(_)) {
        *images = Data::Seq(Vec::new());
    }
    let Data::Seq(items) = images else { return };
    let index = entry.unwrap_or_else(|| {
        items.push(Data::Map(vec![(string("name"), string(&spec.name))]));
        items.len() - 1
    });
    let Some(Data::Map(fields)) = items.get_mut(index) else {
        return;
    };
    for change in changes {
        let key = change.field.key();
        match &change.new {
            Some(v) => *entry_of(fields, key, Data::Plain(String::new())) = string(v),
            None => fields.retain(|(k, _)| *k != string(key)),
        }
    }
}

/// Equality that ignores the order of entries in mappings.
fn same(a: &Data, b: &Data) -> bool {
    match (a, b) {
        (Data::Map(x), Data::Map(y)) => {
            if x.len() != y.len() {
                return false;
            }
            let same_entry =
                |(k, v): &(Data, Data), (l, w): &(Data, Data)| same(k, l) && same(v, w);
            if x.iter().zip(y).all(|(e, f)| same_entry(e, f)) {
                return true;
            }
            // `same` is an equivalence, so pairing each entry with the first unused equal
            // one finds a pairing whenever there is one.
            let mut used = vec![false; y.len()];
            x.iter().all(|e| {
                let found = (0..y.len()).find(|&j| !used[j] && same_entry(e, &y[j]));
                found.map(|j| used[j] = true).is_some()
            })
        }
        (Data::Seq(x), Data::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}
