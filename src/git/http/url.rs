//! URL helpers for the smart-HTTP exchange: where each git request goes, and how
//! credentials written into a URL are taken out of it before anything can show it.

use reqwest::Url;

pub(super) use crate::repo::{redact_str, take_userinfo};

/// `base` + `/tail` + optional query; the base's own query and fragment are dropped.
pub(super) fn service_url(base: &Url, tail: &str, query: Option<&str>) -> Url {
    let mut url = base.clone();
    let path = format!("{}/{tail}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(query);
    url.set_fragment(None);
    url
}

/// New repository base from the final URL of a redirected info/refs request.
pub(super) fn redirected_base(final_url: &Url) -> Option<Url> {
    let path = final_url.path().strip_suffix("/info/refs")?;
    let mut base = final_url.clone();
    base.set_path(path);
    base.set_query(None);
    base.set_fragment(None);
    take_userinfo(&mut base);
    Some(base)
}

/// Credentials follow a redirect only to the same host, on the same port or upgraded
/// from http to https.
pub(super) fn keeps_auth(from: &Url, to: &Url) -> bool {
    let same_host =
        from.host_str().map(str::to_ascii_lowercase) == to.host_str().map(str::to_ascii_lowercase);
    let same_port = from.port_or_known_default() == to.port_or_known_default();
    let upgrade = from.scheme() == "http" && to.scheme() == "https";
    same_host && (same_port || upgrade)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    #[test]
    fn service_url_joins_with_and_without_slash() {
        let q = Some("service=git-upload-pack");
        for base in ["https://h/org/repo.git", "https://h/org/repo.git/"] {
            assert_eq!(
                service_url(&url(base), "info/refs", q).as_str(),
                "https://h/org/repo.git/info/refs?service=git-upload-pack"
            );
        }
        assert_eq!(
            service_url(&url("http://h:8080/r?x=1#f"), "git-receive-pack", None).as_str(),
            "http://h:8080/r/git-receive-pack"
        );
        assert_eq!(
            service_url(&url("https://h"), "git-upload-pack", None).as_str(),
            "https://h/git-upload-pack"
        );
    }

    #[test]
    fn redirect_base_is_final_url_minus_info_refs() {
        let got = redirected_base(&url(
            "https://new.example/org/repo.git/info/refs?service=git-upload-pack",
        ));
        assert_eq!(
            got.map(String::from).as_deref(),
            Some("https://new.example/org/repo.git")
        );
        let got = redirected_base(&url("https://u:p@h/r/info/refs"));
        assert_eq!(got.map(String::from).as_deref(), Some("https://h/r"));
        assert!(redirected_base(&url("https://h/login?next=/r")).is_none());
    }

    #[test]
    fn auth_follows_only_same_host_redirects() {
        assert!(keeps_auth(&url("https://h/a"), &url("https://H/b")));
        assert!(keeps_auth(&url("http://h/a"), &url("https://h/b")));
        assert!(!keeps_auth(&url("https://h/a"), &url("https://other/b")));
        assert!(!keeps_auth(&url("https://h/a"), &url("https://h:8443/b")));
    }
}
