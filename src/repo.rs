//! Where the devops repository is: an http(s) URL with any credentials taken out of it
//! before anything can show it, or a local path. Pure: shared by the planner and the git
//! edge, so that neither depends on the other.

use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;
use reqwest::Url;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// An http(s) URL with any credentials taken out of it.
    Remote {
        url: String,
        credentials: Option<Credentials>,
    },
    Local(PathBuf),
}

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl RepoLocation {
    /// How the repository is shown to people: never with credentials.
    pub fn display(&self) -> String {
        match self {
            RepoLocation::Remote { url, .. } => url.clone(),
            RepoLocation::Local(path) => path.display().to_string(),
        }
    }
}

/// The forge hosting a devops repository: its API reads files and makes commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
    Bitbucket,
}

impl Forge {
    pub const NAMES: [&str; 3] = ["github", "gitlab", "bitbucket"];

    /// As written in promote.yaml: `github`, `gitlab`, `bitbucket`.
    pub fn from_name(name: &str) -> Option<Forge> {
        match name {
            "github" => Some(Forge::GitHub),
            "gitlab" => Some(Forge::GitLab),
            "bitbucket" => Some(Forge::Bitbucket),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Bitbucket => "bitbucket",
        }
    }

    /// Only the public hosts are known by name; GitHub Enterprise Server and self-managed
    /// GitLab say so with `forge:`.
    pub fn from_host(host: &str) -> Option<Forge> {
        match host.trim_start_matches("www.") {
            "github.com" => Some(Forge::GitHub),
            "gitlab.com" => Some(Forge::GitLab),
            "bitbucket.org" => Some(Forge::Bitbucket),
            _ => None,
        }
    }

    /// Where the API of the forge at `origin` (`https://host[:port]`) answers.
    fn default_api_url(self, origin: &str, host: &str) -> String {
        match (self, host) {
            (Forge::GitHub, "github.com") => "https://api.github.com".into(),
            (Forge::GitHub, _) => format!("{origin}/api/v3"),
            (Forge::GitLab, _) => format!("{origin}/api/v4"),
            (Forge::Bitbucket, _) => "https://api.bitbucket.org/2.0".into(),
        }
    }
}

/// A devops repository as its forge's API names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeRepo {
    pub forge: Forge,
    /// The API's base URL, without a trailing `/`: `https://api.github.com`,
    /// `https://gitlab.example/api/v4`.
    pub api_url: String,
    /// `owner/repo` (GitHub), `group/subgroup/project` (GitLab), `workspace/repo`
    /// (Bitbucket): the URL's path without `.git`.
    pub path: String,
}

/// The forge of `location`: as `forge:` says, else by its host; `None` when neither tells
/// (a local path, an unknown host).
pub fn forge_repo(
    location: &RepoLocation,
    forge: Option<Forge>,
    api_url: Option<&str>,
) -> Result<Option<ForgeRepo>> {
    let RepoLocation::Remote { url, .. } = location else {
        return match forge {
            Some(f) => Err(Error::usage(
                format!(
                    "`forge: {}` needs the devops repository's https URL, not a local path",
                    f.name()
                ),
                "set `repo:` to the repository's URL on the forge, or drop `forge:`",
            )),
            None => Ok(None),
        };
    };
    let Ok(parsed) = Url::parse(url) else {
        return Ok(None);
    };
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    let Some(forge) = forge.or_else(|| Forge::from_host(&host)) else {
        return Ok(None);
    };
    let path = parsed.path().trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).to_string();
    let parts = path.split('/').filter(|p| !p.is_empty()).count();
    let fits = match forge {
        Forge::GitHub | Forge::Bitbucket => parts == 2,
        Forge::GitLab => parts >= 2,
    };
    if !fits {
        return Err(Error::usage(
            format!("{url} does not name a {} repository", forge.name()),
            "write the repo as https://host/owner/repo.git (GitLab: https://host/group/project.git)",
        ));
    }
    let origin = parsed.origin().ascii_serialization();
    let api_url = api_url.map_or_else(
        || forge.default_api_url(&origin, &host),
        |u| u.trim_end_matches('/').to_string(),
    );
    Ok(Some(ForgeRepo {
        forge,
        api_url,
        path,
    }))
}

/// `https://user:token@host/path` gives the URL without credentials, and the credentials.
pub fn parse_repo(text: &str, base: &Path) -> Result<RepoLocation> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        let mut url = reqwest::Url::parse(text).map_err(|e| match e {
            url::ParseError::EmptyHost => Error::usage(
                "the repo URL has no host",
                "write it as https://host/owner/devops.git",
            ),
            e => Error::usage(
                format!("the repo URL {} is not valid: {e}", redact_str(text)),
                "write it as https://host[:port]/owner/devops.git",
            ),
        })?;
        let credentials = take_userinfo(&mut url);
        return Ok(RepoLocation::Remote {
            url: url.to_string(),
            credentials,
        });
    }
    if let Some(path) = text.strip_prefix("file://") {
        return Ok(RepoLocation::Local(PathBuf::from(path)));
    }
    if lower.starts_with("ssh://") || lower.starts_with("git@") || lower.starts_with("git://") {
        return Err(Error::usage(
            "ssh and git:// URLs are not supported",
            "use the https URL of the devops repository with a token in GIT_TOKEN",
        ));
    }
    if let Some((scheme, _)) = text.split_once("://") {
        return Err(Error::usage(
            format!(
                "`{}://` is not a scheme tomoda-promote speaks",
                scheme.escape_debug()
            ),
            "write the repo as https://host/owner/devops.git, or as a local path",
        ));
    }
    // Lexically tidy (`a/./b` to `a/b`) so the path reads well in messages.
    Ok(RepoLocation::Local(base.join(text).components().collect()))
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

/// Control characters as spaces: text from a server or a mistyped URL, made safe to print.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
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
    fn the_forge_is_told_by_the_host_or_by_forge() {
        let remote = |u: &str| parse_repo(u, Path::new("/")).unwrap();
        let github = forge_repo(&remote("https://github.com/acme/devops.git"), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (github.forge, github.api_url.as_str(), github.path.as_str()),
            (Forge::GitHub, "https://api.github.com", "acme/devops")
        );
        let ghes = forge_repo(
            &remote("https://git.corp/acme/devops"),
            Some(Forge::GitHub),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(ghes.api_url, "https://git.corp/api/v3");
        let gitlab = forge_repo(&remote("https://gitlab.com/a/b/c.git"), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (gitlab.api_url.as_str(), gitlab.path.as_str()),
            ("https://gitlab.com/api/v4", "a/b/c")
        );
        let bitbucket = forge_repo(
            &remote("https://bitbucket.org/ws/devops.git"),
            None,
            Some("http://127.0.0.1:9/2.0/"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(bitbucket.api_url, "http://127.0.0.1:9/2.0");
        assert_eq!(
            forge_repo(&remote("https://git.corp/a/b.git"), None, None).unwrap(),
            None
        );
        assert!(forge_repo(&remote("https://github.com/a/b/c"), None, None).is_err());
        assert!(forge_repo(&remote("/srv/devops"), Some(Forge::GitLab), None).is_err());
    }
}
