//! The rules of a kustomization's `images:` list, as kustomize applies them: an image is
//! changed by the entry whose `name` equals it (or, for the reference CI pushed, by the one
//! entry whose `newName` equals it); we merge new values into that entry (a tag change
//! keeps `newName`), append an entry only when none exists, and refuse any edit whose
//! re-parsed result differs from the original by more than the intended values.
//!
//! `editor` computes the splices, `checks` refuses documents that cannot be edited safely,
//! `verify` is the re-parse check.

mod checks;
mod editor;
mod verify;

use crate::yaml;
use crate::yaml::tree::{self, Node, Style};

use editor::{Editor, internal};

/// The file names kustomize looks for in a directory, in its order.
pub const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// What to set for one image; `None` leaves a field as the file has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSpec {
    pub name: String,
    pub new_name: Option<String>,
    pub new_tag: Option<String>,
    pub digest: Option<String>,
    /// Keep the entry's digest under a new tag (`name:v2@*`, kustomize's placeholder);
    /// otherwise a new tag without a digest drops the old one.
    pub keep_digest: bool,
    /// Write the digest the registry gives the tag (`pin: digest`, `--pin-digest`).
    pub pin: bool,
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

/// A file that is not YAML cannot be edited: the parser's line, and what to do.
impl From<tree::ParseError> for EditError {
    fn from(e: tree::ParseError) -> Self {
        EditError::new(
            e.line,
            format!("invalid YAML: {}", e.message),
            "fix the YAML syntax in the devops repository; nothing was changed",
        )
    }
}

impl EditError {
    pub(crate) fn new(
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

/// Something the user should hear about an edit that went ahead, at a line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    pub text: String,
    /// Empty when the file already holds the wanted values.
    pub changes: Vec<Change>,
    /// Set when no entry's `name` was the image and one entry's `newName` was: which entry
    /// took the values (for the log, as information).
    pub matched_by_new_name: Option<Notice>,
    /// What kustomize accepts but a reader should fix, such as a key written twice outside
    /// `images:` (for the log, as warnings).
    pub warnings: Vec<Notice>,
}

/// Sets `spec` in the kustomization `source`, changing only the bytes of the values.
///
/// The entry edited is the one whose `name` is `spec.name`; failing that, unless `spec`
/// renames the image, the one entry whose `newName` is `spec.name` (the reference CI
/// pushed, when the overlay maps a short name to it); failing that, a new entry.
pub fn set_image(source: &str, spec: &ImageSpec) -> Result<Edited, EditError> {
    checks::check_line_breaks(source)?;
    let docs = tree::parse(source)?;
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
    let warnings = match root {
        Some(map) => checks::duplicate_keys(map)?,
        None => Vec::new(),
    };

    let planned = Editor::new(source, spec).plan(root)?;
    let text = if planned.changes.is_empty() {
        source.to_string()
    } else {
        let text =
            yaml::apply(source, &planned.splices).ok_or_else(|| internal("overlapping edits"))?;
        verify::verify(source, &text, spec, planned.entry, &planned.changes)?;
        text
    };
    Ok(Edited {
        text,
        changes: planned.changes,
        matched_by_new_name: planned.matched_by_new_name,
        warnings,
    })
}

/// The name the cluster pulls `spec`'s image by once the kustomization `source` applies:
/// the `newName` of the entry [`set_image`] edits, else that entry's `name` (which may
/// carry a tag). `None` when no entry sets the image.
pub fn pulled_name(source: &str, spec: &ImageSpec) -> Result<Option<String>, EditError> {
    let docs = tree::parse(source)?;
    let root = match docs.first().map(|d| &d.root) {
        Some(Node::Map(map)) => Some(map),
        _ => None,
    };
    Editor::new(source, spec).pulled_name(root)
}

#[cfg(test)]
mod tests;
