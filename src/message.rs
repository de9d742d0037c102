//! The devops commit's message: a subject that reads well in `git log --oneline`, a body
//! that leads back to the build, and trailers that tools can parse.

use crate::context::BuildContext;
use crate::image::{short_name, split_reference, split_tag};
use crate::kustomize::{Field, ImageSpec};
use crate::targets::{Change, Subject};

/// The commit message of a promotion: `images` are the plan's images in order (their
/// headline values make the subject), `changes` every value that changes, in any file.
pub fn commit_message<'a>(
    environment: &str,
    images: impl IntoIterator<Item = &'a ImageSpec>,
    changes: &[Change],
    context: &BuildContext,
) -> String {
    let images: Vec<&ImageSpec> = images.into_iter().collect();
    let mut subject = format!("promote({environment}): ");
    let mut summaries: Vec<String> = Vec::new();
    let mut add = |summary: String| {
        if !summaries.contains(&summary) {
            summaries.push(summary);
        }
    };
    for image in &images {
        if let Some((old, new)) = headline(&image.name, changes) {
            add(format!(
                "{} {} -> {}",
                short_name(&image.name),
                old.map_or("(none)".to_string(), short_value),
                new.map_or("(none)".to_string(), short_value)
            ));
        }
    }
    for change in changes {
        if let Subject::Value { path } = &change.subject {
            let file = change.file.rsplit('/').next().unwrap_or(&change.file);
            add(format!(
                "{file} {path} {} -> {}",
                change
                    .old
                    .as_deref()
                    .map_or("(none)".to_string(), short_value),
                change
                    .new
                    .as_deref()
                    .map_or("(none)".to_string(), short_value)
            ));
        }
    }
    subject.push_str(&summaries.join(", "));

    let mut body = String::new();
    let mut files: Vec<&str> = Vec::new();
    for change in changes {
        if !files.contains(&change.file.as_str()) {
            files.push(&change.file);
        }
    }
    for file in files {
        body.push_str(&format!("Set in {file}:\n"));
        for change in changes.iter().filter(|c| c.file == file) {
            body.push_str(&change_line(change));
        }
    }
    let facts = [
        ("Source repository", &context.repo_name),
        ("Source commit", &context.commit_sha),
        ("Source tag", &context.tag_name),
        ("Build", &context.build_id),
        ("Project", &context.project_id),
    ];
    let known: Vec<String> = facts
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}: {v}")))
        .collect();
    if !known.is_empty() {
        body.push('\n');
        body.push_str(&known.join("\n"));
        body.push('\n');
    }

    let mut trailers: Vec<String> = Vec::new();
    for image in &images {
        let trailer = format!("Promoted-Image: {}", reference(image));
        if !trailers.contains(&trailer) {
            trailers.push(trailer);
        }
    }
    let optional = [
        ("Source-Commit", &context.commit_sha),
        ("Source-Tag", &context.tag_name),
        ("Build-Id", &context.build_id),
    ];
    trailers.extend(
        optional
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}: {v}"))),
    );
    format!("{subject}\n\n{body}\n{}\n", trailers.join("\n"))
}

/// The most of a diff a request's description holds (GitHub takes 65,536 characters).
const MAX_REQUEST_DIFF: usize = 60_000;

/// A pull request's description: what changes (the diff) and the build it comes from, so
/// that a reviewer needs nothing else to decide.
pub fn request_body(environment: &str, target: &str, diff: &str, context: &BuildContext) -> String {
    let mut body = format!(
        "Promotes a build to `{environment}`: merging this request puts it on `{target}`.\n\n"
    );
    let shown = if diff.len() > MAX_REQUEST_DIFF {
        let mut end = MAX_REQUEST_DIFF;
        while !diff.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}\n... (cut short: see the files changed)\n", &diff[..end])
    } else {
        diff.to_string()
    };
    body.push_str(&format!("````diff\n{shown}````\n"));
    let facts = [
        ("Source repository", &context.repo_name),
        ("Source commit", &context.commit_sha),
        ("Source tag", &context.tag_name),
        ("Build", &context.build_id),
        ("Build log", &context.log_url),
    ];
    let known: Vec<String> = facts
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("- {k}: {v}")))
        .collect();
    if !known.is_empty() {
        body.push_str("\nSource build:\n");
        body.push_str(&known.join("\n"));
        body.push('\n');
    }
    body
}

/// The old and new value people look at for an image: an entry's tag, else its digest,
/// else its name; else, in a manifest, the reference's tag (or digest, or the whole
/// reference when those stay).
fn headline<'c>(image: &str, changes: &'c [Change]) -> Option<(Option<&'c str>, Option<&'c str>)> {
    let entry = [Field::NewTag, Field::Digest, Field::NewName]
        .iter()
        .find_map(|f| {
            changes.iter().find(|c| {
                matches!(&c.subject, Subject::Entry { image: i, field } if i == image && field == f)
                    && c.new.is_some()
            })
        });
    if let Some(change) = entry {
        return Some((change.old.as_deref(), change.new.as_deref()));
    }
    let container = changes
        .iter()
        .find(|c| matches!(&c.subject, Subject::Container { image: i, .. } if i == image))?;
    let (old, new) = (container.old.as_deref()?, container.new.as_deref()?);
    let (_, old_tag, old_digest) = split_reference(old);
    let (_, new_tag, new_digest) = split_reference(new);
    Some(if old_tag != new_tag {
        (old_tag, new_tag)
    } else if old_digest != new_digest {
        (old_digest, new_digest)
    } else {
        (Some(old), Some(new))
    })
}

/// The image as a container would pull it after the promotion: an entry's name may carry
/// a tag (`imagehost:latest`), which kustomize replaces.
pub fn reference(image: &ImageSpec) -> String {
    let mut out = image
        .new_name
        .clone()
        .unwrap_or_else(|| split_tag(&image.name).0.to_string());
    if let Some(tag) = &image.new_tag {
        out.push(':');
        out.push_str(tag);
    }
    if let Some(digest) = &image.digest {
        out.push('@');
        out.push_str(digest);
    }
    out
}

/// One changed value as the commit body and the text result list it.
pub fn change_line(change: &Change) -> String {
    let old = change.old.as_deref().unwrap_or("(none)");
    let new = change.new.as_deref().unwrap_or("(removed)");
    match &change.subject {
        Subject::Entry { image, field } => format!("  {image} {}: {old} -> {new}\n", field.key()),
        Subject::Container { image, path } => format!("  {image} at {path}: {old} -> {new}\n"),
        Subject::Value { path } => format!("  {path}: {old} -> {new}\n"),
    }
}

/// A commit id as people read it in logs and subjects: the 7 hex digits `git log
/// --oneline` and Cloud Build's `$SHORT_SHA` show.
pub fn short_sha(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Full commit SHAs and digests are shortened in the subject, as git does.
fn short_value(value: &str) -> String {
    let is_sha = value.len() >= 40 && value.bytes().all(|b| b.is_ascii_hexdigit());
    match value.strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}", &hex[..hex.len().min(12)]),
        None if is_sha => short_sha(value).to_string(),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_body_holds_the_diff_and_the_source_build() {
        let context = BuildContext {
            commit_sha: Some("4d5e6f7a".into()),
            build_id: Some("b-1".into()),
            log_url: Some("https://ci.example/runs/1".into()),
            ..Default::default()
        };
        let body = request_body("prod", "main", "-old\n+new\n", &context);
        assert_eq!(
            body,
            "Promotes a build to `prod`: merging this request puts it on `main`.\n\n````diff\n-old\n+new\n````\n\nSource build:\n- Source commit: 4d5e6f7a\n- Build: b-1\n- Build log: https://ci.example/runs/1\n"
        );
        let long = "+x\n".repeat(30_000);
        assert!(request_body("prod", "main", &long, &context).len() < 61_000);
    }

    #[test]
    fn subject_body_and_trailers() {
        let image = ImageSpec {
            name: "reg/p/tomoda-backend".into(),
            new_name: None,
            new_tag: Some("4d5e6f7aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into()),
            digest: None,
            ..ImageSpec::default()
        };
        let changes = vec![Change {
            file: "ov/kustomization.yaml".into(),
            subject: Subject::Entry {
                image: image.name.clone(),
                field: Field::NewTag,
            },
            old: Some("0a1b2c3bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into()),
            new: image.new_tag.clone(),
        }];
        let context = BuildContext {
            commit_sha: image.new_tag.clone(),
            build_id: Some("b-42".into()),
            repo_name: Some("tomoda".into()),
            ..Default::default()
        };
        let m = commit_message("dev", [&image], &changes, &context);
        let mut lines = m.lines();
        assert_eq!(
            lines.next(),
            Some("promote(dev): tomoda-backend 0a1b2c3 -> 4d5e6f7")
        );
        assert_eq!(lines.next(), Some(""));
        assert_eq!(lines.next(), Some("Set in ov/kustomization.yaml:"));
        let tagged = ImageSpec {
            name: "imagehost:latest".into(),
            new_name: None,
            new_tag: Some("210".into()),
            digest: None,
            ..ImageSpec::default()
        };
        assert_eq!(
            reference(&tagged),
            "imagehost:210",
            "as kustomize renders it"
        );
        assert_eq!(short_name(&tagged.name), "imagehost");
        assert!(m.contains("Source repository: tomoda\n"), "{m}");
        assert!(m.ends_with(
            "\n\nPromoted-Image: reg/p/tomoda-backend:4d5e6f7aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nSource-Commit: 4d5e6f7aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nBuild-Id: b-42\n"
        ), "{m}");
    }

    #[test]
    fn every_file_and_change_is_listed_and_values_have_their_own_summary() {
        let backend = ImageSpec {
            name: "reg/p/backend".into(),
            new_name: None,
            new_tag: Some("v2".into()),
            digest: None,
            ..ImageSpec::default()
        };
        let web = ImageSpec {
            name: "reg/p/web".into(),
            ..backend.clone()
        };
        let changes = vec![
            Change {
                file: "ov/kustomization.yaml".into(),
                subject: Subject::Entry {
                    image: backend.name.clone(),
                    field: Field::NewTag,
                },
                old: Some("v1".into()),
                new: Some("v2".into()),
            },
            Change {
                file: "charts/api/values-dev.yaml".into(),
                subject: Subject::Value {
                    path: "image.tag".into(),
                },
                old: Some("4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9012345678".into()),
                new: Some("9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b".into()),
            },
            Change {
                file: "web.yaml".into(),
                subject: Subject::Container {
                    image: web.name.clone(),
                    path: "spec.template.spec.containers[0].image".into(),
                },
                old: Some("reg/p/web:v1".into()),
                new: Some("reg/p/web:v2".into()),
            },
        ];
        let m = commit_message("dev", [&backend, &web], &changes, &BuildContext::default());
        assert_eq!(
            m,
            "promote(dev): backend v1 -> v2, web v1 -> v2, values-dev.yaml image.tag 4d5e6f7 -> 9a8b7c6\n\n\
Set in ov/kustomization.yaml:\n  reg/p/backend newTag: v1 -> v2\n\
Set in charts/api/values-dev.yaml:\n  image.tag: 4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9012345678 -> 9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b\n\
Set in web.yaml:\n  reg/p/web at spec.template.spec.containers[0].image: reg/p/web:v1 -> reg/p/web:v2\n\
\nPromoted-Image: reg/p/backend:v2\nPromoted-Image: reg/p/web:v2\n"
        );
    }
}
