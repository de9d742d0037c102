//! URL helpers for the smart-HTTP exchange: where each git request goes, and how
//! credentials written into a URL are taken out of it before anything can show it.

use percent_encoding::percent_decode_str;
use reqwest::Url;

use super::messages::sanitize;
use crate::plan::Credentials;

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

/// Removes userinfo from `url`, returning it percent-decoded.
pub fn take_userinfo(url: &mut Url) -> Option<Credentials> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let credentials = Credentials {
        username: decode(url.username()),
        password: url.password().map(decode).unwrap_or_default(),
    };
    // Cannot fail for http(s) URLs, which always have a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some(credentials)
}

/// Strips userinfo from a URL for a message. Only used on text that `Url` could not
/// parse, which is why the authority is found by hand here.
pub fn redact_str(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return sanitize(url);
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => sanitize(&format!("{}{}", &url[..rest_start], &rest[at + 1..])),
        None => sanitize(url),
    }
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
    fn userinfo_is_taken_out_and_decoded() {
        let mut u = url("https://ci:p%40ss%2Fw@h/repo.git");
        let auth = take_userinfo(&mut u).expect("userinfo");
        assert_eq!(auth.username, "ci");
        assert_eq!(auth.password, "p@ss/w");
        assert_eq!(u.as_str(), "https://h/repo.git");
        let mut u = url("https://token@h/repo.git");
        let auth = take_userinfo(&mut u).expect("userinfo");
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("token", "")
        );
        assert!(take_userinfo(&mut url("https://h/repo.git")).is_none());
    }

    #[test]
    fn only_two_hex_digits_make_an_escape() {
        let mut u = url("https://a%20b%zz%4:%E2%9C%93%+1%40@h/r");
        let auth = take_userinfo(&mut u).expect("userinfo");
        assert_eq!(auth.username, "a b%zz%4");
        assert_eq!(auth.password, "✓%+1@");
    }

    #[test]
    fn redact_str_drops_userinfo() {
        assert_eq!(redact_str("https://u:p@h/r@x"), "https://h/r@x");
        assert_eq!(redact_str("https://u:p@w@h:1/r"), "https://h:1/r");
        assert_eq!(redact_str("https://h/r"), "https://h/r");
        assert_eq!(redact_str("http://u:p@[::1"), "http://[::1");
        assert_eq!(redact_str("not a url\0"), "not a url ");
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
