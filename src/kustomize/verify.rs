//! The re-parse check: the edited file, read as data, must equal the original with exactly
//! the intended change applied. It does not trust the editor; it catches its mistakes.

use yaml_rust2::{Yaml, YamlLoader};

use super::{Change, EditError, ImageSpec};

/// Re-parses the edited text and checks it equals the original with exactly the intended
/// change applied; anything else means the splice went wrong, and nothing is written.
pub(super) fn verify(
    old: &str,
    new: &str,
    spec: &ImageSpec,
    changes: &[Change],
) -> Result<(), EditError> {
    let refused = |why: String| {
        EditError::new(
            None,
            format!("refusing the edit: the re-parsed result {why}; nothing was changed"),
            "please report this with the kustomization file attached",
        )
    };
    let load =
        |text: &str| YamlLoader::load_from_str(text.strip_prefix('\u{feff}').unwrap_or(text));
    let old_docs = load(old).map_err(|e| refused(format!("of the original failed ({e})")))?;
    let new_docs = load(new).map_err(|e| refused(format!("is not valid YAML ({e})")))?;
    let [new_root] = new_docs.as_slice() else {
        return Err(refused(format!("has {} documents", new_docs.len())));
    };
    let mut expected = old_docs.into_iter().next().unwrap_or(Yaml::Null);
    apply_to_data(&mut expected, spec, changes);
    if same(&expected, new_root) {
        Ok(())
    } else {
        Err(refused(
            "differs from the original by more than the image values".into(),
        ))
    }
}

fn string(s: &str) -> Yaml {
    Yaml::String(s.to_string())
}

fn apply_to_data(root: &mut Yaml, spec: &ImageSpec, changes: &[Change]) {
    if !matches!(root, Yaml::Hash(_)) {
        *root = Yaml::Hash(Default::default());
    }
    let Yaml::Hash(top) = root else { return };
    let images = top.entry(string("images")).or_insert(Yaml::Null);
    if !matches!(images, Yaml::Array(_)) {
        *images = Yaml::Array(Vec::new());
    }
    let Yaml::Array(items) = images else { return };
    let name = string(&spec.name);
    let position = items
        .iter()
        .position(|i| matches!(i, Yaml::Hash(h) if h.get(&string("name")) == Some(&name)));
    let index = position.unwrap_or_else(|| {
        let mut entry = yaml_rust2::yaml::Hash::new();
        entry.insert(string("name"), name.clone());
        items.push(Yaml::Hash(entry));
        items.len() - 1
    });
    let Yaml::Hash(entry) = &mut items[index] else {
        return;
    };
    for change in changes {
        match &change.new {
            Some(v) => entry.insert(string(change.field.key()), string(v)),
            None => entry.remove(&string(change.field.key())),
        };
    }
}

/// Equality that ignores the order of keys in mappings.
fn same(a: &Yaml, b: &Yaml) -> bool {
    match (a, b) {
        (Yaml::Hash(x), Yaml::Hash(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Yaml::Array(x), Yaml::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}
