//! Plain manifests, the GitOps form of `kubectl set image`: every container `image:` of a
//! pod spec (Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, Pods, and any
//! resource with a pod template) whose repository is the image's name gets the new tag,
//! digest or name, in every `---` document of the file. Pure, byte-exact, re-parsed.

use crate::image;
use crate::kustomize::{EditError, ImageSpec};
use crate::values::{self, Assignment, KeyPath, Step, Target};
use crate::yaml;
use crate::yaml::tree::{self, Node};

/// The lists of containers a pod spec has.
const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// One `image:` that changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageChange {
    pub line: usize,
    /// Where it stands, as a key path (`spec.template.spec.containers[0].image`).
    pub path: String,
    pub old: String,
    pub new: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEdit {
    pub text: String,
    /// Empty when every matching image already is what is wanted.
    pub changes: Vec<ImageChange>,
}

/// Sets `spec` in every container image of `source` whose repository is `spec.name` (or
/// already `spec.new_name`, so that a rerun of a rename changes nothing).
pub fn set_image(source: &str, spec: &ImageSpec) -> Result<ManifestEdit, EditError> {
    let docs = tree::parse(source)?;
    let mut found = Vec::new();
    for (index, doc) in docs.iter().enumerate() {
        collect_images(&doc.root, &mut Vec::new(), &mut |steps, key, value| {
            found.push((index, steps, key, value));
        });
    }
    let mut matched = 0;
    let mut splices = Vec::new();
    let mut assignments = Vec::new();
    let mut changes = Vec::new();
    for (doc, steps, key, value) in found {
        let Some(current) = value.as_str() else {
            continue;
        };
        let reference = Reference::parse(current);
        // An image already renamed to `new_name` (a rerun) is the same image.
        if reference.repository != spec.name
            && spec.new_name.as_deref() != Some(reference.repository)
        {
            continue;
        }
        matched += 1;
        let wanted = reference.with(spec);
        if wanted == current {
            continue;
        }
        let path = KeyPath::from_steps(steps);
        let target = Target {
            key: Some(key),
            value,
        };
        splices.push(values::splice_for(source, &target, &path, &wanted)?);
        changes.push(ImageChange {
            line: key.line(),
            path: path.to_string(),
            old: current.to_string(),
            new: wanted.clone(),
        });
        assignments.push(Assignment {
            doc,
            steps: path.steps,
            value: wanted,
        });
    }
    if matched == 0 {
        return Err(EditError::new(
            None,
            format!(
                "no container image of repository `{}` in the file",
                spec.name
            ),
            "name the image as the manifest's `image:` writes it, without tag or digest (registry and path included)",
        ));
    }
    if changes.is_empty() {
        return Ok(ManifestEdit {
            text: source.to_string(),
            changes,
        });
    }
    let text = yaml::apply(source, &splices)
        .ok_or_else(|| EditError::new(None, "the edits overlap", "please report this"))?;
    values::verify(
        source,
        &text,
        &assignments,
        &format!("the images of `{}`", spec.name),
    )?;
    Ok(ManifestEdit { text, changes })
}

/// Calls `found` with the path, key and value of every container `image:` under `node`.
fn collect_images<'a>(
    node: &'a Node,
    steps: &mut Vec<Step>,
    found: &mut dyn FnMut(Vec<Step>, &'a Node, &'a Node),
) {
    match node {
        Node::Map(map) => {
            for (key, value) in &map.entries {
                let Some(name) = key.as_str() else { continue };
                steps.push(Step::Key(name.to_string()));
                match value {
                    Node::Seq(list) if CONTAINER_LISTS.contains(&name) => {
                        for (i, item) in list.items.iter().enumerate() {
                            let Node::Map(container) = item else { continue };
                            if let Some((k, v)) = container.get("image") {
                                let mut path = steps.clone();
                                path.extend([Step::Index(i), Step::Key("image".into())]);
                                found(path, k, v);
                            }
                        }
                    }
                    other => collect_images(other, steps, found),
                }
                steps.pop();
            }
        }
        Node::Seq(seq) => {
            for (i, item) in seq.items.iter().enumerate() {
                steps.push(Step::Index(i));
                collect_images(item, steps, found);
                steps.pop();
            }
        }
        Node::Scalar(_) | Node::Alias(_) => {}
    }
}

/// A container image reference: `repository[:tag][@digest]`, the repository holding any
/// registry host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference<'a> {
    repository: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

impl<'a> Reference<'a> {
    fn parse(text: &'a str) -> Self {
        let (repository, tag, digest) = image::split_reference(text);
        Reference {
            repository,
            tag,
            digest,
        }
    }

    /// The reference after `spec`, with kustomize's rule: a new tag without a digest drops
    /// the old digest, which would otherwise keep pinning the old image.
    fn with(&self, spec: &ImageSpec) -> String {
        let repository = spec.new_name.as_deref().unwrap_or(self.repository);
        let tag = spec.new_tag.as_deref().or(self.tag);
        let digest = match (&spec.digest, &spec.new_tag) {
            (Some(d), _) => Some(d.as_str()),
            (None, Some(_)) if !spec.keep_digest => None,
            (None, _) => self.digest,
        };
        let mut out = repository.to_string();
        if let Some(tag) = tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = digest {
            out.push('@');
            out.push_str(digest);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, tag: Option<&str>, digest: Option<&str>) -> ImageSpec {
        ImageSpec {
            name: name.into(),
            new_name: None,
            new_tag: tag.map(Into::into),
            digest: digest.map(Into::into),
            ..ImageSpec::default()
        }
    }

    const FILE: &str = "# license-api, by hand until now\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: license-api\nspec:\n  template:\n    spec:\n      initContainers:\n        - name: migrate\n          image: \"asia-docker.pkg.dev/p/r/license-api:1.4.0\"  # same image\n      containers:\n        - name: api\n          image: asia-docker.pkg.dev/p/r/license-api:1.4.0\n        - name: proxy\n          image: envoyproxy/envoy:v1.29.0\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: license-report\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n            - name: report\n              image: asia-docker.pkg.dev/p/r/license-api:1.4.0\n          restartPolicy: OnFailure\n";

    #[test]
    fn every_matching_image_in_every_document_changes_and_nothing_else() {
        let edit = set_image(
            FILE,
            &spec("asia-docker.pkg.dev/p/r/license-api", Some("1.5.0"), None),
        )
        .unwrap();
        assert_eq!(
            edit.text,
            FILE.replace("license-api:1.4.0", "license-api:1.5.0")
        );
        let paths: Vec<&str> = edit.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.template.spec.initContainers[0].image",
                "spec.template.spec.containers[0].image",
                "spec.jobTemplate.spec.template.spec.containers[0].image"
            ]
        );
        let again = set_image(
            &edit.text,
            &spec("asia-docker.pkg.dev/p/r/license-api", Some("1.5.0"), None),
        )
        .unwrap();
        assert!(again.changes.is_empty(), "a second run changes nothing");
    }

    #[test]
    fn a_star_keeps_the_manifests_digest_or_tag() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let file = format!("spec:\n  containers:\n    - image: reg.io/app:v1@{digest}\n");
        let star = |s: &str| crate::image::parse_spec(s).unwrap();
        assert_eq!(
            set_image(&file, &star("reg.io/app:v2@*")).unwrap().text,
            file.replace(":v1@", ":v2@")
        );
        assert_eq!(
            set_image(&file, &star("reg.io/app:v2")).unwrap().text,
            file.replace(&format!(":v1@{digest}"), ":v2")
        );
        assert_eq!(
            set_image(&file, &star("reg.io/app=reg.io/other:*"))
                .unwrap()
                .text,
            file.replace("reg.io/app", "reg.io/other")
        );
    }

    #[test]
    fn a_digest_pins_the_tag_and_a_new_name_replaces_registry_and_path() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let file = "spec:\n  containers:\n    - image: localhost:5000/app:v1\n";
        let pinned =
            set_image(file, &spec("localhost:5000/app", Some("v2"), Some(&digest))).unwrap();
        assert_eq!(
            pinned.text,
            format!("spec:\n  containers:\n    - image: localhost:5000/app:v2@{digest}\n")
        );
        let retagged =
            set_image(&pinned.text, &spec("localhost:5000/app", Some("v3"), None)).unwrap();
        assert_eq!(
            retagged.text,
            file.replace("v1", "v3"),
            "a new tag drops the old digest"
        );
        let mut moved = spec("localhost:5000/app", None, None);
        moved.new_name = Some("reg.io/team/app".into());
        let renamed = set_image(file, &moved).unwrap();
        assert_eq!(
            renamed.text,
            file.replace("localhost:5000/app", "reg.io/team/app")
        );
        let again = set_image(&renamed.text, &moved).unwrap();
        assert!(again.changes.is_empty(), "a rerun finds the renamed image");
    }

    #[test]
    fn a_file_without_the_image_is_refused() {
        let e = set_image(FILE, &spec("reg.io/other", Some("v2"), None)).unwrap_err();
        assert_eq!(
            e.message,
            "no container image of repository `reg.io/other` in the file"
        );
        // A repository is matched whole, not by prefix or by its last part.
        assert!(set_image(FILE, &spec("license-api", Some("v2"), None)).is_err());
    }

    #[test]
    fn references_split_at_the_tag_not_at_a_port() {
        let r = Reference::parse("localhost:5000/a/b:v1@sha256:x");
        assert_eq!(
            (r.repository, r.tag, r.digest),
            ("localhost:5000/a/b", Some("v1"), Some("sha256:x"))
        );
        let r = Reference::parse("localhost:5000/a");
        assert_eq!((r.repository, r.tag), ("localhost:5000/a", None));
    }
}
