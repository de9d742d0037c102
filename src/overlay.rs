//! Applies a plan's images to one overlay of a repository snapshot. Pure but for the log:
//! the snapshot is a lookup function, backed by a git tree or by a directory at the edges.

use crate::error::{Error, Result};
use crate::kustomize::{self, Change, ImageSpec, Notice};

/// What a path is in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Missing,
    File(Vec<u8>),
    /// A symbolic link: never followed, it could point outside the repository.
    Symlink,
    Dir,
}

/// Larger than any kustomization; a bigger file is refused before it is parsed.
pub const MAX_FILE_BYTES: usize = 4 << 20;

/// The edit of one kustomization file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEdit {
    pub path: String,
    pub old: String,
    pub new: String,
    pub changes: Vec<Change>,
    /// `path:line: …` for each image set through an entry's `newName` (already logged as
    /// information by `promote_overlay`).
    pub notes: Vec<String>,
    /// `path:line: …` for what kustomize accepts but a reader should fix, such as a key
    /// written twice (already logged as warnings by `promote_overlay`).
    pub warnings: Vec<String>,
}

/// Finds the overlay's kustomization and sets every image in it, in order.
/// `place` says where the snapshot comes from (e.g. "branch main of URL"), for errors.
pub fn promote_overlay(
    lookup: impl Fn(&str) -> Entry,
    overlay: &str,
    images: &[ImageSpec],
    place: &str,
) -> Result<FileEdit> {
    let shown_overlay = if overlay.is_empty() { "." } else { overlay };
    match lookup(overlay) {
        Entry::Dir => {}
        Entry::Symlink => {
            return Err(Error::input(
                shown_overlay,
                None,
                format!("the overlay is a symbolic link in {place}"),
                "point the overlay at the real directory",
            ));
        }
        _ => {
            return Err(Error::input(
                shown_overlay,
                None,
                format!("no such overlay directory in {place}"),
                "check `overlay:` in promote.yaml (or --overlay) against the devops repository",
            ));
        }
    }
    let join = |name: &str| {
        if overlay.is_empty() {
            name.to_string()
        } else {
            format!("{overlay}/{name}")
        }
    };
    let mut present = kustomize::FILE_NAMES
        .iter()
        .map(|name| (join(name), lookup(&join(name))))
        .filter(|(_, e)| *e != Entry::Missing);
    let found = present.next();
    if let (Some((first, _)), Some((second, _))) = (&found, present.next()) {
        return Err(Error::input(
            shown_overlay,
            None,
            format!(
                "holds both {first} and {second} in {place}; kustomize refuses an overlay with more than one kustomization file"
            ),
            "keep one of them in the devops repository",
        ));
    }
    let (path, bytes) = match found {
        Some((path, Entry::File(bytes))) => (path, bytes),
        Some((path, Entry::Symlink)) => {
            return Err(Error::input(
                path,
                None,
                format!(
                    "is a symbolic link in {place}; it is not followed, it could point outside the repository"
                ),
                "replace the link with the kustomization file itself",
            ));
        }
        Some((path, _)) => {
            return Err(Error::input(
                path,
                None,
                "is not a file",
                "a kustomization must be a regular file",
            ));
        }
        None => {
            return Err(Error::input(
                shown_overlay,
                None,
                format!(
                    "no {} in this overlay in {place}",
                    kustomize::FILE_NAMES.join(", ")
                ),
                "check that the overlay directory is a Kustomize overlay",
            ));
        }
    };
    let old = decode(
        &path,
        bytes,
        "kustomizations",
        "a kustomization should list images and resources, not carry data",
    )?;
    set_images(path, old, images)
}

/// A file's text: refused when larger than [`MAX_FILE_BYTES`] (`kind` says what such files
/// are, `hint` what they should hold instead) or not UTF-8, naming the line.
pub(crate) fn decode(path: &str, bytes: Vec<u8>, kind: &str, hint: &str) -> Result<String> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Error::input(
            path,
            None,
            format!(
                "is {} bytes; {kind} over {} bytes are refused",
                bytes.len(),
                MAX_FILE_BYTES
            ),
            hint,
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + bytecount_lines(&e.as_bytes()[..at]);
        Error::input(
            path,
            Some(line),
            format!(
                "is not UTF-8 text (byte 0x{:02x} at offset {at})",
                e.as_bytes()[at]
            ),
            "save the file as UTF-8 (a Windows-1252 or Latin-1 editor writes `é` as one byte)",
        )
    })
}

/// Sets every image in the kustomization file `path` (whose text is `old`), in order.
pub fn set_images(path: String, old: String, images: &[ImageSpec]) -> Result<FileEdit> {
    let mut new = old.clone();
    let mut changes = Vec::new();
    let mut notes = Vec::new();
    let mut warnings = None;
    let at_line = |notice: &Notice| format!("{path}:{}: {}", notice.line, notice.message);
    for image in images {
        let edited = kustomize::set_image(&new, image)
            .map_err(|e| Error::input(&path, e.line, e.message, e.hint))?;
        new = edited.text;
        changes.extend(edited.changes);
        notes.extend(edited.matched_by_new_name.as_ref().map(at_line));
        // Each image finds the same warnings; the first found them at the lines of the
        // file as it is in the repository.
        warnings.get_or_insert_with(|| edited.warnings.iter().map(at_line).collect::<Vec<_>>());
    }
    let warnings = warnings.unwrap_or_default();
    for note in &notes {
        tracing::info!("{note}");
    }
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    Ok(FileEdit {
        path,
        old,
        new,
        changes,
        notes,
        warnings,
    })
}

/// Line breaks in bytes that may not be UTF-8 (the part of a file before a bad byte).
fn bytecount_lines(bytes: &[u8]) -> usize {
    bytes.split(|&b| b == b'\n').count() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Vec<ImageSpec> {
        vec![ImageSpec {
            name: "app".into(),
            new_name: None,
            new_tag: Some("v2".into()),
            digest: None,
            ..ImageSpec::default()
        }]
    }

    fn snapshot(files: &'static [(&'static str, Entry)]) -> impl Fn(&str) -> Entry {
        move |p| {
            files
                .iter()
                .find(|(n, _)| *n == p)
                .map_or(Entry::Missing, |(_, e)| e.clone())
        }
    }

    #[test]
    fn a_kustomization_under_another_name_kustomize_knows_is_edited() {
        static FILES: [(&str, Entry); 1] = [("ov", Entry::Dir)];
        let lookup = |p: &str| match p {
            "ov/kustomization.yml" => Entry::File(b"images:\n- name: app\n  newTag: v1\n".to_vec()),
            other => snapshot(&FILES)(other),
        };
        let edit = promote_overlay(lookup, "ov", &spec(), "branch main").unwrap();
        assert_eq!(edit.path, "ov/kustomization.yml");
        assert_eq!(edit.new, "images:\n- name: app\n  newTag: v2\n");
    }

    #[test]
    fn missing_overlays_links_and_binary_files_are_refused() {
        static NONE: [(&str, Entry); 0] = [];
        static LINK: [(&str, Entry); 2] = [
            ("ov", Entry::Dir),
            ("ov/kustomization.yaml", Entry::Symlink),
        ];
        let e = promote_overlay(snapshot(&NONE), "ov", &spec(), "branch main of R").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .starts_with("ov: no such overlay directory in branch main of R"),
            "{e}"
        );
        let e = promote_overlay(snapshot(&LINK), "ov", &spec(), "b").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let binary = |p: &str| match p {
            "ov" => Entry::Dir,
            "ov/kustomization.yaml" => Entry::File(vec![b'a', 0xff, b'\n']),
            _ => Entry::Missing,
        };
        let e = promote_overlay(binary, "ov", &spec(), "b").unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_utf8_is_refused_at_its_line() {
        // Found by the hostile corpus: the error named an offset but no line.
        let cp1252 = |p: &str| match p {
            "ov" => Entry::Dir,
            "ov/kustomization.yaml" => Entry::File(b"a: 1\r\n# caf\xe9\r\n".to_vec()),
            _ => Entry::Missing,
        };
        let e = promote_overlay(cp1252, "ov", &spec(), "b").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("ov/kustomization.yaml:2: is not UTF-8 text (byte 0xe9 at offset 11)"),
            "{e}"
        );
    }

    #[test]
    fn two_kustomization_files_are_refused_as_kustomize_refuses_them() {
        // Found by the hostile corpus: the first was edited, though kustomize renders neither.
        let both = |p: &str| match p {
            "ov" => Entry::Dir,
            "ov/kustomization.yaml" | "ov/Kustomization" => {
                Entry::File(b"images:\n- name: app\n  newTag: v1\n".to_vec())
            }
            _ => Entry::Missing,
        };
        let e = promote_overlay(both, "ov", &spec(), "b").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("ov: holds both ov/kustomization.yaml and ov/Kustomization in b"),
            "{e}"
        );
    }

    #[test]
    fn notes_and_warnings_name_the_file_and_line_once_per_file() {
        let lookup = |p: &str| {
            match p {
            "ov" => Entry::Dir,
            "ov/kustomization.yaml" => Entry::File(
                b"namespace: a\nnamespace: b\nimages:\n- name: short\n  newName: reg/app\n  newTag: v1\n".to_vec(),
            ),
            _ => Entry::Missing,
        }
        };
        let images = [
            ImageSpec {
                name: "reg/app".into(),
                ..spec()[0].clone()
            },
            spec()[0].clone(),
        ];
        let edit = promote_overlay(lookup, "ov", &images, "b").unwrap();
        assert_eq!(
            edit.new,
            "namespace: a\nnamespace: b\nimages:\n- name: short\n  newName: reg/app\n  newTag: v2\n- name: app\n  newTag: v2\n"
        );
        assert_eq!(
            edit.notes,
            [
                "ov/kustomization.yaml:4: no `images:` entry is named reg/app; set the entry named short instead, whose `newName` it is"
            ]
        );
        assert_eq!(edit.warnings.len(), 1, "{:?}", edit.warnings);
        assert!(
            edit.warnings[0]
                .starts_with("ov/kustomization.yaml:2: the key `namespace` appears twice"),
            "{:?}",
            edit.warnings
        );
    }

    #[test]
    fn yaml_errors_name_the_file_and_line() {
        let lookup = |p: &str| match p {
            "ov" => Entry::Dir,
            "ov/kustomization.yaml" => {
                Entry::File(b"images:\n- name: app\n  newTag: [v1\n".to_vec())
            }
            _ => Entry::Missing,
        };
        let e = promote_overlay(lookup, "ov", &spec(), "b")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ov/kustomization.yaml:"), "{e}");
        assert!(e.contains("invalid YAML"), "{e}");
    }
}
