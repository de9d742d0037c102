//! Which image references a promotion makes the cluster pull, read from the files it
//! edits, and the plan pinned to the digests the registry gave them. The registry must be
//! asked about those, not about the names promote.yaml or `--image` give: a spec with only
//! a tag (`--image app:v2`, `app=*:v2`) leaves the overlay entry's `newName`, so the
//! cluster pulls `newName:v2`, often from another registry than `app` would name. Pure.

use crate::error::{Error, Result};
use crate::image;
use crate::kustomize::{self, ImageSpec};
use crate::plan::{Plan, TargetEdit};
use crate::targets::{Edit, is_kustomization};

/// One image reference the cluster will pull once the edit lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The plan's image it comes from.
    pub of: Of,
    /// The repository, registry host and path included.
    pub name: String,
    pub tag: String,
}

/// Where in the plan an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Of {
    /// The image at `index` in the image list of `Plan::targets[target]`.
    Image { target: usize, index: usize },
    /// `Plan::digests[index]`: the `image:` of a `files:` entry with `set:`.
    Fill(usize),
}

/// What the cluster pulls after `edits`, the plan's edits of the files read: every image
/// that gets a tag, in the plan's order, then every `files:` entry's `image:`.
///
/// In a kustomization the entry that takes the tag decides the name: its `newName`,
/// kept or just set, else its `name`. A plain manifest's images keep their registry and
/// path (the spec's name matches them whole) unless the spec gives `new_name`.
pub fn pulled(plan: &Plan, edits: &[Edit]) -> Result<Vec<Pulled>> {
    let mut pulled = Vec::new();
    for (target_index, target) in plan.targets.iter().enumerate() {
        let (images, kustomization) = match &target.edit {
            TargetEdit::Overlay(images) => (images, overlay_file(&target.path, edits)),
            TargetEdit::Images(images) if is_kustomization(&target.path) => {
                (images, edits.iter().find(|e| e.path == target.path))
            }
            TargetEdit::Images(images) => (images, None),
            TargetEdit::Set(_) => continue,
        };
        for (index, spec) in images.iter().enumerate() {
            let Some(tag) = &spec.new_tag else { continue };
            let name = match kustomization {
                Some(edit) => kustomize::pulled_name(&edit.new, spec)
                    .map_err(|e| Error::input(&edit.path, e.line, e.message, e.hint))?,
                None => None,
            };
            let name = name.unwrap_or_else(|| stated_name(spec).to_string());
            pulled.push(Pulled {
                of: Of::Image {
                    target: target_index,
                    index,
                },
                name: image::split_tag(&name).0.to_string(),
                tag: tag.clone(),
            });
        }
    }
    for (index, fill) in plan.digests.iter().enumerate() {
        if let Some(tag) = &fill.image.new_tag {
            pulled.push(Pulled {
                of: Of::Fill(index),
                name: image::split_tag(stated_name(&fill.image)).0.to_string(),
                tag: tag.clone(),
            });
        }
    }
    Ok(pulled)
}

/// The name a spec itself gives the image: its new name, else its name.
fn stated_name(spec: &ImageSpec) -> &str {
    spec.new_name.as_deref().unwrap_or(&spec.name)
}

/// The kustomization file of the overlay directory `overlay` among `edits`.
fn overlay_file<'e>(overlay: &str, edits: &'e [Edit]) -> Option<&'e Edit> {
    edits.iter().find(|e| {
        let dir = e.path.rsplit_once('/').map_or("", |(dir, _)| dir);
        dir == overlay && is_kustomization(&e.path)
    })
}

/// The plan with the digests found (`digest_of`, `None` for a reference the registry was
/// not asked about) written where it asks for them: beside the tag of each pinned image
/// (an explicitly given digest is kept), and into the values naming `{digest}`. An
/// unknown `{digest}` stays only when `unknown_ok` (a plan against an unreachable
/// registry).
pub fn pin(
    plan: &Plan,
    pulled: &[Pulled],
    digest_of: impl Fn(&Pulled) -> Option<String>,
    unknown_ok: bool,
) -> Result<Plan> {
    let mut pinned = plan.clone();
    for p in pulled {
        let Of::Image { target, index } = p.of else {
            continue;
        };
        let (TargetEdit::Overlay(images) | TargetEdit::Images(images)) =
            &mut pinned.targets[target].edit
        else {
            continue;
        };
        let spec = &mut images[index];
        if !spec.pin {
            continue;
        }
        let Some(digest) = digest_of(p) else { continue };
        match &spec.digest {
            None => spec.digest = Some(digest),
            Some(given) if *given != digest => tracing::warn!(
                "{}:{} is {digest} in its registry, but the digest given is {given}; keeping the given one",
                p.name,
                p.tag
            ),
            Some(_) => {}
        }
    }
    let fills: Vec<(ImageSpec, Option<String>)> = pulled
        .iter()
        .filter_map(|p| match p.of {
            Of::Fill(index) => Some((plan.digests[index].image.clone(), digest_of(p))),
            Of::Image { .. } => None,
        })
        .collect();
    pinned.fill_digests(
        |image| {
            fills
                .iter()
                .find(|(i, _)| i == image)
                .and_then(|(_, d)| d.clone())
        },
        unknown_ok,
    )?;
    Ok(pinned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::Entry;
    use crate::plan::{DigestFill, Target};
    use crate::targets;

    const OVERLAY: &str = "images:\n- name: app\n  newName: reg.example:5000/team/app\n  newTag: v1\n- name: plain:latest\n  newTag: v1\n";
    const MANIFEST: &str = "spec:\n  containers:\n  - image: reg.example/team/job:v1\n";
    const VALUES: &str = "image:\n  digest: \"\"\n";
    const GIVEN: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const CONFIG: &str = "repo: r\nenvironments:\n  dev:\n    when: commit\n    overlay: ov\n    images:\n      - name: app\n        tag: v2\n        pin: digest\n      - name: plain:latest\n        tag: v2\n        digest: \"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n        pin: digest\n      - name: fresh\n        tag: v2\n    files:\n      - path: values.yaml\n        image: reg.example/api:v7\n        set:\n          image.digest: \"{digest}\"\n";

    fn repo(path: &str) -> Entry {
        match path {
            "ov" => Entry::Dir,
            "ov/kustomization.yaml" | "k/kustomization.yaml" => Entry::File(OVERLAY.into()),
            "job.yaml" => Entry::File(MANIFEST.into()),
            "values.yaml" => Entry::File(VALUES.into()),
            _ => Entry::Missing,
        }
    }

    fn spec(text: &str) -> ImageSpec {
        image::parse_spec(text).unwrap()
    }

    /// The plan of [`CONFIG`].
    fn config_plan() -> Plan {
        let config = crate::config::Config::parse("promote.yaml", CONFIG).unwrap();
        let context = crate::context::BuildContext {
            commit_sha: Some("4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9012345678".into()),
            ..Default::default()
        };
        let dir = std::path::Path::new("/w");
        let bases = crate::plan::Bases {
            config_dir: dir,
            cwd: dir,
        };
        crate::plan::resolve(
            &crate::plan::Flags::default(),
            Some(&config),
            context,
            &bases,
        )
        .unwrap()
    }

    /// A plan of `targets` alone.
    fn plan(targets: Vec<Target>) -> Plan {
        let mut plan = config_plan();
        plan.targets = targets;
        plan.digests.clear();
        plan
    }

    fn names(plan: &Plan) -> Vec<(String, String)> {
        let edits = targets::apply(repo, &plan.targets, "b").unwrap();
        pulled(plan, &edits)
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.tag))
            .collect()
    }

    fn pair(name: &str, tag: &str) -> (String, String) {
        (name.into(), tag.into())
    }

    fn overlay(specs: &[&str]) -> Target {
        Target {
            path: "ov".into(),
            edit: TargetEdit::Overlay(specs.iter().map(|s| spec(s)).collect()),
        }
    }

    #[test]
    fn a_tag_alone_pulls_the_new_name_the_entry_keeps() {
        assert_eq!(
            names(&plan(vec![overlay(&["app:v2", "app=*:v3"])])),
            [
                pair("reg.example:5000/team/app", "v2"),
                pair("reg.example:5000/team/app", "v3")
            ]
        );
        // A new name replaces the kept one (and the second spec, no longer any entry's
        // newName, gets an entry of its own); an entry matched by its newName pulls that.
        assert_eq!(
            names(&plan(vec![overlay(&[
                "app=other.example/app:v2",
                "reg.example:5000/team/app:v4"
            ])])),
            [
                pair("other.example/app", "v2"),
                pair("reg.example:5000/team/app", "v4")
            ]
        );
        assert_eq!(
            names(&plan(vec![overlay(&["reg.example:5000/team/app:v4"])])),
            [pair("reg.example:5000/team/app", "v4")]
        );
        // No newName: the entry's name, without the tag it carries; a new entry: the spec's.
        assert_eq!(
            names(&plan(vec![overlay(&["plain:latest:v5", "fresh:v6"])])),
            [pair("plain", "v5"), pair("fresh", "v6")]
        );
        // A spec that sets no tag adds no reference to check.
        assert_eq!(names(&plan(vec![overlay(&[&format!("app@{GIVEN}")])])), []);
    }

    #[test]
    fn kustomization_files_manifests_and_digest_images_are_read_too() {
        let mut p = plan(vec![
            Target {
                path: "k/kustomization.yaml".into(),
                edit: TargetEdit::Images(vec![spec("app:v2")]),
            },
            Target {
                path: "job.yaml".into(),
                edit: TargetEdit::Images(vec![
                    spec("reg.example/team/job:v2"),
                    spec("reg.example/team/job=reg.example/team/job2:v3"),
                ]),
            },
        ]);
        p.digests.push(DigestFill {
            target: 0,
            image: spec("reg.example/api:v7"),
            values: Vec::new(),
            file: "promote.yaml".into(),
        });
        assert_eq!(
            names(&p),
            [
                pair("reg.example:5000/team/app", "v2"),
                pair("reg.example/team/job", "v2"),
                pair("reg.example/team/job2", "v3"),
                pair("reg.example/api", "v7")
            ]
        );
    }

    #[test]
    fn pinning_writes_the_digest_of_each_pulled_reference_where_asked() {
        let digest = format!("sha256:{}", "d".repeat(64));
        let p = config_plan();
        let edits = targets::apply(repo, &p.targets, "b").unwrap();
        let pulled = pulled(&p, &edits).unwrap();
        assert_eq!(
            pulled.iter().map(|r| r.of).collect::<Vec<_>>(),
            [
                Of::Image {
                    target: 0,
                    index: 0
                },
                Of::Image {
                    target: 0,
                    index: 1
                },
                Of::Image {
                    target: 0,
                    index: 2
                },
                Of::Fill(0)
            ]
        );
        let pinned = pin(&p, &pulled, |_| Some(digest.clone()), false).unwrap();
        let digests: Vec<Option<&str>> = pinned.images().map(|i| i.digest.as_deref()).collect();
        assert_eq!(
            digests,
            [Some(digest.as_str()), Some(GIVEN), None],
            "pinned; given and kept; not asked for"
        );
        assert_eq!(
            pinned.targets[1].edit,
            TargetEdit::Set(vec![(
                crate::values::KeyPath::parse("image.digest").unwrap(),
                digest.clone()
            )])
        );
        // Only what the registry was asked about is pinned; an unknown `{digest}` is
        // refused, unless a plan against an unreachable registry allows it.
        let only = |r: &Pulled| (r.name == "plain").then(|| digest.clone());
        assert!(pin(&p, &pulled, only, false).is_err());
        let lenient = pin(&p, &pulled, only, true).unwrap();
        assert_eq!(lenient.images().next().unwrap().digest, None);
        assert_eq!(lenient.targets[1].edit, p.targets[1].edit);
    }
}
