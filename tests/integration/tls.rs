//! HTTPS: the git server behind TLS with a CA the test makes (rcgen), trusted through
//! SSL_CERT_FILE only. The machine's SSL_CERT_FILE, GIT_SSL_CAINFO and CURL_CA_BUNDLE are
//! not seen: `Run::new()` clears the environment, and each run sets SSL_CERT_FILE itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::bounded;
use crate::dsl::*;
use crate::git_server::GitServer;

const LIMIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "ghs_tlsTokenNeverShown0123456789";

/// A certificate authority of the test's own.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses): (chain PEM, key PEM).
    fn leaf(&self, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "tomoda-promote test git server");
        edit(&mut params);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).expect("write the CA PEM");
        path
    }
}

/// The tomoda devops repo, served over HTTPS with `chain`/`key` (the plain server of
/// `Devops` stays up for reading the result with git).
fn https_devops(chain: &str, key: &str) -> (Devops, GitServer) {
    let devops = Devops::tomoda();
    let tls = GitServer::start_tls(&devops.dir.path().join("srv"), chain, key);
    (devops, tls)
}

fn promote(url: &str, ca_file: Option<&Path>) -> (Done, Duration) {
    let mut run = Run::new()
        .config(&tomoda_config(url))
        .sha(SHA)
        .env("GIT_TOKEN", TOKEN)
        .args(["--output", "json", "--timeout", "10"]);
    if let Some(ca_file) = ca_file {
        run = run.env("SSL_CERT_FILE", ca_file.to_str().unwrap());
    }
    bounded::run(run, LIMIT)
}

#[test]
fn a_promotion_over_https_with_a_ca_trusted_through_ssl_cert_file_lands() {
    let ca = Ca::new("tomoda-promote test CA");
    let (chain, key) = ca.leaf(&["127.0.0.1", "localhost"], |_| {});
    let (devops, tls) = https_devops(&chain, &key);
    let certs = tempfile::tempdir().unwrap();
    let ca_file = ca.write(certs.path(), "ca.pem");
    let url = tls.url("devops.git");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let (done, elapsed) = promote(&url, Some(&ca_file));
    let json = done.ok().never_shows(TOKEN).json();
    eprintln!("https promotion took {elapsed:?}");
    assert_eq!(json["pushed"], true);
    assert_eq!(json["repo"], url);
    assert_eq!(json["commit"], devops.head());
    assert_eq!(devops.file(DEV), tomoda_file(DEV).replace(OLD_SHA, SHA));
    assert_eq!(devops.commit_count(), 2);
    let over_tls = tls.requests();
    assert!(
        over_tls
            .iter()
            .any(|r| r.starts_with("POST /devops.git/git-receive-pack -> 200")),
        "the push went through the TLS front: {over_tls:?}"
    );

    // The same by host name: the certificate names localhost too.
    let by_name = url.replace("127.0.0.1", "localhost");
    let (done, _) = promote(&by_name, Some(&ca_file));
    let json = done.ok().json();
    assert_eq!(json["up_to_date"], true, "{}", done.stderr);
}

/// Refused before any request: exit 1, the message names the host and the certificate
/// problem, nothing reaches the git server, nothing is pushed, and it is not retried.
fn assert_refused(done: &Done, devops: &Devops, tls: &GitServer, says: &[&str]) {
    done.code(1)
        .stderr_has("TLS handshake with 127.0.0.1 failed")
        .never_shows(TOKEN);
    for needle in says {
        done.stderr_has(needle);
    }
    assert_eq!(
        done.stderr.matches("retrying").count(),
        0,
        "a TLS failure is not retried:\n{}",
        done.stderr
    );
    assert_eq!(
        tls.requests(),
        Vec::<String>::new(),
        "no request got past TLS"
    );
    assert_eq!(devops.commit_count(), 1, "nothing pushed");
}

#[test]
fn a_certificate_for_another_host_is_refused() {
    let ca = Ca::new("tomoda-promote test CA");
    let (chain, key) = ca.leaf(&["example.invalid"], |_| {});
    let (devops, tls) = https_devops(&chain, &key);
    let certs = tempfile::tempdir().unwrap();
    let ca_file = ca.write(certs.path(), "ca.pem");
    let (done, _) = promote(&tls.url("devops.git"), Some(&ca_file));
    assert_refused(
        &done,
        &devops,
        &tls,
        &["not valid for this host name", &tls.url("devops.git")],
    );
}

#[test]
fn a_certificate_from_an_untrusted_ca_is_refused() {
    let ca = Ca::new("tomoda-promote test CA");
    let other = Ca::new("some other CA");
    let (chain, key) = ca.leaf(&["127.0.0.1", "localhost"], |_| {});
    let (devops, tls) = https_devops(&chain, &key);
    let certs = tempfile::tempdir().unwrap();
    let other_file = other.write(certs.path(), "other-ca.pem");
    let (done, _) = promote(&tls.url("devops.git"), Some(&other_file));
    assert_refused(
        &done,
        &devops,
        &tls,
        &["not signed by a trusted CA", "SSL_CERT_FILE"],
    );

    // Without SSL_CERT_FILE the built-in roots and the system bundle apply: still refused.
    let (done, _) = promote(&tls.url("devops.git"), None);
    assert_refused(&done, &devops, &tls, &["not signed by a trusted CA"]);
}

#[test]
fn an_expired_certificate_is_refused() {
    let ca = Ca::new("tomoda-promote test CA");
    let (chain, key) = ca.leaf(&["127.0.0.1"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let (devops, tls) = https_devops(&chain, &key);
    let certs = tempfile::tempdir().unwrap();
    let ca_file = ca.write(certs.path(), "ca.pem");
    let (done, _) = promote(&tls.url("devops.git"), Some(&ca_file));
    assert_refused(&done, &devops, &tls, &["outside its validity period"]);
}

#[test]
fn an_unreadable_ssl_cert_file_is_a_clear_error() {
    let ca = Ca::new("tomoda-promote test CA");
    let (chain, key) = ca.leaf(&["127.0.0.1"], |_| {});
    let (devops, tls) = https_devops(&chain, &key);
    let certs = tempfile::tempdir().unwrap();
    let not_pem = certs.path().join("not-a-bundle.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let (done, _) = promote(&tls.url("devops.git"), Some(&not_pem));
    done.code(1)
        .stderr_has("SSL_CERT_FILE")
        .stderr_has(not_pem.to_str().unwrap());
    assert_eq!(devops.commit_count(), 1);
}
