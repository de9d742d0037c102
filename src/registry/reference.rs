//! Which registry and repository an image name means, as Docker reads names: the first
//! component is a host when it has a `.` or a `:` or is `localhost`, else the image is on
//! Docker Hub (`nginx` is `registry-1.docker.io/library/nginx`). And how to speak to that
//! host: HTTPS, except loopback and hosts the user listed as insecure.

use std::fmt;
use std::net::IpAddr;

/// Docker Hub's registry API host; `docker.io` and `index.docker.io` are its other names.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// One tag of one repository on one registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The name as the devops file has it (newName, else name), without a tag.
    pub written: String,
    /// `host[:port]` of the registry API, lowercase.
    pub host: String,
    /// The repository path on that host, such as `library/nginx`.
    pub repository: String,
    pub tag: String,
}

impl Reference {
    /// `name` is a repository without a tag (`image::check_new_name` has passed it).
    pub fn parse(name: &str, tag: &str) -> Result<Reference, String> {
        let (host, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':']) || first.eq_ignore_ascii_case("localhost") =>
            {
                (first.to_ascii_lowercase(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let host = match host.as_str() {
            "docker.io" | "index.docker.io" => DOCKER_HUB.to_string(),
            _ => host,
        };
        let repository = if host == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        };
        if !repository.split('/').all(component_ok) {
            return Err(format!(
                "`{name}` is not a repository a registry accepts (lowercase letters, digits, `._-` between `/`)"
            ));
        }
        Ok(Reference {
            written: name.to_string(),
            host,
            repository,
            tag: tag.to_string(),
        })
    }

    /// `https://host/v2/<repository>/manifests/<tag>` (or `http://` for `plain_http`).
    pub fn manifest_url(&self, plain_http: bool) -> String {
        let scheme = if plain_http { "http" } else { "https" };
        format!(
            "{scheme}://{}/v2/{}/manifests/{}",
            self.host, self.repository, self.tag
        )
    }

    /// The host without its port, for matching names such as `gcr.io`.
    pub fn hostname(&self) -> &str {
        hostname(&self.host)
    }

    /// Artifact Registry (`*-docker.pkg.dev`) and Container Registry (`gcr.io`,
    /// `*.gcr.io`): where the GCE metadata server's token is worth asking for.
    pub fn is_google(&self) -> bool {
        let h = self.hostname();
        h.ends_with("-docker.pkg.dev") || h == "gcr.io" || h.ends_with(".gcr.io")
    }
}

impl fmt::Display for Reference {
    /// As the user wrote it, with the tag: `nginx:1.27`, `reg.example/app:v1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.written, self.tag)
    }
}

/// `host[:port]` without the port; `[::1]:5000` gives `[::1]`.
fn hostname(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Whether to speak plain HTTP to `host`: as Docker does for loopback (`localhost`,
/// `127.0.0.0/8`, `[::1]`), and for hosts given with `--insecure-registry` (matched as
/// `host[:port]` or as the bare host), never otherwise.
pub fn plain_http(host: &str, insecure: &[String]) -> bool {
    let name = hostname(host);
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback
        || insecure
            .iter()
            .any(|i| i.eq_ignore_ascii_case(host) || i.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(name: &str) -> (String, String) {
        let r = Reference::parse(name, "v1").unwrap();
        (r.host, r.repository)
    }

    #[test]
    fn docker_hub_short_names_and_hosts() {
        let hub = |repo: &str| (DOCKER_HUB.to_string(), repo.to_string());
        assert_eq!(parts("nginx"), hub("library/nginx"));
        assert_eq!(parts("bitnami/nginx"), hub("bitnami/nginx"));
        assert_eq!(parts("docker.io/nginx"), hub("library/nginx"));
        assert_eq!(parts("index.docker.io/acme/app"), hub("acme/app"));
        assert_eq!(
            parts("asia-east1-docker.pkg.dev/p/repo/app"),
            ("asia-east1-docker.pkg.dev".into(), "p/repo/app".into())
        );
        assert_eq!(parts("localhost/app"), ("localhost".into(), "app".into()));
        assert_eq!(
            parts("127.0.0.1:5000/team/app"),
            ("127.0.0.1:5000".into(), "team/app".into())
        );
        assert_eq!(parts("[::1]:5000/app"), ("[::1]:5000".into(), "app".into()));
        let r = Reference::parse("nginx", "1.27").unwrap();
        assert_eq!(r.to_string(), "nginx:1.27");
        assert_eq!(
            r.manifest_url(false),
            "https://registry-1.docker.io/v2/library/nginx/manifests/1.27"
        );
        assert!(Reference::parse("reg.example/App", "v1").is_err());
    }

    #[test]
    fn only_loopback_and_listed_hosts_are_spoken_to_in_plain_http() {
        for host in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "LOCALHOST",
        ] {
            assert!(plain_http(host, &[]), "{host}");
        }
        for host in [
            "reg.example",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]",
        ] {
            assert!(!plain_http(host, &[]), "{host}");
        }
        let insecure = ["reg.internal:5000".to_string(), "build-cache".to_string()];
        assert!(plain_http("reg.internal:5000", &insecure));
        assert!(!plain_http("reg.internal:6000", &insecure));
        assert!(plain_http("build-cache:8080", &insecure));
    }

    #[test]
    fn google_registries() {
        let google = |n: &str| Reference::parse(n, "v").unwrap().is_google();
        assert!(google("asia-east1-docker.pkg.dev/p/r/app"));
        assert!(google("gcr.io/p/app"));
        assert!(google("eu.gcr.io/p/app"));
        assert!(!google("ghcr.io/o/app"));
        assert!(!google("nginx"));
        assert!(!google("evil-docker.pkg.dev.example.com/app"));
    }
}
