//! From flags, promote.yaml and the build's context to one checked plan: which
//! environment, which repository and branch, which overlay, which image values.
//! Pure: nothing here touches the network or the disk.

use std::path::Path;
use std::time::Duration;

use crate::config::{
    CommitVia, Config, Environment, FileRule, FileRuleEdit, ImageRule, Pin, Placeholder, Review,
    Template, When,
};
use crate::context::BuildContext;
use crate::error::{Error, Result};
use crate::image;
use crate::kustomize::ImageSpec;
use crate::repo::{Forge, ForgeRepo, RepoLocation, forge_repo, parse_repo};
use crate::values::KeyPath;

pub const DEFAULT_BRANCH: &str = "main";
pub const DEFAULT_AUTHOR: &str = "tomoda-promote <tomoda-promote@users.noreply.github.com>";
/// The environment name used when flags alone describe the promotion.
pub const FLAGS_ENVIRONMENT: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub environment: String,
    pub repo: RepoLocation,
    pub branch: String,
    /// What to change, in order; every one lands in the same commit or none does.
    pub targets: Vec<Target>,
    pub context: BuildContext,
    pub author: Identity,
    /// A git push, or the forge's API.
    pub commit_via: CommitVia,
    /// The repository's forge, when `forge:` or its host tells (always with `api`).
    pub forge: Option<ForgeRepo>,
    /// `set:` values that wait for a registry digest (`{digest}`).
    pub digests: Vec<DigestFill>,
    /// The Argo CD application to refresh after the push, if any.
    pub argocd: Option<ArgoApp>,
    /// The devops repo's file of held environments.
    pub holds_file: String,
    /// The app's repository on its forge, asked for the order of two commits when no
    /// checkout here holds them.
    pub app_repo: AppRepo,
    /// `pull_request: true`: the change goes through a request, not straight to `branch`.
    pub pull_request: Option<PullRequest>,
}

/// The request a promotion opens to the target branch, from its own branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// `promote/<environment>/<image>`: the tool's own branch, the only one it rewrites.
    pub branch: String,
    pub labels: Vec<String>,
    pub auto_merge: bool,
}

/// Where the app's history is, besides a checkout here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppRepo {
    /// On this forge, as `named_by` said (`source_repo:`, GITHUB_REPOSITORY, ...).
    Forge {
        repo: ForgeRepo,
        named_by: &'static str,
        /// Its API is the devops repository's: the devops token may be tried there. It
        /// never goes to another host.
        same_api: bool,
    },
    /// None is known: why, for the ordering guard's warning.
    Unknown(String),
}

/// A `files:` entry with `set:` and `image:`: the image the registry checks, and the
/// values its digest fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestFill {
    /// The index of the target in `Plan::targets`.
    pub target: usize,
    pub image: ImageSpec,
    /// The set values (by index in the target's list) whose templates name `{digest}`.
    pub values: Vec<(usize, Template)>,
    pub file: String,
}

/// Where the devops commit is deployed from, and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgoApp {
    /// The Argo CD API's base URL (`https://argocd.example.com`).
    pub server: String,
    pub app: String,
    /// Wait for Synced and Healthy up to this long; `None`: refresh only.
    pub wait: Option<Duration>,
}

/// Where holds are kept unless promote.yaml says `holds_file:`.
pub const DEFAULT_HOLDS_FILE: &str = ".promote/holds.yaml";

/// One place of the repository to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A clean relative path inside the repository, without `./` or a trailing `/`.
    pub path: String,
    pub edit: TargetEdit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetEdit {
    /// An overlay directory: its kustomization's `images:` entries.
    Overlay(Vec<ImageSpec>),
    /// A file: a kustomization's `images:` entries, or a manifest's container images.
    Images(Vec<ImageSpec>),
    /// A YAML file's values at key paths (Helm values).
    Set(Vec<(KeyPath, String)>),
}

impl Plan {
    /// The image lists of every target, to verify them and pin their digests.
    pub fn images_mut(&mut self) -> impl Iterator<Item = &mut Vec<ImageSpec>> {
        self.targets.iter_mut().filter_map(|t| match &mut t.edit {
            TargetEdit::Overlay(images) | TargetEdit::Images(images) => Some(images),
            TargetEdit::Set(_) => None,
        })
    }

    /// Puts each image's digest (`digest_of`, `None` when the registry was not asked) into
    /// the values that name `{digest}`. An unknown digest stays `{digest}` only when
    /// `unknown_ok` (a plan against an unreachable registry); otherwise it is an error.
    pub fn fill_digests(
        &mut self,
        digest_of: impl Fn(&ImageSpec) -> Option<String>,
        unknown_ok: bool,
    ) -> Result<()> {
        // An `image:` without `{digest}` in its values is only there to be verified.
        for fill in self.digests.iter().filter(|f| !f.values.is_empty()) {
            let digest = match digest_of(&fill.image) {
                Some(digest) => digest,
                None if unknown_ok => continue,
                None => {
                    return Err(Error::input(
                        &fill.file,
                        fill.values.first().map(|(_, t)| t.line),
                        format!(
                            "`{{digest}}` has no value: the registry was not asked for {}",
                            fill.image.name
                        ),
                        "the digest comes from the registry check: drop --no-verify (PROMOTE_NO_VERIFY)",
                    ));
                }
            };
            let TargetEdit::Set(sets) = &mut self.targets[fill.target].edit else {
                continue;
            };
            for (index, template) in &fill.values {
                sets[*index].1 = render_with(template, &self.context, Some(&digest), &fill.file)?;
            }
        }
        Ok(())
    }

    /// With the registry check off (`--no-verify`), nothing can be pinned: refuses a plan
    /// that asks for a digest (`pin: digest`, `{digest}`).
    pub fn without_registry(&mut self) -> Result<()> {
        if let Some(image) = self.images().find(|i| i.pin) {
            return Err(Error::usage(
                format!(
                    "`pin: digest` of {} needs the registry check, which --no-verify (PROMOTE_NO_VERIFY) turns off",
                    image.name
                ),
                "drop --no-verify, or the `pin:`",
            ));
        }
        self.fill_digests(|_| None, false)
    }

    /// `--pin-digest`: every image is pinned, whatever its `pin:` says.
    pub fn pin_every_image(&mut self) {
        for images in self.images_mut() {
            for image in images {
                image.pin = true;
            }
        }
    }

    /// Every image the plan sets, in order, for the commit message.
    pub fn images(&self) -> impl Iterator<Item = &ImageSpec> {
        self.targets.iter().flat_map(|t| match &t.edit {
            TargetEdit::Overlay(images) | TargetEdit::Images(images) => images.as_slice(),
            TargetEdit::Set(_) => &[],
        })
    }
}

/// What the command line says about the promotion; each overrides promote.yaml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// Promote to this environment, whatever the build's tag says.
    pub environment: Option<String>,
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub overlay: Option<String>,
    /// Image specs as `kustomize edit set image` takes them; replaces the environment's.
    pub images: Vec<String>,
    /// `FILE:PATH=VALUE`: values set at key paths; replaces the environment's `files:`.
    pub sets: Vec<String>,
    pub author: Option<String>,
    /// `--commit-via`: overrides promote.yaml's `commit_via:`.
    pub commit_via: Option<CommitVia>,
    pub argocd_server: Option<String>,
    pub argocd_app: Option<String>,
    /// `--wait[=DURATION]`: wait for Argo CD this long.
    pub wait: Option<Duration>,
    /// `--pull-request`: open a request whatever promote.yaml says.
    pub pull_request: bool,
}

/// Where relative paths are resolved: the config's directory for what the config says,
/// the working directory for flags.
pub struct Bases<'a> {
    pub config_dir: &'a Path,
    pub cwd: &'a Path,
}

pub fn resolve(
    flags: &Flags,
    config: Option<&Config>,
    context: BuildContext,
    bases: &Bases,
) -> Result<Plan> {
    if let Some(sha) = &context.commit_sha {
        image::check_commit_sha(sha).map_err(|e| {
            Error::usage(
                e,
                "pass the full commit SHA with --commit-sha or COMMIT_SHA",
            )
        })?;
    }
    let environment = match config {
        Some(config) => Some(select_environment(
            config,
            flags.environment.as_deref(),
            &context,
        )?),
        None => None,
    };
    let file = config.map_or("promote.yaml", |c| c.file.as_str());
    let mut targets = Vec::new();
    let overlay = flags
        .overlay
        .as_deref()
        .or(environment.and_then(|e| e.overlay.as_deref()));
    let images = if flags.images.is_empty() {
        environment.map_or(Ok(Vec::new()), |env| {
            env.images
                .iter()
                .map(|rule| render_rule(rule, env.pin, &context, file))
                .collect::<Result<Vec<_>>>()
        })?
    } else {
        flag_images(&flags.images)?
    };
    match (overlay, images.is_empty()) {
        (Some(overlay), false) => targets.push(Target {
            path: clean_path(overlay, "overlay")?,
            edit: TargetEdit::Overlay(images),
        }),
        (Some(_), true) => return Err(flags_needed("--image")),
        (None, false) => return Err(flags_needed("--overlay")),
        (None, true) => {}
    }
    let mut digests = Vec::new();
    if flags.sets.is_empty() {
        for rule in environment.map_or(&[][..], |e| e.files.as_slice()) {
            let pin = environment.and_then(|e| e.pin);
            let (target, fill) = render_file(rule, pin, &context, file)?;
            if let Some(mut fill) = fill {
                fill.target = targets.len();
                digests.push(fill);
            }
            targets.push(target);
        }
    } else {
        for target in flag_sets(&flags.sets)? {
            match targets.iter_mut().find(|t| t.path == target.path) {
                Some(Target {
                    edit: TargetEdit::Set(sets),
                    ..
                }) => {
                    if let TargetEdit::Set(more) = target.edit {
                        sets.extend(more);
                    }
                }
                _ => targets.push(target),
            }
        }
    }
    if targets.is_empty() {
        return Err(flags_needed("--image"));
    }
    if let Some(path) = first_repeated(&targets) {
        return Err(Error::usage(
            format!("`{path}` is the target of two entries"),
            "list each file once: put all its images (or key paths) under one entry",
        ));
    }

    let place = place_of(flags, config, environment, bases)?;
    let app_repo = app_repo(config, &context, place.forge.as_ref(), &place.repo)?;
    let pull_request = pull_request(&place, &targets, &digests)?;
    Ok(Plan {
        environment: place.environment,
        repo: place.repo,
        branch: place.branch,
        targets,
        context,
        author: place.author,
        commit_via: place.commit_via,
        forge: place.forge,
        digests,
        argocd: place.argocd,
        holds_file: place.holds_file,
        app_repo,
        pull_request,
    })
}

/// The request of `pull_request: true` (or `--pull-request`): its branch is named for the
/// environment and the first image, so that the next promotion of the same image finds
/// and rewrites it.
fn pull_request(
    place: &Place,
    targets: &[Target],
    digests: &[DigestFill],
) -> Result<Option<PullRequest>> {
    let image = targets
        .iter()
        .find_map(|t| match &t.edit {
            TargetEdit::Overlay(images) | TargetEdit::Images(images) => images.first(),
            TargetEdit::Set(_) => None,
        })
        .or_else(|| digests.first().map(|d| &d.image))
        .map(|i| crate::image::short_name(&i.name).to_string());
    // Without an image, the first file's name stands for what is promoted.
    let subject = image.unwrap_or_else(|| {
        let path = targets.first().map_or("values", |t| t.path.as_str());
        let name = path.rsplit('/').next().unwrap_or(path);
        name.split('.').next().unwrap_or(name).to_string()
    });
    place.request(&subject)
}

impl Place {
    /// The request from the tool's branch `promote/<environment>/<subject>` to the target
    /// branch, when the environment wants one (`None` else). A request needs the forge's
    /// API, whichever way the commit goes.
    pub fn request(&self, subject: &str) -> Result<Option<PullRequest>> {
        let Some(review) = &self.review else {
            return Ok(None);
        };
        let Some(forge) = &self.forge else {
            return Err(Error::usage(
                format!(
                    "a pull request needs the forge's API, and {} is on no forge tomoda-promote can tell",
                    self.repo.display()
                ),
                "set `repo:` to the repository's https URL and add `forge: github`, `gitlab` or `bitbucket` (with `api_url:` when self-hosted)",
            ));
        };
        if review.auto_merge && forge.forge == crate::repo::Forge::Bitbucket {
            return Err(Error::input(
                &self.file,
                review.line,
                "`auto_merge: true`: Bitbucket Cloud's API offers no auto-merge of a pull request",
                "remove `auto_merge:`; merge the request in Bitbucket once its checks pass",
            ));
        }
        let branch = format!("promote/{}/{subject}", self.environment);
        if !git2::Branch::name_is_valid(&branch).unwrap_or(false) || branch == self.branch {
            return Err(Error::usage(
                format!(
                    "`{}` cannot be the pull request's branch",
                    branch.escape_debug()
                ),
                "name the environment and image with letters, digits, `-`, `_` and `.`",
            ));
        }
        Ok(Some(PullRequest {
            branch,
            labels: review.labels.clone(),
            auto_merge: review.auto_merge,
        }))
    }
}

/// The app's repository: `source_repo:` (an https URL, or `owner/repo` on the devops
/// repository's forge or the GitHub of the run), else GitHub Actions' GITHUB_REPOSITORY,
/// else Cloud Build's REPO_FULL_NAME (on the devops repository's forge).
pub fn app_repo(
    config: Option<&Config>,
    context: &BuildContext,
    devops: Option<&ForgeRepo>,
    devops_location: &RepoLocation,
) -> Result<AppRepo> {
    let github = github_of_run(context);
    if let Some((config, (text, line))) = config.and_then(|c| Some((c, c.source_repo.as_ref()?))) {
        let bad =
            |message: String, hint: &str| Error::input(&config.file, Some(*line), message, hint);
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        let repo = if lower.starts_with("https://") || lower.starts_with("http://") {
            let location = parse_repo(text, Path::new("."))?;
            let mut found = None;
            let same_host =
                origin(&location).is_some() && origin(&location) == origin(devops_location);
            if let Some(d) = devops.filter(|_| same_host) {
                found = forge_repo(&location, Some(d.forge), Some(&d.api_url))?;
            }
            if found.is_none() {
                found = forge_repo(&location, None, None)?;
            }
            if found.is_none()
                && let Some((server, api)) = &github
                && origin(&location) == origin(&parse_repo(server, Path::new("."))?)
            {
                found = forge_repo(&location, Some(Forge::GitHub), Some(api))?;
            }
            found.ok_or_else(|| {
                bad(
                    format!("cannot tell which forge hosts source_repo: {}", location.display()),
                    "write source_repo: as owner/repo on the devops repository's forge (with `forge:` and `api_url:` for a self-hosted one), or as the app's URL on github.com, gitlab.com or bitbucket.org",
                )
            })?
        } else {
            let forge = devops
                .map(|d| (d.forge, d.api_url.clone()))
                .or_else(|| github.as_ref().map(|(_, api)| (Forge::GitHub, api.clone())))
                .ok_or_else(|| {
                    bad(
                        format!("source_repo: {text} names no forge: the devops repository's forge is unknown"),
                        "add `forge:` (and `api_url:`) for the devops repository, or write source_repo: as the app's https URL on github.com, gitlab.com or bitbucket.org",
                    )
                })?;
            owner_repo(forge, text).ok_or_else(|| {
                bad(
                    format!("source_repo: {text} is not owner/repo"),
                    "write the app's repository as owner/repo (GitLab: group/project), or as its https URL",
                )
            })?
        };
        return Ok(AppRepo::Forge {
            same_api: same_api(&repo, devops),
            repo,
            named_by: "source_repo: in promote.yaml",
        });
    }
    if let Some(name) = &context.github_repository {
        let api = github.map_or_else(
            || match devops {
                Some(d) if d.forge == Forge::GitHub => d.api_url.clone(),
                _ => "https://api.github.com".to_string(),
            },
            |(_, api)| api,
        );
        if let Some(repo) = owner_repo((Forge::GitHub, api), name) {
            return Ok(AppRepo::Forge {
                same_api: same_api(&repo, devops),
                repo,
                named_by: "GITHUB_REPOSITORY",
            });
        }
    }
    if let Some(name) = &context.repo_full_name {
        return Ok(
            match devops.and_then(|d| owner_repo((d.forge, d.api_url.clone()), name)) {
                Some(repo) => AppRepo::Forge {
                    repo,
                    named_by: "REPO_FULL_NAME",
                    same_api: true,
                },
                None => AppRepo::Unknown(format!(
                    "REPO_FULL_NAME names {name}, but the devops repository's forge is unknown (set source_repo: to the app's https URL)"
                )),
            },
        );
    }
    Ok(AppRepo::Unknown(
        "no app repository on a forge is named (set source_repo: in promote.yaml, or map REPO_FULL_NAME in Cloud Build)".into(),
    ))
}

fn same_api(repo: &ForgeRepo, devops: Option<&ForgeRepo>) -> bool {
    devops.is_some_and(|d| d.forge == repo.forge && d.api_url == repo.api_url)
}

/// The GitHub an Actions run belongs to: its web URL and REST API URL.
fn github_of_run(context: &BuildContext) -> Option<(String, String)> {
    let server = context.github_server_url.clone()?;
    let server = server.trim_end_matches('/').to_string();
    let api = context.github_api_url.clone().map_or_else(
        || {
            if server == "https://github.com" {
                "https://api.github.com".to_string()
            } else {
                format!("{server}/api/v3")
            }
        },
        |a| a.trim_end_matches('/').to_string(),
    );
    Some((server, api))
}

/// `owner/repo` (GitLab: `group/…/project`) on a forge.
fn owner_repo((forge, api_url): (Forge, String), text: &str) -> Option<ForgeRepo> {
    let path = text.trim().trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let parts: Vec<&str> = path.split('/').collect();
    let fits = match forge {
        Forge::GitHub | Forge::Bitbucket => parts.len() == 2,
        Forge::GitLab => parts.len() >= 2,
    };
    (fits
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.contains(char::is_whitespace)))
    .then(|| ForgeRepo {
        forge,
        api_url,
        path: path.to_string(),
    })
}

/// `scheme://host[:port]` of a remote repository.
fn origin(location: &RepoLocation) -> Option<String> {
    let RepoLocation::Remote { url, .. } = location else {
        return None;
    };
    let parsed = reqwest::Url::parse(url).ok()?;
    Some(parsed.origin().ascii_serialization())
}

/// Where an environment lives, without what a build would set there: what `history`,
/// `hold` and `rollback` need.
#[derive(Debug, Clone)]
pub struct Place {
    pub environment: String,
    pub repo: RepoLocation,
    pub branch: String,
    pub author: Identity,
    pub commit_via: CommitVia,
    pub forge: Option<ForgeRepo>,
    pub argocd: Option<ArgoApp>,
    pub holds_file: String,
    /// `pull_request: true` (or `--pull-request`): labels and auto-merge of the requests
    /// made to the environment's branch; checked when one is made ([`Place::request`]).
    pub review: Option<Review>,
    /// promote.yaml's name, for an error about `review`.
    pub file: String,
}

/// The place of `--env` (or, without it, of the top level of promote.yaml and the flags).
pub fn place(flags: &Flags, config: Option<&Config>, bases: &Bases) -> Result<Place> {
    let environment = match (config, &flags.environment) {
        (Some(c), Some(name)) => Some(select_environment(c, Some(name), &BuildContext::default())?),
        _ => None,
    };
    place_of(flags, config, environment, bases)
}

fn place_of(
    flags: &Flags,
    config: Option<&Config>,
    environment: Option<&Environment>,
    bases: &Bases,
) -> Result<Place> {
    let file = config.map_or("promote.yaml", |c| c.file.as_str());
    let env_repo = environment.and_then(|e| e.repo.as_ref());
    let repo = match (&flags.repo, env_repo, config.and_then(|c| c.repo.as_ref())) {
        (Some(flag), _, _) => parse_repo(flag, bases.cwd)?,
        (None, Some(from_config), _) | (None, None, Some(from_config)) => {
            parse_repo(from_config, bases.config_dir)?
        }
        (None, None, None) => return Err(flags_needed("--repo")),
    };
    let branch = flags
        .branch
        .clone()
        .or_else(|| environment.and_then(|e| e.branch.clone()))
        .or_else(|| config.and_then(|c| c.branch.clone()))
        .unwrap_or_else(|| DEFAULT_BRANCH.to_string());
    check_branch(&branch)?;
    let author_text = flags
        .author
        .as_deref()
        .or(config.and_then(|c| c.author.as_deref()))
        .unwrap_or(DEFAULT_AUTHOR);
    let (commit_via, forge) = delivery(flags, config, environment, &repo)?;
    Ok(Place {
        environment: environment.map_or_else(
            || {
                flags
                    .environment
                    .clone()
                    .unwrap_or_else(|| FLAGS_ENVIRONMENT.to_string())
            },
            |e| e.name.clone(),
        ),
        repo,
        branch,
        author: parse_identity(author_text)?,
        commit_via,
        forge,
        argocd: argo_app(flags, environment.and_then(|e| e.argocd.as_ref()), file)?,
        holds_file: clean_path(
            config
                .and_then(|c| c.holds_file.as_deref())
                .unwrap_or(DEFAULT_HOLDS_FILE),
            "holds_file",
        )?,
        review: {
            let review = environment.map(|e| e.review.clone()).unwrap_or_default();
            (flags.pull_request || review.pull_request).then_some(review)
        },
        file: file.to_string(),
    })
}

/// How the commit reaches `repo` (the flag, the environment's `commit_via:`, the top
/// level's, else git), and the forge that hosts it.
fn delivery(
    flags: &Flags,
    config: Option<&Config>,
    environment: Option<&Environment>,
    repo: &RepoLocation,
) -> Result<(CommitVia, Option<ForgeRepo>)> {
    let env_delivery = environment.map(|e| &e.delivery);
    let top_delivery = config.map(|c| &c.delivery);
    let commit_via = flags
        .commit_via
        .or(env_delivery.and_then(|d| d.commit_via))
        .or(top_delivery.and_then(|d| d.commit_via))
        .unwrap_or_default();
    let forge_kind = env_delivery
        .and_then(|d| d.forge)
        .or(top_delivery.and_then(|d| d.forge));
    let api_url = env_delivery
        .and_then(|d| d.api_url.as_deref())
        .or(top_delivery.and_then(|d| d.api_url.as_deref()));
    // Only the API needs the forge to make sense of the URL; a git push does not.
    let forge = match forge_repo(repo, forge_kind, api_url) {
        Err(_) if commit_via == CommitVia::Git => None,
        other => other?,
    };
    if commit_via == CommitVia::Api && forge.is_none() {
        return Err(match repo {
            RepoLocation::Local(path) => Error::usage(
                format!(
                    "commit_via: api needs a repository on a forge; {} is a local path",
                    path.display()
                ),
                "use commit_via: git for a local repository, or set `repo:` to its https URL",
            ),
            RepoLocation::Remote { url, .. } => Error::usage(
                format!("cannot tell which forge hosts {url}, to commit through its API"),
                "add `forge: github`, `gitlab` or `bitbucket` (and `api_url:` for a self-hosted one) to promote.yaml, or use commit_via: git",
            ),
        });
    }
    Ok((commit_via, forge))
}

/// The flags' Argo CD application over the environment's `argocd:`; a server without an
/// app (or the reverse) is refused, as is `--wait` with neither.
fn argo_app(
    flags: &Flags,
    config: Option<&crate::config::ArgoCd>,
    file: &str,
) -> Result<Option<ArgoApp>> {
    let server = flags
        .argocd_server
        .clone()
        .or_else(|| config.and_then(|c| c.server.clone()));
    let app = flags
        .argocd_app
        .clone()
        .or_else(|| config.and_then(|c| c.app.clone()));
    let wait = flags.wait.or_else(|| config.and_then(|c| c.wait));
    let missing = |what: &str, flag: &str| {
        let message = format!("Argo CD needs {what}");
        match config {
            Some(c) => Error::input(
                file,
                Some(c.line),
                message,
                format!("add `{what}:` under `argocd:`, or pass {flag}"),
            ),
            None => Error::usage(
                message,
                format!("pass {flag} (or set it under `argocd:` in promote.yaml)"),
            ),
        }
    };
    match (server, app) {
        (Some(server), Some(app)) => {
            let server = server.trim_end_matches('/').to_string();
            if !(server.starts_with("https://") || server.starts_with("http://")) {
                return Err(Error::usage(
                    format!("the Argo CD server `{server}` is not an http(s) URL"),
                    "give the API's base URL, such as https://argocd.example.com",
                ));
            }
            Ok(Some(ArgoApp { server, app, wait }))
        }
        (Some(_), None) => Err(missing("app", "--argocd-app")),
        (None, Some(_)) => Err(missing("server", "--argocd-server")),
        (None, None) if wait.is_some() => Err(Error::usage(
            "--wait needs an Argo CD application to wait for",
            "pass --argocd-server and --argocd-app, or set `argocd:` for the environment in promote.yaml",
        )),
        (None, None) => Ok(None),
    }
}

fn flags_needed(flag: &str) -> Error {
    Error::usage(
        format!("{flag} is required when no promote.yaml is used"),
        "write a promote.yaml (see --help), or give --repo with --overlay and --image, or with --set",
    )
}

/// `--image` values: repeatable, and split on commas and newlines.
fn flag_images(values: &[String]) -> Result<Vec<ImageSpec>> {
    values
        .iter()
        .flat_map(|value| value.split([',', '\n']))
        .map(str::trim)
        .filter(|spec| !spec.is_empty())
        .map(|spec| {
            image::parse_spec(spec).map_err(|e| {
                Error::usage(
                    format!("--image {spec}: {e}"),
                    "see --help for the image forms",
                )
            })
        })
        .collect()
}

/// `--set FILE:PATH=VALUE`, one target per file in the order first named.
fn flag_sets(values: &[String]) -> Result<Vec<Target>> {
    let mut targets: Vec<Target> = Vec::new();
    for value in values.iter().filter(|v| !v.trim().is_empty()) {
        let bad = |why: String| {
            Error::usage(
                format!("--set {value}: {why}"),
                "write --set FILE:PATH=VALUE, such as --set charts/api/values-dev.yaml:image.tag=4d5e6f7",
            )
        };
        let (file, rest) = value
            .split_once(':')
            .ok_or_else(|| bad("has no `:` after the file".into()))?;
        let (key_path, new) =
            split_assignment(rest).ok_or_else(|| bad("has no `=` before the value".into()))?;
        let path = clean_path(file, "file")?;
        let key_path = KeyPath::parse(key_path).map_err(|e| bad(e.to_string()))?;
        match targets.iter_mut().find(|t| t.path == path) {
            Some(Target {
                edit: TargetEdit::Set(sets),
                ..
            }) => sets.push((key_path, new.to_string())),
            _ => targets.push(Target {
                path,
                edit: TargetEdit::Set(vec![(key_path, new.to_string())]),
            }),
        }
    }
    Ok(targets)
}

/// `PATH=VALUE` split at the first `=` outside `[…]` and quotes, so that a field match
/// such as `containers[name=api].image=v2` keeps its own `=`.
fn split_assignment(text: &str) -> Option<(&str, &str)> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => depth = depth.saturating_sub(1),
            (None, '=') if depth == 0 => return Some((&text[..i], &text[i + 1..])),
            _ => {}
        }
    }
    None
}

/// A `files:` entry with its templates filled in; `{digest}` values wait in the fill.
fn render_file(
    rule: &FileRule,
    pin: Option<Pin>,
    context: &BuildContext,
    file: &str,
) -> Result<(Target, Option<DigestFill>)> {
    let path = clean_path(&rule.path, "file").map_err(|e| match e {
        Error::Usage { message, hint } => Error::input(file, Some(rule.line), message, hint),
        other => other,
    })?;
    let mut fill = None;
    let edit = match &rule.edit {
        FileRuleEdit::Images(images) => TargetEdit::Images(
            images
                .iter()
                .map(|r| render_rule(r, pin, context, file))
                .collect::<Result<_>>()?,
        ),
        FileRuleEdit::Set(sets) => {
            let mut values = Vec::new();
            for (index, set) in sets.iter().enumerate() {
                if set.value.uses(Placeholder::Digest) {
                    values.push((index, set.value.clone()));
                }
            }
            if let Some(image) = &rule.image {
                fill = Some(DigestFill {
                    target: 0,
                    image: render_image(image, context, file)?,
                    values,
                    file: file.to_string(),
                });
            }
            TargetEdit::Set(
                sets.iter()
                    .map(|set| {
                        let digest = Placeholder::Digest.to_string();
                        Ok((
                            set.path.clone(),
                            render_with(&set.value, context, Some(&digest), file)?,
                        ))
                    })
                    .collect::<Result<_>>()?,
            )
        }
    };
    Ok((Target { path, edit }, fill))
}

/// A set entry's `image:` (`name:tag`), as the registry check takes images.
fn render_image(t: &Template, context: &BuildContext, file: &str) -> Result<ImageSpec> {
    let text = render(t, context, file)?;
    let bad = |e: String| {
        Error::input(
            file,
            Some(t.line),
            e,
            "write `image:` as the image and its tag, such as `image: reg.example/app:{tag_name}`",
        )
    };
    let (name, tag) = image::split_tag(&text);
    let tag = tag.ok_or_else(|| bad(format!("`image: {text}` has no tag")))?;
    image::check_new_name(name).map_err(|e| bad(e.to_string()))?;
    image::check_tag(tag).map_err(|e| bad(e.to_string()))?;
    Ok(ImageSpec {
        name: name.to_string(),
        new_tag: Some(tag.to_string()),
        ..ImageSpec::default()
    })
}

fn first_repeated(targets: &[Target]) -> Option<&str> {
    targets.iter().enumerate().find_map(|(i, t)| {
        targets[..i]
            .iter()
            .any(|u| u.path == t.path)
            .then_some(t.path.as_str())
    })
}

/// A tag picks the first environment whose regex matches it; no tag picks `when: commit`.
pub fn select_environment<'c>(
    config: &'c Config,
    forced: Option<&str>,
    context: &BuildContext,
) -> Result<&'c Environment> {
    let rules = || {
        config
            .environments
            .iter()
            .map(|e| format!("{} (when: {})", e.name, e.when.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = forced {
        return config
            .environments
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| {
                Error::usage(
                    format!("--env {name}: {} has no such environment", config.file),
                    format!("environments: {}", rules()),
                )
            });
    }
    let chosen = match &context.tag_name {
        Some(tag) => config
            .environments
            .iter()
            .find(|e| matches!(&e.when, When::Tag(re) if re.is_match(tag))),
        None => config
            .environments
            .iter()
            .find(|e| matches!(e.when, When::Commit)),
    };
    match (chosen, &context.tag_name, &context.commit_sha) {
        (Some(env), _, _) => Ok(env),
        (None, None, None) => Err(missing_sha()),
        (None, Some(tag), _) => Err(Error::usage(
            format!(
                "no environment in {} takes a build of tag {tag}",
                config.file
            ),
            format!(
                "environments: {}; change a `when:` regex, or pass --env NAME",
                rules()
            ),
        )),
        (None, None, Some(_)) => Err(Error::usage(
            format!(
                "no environment in {} takes a build of a commit without a tag",
                config.file
            ),
            format!(
                "environments: {}; add `when: commit` to one, or pass --env NAME",
                rules()
            ),
        )),
    }
}

pub fn missing_sha() -> Error {
    Error::usage(
        "no commit SHA: none of --commit-sha, COMMIT_SHA or GITHUB_SHA is set",
        "Cloud Build does not export substitutions as environment variables unless the step maps them: add `env: ['COMMIT_SHA=$COMMIT_SHA', 'TAG_NAME=$TAG_NAME']` to the step, or `options: {automapSubstitutions: true}` to the build",
    )
}

fn render_rule(
    rule: &ImageRule,
    pin: Option<Pin>,
    context: &BuildContext,
    file: &str,
) -> Result<ImageSpec> {
    let checked = |template: &Option<Template>,
                   check: fn(&str) -> std::result::Result<(), image::ImageError>|
     -> Result<Option<String>> {
        let Some(t) = template.as_ref().filter(|t| !t.keeps()) else {
            return Ok(None);
        };
        let value = render(t, context, file)?;
        check(&value).map_err(|e| {
            Error::input(
                file,
                Some(t.line),
                e.to_string(),
                "fix the value or the placeholder it comes from",
            )
        })?;
        Ok(Some(value))
    };
    Ok(ImageSpec {
        name: rule.name.clone(),
        new_name: checked(&rule.new_name, image::check_new_name)?,
        new_tag: checked(&rule.tag, image::check_tag)?,
        digest: checked(&rule.digest, image::check_digest)?,
        keep_digest: rule.digest.as_ref().is_some_and(Template::keeps),
        pin: rule.pin.or(pin) == Some(Pin::Digest),
    })
}

/// A template with this build's values; a missing one says how to provide it.
fn render(t: &Template, context: &BuildContext, file: &str) -> Result<String> {
    render_with(t, context, None, file)
}

fn render_with(
    t: &Template,
    context: &BuildContext,
    digest: Option<&str>,
    file: &str,
) -> Result<String> {
    t.render(|p| match p {
        Placeholder::Digest => digest.map(str::to_string),
        _ => context.placeholder(p.name()),
    })
    .map_err(|missing| match missing.0 {
            Placeholder::CommitSha | Placeholder::ShortSha => missing_sha(),
            Placeholder::TagName => Error::input(
                file,
                Some(t.line),
                missing.to_string(),
                "this build has no tag: set TAG_NAME (Cloud Build: map $TAG_NAME in the step's env), or use {commit_sha}",
            ),
            Placeholder::BranchName => Error::input(
                file,
                Some(t.line),
                missing.to_string(),
                "set BRANCH_NAME (Cloud Build: map $BRANCH_NAME in the step's env)",
            ),
            Placeholder::Digest => Error::input(
                file,
                Some(t.line),
                missing.to_string(),
                "`{digest}` is only for `set:` values of a file with `image:`",
            ),
        })
}

/// Paths stay inside the repository: relative, no `..`. `what` names the path in errors
/// (`overlay`, `file`).
pub fn clean_path(path: &str, what: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::usage(
            format!("{what} `{}` {why}", path.escape_debug()),
            format!(
                "give the {what} as a path inside the devops repository, such as {}",
                match what {
                    "overlay" => "k8s/apps/app/overlays/dev",
                    _ => "charts/app/values-dev.yaml",
                }
            ),
        )
    };
    if path.starts_with('/') || path.starts_with('\\') || path.contains(':') {
        return Err(bad("is absolute"));
    }
    if path.chars().any(char::is_control) {
        return Err(bad("holds control characters"));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(bad("climbs out with `..`"));
    }
    Ok(parts.join("/"))
}

/// Branch names as git allows them (`git check-ref-format --branch`), asked of libgit2.
fn check_branch(branch: &str) -> Result<()> {
    if git2::Branch::name_is_valid(branch).unwrap_or(false) {
        Ok(())
    } else {
        Err(Error::usage(
            format!("`{}` is not a valid branch name", branch.escape_debug()),
            "pass the devops branch, such as main, with --branch",
        ))
    }
}

/// `Name <email>`.
pub fn parse_identity(text: &str) -> Result<Identity> {
    let parsed = text
        .trim()
        .strip_suffix('>')
        .and_then(|t| t.split_once('<'))
        .map(|(name, email)| (name.trim(), email.trim()));
    match parsed {
        Some((name, email))
            if !name.is_empty() && email.contains('@') && !email.contains(['<', '>']) =>
        {
            Ok(Identity {
                name: name.to_string(),
                email: email.to_string(),
            })
        }
        _ => Err(Error::usage(
            format!(
                "author `{}` is not of the form `Name <email>`",
                text.escape_debug()
            ),
            "pass --author \"Deploy Bot <deploy@example.com>\"",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::cli::Args;

    const CONFIG: &str = r#"repo: ../devops
environments:
  dev:
    when: commit
    overlay: ./k8s/overlays/dev/
    images:
      - name: reg/app
        tag: "{commit_sha}"
  prod:
    when: '^v\d+\.\d+\.\d+$'
    overlay: k8s/overlays/prod
    images:
      - name: reg/app
        new_name: reg/prod/app
        tag: "{tag_name}"
"#;

    fn plan(args: &[&str], sha: Option<&str>, tag: Option<&str>) -> Result<Plan> {
        let args =
            Args::try_parse_from(std::iter::once("tomoda-promote").chain(args.iter().copied()))
                .unwrap();
        let config = Config::parse("promote.yaml", CONFIG).unwrap();
        let context = BuildContext {
            commit_sha: sha.map(Into::into),
            tag_name: tag.map(Into::into),
            ..Default::default()
        };
        let bases = Bases {
            config_dir: Path::new("/cfg"),
            cwd: Path::new("/cwd"),
        };
        resolve(&args.flags, Some(&config), context, &bases)
    }

    fn images(p: &Plan) -> Vec<ImageSpec> {
        p.images().cloned().collect()
    }

    #[test]
    fn a_rollback_or_a_hold_asks_for_its_own_request_where_the_environment_wants_requests() {
        let config = Config::parse(
            "promote.yaml",
            &CONFIG
                .replace("repo: ../devops", "repo: https://github.com/o/devops.git")
                .replace(
                    "  prod:\n",
                    "  prod:\n    pull_request: true\n    labels: [prod]\n",
                ),
        )
        .unwrap();
        let bases = Bases {
            config_dir: Path::new("/cfg"),
            cwd: Path::new("/cwd"),
        };
        let place_of = |env: &str, flag: bool| {
            let flags = Flags {
                environment: Some(env.into()),
                pull_request: flag,
                ..Flags::default()
            };
            place(&flags, Some(&config), &bases).unwrap()
        };
        let request = place_of("prod", false)
            .request("rollback")
            .unwrap()
            .unwrap();
        assert_eq!(request.branch, "promote/prod/rollback");
        assert_eq!(request.labels, ["prod"]);
        assert_eq!(place_of("dev", false).request("hold").unwrap(), None);
        let flagged = place_of("dev", true).request("hold").unwrap().unwrap();
        assert_eq!(flagged.branch, "promote/dev/hold");
    }

    #[test]
    fn a_commit_build_goes_to_the_commit_environment() {
        let p = plan(&[], Some("4d5e6f7a"), None).unwrap();
        assert_eq!(p.environment, "dev");
        assert_eq!(p.targets[0].path, "k8s/overlays/dev");
        assert_eq!(p.repo, RepoLocation::Local(PathBuf::from("/cfg/../devops")));
        assert_eq!(images(&p)[0].new_tag.as_deref(), Some("4d5e6f7a"));
        assert_eq!(p.branch, "main");
    }

    const FILES: &str = r#"repo: ../devops
environments:
  dev:
    when: commit
    overlay: k8s/overlays/dev
    images:
      - name: reg/app
        tag: "{commit_sha}"
    files:
      - path: ./charts/api/values-dev.yaml
        set:
          image.tag: "{short_sha}"
          "containers[name=api].image": "reg/api:{short_sha}"
      - path: manifests/web.yaml
        images:
          - name: reg/web
            tag: "{commit_sha}"
  prod:
    when: '^v'
    repo: https://git.example/o/prod.git
    branch: release
    files:
      - path: charts/api/values-prod.yaml
        set:
          image.tag: "{tag_name}"
"#;

    fn plan_files(args: &[&str], tag: Option<&str>) -> Result<Plan> {
        let args =
            Args::try_parse_from(std::iter::once("tomoda-promote").chain(args.iter().copied()))
                .unwrap();
        let config = Config::parse("promote.yaml", FILES).unwrap();
        let context = BuildContext {
            commit_sha: Some("4d5e6f7a8b".into()),
            short_sha: Some("4d5e6f7".into()),
            tag_name: tag.map(Into::into),
            ..Default::default()
        };
        let bases = Bases {
            config_dir: Path::new("/cfg"),
            cwd: Path::new("/cwd"),
        };
        resolve(&args.flags, Some(&config), context, &bases)
    }

    fn key(text: &str) -> KeyPath {
        KeyPath::parse(text).unwrap()
    }

    #[test]
    fn files_become_targets_after_the_overlay_in_order() {
        let p = plan_files(&[], None).unwrap();
        let paths: Vec<&str> = p.targets.iter().map(|t| t.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "k8s/overlays/dev",
                "charts/api/values-dev.yaml",
                "manifests/web.yaml"
            ]
        );
        assert_eq!(
            p.targets[1].edit,
            TargetEdit::Set(vec![
                (key("image.tag"), "4d5e6f7".into()),
                (key("containers[name=api].image"), "reg/api:4d5e6f7".into()),
            ])
        );
        let TargetEdit::Images(web) = &p.targets[2].edit else {
            panic!("{:?}", p.targets[2])
        };
        assert_eq!(web[0].new_tag.as_deref(), Some("4d5e6f7a8b"));
        assert_eq!(
            images(&p).len(),
            2,
            "the overlay's image and the manifest's"
        );
    }

    const PINNED: &str = r#"repo: ../devops
environments:
  prod:
    when: '^v'
    pin: digest
    overlay: k8s/overlays/prod
    images:
      - name: reg/app
        tag: "{tag_name}"
      - name: reg/sidecar
        tag: "1.2"
        pin: tag
    files:
      - path: charts/api/values-prod.yaml
        image: "reg/api:{tag_name}"
        set:
          image.tag: "{tag_name}"
          image.digest: "{digest}"
      - path: manifests/job.yaml
        images:
          - name: reg/job
            tag: "{tag_name}"
"#;

    fn plan_pinned() -> Plan {
        let config = Config::parse("promote.yaml", PINNED).unwrap();
        let context = BuildContext {
            tag_name: Some("v1.5.0".into()),
            ..Default::default()
        };
        let bases = Bases {
            config_dir: Path::new("/cfg"),
            cwd: Path::new("/cwd"),
        };
        resolve(&Flags::default(), Some(&config), context, &bases).unwrap()
    }

    #[test]
    fn pin_digest_of_an_environment_reaches_every_image_but_one_that_says_tag() {
        let p = plan_pinned();
        let pins: Vec<(&str, bool)> = p.images().map(|i| (i.name.as_str(), i.pin)).collect();
        assert_eq!(
            pins,
            [("reg/app", true), ("reg/sidecar", false), ("reg/job", true)]
        );
    }

    #[test]
    fn a_digest_placeholder_waits_for_the_registry_then_fills_its_values() {
        let mut p = plan_pinned();
        assert_eq!(p.digests.len(), 1);
        assert_eq!(p.digests[0].target, 1);
        assert_eq!(p.digests[0].image.name, "reg/api");
        assert_eq!(p.digests[0].image.new_tag.as_deref(), Some("v1.5.0"));
        let digest = format!("sha256:{}", "e".repeat(64));
        p.fill_digests(
            |image| (image.name == "reg/api").then(|| digest.clone()),
            false,
        )
        .unwrap();
        assert_eq!(
            p.targets[1].edit,
            TargetEdit::Set(vec![
                (key("image.tag"), "v1.5.0".into()),
                (key("image.digest"), digest.clone()),
            ])
        );
        // Without the registry a digest cannot be had: refused, naming the file.
        let mut off = plan_pinned();
        let error = off.fill_digests(|_| None, false).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(
            error
                .to_string()
                .contains("promote.yaml:18: `{digest}` has no value"),
            "{error}"
        );
        assert!(
            off.without_registry()
                .unwrap_err()
                .to_string()
                .contains("`pin: digest` of reg/app needs the registry check")
        );
        // An `image:` whose values do not use `{digest}` needs no registry.
        let mut verified_only = plan_pinned();
        verified_only.digests[0].values.clear();
        verified_only.fill_digests(|_| None, false).unwrap();
        // A plan against an unreachable registry shows the placeholder.
        let mut lenient = plan_pinned();
        lenient.fill_digests(|_| None, true).unwrap();
        assert_eq!(
            lenient.targets[1].edit,
            TargetEdit::Set(vec![
                (key("image.tag"), "v1.5.0".into()),
                (key("image.digest"), "{digest}".into()),
            ])
        );
    }

    #[test]
    fn the_digest_placeholder_and_pin_are_refused_where_they_mean_nothing() {
        let refused = |text: &str| Config::parse("promote.yaml", text).unwrap_err().to_string();
        let env = "repo: r\nenvironments:\n  dev:\n    when: commit\n";
        assert_eq!(
            refused(&format!(
                "{env}    files:\n      - path: v.yaml\n        set:\n          image.digest: \"{{digest}}\"\n"
            )),
            "promote.yaml:8: file `v.yaml` uses `{digest}` but names no `image:`\n  hint: add `image:` with the image and tag the digest is of, such as `image: reg.example/app:{tag_name}`"
        );
        assert!(
            refused(&format!(
                "{env}    overlay: o\n    images:\n      - name: a\n        tag: \"{{digest}}\"\n"
            ))
            .starts_with("promote.yaml:8: `tag:` cannot use `{digest}`"),
        );
        assert!(
            refused(&format!(
                "{env}    pin: sha\n    overlay: o\n    images:\n      - name: a\n        tag: v1\n"
            ))
            .starts_with("promote.yaml:5: `pin: sha` is neither `digest` nor `tag`"),
        );
    }

    #[test]
    fn an_environment_may_have_its_own_repo_and_branch() {
        let p = plan_files(&[], Some("v1.0.0")).unwrap();
        assert_eq!(p.environment, "prod");
        assert_eq!(p.branch, "release");
        assert_eq!(
            p.repo,
            RepoLocation::Remote {
                url: "https://git.example/o/prod.git".into(),
                credentials: None
            }
        );
        let dev = plan_files(&[], None).unwrap();
        assert_eq!(
            dev.repo,
            RepoLocation::Local(PathBuf::from("/cfg/../devops"))
        );
        assert_eq!(dev.branch, "main");
        let forced = plan_files(&["--branch", "hotfix"], Some("v1.0.0")).unwrap();
        assert_eq!(forced.branch, "hotfix", "the flag wins");
    }

    #[test]
    fn set_flags_replace_the_files_and_group_by_file() {
        let p = plan_files(
            &[
                "--set",
                "a/values.yaml:image.tag=v2",
                "--set",
                "b.yaml:spec.containers[name=api].image=reg/api:v2=x",
                "--set",
                "a/values.yaml:'x.y'.z=",
            ],
            None,
        )
        .unwrap();
        let targets: Vec<(&str, &TargetEdit)> = p
            .targets
            .iter()
            .map(|t| (t.path.as_str(), &t.edit))
            .collect();
        assert_eq!(
            targets,
            [
                ("k8s/overlays/dev", &p.targets[0].edit),
                (
                    "a/values.yaml",
                    &TargetEdit::Set(vec![
                        (key("image.tag"), "v2".into()),
                        (key("'x.y'.z"), String::new())
                    ])
                ),
                (
                    "b.yaml",
                    &TargetEdit::Set(vec![(
                        key("spec.containers[name=api].image"),
                        "reg/api:v2=x".into()
                    )])
                ),
            ]
        );
        for (bad, words) in [
            ("values.yaml", "has no `:`"),
            ("values.yaml:image.tag", "has no `=`"),
            ("../values.yaml:a=1", "climbs out"),
            ("values.yaml:a..b=1", "empty key"),
        ] {
            let e = plan_files(&["--set", bad], None).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(words), "{bad}: {e}");
        }
    }

    #[test]
    fn set_flags_alone_need_no_config() {
        let args = Args::try_parse_from([
            "tomoda-promote",
            "--repo",
            "https://git.example/o/infra.git",
            "--set",
            "charts/api/values-dev.yaml:image.tag=4d5e6f7",
        ])
        .unwrap();
        let bases = Bases {
            config_dir: Path::new("/cwd"),
            cwd: Path::new("/cwd"),
        };
        let p = resolve(&args.flags, None, BuildContext::default(), &bases).unwrap();
        assert_eq!(p.environment, FLAGS_ENVIRONMENT);
        assert_eq!(p.targets.len(), 1);
        assert_eq!(p.targets[0].path, "charts/api/values-dev.yaml");
    }

    #[test]
    fn a_release_tag_goes_to_the_matching_environment() {
        let p = plan(&[], Some("4d5e6f7a"), Some("v1.2.3")).unwrap();
        assert_eq!(p.environment, "prod");
        assert_eq!(images(&p)[0].new_name.as_deref(), Some("reg/prod/app"));
        assert_eq!(images(&p)[0].new_tag.as_deref(), Some("v1.2.3"));
    }

    #[test]
    fn a_star_in_an_image_rule_keeps_the_field_as_image_does() {
        let spec_of = |fields: &str| {
            let text = format!(
                "environments:\n  dev:\n    when: commit\n    overlay: o\n    images:\n      - name: reg/app\n{fields}"
            );
            let config = Config::parse("promote.yaml", &text).unwrap();
            let context = BuildContext {
                commit_sha: Some("4d5e6f7a".into()),
                ..Default::default()
            };
            let bases = Bases {
                config_dir: Path::new("/cfg"),
                cwd: Path::new("/cwd"),
            };
            let flags = Flags {
                repo: Some("/r".into()),
                ..Flags::default()
            };
            resolve(&flags, Some(&config), context, &bases).map(|p| images(&p).remove(0))
        };
        for (fields, flag) in [
            ("        new_name: \"*\"\n        tag: v2\n", "reg/app=*:v2"),
            (
                "        new_name: reg/new\n        tag: \"*\"\n",
                "reg/app=reg/new:*",
            ),
            ("        tag: v2\n        digest: \"*\"\n", "reg/app:v2@*"),
            ("        tag: \"*\"\n", "reg/app:*"),
        ] {
            assert_eq!(
                spec_of(fields).unwrap(),
                image::parse_spec(flag).unwrap(),
                "{flag}"
            );
        }
        let kept = spec_of("        tag: \"{commit_sha}\"\n        digest: \"*\"\n").unwrap();
        assert!(kept.keep_digest && kept.digest.is_none());
        assert_eq!(kept.new_tag.as_deref(), Some("4d5e6f7a"));
        // Only a whole value is the placeholder.
        let e = spec_of("        tag: \"v*\"\n").unwrap_err().to_string();
        assert!(
            e.starts_with("promote.yaml:7: `v*` is not a valid image tag"),
            "{e}"
        );
    }

    #[test]
    fn no_match_lists_the_environments_and_exits_2() {
        let e = plan(&[], Some("4d5e6f7a"), Some("nightly")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(
            text.contains("no environment in promote.yaml takes a build of tag nightly"),
            "{text}"
        );
        assert!(text.contains("dev (when: commit"), "{text}");
        assert!(
            text.contains(r"prod (when: a tag matching '^v\d+\.\d+\.\d+$')"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_sha_explains_cloud_build_substitutions() {
        let e = plan(&[], None, None).unwrap_err().to_string();
        assert!(e.contains("no commit SHA"), "{e}");
        assert!(e.contains("automapSubstitutions"), "{e}");
        let forced = plan(&["--env", "dev"], None, None).unwrap_err().to_string();
        assert!(forced.contains("no commit SHA"), "{forced}");
    }

    #[test]
    fn flags_override_the_file() {
        let p = plan(
            &[
                "--env",
                "prod",
                "--repo",
                "https://u:s3cr%40t@git.example/o/devops.git",
                "--branch",
                "release",
                "--image",
                "reg/app:v9,\n reg/b:v1\n",
            ],
            Some("4d5e6f7a"),
            None,
        )
        .unwrap();
        assert_eq!(p.environment, "prod");
        assert_eq!(p.branch, "release");
        assert_eq!(images(&p)[0].new_tag.as_deref(), Some("v9"));
        assert_eq!(
            images(&p)[1].name,
            "reg/b",
            "commas and newlines separate images"
        );
        let RepoLocation::Remote { url, credentials } = &p.repo else {
            panic!()
        };
        assert_eq!(url, "https://git.example/o/devops.git");
        assert_eq!(credentials.as_ref().unwrap().password, "s3cr@t");
        assert!(!format!("{:?}", p.repo).contains("s3cr"));
    }

    #[test]
    fn repo_urls_lose_their_credentials_and_need_a_host() {
        let base = Path::new("/cwd");
        let RepoLocation::Remote { url, credentials } =
            parse_repo("https://ci:p%40ss@git.example/o/devops.git", base).unwrap()
        else {
            panic!("a remote")
        };
        assert_eq!(url, "https://git.example/o/devops.git");
        let credentials = credentials.unwrap();
        assert_eq!(
            (credentials.username.as_str(), credentials.password.as_str()),
            ("ci", "p@ss")
        );
        for no_host in ["https://u:p@/r.git", "https://"] {
            let error = parse_repo(no_host, base).unwrap_err().to_string();
            assert!(
                error.contains("the repo URL has no host"),
                "{no_host}: {error}"
            );
        }
    }

    #[test]
    fn bad_values_are_input_errors() {
        assert!(
            plan(&[], Some("not-hex!"), None)
                .unwrap_err()
                .to_string()
                .contains("not a commit SHA")
        );
        assert!(
            plan(&["--overlay", "../x"], Some("4d5e6f7a"), None)
                .unwrap_err()
                .to_string()
                .contains("climbs out")
        );
        assert!(
            plan(&["--overlay", "/etc"], Some("4d5e6f7a"), None)
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
        assert!(
            plan(
                &["--repo", "git@github.com:o/r.git"],
                Some("4d5e6f7a"),
                None
            )
            .is_err()
        );
        assert!(plan(&["--author", "nobody"], Some("4d5e6f7a"), None).is_err());
        let port = plan(&["--repo", "https://h:99999/r.git"], Some("4d5e6f7a"), None).unwrap_err();
        assert!(port.to_string().contains("is not valid"), "{port}");
        let typo = plan(&["--repo", " htps://u:p@h/r.git"], Some("4d5e6f7a"), None).unwrap_err();
        assert!(
            typo.to_string().contains("`htps://` is not a scheme"),
            "{typo}"
        );
    }

    /// `app_repo` for a promote.yaml with `top` above a devops repo on GitLab, in `env`.
    fn app(top: &str, env: &[(&str, &str)]) -> Result<AppRepo> {
        let text = format!(
            "{top}repo: https://gitlab.example/ops/devops.git\n{}",
            &CONFIG[CONFIG.find("environments").unwrap()..]
        );
        let config = Config::parse("promote.yaml", &text).unwrap();
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_string())
        };
        let context = BuildContext {
            github_repository: get("GITHUB_REPOSITORY"),
            repo_full_name: get("REPO_FULL_NAME"),
            github_server_url: get("GITHUB_SERVER_URL"),
            github_api_url: get("GITHUB_API_URL"),
            ..Default::default()
        };
        let location = parse_repo("https://gitlab.example/ops/devops.git", Path::new("/")).unwrap();
        let devops = forge_repo(&location, Some(Forge::GitLab), None).unwrap();
        app_repo(Some(&config), &context, devops.as_ref(), &location)
    }

    fn named(app: Result<AppRepo>) -> (Forge, String, String, &'static str) {
        match app.unwrap() {
            AppRepo::Forge { repo, named_by, .. } => {
                (repo.forge, repo.api_url, repo.path, named_by)
            }
            AppRepo::Unknown(why) => panic!("unknown: {why}"),
        }
    }

    #[test]
    fn the_app_repository_comes_from_source_repo_then_the_ci() {
        let gitlab = (Forge::GitLab, "https://gitlab.example/api/v4".to_string());
        assert_eq!(
            named(app(
                "source_repo: apps/api\n",
                &[("GITHUB_REPOSITORY", "x/y")]
            )),
            (
                gitlab.0,
                gitlab.1.clone(),
                "apps/api".into(),
                "source_repo: in promote.yaml"
            )
        );
        assert_eq!(
            named(app(
                "source_repo: https://gitlab.example/apps/api.git\n",
                &[]
            ))
            .2,
            "apps/api",
            "a URL on the devops repository's host is on its forge"
        );
        assert_eq!(
            named(app("source_repo: https://github.com/tomoda/api\n", &[])),
            (
                Forge::GitHub,
                "https://api.github.com".into(),
                "tomoda/api".into(),
                "source_repo: in promote.yaml"
            )
        );
        assert_eq!(
            named(app(
                "",
                &[
                    ("GITHUB_REPOSITORY", "tomoda/api"),
                    ("GITHUB_SERVER_URL", "https://ghe.corp")
                ]
            )),
            (
                Forge::GitHub,
                "https://ghe.corp/api/v3".into(),
                "tomoda/api".into(),
                "GITHUB_REPOSITORY"
            )
        );
        assert_eq!(
            named(app("", &[("REPO_FULL_NAME", "apps/api")])),
            (gitlab.0, gitlab.1, "apps/api".into(), "REPO_FULL_NAME")
        );
        let AppRepo::Unknown(why) = app("", &[]).unwrap() else {
            panic!("nothing named");
        };
        assert!(why.contains("set source_repo:"), "{why}");
        let error = app("source_repo: https://git.corp/apps/api.git\n", &[]).unwrap_err();
        assert!(
            error.to_string().starts_with("promote.yaml:1: cannot tell which forge hosts source_repo: https://git.corp/apps/api.git"),
            "{error}"
        );
        assert_eq!(error.exit_code(), 2);
        let AppRepo::Forge { same_api, .. } =
            app("source_repo: https://github.com/tomoda/api\n", &[]).unwrap()
        else {
            panic!("on github.com");
        };
        assert!(
            !same_api,
            "the GitLab token of the devops repo never goes to GitHub"
        );
        let error = app("source_repo: api\n", &[]).unwrap_err();
        assert!(error.to_string().contains("is not owner/repo"), "{error}");
    }
}
