//! The registry check before a promotion: every image reference the edit makes the
//! cluster pull must be in its registry (`newName` kept or set, else `name`: see
//! `pulled.rs`), and its digest can be pinned, so the deploy is immutable.
//!
//! Why: a devops commit naming a tag no registry holds makes every new pod fail with
//! ImagePullBackOff, far from the build that caused it; the commonest cause is Cloud
//! Build's `images:`, which pushes only after all steps, after this one.
//!
//! `reference` says which host and repository a name means and how to speak to it,
//! `auth` where credentials come from, `client` the HTTP exchange; this file the policy:
//! waiting for a lagging registry, what a missing tag means, and `--plan`'s leniency (an
//! unreachable registry is a warning there, not a failure). Where digests go is
//! `pulled::pin`'s.

pub mod auth;
pub mod client;
pub mod reference;

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

pub use self::auth::Sources;
pub use self::client::{Client, Lookup};
pub use self::reference::Reference;
use crate::error::{EXIT_INPUT, Error, Result};
use crate::git::http::fmt_secs;
use crate::plan::Plan;
use crate::pulled::Pulled;

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
    /// `--pin-digest`: write each verified digest beside its tag.
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
/// files, or again in a retry round, is asked about once.
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

    /// The check a promotion of `plan` asks for (`None` with --no-verify, which refuses a
    /// plan that wants digests); `--pin-digest` pins every image of the plan.
    pub fn for_plan(settings: Option<Settings>, plan: &mut Plan) -> Result<Option<Registry>> {
        let Some(settings) = settings else {
            plan.without_registry()?;
            return Ok(None);
        };
        if settings.pin {
            plan.pin_every_image();
        }
        Registry::new(settings).map(Some)
    }

    /// [`Registry::check`] as the promotion loop takes it.
    pub fn as_check(&mut self) -> RefCell<impl FnMut(&[Pulled]) -> Result<Vec<Verified>> + '_> {
        RefCell::new(|pulled: &[Pulled]| self.check(pulled, &mut std::thread::sleep))
    }

    /// Checks every reference the edit makes the cluster pull: the images found, each
    /// once, in order. Known answers are not asked again (a retry round pulls the same
    /// references); waits sleep through `sleep`. Its failures are final: the client has
    /// retried what was worth retrying.
    pub fn check(
        &mut self,
        pulled: &[Pulled],
        sleep: &mut dyn FnMut(Duration),
    ) -> Result<Vec<Verified>> {
        let mut verified = Vec::new();
        for image in pulled {
            let found = self.verify(image, sleep).map_err(Error::not_retried)?;
            if let Some(found) = found
                && !verified.contains(&found)
            {
                verified.push(found);
            }
        }
        Ok(verified)
    }

    /// One reference; `None` when `--plan` goes on without a registry it cannot ask.
    fn verify(
        &mut self,
        image: &Pulled,
        sleep: &mut dyn FnMut(Duration),
    ) -> Result<Option<Verified>> {
        let (name, tag) = (&image.name, &image.tag);
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
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        Ok(Some(Verified {
            image: name.clone(),
            tag: tag.clone(),
            digest,
        }))
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
        tracing::info!("{reference} is in its registry: {digest}");
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
