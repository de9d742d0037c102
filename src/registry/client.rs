//! One question to a registry, over the OCI distribution API: does this tag exist, and
//! what is its digest? `HEAD /v2/<repository>/manifests/<tag>` with the four manifest
//! media types in Accept, the digest from `Docker-Content-Digest` (or, when a registry
//! leaves it out, the SHA-256 of the manifest a GET returns). A 401 is answered once with
//! the first credential source that has something for the host, through the Basic or the
//! Bearer token challenge; 429, 5xx and broken connections are retried a few times,
//! after the server's Retry-After when it gives one.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client as HttpClient, RequestBuilder, Response};
use reqwest::header::{ACCEPT, WWW_AUTHENTICATE};

use super::auth::{Challenge, Credential, Source, Sources, parse_challenge};
use super::reference::{Reference, plain_http};
use crate::error::{Error, Result, Retry, with_retries};
use crate::git::http::{causes, error_chain, fmt_secs, retry_after};
use crate::repo::sanitize;
use crate::secrets;

/// What a manifest request accepts: a multi-platform image is an OCI index or a Docker
/// manifest list, a single-platform one an OCI or Docker v2 manifest. Without these a
/// registry answers 404 (OCI) or 400 (Docker v2), or converts to an old schema with
/// another digest.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
const DIGEST_HEADER: &str = "Docker-Content-Digest";
/// Manifests are small; a larger answer is not one.
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// What a registry said about a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found {
        digest: String,
    },
    /// HTTP 404: no such tag (or repository). `url` is the request that said so.
    Missing {
        url: String,
    },
}

/// The HTTP side of registry verification.
pub struct Client {
    http: HttpClient,
    /// For the GCE metadata server only.
    metadata: HttpClient,
    sources: Sources,
    insecure: Vec<String>,
    timeout: Duration,
}

/// The Authorization a request carries.
#[derive(Clone)]
enum Authorization {
    None,
    Basic(Credential),
    Bearer(String),
}

/// The auth state of one question: negotiated at the first 401, then kept.
struct Session {
    authorization: Authorization,
    /// The credential tried, if any: errors name its source.
    credential: Option<Credential>,
    /// Sources that could not be used, and why.
    notes: Vec<String>,
    negotiated: bool,
}

impl Client {
    pub fn new(sources: Sources, insecure: Vec<String>, timeout: Duration) -> Result<Client> {
        let fail = |e: String| Error::local(format!("cannot set up the registry client: {e}"));
        let tls = crate::git::http::tls_config().map_err(fail)?;
        let metadata = super::auth::metadata_client(tls.clone()).map_err(fail)?;
        let http = HttpClient::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout((timeout / 2).min(Duration::from_secs(10)))
            .timeout(timeout)
            .user_agent(format!("tomoda-promote/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| fail(error_chain(&e)))?;
        Ok(Client {
            http,
            metadata,
            sources,
            insecure,
            timeout,
        })
    }

    /// Whether `reference`'s tag exists and its digest, retrying transient failures
    /// (sleeping through `sleep`, so that tests see the waits without waiting).
    pub fn lookup(&self, reference: &Reference, sleep: &mut dyn FnMut(Duration)) -> Result<Lookup> {
        let mut session = Session {
            authorization: Authorization::None,
            credential: None,
            notes: Vec::new(),
            negotiated: false,
        };
        with_retries("the registry", sleep, || self.ask(reference, &mut session))
    }

    /// One HEAD, plus the auth exchange when the registry asks for it.
    fn ask(&self, reference: &Reference, session: &mut Session) -> Result<Lookup> {
        let plain = plain_http(&reference.host, &self.insecure);
        let url = reference.manifest_url(plain);
        loop {
            let head = self.send(
                self.http
                    .head(&url)
                    .header(ACCEPT, MANIFEST_MEDIA_TYPES.join(", ")),
                &session.authorization,
                &url,
            )?;
            let status = head.status();
            if status.is_success() {
                return match digest_header(&head) {
                    Some(digest) => Ok(Lookup::Found { digest }),
                    None => self.digest_by_get(&url, session),
                };
            }
            match status {
                StatusCode::NOT_FOUND => return Ok(Lookup::Missing { url }),
                StatusCode::UNAUTHORIZED if !session.negotiated => {
                    session.negotiated = true;
                    let challenge = head
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    self.negotiate(reference, challenge, session, &url)?;
                }
                _ => return Err(status_error(status, &head, &url, reference, session)),
            }
        }
    }

    /// Answers the challenge: Basic sends the credential; Bearer trades it (or nothing)
    /// for a token at the realm.
    fn negotiate(
        &self,
        reference: &Reference,
        challenge: Option<Challenge>,
        session: &mut Session,
        url: &str,
    ) -> Result<()> {
        let (credential, notes) = self.sources.credential(reference, &self.metadata);
        for note in &notes {
            tracing::info!("registry credentials: {note}");
        }
        session.notes = notes;
        session.credential.clone_from(&credential);
        if let Some(c) = &credential {
            tracing::info!("{}: using credentials from {}", reference.host, c.source);
        } else {
            tracing::info!(
                "{}: no credentials found, trying anonymously",
                reference.host
            );
        }
        session.authorization = match challenge {
            Some(Challenge::Basic) => match credential {
                Some(c) => Authorization::Basic(c),
                None => return Err(no_credential(url, reference, session)),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope =
                    scope.unwrap_or_else(|| format!("repository:{}:pull", reference.repository));
                let token =
                    self.bearer_token(&realm, service.as_deref(), &scope, reference, session)?;
                Authorization::Bearer(token)
            }
            None => {
                return Err(Error::Remote {
                    url: url.to_string(),
                    message: "HTTP 401 without a Basic or Bearer challenge (WWW-Authenticate)"
                        .into(),
                    hint: "check that the image names a container registry".into(),
                    retry: Retry::Never,
                });
            }
        };
        Ok(())
    }

    /// `GET realm?service=…&scope=…`, with the credential as Basic when there is one.
    fn bearer_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        reference: &Reference,
        session: &Session,
    ) -> Result<String> {
        let mut realm_url = reqwest::Url::parse(realm).map_err(|e| Error::Remote {
            url: reference.manifest_url(false),
            message: format!(
                "the registry's token realm `{}` is not a URL: {e}",
                sanitize(realm)
            ),
            hint: "the registry is misconfigured; ask its administrators".into(),
            retry: Retry::Never,
        })?;
        let realm_host = match realm_url.port() {
            Some(port) => format!("{}:{port}", realm_url.host_str().unwrap_or_default()),
            None => realm_url.host_str().unwrap_or_default().to_string(),
        };
        if session.credential.is_some()
            && realm_url.scheme() != "https"
            && !plain_http(&realm_host, &self.insecure)
        {
            return Err(Error::Remote {
                url: realm_url.to_string(),
                message: "the registry's token realm is plain HTTP; credentials are not sent there"
                    .into(),
                hint: format!("if {realm_host} is trusted, pass --insecure-registry {realm_host}"),
                retry: Retry::Never,
            });
        }
        {
            let mut query = realm_url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let url = realm_url.to_string();
        let authorization = match &session.credential {
            Some(c) => Authorization::Basic(c.clone()),
            None => Authorization::None,
        };
        let answer = self.send(self.http.get(realm_url), &authorization, &url)?;
        let status = answer.status();
        if !status.is_success() {
            return Err(status_error(status, &answer, &url, reference, session));
        }
        let body: serde_json::Value = answer
            .bytes()
            .map_err(|e| error_chain(&e))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| Error::Remote {
                url: url.clone(),
                message: format!("the token endpoint answered no JSON: {e}"),
                hint: "the registry's token service is misconfigured, or a proxy answered".into(),
                retry: Retry::Never,
            })?;
        let token = ["token", "access_token"]
            .iter()
            .find_map(|k| body[*k].as_str().filter(|t| !t.is_empty()))
            .ok_or_else(|| Error::Remote {
                url: url.clone(),
                message: "the token endpoint answered without a token".into(),
                hint: "the registry's token service is misconfigured".into(),
                retry: Retry::Never,
            })?;
        secrets::register(token);
        Ok(token.to_string())
    }

    /// A registry that answers HEAD without the digest: the digest is the SHA-256 of the
    /// manifest's bytes.
    fn digest_by_get(&self, url: &str, session: &Session) -> Result<Lookup> {
        let answer = self.send(
            self.http
                .get(url)
                .header(ACCEPT, MANIFEST_MEDIA_TYPES.join(", ")),
            &session.authorization,
            url,
        )?;
        let status = answer.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Lookup::Missing {
                url: url.to_string(),
            });
        }
        if let Some(digest) = digest_header(&answer) {
            return Ok(Lookup::Found { digest });
        }
        let bad = |what: String| Error::Remote {
            url: url.to_string(),
            message: what,
            hint: "retry; if it persists, the registry does not follow the distribution API".into(),
            retry: Retry::Never,
        };
        if !status.is_success() {
            return Err(bad(format!("HTTP {} to GET the manifest", status.as_u16())));
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(answer, MAX_MANIFEST_BYTES + 1),
            &mut bytes,
        )
        .map_err(|e| bad(format!("the manifest broke off: {e}")))?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(bad("the manifest is larger than 4 MiB".into()));
        }
        let hash = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Lookup::Found {
            digest: format!("sha256:{hex}"),
        })
    }

    fn send(
        &self,
        request: RequestBuilder,
        authorization: &Authorization,
        url: &str,
    ) -> Result<Response> {
        let request = match authorization {
            Authorization::None => request,
            Authorization::Basic(c) => request.basic_auth(&c.username, Some(&c.password)),
            Authorization::Bearer(token) => request.bearer_auth(token),
        };
        request
            .send()
            .map_err(|e| send_error(&e, url, self.timeout))
    }
}

/// `Docker-Content-Digest`, when it is a digest kustomize can pin.
fn digest_header(answer: &Response) -> Option<String> {
    let value = answer.headers().get(DIGEST_HEADER)?.to_str().ok()?.trim();
    crate::image::check_digest(value).ok()?;
    Some(value.to_string())
}

/// A request that got no answer: a TLS failure stays one, the rest may pass on a retry.
fn send_error(error: &reqwest::Error, url: &str, timeout: Duration) -> Error {
    let tls = causes(error)
        .iter()
        .find_map(|c| c.downcast_ref::<rustls::Error>());
    let (message, hint, retry) = if let Some(tls) = tls {
        (
            format!("TLS handshake failed for {url}: {tls}"),
            "if the registry uses a private CA, set SSL_CERT_FILE to a PEM file holding it; a registry that speaks plain HTTP needs --insecure-registry HOST".to_string(),
            Retry::Never,
        )
    } else if error.is_timeout() {
        (
            format!("no answer from the registry within {}", fmt_secs(timeout)),
            "retry, or raise --timeout; check that the registry is reachable from this machine"
                .to_string(),
            Retry::Transient { after: None },
        )
    } else {
        // reqwest's own message repeats the URL, which the error already names.
        let why = std::error::Error::source(error).map_or_else(|| error.to_string(), error_chain);
        // A host name that does not resolve will not resolve a second later.
        let retry = if why.contains("dns error") {
            Retry::Never
        } else {
            Retry::Transient { after: None }
        };
        (
            format!("cannot reach the registry: {why}"),
            "check the image name's registry host, and network access from this machine (proxy, firewall)".to_string(),
            retry,
        )
    };
    Error::Remote {
        url: url.to_string(),
        message,
        hint,
        retry,
    }
}

/// The credential sources that were looked at, for messages.
fn tried(reference: &Reference, session: &Session) -> String {
    let mut tried = "--registry-token, Docker's config.json".to_string();
    if reference.is_google() {
        tried.push_str(", the GCE metadata server");
    }
    let mut text = format!("looked in: {tried}");
    for note in &session.notes {
        text.push_str(&format!("; {note}"));
    }
    text
}

fn no_credential(url: &str, reference: &Reference, session: &Session) -> Error {
    Error::Remote {
        url: url.to_string(),
        message: format!(
            "the registry {} requires credentials, and none were found for it ({})",
            reference.host,
            tried(reference, session)
        ),
        hint: format!(
            "pass --registry-token (PROMOTE_REGISTRY_TOKEN) as USER:PASSWORD or a token, or run `docker login {}` before this step",
            reference.host
        ),
        retry: Retry::Never,
    }
}

/// Any answer but 2xx and 404 (and the first 401, which starts the auth exchange).
fn status_error(
    status: StatusCode,
    answer: &Response,
    url: &str,
    reference: &Reference,
    session: &Session,
) -> Error {
    let code = status.as_u16();
    let (message, hint, retry) = match (code, &session.credential) {
        (401, Some(c)) => (
            format!(
                "authentication failed: HTTP 401 with the credentials from {}",
                c.source
            ),
            format!(
                "the credentials from {} are wrong or expired for {} (or the repository {} does not exist): {}",
                c.source,
                reference.host,
                reference.repository,
                if c.source == Source::Flag {
                    "renew them"
                } else {
                    "renew them, or pass --registry-token (PROMOTE_REGISTRY_TOKEN), which comes first"
                }
            ),
            Retry::Never,
        ),
        (401, None) => (
            format!(
                "authentication required: HTTP 401 and no credentials were found for {} ({})",
                reference.host,
                tried(reference, session)
            ),
            format!(
                "pass --registry-token (PROMOTE_REGISTRY_TOKEN), or run `docker login {}` before this step; registries also answer 401 for a repository that does not exist",
                reference.host
            ),
            Retry::Never,
        ),
        (403, Some(c)) => (
            format!(
                "access denied: HTTP 403 with the credentials from {}",
                c.source
            ),
            format!(
                "the credentials were accepted but may not pull {}: grant them read access (Artifact Registry: roles/artifactregistry.reader)",
                reference.repository
            ),
            Retry::Never,
        ),
        (403, None) => (
            format!(
                "access denied: HTTP 403 without credentials ({})",
                tried(reference, session)
            ),
            "pass --registry-token (PROMOTE_REGISTRY_TOKEN) with read access to the repository"
                .to_string(),
            Retry::Never,
        ),
        (408 | 429 | 500..=599, _) => (
            format!(
                "the registry answered HTTP {code} ({})",
                status.canonical_reason().unwrap_or("error")
            ),
            "the registry is overloaded or failing; retry later".to_string(),
            Retry::Transient {
                after: retry_after(answer.headers()),
            },
        ),
        _ => (
            format!(
                "unexpected answer HTTP {code} ({})",
                status.canonical_reason().unwrap_or("unknown status")
            ),
            "check the image name and that its host is a container registry".to_string(),
            Retry::Never,
        ),
    };
    Error::Remote {
        url: url.to_string(),
        message,
        hint,
        retry,
    }
}
