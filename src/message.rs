//! The devops commit's message: a subject that reads well in `git log --oneline`, a body
//! that leads back to the build, and trailers that tools can parse.

use crate::context::BuildContext;
use crate::image::{short_name, split_tag};
use crate::kustomize::{Change, Field, ImageSpec};

pub fn commit_message(
    environment: &str,
    overlay_file: &str,
    images: &[ImageSpec],
    changes: &[Change],
    context: &BuildContext,
) -> String {
    let mut subject = format!("promote({environment}): ");
    let mut summaries = Vec::new();
    for image in images {
        let mine: Vec<&Change> = changes.iter().filter(|c| c.image == image.name).collect();
        // The field people look at: the tag, else the digest, else the name.
        let headline = [Field::NewTag, Field::Digest, Field::NewName]
            .iter()
            .find_map(|f| mine.iter().find(|c| c.field == *f && c.new.is_some()));
        if let Some(change) = headline {
            summaries.push(format!(
                "{} {} -> {}",
                short_name(&image.name),
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

    let mut body = format!("Set in {overlay_file}:\n");
    for change in changes {
        body.push_str(&change_line(change));
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

    let mut trailers: Vec<String> = images
        .iter()
        .map(|i| format!("Promoted-Image: {}", reference(i)))
        .collect();
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
    format!(
        "  {} {}: {} -> {}\n",
        change.image,
        change.field.key(),
        change.old.as_deref().unwrap_or("(none)"),
        change.new.as_deref().unwrap_or("(removed)")
    )
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
    fn subject_body_and_trailers() {
        let image = ImageSpec {
            name: "reg/p/tomoda-backend".into(),
            new_name: None,
            new_tag: Some("4d5e6f7aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into()),
            digest: None,
        };
        let changes = vec![Change {
            image: image.name.clone(),
            field: Field::NewTag,
            old: Some("0a1b2c3bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into()),
            new: image.new_tag.clone(),
        }];
        let context = BuildContext {
            commit_sha: image.new_tag.clone(),
            build_id: Some("b-42".into()),
            repo_name: Some("tomoda".into()),
            ..Default::default()
        };
        let m = commit_message("dev", "ov/kustomization.yaml", &[image], &changes, &context);
        let mut lines = m.lines();
        assert_eq!(
            lines.next(),
            Some("promote(dev): tomoda-backend 0a1b2c3 -> 4d5e6f7")
        );
        assert_eq!(lines.next(), Some(""));
        let tagged = ImageSpec {
            name: "imagehost:latest".into(),
            new_name: None,
            new_tag: Some("210".into()),
            digest: None,
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
}
