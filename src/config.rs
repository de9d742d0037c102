//! promote.yaml: which environment a build goes to, and which images it sets there.
//!
//! Parsed with positions so every complaint names its line; unknown keys are errors,
//! because a typo that passes silently promotes to the wrong place or not at all.

use std::time::Duration;

use regex_lite::Regex;

use crate::error::{Error, Result};
use crate::repo::Forge;
use crate::values::KeyPath;
use crate::yaml::tree::{self, Map, Node};

#[derive(Debug, Clone)]
pub struct Config {
    pub file: String,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub author: Option<String>,
    pub delivery: Delivery,
    /// Where holds are kept in the devops repo (`.promote/holds.yaml` unless moved).
    pub holds_file: Option<String>,
    /// `source_repo:`: the app's repository on its forge (`owner/repo`, or its https URL),
    /// asked for the order of two commits when no checkout here holds them; and its line.
    pub source_repo: Option<(String, usize)>,
    pub environments: Vec<Environment>,
}

/// The Argo CD application an environment deploys through, refreshed after each push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgoCd {
    pub line: usize,
    pub server: Option<String>,
    pub app: Option<String>,
    /// `wait: 10m`: after the refresh, wait this long for Synced and Healthy.
    pub wait: Option<Duration>,
}

/// How a commit reaches the branch, and through which forge: given at the top level or
/// per environment (which wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    pub commit_via: Option<CommitVia>,
    pub forge: Option<Forge>,
    /// The forge's API base URL (GitHub Enterprise Server, self-managed GitLab).
    pub api_url: Option<String>,
}

/// `commit_via:`: a git push, or the forge's API (signed commits, no clone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CommitVia {
    #[default]
    Git,
    Api,
}

impl CommitVia {
    pub fn name(self) -> &'static str {
        match self {
            CommitVia::Git => "git",
            CommitVia::Api => "api",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    pub line: usize,
    pub when: When,
    /// Another repository or branch than the top level's (prod kept apart from dev).
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub delivery: Delivery,
    /// A Kustomize overlay and the images set in it; `None` when only `files:` are given.
    pub overlay: Option<String>,
    pub images: Vec<ImageRule>,
    /// Other files: Helm values and any YAML by key path, plain manifests by image.
    pub files: Vec<FileRule>,
    /// `pin: digest`: every image of the environment gets its registry digest.
    pub pin: Option<Pin>,
    pub argocd: Option<ArgoCd>,
    /// `pull_request: true`: the change goes to the target branch through a reviewed
    /// request, not a push.
    pub review: Review,
}

/// `pull_request:`, `labels:` and `auto_merge:` of an environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Review {
    pub pull_request: bool,
    pub labels: Vec<String>,
    pub auto_merge: bool,
    /// The line of `auto_merge:` (or of `labels:`), for an error about it.
    pub line: Option<usize>,
}

/// `pin:` of an environment or an image: write the digest the registry gives the tag, or
/// (`tag`, on an image) not, whatever the environment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    Digest,
    Tag,
}

/// One file of `files:`, and what is set in it.
#[derive(Debug, Clone)]
pub struct FileRule {
    pub line: usize,
    pub path: String,
    pub edit: FileRuleEdit,
    /// With `set:`, the image (`name:tag`) the values are about: the registry checks it,
    /// and its digest fills `{digest}`.
    pub image: Option<Template>,
}

#[derive(Debug, Clone)]
pub enum FileRuleEdit {
    /// `set:` key paths to values (`image.tag: "{commit_sha}"`).
    Set(Vec<SetRule>),
    /// `images:` as for an overlay: a kustomization file's entries, or a manifest's
    /// container images.
    Images(Vec<ImageRule>),
}

#[derive(Debug, Clone)]
pub struct SetRule {
    pub line: usize,
    pub path: KeyPath,
    pub value: Template,
}

/// Which builds an environment takes.
#[derive(Debug, Clone)]
pub enum When {
    /// A build of a commit with no tag.
    Commit,
    /// A build of a tag matching this expression.
    Tag(Regex),
}

impl When {
    pub fn describe(&self) -> String {
        match self {
            When::Commit => "commit (a build with no tag)".into(),
            When::Tag(re) => format!("a tag matching '{}'", re.as_str()),
        }
    }
}

/// One image of an environment; values may hold placeholders.
#[derive(Debug, Clone)]
pub struct ImageRule {
    pub line: usize,
    pub name: String,
    pub new_name: Option<Template>,
    pub tag: Option<Template>,
    pub digest: Option<Template>,
    pub pin: Option<Pin>,
}

/// A value with `{commit_sha}`-style placeholders, checked when the config is read: only
/// a missing value can keep it from being filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// As written in promote.yaml.
    text: String,
    pub line: usize,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

/// A value of the build that a template can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    CommitSha,
    ShortSha,
    TagName,
    BranchName,
    /// The registry's digest of a `files:` entry's `image:`; only `set:` values take it.
    Digest,
}

impl Placeholder {
    pub const ALL: [Placeholder; 5] = [
        Placeholder::CommitSha,
        Placeholder::ShortSha,
        Placeholder::TagName,
        Placeholder::BranchName,
        Placeholder::Digest,
    ];

    /// The name written between the braces: `commit_sha` for `{commit_sha}`.
    pub fn name(self) -> &'static str {
        match self {
            Placeholder::CommitSha => "commit_sha",
            Placeholder::ShortSha => "short_sha",
            Placeholder::TagName => "tag_name",
            Placeholder::BranchName => "branch_name",
            Placeholder::Digest => "digest",
        }
    }

    pub fn from_name(name: &str) -> Option<Placeholder> {
        Placeholder::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl std::fmt::Display for Placeholder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{{}}}", self.name())
    }
}

/// A template could not be filled: this build has no value for the placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingValue(pub Placeholder);

impl std::fmt::Display for MissingValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` has no value in this build", self.0)
    }
}

impl std::error::Error for MissingValue {}

/// Why a value cannot be read as a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A `{` with no `}` after it.
    Unclosed { text: String },
    /// `{name}` where `name` is not a placeholder.
    Unknown { name: String },
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::Unclosed { text } => {
                write!(f, "`{text}` has a `{{` with no closing `}}`")
            }
            TemplateError::Unknown { name } => write!(f, "unknown placeholder `{{{name}}}`"),
        }
    }
}

impl std::error::Error for TemplateError {}

impl Template {
    pub fn parse(text: &str, line: usize) -> std::result::Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| TemplateError::Unclosed { text: text.into() })?;
            let name = &rest[open + 1..close];
            let placeholder = Placeholder::from_name(name)
                .ok_or_else(|| TemplateError::Unknown { name: name.into() })?;
            parts.push(Part::Value(placeholder));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template {
            text: text.to_string(),
            line,
            parts,
        })
    }

    /// `*`, `kustomize edit set image`'s placeholder, as an image rule's `new_name:`,
    /// `tag:` or `digest:`: keep the entry's value of that field, as `--image` does.
    pub fn keeps(&self) -> bool {
        self.text == crate::image::KEEP
    }

    pub fn uses(&self, placeholder: Placeholder) -> bool {
        self.parts.contains(&Part::Value(placeholder))
    }

    /// Fills the placeholders; `lookup` returns `None` for a value this build lacks.
    pub fn render(
        &self,
        lookup: impl Fn(Placeholder) -> Option<String>,
    ) -> std::result::Result<String, MissingValue> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value(p) => out.push_str(&lookup(*p).ok_or(MissingValue(*p))?),
            }
        }
        Ok(out)
    }
}

fn placeholder_hint() -> String {
    let names: Vec<String> = Placeholder::ALL.iter().map(ToString::to_string).collect();
    format!("placeholders are {}", names.join(", "))
}

const TOP_KEYS: [&str; 9] = [
    "repo",
    "source_repo",
    "branch",
    "author",
    "holds_file",
    "commit_via",
    "forge",
    "api_url",
    "environments",
];
const ENV_KEYS: [&str; 14] = [
    "when",
    "overlay",
    "images",
    "files",
    "repo",
    "branch",
    "pin",
    "argocd",
    "commit_via",
    "forge",
    "api_url",
    "pull_request",
    "labels",
    "auto_merge",
];
const ARGOCD_KEYS: [&str; 3] = ["server", "app", "wait"];
const FILE_KEYS: [&str; 4] = ["path", "set", "images", "image"];
const IMAGE_KEYS: [&str; 5] = ["name", "new_name", "tag", "digest", "pin"];

impl Config {
    /// Parses promote.yaml's text; `file` is how errors name it.
    pub fn parse(file: &str, text: &str) -> Result<Config> {
        let bad = |line: Option<usize>, message: String, hint: &str| {
            Error::input(file, line, message, hint)
        };
        let docs = tree::parse(text).map_err(|e| {
            bad(
                Some(e.line),
                format!("invalid YAML: {}", e.message),
                "fix the YAML syntax",
            )
        })?;
        let Some(Node::Map(top)) = docs.first().map(|d| &d.root) else {
            return Err(bad(
                Some(1),
                "expected a mapping with `repo:` and `environments:`".into(),
                "see the README for an example promote.yaml",
            ));
        };
        if docs.len() > 1 {
            return Err(bad(
                Some(docs[1].root.line()),
                "more than one YAML document".into(),
                "remove the `---` and what follows",
            ));
        }
        let reader = Reader { file };
        reader.check_keys(top, &TOP_KEYS, "at the top level")?;
        let environments_node = top.get("environments").map(|(_, v)| v).ok_or_else(|| {
            bad(
                Some(1),
                "no `environments:`".into(),
                "add `environments:` with at least one environment, e.g. dev with `when: commit`",
            )
        })?;
        let Node::Map(envs) = environments_node else {
            return Err(reader.expected(environments_node, "a mapping of environment names"));
        };
        let mut environments: Vec<Environment> = Vec::new();
        for (key, value) in &envs.entries {
            let environment = reader.environment(key, value)?;
            if let Some(first) = environments.iter().find(|e| e.name == environment.name) {
                return Err(bad(
                    Some(environment.line),
                    format!(
                        "environment `{}` is given twice (first at line {})",
                        environment.name, first.line
                    ),
                    "rename or remove one of them",
                ));
            }
            environments.push(environment);
        }
        if environments.is_empty() {
            return Err(bad(
                Some(environments_node.line()),
                "`environments:` is empty".into(),
                "add at least one environment",
            ));
        }
        Ok(Config {
            file: file.to_string(),
            repo: reader.opt_string(top, "repo")?,
            branch: reader.opt_string(top, "branch")?,
            author: reader.opt_string(top, "author")?,
            delivery: reader.delivery(top)?,
            holds_file: reader.opt_string(top, "holds_file")?,
            source_repo: top
                .get("source_repo")
                .map(|(_, node)| Ok::<_, Error>((reader.string(node)?, node.line())))
                .transpose()?,
            environments,
        })
    }
}

struct Reader<'a> {
    file: &'a str,
}

impl Reader<'_> {
    fn expected(&self, node: &Node, what: &str) -> Error {
        Error::input(
            self.file,
            Some(node.line()),
            format!("expected {what}, found {}", node.kind_name()),
            "see the README for an example promote.yaml",
        )
    }

    fn check_keys(&self, map: &Map, allowed: &[&str], place: &str) -> Result<()> {
        let mut seen: Vec<&str> = Vec::new();
        for (key, _) in &map.entries {
            let Some(name) = key.as_str() else {
                return Err(self.expected(key, "a plain key"));
            };
            if !allowed.contains(&name) {
                let hint = match closest(name, allowed) {
                    Some(near) => format!(
                        "did you mean `{near}`? allowed here: {}",
                        allowed.join(", ")
                    ),
                    None => format!("allowed here: {}", allowed.join(", ")),
                };
                return Err(Error::input(
                    self.file,
                    Some(key.line()),
                    format!("unknown key `{name}` {place}"),
                    hint,
                ));
            }
            if seen.contains(&name) {
                return Err(Error::input(
                    self.file,
                    Some(key.line()),
                    format!("`{name}` is given twice {place}"),
                    "keep one of them",
                ));
            }
            seen.push(name);
        }
        Ok(())
    }

    fn string(&self, node: &Node) -> Result<String> {
        match node {
            Node::Scalar(s) if !node.is_null() => Ok(s.value.clone()),
            _ => Err(self.expected(node, "a string")),
        }
    }

    fn opt_string(&self, map: &Map, key: &str) -> Result<Option<String>> {
        map.get(key).map(|(_, v)| self.string(v)).transpose()
    }

    /// `commit_via:`, `forge:` and `api_url:` of one mapping.
    fn delivery(&self, map: &Map) -> Result<Delivery> {
        let choice = |key: &str, allowed: &[&str]| -> Result<Option<(String, usize)>> {
            let Some((_, node)) = map.get(key) else {
                return Ok(None);
            };
            let value = self.string(node)?;
            if !allowed.contains(&value.as_str()) {
                return Err(Error::input(
                    self.file,
                    Some(node.line()),
                    format!("`{key}: {value}` is not one of {}", allowed.join(", ")),
                    format!("write `{key}:` as one of {}", allowed.join(", ")),
                ));
            }
            Ok(Some((value, node.line())))
        };
        let commit_via = choice("commit_via", &["git", "api"])?.map(|(v, _)| match v.as_str() {
            "api" => CommitVia::Api,
            _ => CommitVia::Git,
        });
        let forge = choice("forge", &Forge::NAMES)?.and_then(|(v, _)| Forge::from_name(&v));
        let api_url = self.opt_string(map, "api_url")?;
        if let (Some(url), Some((_, node))) = (&api_url, map.get("api_url"))
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(Error::input(
                self.file,
                Some(node.line()),
                format!("`api_url: {url}` is not an http(s) URL"),
                "write the forge's API base, e.g. https://github.example.com/api/v3 or https://gitlab.example.com/api/v4",
            ));
        }
        Ok(Delivery {
            commit_via,
            forge,
            api_url,
        })
    }

    /// A template that may not name `{digest}` (only `set:` values can).
    fn opt_template(&self, map: &Map, key: &str) -> Result<Option<Template>> {
        let Some((_, node)) = map.get(key) else {
            return Ok(None);
        };
        let line = node.line();
        let template = Template::parse(&self.string(node)?, line)
            .map_err(|e| Error::input(self.file, Some(line), e.to_string(), placeholder_hint()))?;
        if template.uses(Placeholder::Digest) {
            return Err(Error::input(
                self.file,
                Some(line),
                format!("`{key}:` cannot use `{{digest}}`"),
                "`{digest}` is for `set:` values of a file with `image:`; to pin an image's entry, write `pin: digest`",
            ));
        }
        Ok(Some(template))
    }

    fn opt_pin(&self, map: &Map) -> Result<Option<Pin>> {
        let Some((_, node)) = map.get("pin") else {
            return Ok(None);
        };
        match self.string(node)?.as_str() {
            "digest" => Ok(Some(Pin::Digest)),
            "tag" => Ok(Some(Pin::Tag)),
            other => Err(Error::input(
                self.file,
                Some(node.line()),
                format!("`pin: {other}` is neither `digest` nor `tag`"),
                "write `pin: digest` to write the registry's digest beside the tag (`pin: tag` turns it off for one image)",
            )),
        }
    }

    fn environment(&self, key: &Node, value: &Node) -> Result<Environment> {
        let name = self.string(key)?;
        let Node::Map(map) = value else {
            return Err(self.expected(
                value,
                &format!("environment `{name}` to be a mapping with when, overlay and images"),
            ));
        };
        let place = format!("in environment `{name}`");
        self.check_keys(map, &ENV_KEYS, &place)?;
        let required = |k: &str| {
            map.get(k).map(|(_, v)| v).ok_or_else(|| {
                Error::input(self.file, Some(key.line()), format!("environment `{name}` has no `{k}:`"), format!("add `{k}:` {}", match k {
                    "when" => "(`commit`, or a regex for release tags such as '^v\\d+\\.\\d+\\.\\d+$')",
                    "overlay" => "(the overlay directory in the devops repo, e.g. k8s/apps/app/overlays/dev)",
                    _ => "(a list of images with `name:` and `tag:`)",
                }))
            })
        };
        let when_node = required("when")?;
        let when_text = self.string(when_node)?;
        let when = if when_text == "commit" {
            When::Commit
        } else {
            When::Tag(Regex::new(&when_text).map_err(|e| {
                Error::input(
                    self.file,
                    Some(when_node.line()),
                    format!("`when: {when_text}` is neither `commit` nor a valid regex: {e}"),
                    "write `commit`, or a regex such as '^v\\d+\\.\\d+\\.\\d+$' (single quotes keep the backslashes)",
                )
            })?)
        };
        let overlay = self.opt_string(map, "overlay")?;
        if overlay.is_none()
            && let Some((k, _)) = map.get("images")
        {
            return Err(Error::input(
                self.file,
                Some(k.line()),
                format!("environment `{name}` has `images:` but no `overlay:` to set them in"),
                "add `overlay:` (the overlay directory), or move the images under `files:` with the file's `path:`",
            ));
        }
        let images = match (map.get("images"), &overlay) {
            (Some((_, node)), _) => self.images(node, &format!("environment `{name}`"))?,
            (None, Some(_)) => {
                required("images")?;
                Vec::new()
            }
            (None, None) => Vec::new(),
        };
        let files = match map.get("files") {
            Some((_, node)) => self.files(node)?,
            None => Vec::new(),
        };
        if overlay.is_none() && files.is_empty() {
            return Err(Error::input(
                self.file,
                Some(key.line()),
                format!("environment `{name}` has neither `overlay:` nor `files:`"),
                "add `overlay:` with `images:` (a Kustomize overlay), or `files:` with `path:` and `set:` (Helm values) or `images:` (plain manifests)",
            ));
        }
        let argocd = map
            .get("argocd")
            .map(|(_, node)| self.argocd(node, &name))
            .transpose()?;
        let review = self.review(map, &name)?;
        Ok(Environment {
            name,
            line: key.line(),
            when,
            repo: self.opt_string(map, "repo")?,
            branch: self.opt_string(map, "branch")?,
            delivery: self.delivery(map)?,
            overlay,
            images,
            files,
            pin: self.opt_pin(map)?,
            argocd,
            review,
        })
    }

    fn opt_bool(&self, map: &Map, key: &str) -> Result<Option<(bool, usize)>> {
        let Some((_, node)) = map.get(key) else {
            return Ok(None);
        };
        match self.string(node)?.as_str() {
            "true" => Ok(Some((true, node.line()))),
            "false" => Ok(Some((false, node.line()))),
            other => Err(Error::input(
                self.file,
                Some(node.line()),
                format!("`{key}: {other}` is neither true nor false"),
                format!("write `{key}: true` or `{key}: false`"),
            )),
        }
    }

    /// `pull_request:`, `labels:` and `auto_merge:`; the last two only with the first.
    fn review(&self, map: &Map, environment: &str) -> Result<Review> {
        let pull_request = self.opt_bool(map, "pull_request")?;
        let auto_merge = self.opt_bool(map, "auto_merge")?;
        let labels = match map.get("labels") {
            None => Vec::new(),
            Some((_, Node::Seq(items))) => items
                .items
                .iter()
                .map(|item| {
                    let label = self.string(item)?;
                    if label.trim().is_empty() || label.contains(',') {
                        return Err(Error::input(
                            self.file,
                            Some(item.line()),
                            format!("label `{label}` is empty or holds a comma"),
                            "write each label as its own list item, without commas",
                        ));
                    }
                    Ok(label)
                })
                .collect::<Result<Vec<_>>>()?,
            Some((_, node)) => return Err(self.expected(node, "a list of labels")),
        };
        let line = auto_merge
            .map(|(_, l)| l)
            .or(map.get("labels").map(|(k, _)| k.line()));
        let wanted = pull_request.is_some_and(|(on, _)| on);
        if !wanted
            && let Some(line) = line
            && (auto_merge.is_some_and(|(on, _)| on) || !labels.is_empty())
        {
            return Err(Error::input(
                self.file,
                Some(line),
                format!(
                    "environment `{environment}` has `labels:` or `auto_merge:` but no `pull_request: true`"
                ),
                "add `pull_request: true` (labels and auto-merge are the pull request's), or remove them",
            ));
        }
        Ok(Review {
            pull_request: wanted,
            labels,
            auto_merge: auto_merge.is_some_and(|(on, _)| on),
            line,
        })
    }

    fn argocd(&self, node: &Node, environment: &str) -> Result<ArgoCd> {
        let Node::Map(map) = node else {
            return Err(self.expected(node, "a mapping with `server:`, `app:` and `wait:`"));
        };
        self.check_keys(
            map,
            &ARGOCD_KEYS,
            &format!("in `argocd:` of environment `{environment}`"),
        )?;
        let wait = match map.get("wait") {
            None => None,
            Some((_, value)) => Some(parse_duration(&self.string(value)?).map_err(|e| {
                Error::input(
                    self.file,
                    Some(value.line()),
                    e,
                    "write `wait:` as a duration such as 10m or 90s",
                )
            })?),
        };
        Ok(ArgoCd {
            line: node.line(),
            server: self.opt_string(map, "server")?,
            app: self.opt_string(map, "app")?,
            wait,
        })
    }

    /// A non-empty list of images.
    fn images(&self, node: &Node, owner: &str) -> Result<Vec<ImageRule>> {
        let Node::Seq(items) = node else {
            return Err(self.expected(node, "a list of images"));
        };
        let images = items
            .items
            .iter()
            .map(|item| self.image(item))
            .collect::<Result<Vec<_>>>()?;
        if images.is_empty() {
            return Err(Error::input(
                self.file,
                Some(node.line()),
                format!("{owner} lists no images"),
                "add `- name: <image>` with `tag:`",
            ));
        }
        Ok(images)
    }

    fn files(&self, node: &Node) -> Result<Vec<FileRule>> {
        let Node::Seq(items) = node else {
            return Err(self.expected(node, "a list of files with `path:` and `set:` or `images:`"));
        };
        items
            .items
            .iter()
            .map(|item| self.file_rule(item))
            .collect()
    }

    fn file_rule(&self, item: &Node) -> Result<FileRule> {
        let Node::Map(map) = item else {
            return Err(self.expected(item, "a file mapping with `path:` and `set:` or `images:`"));
        };
        self.check_keys(map, &FILE_KEYS, "in a file of `files:`")?;
        let line = map.start_line();
        let path = self.opt_string(map, "path")?.ok_or_else(|| {
            Error::input(
                self.file,
                Some(line),
                "a file of `files:` has no `path:`",
                "add `path:` with the file's path in the devops repository",
            )
        })?;
        let image = self.opt_template(map, "image")?;
        let edit = match (map.get("set"), map.get("images")) {
            (Some((_, set)), None) => FileRuleEdit::Set(self.set_rules(set, &path)?),
            (None, Some(_)) if image.is_some() => {
                return Err(Error::input(
                    self.file,
                    Some(map.get("image").map_or(line, |(k, _)| k.line())),
                    format!("file `{path}` has both `image:` and `images:`"),
                    "`image:` names the image a `set:` entry is about; with `images:`, remove it",
                ));
            }
            (None, Some((_, images))) => {
                FileRuleEdit::Images(self.images(images, &format!("file `{path}`"))?)
            }
            (Some(_), Some(_)) | (None, None) => {
                return Err(Error::input(
                    self.file,
                    Some(line),
                    format!("file `{path}` needs one of `set:` or `images:`"),
                    "`set:` maps key paths to values (Helm values: `image.tag: \"{commit_sha}\"`); `images:` sets container images of a manifest or kustomization file",
                ));
            }
        };
        if let (FileRuleEdit::Set(sets), None) = (&edit, &image)
            && let Some(set) = sets.iter().find(|s| s.value.uses(Placeholder::Digest))
        {
            return Err(Error::input(
                self.file,
                Some(set.line),
                format!("file `{path}` uses `{{digest}}` but names no `image:`"),
                "add `image:` with the image and tag the digest is of, such as `image: reg.example/app:{tag_name}`",
            ));
        }
        Ok(FileRule {
            line,
            path,
            edit,
            image,
        })
    }

    fn set_rules(&self, node: &Node, path: &str) -> Result<Vec<SetRule>> {
        let Node::Map(map) = node else {
            return Err(self.expected(
                node,
                "a mapping of key paths to values, such as `image.tag: \"{commit_sha}\"`",
            ));
        };
        if map.entries.is_empty() {
            return Err(Error::input(
                self.file,
                Some(node.line()),
                format!("file `{path}` sets nothing"),
                "add a key path and its value, such as `image.tag: \"{commit_sha}\"`",
            ));
        }
        map.entries
            .iter()
            .map(|(key, value)| {
                let text = self.string(key)?;
                let key_path = KeyPath::parse(&text).map_err(|e| {
                    Error::input(
                        self.file,
                        Some(key.line()),
                        e.to_string(),
                        "write keys with dots (`image.tag`), list items as [0] or [name=api], and quote a key holding a dot ('a.b'.c)",
                    )
                })?;
                let line = value.line();
                let template = Template::parse(&self.string(value)?, line).map_err(|e| {
                    Error::input(self.file, Some(line), e.to_string(), placeholder_hint())
                })?;
                Ok(SetRule {
                    line: key.line(),
                    path: key_path,
                    value: template,
                })
            })
            .collect()
    }

    fn image(&self, item: &Node) -> Result<ImageRule> {
        let Node::Map(map) = item else {
            return Err(self.expected(item, "an image mapping with `name:` and `tag:`"));
        };
        self.check_keys(map, &IMAGE_KEYS, "in an image")?;
        let name_node = map.get("name").map(|(_, v)| v).ok_or_else(|| {
            Error::input(
                self.file,
                Some(map.start_line()),
                "an image has no `name:`",
                "add `name:` as written in the kustomization's images: list",
            )
        })?;
        let name = self.string(name_node)?;
        crate::image::check_name(&name).map_err(|e| {
            Error::input(self.file, Some(name_node.line()), e, "fix the image name")
        })?;
        let rule = ImageRule {
            line: map.start_line(),
            name,
            new_name: self.opt_template(map, "new_name")?,
            tag: self.opt_template(map, "tag")?,
            digest: self.opt_template(map, "digest")?,
            pin: self.opt_pin(map)?,
        };
        if rule.new_name.is_none() && rule.tag.is_none() && rule.digest.is_none() {
            return Err(Error::input(
                self.file,
                Some(rule.line),
                format!("image `{}` sets nothing", rule.name),
                "add `tag: \"{commit_sha}\"` (or new_name, digest)",
            ));
        }
        Ok(rule)
    }
}

/// The allowed key nearest to a typo, if it is near enough to be a typo.
fn closest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (strsim::levenshtein(word, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 3))
        .min()
        .map(|(_, a)| a)
}

/// `90`, `90s`, `2m`, `1m30s`, `1h`: the duration of `--wait-for-image`, `--wait` and `wait:`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("`{text}` is not a duration: write it as 90s, 2m or 1m30s");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    if let Some(millis) = text.strip_suffix("ms").and_then(|m| m.parse::<u64>().ok()) {
        return Ok(Duration::from_millis(millis));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"repo: https://github.com/tomoda/devops.git   # https URL, or a local path
branch: main
environments:
  dev:
    when: commit                  # a build of a commit with no tag
    overlay: k8s/apps/tomoda/overlays/dev
    images:
      - name: asia-east1-docker.pkg.dev/development-485000/tomoda-dev-repo/tomoda-backend
        tag: "{commit_sha}"
  prod:
    when: '^v\d+\.\d+\.\d+$'      # a build of a tag matching this regex
    overlay: k8s/apps/tomoda/overlays/prod
    images:
      - name: asia-east1-docker.pkg.dev/development-485000/tomoda-dev-repo/tomoda-backend
        new_name: asia-east1-docker.pkg.dev/development-485000/tomoda-prod-repo/tomoda-backend
        tag: "{tag_name}"
"#;

    #[test]
    fn a_pull_request_per_environment_with_its_labels_and_auto_merge() {
        let gated = EXAMPLE.replace(
            "  prod:\n",
            "  prod:\n    pull_request: true\n    labels: [release, prod]\n    auto_merge: true\n",
        );
        let c = Config::parse("promote.yaml", &gated).unwrap();
        assert_eq!(c.environments[0].review, Review::default());
        let review = &c.environments[1].review;
        assert!(review.pull_request && review.auto_merge);
        assert_eq!(review.labels, ["release", "prod"]);
        let e = error(&EXAMPLE.replace("  prod:\n", "  prod:\n    labels: [release]\n"));
        assert!(
            e.starts_with("promote.yaml:11: environment `prod` has `labels:` or `auto_merge:` but no `pull_request: true`"),
            "{e}"
        );
        let e = error(&EXAMPLE.replace("  prod:\n", "  prod:\n    pull_request: yes\n"));
        assert!(
            e.starts_with("promote.yaml:11: `pull_request: yes` is neither true nor false"),
            "{e}"
        );
    }

    #[test]
    fn the_readmes_review_gate_gates_prod_and_pushes_dev() {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find("## A review gate").unwrap()..];
        let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
        let text = &section[start..start + section[start..].find("```").unwrap()];
        let c = Config::parse("promote.yaml", text).unwrap();
        assert!(!c.environments[0].review.pull_request);
        assert!(c.environments[1].review.pull_request);
        assert_eq!(c.environments[1].review.labels, ["release", "prod"]);
    }

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse("promote.yaml", EXAMPLE).unwrap();
        assert_eq!(
            c.repo.as_deref(),
            Some("https://github.com/tomoda/devops.git")
        );
        assert_eq!(c.environments.len(), 2);
        assert!(matches!(c.environments[0].when, When::Commit));
        let When::Tag(re) = &c.environments[1].when else {
            panic!()
        };
        assert!(re.is_match("v1.2.3") && !re.is_match("v1.2"));
        assert_eq!(c.environments[1].images[0].tag.as_ref().unwrap().line, 16);
    }

    fn error(text: &str) -> String {
        Config::parse("promote.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn commit_via_forge_and_api_url_at_the_top_and_per_environment() {
        let text = EXAMPLE
            .replace(
                "branch: main\n",
                "branch: main\ncommit_via: api\nforge: github\napi_url: https://ghe.corp/api/v3\n",
            )
            .replace("  prod:\n", "  prod:\n    commit_via: git\n");
        let c = Config::parse("promote.yaml", &text).unwrap();
        assert_eq!(
            c.delivery,
            Delivery {
                commit_via: Some(CommitVia::Api),
                forge: Some(Forge::GitHub),
                api_url: Some("https://ghe.corp/api/v3".into()),
            }
        );
        assert_eq!(c.environments[0].delivery, Delivery::default());
        assert_eq!(c.environments[1].delivery.commit_via, Some(CommitVia::Git));
        let e = error(&EXAMPLE.replace("branch: main\n", "branch: main\ncommit_via: push\n"));
        assert!(
            e.starts_with("promote.yaml:3: `commit_via: push` is not one of git, api"),
            "{e}"
        );
        let e = error(&EXAMPLE.replace("branch: main\n", "branch: main\nforge: gitea\n"));
        assert!(e.contains("is not one of github, gitlab, bitbucket"), "{e}");
        let e = error(&EXAMPLE.replace("branch: main\n", "branch: main\napi_url: ghe.corp\n"));
        assert!(e.contains("is not an http(s) URL"), "{e}");
    }

    #[test]
    fn unknown_keys_name_their_line_and_a_near_key() {
        let e = error(&EXAMPLE.replace(
            "    overlay: k8s/apps/tomoda/overlays/dev",
            "    overlays: x",
        ));
        assert!(
            e.starts_with("promote.yaml:6: unknown key `overlays` in environment `dev`"),
            "{e}"
        );
        assert!(e.contains("did you mean `overlay`?"), "{e}");
        let e = error(&EXAMPLE.replace(
            "        tag: \"{tag_name}\"",
            "        tags: \"{tag_name}\"",
        ));
        assert!(
            e.starts_with("promote.yaml:16: unknown key `tags` in an image"),
            "{e}"
        );
        let e = error(&format!("{EXAMPLE}extra: 1\n"));
        assert!(
            e.starts_with("promote.yaml:17: unknown key `extra` at the top level"),
            "{e}"
        );
    }

    #[test]
    fn unknown_placeholders_and_bad_regexes_are_caught_early() {
        let e = error(&EXAMPLE.replace("{commit_sha}", "{commit}"));
        assert!(
            e.starts_with("promote.yaml:9: unknown placeholder `{commit}`"),
            "{e}"
        );
        let e = error(&EXAMPLE.replace(r"'^v\d+\.\d+\.\d+$'", "'^v(['"));
        assert!(
            e.starts_with("promote.yaml:11: `when: ^v([` is neither"),
            "{e}"
        );
        let e = error("environments:\n  dev:\n    when: commit\n    images: []\n");
        assert!(
            e.starts_with(
                "promote.yaml:4: environment `dev` has `images:` but no `overlay:` to set them in"
            ),
            "{e}"
        );
    }

    #[test]
    fn an_environment_given_twice_is_refused() {
        // Found by the hostile corpus: the second `dev:` was silently ignored.
        let e = error(&EXAMPLE.replace("  prod:", "  dev:"));
        assert!(
            e.starts_with("promote.yaml:10: environment `dev` is given twice (first at line 4)"),
            "{e}"
        );
    }

    #[test]
    fn templates_render_or_name_the_missing_value() {
        let t = Template::parse("main-{short_sha}-{branch_name}", 1).unwrap();
        let only_sha = |p: Placeholder| (p == Placeholder::ShortSha).then(|| "abc1234".into());
        assert_eq!(
            t.render(|p| Some(format!("<{}>", p.name()))).unwrap(),
            "main-<short_sha>-<branch_name>"
        );
        let missing = t.render(only_sha).unwrap_err();
        assert_eq!(missing, MissingValue(Placeholder::BranchName));
        assert_eq!(
            missing.to_string(),
            "`{branch_name}` has no value in this build"
        );
        assert_eq!(
            Template::parse("{}x{", 1).unwrap_err(),
            TemplateError::Unknown {
                name: String::new()
            }
        );
        assert_eq!(
            Template::parse("v{tag_name", 1).unwrap_err(),
            TemplateError::Unclosed {
                text: "v{tag_name".into()
            }
        );
        assert_eq!(
            Template::parse("plain", 1)
                .unwrap()
                .render(|_| None)
                .unwrap(),
            "plain"
        );
    }

    #[test]
    fn only_a_whole_star_keeps_a_value() {
        let keeps = |text: &str| Template::parse(text, 1).unwrap().keeps();
        assert!(keeps("*"));
        for other in ["v*", "**", " *", "{tag_name}", ""] {
            assert!(!keeps(other), "{other:?}");
        }
        let c = Config::parse(
            "promote.yaml",
            &EXAMPLE.replace("        tag: \"{tag_name}\"", "        digest: \"*\""),
        )
        .unwrap();
        let rule = &c.environments[1].images[0];
        assert!(rule.digest.as_ref().is_some_and(Template::keeps) && rule.tag.is_none());
    }

    #[test]
    fn an_image_name_may_carry_a_tag_as_kustomize_matches_it() {
        let tagged = EXAMPLE.replacen("tomoda-backend\n", "tomoda-backend:latest\n", 1);
        let c = Config::parse("promote.yaml", &tagged).unwrap();
        assert!(
            c.environments[0].images[0]
                .name
                .ends_with("/tomoda-backend:latest")
        );
        let e = error(&EXAMPLE.replacen("tomoda-backend\n", "tomoda-backend:v1:2\n", 1));
        assert!(
            e.starts_with("promote.yaml:8: `asia-east1-docker.pkg.dev/development-485000/tomoda-dev-repo/tomoda-backend:v1:2` is not an image name"),
            "{e}"
        );
    }

    #[test]
    fn a_key_within_a_typo_or_two_is_suggested() {
        assert_eq!(closest("overlays", &ENV_KEYS), Some("overlay"));
        assert_eq!(closest("imgaes", &ENV_KEYS), Some("images"));
        assert_eq!(closest("environment", &TOP_KEYS), Some("environments"));
        assert_eq!(closest("tags", &IMAGE_KEYS), Some("tag"));
        assert_eq!(closest("registry", &TOP_KEYS), None);
    }
}
