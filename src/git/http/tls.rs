//! Which certificate authorities the git connection trusts. The shipped image has no
//! system store, and CI machines often re-sign TLS with a private CA, so the roots are
//! the bundled web PKI roots, plus `SSL_CERT_FILE` when set (an unusable one is an
//! error: the user asked for it), else the machine's own store wherever its
//! distribution keeps it (`rustls-native-certs`: Debian, RHEL, Alpine, `SSL_CERT_DIR`).

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// rustls with the ring provider, speaking HTTP/1.1, with the roots above.
pub(crate) fn tls_config() -> Result<rustls::ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    match std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        Some(path) => add_cert_file(&mut roots, Path::new(&path))?,
        None => add_system_store(&mut roots),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // reqwest sets ALPN only on configs it builds itself; this client speaks HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn add_cert_file(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string()))
        .map_err(|e| {
            format!(
                "SSL_CERT_FILE names {}, which cannot be read as a PEM CA bundle ({e}); point it at a PEM CA bundle or unset it",
                path.display()
            )
        })?;
    let (added, ignored) = roots.add_parsable_certificates(certs);
    tracing::debug!(path = %path.display(), added, ignored, "SSL_CERT_FILE certificates loaded");
    if added == 0 {
        return Err(format!(
            "SSL_CERT_FILE names {}, which holds no usable PEM certificate; point it at a PEM CA bundle or unset it",
            path.display()
        ));
    }
    Ok(())
}

/// Best effort: a machine without a store (such as the `FROM scratch` image) keeps the
/// bundled roots only.
fn add_system_store(roots: &mut RootCertStore) {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(%error, "system CA store skipped");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system CA certificates loaded");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_config_builds_with_roots() {
        let config = tls_config().expect("TLS config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
