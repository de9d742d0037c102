//! The registry check against canned HTTP answers (the real registry is in
//! tests/integration/registry.rs): retries, the auth exchange, waiting, pinning, messages.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use super::*;

const DIGEST: &str = "sha256:4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90123456784d5e6f7a8b9c0d1e2f3a4b5c";

/// A request's head, up to the blank line that ends it.
pub(super) fn read_head(reader: &mut impl BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

/// One canned answer per connection (`{port}` replaced); returns each request's head.
fn canned(answers: Vec<String>) -> (String, thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let mut seen = Vec::new();
        for answer in answers {
            let Ok((stream, _)) = listener.accept() else {
                break;
            };
            let mut reader = BufReader::new(stream);
            let head = read_head(&mut reader);
            seen.push(head);
            let answer = answer.replace("{port}", &addr.port().to_string());
            let _ = reader.get_mut().write_all(answer.as_bytes());
        }
        seen
    });
    (addr.to_string(), handle)
}

fn answer(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn found() -> String {
    answer(
        "200 OK",
        &format!("Docker-Content-Digest: {DIGEST}\r\n"),
        "",
    )
}

fn settings(token: Option<&str>) -> Settings {
    Settings {
        sources: Sources {
            token: token.map(str::to_string),
            docker_config: None,
            metadata_url: "http://127.0.0.1:9".into(),
        },
        insecure: Vec::new(),
        timeout: Duration::from_secs(5),
        wait: None,
        pin: true,
        dry_run: false,
    }
}

fn image(host: &str, tag: &str) -> Pulled {
    Pulled {
        of: crate::pulled::Of::Image {
            target: 0,
            index: 0,
        },
        name: format!("{host}/team/app"),
        tag: tag.into(),
    }
}

/// Runs the check, returning its result and the sleeps asked for.
fn check(settings: Settings, images: &[Pulled]) -> (Result<Vec<Verified>>, Vec<Duration>) {
    let mut slept = Vec::new();
    let result = Registry::new(settings)
        .unwrap()
        .check(images, &mut |d| slept.push(d));
    (result, slept)
}

#[test]
fn a_present_tag_is_verified_and_pinned_with_the_accept_header() {
    let (host, server) = canned(vec![found()]);
    let (result, slept) = check(settings(None), &[image(&host, "v1")]);
    assert_eq!(
        result.unwrap(),
        [Verified {
            image: format!("{host}/team/app"),
            tag: "v1".into(),
            digest: DIGEST.into()
        }]
    );
    assert!(slept.is_empty());
    let seen = server.join().unwrap();
    assert!(
        seen[0].starts_with("HEAD /v2/team/app/manifests/v1 HTTP/1.1"),
        "{}",
        seen[0]
    );
    assert!(
        seen[0].contains(&format!(
            "accept: {}",
            client::MANIFEST_MEDIA_TYPES.join(", ")
        )),
        "{}",
        seen[0]
    );
}

#[test]
fn a_retry_round_pulling_the_same_references_asks_nothing_again() {
    let (host, server) = canned(vec![found(), found()]);
    let mut registry = Registry::new(settings(None)).unwrap();
    let mut sleep = |_| {};
    let first = registry.check(&[image(&host, "v1")], &mut sleep).unwrap();
    let again = registry.check(&[image(&host, "v1")], &mut sleep).unwrap();
    assert_eq!(first, again);
    // Another pipeline moved the entry to another reference: that one is asked about.
    let moved = registry.check(&[image(&host, "v2")], &mut sleep).unwrap();
    assert_eq!(moved[0].tag, "v2");
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].starts_with("HEAD /v2/team/app/manifests/v2 "));
}

#[test]
fn server_errors_are_retried_after_retry_after() {
    let (host, server) = canned(vec![
        answer("503 Service Unavailable", "", "busy"),
        answer("429 Too Many Requests", "Retry-After: 2\r\n", ""),
        found(),
    ]);
    let (result, slept) = check(settings(None), &[image(&host, "v1")]);
    assert_eq!(result.unwrap()[0].digest, DIGEST);
    assert_eq!(slept.len(), 2);
    assert!(
        (Duration::from_millis(100)..=Duration::from_millis(200)).contains(&slept[0]),
        "{slept:?}"
    );
    assert_eq!(slept[1], Duration::from_secs(2));
    assert_eq!(server.join().unwrap().len(), 3);
}

#[test]
fn retries_are_bounded_and_long_retry_afters_are_not_waited_out() {
    let busy = || answer("503 Service Unavailable", "", "");
    let (host, server) = canned(vec![busy(), busy(), busy(), busy()]);
    let (result, slept) = check(settings(None), &[image(&host, "v1")]);
    let error = result.unwrap_err();
    assert_eq!(error.exit_code(), 1);
    assert!(error.to_string().contains("HTTP 503"), "{error}");
    assert!(error.to_string().contains("after 4 tries"), "{error}");
    // Spent: the promotion loop must not run its round, and these tries, again.
    assert_eq!(error.retry(), crate::error::Retry::Never);
    assert_eq!(slept.len(), 3);
    server.join().unwrap();

    let (host, server) = canned(vec![answer(
        "429 Too Many Requests",
        "Retry-After: 3600\r\n",
        "",
    )]);
    let (result, slept) = check(settings(None), &[image(&host, "v1")]);
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("retry after 3600 s")
    );
    assert!(slept.is_empty());
    server.join().unwrap();
}

#[test]
fn the_bearer_challenge_trades_the_token_for_a_registry_token() {
    let (host, server) = canned(vec![
        answer(
            "401 Unauthorized",
            "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test-registry\",scope=\"repository:team/app:pull\"\r\n",
            "",
        ),
        answer(
            "200 OK",
            "Content-Type: application/json\r\n",
            r#"{"token":"registry-token-xyz","expires_in":300}"#,
        ),
        found(),
    ]);
    let (result, _) = check(settings(Some("robot:pa55word")), &[image(&host, "v1")]);
    assert_eq!(result.unwrap()[0].digest, DIGEST);
    let seen = server.join().unwrap();
    assert!(!seen[0].contains("authorization"), "{}", seen[0]);
    assert!(
        seen[1].starts_with(
            "GET /token?service=test-registry&scope=repository%3Ateam%2Fapp%3Apull HTTP/1.1"
        ),
        "{}",
        seen[1]
    );
    // robot:pa55word
    assert!(
        seen[1].contains("authorization: Basic cm9ib3Q6cGE1NXdvcmQ="),
        "{}",
        seen[1]
    );
    assert!(
        seen[2].contains("authorization: Bearer registry-token-xyz"),
        "{}",
        seen[2]
    );
    assert_eq!(crate::secrets::redact("registry-token-xyz"), "***");
}

#[test]
fn a_refused_credential_is_named_by_its_source_never_by_its_value() {
    let basic = || {
        answer(
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"r\"\r\n",
            "",
        )
    };
    let (host, server) = canned(vec![basic(), basic()]);
    let mut settings = settings(Some("robot:wr0ng-secret"));
    settings.sources = Sources::from_env(settings.sources.token.take());
    let (result, _) = check(settings, &[image(&host, "v1")]);
    let error = result.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "http://{host}/v2/team/app/manifests/v1: authentication failed: HTTP 401 with the credentials from --registry-token (PROMOTE_REGISTRY_TOKEN)\n  hint: the credentials from --registry-token (PROMOTE_REGISTRY_TOKEN) are wrong or expired for {host} (or the repository team/app does not exist): renew them"
        )
    );
    assert_eq!(error.exit_code(), 1);
    assert_eq!(crate::secrets::redact("wr0ng-secret"), "***");
    let seen = server.join().unwrap();
    assert!(seen[1].contains("authorization: Basic"), "{}", seen[1]);

    let (host, server) = canned(vec![basic()]);
    let (result, _) = check(self::settings(None), &[image(&host, "v1")]);
    let error = result.unwrap_err().to_string();
    assert!(
        error.contains(&format!("the registry {host} requires credentials, and none were found for it (looked in: --registry-token, Docker's config.json)")),
        "{error}"
    );
    server.join().unwrap();
}

#[test]
fn a_missing_tag_is_an_input_error_naming_the_image_and_cloud_builds_images_field() {
    let (host, server) = canned(vec![answer("404 Not Found", "", "")]);
    let (result, _) = check(settings(None), &[image(&host, "v9")]);
    let error = result.unwrap_err();
    assert_eq!(error.exit_code(), 2);
    assert_eq!(
        error.to_string(),
        format!(
            "the image {host}/team/app:v9 is not in its registry (HTTP 404 from http://{host}/v2/team/app/manifests/v9); nothing was pushed to the devops repository\n  hint: push the image before this step runs. Cloud Build's `images:` field pushes only after all steps have finished, so push in an earlier step (`docker push`); for a registry that lags, pass --wait-for-image 2m; --no-verify skips this check"
        )
    );
    server.join().unwrap();
}

#[test]
fn waiting_looks_again_with_backoff_until_the_tag_appears_or_time_is_up() {
    let missing = || answer("404 Not Found", "", "");
    let (host, server) = canned(vec![missing(), missing(), missing(), found()]);
    let mut waiting = settings(None);
    waiting.wait = Some(Duration::from_secs(60));
    let (result, slept) = check(waiting.clone(), &[image(&host, "v1")]);
    assert_eq!(result.unwrap()[0].digest, DIGEST);
    let secs = |s: &[u64]| {
        s.iter()
            .map(|&s| Duration::from_secs(s))
            .collect::<Vec<_>>()
    };
    assert_eq!(slept, secs(&[1, 2, 4]));
    server.join().unwrap();

    let (host, server) = canned(vec![missing(), missing(), missing(), missing()]);
    waiting.wait = Some(Duration::from_secs(4));
    let (result, slept) = check(waiting, &[image(&host, "v1")]);
    assert_eq!(slept, secs(&[1, 2, 1]));
    let error = result.unwrap_err().to_string();
    assert!(error.contains("after waiting 4s)"), "{error}");
    server.join().unwrap();
}

#[test]
fn under_plan_an_unreachable_registry_is_a_warning_but_a_missing_tag_is_not() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap().to_string();
    drop(listener);
    let mut plan = settings(None);
    plan.dry_run = true;
    let (result, slept) = check(plan.clone(), &[image(&closed, "v1")]);
    assert_eq!(result.unwrap(), []);
    assert_eq!(slept.len(), 3, "connection failures are retried first");

    let (result, _) = check(settings(None), &[image(&closed, "v1")]);
    let error = result.unwrap_err().to_string();
    assert!(error.contains("cannot reach the registry"), "{error}");

    let (host, server) = canned(vec![answer("404 Not Found", "", "")]);
    let (result, _) = check(plan, &[image(&host, "v1")]);
    assert_eq!(result.unwrap_err().exit_code(), 2);
    server.join().unwrap();
}

#[test]
fn a_head_without_the_digest_header_is_followed_by_a_get_and_hashed() {
    let manifest = r#"{"schemaVersion":2}"#;
    let (host, server) = canned(vec![
        answer("200 OK", "", ""),
        answer(
            "200 OK",
            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
            manifest,
        ),
    ]);
    let (result, _) = check(settings(None), &[image(&host, "v1")]);
    let expected = ring::digest::digest(&ring::digest::SHA256, manifest.as_bytes());
    let hex: String = expected
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(result.unwrap()[0].digest, format!("sha256:{hex}"));
    let seen = server.join().unwrap();
    assert!(
        seen[1].starts_with("GET /v2/team/app/manifests/v1 "),
        "{}",
        seen[1]
    );
}

#[test]
fn an_image_in_two_files_is_asked_about_once() {
    let (host, server) = canned(vec![found()]);
    let (result, _) = check(settings(None), &[image(&host, "v1"), image(&host, "v1")]);
    assert_eq!(result.unwrap().len(), 1, "each image once");
    assert_eq!(server.join().unwrap().len(), 1);
}
