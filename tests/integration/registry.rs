//! The registry check against a real registry: Debian's `docker-registry` (distribution
//! 2.8), started per test with a config of the test's own, bound to 127.0.0.1 on a free
//! port, storage in a temporary directory. Images go in through the registry API's blob
//! and manifest uploads: a tiny config blob and one layer, an OCI manifest, an OCI index
//! and a Docker v2 manifest. In front of it, when a test needs one: the fault proxy
//! (503s), and a Bearer gate with a token endpoint of the test's own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::bounded;
use crate::dsl::*;
use crate::git_server::{base64, serve};
use crate::proxy::{Fault, Proxy};

const OVERLAY: &str = "k8s/apps/tomoda/overlays/dev";
const REPOSITORY: &str = "tomoda/backend";
const LIMIT: Duration = Duration::from_secs(60);

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn sha256(bytes: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A free port on 127.0.0.1 (the registry binds it itself, a moment later).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// `docker-registry serve` on 127.0.0.1, killed and reaped on drop.
struct Registry {
    child: Child,
    addr: SocketAddr,
    /// Config, htpasswd and storage; removed when the registry is dropped.
    _dir: tempfile::TempDir,
    /// Basic credentials for the uploads, when the registry wants them.
    auth: Option<(String, String)>,
}

impl Registry {
    fn start() -> Registry {
        Registry::start_inner(None)
    }

    /// With the registry's own htpasswd auth (bcrypt, written by `htpasswd -B`).
    fn with_htpasswd(user: &str, password: &str) -> Registry {
        Registry::start_inner(Some((user.to_string(), password.to_string())))
    }

    fn start_inner(auth: Option<(String, String)>) -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd runs (apt-get install apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test-registry\n    path: {}\n",
                file.display()
            ));
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (apt-get install docker-registry)");
        let registry = Registry {
            child,
            addr,
            _dir: dir,
            auth,
        };
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen on {addr}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    /// `127.0.0.1:PORT/tomoda/backend`: the image name the devops file gets.
    fn image(&self) -> String {
        format!("{}/{REPOSITORY}", self.addr)
    }

    /// Plain HTTP only; rustls still wants its provider named (ring, as the binary uses).
    fn http() -> reqwest::blocking::Client {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> reqwest::blocking::Response {
        let request = match &self.auth {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        };
        request.send().expect("the registry answers")
    }

    /// A monolithic blob upload: POST for a location, PUT the bytes with their digest.
    fn push_blob(&self, bytes: &[u8]) -> (String, usize) {
        let digest = sha256(bytes);
        let started = self.send(Self::http().post(format!(
            "http://{}/v2/{REPOSITORY}/blobs/uploads/",
            self.addr
        )));
        assert_eq!(started.status().as_u16(), 202, "blob upload start");
        let location = started.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with('/') {
            format!("http://{}{location}", self.addr)
        } else {
            location
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let done = self.send(
            Self::http()
                .put(format!("{location}{separator}digest={digest}"))
                .header("Content-Type", "application/octet-stream")
                .body(bytes.to_vec()),
        );
        assert_eq!(done.status().as_u16(), 201, "blob upload");
        (digest, bytes.len())
    }

    /// Puts a manifest under `reference` (a tag or its digest); returns its digest.
    fn put_manifest(&self, reference: &str, media_type: &str, body: &str) -> String {
        let answer = self.send(
            Self::http()
                .put(format!(
                    "http://{}/v2/{REPOSITORY}/manifests/{reference}",
                    self.addr
                ))
                .header("Content-Type", media_type)
                .body(body.to_string()),
        );
        let status = answer.status().as_u16();
        let digest = sha256(body.as_bytes());
        let said = answer
            .headers()
            .get("docker-content-digest")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(status, 201, "manifest upload: {}", answer.text().unwrap());
        assert_eq!(said.as_deref(), Some(digest.as_str()));
        digest
    }

    /// A config blob and one layer, and a single-platform manifest of them: OCI, or
    /// Docker v2. Returns the manifest's body.
    fn manifest(&self, docker: bool, salt: &str) -> (String, &'static str) {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[]}},"salt":"{salt}"}}"#
        );
        let (config_digest, config_size) = self.push_blob(config.as_bytes());
        let (layer_digest, layer_size) = self.push_blob(format!("layer {salt}").as_bytes());
        let (media_type, config_type, layer_type) = if docker {
            (
                DOCKER_V2,
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        } else {
            (
                OCI_MANIFEST,
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        };
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"{config_type}","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"{layer_type}","digest":"{layer_digest}","size":{layer_size}}}]}}"#
        );
        (body, media_type)
    }

    /// A Docker v2 manifest tagged `tag`; its digest.
    fn push_docker_v2(&self, tag: &str) -> String {
        let (body, media_type) = self.manifest(true, tag);
        self.put_manifest(tag, media_type, &body)
    }

    /// An OCI index of one OCI manifest, tagged `tag`; the index's digest and the
    /// manifest's.
    fn push_oci_index(&self, tag: &str) -> (String, String) {
        let (body, media_type) = self.manifest(false, tag);
        let child = sha256(body.as_bytes());
        self.put_manifest(&child, media_type, &body);
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{child}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            body.len()
        );
        (self.put_manifest(tag, OCI_INDEX, &index), child)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A flags-only promotion of the tomoda dev overlay to `image:tag`, with the registry
/// check on.
fn promote(devops: &Devops, image: &str, tag: &str) -> Run {
    Run::new()
        .verifying()
        .sha(SHA)
        .args(["--repo", &devops.url(), "--overlay", OVERLAY])
        .args(["--image", &format!("{IMAGE}={image}:{tag}")])
}

/// The dev entry as it should read after a pinned promotion.
fn pinned_entry(image: &str, tag: &str, digest: &str) -> String {
    format!(
        "  - name: {IMAGE}\n    newTag: \"{tag}\" # set by CI\n    newName: {image}\n    digest: {digest}\n"
    )
}

#[test]
fn a_present_tag_is_verified_and_its_digest_pinned_for_an_oci_index_and_a_docker_v2_manifest() {
    let registry = Registry::start();
    let (index, platform_manifest) = registry.push_oci_index("v1");
    let docker = registry.push_docker_v2("v2");
    let devops = Devops::tomoda();

    let (done, _) = bounded::run(
        promote(&devops, &registry.image(), "v1").args(["--pin-digest"]),
        LIMIT,
    );
    done.ok();
    let file = devops.file(DEV);
    assert!(
        file.contains(&pinned_entry(&registry.image(), "v1", &index)),
        "the index's digest, not its manifest's ({platform_manifest}):\n{file}"
    );

    let (done, _) = bounded::run(
        promote(&devops, &registry.image(), "v2").args(["--pin-digest"]),
        LIMIT,
    );
    done.ok();
    let file = devops.file(DEV);
    assert!(
        file.contains(&pinned_entry(&registry.image(), "v2", &docker)),
        "{file}"
    );

    // Verified but not pinned: no digest written.
    let (done, _) = bounded::run(promote(&devops, &registry.image(), "v1"), LIMIT);
    done.ok();
    assert!(
        !devops.file(DEV).contains("digest:"),
        "{}",
        devops.file(DEV)
    );
}

#[test]
fn a_missing_tag_is_refused_and_nothing_is_pushed_to_git() {
    let registry = Registry::start();
    registry.push_docker_v2("v1");
    let devops = Devops::tomoda();
    let head = devops.head();
    let image = registry.image();
    let (done, _) = bounded::run(promote(&devops, &image, "v404"), LIMIT);
    done.code(2)
        .stderr_has(&format!(
            "the image {image}:v404 is not in its registry (HTTP 404 from http://{image_host}/v2/{REPOSITORY}/manifests/v404); nothing was pushed to the devops repository",
            image_host = registry.addr
        ))
        .stderr_has("Cloud Build's `images:` field pushes only after all steps have finished, so push in an earlier step");
    assert_eq!(devops.head(), head);
    assert_eq!(devops.file(DEV), tomoda_file(DEV));

    // --plan says the same: a missing tag is not a registry that cannot be asked.
    let (done, _) = bounded::run(promote(&devops, &image, "v404").args(["--plan"]), LIMIT);
    done.code(2).stderr_has("is not in its registry");
    // --no-verify is the way around it.
    let (done, _) = bounded::run(
        promote(&devops, &image, "v404").args(["--no-verify"]),
        LIMIT,
    );
    done.ok();
    assert!(devops.file(DEV).contains("newTag: \"v404\""));
}

#[test]
fn an_unreachable_registry_fails_the_run_but_only_warns_under_plan() {
    let devops = Devops::tomoda();
    let closed = format!("127.0.0.1:{}/{REPOSITORY}", free_port());
    let (done, _) = bounded::run(promote(&devops, &closed, "v1"), LIMIT);
    done.code(1).stderr_has("cannot reach the registry");
    let (done, _) = bounded::run(promote(&devops, &closed, "v1").args(["--plan"]), LIMIT);
    done.ok()
        .stderr_has("the plan goes on without it")
        .stdout_has("+    newTag: \"v1\" # set by CI");
}

#[test]
fn htpasswd_basic_auth_takes_the_right_credentials_and_names_the_source_of_wrong_ones() {
    const PASSWORD: &str = "s3cret-Pa55word";
    let registry = Registry::with_htpasswd("alice", PASSWORD);
    let digest = registry.push_docker_v2("v1");
    let devops = Devops::tomoda();
    let image = registry.image();

    // Right, from Docker's config.json as `docker login` writes it.
    let docker_config = tempfile::tempdir().unwrap();
    std::fs::write(
        docker_config.path().join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            registry.addr,
            base64(format!("alice:{PASSWORD}").as_bytes())
        ),
    )
    .unwrap();
    let config_dir = docker_config.path().to_str().unwrap();
    let (done, _) = bounded::run(
        promote(&devops, &image, "v1")
            .env("DOCKER_CONFIG", config_dir)
            .env("RUST_LOG", "debug")
            .args(["--pin-digest"]),
        LIMIT,
    );
    done.ok()
        .stderr_has(&format!(
            "using credentials from Docker's config {config_dir}/config.json"
        ))
        .never_shows(PASSWORD);
    assert!(devops.file(DEV).contains(&format!("digest: {digest}")));

    // Wrong, from the flag's variable, which wins over config.json: named, never shown.
    let head = devops.head();
    let (done, _) = bounded::run(
        promote(&devops, &image, "v1")
            .env("DOCKER_CONFIG", config_dir)
            .env("PROMOTE_REGISTRY_TOKEN", "alice:wr0ng-Pa55word")
            .env("RUST_LOG", "trace"),
        LIMIT,
    );
    done.code(1)
        .stderr_has("authentication failed: HTTP 401 with the credentials from --registry-token (PROMOTE_REGISTRY_TOKEN)")
        .never_shows("wr0ng-Pa55word")
        .never_shows(PASSWORD);
    assert_eq!(devops.head(), head);

    // None at all.
    let (done, _) = bounded::run(promote(&devops, &image, "v1"), LIMIT);
    done.code(1).stderr_has(&format!(
        "the registry {} requires credentials, and none were found for it",
        registry.addr
    ));
}

/// A Bearer-token front for the registry: requests without the token it hands out are
/// answered 401 with a challenge naming its `/token` endpoint, which wants Basic
/// credentials; requests with the token go on to the registry.
struct BearerGate {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// The request lines and Authorization headers seen.
    seen: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

const GATE_TOKEN: &str = "gate-issued-token-7f3a";

impl BearerGate {
    fn start(upstream: SocketAddr, user: &'static str, password: &'static str) -> BearerGate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop_flag, log) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = thread::spawn(move || {
            serve(&listener, &stop_flag, "bearer-gate", move |stream, _| {
                let _ = gate(&stream, addr, upstream, (user, password), &log);
            });
        });
        BearerGate {
            addr,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for BearerGate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request per connection (each answer closes it).
fn gate(
    stream: &TcpStream,
    me: SocketAddr,
    upstream: SocketAddr,
    (user, password): (&str, &str),
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        headers.push(line.trim_end().to_string());
    }
    let authorization = headers
        .iter()
        .find_map(|h| {
            h.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!("{} | {authorization}", request_line.trim_end()));
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let mut out = stream;
    let reply = |out: &mut &TcpStream, status: &str, extra: &str, body: &str| {
        out.write_all(
            format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    if target.starts_with("/token") {
        let expected = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
        return if authorization == expected {
            reply(
                &mut out,
                "200 OK",
                "",
                &format!(r#"{{"token":"{GATE_TOKEN}","expires_in":300}}"#),
            )
        } else {
            reply(
                &mut out,
                "401 Unauthorized",
                "",
                r#"{"details":"wrong credentials"}"#,
            )
        };
    }
    if authorization != format!("Bearer {GATE_TOKEN}") {
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"test-registry\",scope=\"repository:{REPOSITORY}:pull\"\r\n"
        );
        return reply(&mut out, "401 Unauthorized", &challenge, "{}");
    }
    // Forwarded without the token, as a registry behind an auth proxy would see it.
    let mut upstream = TcpStream::connect(upstream)?;
    upstream.set_nodelay(true)?;
    let mut head = request_line.clone();
    for h in headers.iter().filter(|h| {
        let name = h.split(':').next().unwrap_or("").to_ascii_lowercase();
        name != "authorization" && name != "connection"
    }) {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    upstream.write_all(head.as_bytes())?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    out.write_all(&answer)
}

#[test]
fn the_bearer_challenge_is_answered_through_the_token_endpoint() {
    let registry = Registry::start();
    let digest = registry.push_docker_v2("v1");
    let gate = BearerGate::start(registry.addr, "robot", "robot-Pa55word");
    let image = format!("{}/{REPOSITORY}", gate.addr);
    let devops = Devops::tomoda();
    let (done, _) = bounded::run(
        promote(&devops, &image, "v1")
            .env("PROMOTE_REGISTRY_TOKEN", "robot:robot-Pa55word")
            .env("RUST_LOG", "trace")
            .args(["--pin-digest"]),
        LIMIT,
    );
    done.ok()
        .never_shows("robot-Pa55word")
        .never_shows(GATE_TOKEN);
    assert!(devops.file(DEV).contains(&format!("digest: {digest}")));
    let seen = gate.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert!(
        seen[0].starts_with(&format!("HEAD /v2/{REPOSITORY}/manifests/v1 HTTP/1.1 | ")),
        "{seen:#?}"
    );
    assert!(
        seen[1].starts_with(
            "GET /token?service=test-registry&scope=repository%3Atomoda%2Fbackend%3Apull "
        ),
        "{seen:#?}"
    );
    assert!(seen[1].ends_with(&format!("| Basic {}", base64(b"robot:robot-Pa55word"))));
    assert!(
        seen[2].ends_with(&format!("| Bearer {GATE_TOKEN}")),
        "{seen:#?}"
    );

    // A wrong password is refused at the token endpoint, naming the source.
    let (done, _) = bounded::run(
        promote(&devops, &image, "v1").env("PROMOTE_REGISTRY_TOKEN", "robot:nope-Pa55word"),
        LIMIT,
    );
    done.code(1)
        .stderr_has("authentication failed: HTTP 401 with the credentials from --registry-token (PROMOTE_REGISTRY_TOKEN)")
        .never_shows("nope-Pa55word");
}

#[test]
fn a_registry_answering_503_twice_is_retried_until_it_answers() {
    let registry = Registry::start();
    let digest = registry.push_docker_v2("v1");
    let proxy = Proxy::start(registry.addr, |request| {
        if request.index <= 2 {
            Fault::status("503 Service Unavailable")
        } else {
            Fault::Forward
        }
    });
    let image = format!("{}/{REPOSITORY}", proxy.addr());
    let devops = Devops::tomoda();
    let (done, _) = bounded::run(promote(&devops, &image, "v1").args(["--pin-digest"]), LIMIT);
    done.ok()
        .stderr_has("the registry answered HTTP 503 (Service Unavailable)");
    assert!(devops.file(DEV).contains(&format!("digest: {digest}")));
    assert_eq!(
        proxy.count("503 Service Unavailable (injected)"),
        2,
        "{:#?}",
        proxy.log()
    );
    assert_eq!(
        proxy.count_within(
            &format!("HEAD /v2/{REPOSITORY}/manifests/v1"),
            3,
            Duration::from_secs(5)
        ),
        3,
        "{:#?}",
        proxy.log()
    );
}

#[test]
fn waiting_for_the_image_sees_the_tag_appear() {
    let registry = Registry::start();
    let devops = Devops::tomoda();
    let (child, _cwd) = promote(&devops, &registry.image(), "v7")
        .args(["--wait-for-image", "40s", "--pin-digest"])
        .spawn();
    // The binary starts looking (and finds nothing) before the push.
    thread::sleep(Duration::from_millis(1500));
    let digest = registry.push_docker_v2("v7");
    let mut ended = bounded::wait_all(vec![child], LIMIT);
    let ended = ended.remove(0);
    ended
        .finished("tomoda-promote --wait-for-image")
        .ok()
        .stderr_has(&format!(
            "{}:v7 is not in its registry yet; looking again in 1s",
            registry.image()
        ));
    assert!(
        ended.elapsed < Duration::from_secs(30),
        "{:?}",
        ended.elapsed
    );
    assert!(devops.file(DEV).contains(&format!("digest: {digest}")));
}

/// The digest of the registry's own answer, for the record: HEAD with the Accept header
/// gives the index's digest (not its manifest's), as the binary pins it.
#[test]
fn the_registry_needs_the_accept_header_as_the_field_notes_say() {
    let registry = Registry::start();
    let (index, _) = registry.push_oci_index("v1");
    let url = format!("http://{}/v2/{REPOSITORY}/manifests/v1", registry.addr);
    let bare = registry.send(Registry::http().head(&url));
    assert_eq!(bare.status().as_u16(), 404, "an OCI index without Accept");
    let accepted = registry.send(Registry::http().head(&url).header(
        "Accept",
        format!("{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_V2}"),
    ));
    assert_eq!(accepted.headers()["docker-content-digest"], index.as_str());
}

#[test]
fn help_names_the_registry_flags_and_hides_the_registry_token() {
    Run::new()
        .env("PROMOTE_REGISTRY_TOKEN", "robot:helpSecret-4821")
        .args(["--help"])
        .run()
        .ok()
        .stdout_has("--no-verify")
        .stdout_has("--pin-digest")
        .stdout_has("--wait-for-image <DURATION>")
        .stdout_has("--insecure-registry <HOST>")
        .stdout_has("[env: PROMOTE_REGISTRY_TOKEN]")
        .never_shows("helpSecret-4821");
}

#[test]
fn pinning_or_waiting_without_the_check_is_a_usage_error() {
    let devops = Devops::tomoda();
    for flag in ["--pin-digest", "--wait-for-image=1m"] {
        let (done, _) = bounded::run(
            promote(&devops, "127.0.0.1:9/app", "v1").args(["--no-verify", flag]),
            LIMIT,
        );
        done.code(2).stderr_has(
            "needs the registry check, which --no-verify (PROMOTE_NO_VERIFY) turns off",
        );
    }
}

const PLAIN: &str = "k8s/plain/app.yaml";
const VALUES: &str = "charts/api/values.yaml";

/// The tomoda layout plus a plain manifest and Helm values naming the registry's image.
fn pinned_layout(image: &str) -> Vec<(&'static str, String)> {
    let mut files = tomoda_files();
    files.push((
        PLAIN,
        format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: report\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers:\n            - name: report\n              image: {image}:v0   # the report job\n"
        ),
    ));
    files.push((
        VALUES,
        format!("image:\n  repository: {image}\n  tag: \"v0\"\n  digest: \"\"   # pinned by CI\n"),
    ));
    files
}

/// `pin: digest` for the environment; the overlay takes the OCI index (v1), the plain
/// manifest the Docker v2 manifest (v2), the Helm values v1's digest through `{digest}`.
fn pinned_config(repo: &str, image: &str) -> String {
    format!(
        r#"repo: {repo}
environments:
  dev:
    when: commit
    pin: digest
    overlay: {OVERLAY}
    images:
      - name: {IMAGE}
        new_name: {image}
        tag: v1
    files:
      - path: {PLAIN}
        images:
          - name: {image}
            tag: v2
      - path: {VALUES}
        image: "{image}:v1"
        set:
          image.tag: v1
          image.digest: "{{digest}}"
"#
    )
}

#[test]
fn pin_digest_in_the_config_pins_overlays_plain_manifests_and_fills_helm_digests() {
    let registry = Registry::start();
    let (index, _) = registry.push_oci_index("v1");
    let docker = registry.push_docker_v2("v2");
    let image = registry.image();
    let devops = Devops::with_files(&pinned_layout(&image));
    let run = || {
        Run::new()
            .verifying()
            .sha(SHA)
            .config(&pinned_config(&devops.url(), &image))
    };

    let (done, _) = bounded::run(run().args(["--output", "json"]), LIMIT);
    let json = done.ok().json();
    assert_eq!(json["pushed"], true);
    assert_eq!(
        json["images"],
        serde_json::json!([
            {"image": image, "tag": "v1", "digest": index},
            {"image": image, "tag": "v2", "digest": docker},
        ]),
        "each image once, with the digest the registry gave"
    );
    assert_eq!(devops.commit_count(), 2, "one commit for the three files");
    assert!(
        devops
            .file(DEV)
            .contains(&pinned_entry(&image, "v1", &index)),
        "{}",
        devops.file(DEV)
    );
    assert_eq!(
        devops.file(PLAIN),
        pinned_layout(&image)
            .into_iter()
            .find(|(p, _)| *p == PLAIN)
            .unwrap()
            .1
            .replace(":v0", &format!(":v2@{docker}"))
    );
    let values = yaml_rust2::YamlLoader::load_from_str(&devops.file(VALUES)).unwrap();
    assert_eq!(values[0]["image"]["tag"].as_str(), Some("v1"));
    assert_eq!(values[0]["image"]["digest"].as_str(), Some(index.as_str()));
    assert!(devops.file(VALUES).contains("# pinned by CI"));
    let rendered = kustomize_render(devops.checkout().path(), OVERLAY);
    assert!(
        rendered.contains(&format!("image: {image}:v1@{index}\n")),
        "{rendered}"
    );

    // The text result and the plan say what was verified, digest and all.
    let verified = format!("verified {image}:v1 {index}\nverified {image}:v2 {docker}\n");
    let (done, _) = bounded::run(run(), LIMIT);
    done.ok()
        .stdout_has(&verified)
        .stdout_has("already up to date");
    let (done, _) = bounded::run(run().args(["--plan"]), LIMIT);
    done.ok().stdout_has(&verified);
}

#[test]
fn an_image_may_opt_out_of_its_environments_pin() {
    let registry = Registry::start();
    registry.push_oci_index("v1");
    registry.push_docker_v2("v2");
    let image = registry.image();
    let devops = Devops::with_files(&pinned_layout(&image));
    let config = pinned_config(&devops.url(), &image).replace(
        "        tag: v2\n",
        "        tag: v2\n            pin: tag\n",
    );
    let (done, _) = bounded::run(Run::new().verifying().sha(SHA).config(&config), LIMIT);
    done.ok();
    assert!(
        devops
            .file(PLAIN)
            .contains(&format!("image: {image}:v2   #"))
    );
    assert!(devops.file(DEV).contains("digest: sha256:"));
}

#[test]
fn a_helm_digest_of_a_missing_tag_is_refused_and_nothing_is_pushed() {
    let registry = Registry::start();
    registry.push_oci_index("v1");
    registry.push_docker_v2("v2");
    let image = registry.image();
    let devops = Devops::with_files(&pinned_layout(&image));
    let head = devops.head();
    let config = pinned_config(&devops.url(), &image)
        .replace(&format!("\"{image}:v1\""), &format!("\"{image}:v404\""));
    let (done, _) = bounded::run(Run::new().verifying().sha(SHA).config(&config), LIMIT);
    done.code(2)
        .stderr_has(&format!("the image {image}:v404 is not in its registry"));
    assert_eq!(devops.head(), head);
}

#[test]
fn the_pin_digest_flag_and_a_helm_digest_go_together() {
    let registry = Registry::start();
    let (index, _) = registry.push_oci_index("v1");
    registry.push_docker_v2("v2");
    let image = registry.image();
    let devops = Devops::with_files(&pinned_layout(&image));
    let config = pinned_config(&devops.url(), &image).replace("    pin: digest\n", "");
    let (done, _) = bounded::run(
        Run::new()
            .verifying()
            .sha(SHA)
            .config(&config)
            .args(["--pin-digest"]),
        LIMIT,
    );
    done.ok();
    assert!(
        devops
            .file(VALUES)
            .contains(&format!("digest: \"{index}\"")),
        "{}",
        devops.file(VALUES)
    );
}

/// The common overlay shape: the base names a short image, the overlay maps it to the
/// registry with `newName`, so the cluster pulls `newName:newTag`.
fn short_name_layout(image: &str) -> Vec<(&'static str, String)> {
    tomoda_files_with(
        DEV,
        &format!(
            "resources:\n  - ../../base\nimages:\n  - name: {IMAGE}\n    newName: {image}\n    newTag: v0 # set by CI\n"
        ),
    )
}

#[test]
fn a_tag_only_promotion_verifies_and_pins_the_new_name_the_overlay_keeps() {
    let registry = Registry::start();
    let (index, _) = registry.push_oci_index("v1");
    let docker = registry.push_docker_v2("v2");
    let image = registry.image();
    let devops = Devops::with_files(&short_name_layout(&image));
    let run = |spec: &str| {
        Run::new()
            .verifying()
            .sha(SHA)
            .args(["--repo", &devops.url(), "--overlay", OVERLAY])
            .args(["--image", spec, "--pin-digest", "--output", "json"])
    };

    // The spec names the overlay's short name and a tag only: the registry is asked
    // about the newName the entry keeps, and its digest is pinned.
    let (done, _) = bounded::run(run(&format!("{IMAGE}:v1")), LIMIT);
    let json = done.ok().json();
    assert_eq!(json["pushed"], true);
    assert_eq!(
        json["images"],
        serde_json::json!([{"image": image, "tag": "v1", "digest": index}]),
    );
    let file = devops.file(DEV);
    assert!(
        file.contains(&format!(
            "  - name: {IMAGE}\n    newName: {image}\n    newTag: v1 # set by CI\n    digest: {index}\n"
        )),
        "{file}"
    );
    let rendered = kustomize_render(devops.checkout().path(), OVERLAY);
    assert!(
        rendered.contains(&format!("image: {image}:v1@{index}\n")),
        "{rendered}"
    );

    // `name=*:tag` keeps the newName too.
    let (done, _) = bounded::run(run(&format!("{IMAGE}=*:v2")), LIMIT);
    let json = done.ok().json();
    assert_eq!(
        json["images"],
        serde_json::json!([{"image": image, "tag": "v2", "digest": docker}]),
    );
    assert!(devops.file(DEV).contains(&format!("digest: {docker}")));

    // A tag the newName's repository lacks is refused, naming what the cluster would pull.
    let head = devops.head();
    let (done, _) = bounded::run(run(&format!("{IMAGE}:v404")), LIMIT);
    done.code(2)
        .stderr_has(&format!("the image {image}:v404 is not in its registry"));
    assert_eq!(devops.head(), head);
}

#[test]
fn a_config_rule_with_only_a_tag_verifies_the_new_name_the_overlay_keeps() {
    let registry = Registry::start();
    let docker = registry.push_docker_v2("v2");
    let image = registry.image();
    let devops = Devops::with_files(&short_name_layout(&image));
    let config = format!(
        "repo: {}\nenvironments:\n  dev:\n    when: commit\n    pin: digest\n    overlay: {OVERLAY}\n    images:\n      - name: {IMAGE}\n        tag: v2\n",
        devops.url()
    );
    let run = || Run::new().verifying().sha(SHA).config(&config);

    let verified = format!("verified {image}:v2 {docker}\n");
    let (done, _) = bounded::run(run().args(["--plan"]), LIMIT);
    done.ok()
        .stdout_has(&verified)
        .stdout_has(&format!("+    digest: {docker}"));
    let (done, _) = bounded::run(run(), LIMIT);
    done.ok().stdout_has(&verified);
    assert!(
        devops
            .file(DEV)
            .contains(&format!("newTag: v2 # set by CI\n    digest: {docker}\n")),
        "{}",
        devops.file(DEV)
    );
}

/// A tag-only promotion of the dev overlay whose first push loses to another pipeline's
/// commit of `theirs` (the files it writes); the run.
fn promote_racing(devops: &Arc<Devops>, theirs: Vec<(&'static str, String)>) -> Done {
    let other = Arc::clone(devops);
    let mut fired = false;
    devops.server.before_request(move |request| {
        if !fired && request.starts_with("GET /devops.git/info/refs?service=git-receive-pack") {
            fired = true;
            other.commit(&theirs, "another pipeline");
        }
    });
    let done = Run::new()
        .verifying()
        .sha(SHA)
        .args(["--repo", &devops.url(), "--overlay", OVERLAY])
        .args(["--image", &format!("{IMAGE}:v1"), "--pin-digest"])
        .args(["--output", "json"])
        .run();
    devops.server.before_request(|_| {});
    assert_eq!(done.ok().json()["attempts"], 2, "{}", done.stderr);
    done
}

#[test]
fn a_retry_round_checks_what_the_new_tip_pulls_and_asks_nothing_twice() {
    let registry = Registry::start();
    let digest = registry.push_docker_v2("v1");
    // Two names for the one registry, as the overlay may name it before and after
    // another pipeline's commit.
    let first = Proxy::start(registry.addr, |_| Fault::Forward);
    let second = Proxy::start(registry.addr, |_| Fault::Forward);
    let before = format!("{}/{REPOSITORY}", first.addr());
    let after = format!("{}/{REPOSITORY}", second.addr());
    let found = |image: &str| format!("{image}:v1 is in its registry: {digest}");

    // The other pipeline changes another file: the retry pulls the same reference, and
    // the registry is not asked again.
    let devops = Arc::new(Devops::with_files(&short_name_layout(&before)));
    let done = promote_racing(
        &devops,
        vec![(PROD, tomoda_file(PROD).replace("v1.4.0", "v1.4.1"))],
    );
    assert_eq!(
        done.stderr.matches(&found(&before)).count(),
        1,
        "{}",
        done.stderr
    );
    assert!(devops.file(DEV).contains(&format!(
        "newName: {before}\n    newTag: v1 # set by CI\n    digest: {digest}\n"
    )));

    // The other pipeline moves the entry's newName: the retry checks and pins that.
    let devops = Arc::new(Devops::with_files(&short_name_layout(&before)));
    let done = promote_racing(&devops, short_name_layout(&after));
    done.stderr_has(&found(&before)).stderr_has(&found(&after));
    assert_eq!(
        done.json()["images"],
        serde_json::json!([{"image": after, "tag": "v1", "digest": digest}]),
    );
    assert!(
        devops.file(DEV).contains(&format!(
            "newName: {after}\n    newTag: v1 # set by CI\n    digest: {digest}\n"
        )),
        "{}",
        devops.file(DEV)
    );
}
