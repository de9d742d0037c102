//! What a CI user is told when a git HTTP request fails: what happened, naming the URL
//! (never with credentials), and one hint saying what to do. libgit2 copies the
//! `message` into the `git2::Error` the caller reports; the `hint` travels beside it
//! (see `failure.rs`), so each failure gets exactly one hint.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use reqwest::{StatusCode, Url};

use super::HttpSettings;

/// How the user supplies the token, named in authentication hints.
const TOKEN_HINT: &str = "GIT_TOKEN (or --git-token-file)";

/// A failure as the user reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Told {
    /// What happened and where.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl Told {
    pub(super) fn new(message: impl Into<String>, hint: impl Into<String>) -> Told {
        Told {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// Whether credentials went with a request, for choosing the hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AuthState {
    Sent,
    NotConfigured,
    DroppedOnRedirect,
}

/// A non-2xx, non-redirect answer. `push` says which access the request needed.
pub(super) fn status_message(
    status: StatusCode,
    url: &Url,
    push: bool,
    auth: AuthState,
    server_said: Option<&str>,
) -> Told {
    let code = status.as_u16();
    let access = if push { "write" } else { "read" };
    let said = server_said.map_or(String::new(), |s| format!(" (the server said: \"{s}\")"));
    match (code, auth) {
        (401 | 403, AuthState::DroppedOnRedirect) => Told::new(
            format!(
                "authentication required: HTTP {code} from {url}{said}; the token was not sent because the server redirected to another host"
            ),
            "use the repository's final URL instead",
        ),
        (401, AuthState::Sent) => Told::new(
            format!("authentication failed: HTTP 401 from {url}{said}"),
            format!(
                "the server did not accept the token in {TOKEN_HINT}: it is wrong, expired or revoked; set a valid one"
            ),
        ),
        (401, AuthState::NotConfigured) => Told::new(
            format!("authentication required: HTTP 401 from {url}{said}, and no token was given"),
            format!("set {TOKEN_HINT} to a token for this repository"),
        ),
        (403, AuthState::Sent) => Told::new(
            format!("access denied: HTTP 403 from {url}{said}"),
            format!(
                "the token in {TOKEN_HINT} was accepted but lacks permission: give it {access} access to this repository"
            ),
        ),
        (403, AuthState::NotConfigured) => Told::new(
            format!("access denied: HTTP 403 from {url}{said}, and no token was given"),
            format!("set {TOKEN_HINT} to a token with {access} access to this repository"),
        ),
        (404, _) => Told::new(
            format!("repository not found or no access: HTTP 404 from {url}{said}"),
            "check the repository URL, and that the token can read this repository (servers answer 404 to hide private ones)",
        ),
        (407, _) => Told::new(
            format!("proxy authentication required: HTTP 407 for {url}{said}"),
            "put the proxy's credentials in HTTPS_PROXY/HTTP_PROXY, or list the git host in NO_PROXY",
        ),
        (408 | 429 | 500..=599, _) => Told::new(
            format!(
                "the git server answered HTTP {code} ({}) for {url}{said}",
                status.canonical_reason().unwrap_or("error")
            ),
            "the problem is on the server side or temporary; retry later",
        ),
        _ => Told::new(
            format!(
                "unexpected answer HTTP {code} ({}) from {url}{said}",
                status.canonical_reason().unwrap_or("unknown status")
            ),
            "check the repository URL",
        ),
    }
}

/// A 2xx answer that is not git's: an HTML login page, a web UI URL, a dumb server.
pub(super) fn not_git_message(url: &Url, found: Option<&str>, expected: &str) -> Told {
    let found = found.map_or("none".to_string(), sanitize);
    let html = if found.to_ascii_lowercase().starts_with("text/html") {
        " (an HTML page usually means a web UI URL, a login page or a proxy)"
    } else {
        ""
    };
    Told::new(
        format!(
            "the server at {url} did not answer as a git smart-HTTP server (Content-Type {found}, expected {expected}){html}"
        ),
        "check the repo URL",
    )
}

/// A request that got no HTTP answer.
pub(super) fn send_error_message(
    error: &reqwest::Error,
    url: &Url,
    settings: &HttpSettings,
) -> Told {
    let host = match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => url.to_string(),
    };
    let all = causes(error);
    if error.is_timeout() {
        return if error.is_connect() {
            Told::new(
                format!(
                    "could not connect to {host} within {} (for {url})",
                    fmt_secs(settings.connect_timeout)
                ),
                "check that the git server is reachable from this machine (network, proxy, firewall)",
            )
        } else {
            Told::new(
                format!(
                    "no answer from {url} within {}; the git server or the network is slow or stuck",
                    fmt_secs(settings.timeout)
                ),
                "retry, or raise the HTTP timeout (--timeout)",
            )
        };
    }
    if let Some(tls) = all.iter().find_map(|c| c.downcast_ref::<rustls::Error>()) {
        return tls_message(tls, url);
    }
    let refused = all.iter().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::ConnectionRefused)
    });
    if refused {
        return Told::new(
            format!("connection refused by {host} (for {url}): nothing listens there"),
            "check the repository URL and that the git server is up",
        );
    }
    if error.is_connect() {
        return Told::new(
            format!(
                "could not connect to {host} (for {url}): {}",
                error_chain(error)
            ),
            "check the repository URL and network access",
        );
    }
    Told::new(
        format!("the HTTP request to {url} failed: {}", error_chain(error)),
        "retry, and check the repository URL",
    )
}

/// An answer that broke off while its body was read.
pub(super) fn read_error_message(
    error: &io::Error,
    url: &str,
    settings: &HttpSettings,
    received: u64,
) -> Told {
    let timed_out = error.kind() == io::ErrorKind::TimedOut
        || causes(error).iter().any(|c| {
            c.downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_timeout)
        });
    if timed_out {
        Told::new(
            format!(
                "no complete answer from {url} within {} ({received} bytes had arrived)",
                fmt_secs(settings.timeout)
            ),
            "retry, or raise the HTTP timeout (--timeout)",
        )
    } else {
        Told::new(
            format!(
                "the connection to {url} broke while receiving the answer ({})",
                error_chain(error)
            ),
            "retry",
        )
    }
}

fn tls_message(error: &rustls::Error, url: &Url) -> Told {
    use rustls::CertificateError as C;
    let host = url.host_str().unwrap_or("the server");
    let hint = match error {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA; if the server uses a private or TLS-intercepting CA, set SSL_CERT_FILE to a PEM file that contains that CA's certificate"
        }
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => {
            "the certificate is not valid for this host name; check the host in the repository URL"
        }
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "the certificate is outside its validity period (or this machine's clock is wrong)",
        _ => {
            "check the repository URL, and set SSL_CERT_FILE to the CA's PEM file if the server uses a private CA"
        }
    };
    Told::new(
        format!("TLS handshake with {host} failed (for {url}): {error}"),
        hint,
    )
}

/// The error and its causes, looking inside `io::Error` wrappers (whose `source()` skips
/// the wrapped error itself).
pub(super) fn causes<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        if out.len() >= 16 {
            break;
        }
        out.push(e);
        next = match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    out
}

/// "outer: inner: root" without repeats (wrappers often repeat their cause).
pub(super) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in causes(error) {
        let text = sanitize(&cause.to_string());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// Control characters (NUL included, which git2 cannot carry) become spaces.
pub(super) use crate::repo::sanitize;

pub(super) fn fmt_secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive_pack() -> Url {
        Url::parse("https://h/devops.git/info/refs?service=git-receive-pack").unwrap()
    }

    #[test]
    fn a_401_with_a_token_says_the_token_was_not_accepted() {
        let told = status_message(
            StatusCode::UNAUTHORIZED,
            &receive_pack(),
            true,
            AuthState::Sent,
            Some("denied"),
        );
        assert_eq!(
            told,
            Told::new(
                "authentication failed: HTTP 401 from https://h/devops.git/info/refs?service=git-receive-pack (the server said: \"denied\")",
                "the server did not accept the token in GIT_TOKEN (or --git-token-file): it is wrong, expired or revoked; set a valid one"
            )
        );
    }

    #[test]
    fn a_401_without_a_token_says_to_set_one() {
        let told = status_message(
            StatusCode::UNAUTHORIZED,
            &receive_pack(),
            false,
            AuthState::NotConfigured,
            None,
        );
        assert_eq!(
            told,
            Told::new(
                "authentication required: HTTP 401 from https://h/devops.git/info/refs?service=git-receive-pack, and no token was given",
                "set GIT_TOKEN (or --git-token-file) to a token for this repository"
            )
        );
    }

    #[test]
    fn a_403_says_the_token_lacks_the_access_the_request_needed() {
        let told = status_message(
            StatusCode::FORBIDDEN,
            &receive_pack(),
            true,
            AuthState::Sent,
            None,
        );
        assert_eq!(
            told,
            Told::new(
                "access denied: HTTP 403 from https://h/devops.git/info/refs?service=git-receive-pack",
                "the token in GIT_TOKEN (or --git-token-file) was accepted but lacks permission: give it write access to this repository"
            )
        );
    }

    #[test]
    fn a_404_says_url_or_no_read_access() {
        let told = status_message(
            StatusCode::NOT_FOUND,
            &receive_pack(),
            false,
            AuthState::Sent,
            None,
        );
        assert_eq!(
            told,
            Told::new(
                "repository not found or no access: HTTP 404 from https://h/devops.git/info/refs?service=git-receive-pack",
                "check the repository URL, and that the token can read this repository (servers answer 404 to hide private ones)"
            )
        );
    }

    #[test]
    fn redirects_and_server_errors_get_their_own_hint() {
        let u = receive_pack();
        let told = status_message(
            StatusCode::UNAUTHORIZED,
            &u,
            false,
            AuthState::DroppedOnRedirect,
            None,
        );
        assert!(
            told.message.contains("redirected to another host"),
            "{told:?}"
        );
        let told = status_message(StatusCode::BAD_GATEWAY, &u, false, AuthState::Sent, None);
        assert!(told.message.contains("HTTP 502 (Bad Gateway)"), "{told:?}");
        assert!(told.hint.contains("retry"), "{told:?}");
    }

    #[test]
    fn seconds_are_readable() {
        assert_eq!(fmt_secs(Duration::from_secs(30)), "30s");
        assert_eq!(fmt_secs(Duration::from_millis(2500)), "2.5s");
    }
}
