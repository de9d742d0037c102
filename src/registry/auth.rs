//! Where registry credentials come from, tried in this order: `--registry-token`
//! (PROMOTE_REGISTRY_TOKEN), Docker's `config.json`, the GCE metadata server's access
//! token (Google registries only), else none. The first source that has a credential for
//! the host is the one used, and errors name it (never its value). And the two
//! challenges a registry may answer with: `Basic realm=…` and `Bearer realm=…,service=…,
//! scope=…`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::reference::{DOCKER_HUB, Reference};
use crate::secrets;

/// The user name Google registries take with an OAuth2 access token.
pub const GOOGLE_USERNAME: &str = "oauth2accesstoken";
/// Where the GCE metadata server answers; `PROMOTE_METADATA_URL` overrides it.
pub const METADATA_URL: &str = "http://metadata.google.internal";
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
/// Off Google Cloud nothing answers there (or the name does not resolve): give up
/// quickly rather than hold the build.
const METADATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);

/// The client for the metadata server: plain HTTP on the VM's own link, so never through
/// a proxy (as Google's own libraries do), and short timeouts.
pub fn metadata_client(tls: rustls::ClientConfig) -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .connect_timeout(METADATA_CONNECT_TIMEOUT)
        .timeout(METADATA_TIMEOUT)
        .build()
        .map_err(|e| crate::git::http::error_chain(&e))
}

/// Where a credential came from, as errors and logs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    DockerConfig(PathBuf),
    Metadata,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => write!(f, "--registry-token (PROMOTE_REGISTRY_TOKEN)"),
            Source::DockerConfig(path) => write!(f, "Docker's config {}", path.display()),
            Source::Metadata => write!(f, "the GCE metadata server's access token"),
        }
    }
}

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
    pub source: Source,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credential({}, ***, from {})",
            self.username, self.source
        )
    }
}

/// What the credential sources are on this machine; read once at the start.
#[derive(Clone, Default)]
pub struct Sources {
    /// `--registry-token`: `USER:PASSWORD`, or a bare token sent as user
    /// `oauth2accesstoken` (what `gcloud auth print-access-token` gives; GHCR and others
    /// ignore the user name).
    pub token: Option<String>,
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
    /// Base URL of the GCE metadata server.
    pub metadata_url: String,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("docker_config", &self.docker_config)
            .field("metadata_url", &self.metadata_url)
            .finish()
    }
}

impl Sources {
    /// From this process's environment (`DOCKER_CONFIG`, `HOME`, `PROMOTE_METADATA_URL`);
    /// the token is registered as a secret here, before anything can print it.
    pub fn from_env(token: Option<String>) -> Sources {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let docker_config = var("DOCKER_CONFIG")
            .map(|d| PathBuf::from(d).join("config.json"))
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")));
        let token = token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        if let Some(t) = &token {
            secrets::register(t);
            if let Some((_, password)) = t.split_once(':') {
                secrets::register(password);
            }
        }
        Sources {
            token,
            docker_config,
            metadata_url: std::env::var("PROMOTE_METADATA_URL")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| METADATA_URL.to_string()),
        }
    }

    /// The first source with a credential for `reference`'s host, and notes on the
    /// sources that could not be used (for the log and for auth errors).
    pub fn credential(
        &self,
        reference: &Reference,
        metadata: &reqwest::blocking::Client,
    ) -> (Option<Credential>, Vec<String>) {
        let mut notes = Vec::new();
        if let Some(token) = &self.token {
            let (username, password) = match token.split_once(':') {
                Some((u, p)) => (u.to_string(), p.to_string()),
                None => (GOOGLE_USERNAME.to_string(), token.clone()),
            };
            return (
                Some(Credential {
                    username,
                    password,
                    source: Source::Flag,
                }),
                notes,
            );
        }
        if let Some(path) = &self.docker_config {
            match std::fs::read_to_string(path) {
                Ok(text) => match docker_config_credential(&text, &reference.host) {
                    Ok(Found::Credential(username, password)) => {
                        secrets::register(&password);
                        return (
                            Some(Credential {
                                username,
                                password,
                                source: Source::DockerConfig(path.clone()),
                            }),
                            notes,
                        );
                    }
                    Ok(Found::Skipped(why)) => {
                        notes.push(format!("{}: {why}", path.display()));
                    }
                    Ok(Found::Nothing) => {}
                    Err(why) => notes.push(format!("{} skipped: {why}", path.display())),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => notes.push(format!("{} skipped: {e}", path.display())),
            }
        }
        if reference.is_google() {
            match metadata_token(metadata, &self.metadata_url) {
                Ok(token) => {
                    return (
                        Some(Credential {
                            username: GOOGLE_USERNAME.to_string(),
                            password: token,
                            source: Source::Metadata,
                        }),
                        notes,
                    );
                }
                Err(why) => notes.push(format!("no GCE metadata server token ({why})")),
            }
        }
        (None, notes)
    }
}

/// What Docker's config.json holds for one host.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Credential(String, String),
    /// There is something, but not what this tool can use; why.
    Skipped(String),
    Nothing,
}

/// `auths` entries are keyed by host, `https://host`, or (Docker Hub) the old
/// `https://index.docker.io/v1/`; `auth` is base64 of `user:password` (some tools write
/// `username` and `password` instead). Credential helpers are programs this tool does
/// not run.
fn docker_config_credential(text: &str, host: &str) -> Result<Found, String> {
    let config: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let entry = config["auths"].as_object().and_then(|auths| {
        auths
            .iter()
            .find(|(key, _)| config_key_host(key) == host)
            .map(|(_, v)| v)
    });
    let not_user_password = || format!("the `auth` of {host} is not base64 of user:password");
    if let Some(entry) = entry {
        let field = |k: &str| entry[k].as_str().filter(|s| !s.is_empty());
        if let Some(auth) = field("auth") {
            let decoded = base64_decode(auth.trim())
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(not_user_password)?;
            let (user, password) = decoded.split_once(':').ok_or_else(not_user_password)?;
            return Ok(Found::Credential(user.to_string(), password.to_string()));
        }
        if let (Some(user), Some(password)) = (field("username"), field("password")) {
            return Ok(Found::Credential(user.to_string(), password.to_string()));
        }
        if field("identitytoken").is_some() {
            return Ok(Found::Skipped(format!(
                "the entry for {host} holds an identity token, which tomoda-promote does not exchange"
            )));
        }
    }
    let helper = config["credHelpers"]
        .as_object()
        .and_then(|helpers| {
            helpers
                .iter()
                .find(|(key, _)| config_key_host(key) == host)
                .and_then(|(_, v)| v.as_str())
        })
        .or_else(|| config["credsStore"].as_str())
        .filter(|h| !h.is_empty());
    Ok(match helper {
        Some(helper) => Found::Skipped(format!(
            "credential helper docker-credential-{helper} skipped for {host} (tomoda-promote runs no credential helpers; pass --registry-token, or put an `auths` entry in the config)"
        )),
        None => Found::Nothing,
    })
}

/// The registry host a config.json key names.
fn config_key_host(key: &str) -> String {
    let key = key.trim().to_ascii_lowercase();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(&key);
    let host = key.split('/').next().unwrap_or_default();
    match host {
        "docker.io" | "index.docker.io" => DOCKER_HUB.to_string(),
        _ => host.to_string(),
    }
}

/// An access token of the VM's (or Cloud Build worker's) service account.
pub fn metadata_token(client: &reqwest::blocking::Client, base: &str) -> Result<String, String> {
    let url = format!("{}{METADATA_TOKEN_PATH}", base.trim_end_matches('/'));
    let answer = client
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .map_err(|e| format!("{url}: {}", crate::git::http::error_chain(&e)))?;
    let status = answer.status();
    if !status.is_success() {
        return Err(format!("{url} answered HTTP {}", status.as_u16()));
    }
    let body: serde_json::Value = answer
        .bytes()
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("{url} answered no JSON: {e}"))?;
    let token = body["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("{url} answered no access_token"))?;
    secrets::register(token);
    Ok(token.to_string())
}

/// A `WWW-Authenticate` challenge of a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"`; anything else is `None`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: get("realm")?,
        service: get("service"),
        scope: get("scope"),
    })
}

/// `k="v", k2=v2`: quoted values may hold commas (`scope="repository:a:pull,push"`).
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            return out;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.push((key.trim().to_string(), value.trim().to_string()));
    }
}

/// Standard base64 with or without padding; `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let text = text.trim_end_matches('=').as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= value(c)? << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::tests::read_head;

    fn client() -> reqwest::blocking::Client {
        metadata_client(crate::git::http::tls_config().unwrap()).unwrap()
    }

    #[test]
    fn base64_of_user_and_password() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(base64_decode("dXNlcjpwYXNzMQ==").unwrap(), b"user:pass1");
        assert_eq!(base64_decode("dXNlcjpwYXNzMTI=").unwrap(), b"user:pass12");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("not base64!").is_none());
        assert!(base64_decode("abcde").is_none());
    }

    #[test]
    fn docker_config_entries_by_host() {
        let config = r#"{
          "auths": {
            "https://index.docker.io/v1/": {"auth": "aHViOmh1YnBhc3M="},
            "reg.example:5000": {"auth": "dXNlcjpwYXNz"},
            "https://ghcr.io": {"username": "octo", "password": "ghp_x"},
            "quay.io": {"identitytoken": "abc"}
          },
          "credHelpers": {"asia-east1-docker.pkg.dev": "gcloud"}
        }"#;
        let found = |host| docker_config_credential(config, host).unwrap();
        let cred = |u: &str, p: &str| Found::Credential(u.into(), p.into());
        assert_eq!(found(DOCKER_HUB), cred("hub", "hubpass"));
        assert_eq!(found("reg.example:5000"), cred("user", "pass"));
        assert_eq!(found("ghcr.io"), cred("octo", "ghp_x"));
        assert_eq!(found("reg.example"), Found::Nothing);
        assert!(matches!(found("quay.io"), Found::Skipped(w) if w.contains("identity token")));
        assert_eq!(
            found("asia-east1-docker.pkg.dev"),
            Found::Skipped("credential helper docker-credential-gcloud skipped for asia-east1-docker.pkg.dev (tomoda-promote runs no credential helpers; pass --registry-token, or put an `auths` entry in the config)".into())
        );
        assert!(docker_config_credential("{", "h").is_err());
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://127.0.0.1:9/t"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:9/t".into(),
                service: None,
                scope: None,
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn the_flag_comes_first_and_a_bare_token_is_a_google_access_token() {
        let client = client();
        let sources = Sources {
            token: Some("ya29.token".into()),
            docker_config: Some("/nonexistent/config.json".into()),
            metadata_url: "http://127.0.0.1:9".into(),
        };
        let reference = Reference::parse("reg.example/app", "v1").unwrap();
        let (cred, _) = sources.credential(&reference, &client);
        let cred = cred.unwrap();
        assert_eq!(
            (
                cred.username.as_str(),
                cred.password.as_str(),
                cred.source.clone()
            ),
            (GOOGLE_USERNAME, "ya29.token", Source::Flag)
        );
        assert!(!format!("{cred:?}").contains("ya29"));
        assert!(!format!("{sources:?}").contains("ya29"));
        let sources = Sources {
            token: Some("robot:s3cret".into()),
            ..sources
        };
        let cred = sources.credential(&reference, &client).0.unwrap();
        assert_eq!(
            (cred.username.as_str(), cred.password.as_str()),
            ("robot", "s3cret")
        );
    }

    #[test]
    fn the_metadata_server_is_asked_only_for_google_registries() {
        use std::io::{BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let head = read_head(&mut reader);
            let body =
                r#"{"access_token":"ya29.metadata-token","expires_in":3599,"token_type":"Bearer"}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            reader.get_mut().write_all(answer.as_bytes()).unwrap();
            head
        });
        let client = client();
        let sources = Sources {
            token: None,
            docker_config: None,
            metadata_url: base,
        };
        let other = Reference::parse("reg.example/app", "v1").unwrap();
        assert_eq!(sources.credential(&other, &client).0, None);
        let google = Reference::parse("asia-east1-docker.pkg.dev/p/r/app", "v1").unwrap();
        let cred = sources.credential(&google, &client).0.unwrap();
        assert_eq!(cred.password, "ya29.metadata-token");
        assert_eq!(cred.username, GOOGLE_USERNAME);
        assert_eq!(cred.source, Source::Metadata);
        let head = server.join().unwrap();
        assert!(
            head.starts_with(&format!("GET {METADATA_TOKEN_PATH} HTTP/1.1")),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("metadata-flavor: google"),
            "{head}"
        );
        // Nothing listens: a note, quickly, and no credential.
        let gone = Sources {
            metadata_url: "http://127.0.0.1:9".into(),
            ..sources
        };
        let (cred, notes) = gone.credential(&google, &client);
        assert_eq!(cred, None);
        assert!(
            notes[0].starts_with("no GCE metadata server token"),
            "{notes:?}"
        );
    }
}
