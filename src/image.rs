//! Image references in the forms `kustomize edit set image` takes, and the checks that keep
//! values no registry would accept out of the devops repository.

use crate::kustomize::ImageSpec;

/// Parses `name:tag`, `name@sha256:…`, `name=newName`, `name=newName:tag`,
/// `name=newName@sha256:…` and `name=newName:tag@sha256:…`.
pub fn parse_spec(spec: &str) -> Result<ImageSpec, String> {
    let (name, rest, renamed) = match spec.split_once('=') {
        Some((name, rest)) => (name.to_string(), rest, true),
        None => {
            let (name, _, _) = split_reference(spec);
            (name.to_string(), spec, false)
        }
    };
    let (reference, tag, digest) = split_reference(rest);
    let image = ImageSpec {
        name,
        new_name: renamed.then(|| reference.to_string()),
        new_tag: tag.map(str::to_string),
        digest: digest.map(str::to_string),
    };
    check_name(&image.name)?;
    if let Some(new_name) = &image.new_name {
        check_name(new_name)?;
    }
    if let Some(tag) = &image.new_tag {
        check_tag(tag)?;
    }
    if let Some(digest) = &image.digest {
        check_digest(digest)?;
    }
    if image.new_name.is_none() && image.new_tag.is_none() && image.digest.is_none() {
        return Err(format!(
            "`{spec}` sets nothing: write name:tag, name@sha256:<digest> or name=newName:tag"
        ));
    }
    Ok(image)
}

/// Splits `name[:tag][@digest]`; a `:` before the last `/` belongs to a registry port.
fn split_reference(s: &str) -> (&str, Option<&str>, Option<&str>) {
    let (s, digest) = match s.rsplit_once('@') {
        Some((s, d)) => (s, Some(d)),
        None => (s, None),
    };
    let slash = s.rfind('/').map_or(0, |i| i + 1);
    match s[slash..].rfind(':') {
        Some(i) => (&s[..slash + i], Some(&s[slash + i + 1..]), digest),
        None => (s, None, digest),
    }
}

/// Image names as registries accept them: no spaces, no control characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-/:".contains(c);
    if name.is_empty()
        || name.len() > 255
        || !name.chars().all(ok_char)
        || name.starts_with('/')
        || name.ends_with('/')
        || name.contains("//")
        || !colon_is_a_port(name)
    {
        return Err(format!(
            "`{}` is not an image name: use letters, digits, `.`, `_`, `-`, `/` and a registry port, as in asia-east1-docker.pkg.dev/project/repo/app",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// A `:` belongs only to a registry's port (`localhost:5000/app`); anywhere else it
/// would be a tag taken for part of the name (`app:v1:2` is not the image `app:v1`).
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
pub fn check_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !first_ok || !rest_ok || tag.len() > 128 {
        return Err(format!(
            "`{}` is not a valid image tag: a tag is 1 to 128 letters, digits, `_`, `.` or `-`, and does not start with `.` or `-`",
            tag.escape_debug()
        ));
    }
    Ok(())
}

pub fn check_digest(digest: &str) -> Result<(), String> {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "`{}` is not a digest: write sha256: followed by 64 lowercase hex digits",
            digest.escape_debug()
        ));
    }
    Ok(())
}

/// Git object names: 7 to 64 hex digits (abbreviated, SHA-1 or SHA-256).
pub fn check_commit_sha(sha: &str) -> Result<(), String> {
    if !(7..=64).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "`{}` is not a commit SHA: expected 7 to 64 hex digits such as Cloud Build's $COMMIT_SHA",
            sha.escape_debug()
        ));
    }
    Ok(())
}

/// The last path component, for commit subjects: `…/tomoda-backend` gives `tomoda-backend`.
pub fn short_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
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
    fn a_colon_in_a_name_is_only_a_registry_port() {
        // Found by the hostile corpus: `app:v1:2` set the tag `2` of an image named `app:v1`.
        let e = parse_spec("reg.io/app:v1:2").unwrap_err();
        assert!(e.contains("`reg.io/app:v1` is not an image name"), "{e}");
        for bad in [
            "app:v1",
            "reg:x/app",
            ":5000/app",
            "reg:/app",
            "localhost:5000",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in ["localhost:5000/app", "reg.io:443/p/app", "app"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_rule() {
        assert!(parse_spec("app").unwrap_err().contains("sets nothing"));
        assert!(
            parse_spec("app:-x")
                .unwrap_err()
                .contains("not a valid image tag")
        );
        assert!(
            parse_spec("app@sha256:xyz")
                .unwrap_err()
                .contains("64 lowercase hex")
        );
        assert!(
            parse_spec("my app:v1")
                .unwrap_err()
                .contains("not an image name")
        );
        for bad in ["", ".x", "a b", "a\nb", "a#b", "a:b", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
        for good in ["v1.2.3", "_x", "0a1b2c3", &"x".repeat(128)] {
            assert!(check_tag(good).is_ok(), "{good:?}");
        }
        assert!(check_commit_sha("4d5e6f7").is_ok());
        assert!(check_commit_sha("xyz1234").is_err());
        assert_eq!(short_name("a/b/tomoda-backend"), "tomoda-backend");
    }
}
