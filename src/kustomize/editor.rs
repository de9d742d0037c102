//! Where the bytes go: the splices that set, add or remove an entry's values, or append an
//! entry, in the indentation, quoting and line endings the file already uses.

use super::checks::check_plain_images;
use super::{Change, EditError, Field, ImageSpec, Notice};
use crate::yaml::tree::{self, Map, Node, Seq, Style};
use crate::yaml::{self, Splice, scalar};

/// The splices of one edit, and what they change.
pub(super) struct Planned {
    pub splices: Vec<Splice>,
    pub changes: Vec<Change>,
    /// The index in `images:` of the entry that takes the values; `None` for a new entry.
    pub entry: Option<usize>,
    pub matched_by_new_name: Option<Notice>,
}

impl Planned {
    fn new_entry((splices, changes): (Vec<Splice>, Vec<Change>)) -> Planned {
        Planned {
            splices,
            changes,
            entry: None,
            matched_by_new_name: None,
        }
    }
}

/// An entry of `images:` and how it was found.
struct Found<'s> {
    index: usize,
    map: &'s Map,
    by_new_name: bool,
}

pub(super) struct Editor<'a> {
    src: &'a str,
    eol: &'static str,
    spec: &'a ImageSpec,
}

impl<'a> Editor<'a> {
    pub(super) fn new(src: &'a str, spec: &'a ImageSpec) -> Self {
        Editor {
            src,
            eol: yaml::line_ending(src),
            spec,
        }
    }

    pub(super) fn plan(&self, root: Option<&Map>) -> Result<Planned, EditError> {
        let images = root.and_then(|m| m.get("images"));
        let Some((key, value)) = images else {
            return self.add_images_key(root).map(Planned::new_entry);
        };
        if let Node::Seq(seq) = value {
            check_plain_images(seq)?;
            let Some(found) = self.find_entry(seq)? else {
                return self.append(seq).map(Planned::new_entry);
            };
            let (splices, changes) = self.merge(found.map)?;
            let matched_by_new_name = found.by_new_name.then(|| Notice {
                line: found.map.start_line(),
                message: format!(
                    "no `images:` entry is named {}; set the entry named {} instead, whose `newName` it is",
                    self.spec.name,
                    found.map.get("name").and_then(|(_, v)| v.as_str()).unwrap_or("?"),
                ),
            });
            return Ok(Planned {
                splices,
                changes,
                entry: Some(found.index),
                matched_by_new_name,
            });
        }
        if value.is_null() {
            return self
                .fill_empty_images(root, key, value)
                .map(Planned::new_entry);
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

    /// The name the entry that sets the image renders it with: its `newName`, else its
    /// `name` (which may carry a tag); `None` when no entry sets it.
    pub(super) fn pulled_name(&self, root: Option<&Map>) -> Result<Option<String>, EditError> {
        let Some((_, Node::Seq(seq))) = root.and_then(|m| m.get("images")) else {
            return Ok(None);
        };
        let Some(found) = self.find_entry(seq)? else {
            return Ok(None);
        };
        let field = |key: &str| {
            found
                .map
                .get(key)
                .map(|(_, v)| v)
                .filter(|v| !v.is_null())
                .and_then(Node::as_str)
                .filter(|v| !v.is_empty())
        };
        Ok(field("newName")
            .or_else(|| field("name"))
            .map(str::to_string))
    }

    /// The entry that sets the image: the one whose `name` equals it, as kustomize
    /// matches it; else, unless the spec renames the image, the one entry whose `newName`
    /// equals it, since CI knows the reference it pushed, not the overlay's short name.
    fn find_entry<'s>(&self, seq: &'s Seq) -> Result<Option<Found<'s>>, EditError> {
        let name = self.spec.name.as_str();
        let mut by_name: Option<Found> = None;
        let mut by_new_name = Vec::new();
        for (index, item) in seq.items.iter().enumerate() {
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
            let field = |key: &str| map.get(key).and_then(|(_, v)| v.as_str());
            if field("name") == Some(name) {
                if let Some(first) = &by_name {
                    // kustomize applies every entry in turn: the second one wins unless the
                    // first renamed the image. Editing either could change nothing rendered.
                    return Err(EditError::new(
                        map.start_line(),
                        format!(
                            "a second `images:` entry for {name} (the first is at line {}); kustomize applies both, in order",
                            first.map.start_line()
                        ),
                        "remove one of the two entries",
                    ));
                }
                by_name = Some(Found {
                    index,
                    map,
                    by_new_name: false,
                });
            } else if field("newName") == Some(name) {
                by_new_name.push(Found {
                    index,
                    map,
                    by_new_name: true,
                });
            }
        }
        if by_name.is_some() {
            return Ok(by_name);
        }
        // `name=other:tag` asks for an entry `name` that renames to `other`: a new one.
        if self.spec.new_name.as_deref().is_some_and(|n| n != name) {
            return Ok(None);
        }
        if by_new_name.len() < 2 {
            return Ok(by_new_name.pop());
        }
        let entries: Vec<String> = by_new_name
            .iter()
            .map(|f| {
                let entry_name = f.map.get("name").and_then(|(_, v)| v.as_str());
                format!(
                    "{} (line {})",
                    entry_name.unwrap_or("?"),
                    f.map.start_line()
                )
            })
            .collect();
        Err(EditError::new(
            by_new_name[1].map.start_line(),
            format!(
                "no `images:` entry is named {name}, and {} entries have it as their `newName`: {}; which one to set is unclear",
                entries.len(),
                entries.join(", ")
            ),
            "name the image by one entry's `name:` in promote.yaml (or --image)",
        ))
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
            (None, Some(_)) if !spec.keep_digest => want(Field::Digest, None),
            (None, _) => {}
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
        scalar::splice_value(self.src, Some(key), value, new)
            .ok_or_else(|| not_editable(key, value))
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
            _ => Ok(Splice::remove(self.whole_line(line, value_end))),
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
        let mut text = String::new();
        for (field, value) in fields {
            text.push_str(&format!(
                "{indent}{}: {}{}",
                field.key(),
                scalar::render(value, Style::Plain),
                self.eol
            ));
        }
        Ok(Splice::insert(at, self.lines_at(at, text)))
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
        let mut text = String::new();
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
        Ok((vec![Splice::insert(at, self.lines_at(at, text))], changes))
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
        let text = self.block_entry(dash, dash + 2);
        splices.push(Splice::insert(at, self.lines_at(at, text)));
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
        let mut text = format!("{}images:{}", " ".repeat(base), self.eol);
        text.push_str(&self.block_entry(dash, dash + 2));
        Ok((
            vec![Splice::insert(at, self.lines_at(at, text))],
            self.new_entry_changes(),
        ))
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
        Ok(if before.trim_start().starts_with('-') {
            (lead, key_col)
        } else {
            (key_col.saturating_sub(2), key_col)
        })
    }

    /// Whole `lines` (each ending in the file's line break) as they go in at `at`, a line
    /// start or the end of the text. After a last line without a line break, the break
    /// goes before them instead: the file gains exactly these lines and still ends as it
    /// did, without a final line break.
    fn lines_at(&self, at: usize, lines: String) -> String {
        if at > 0 && !self.src[..at].ends_with('\n') {
            let lines = lines.strip_suffix(self.eol).unwrap_or(&lines);
            format!("{}{lines}", self.eol)
        } else {
            lines
        }
    }

    /// The bytes of the line starting at `line` and holding `end`, with one line break:
    /// its own, or for a last line without one, the break before it, so that no empty
    /// line is left at the end of the file.
    fn whole_line(&self, line: usize, end: usize) -> std::ops::Range<usize> {
        let next = yaml::next_line(self.src, end);
        if next == self.src.len() && !self.src.ends_with('\n') && line > 0 {
            let before = &self.src[..line];
            let eol = if before.ends_with("\r\n") { 2 } else { 1 };
            line - eol..next
        } else {
            line..next
        }
    }

    fn colon_after(&self, key: &Node) -> Result<usize, EditError> {
        scalar::colon_after(self.src, key).ok_or_else(|| not_editable(key, key))
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

pub(super) fn internal(what: &str) -> EditError {
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
