//! Key paths into any YAML file, for Helm values and fields of a manifest that are not an
//! `images:` entry: `image.tag`, `spec.template.spec.containers[0].image`,
//! `containers[name=api].image`, `'example.com/key'.value`. Only an existing one-line
//! scalar is set, byte-exact; a path that does not exist is an error, never created,
//! since a key made up in the wrong place would deploy nothing and say nothing.
//! Pure: text in, text out, checked by parsing it again.

use std::fmt;

use yaml_rust2::{Yaml, YamlLoader};

use crate::kustomize::EditError;
use crate::yaml::tree::{self, Node, Style};
use crate::yaml::{self, Splice, scalar};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A mapping's key.
    Key(String),
    /// A sequence's item by position, from 0.
    Index(usize),
    /// The one item of a sequence of mappings whose `field` is `value`.
    Match { field: String, value: String },
}

/// A parsed key path, with the text it was written as (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPath {
    pub steps: Vec<Step>,
    text: String,
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a key path cannot be read; the message names the offending part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError(pub String);

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl KeyPath {
    /// A path found by walking a document, written as a person would write it.
    pub fn from_steps(steps: Vec<Step>) -> KeyPath {
        let text = render_steps(&steps);
        KeyPath { steps, text }
    }

    /// `a.b[0].c[name=api].d`; a key holding `.`, `[` or a quote is quoted: `'a.b'.c`.
    pub fn parse(text: &str) -> Result<KeyPath, PathError> {
        let bad = |why: String| PathError(format!("key path `{}` {why}", text.escape_debug()));
        let mut steps = Vec::new();
        let mut rest = text;
        let mut expect_key = true;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let close = after
                    .find(']')
                    .ok_or_else(|| bad("has a `[` without its `]`".into()))?;
                steps.push(selector(&after[..close]).map_err(|why| bad(why.into()))?);
                rest = &after[close + 1..];
                expect_key = false;
                continue;
            }
            if !expect_key {
                rest = rest
                    .strip_prefix('.')
                    .ok_or_else(|| bad("needs a `.` between keys".into()))?;
                if rest.is_empty() {
                    return Err(bad("ends with a `.`".into()));
                }
            }
            let (key, after) = key(rest).map_err(|why| bad(why.into()))?;
            steps.push(Step::Key(key));
            rest = after;
            expect_key = false;
        }
        if steps.is_empty() {
            return Err(PathError("the key path is empty".into()));
        }
        Ok(KeyPath {
            steps,
            text: text.to_string(),
        })
    }
}

/// A key at the start of `text`, and what follows it.
fn key(text: &str) -> Result<(String, &str), &'static str> {
    if let Some(body) = text.strip_prefix('\'') {
        // YAML's own rule for single quotes: `''` is one quote.
        let mut key = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c != '\'' {
                key.push(c);
            } else if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                key.push('\'');
                chars.next();
            } else {
                return Ok((key, &body[i + 1..]));
            }
        }
        return Err("has a quoted key without its closing `'`");
    }
    if let Some(body) = text.strip_prefix('"') {
        let close = body
            .find('"')
            .ok_or("has a quoted key without its closing `\"`")?;
        return Ok((body[..close].to_string(), &body[close + 1..]));
    }
    let end = text.find(['.', '[', ']']).unwrap_or(text.len());
    if end == 0 {
        return Err("has an empty key (two dots in a row, or a dot first)");
    }
    Ok((text[..end].to_string(), &text[end..]))
}

/// `0` or `name=api`, the inside of `[…]`.
fn selector(inside: &str) -> Result<Step, &'static str> {
    if let Some((field, value)) = inside.split_once('=') {
        let (field, value) = (field.trim(), value.trim());
        if field.is_empty() || value.is_empty() {
            return Err("has a `[field=value]` with an empty side");
        }
        let value = value
            .strip_prefix(['\'', '"'])
            .and_then(|v| v.strip_suffix(['\'', '"']))
            .unwrap_or(value);
        return Ok(Step::Match {
            field: field.to_string(),
            value: value.to_string(),
        });
    }
    inside.trim().parse().map(Step::Index).map_err(
        |_| "has a `[…]` that is neither an index such as [0] nor a match such as [name=api]",
    )
}

/// The result of setting one key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueEdit {
    pub text: String,
    /// The value before; empty for a key with no value.
    pub old: String,
    /// False when the file already holds the value, as the string it should be.
    pub changed: bool,
}

/// Sets the scalar at `path` in `source` to the string `value`, changing only its bytes.
/// The path must lead to one existing scalar in exactly one document of the file.
pub fn set_value(source: &str, path: &KeyPath, value: &str) -> Result<ValueEdit, EditError> {
    let docs = tree::parse(source)?;
    let mut found = Vec::new();
    let mut nearest: Option<Missing> = None;
    for (index, doc) in docs.iter().enumerate() {
        match locate(&doc.root, path) {
            Ok(target) => found.push((index, target)),
            Err(missing) => {
                if nearest.as_ref().is_none_or(|n| missing.depth > n.depth) {
                    nearest = Some(missing);
                }
            }
        }
    }
    let (index, target) = match found.as_slice() {
        [one] => *one,
        [] => return Err(missing_error(path, nearest)),
        [first, second, ..] => {
            return Err(EditError::new(
                second.1.value.line(),
                format!(
                    "key path `{path}` is found in {} documents of the file (lines {} and {})",
                    found.len(),
                    first.1.value.line(),
                    second.1.value.line()
                ),
                "make the path lead to one document, or move the value into its own file",
            ));
        }
    };
    let Node::Scalar(scalar) = target.value else {
        return Err(EditError::new(
            target.value.line(),
            format!(
                "key path `{path}` leads to {}, not to a value",
                target.value.kind_name()
            ),
            "extend the path down to the one-line value to set, such as `image.tag`",
        ));
    };
    let reads_back = scalar.style != Style::Plain || scalar::plain_is_safe(value);
    if scalar.value == value && !scalar.tagged && reads_back {
        return Ok(ValueEdit {
            text: source.to_string(),
            old: scalar.value.clone(),
            changed: false,
        });
    }
    let splice = splice_for(source, &target, path, value)?;
    let text = yaml::apply(source, &[splice])
        .ok_or_else(|| EditError::new(None, "the edit overlaps itself", "please report this"))?;
    let assignment = Assignment {
        doc: index,
        steps: path.steps.clone(),
        value: value.to_string(),
    };
    verify(source, &text, &[assignment], &format!("`{path}`"))?;
    Ok(ValueEdit {
        text,
        old: scalar.value.clone(),
        changed: true,
    })
}

/// The node a path leads to, and the key it stands under (when it is a mapping's value).
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    pub key: Option<&'a Node>,
    pub value: &'a Node,
}

/// How far a path got in one document.
struct Missing {
    /// Steps that were found.
    depth: usize,
    line: usize,
    what: String,
}

fn locate<'a>(root: &'a Node, path: &KeyPath) -> Result<Target<'a>, Missing> {
    let mut here = Target {
        key: None,
        value: root,
    };
    for (depth, step) in path.steps.iter().enumerate() {
        let shown = shown_prefix(path, depth);
        let missing = |what: String| Missing {
            depth,
            line: line_of(here.value),
            what,
        };
        here = match (step, here.value) {
            (Step::Key(key), Node::Map(map)) => {
                let mut hits = map.entries.iter().filter(|(k, _)| k.as_str() == Some(key));
                let Some((k, v)) = hits.next() else {
                    return Err(missing(format!("{shown} has no key `{key}`")));
                };
                if hits.next().is_some() {
                    return Err(missing(format!(
                        "{shown} has the key `{key}` twice, so which one is meant is unclear"
                    )));
                }
                Target {
                    key: Some(k),
                    value: v,
                }
            }
            (Step::Index(i), Node::Seq(seq)) => match seq.items.get(*i) {
                Some(item) => Target {
                    key: None,
                    value: item,
                },
                None => {
                    return Err(missing(format!(
                        "{shown} has {} item(s), no [{i}]",
                        seq.items.len()
                    )));
                }
            },
            (Step::Match { field, value }, Node::Seq(seq)) => {
                let hits: Vec<&Node> = seq
                    .items
                    .iter()
                    .filter(|item| match item {
                        Node::Map(m) => m.get(field).and_then(|(_, v)| v.as_str()) == Some(value),
                        _ => false,
                    })
                    .collect();
                match hits.as_slice() {
                    [one] => Target {
                        key: None,
                        value: one,
                    },
                    [] => {
                        return Err(missing(format!(
                            "{shown} has no item whose `{field}` is `{value}`"
                        )));
                    }
                    [..] => {
                        return Err(missing(format!(
                            "{shown} has {} items whose `{field}` is `{value}`",
                            hits.len()
                        )));
                    }
                }
            }
            (Step::Key(key), node) => {
                return Err(missing(format!(
                    "{shown} is {}, which has no key `{key}`",
                    node.kind_name()
                )));
            }
            (_, node) => {
                return Err(missing(format!(
                    "{shown} is {}, not a list",
                    node.kind_name()
                )));
            }
        };
        if matches!(here.value, Node::Alias(_)) {
            return Err(Missing {
                depth: depth + 1,
                line: here.value.line(),
                what: format!("{} is an alias (`*name`)", shown_prefix(path, depth + 1)),
            });
        }
    }
    Ok(here)
}

/// The line a node starts on; a block mapping's own marker may point past it.
fn line_of(node: &Node) -> usize {
    match node {
        Node::Map(map) => map.start_line(),
        other => other.line(),
    }
}

/// The first `depth` steps of the path as people wrote them: "the document" for none.
fn shown_prefix(path: &KeyPath, depth: usize) -> String {
    if depth == 0 {
        return "the document".into();
    }
    format!("`{}`", render_steps(&path.steps[..depth]))
}

/// Steps written as a path, quoting keys that need it.
fn render_steps(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if k.is_empty() || k.contains(['.', '[', ']', '\'', '"']) {
                    out.push_str(&format!("'{}'", k.replace('\'', "''")));
                } else {
                    out.push_str(k);
                }
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Match { field, value } => out.push_str(&format!("[{field}={value}]")),
        }
    }
    out
}

fn missing_error(path: &KeyPath, nearest: Option<Missing>) -> EditError {
    let hint = "check the path (keys are matched exactly, lists by [index] or [field=value]); tomoda-promote sets existing values and never creates keys";
    match nearest {
        Some(m) => EditError::new(m.line, format!("key path `{path}`: {}", m.what), hint),
        None => EditError::new(
            None,
            format!("key path `{path}`: the file holds no YAML document"),
            hint,
        ),
    }
}

fn not_editable(node: &Node, path: &KeyPath) -> EditError {
    EditError::new(
        node.line(),
        format!("cannot set `{path}`: its value is not a one-line string"),
        "write it as `key: value` on one line, without tags or block scalars",
    )
}

pub(crate) fn splice_for(
    source: &str,
    target: &Target,
    path: &KeyPath,
    new: &str,
) -> Result<Splice, EditError> {
    scalar::splice_value(source, target.key, target.value, new)
        .ok_or_else(|| not_editable(target.key.unwrap_or(target.value), path))
}

/// One value set at a path of one document, as the re-parse check expects it.
pub(crate) struct Assignment {
    pub doc: usize,
    pub steps: Vec<Step>,
    pub value: String,
}

/// The re-parse check: the edited text, read as data, equals the original with exactly
/// these values set; anything else means the splice went wrong, and nothing is written.
pub(crate) fn verify(
    old: &str,
    new: &str,
    assignments: &[Assignment],
    what: &str,
) -> Result<(), EditError> {
    let refused = |why: &str| {
        EditError::new(
            None,
            format!("refusing to set {what}: the re-parsed result {why}; nothing was changed"),
            "an anchor shared with other keys, or a file this check does not understand; set the value by hand, or report it",
        )
    };
    let load =
        |text: &str| YamlLoader::load_from_str(text.strip_prefix('\u{feff}').unwrap_or(text));
    let mut expected = load(old).map_err(|_| refused("of the original failed"))?;
    let actual = load(new).map_err(|_| refused("is not valid YAML"))?;
    for a in assignments {
        let slot = expected
            .get_mut(a.doc)
            .and_then(|root| data_at(root, &a.steps))
            .ok_or_else(|| refused("does not hold the path"))?;
        *slot = Yaml::String(a.value.clone());
    }
    let same = expected.len() == actual.len()
        && expected
            .iter()
            .zip(&actual)
            .all(|(a, b)| yaml::same_data(a, b));
    if same {
        Ok(())
    } else {
        Err(refused("differs from the original by more than that value"))
    }
}

/// The value at `steps` in loaded data; keys written as numbers or booleans match their text.
fn data_at<'a>(node: &'a mut Yaml, steps: &[Step]) -> Option<&'a mut Yaml> {
    let Some((step, rest)) = steps.split_first() else {
        return Some(node);
    };
    let next = match (step, node) {
        (Step::Key(key), Yaml::Hash(map)) => map
            .iter_mut()
            .find(|(k, _)| scalar_text(k).as_deref() == Some(key.as_str()))
            .map(|(_, v)| v)?,
        (Step::Index(i), Yaml::Array(items)) => items.get_mut(*i)?,
        (Step::Match { field, value }, Yaml::Array(items)) => items.iter_mut().find(|item| {
            matches!(item, Yaml::Hash(m) if m.get(&Yaml::String(field.clone())).and_then(scalar_text).as_deref() == Some(value.as_str()))
        })?,
        _ => return None,
    };
    data_at(next, rest)
}

fn scalar_text(node: &Yaml) -> Option<String> {
    match node {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> KeyPath {
        KeyPath::parse(text).unwrap()
    }

    fn set(source: &str, p: &str, value: &str) -> Result<ValueEdit, EditError> {
        set_value(source, &path(p), value)
    }

    #[test]
    fn paths_address_keys_indexes_field_matches_and_quoted_keys() {
        let key = |k: &str| Step::Key(k.into());
        assert_eq!(path("image.tag").steps, [key("image"), key("tag")]);
        assert_eq!(
            path("spec.containers[0].image").steps,
            [key("spec"), key("containers"), Step::Index(0), key("image")]
        );
        assert_eq!(
            path("containers[name=api].image").steps,
            [
                key("containers"),
                Step::Match {
                    field: "name".into(),
                    value: "api".into()
                },
                key("image")
            ]
        );
        assert_eq!(path("'a.b'.c").steps, [key("a.b"), key("c")]);
        assert_eq!(path("\"a.b\".c").steps, [key("a.b"), key("c")]);
        assert_eq!(path("'it''s'").steps, [key("it's")]);
        assert_eq!(path("[1].x").steps, [Step::Index(1), key("x")]);
        assert_eq!(path("image.tag").to_string(), "image.tag");
    }

    #[test]
    fn malformed_paths_say_what_is_wrong() {
        let error = |text: &str| KeyPath::parse(text).unwrap_err().to_string();
        assert_eq!(error(""), "the key path is empty");
        assert!(error("a..b").contains("empty key"), "{}", error("a..b"));
        assert!(error("a.").contains("ends with a `.`"));
        assert!(error("a[0").contains("without its `]`"));
        assert!(error("a[x]").contains("neither an index"));
        assert!(error("a[=x]").contains("empty side"));
        assert!(error("'a.b").contains("closing"));
        assert!(error("a[0]b").contains("needs a `.`"));
    }

    const VALUES: &str = "# identity service, dev\nreplicaCount: 1\n\nimage:\n  repository: asia-east1-docker.pkg.dev/p/r/identity  # pushed by CI\n  tag: \"4.99.10.0-wecare\"   # bumped by CI\n  pullPolicy: IfNotPresent\n";

    #[test]
    fn a_helm_value_changes_alone_and_keeps_its_quotes_and_comments() {
        let edit = set(VALUES, "image.tag", "4.99.11.0-wecare").unwrap();
        assert_eq!(
            edit.text,
            VALUES.replace("\"4.99.10.0-wecare\"", "\"4.99.11.0-wecare\"")
        );
        assert_eq!(
            (edit.old.as_str(), edit.changed),
            ("4.99.10.0-wecare", true)
        );
        let again = set(&edit.text, "image.tag", "4.99.11.0-wecare").unwrap();
        assert!(!again.changed, "a second run changes nothing");
        assert_eq!(again.text, edit.text);
    }

    #[test]
    fn a_plain_value_is_quoted_only_where_yaml_would_read_another_type() {
        let plain = set("image:\n  tag: v1\n", "image.tag", "v2").unwrap();
        assert_eq!(plain.text, "image:\n  tag: v2\n");
        let number = set("image:\n  tag: v1\n", "image.tag", "1.10").unwrap();
        assert_eq!(number.text, "image:\n  tag: \"1.10\"\n");
        // `1.10` written plain is the float 1.1 to a YAML reader: not up to date.
        let float = set("image:\n  tag: 1.10\n", "image.tag", "1.10").unwrap();
        assert_eq!(
            (float.text.as_str(), float.changed),
            ("image:\n  tag: \"1.10\"\n", true)
        );
    }

    #[test]
    fn an_empty_value_is_filled_after_its_colon() {
        let edit = set("image:\n  tag: # set by CI\n  x: 1\n", "image.tag", "v2").unwrap();
        assert_eq!(edit.text, "image:\n  tag: v2 # set by CI\n  x: 1\n");
        let crlf = set("image:\r\n  tag:\r\n", "image.tag", "v2").unwrap();
        assert_eq!(crlf.text, "image:\r\n  tag: v2\r\n");
    }

    const MANIFEST: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: api}\n---\napiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: sidecar\n          image: envoy:1.29\n        - name: api\n          image: 'reg.io/acme/api:v1'\n";

    #[test]
    fn a_field_match_finds_the_container_in_its_document() {
        let edit = set(
            MANIFEST,
            "spec.template.spec.containers[name=api].image",
            "reg.io/acme/api:v2",
        )
        .unwrap();
        assert_eq!(edit.text, MANIFEST.replace("api:v1'", "api:v2'"));
        let by_index = set(
            MANIFEST,
            "spec.template.spec.containers[0].image",
            "envoy:1.30",
        )
        .unwrap();
        assert_eq!(by_index.text, MANIFEST.replace("envoy:1.29", "envoy:1.30"));
    }

    #[test]
    fn a_missing_part_is_named_with_its_line_and_nothing_is_created() {
        let e = set(VALUES, "image.tags", "v2").unwrap_err();
        assert_eq!(e.line, Some(5));
        assert_eq!(
            e.message,
            "key path `image.tags`: `image` has no key `tags`"
        );
        assert!(e.hint.contains("never creates keys"), "{}", e.hint);
        let e = set(VALUES, "images.tag", "v2").unwrap_err();
        assert_eq!(
            e.message,
            "key path `images.tag`: the document has no key `images`"
        );
        let e = set(
            MANIFEST,
            "spec.template.spec.containers[name=web].image",
            "x",
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "key path `spec.template.spec.containers[name=web].image`: `spec.template.spec.containers` has no item whose `name` is `web`"
        );
        let e = set(MANIFEST, "spec.template.spec.containers[5].image", "x").unwrap_err();
        assert!(
            e.message.ends_with("has 2 item(s), no [5]"),
            "{}",
            e.message
        );
    }

    #[test]
    fn ambiguous_or_uneditable_targets_are_refused() {
        let twice = "a: 1\n---\na: 2\n";
        assert!(
            set(twice, "a", "3")
                .unwrap_err()
                .message
                .contains("2 documents")
        );
        let block = "a: |\n  text\n";
        assert!(
            set(block, "a", "x")
                .unwrap_err()
                .message
                .contains("not a one-line string")
        );
        let map = "image:\n  tag: v1\n";
        assert!(
            set(map, "image", "x")
                .unwrap_err()
                .message
                .contains("leads to a mapping")
        );
        let duplicate = "image:\n  tag: v1\n  tag: v2\n";
        assert!(
            set(duplicate, "image.tag", "x")
                .unwrap_err()
                .message
                .contains("twice")
        );
        // An anchored value shared by an alias would change in two places.
        let shared = "base: &t v1\nimage:\n  tag: *t\nother: *t\n";
        assert!(
            set(shared, "image.tag", "v2")
                .unwrap_err()
                .message
                .contains("alias")
        );
        let anchored = "image:\n  tag: &t v1\nother: *t\n";
        assert!(
            set(anchored, "image.tag", "v2")
                .unwrap_err()
                .message
                .contains("refusing to set")
        );
    }
}
