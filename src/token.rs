//! Tokens without a stored secret: a GitHub App installation token (one hour, one
//! repository) minted from the App's private key, or the read-write token a Cloud Build
//! 2nd-gen repository connection hands the build's service account. Each minted token is
//! registered as a secret before it is used, and serves git and the API alike.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::json;

use crate::cli::TokenSource;
use crate::error::{Error, Result, Retry, with_retries};
use crate::forge::{Api, Auth};
use crate::repo::{Forge, ForgeRepo};
use crate::secrets;

/// Where Cloud Build's API answers; `PROMOTE_CLOUDBUILD_URL` overrides it (for tests).
pub const CLOUDBUILD_URL: &str = "https://cloudbuild.googleapis.com";
const TOKEN_PERMISSION: &str = "cloudbuild.repositories.accessReadWriteToken";

/// The token of this run: minted once as the flags ask (and kept for every later use in
/// the process: the push, Argo CD's checks), else GIT_TOKEN (or --git-token-file).
pub fn for_run(
    source: &TokenSource,
    forge: Option<&ForgeRepo>,
    shown_repo: &str,
    timeout: Duration,
) -> Result<Option<String>> {
    for_run_with(source, forge, shown_repo, timeout, false)
}

/// As [`for_run`]; with `pull_requests`, a minted App token may also open and update pull
/// requests (a `pull_request:` environment).
pub fn for_run_with(
    source: &TokenSource,
    forge: Option<&ForgeRepo>,
    shown_repo: &str,
    timeout: Duration,
    pull_requests: bool,
) -> Result<Option<String>> {
    static MINTED: Mutex<Option<String>> = Mutex::new(None);
    let mut minted = MINTED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(token) = minted.as_ref() {
        return Ok(Some(token.clone()));
    }
    match mint(source, forge, shown_repo, timeout, pull_requests)? {
        Some(token) => {
            *minted = Some(token.clone());
            Ok(Some(token))
        }
        None => crate::inputs::read_token(source),
    }
}

/// A token minted as the flags ask, or `None` when they ask for none (GIT_TOKEN is then
/// used as it is). `forge` is the devops repository's, which an App token is scoped to.
fn mint(
    source: &TokenSource,
    forge: Option<&ForgeRepo>,
    shown_repo: &str,
    timeout: Duration,
    pull_requests: bool,
) -> Result<Option<String>> {
    if let Some(key) = &source.github_app_key {
        secrets::register(key);
    }
    let token = match (&source.github_app_id, &source.cloudbuild_repository) {
        (Some(_), Some(_)) => {
            return Err(Error::usage(
                "--github-app-id and --cloudbuild-repository both say where the token comes from",
                "keep one of them",
            ));
        }
        (Some(app_id), None) => {
            let key = app_key(source)?;
            let repo = match forge {
                Some(repo) if repo.forge == Forge::GitHub => repo,
                _ => {
                    return Err(Error::usage(
                        format!(
                            "--github-app-id needs a GitHub repository; {shown_repo} is not one tomoda-promote knows as GitHub"
                        ),
                        "set `forge: github` (and `api_url:` for GitHub Enterprise Server) in promote.yaml",
                    ));
                }
            };
            let jwt = app_jwt(app_id, &key, now())?;
            with_retries("GitHub", &mut std::thread::sleep, || {
                installation_token(repo, &jwt, timeout, pull_requests)
            })?
        }
        (None, Some(name)) => {
            check_repository_name(name)?;
            with_retries("Cloud Build", &mut std::thread::sleep, || {
                cloudbuild_token(name, timeout)
            })?
        }
        (None, None) => return Ok(None),
    };
    secrets::register(&token);
    Ok(Some(token))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The App's key pair from `--github-app-key-file` or `GITHUB_APP_PRIVATE_KEY`; anything
/// that is not an RSA private key is bad input (exit 2).
fn app_key(source: &TokenSource) -> Result<RsaKeyPair> {
    let (text, shown) = match (&source.github_app_key_file, &source.github_app_key) {
        (Some(file), _) => (
            std::fs::read_to_string(file).map_err(|e| {
                Error::usage(
                    format!("cannot read --github-app-key-file {}: {e}", file.display()),
                    "point --github-app-key-file at the App's private key (.pem)",
                )
            })?,
            format!("--github-app-key-file {}", file.display()),
        ),
        (None, Some(key)) => (key.clone(), "GITHUB_APP_PRIVATE_KEY".to_string()),
        (None, None) => {
            return Err(Error::usage(
                "--github-app-id needs the App's private key",
                "pass --github-app-key-file FILE, or set GITHUB_APP_PRIVATE_KEY to the key's PEM text",
            ));
        }
    };
    parse_private_key(&text).map_err(|why| {
        Error::usage(
            format!("{shown} is not an RSA private key: {why}"),
            "use the .pem the GitHub App's settings page generates (\"Generate a private key\"), PKCS#1 or PKCS#8",
        )
    })
}

/// An RSA key in PEM: `RSA PRIVATE KEY` (PKCS#1, as GitHub hands it out) or `PRIVATE KEY`
/// (PKCS#8). A key pasted into a variable with `\n` escapes is read too.
pub fn parse_private_key(text: &str) -> std::result::Result<RsaKeyPair, String> {
    let text = text.replace("\\n", "\n");
    let (label, der) = pem_block(&text).ok_or("no PEM block (-----BEGIN … KEY-----)")?;
    let pair = match label.as_str() {
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        other => return Err(format!("a PEM block of `{other}`, not a private key")),
    };
    pair.map_err(|e| format!("the key cannot be used for RS256 ({e})"))
}

/// The label and decoded body of the first PEM block.
fn pem_block(text: &str) -> Option<(String, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body_start = label_end + 5;
    let end = rest.find(&format!("-----END {label}-----"))?;
    let body: String = rest
        .get(body_start..end)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Some((label, STANDARD.decode(body).ok()?))
}

/// The App's JSON Web Token: RS256, issued a minute early against clock drift, valid
/// nine minutes (GitHub allows ten).
pub fn app_jwt(app_id: &str, key: &RsaKeyPair, now: u64) -> Result<String> {
    let issuer = match app_id.trim().parse::<u64>() {
        Ok(id) => json!(id),
        Err(_) => json!(app_id.trim()),
    };
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = json!({"iat": now.saturating_sub(60), "exp": now + 540, "iss": issuer});
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{claims}");
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut signature,
    )
    .map_err(|_| Error::local("cannot sign the GitHub App token request"))?;
    let jwt = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature));
    secrets::register(&jwt);
    Ok(jwt)
}

/// `GET /repos/{o}/{r}/installation`, then `POST /app/installations/{id}/access_tokens`
/// scoped to that one repository.
fn installation_token(
    repo: &ForgeRepo,
    jwt: &str,
    timeout: Duration,
    pull_requests: bool,
) -> Result<String> {
    let api = Api::new(Auth::Bearer(jwt.to_string()), timeout)?;
    let github = |request: reqwest::blocking::RequestBuilder| {
        request
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
    };
    let url = format!(
        "{}/repos/{}/installation",
        repo.api_url,
        crate::forge::escape_path(&repo.path)
    );
    let answer = api.send(github(api.get(&url)), &url)?;
    if answer.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(Error::Remote {
            url,
            message: "the GitHub App is not installed on this repository".into(),
            hint: format!(
                "install the App on {} (Repository permissions: Contents: read and write; Pull requests: read and write for pull_request: environments)",
                repo.path
            ),
            retry: Retry::Never,
        });
    }
    if !answer.status().is_success() {
        return Err(app_error(Api::status_error(answer, &url, Forge::GitHub)));
    }
    let id = Api::json(answer, &url)?["id"]
        .as_u64()
        .ok_or_else(|| unexpected(&url, "no installation id"))?;
    let url = format!("{}/app/installations/{id}/access_tokens", repo.api_url);
    let name = repo.path.rsplit('/').next().unwrap_or(&repo.path);
    // Only what a promotion needs, on only the devops repository.
    let mut permissions = json!({"contents": "write"});
    if pull_requests {
        permissions["pull_requests"] = json!("write");
    }
    let answer = api.send(
        github(api.post(&url))
            .header("Content-Type", "application/json")
            .body(json!({"repositories": [name], "permissions": permissions}).to_string()),
        &url,
    )?;
    if !answer.status().is_success() {
        return Err(app_error(Api::status_error(answer, &url, Forge::GitHub)));
    }
    Api::json(answer, &url)?["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| unexpected(&url, "no token"))
}

/// A refused JWT means the App ID and key do not belong together.
fn app_error(error: Error) -> Error {
    match error {
        Error::Remote {
            url,
            message,
            retry: Retry::Never,
            hint,
        } if message.starts_with("HTTP 401") => Error::Remote {
            url,
            message,
            hint: format!(
                "GitHub refused the App's token request: check that --github-app-id and the private key belong to the same App, and the machine's clock ({hint})"
            ),
            retry: Retry::Never,
        },
        other => other,
    }
}

/// `projects/P/locations/L/connections/C/repositories/R`, or exit 2.
fn check_repository_name(name: &str) -> Result<()> {
    let parts: Vec<&str> = name.split('/').collect();
    let shape = [
        "projects",
        "",
        "locations",
        "",
        "connections",
        "",
        "repositories",
        "",
    ];
    let fits = parts.len() == shape.len()
        && parts.iter().zip(shape).all(|(part, want)| {
            if want.is_empty() {
                !part.is_empty()
            } else {
                *part == want
            }
        });
    if fits {
        Ok(())
    } else {
        Err(Error::usage(
            format!("--cloudbuild-repository `{name}` is not a repository resource name"),
            "write it as projects/PROJECT/locations/REGION/connections/CONNECTION/repositories/REPOSITORY (gcloud builds repositories list shows them)",
        ))
    }
}

/// The build's access token from the metadata server, traded at Cloud Build for the
/// connection's read-write token.
fn cloudbuild_token(name: &str, timeout: Duration) -> Result<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let metadata_url =
        var("PROMOTE_METADATA_URL").unwrap_or_else(|| crate::registry::auth::METADATA_URL.into());
    let base = var("PROMOTE_CLOUDBUILD_URL").unwrap_or_else(|| CLOUDBUILD_URL.into());
    let tls = crate::git::http::tls_config()
        .map_err(|e| Error::local(format!("cannot set up TLS: {e}")))?;
    let metadata = crate::registry::auth::metadata_client(tls)
        .map_err(|e| Error::local(format!("cannot set up the metadata client: {e}")))?;
    let access = crate::registry::auth::metadata_token(&metadata, &metadata_url).map_err(|why| {
        Error::Remote {
            url: metadata_url.clone(),
            message: format!("no access token from the metadata server: {why}"),
            hint: "--cloudbuild-repository works inside Cloud Build (or on Google Cloud), where the metadata server answers".into(),
            retry: Retry::Never,
        }
    })?;
    let api = Api::new(Auth::Bearer(access), timeout)?;
    let url = format!(
        "{}/v2/{name}:accessReadWriteToken",
        base.trim_end_matches('/')
    );
    let answer = api.send(
        api.post(&url)
            .header("Content-Type", "application/json")
            .body("{}"),
        &url,
    )?;
    let status = answer.status().as_u16();
    if status == 403 || status == 401 {
        return Err(Error::Remote {
            url,
            message: format!("HTTP {status}: the build's service account lacks the permission {TOKEN_PERMISSION}"),
            hint: "grant the build's service account roles/cloudbuild.tokenAccessor on the connection (or a role with that permission)".into(),
            retry: Retry::Never,
        });
    }
    if status == 404 {
        return Err(Error::Remote {
            url,
            message: "HTTP 404: no such repository in Cloud Build".into(),
            hint: "check --cloudbuild-repository against `gcloud builds repositories list --connection=C --region=L`".into(),
            retry: Retry::Never,
        });
    }
    if !answer.status().is_success() {
        return Err(Api::status_error(answer, &url, Forge::GitHub).with_note(TOKEN_PERMISSION));
    }
    Api::json(answer, &url)?["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| unexpected(&url, "no token"))
}

fn unexpected(url: &str, what: &str) -> Error {
    Error::Remote {
        url: url.to_string(),
        message: format!("unexpected answer: {what}"),
        hint: "check the API URL".into(),
        retry: Retry::Never,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_key_is_told_so() {
        assert!(
            parse_private_key("hello")
                .unwrap_err()
                .contains("no PEM block")
        );
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse_private_key(cert).unwrap_err().contains("CERTIFICATE"));
        let junk = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(parse_private_key(junk).unwrap_err().contains("RS256"));
    }

    #[test]
    fn repository_names_are_checked() {
        assert!(
            check_repository_name("projects/p/locations/l/connections/c/repositories/r").is_ok()
        );
        for bad in [
            "p/r",
            "projects/p/locations/l/connections/c/repositories/",
            "projects/p/locations/l/connections/c/repos/r",
        ] {
            assert_eq!(
                check_repository_name(bad).unwrap_err().exit_code(),
                2,
                "{bad}"
            );
        }
    }
}
