//! Image references in the forms `kustomize edit set image` takes, and the checks that keep
//! values no registry would accept out of the devops repository.

use std::fmt;

use crate::kustomize::ImageSpec;

/// A value that cannot go into an `images:` entry; each says which rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// Not an entry's `name`: a repository, optionally with a `:tag` (`imagehost:latest`).
    Name(String),
    /// Not a `newName`: a repository without a tag (the tag goes in `newTag`).
    NewName(String),
    Tag(String),
    Digest(String),
    /// The spec names an image but sets none of newName, newTag and digest.
    SetsNothing(String),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Name(name) => write!(
                f,
                "`{}` is not an image name: use letters, digits, `.`, `_`, `-`, `/`, a registry port and an optional `:tag`, as in asia-east1-docker.pkg.dev/project/repo/app",
                name.escape_debug()
            ),
            ImageError::NewName(name) => write!(
                f,
                "`{}` is not an image name: use letters, digits, `.`, `_`, `-`, `/` and a registry port, as in asia-east1-docker.pkg.dev/project/repo/app",
                name.escape_debug()
            ),
            ImageError::Tag(tag) => write!(
                f,
                "`{}` is not a valid image tag: a tag is 1 to 128 letters, digits, `_`, `.` or `-`, and does not start with `.` or `-`",
                tag.escape_debug()
            ),
            ImageError::Digest(digest) => write!(
                f,
                "`{}` is not a digest: write sha256: followed by 64 lowercase hex digits",
                digest.escape_debug()
            ),
            ImageError::SetsNothing(spec) => write!(
                f,
                "`{spec}` sets nothing: write name:tag, name@sha256:<digest> or name=newName:tag"
            ),
        }
    }
}

impl std::error::Error for ImageError {}

/// For callers that build an [`crate::error::Error`] from the message.
impl From<ImageError> for String {
    fn from(e: ImageError) -> String {
        e.to_string()
    }
}

/// A build's commit that is not a git object name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotACommitSha(pub String);

impl fmt::Display for NotACommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a commit SHA: expected 7 to 64 hex digits such as Cloud Build's $COMMIT_SHA",
            self.0.escape_debug()
        )
    }
}

impl std::error::Error for NotACommitSha {}

impl From<NotACommitSha> for String {
    fn from(e: NotACommitSha) -> String {
        e.to_string()
    }
}

/// `kustomize edit set image`'s placeholder: keep the entry's value of this field.
pub const KEEP: &str = "*";

/// Parses the forms of `kustomize edit set image`: `name:tag`, `name@sha256:…`,
/// `name=newName`, `name=newName:tag`, `name=newName@sha256:…` and
/// `name=newName:tag@sha256:…`. As there, a name may carry a tag of its own: the last
/// `:tag` is the one to set, so `imagehost:latest:210` sets the tag 210 of the entry
/// named `imagehost:latest`, and `imagehost:latest=ghcr.io/x/y:210` renames it.
///
/// `*` in place of the new name, tag or digest keeps the entry's value, as kustomize's
/// setimage.go does (`name=*:v2`, `name=new:*`, `name:v2@*`); for an entry that does not
/// exist yet it sets nothing. A field not given is kept too (unlike kustomize, which
/// empties it), so `*` matters most for the digest: `name:v2@*` keeps the pin that a new
/// tag would otherwise drop.
pub fn parse_spec(spec: &str) -> Result<ImageSpec, ImageError> {
    let (name, renamed, rest) = match spec.split_once('=') {
        Some((name, rest)) => (name, true, rest),
        None => (split_reference(spec).0, false, spec),
    };
    let (reference, tag, digest) = split_reference(rest);
    let given = |value: Option<&str>| value.filter(|v| *v != KEEP).map(str::to_string);
    let image = ImageSpec {
        name: name.to_string(),
        new_name: given(renamed.then_some(reference)),
        new_tag: given(tag),
        digest: given(digest),
        keep_digest: digest == Some(KEEP),
        pin: false,
    };
    check_name(&image.name)?;
    if let Some(new_name) = &image.new_name {
        check_new_name(new_name)?;
    }
    if let Some(tag) = &image.new_tag {
        check_tag(tag)?;
    }
    if let Some(digest) = &image.digest {
        check_digest(digest)?;
    }
    let kept = [renamed.then_some(reference), tag, digest].contains(&Some(KEEP));
    if image.new_name.is_none() && image.new_tag.is_none() && image.digest.is_none() && !kept {
        return Err(ImageError::SetsNothing(spec.to_string()));
    }
    Ok(image)
}

/// Splits `name[:tag][@digest]`; a `:` before the last `/` belongs to a registry port.
pub fn split_reference(s: &str) -> (&str, Option<&str>, Option<&str>) {
    let (s, digest) = match s.rsplit_once('@') {
        Some((s, d)) => (s, Some(d)),
        None => (s, None),
    };
    let (name, tag) = split_tag(s);
    (name, tag, digest)
}

/// `repository[:tag]`: the tag is after the last `:` of the last path component.
pub fn split_tag(name: &str) -> (&str, Option<&str>) {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
        None => (name, None),
    }
}

/// An entry's `name`: a repository as registries accept it, optionally with a tag, since
/// kustomize also matches `name: imagehost:latest` against `image: imagehost:latest`.
pub fn check_name(name: &str) -> Result<(), ImageError> {
    let (repository, tag) = split_tag(name);
    if is_repository(repository) && tag.is_none_or(is_tag) {
        Ok(())
    } else {
        Err(ImageError::Name(name.to_string()))
    }
}

/// A `newName`: a repository without a tag.
pub fn check_new_name(name: &str) -> Result<(), ImageError> {
    if is_repository(name) {
        Ok(())
    } else {
        Err(ImageError::NewName(name.to_string()))
    }
}

/// No spaces, no control characters, `/` between non-empty parts, `:` only for a port.
fn is_repository(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-/:".contains(c);
    !name.is_empty()
        && name.len() <= 255
        && name.chars().all(ok_char)
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && colon_is_a_port(name)
}

/// A `:` belongs only to a registry's port (`localhost:5000/app`); anywhere else it
/// would be a tag taken for part of the name (`app:v1:2` is no repository).
fn colon_is_a_port(name: &str) -> bool {
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    if parts.clone().any(|p| p.contains(':')) {
        return false;
    }
    match first.split_once(':') {
        None => true,
        Some((host, port)) => {
            !host.is_empty()
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && name.contains('/')
        }
    }
}

/// Tags as the OCI distribution spec defines them: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), ImageError> {
    if is_tag(tag) {
        Ok(())
    } else {
        Err(ImageError::Tag(tag.to_string()))
    }
}

fn is_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    first_ok && rest_ok && tag.len() <= 128
}

pub fn check_digest(digest: &str) -> Result<(), ImageError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ImageError::Digest(digest.to_string()));
    }
    Ok(())
}

/// Git object names: 7 to 64 hex digits (abbreviated, SHA-1 or SHA-256).
pub fn check_commit_sha(sha: &str) -> Result<(), NotACommitSha> {
    if !(7..=64).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NotACommitSha(sha.to_string()));
    }
    Ok(())
}

/// The last path component, for commit subjects: `…/tomoda-backend` gives `tomoda-backend`,
/// and an entry named with a tag (`imagehost:latest`) gives the repository's (`imagehost`).
pub fn short_name(name: &str) -> &str {
    let repository = split_tag(name).0;
    repository.rsplit('/').next().unwrap_or(repository)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        name: &str,
        new_name: Option<&str>,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> ImageSpec {
        ImageSpec {
            name: name.into(),
            new_name: new_name.map(Into::into),
            new_tag: tag.map(Into::into),
            digest: digest.map(Into::into),
            ..ImageSpec::default()
        }
    }

    #[test]
    fn the_kustomize_edit_set_image_forms_parse() {
        let d = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            parse_spec("nginx:1.7").unwrap(),
            spec("nginx", None, Some("1.7"), None)
        );
        assert_eq!(
            parse_spec("localhost:5000/app:v1").unwrap(),
            spec("localhost:5000/app", None, Some("v1"), None)
        );
        assert_eq!(
            parse_spec(&format!("app@{d}")).unwrap(),
            spec("app", None, None, Some(&d))
        );
        assert_eq!(
            parse_spec("app=reg.io/p/app:v2").unwrap(),
            spec("app", Some("reg.io/p/app"), Some("v2"), None)
        );
        assert_eq!(
            parse_spec(&format!("app=reg:443/app:v2@{d}")).unwrap(),
            spec("app", Some("reg:443/app"), Some("v2"), Some(&d))
        );
        assert_eq!(
            parse_spec("app=other").unwrap(),
            spec("app", Some("other"), None, None)
        );
    }

    #[test]
    fn a_star_keeps_the_entrys_value_as_in_kustomize() {
        let d = format!("sha256:{}", "0".repeat(64));
        // setimage.go's cases: `*` as new name, tag or digest keeps that field.
        assert_eq!(
            parse_spec("image1=*:v1").unwrap(),
            spec("image1", None, Some("v1"), None)
        );
        assert_eq!(
            parse_spec("image1=my-image1:*").unwrap(),
            spec("image1", Some("my-image1"), None, None)
        );
        assert_eq!(
            parse_spec("image1=*:*").unwrap(),
            spec("image1", None, None, None)
        );
        assert_eq!(
            parse_spec(&format!("image2=*@{d}")).unwrap(),
            spec("image2", None, None, Some(&d))
        );
        let keep_digest = parse_spec("image2=my-image2@*").unwrap();
        assert_eq!(keep_digest.new_name.as_deref(), Some("my-image2"));
        assert!(keep_digest.keep_digest && keep_digest.digest.is_none());
        let retag = parse_spec("reg.io/app:v2@*").unwrap();
        assert_eq!(retag.name, "reg.io/app");
        assert_eq!(retag.new_tag.as_deref(), Some("v2"));
        assert!(retag.keep_digest);
        assert_eq!(
            parse_spec("localhost:5000/app:*").unwrap(),
            spec("localhost:5000/app", None, None, None)
        );
        // Only a whole field is a placeholder.
        assert_eq!(parse_spec("app:v*"), Err(ImageError::Tag("v*".into())));
        assert_eq!(
            parse_spec("app=reg/*:v1"),
            Err(ImageError::NewName("reg/*".into()))
        );
    }

    #[test]
    fn a_colon_in_a_repository_is_only_a_registry_port() {
        for bad in [
            "app:v1",
            "reg:x/app",
            ":5000/app",
            "reg:/app",
            "localhost:5000",
        ] {
            assert_eq!(
                check_new_name(bad),
                Err(ImageError::NewName(bad.into())),
                "{bad}"
            );
        }
        for good in ["localhost:5000/app", "reg.io:443/p/app", "app"] {
            assert!(check_new_name(good).is_ok(), "{good}");
        }
        // A new name carries no tag: `=reg/app:v1:2` would set newName `reg/app:v1`.
        assert_eq!(
            parse_spec("app=reg.io/app:v1:2"),
            Err(ImageError::NewName("reg.io/app:v1".into()))
        );
    }

    #[test]
    fn names_that_carry_a_tag_are_matched_as_written() {
        // kustomize v5 matches `- name: imagehost:latest` against `image: imagehost:latest`;
        // `kustomize edit set image` reads the last `:tag` as the one to set.
        assert_eq!(
            parse_spec("imagehost:latest:210"),
            Ok(spec("imagehost:latest", None, Some("210"), None))
        );
        assert_eq!(
            parse_spec("imagehost:latest=ghcr.io/x/y:210"),
            Ok(spec(
                "imagehost:latest",
                Some("ghcr.io/x/y"),
                Some("210"),
                None
            ))
        );
        assert_eq!(
            parse_spec("localhost:5000/app:v1:v2"),
            Ok(spec("localhost:5000/app:v1", None, Some("v2"), None))
        );
        assert_eq!(
            parse_spec("reg.io/app:v1:2"),
            Ok(spec("reg.io/app:v1", None, Some("2"), None))
        );
        for good in [
            "imagehost:latest",
            "app:v1",
            "localhost:5000/app:1.2",
            "reg.io/p/app:_x",
        ] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "app:v1:2",
            "app:",
            "app:-x",
            "reg:x/app:v1",
            "app:v 1",
            "reg/app:v1/x",
        ] {
            assert_eq!(check_name(bad), Err(ImageError::Name(bad.into())), "{bad}");
        }
        assert_eq!(
            parse_spec("app:v1:2:3"),
            Err(ImageError::Name("app:v1:2".into()))
        );
        assert_eq!(
            split_tag("localhost:5000/app"),
            ("localhost:5000/app", None)
        );
        assert_eq!(split_tag("imagehost:latest"), ("imagehost", Some("latest")));
    }

    #[test]
    fn bad_values_are_refused_with_the_rule() {
        assert_eq!(
            parse_spec("app").unwrap_err().to_string(),
            "`app` sets nothing: write name:tag, name@sha256:<digest> or name=newName:tag"
        );
        assert_eq!(parse_spec("app:-x"), Err(ImageError::Tag("-x".into())));
        assert!(
            parse_spec("app@sha256:xyz")
                .unwrap_err()
                .to_string()
                .ends_with("is not a digest: write sha256: followed by 64 lowercase hex digits")
        );
        assert_eq!(
            parse_spec("my app:v1").unwrap_err().to_string(),
            "`my app` is not an image name: use letters, digits, `.`, `_`, `-`, `/`, a registry port and an optional `:tag`, as in asia-east1-docker.pkg.dev/project/repo/app"
        );
        assert_eq!(
            parse_spec("app=my\tapp").unwrap_err().to_string(),
            "`my\\tapp` is not an image name: use letters, digits, `.`, `_`, `-`, `/` and a registry port, as in asia-east1-docker.pkg.dev/project/repo/app"
        );
        for bad in ["", ".x", "a b", "a\nb", "a#b", "a:b", &"x".repeat(129)] {
            assert_eq!(check_tag(bad), Err(ImageError::Tag(bad.into())), "{bad:?}");
        }
        for good in ["v1.2.3", "_x", "0a1b2c3", &"x".repeat(128)] {
            assert!(check_tag(good).is_ok(), "{good:?}");
        }
        assert!(check_commit_sha("4d5e6f7").is_ok());
        assert_eq!(
            check_commit_sha("xyz1234").unwrap_err().to_string(),
            "`xyz1234` is not a commit SHA: expected 7 to 64 hex digits such as Cloud Build's $COMMIT_SHA"
        );
        assert_eq!(short_name("a/b/tomoda-backend"), "tomoda-backend");
    }
}
