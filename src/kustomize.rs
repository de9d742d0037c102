//! The rules of a kustomization's `images:` list, as kustomize applies them: an image is
//! changed by the first entry whose `name` equals it; we merge new values into that entry
//! (a tag change keeps `newName`), append an entry only when none exists, and refuse any
//! edit whose re-parsed result differs from the original by more than the intended values.

use std::collections::HashSet;

use yaml_rust2::{Yaml, YamlLoader};

use crate::yaml::tree::{self, Map, Node, Seq, Style};
use crate::yaml::{self, Splice, scalar};

/// The file names kustomize looks for in a directory, in its order.
pub const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// What to set for one image; `None` leaves a field as the file has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub name: String,
    pub new_name: Option<String>,
    pub new_tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    NewName,
    NewTag,
    Digest,
}

impl Field {
    pub const ALL: [Field; 3] = [Field::NewName, Field::NewTag, Field::Digest];

    pub fn key(self) -> &'static str {
        match self {
            Field::NewName => "newName",
            Field::NewTag => "newTag",
            Field::Digest => "digest",
        }
    }
}

/// One value that changes; `old` is `None` for a field that was absent, `new` is `None`
/// for a field that is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub image: String,
    pub field: Field,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// Why an edit was refused. The caller knows the file; this knows the line and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditError {
    pub line: Option<usize>,
    pub message: String,
    pub hint: String,
}

impl EditError {
    fn new(
        line: impl Into<Option<usize>>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        EditError {
            line: line.into(),
            message: message.into(),
            hint: hint.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    pub text: String,
    /// Empty when the file already holds the wanted values.
    pub changes: Vec<Change>,
}

/// Sets `spec` in the kustomization `source`, changing only the bytes of the values.
pub fn set_image(source: &str, spec: &ImageSpec) -> Result<Edited, EditError> {
    check_line_breaks(source)?;
    let docs = tree::parse(source).map_err(|e| {
        EditError::new(
            e.line,
            format!("invalid YAML: {}", e.message),
            "fix the YAML syntax in the devops repository; nothing was changed",
        )
    })?;
    let root = match docs.as_slice() {
        [] => None,
        [doc] => Some(&doc.root),
        [_, second, ..] => {
            return Err(EditError::new(
                second.root.line(),
                format!(
                    "holds {} YAML documents; a kustomization is one document",
                    docs.len()
                ),
                "remove the extra `---` documents",
            ));
        }
    };
    let root = match root {
        Some(Node::Map(map)) => Some(map),
        None => None,
        // An empty document: `images:` can be written into it.
        Some(Node::Scalar(s)) if s.value.is_empty() && !s.tagged && s.style == Style::Plain => None,
        // `~` or `null` written out: anything appended would follow a finished scalar.
        Some(node) if node.is_null() => {
            return Err(EditError::new(
                node.line(),
                "the document is `null`, not a mapping of kustomization fields",
                "replace the null with the kustomization's fields, such as `resources:` and `images:`",
            ));
        }
        Some(node) => {
            return Err(EditError::new(
                node.line(),
                format!(
                    "the top level is {}, not a mapping of kustomization fields",
                    node.kind_name()
                ),
                "a kustomization starts with keys such as `resources:` and `images:`",
            ));
        }
    };
    if let Some(map) = root {
        check_duplicate_keys(map)?;
    }

    let editor = Editor {
        src: source,
        eol: yaml::line_ending(source),
        spec,
    };
    let (splices, changes) = editor.plan(root)?;
    if changes.is_empty() {
        return Ok(Edited {
            text: source.to_string(),
            changes,
        });
    }
    let text = yaml::apply(source, &splices).ok_or_else(|| internal("overlapping edits"))?;
    verify(source, &text, spec, &changes)?;
    Ok(Edited { text, changes })
}

struct Editor<'a> {
    src: &'a str,
    eol: &'static str,
    spec: &'a ImageSpec,
}

impl Editor<'_> {
    fn plan(&self, root: Option<&Map>) -> Result<(Vec<Splice>, Vec<Change>), EditError> {
        let images = root.and_then(|m| m.get("images"));
        let Some((key, value)) = images else {
            return self.add_images_key(root);
        };
        if let Node::Seq(seq) = value {
            check_plain_images(seq)?;
            if let Some(entry) = self.find_entry(seq)? {
                return self.merge(entry);
            }
            return self.append(seq);
        }
        if value.is_null() {
            return self.fill_empty_images(root, key, value);
        }
        Err(EditError::new(
            value.line(),
            format!(
                "`images:` is {}, expected a list of entries",
                value.kind_name()
            ),
            "write `images:` as a list: `- name: <image>` with `newTag:` under it",
        ))
    }

    /// The first entry kustomize would apply to the image: the one whose `name` equals it.
    fn find_entry<'s>(&self, seq: &'s Seq) -> Result<Option<&'s Map>, EditError> {
        let mut found: Option<&Map> = None;
        for item in &seq.items {
            let Node::Map(map) = item else {
                return Err(EditError::new(
                    item.line(),
                    format!(
                        "an `images:` entry is {}, expected a mapping with `name:`",
                        item.kind_name()
                    ),
                    "write each entry as `- name: <image>` with `newTag:` under it",
                ));
            };
            if map.get("name").and_then(|(_, v)| v.as_str()) != Some(self.spec.name.as_str()) {
                continue;
            }
            match found {
                None => found = Some(map),
                // kustomize applies every entry in turn: the second one wins unless the
                // first renamed the image. Editing either could change nothing rendered.
                Some(first) => {
                    return Err(EditError::new(
                        map.start_line(),
                        format!(
                            "a second `images:` entry for {} (the first is at line {}); kustomize applies both, in order",
                            self.spec.name,
                            first.start_line()
                        ),
                        "remove one of the two entries",
                    ));
                }
            }
        }
        Ok(found)
    }

    /// What each field should become: `Some(Some(v))` set, `Some(None)` remove.
    fn wanted(&self, current: impl Fn(Field) -> Option<String>) -> Vec<Change> {
        let spec = self.spec;
        let mut changes = Vec::new();
        let mut want = |field: Field, new: Option<String>| {
            let old = current(field);
            if old != new {
                changes.push(Change {
                    image: spec.name.clone(),
                    field,
                    old,
                    new,
                });
            }
        };
        if let Some(name) = &spec.new_name {
            want(Field::NewName, Some(name.clone()));
        }
        if let Some(tag) = &spec.new_tag {
            want(Field::NewTag, Some(tag.clone()));
        }
        match (&spec.digest, &spec.new_tag) {
            (Some(digest), _) => want(Field::Digest, Some(digest.clone())),
            // An old digest would keep pinning the old image under the new tag.
            (None, Some(_)) => want(Field::Digest, None),
            (None, None) => {}
        }
        changes
    }

    fn merge(&self, entry: &Map) -> Result<(Vec<Splice>, Vec<Change>), EditError> {
        let changes = self.wanted(|field| {
            entry.get(field.key()).and_then(|(_, v)| {
                (!v.is_null())
                    .then(|| v.as_str().map(str::to_string))
                    .flatten()
            })
        });
        let mut splices = Vec::new();
        let mut additions = Vec::new();
        for change in &changes {
            let existing = entry
                .entries
                .iter()
                .position(|(k, _)| k.as_str() == Some(change.field.key()));
            match (existing, &change.new) {
                (Some(i), Some(new)) => splices.push(self.replace_value(entry, i, new)?),
                (Some(i), None) => splices.push(self.remove_entry(entry, i)?),
                (None, Some(new)) => additions.push((change.field, new.as_str())),
                (None, None) => {}
            }
        }
        if !additions.is_empty() {
            splices.push(self.add_fields(entry, &additions)?);
        }
        Ok((splices, changes))
    }

    fn replace_value(&self, map: &Map, index: usize, new: &str) -> Result<Splice, EditError> {
        let (key, value) = &map.entries[index];
        let Node::Scalar(s) = value else {
            return Err(not_editable(key, value));
        };
        if s.tagged || s.style == Style::Block {
            return Err(not_editable(key, value));
        }
        match s.end {
            Some(end) if !self.src[s.start.offset..end].contains(['\n', '\r']) => Ok(
                Splice::replace(s.start.offset..end, scalar::render(new, s.style)),
            ),
            Some(_) => Err(not_editable(key, value)),
            // `newTag:` with nothing after it: write the value after the colon.
            None if value.is_null() => {
                let colon = self.colon_after(key)?;
                Ok(Splice::insert(
                    colon + 1,
                    format!(" {}", scalar::render(new, Style::Plain)),
                ))
            }
            None => Err(not_editable(key, value)),
        }
    }

    fn remove_entry(&self, map: &Map, index: usize) -> Result<Splice, EditError> {
        let (key, value) = &map.entries[index];
        let key_start = key.start().offset;
        let value_end = self.node_end(key, value)?;
        let next_key = map.entries.get(index + 1).map(|(k, _)| k.start().offset);
        if map.flow {
            return Ok(match (index, next_key) {
                (0, Some(next)) => Splice::remove(key_start..next),
                (0, None) => Splice::remove(key_start..value_end),
                (_, _) => {
                    let prev = &map.entries[index - 1];
                    Splice::remove(self.node_end(&prev.0, &prev.1)?..value_end)
                }
            });
        }
        let line = yaml::line_start(self.src, key_start);
        let first_on_its_line = !self.src[line..key_start].trim().is_empty();
        match next_key {
            // `- digest: …` then `  name: …`: pull the next key up onto the dash line.
            Some(next) if first_on_its_line => Ok(Splice::remove(key_start..next)),
            _ if first_on_its_line => Err(EditError::new(
                key.line(),
                format!(
                    "cannot remove `{}` from an entry that holds nothing else",
                    key_display(key)
                ),
                "edit the entry by hand",
            )),
            _ => Ok(Splice::remove(line..yaml::next_line(self.src, value_end))),
        }
    }

    fn add_fields(&self, map: &Map, fields: &[(Field, &str)]) -> Result<Splice, EditError> {
        let (last_key, last_value) = map.entries.last().ok_or_else(|| internal("empty entry"))?;
        let last_end = self.node_end(last_key, last_value)?;
        if map.flow {
            let text: String = fields
                .iter()
                .map(|(f, v)| format!(", {}: {}", f.key(), scalar::render(v, Style::Plain)))
                .collect();
            return Ok(Splice::insert(last_end, text));
        }
        let indent = " ".repeat(self.key_column(map)?);
        let at = yaml::next_line(self.src, last_end);
        let mut text = self.break_before(at);
        for (field, value) in fields {
            text.push_str(&format!(
                "{indent}{}: {}{}",
                field.key(),
                scalar::render(value, Style::Plain),
                self.eol
            ));
        }
        Ok(Splice::insert(at, text))
    }

    fn new_entry_fields(&self) -> Vec<(&'static str, &str)> {
        let spec = self.spec;
        let mut fields = vec![("name", spec.name.as_str())];
        fields.extend(spec.new_name.as_deref().map(|v| ("newName", v)));
        fields.extend(spec.new_tag.as_deref().map(|v| ("newTag", v)));
        fields.extend(spec.digest.as_deref().map(|v| ("digest", v)));
        fields
    }

    fn new_entry_changes(&self) -> Vec<Change> {
        self.wanted(|_| None)
    }

    fn flow_entry(&self) -> String {
        let fields: Vec<String> = self
            .new_entry_fields()
            .iter()
            .map(|(k, v)| format!("{k}: {}", scalar::render(v, Style::Plain)))
            .collect();
        format!("{{{}}}", fields.join(", "))
    }

    /// A block entry whose dash is at column `dash` and whose keys are at column `key`.
    fn block_entry(&self, dash: usize, key: usize) -> String {
        let mut text = String::new();
        for (i, (k, v)) in self.new_entry_fields().iter().enumerate() {
            let lead = if i == 0 {
                // `-  name:` when the file's entries put their keys further from the dash.
                let gap = key.saturating_sub(dash + 1).max(1);
                format!("{}-{}", " ".repeat(dash), " ".repeat(gap))
            } else {
                " ".repeat(key.max(dash + 2))
            };
            text.push_str(&format!(
                "{lead}{k}: {}{}",
                scalar::render(v, Style::Plain),
                self.eol
            ));
        }
        text
    }

    fn append(&self, seq: &Seq) -> Result<(Vec<Splice>, Vec<Change>), EditError> {
        let changes = self.new_entry_changes();
        let last = seq.items.last();
        if seq.flow {
            let splice = match last {
                None => Splice::insert(seq.end, self.flow_entry()),
                Some(item) => {
                    Splice::insert(self.item_end(item)?, format!(", {}", self.flow_entry()))
                }
            };
            return Ok((vec![splice], changes));
        }
        let last = last.ok_or_else(|| internal("empty block sequence"))?;
        let at = yaml::next_line(self.src, self.item_end(last)?);
        let (dash, key) = self.item_indents(last)?;
        let mut text = self.break_before(at);
        if matches!(last, Node::Map(m) if m.flow) {
            text.push_str(&format!(
                "{}- {}{}",
                " ".repeat(dash),
                self.flow_entry(),
                self.eol
            ));
        } else {
            text.push_str(&self.block_entry(dash, key));
        }
        Ok((vec![Splice::insert(at, text)], changes))
    }

    /// `images:` with no value: the entry goes on the lines below it.
    fn fill_empty_images(
        &self,
        root: Option<&Map>,
        key: &Node,
        value: &Node,
    ) -> Result<(Vec<Splice>, Vec<Change>), EditError> {
        let mut splices = Vec::new();
        let colon = self.colon_after(key)?;
        if let Node::Scalar(tree::Scalar { end: Some(end), .. }) = value {
            // `images: ~` or `images: null`
            splices.push(Splice::remove(colon + 1..*end));
        }
        let at = yaml::next_line(self.src, colon);
        let base = yaml::column(self.src, key.start().offset);
        let dash = base + root.map_or(0, |r| self.sequence_indent(r));
        let mut text = self.break_before(at);
        text.push_str(&self.block_entry(dash, dash + 2));
        splices.push(Splice::insert(at, text));
        Ok((splices, self.new_entry_changes()))
    }

    fn add_images_key(&self, root: Option<&Map>) -> Result<(Vec<Splice>, Vec<Change>), EditError> {
        if let Some(map) = root.filter(|m| m.flow) {
            return Err(EditError::new(
                map.start_line(),
                "the kustomization is written in flow style (`{ … }`) and has no `images:`",
                "write the kustomization in block style, or add `images: []` to it",
            ));
        }
        let base = match root {
            Some(map) => self.key_column(map)?,
            None => 0,
        };
        let dash = base + root.map_or(0, |r| self.sequence_indent(r));
        let at = document_end(self.src);
        let mut text = self.break_before(at);
        text.push_str(&format!("{}images:{}", " ".repeat(base), self.eol));
        text.push_str(&self.block_entry(dash, dash + 2));
        Ok((vec![Splice::insert(at, text)], self.new_entry_changes()))
    }

    /// The column of a block mapping's keys: that of a key that begins its line, or of a
    /// first key after `- `. After a tag or an anchor the column is not the mapping's.
    fn key_column(&self, map: &Map) -> Result<usize, EditError> {
        let before = |k: &Node| {
            let at = k.start().offset;
            self.src[yaml::line_start(self.src, at)..at].trim_start_matches('\u{feff}')
        };
        let column = |k: &Node| yaml::column(self.src, k.start().offset);
        if let Some((k, _)) = map
            .entries
            .iter()
            .find(|(k, _)| before(k).trim().is_empty())
        {
            return Ok(column(k));
        }
        match map.entries.first() {
            None => Ok(0),
            Some((k, _)) if before(k).chars().all(|c| c == ' ' || c == '-') => Ok(column(k)),
            Some((k, _)) => Err(EditError::new(
                k.line(),
                "cannot tell the indentation of this mapping: a tag or an anchor comes before its first key",
                "put the first key on a line of its own",
            )),
        }
    }

    /// How far the file indents a block list under its key (`resources:` then `- x`):
    /// 0 or 2, taken from the first top-level block list; kustomize itself writes 0.
    fn sequence_indent(&self, root: &Map) -> usize {
        root.entries
            .iter()
            .find_map(|(k, v)| match v {
                Node::Seq(s) if !s.flow && !s.items.is_empty() => {
                    let (dash, _) = self.item_indents(&s.items[0]).ok()?;
                    Some(dash.saturating_sub(yaml::column(self.src, k.start().offset)))
                }
                _ => None,
            })
            .unwrap_or(0)
    }

    /// The columns of an item's dash and of its content.
    fn item_indents(&self, item: &Node) -> Result<(usize, usize), EditError> {
        let content = match item {
            Node::Map(m) if !m.flow => m
                .entries
                .first()
                .map_or(item.start().offset, |(k, _)| k.start().offset),
            _ => item.start().offset,
        };
        // A key after `- &anchor ` or `- !tag ` is not at the column of the entry's keys.
        let key_col = match item {
            Node::Map(m) if !m.flow => self.key_column(m)?,
            _ => yaml::column(self.src, content),
        };
        let before = &self.src[yaml::line_start(self.src, content)..content];
        let before = before.strip_prefix('\u{feff}').unwrap_or(before);
        let lead = before.len() - before.trim_start().len();
        Ok(match before.trim_start().starts_with('-') {
            true => (lead, key_col),
            false => (key_col.saturating_sub(2), key_col),
        })
    }

    /// A line break to write first when the insertion point ends a last line that has none.
    fn break_before(&self, at: usize) -> String {
        if at > 0 && !self.src[..at].ends_with('\n') {
            self.eol.to_string()
        } else {
            String::new()
        }
    }

    fn colon_after(&self, key: &Node) -> Result<usize, EditError> {
        let Node::Scalar(tree::Scalar { end: Some(end), .. }) = key else {
            return Err(not_editable(key, key));
        };
        let rest = &self.src[*end..];
        let skip = rest.len() - rest.trim_start_matches([' ', '\t']).len();
        match rest[skip..].starts_with(':') {
            true => Ok(end + skip),
            false => Err(not_editable(key, key)),
        }
    }

    /// One past the last byte of `value` (of the entry with `key`).
    fn node_end(&self, key: &Node, value: &Node) -> Result<usize, EditError> {
        match value {
            v if v.is_null() && matches!(v, Node::Scalar(s) if s.end.is_none()) => {
                self.colon_after(key).map(|c| c + 1)
            }
            other => self.item_end(other).map_err(|_| not_editable(key, value)),
        }
    }

    fn item_end(&self, node: &Node) -> Result<usize, EditError> {
        let unknown = || {
            EditError::new(
                node.line(),
                "cannot tell where this value ends (a block or multi-line scalar)",
                "write the `images:` entries with one-line values",
            )
        };
        match node {
            Node::Scalar(s) => s.end.ok_or_else(unknown),
            Node::Map(m) if m.flow => Ok(m.end + 1),
            Node::Seq(s) if s.flow => Ok(s.end + 1),
            Node::Map(m) => m
                .entries
                .last()
                .map_or_else(|| Err(unknown()), |(k, v)| self.node_end(k, v)),
            Node::Seq(s) => s
                .items
                .last()
                .map_or_else(|| Err(unknown()), |i| self.item_end(i)),
            Node::Alias(_) => Err(unknown()),
        }
    }
}

fn key_display(key: &Node) -> &str {
    key.as_str().unwrap_or("?")
}

/// Names the key's line: a block scalar's own position is the line after its `|`.
fn not_editable(key: &Node, _value: &Node) -> EditError {
    EditError::new(
        key.line(),
        format!(
            "cannot edit `{}`: its value is not a one-line string",
            key_display(key)
        ),
        "write it as `key: value` on one line, without tags or block scalars",
    )
}

fn internal(what: &str) -> EditError {
    EditError::new(
        None,
        format!("internal error while editing ({what}); nothing was changed"),
        "please report this with the kustomization file attached",
    )
}

/// Where the document's content ends: at a `...` end marker, or at the end of the text.
/// Whatever is written after the marker would start a second document.
fn document_end(src: &str) -> usize {
    let mut offset = 0;
    for line in src.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("...")
            && (rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
        {
            return offset;
        }
        offset += line.len();
    }
    src.len()
}

/// A lone CR is a line break to YAML but not to the editor, which finds lines by LF: it
/// would splice at the wrong places. Such files (classic Mac line endings) are refused.
fn check_line_breaks(source: &str) -> Result<(), EditError> {
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
fn check_plain_images(seq: &Seq) -> Result<(), EditError> {
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
fn check_duplicate_keys(map: &Map) -> Result<(), EditError> {
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

/// Re-parses the edited text and checks it equals the original with exactly the intended
/// change applied; anything else means the splice went wrong, and nothing is written.
fn verify(old: &str, new: &str, spec: &ImageSpec, changes: &[Change]) -> Result<(), EditError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = "asia-east1-docker.pkg.dev/p/dev-repo/backend";

    fn tag(t: &str) -> ImageSpec {
        ImageSpec {
            name: IMAGE.into(),
            new_name: None,
            new_tag: Some(t.into()),
            digest: None,
        }
    }

    fn edit(src: &str, spec: &ImageSpec) -> String {
        set_image(src, spec).expect("edit succeeds").text
    }

    #[test]
    fn a_tag_change_touches_only_the_value_and_keeps_new_name() {
        let src = "# overlay\r\nimages:\r\n  - name: asia-east1-docker.pkg.dev/p/dev-repo/backend   # the API\r\n    newName: reg/x  # ü\r\n    newTag: \"0a1b2c3\"   # set by CI\r\n\r\nresources: [../../base]\r\n";
        let out = edit(src, &tag("v1.2.3"));
        assert_eq!(out, src.replace("\"0a1b2c3\"", "\"v1.2.3\""));
    }

    #[test]
    fn a_number_like_tag_gets_quotes_where_the_old_one_had_none() {
        let src = format!("images:\n- name: {IMAGE}\n  newTag: v1\n");
        assert_eq!(
            edit(&src, &tag("1234567")),
            format!("images:\n- name: {IMAGE}\n  newTag: \"1234567\"\n")
        );
        let single = format!("images:\n- name: {IMAGE}\n  newTag: 'v1'\n");
        assert_eq!(
            edit(&single, &tag("1.10")),
            single.replace("'v1'", "'1.10'")
        );
    }

    #[test]
    fn a_new_tag_without_a_digest_drops_the_old_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let last = format!(
            "images:\n- name: {IMAGE}\n  newTag: v1\n  digest: {digest}  # pinned\nresources: []\n"
        );
        assert_eq!(
            edit(&last, &tag("v2")),
            format!("images:\n- name: {IMAGE}\n  newTag: v2\nresources: []\n")
        );
        let first = format!("images:\n- digest: {digest}\n  name: {IMAGE}\n  newTag: v1\n");
        assert_eq!(
            edit(&first, &tag("v2")),
            format!("images:\n- name: {IMAGE}\n  newTag: v2\n")
        );
        let flow = format!("images: [{{name: {IMAGE}, digest: {digest}, newTag: v1}}]\n");
        assert_eq!(
            edit(&flow, &tag("v2")),
            format!("images: [{{name: {IMAGE}, newTag: v2}}]\n")
        );
    }

    #[test]
    fn a_digest_is_set_beside_the_tag() {
        let digest = format!("sha256:{}", "b".repeat(64));
        let src = format!("images:\n- name: {IMAGE}\n  newTag: v1\n");
        let spec = ImageSpec {
            digest: Some(digest.clone()),
            ..tag("v2")
        };
        let edited = set_image(&src, &spec).unwrap();
        assert_eq!(
            edited.text,
            format!("images:\n- name: {IMAGE}\n  newTag: v2\n  digest: {digest}\n")
        );
        assert_eq!(edited.changes.len(), 2);
    }

    #[test]
    fn missing_fields_are_added_in_the_entry_style() {
        let src = format!("images:\n  - name: {IMAGE}  # c\n    newName: x\nresources:\n  - a\n");
        assert_eq!(
            edit(&src, &tag("v2")),
            format!(
                "images:\n  - name: {IMAGE}  # c\n    newName: x\n    newTag: v2\nresources:\n  - a\n"
            )
        );
        let flow = format!("images:\n- {{ name: {IMAGE} }}\n");
        assert_eq!(
            edit(&flow, &tag("v2")),
            format!("images:\n- {{ name: {IMAGE}, newTag: v2 }}\n")
        );
        let empty_value = format!("images:\n- name: {IMAGE}\n  newTag:\n");
        assert_eq!(
            edit(&empty_value, &tag("v2")),
            format!("images:\n- name: {IMAGE}\n  newTag: v2\n")
        );
    }

    #[test]
    fn a_missing_entry_is_appended_in_the_list_style() {
        let indented = "images:\n  - name: other\n    newTag: a  # keep\n# trailing comment\n";
        assert_eq!(
            edit(indented, &tag("v2")),
            format!(
                "images:\n  - name: other\n    newTag: a  # keep\n  - name: {IMAGE}\n    newTag: v2\n# trailing comment\n"
            )
        );
        let flush = "images:\n- name: other\n  newTag: a";
        assert_eq!(
            edit(flush, &tag("v2")),
            format!("images:\n- name: other\n  newTag: a\n- name: {IMAGE}\n  newTag: v2\n")
        );
        let flow = "images: [{name: other}]\n";
        assert_eq!(
            edit(flow, &tag("v2")),
            format!("images: [{{name: other}}, {{name: {IMAGE}, newTag: v2}}]\n")
        );
        assert_eq!(
            edit("images: []\n", &tag("v2")),
            format!("images: [{{name: {IMAGE}, newTag: v2}}]\n")
        );
    }

    #[test]
    fn an_appended_entry_puts_its_keys_where_the_file_does() {
        // Found by fuzzing: with `-  newTag:` (two spaces) the new entry's keys were
        // misaligned and the result did not parse.
        let src = "images:\n-  newTag: v1\n   name: other\n";
        assert_eq!(
            edit(src, &tag("v2")),
            format!("{src}-  name: {IMAGE}\n   newTag: v2\n")
        );
    }

    #[test]
    fn new_keys_go_to_the_column_of_the_keys_that_begin_their_lines() {
        // Found by fuzzing: a tag before the first key put `images:` at that key's column.
        let src = "!tagged first: 1\nsecond: 2\n";
        assert_eq!(
            edit(src, &tag("v2")),
            format!("{src}images:\n- name: {IMAGE}\n  newTag: v2\n")
        );
        let err = set_image("!t only: 1\n", &tag("v2")).unwrap_err();
        assert!(err.message.contains("indentation"), "{err:?}");
    }

    #[test]
    fn a_lone_carriage_return_is_refused_at_its_line() {
        // Found by fuzzing: YAML breaks lines at a lone CR, the editor at LF only, so an
        // entry was appended inside a folded scalar.
        let err = set_image("a: 1\r\nb: 2\rc: 3\n", &tag("v2")).unwrap_err();
        assert_eq!(err.line, Some(2), "{err:?}");
        assert!(err.message.contains("carriage return"), "{err:?}");
        assert!(set_image("a: 1\r\n", &tag("v2")).is_ok());
    }

    #[test]
    fn a_missing_images_key_goes_before_a_document_end_marker() {
        // Found by fuzzing: `images:` was added after `...`, starting a second document.
        let src = "resources:\n- a\n...\n# after the end\n";
        assert_eq!(
            edit(src, &tag("v2")),
            format!(
                "resources:\n- a\nimages:\n- name: {IMAGE}\n  newTag: v2\n...\n# after the end\n"
            )
        );
    }

    #[test]
    fn keys_that_read_as_the_same_value_are_duplicates() {
        // Found by fuzzing: `~:` and `null:` passed the duplicate check, and the re-parse
        // check then refused the file with "please report this".
        for src in [
            "~: 1\nnull: 2\n",
            "1: a\n0x1: b\n",
            "a: 1\n\"a\": 2\n",
            ": 1\n~: 2\n",
        ] {
            let err = set_image(src, &tag("v2")).expect_err(src);
            assert!(err.message.contains("appears twice"), "{src:?}: {err:?}");
            assert_eq!(err.line, Some(2), "{src:?}");
        }
        assert!(set_image("1: a\n'1': b\n", &tag("v2")).is_ok());
    }

    #[test]
    fn two_entries_for_the_image_are_refused() {
        // Found by the hostile corpus: the first entry was edited, but `kubectl kustomize`
        // renders the second one's tag, so the promotion changed nothing.
        let src = format!(
            "images:\n- name: {IMAGE}\n  newTag: b\n- name: other\n- name: {IMAGE}\n  newTag: c\n"
        );
        let err = set_image(&src, &tag("v2")).unwrap_err();
        assert_eq!(err.line, Some(5));
        assert!(err.message.contains("the first is at line 2"), "{err:?}");
    }

    #[test]
    fn a_value_that_cannot_be_edited_is_named_at_its_key() {
        // Found by the hostile corpus: a block scalar was reported at the line after `|`.
        let src = format!("images:\n- name: {IMAGE}\n  newTag: |\n    v1\n");
        assert_eq!(set_image(&src, &tag("v2")).unwrap_err().line, Some(3));
    }

    #[test]
    fn complex_keys_are_refused() {
        // Found by fuzzing: `images:` appended after `?\n-` became part of the key.
        for src in ["?\n-", "? [a]\n: b\n", "images:\n- ? {x: 1}\n  : y\n"] {
            let err = set_image(src, &tag("v2")).expect_err(src);
            assert!(err.message.contains("complex key"), "{src:?}: {err:?}");
        }
    }

    #[test]
    fn an_entry_appended_after_an_anchored_one_lines_up_with_it() {
        // Found by fuzzing: after `- &a name: other` the new entry went to column 5.
        let src = "images:\n  - &a name: other\n    newTag: a\n";
        assert_eq!(
            edit(src, &tag("v2")),
            format!("{src}  - name: {IMAGE}\n    newTag: v2\n")
        );
        let alone = "images:\n  - &a name: other\n";
        assert!(
            set_image(alone, &tag("v2"))
                .unwrap_err()
                .message
                .contains("indentation")
        );
    }

    #[test]
    fn a_missing_images_key_is_added() {
        let src = "resources:\n  - ../../base\n";
        assert_eq!(
            edit(src, &tag("v2")),
            format!("resources:\n  - ../../base\nimages:\n  - name: {IMAGE}\n    newTag: v2\n")
        );
        let crlf_no_eol = "kind: Kustomization\r\nresources:\r\n- a";
        assert_eq!(
            edit(crlf_no_eol, &tag("v2")),
            format!(
                "kind: Kustomization\r\nresources:\r\n- a\r\nimages:\r\n- name: {IMAGE}\r\n  newTag: v2\r\n"
            )
        );
        assert_eq!(
            edit("images:\nresources:\n- a\n", &tag("v2")),
            format!("images:\n- name: {IMAGE}\n  newTag: v2\nresources:\n- a\n")
        );
        assert_eq!(
            edit("", &tag("v2")),
            format!("images:\n- name: {IMAGE}\n  newTag: v2\n")
        );
    }

    #[test]
    fn a_file_that_already_holds_the_values_is_left_alone() {
        let src = format!("images:\n- name: {IMAGE}\n  newTag: \"v2\"\n");
        let edited = set_image(&src, &tag("v2")).unwrap();
        assert!(edited.changes.is_empty());
        assert_eq!(edited.text, src);
    }

    #[test]
    fn names_match_exactly_as_kustomize_compares_them() {
        let src =
            format!("images:\n- name: {IMAGE}-worker\n  newTag: a\n- name: {IMAGE}\n  newTag: b\n");
        let edited = edit(&src, &tag("v2"));
        assert_eq!(edited, src.replacen("newTag: b", "newTag: v2", 1));
        let regexy = ImageSpec {
            name: "reg/a.b+c".into(),
            ..tag("v2")
        };
        let src = "images:\n- name: reg/aXb+c\n  newTag: a\n";
        assert!(edit(src, &regexy).contains("- name: reg/a.b+c\n  newTag: v2\n"));
    }

    #[test]
    fn unsafe_documents_are_refused_with_the_line() {
        let cases = [
            ("images:\n- name: a\n  newTag: [b\n", "invalid YAML"),
            ("images:\n- name: a\n  name: b\n", "appears twice"),
            ("a: &x {name: q}\nimages:\n- *x\n", "alias"),
            ("images: []\n---\nimages: []\n", "2 YAML documents"),
            ("- a\n", "not a mapping"),
            ("images: x\n", "expected a list"),
            ("images:\n- just-a-string\n", "expected a mapping"),
            (
                &format!("images:\n- name: {IMAGE}\n  newTag: |\n    v1\n"),
                "not a one-line string",
            ),
            (
                &format!("images:\n- name: {IMAGE}\n  newTag: !!str v1\n"),
                "not a one-line string",
            ),
        ];
        for (src, needle) in cases {
            let err = set_image(src, &tag("v2")).expect_err(src);
            assert!(err.message.contains(needle), "{src:?}: {err:?}");
            assert!(err.line.is_some(), "{src:?}: {err:?}");
        }
    }

    #[test]
    fn a_document_that_is_an_explicit_null_is_refused() {
        // Found by fuzzing: `images:` was appended after the `~`, which does not parse.
        for src in ["~\n", "\t~", "--- null\n"] {
            let err = set_image(src, &tag("v2")).expect_err(src);
            assert!(err.message.contains("`null`"), "{src:?}: {err:?}");
            assert_eq!(err.line, Some(1), "{src:?}");
        }
        assert!(set_image("!!null\n", &tag("v2")).is_err());
        for empty in ["", "# only a comment\n", "---\n", "&a\n"] {
            assert!(set_image(empty, &tag("v2")).is_ok(), "{empty:?}");
        }
    }

    #[test]
    fn tabs_bom_and_unicode_stay_byte_for_byte() {
        let src = format!(
            "\u{feff}# Überblick\timages\nimages:\n- name: {IMAGE} # 日本\n  newTag: v1\t# tab\n"
        );
        assert_eq!(
            edit(&src, &tag("v2")),
            src.replace("newTag: v1", "newTag: v2")
        );
    }
}
