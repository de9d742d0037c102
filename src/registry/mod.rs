//! The registry check before a promotion: every image the plan sets a tag for must be in
//! its registry (the image the cluster will pull: `newName` when set, else `name`), and
//! with `--pin-digest` its digest goes into the entry, so the deploy is immutable.
//!
//! Why: a devops commit naming a tag no registry holds makes every new pod fail with
//! ImagePullBackOff, far from the build that caused it; the commonest cause is Cloud
//! Build's `images:`, which pushes only after all steps, after this one.
//!
//! `reference` says which host and repository a name means and how to speak to it,
//! `auth` where credentials come from, `client` the HTTP exchange; this file the policy:
//! waiting for a lagging registry, what a missing tag means, pinning, and `--plan`'s
//! leniency (an unreachable registry is a warning there, not a failure).

pub mod auth;
pub mod client;
pub mod reference;

use std::collections::HashMap;
use std::time::Duration;

pub use self::auth::Sources;
pub use self::client::{Client, Lookup};
pub use self::reference::Reference;
use crate::error::{EXIT_INPUT, Error, Result};
use crate::git::http::fmt_secs;
use crate::image;
use crate::kustomize::ImageSpec;
use crate::plan::Plan;

/// The longest pause between two looks while waiting for a tag to appear.
const MAX_POLL: Duration = Duration::from_secs(15);

/// What the flags ask of the registry check.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub sources: Sources,
    /// Hosts (`host[:port]`) spoken to over plain HTTP besides loopback.
    pub insecure: Vec<String>,
    /// Bounds each HTTP request.
    pub timeout: Duration,
    /// How long to keep looking for a tag that is not there yet.
    pub wait: Option<Duration>,
    /// Write each verified digest into the image's entry.
    pub pin: bool,
    /// `--plan`: a registry that cannot be asked is a warning.
    pub dry_run: bool,
}

/// One image found in its registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The repository as the devops repo names it (the one the cluster pulls).
    pub image: String,
    pub tag: String,
    pub digest: String,
}

/// The registry check of one run; remembers answers, so an image that appears in several
/// files is asked about once.
pub struct Registry {
    client: Client,
    settings: Settings,
    known: HashMap<Reference, String>,
}

impl Registry {
    pub fn new(settings: Settings) -> Result<Registry> {
        let client = Client::new(
            settings.sources.clone(),
            settings.insecure.clone(),
            settings.timeout,
        )?;
        Ok(Registry {
            client,
            settings,
            known: HashMap::new(),
        })
    }

    /// Checks every image of the plan, pins those asked for, and fills `{digest}`; the
    /// images found, each once, in the plan's order.
    pub fn check_plan(
        &mut self,
        plan: &mut Plan,
        sleep: &mut dyn FnMut(Duration),
    ) -> Result<Vec<Verified>> {
        let mut verified = Vec::new();
        for images in plan.images_mut() {
            verified.extend(self.verify(images, sleep)?);
        }
        let mut filled = Vec::new();
        for fill in &plan.digests {
            let mut image = [fill.image.clone()];
            let found = self.verify(&mut image, sleep)?;
            // Keyed by the image as the plan has it (pinning may have set its digest).
            filled.extend(found.iter().map(|v| (fill.image.clone(), v.digest.clone())));
            verified.extend(found);
        }
        plan.fill_digests(
            |image| {
                filled
                    .iter()
                    .find(|(i, _)| i == image)
                    .map(|(_, d)| d.clone())
            },
            self.settings.dry_run,
        )?;
        let mut once = Vec::new();
        for v in verified {
            if !once.contains(&v) {
                once.push(v);
            }
        }
        Ok(once)
    }

    /// Checks every image of `images` that sets a tag, and pins its digest when asked
    /// (an explicitly given digest is kept). Waits sleep through `sleep`.
    pub fn verify(
        &mut self,
        images: &mut [ImageSpec],
        sleep: &mut dyn FnMut(Duration),
    ) -> Result<Vec<Verified>> {
        let mut verified = Vec::new();
        for spec in images.iter_mut() {
            let Some(tag) = &spec.new_tag else { continue };
            let name = spec
                .new_name
                .as_deref()
                .unwrap_or_else(|| image::split_tag(&spec.name).0);
            let reference = Reference::parse(name, tag).map_err(|e| {
                Error::usage(
                    format!("cannot verify the image {name}:{tag}: {e}"),
                    "fix the image name, or pass --no-verify to skip the registry check",
                )
            })?;
            let digest = match self.resolve(&reference, sleep) {
                Ok(digest) => digest,
                Err(error) if self.settings.dry_run && error.exit_code() != EXIT_INPUT => {
                    tracing::warn!(
                        "cannot verify {reference} in its registry; the plan goes on without it: {}",
                        crate::secrets::redact(&error.to_string())
                    );
                    continue;
                }
                Err(error) => return Err(error),
            };
            tracing::info!("{reference} is in its registry: {digest}");
            if self.settings.pin || spec.pin {
                match &spec.digest {
                    None => spec.digest = Some(digest.clone()),
                    Some(given) if *given != digest => tracing::warn!(
                        "{reference} is {digest} in its registry, but the digest given is {given}; keeping the given one"
                    ),
                    Some(_) => {}
                }
            }
            verified.push(Verified {
                image: name.to_string(),
                tag: tag.clone(),
                digest,
            });
        }
        Ok(verified)
    }

    /// The tag's digest, looking again with backoff while `--wait-for-image` allows.
    fn resolve(
        &mut self,
        reference: &Reference,
        sleep: &mut dyn FnMut(Duration),
    ) -> Result<String> {
        if let Some(digest) = self.known.get(reference) {
            return Ok(digest.clone());
        }
        let budget = self.settings.wait.unwrap_or_default();
        let mut waited = Duration::ZERO;
        let mut pause = Duration::from_secs(1);
        let digest = loop {
            match self.client.lookup(reference, sleep)? {
                Lookup::Found { digest } => break digest,
                Lookup::Missing { url } if waited >= budget => {
                    return Err(missing_tag(reference, &url, waited));
                }
                Lookup::Missing { .. } => {
                    let nap = pause.min(budget.saturating_sub(waited));
                    tracing::info!(
                        "{reference} is not in its registry yet; looking again in {} (waited {} of {})",
                        fmt_secs(nap),
                        fmt_secs(waited),
                        fmt_secs(budget)
                    );
                    sleep(nap);
                    waited += nap;
                    pause = (pause * 2).min(MAX_POLL);
                }
            }
        };
        self.known.insert(reference.clone(), digest.clone());
        Ok(digest)
    }
}

/// Exit 2: the input (the tag) is wrong for now, and nothing was pushed.
fn missing_tag(reference: &Reference, url: &str, waited: Duration) -> Error {
    let waited = if waited.is_zero() {
        String::new()
    } else {
        format!(" after waiting {}", fmt_secs(waited))
    };
    Error::usage(
        format!(
            "the image {reference} is not in its registry (HTTP 404 from {url}{waited}); nothing was pushed to the devops repository"
        ),
        "push the image before this step runs. Cloud Build's `images:` field pushes only after all steps have finished, so push in an earlier step (`docker push`); for a registry that lags, pass --wait-for-image 2m; --no-verify skips this check",
    )
}

#[cfg(test)]
mod tests;
