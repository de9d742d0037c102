//! Applies every target of a plan to a repository snapshot: Kustomize overlays,
//! kustomization files, plain manifests and YAML values files, each with its own pure
//! editor. Pure but for the log: the snapshot is a lookup function, as for
//! [`overlay::promote_overlay`]. Every target is applied or the whole run fails, so one
//! commit carries all of them or nothing is pushed.

use crate::error::{Error, Result};
use crate::kustomize::{self, Field, ImageSpec};
use crate::manifests;
use crate::overlay::{self, Entry};
use crate::plan::{Target, TargetEdit};
use crate::values::{self, KeyPath};

/// One value that changes in one file of the devops repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The file, relative to the repository's root.
    pub file: String,
    pub subject: Subject,
    /// `None` for a value that was absent (or empty).
    pub old: Option<String>,
    /// `None` for a value that is removed.
    pub new: Option<String>,
}

/// What a change sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A field of a kustomization's `images:` entry.
    Entry { image: String, field: Field },
    /// The `image:` reference of a manifest's container, at this key path.
    Container { image: String, path: String },
    /// A value at a key path (`set:`, `--set`).
    Value { path: String },
}

impl Change {
    /// The image it concerns; `None` for a value set by key path.
    pub fn image(&self) -> Option<&str> {
        match &self.subject {
            Subject::Entry { image, .. } | Subject::Container { image, .. } => Some(image),
            Subject::Value { .. } => None,
        }
    }

    /// `newTag`, `newName`, `digest`, `image` (a manifest's reference), or the key path.
    pub fn field(&self) -> &str {
        match &self.subject {
            Subject::Entry { field, .. } => field.key(),
            Subject::Container { .. } => "image",
            Subject::Value { path } => path,
        }
    }

    /// A kustomization entry's change as the ordering guard reads it.
    pub fn entry_change(&self) -> Option<kustomize::Change> {
        match &self.subject {
            Subject::Entry { image, field } => Some(kustomize::Change {
                image: image.clone(),
                field: *field,
                old: self.old.clone(),
                new: self.new.clone(),
            }),
            _ => None,
        }
    }
}

/// The edit of one file: its text before and after every target, and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub path: String,
    pub old: String,
    pub new: String,
    /// Empty when the file already holds the wanted values.
    pub changes: Vec<Change>,
}

impl Edit {
    pub fn changed(&self) -> bool {
        self.old != self.new
    }
}

/// Applies `targets` in order and returns one edit per file, in the order first touched.
/// A file two targets reach (an overlay and its kustomization named in `files:`) is edited
/// once, the second target seeing the first's result. `place` says where the snapshot
/// comes from (e.g. "branch main of URL"), for errors.
pub fn apply(lookup: impl Fn(&str) -> Entry, targets: &[Target], place: &str) -> Result<Vec<Edit>> {
    let mut edits: Vec<Edit> = Vec::new();
    for target in targets {
        let current = |path: &str| match edits.iter().find(|e| e.path == path) {
            Some(edit) => Entry::File(edit.new.clone().into_bytes()),
            None => lookup(path),
        };
        let edit = apply_one(current, target, place)?;
        match edits.iter_mut().find(|e| e.path == edit.path) {
            Some(earlier) => {
                earlier.new = edit.new;
                earlier.changes.extend(edit.changes);
            }
            None => edits.push(edit),
        }
    }
    Ok(edits)
}

fn apply_one(lookup: impl Fn(&str) -> Entry, target: &Target, place: &str) -> Result<Edit> {
    let path = &target.path;
    match &target.edit {
        TargetEdit::Overlay(images) => Ok(from_kustomization(overlay::promote_overlay(
            lookup, path, images, place,
        )?)),
        TargetEdit::Images(images) if is_kustomization(path) => {
            let old = read(&lookup, path, place)?;
            Ok(from_kustomization(overlay::set_images(
                path.clone(),
                old,
                images,
            )?))
        }
        TargetEdit::Images(images) => {
            let old = read(&lookup, path, place)?;
            set_manifest_images(path, old, images)
        }
        TargetEdit::Set(sets) => {
            let old = read(&lookup, path, place)?;
            set_values(path, old, sets)
        }
    }
}

/// Whether kustomize would read the file as a kustomization, by its name.
pub fn is_kustomization(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    kustomize::FILE_NAMES.contains(&name)
}

fn from_kustomization(edit: overlay::FileEdit) -> Edit {
    let changes = edit
        .changes
        .into_iter()
        .map(|c| Change {
            file: edit.path.clone(),
            subject: Subject::Entry {
                image: c.image,
                field: c.field,
            },
            old: c.old,
            new: c.new,
        })
        .collect();
    Edit {
        path: edit.path,
        old: edit.old,
        new: edit.new,
        changes,
    }
}

/// The text of a file a target names.
fn read(lookup: &impl Fn(&str) -> Entry, path: &str, place: &str) -> Result<String> {
    match lookup(path) {
        Entry::File(bytes) => overlay::decode(
            path,
            bytes,
            "files",
            "tomoda-promote edits manifests and values files, not data",
        ),
        Entry::Missing => Err(Error::input(
            path,
            None,
            format!("no such file in {place}"),
            "check the file's `path:` in promote.yaml (or --set) against the devops repository",
        )),
        Entry::Dir => Err(Error::input(
            path,
            None,
            format!("is a directory in {place}, not a file"),
            "name the file itself; a Kustomize overlay directory goes in `overlay:`",
        )),
        Entry::Symlink => Err(Error::input(
            path,
            None,
            format!(
                "is a symbolic link in {place}; it is not followed, it could point outside the repository"
            ),
            "name the file the link points to",
        )),
    }
}

fn set_manifest_images(path: &str, old: String, images: &[ImageSpec]) -> Result<Edit> {
    let mut new = old.clone();
    let mut changes = Vec::new();
    for image in images {
        let edited = manifests::set_image(&new, image)
            .map_err(|e| Error::input(path, e.line, e.message, e.hint))?;
        new = edited.text;
        changes.extend(edited.changes.into_iter().map(|c| Change {
            file: path.to_string(),
            subject: Subject::Container {
                image: image.name.clone(),
                path: c.path,
            },
            old: Some(c.old),
            new: Some(c.new),
        }));
    }
    Ok(Edit {
        path: path.to_string(),
        old,
        new,
        changes,
    })
}

fn set_values(path: &str, old: String, sets: &[(KeyPath, String)]) -> Result<Edit> {
    let mut new = old.clone();
    let mut changes = Vec::new();
    for (key_path, value) in sets {
        let edited = values::set_value(&new, key_path, value)
            .map_err(|e| Error::input(path, e.line, e.message, e.hint))?;
        new = edited.text;
        if edited.changed {
            changes.push(Change {
                file: path.to_string(),
                subject: Subject::Value {
                    path: key_path.to_string(),
                },
                old: Some(edited.old).filter(|o| !o.is_empty()),
                new: Some(value.clone()),
            });
        }
    }
    Ok(Edit {
        path: path.to_string(),
        old,
        new,
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, tag: &str) -> ImageSpec {
        ImageSpec {
            name: name.into(),
            new_name: None,
            new_tag: Some(tag.into()),
            digest: None,
            ..ImageSpec::default()
        }
    }

    fn set(path: &str, key: &str, value: &str) -> Target {
        Target {
            path: path.into(),
            edit: TargetEdit::Set(vec![(KeyPath::parse(key).unwrap(), value.into())]),
        }
    }

    const KUSTOMIZATION: &str = "images:\n- name: reg/app\n  newTag: v1\n";
    const VALUES: &str = "# api values\nimage:\n  repository: reg/api\n  tag: \"v1\" # by CI\n";
    const MANIFEST: &str = "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - image: reg/web:v1\n";

    fn repo(path: &str) -> Entry {
        match path {
            "ov" => Entry::Dir,
            "ov/kustomization.yaml" => Entry::File(KUSTOMIZATION.into()),
            "values.yaml" => Entry::File(VALUES.into()),
            "web.yaml" => Entry::File(MANIFEST.into()),
            "link.yaml" => Entry::Symlink,
            _ => Entry::Missing,
        }
    }

    #[test]
    fn every_kind_of_target_is_applied_and_its_changes_name_the_file() {
        let targets = [
            Target {
                path: "ov".into(),
                edit: TargetEdit::Overlay(vec![image("reg/app", "v2")]),
            },
            set("values.yaml", "image.tag", "v2"),
            Target {
                path: "web.yaml".into(),
                edit: TargetEdit::Images(vec![image("reg/web", "v2")]),
            },
        ];
        let edits = apply(repo, &targets, "b").unwrap();
        let new: Vec<&str> = edits.iter().map(|e| e.new.as_str()).collect();
        assert_eq!(
            new,
            [
                KUSTOMIZATION.replace("v1", "v2"),
                VALUES.replace("\"v1\"", "\"v2\""),
                MANIFEST.replace("web:v1", "web:v2")
            ]
        );
        let changes: Vec<(&str, Option<&str>, &str)> = edits
            .iter()
            .flat_map(|e| &e.changes)
            .map(|c| (c.file.as_str(), c.image(), c.field()))
            .collect();
        assert_eq!(
            changes,
            [
                ("ov/kustomization.yaml", Some("reg/app"), "newTag"),
                ("values.yaml", None, "image.tag"),
                ("web.yaml", Some("reg/web"), "image"),
            ]
        );
        assert!(edits[2].changes[0].entry_change().is_none());
        assert_eq!(
            edits[0].changes[0].entry_change().unwrap().field,
            Field::NewTag
        );
    }

    #[test]
    fn a_kustomization_file_named_in_files_is_edited_as_one_and_merged_with_its_overlay() {
        let targets = [
            Target {
                path: "ov".into(),
                edit: TargetEdit::Overlay(vec![image("reg/app", "v2")]),
            },
            Target {
                path: "ov/kustomization.yaml".into(),
                edit: TargetEdit::Images(vec![image("reg/other", "v9")]),
            },
        ];
        let edits = apply(repo, &targets, "b").unwrap();
        assert_eq!(edits.len(), 1);
        assert_eq!(edits[0].old, KUSTOMIZATION);
        assert_eq!(
            edits[0].new,
            "images:\n- name: reg/app\n  newTag: v2\n- name: reg/other\n  newTag: v9\n"
        );
        assert_eq!(edits[0].changes.len(), 2);
    }

    #[test]
    fn an_up_to_date_target_contributes_no_change() {
        let edits = apply(repo, &[set("values.yaml", "image.tag", "v1")], "b").unwrap();
        assert!(!edits[0].changed() && edits[0].changes.is_empty());
    }

    #[test]
    fn errors_name_the_file() {
        let e = apply(repo, &[set("values.yaml", "image.tags", "v2")], "b").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .starts_with("values.yaml:3: key path `image.tags`: `image` has no key `tags`"),
            "{e}"
        );
        let e = apply(repo, &[set("nope.yaml", "a", "1")], "branch main of R").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("nope.yaml: no such file in branch main of R"),
            "{e}"
        );
        for (path, words) in [("ov", "is a directory"), ("link.yaml", "symbolic link")] {
            let e = apply(repo, &[set(path, "a", "1")], "b").unwrap_err();
            assert!(e.to_string().contains(words), "{e}");
        }
        let manifest = Target {
            path: "web.yaml".into(),
            edit: TargetEdit::Images(vec![image("reg/none", "v2")]),
        };
        let e = apply(repo, &[manifest], "b").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("web.yaml: no container image of repository `reg/none`"),
            "{e}"
        );
    }
}
