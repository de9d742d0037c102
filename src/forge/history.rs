//! The app repository's history through its forge's API: how two commits stand, for the
//! ordering guard where no checkout here holds them (Cloud Build's `/workspace` usually has
//! no `.git`, GitHub's checkout is shallow by default).

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use super::{Api, Auth, ForgeApi, auth, client};
use crate::ordering::{History, Order, Unknown, Unnamed};
use crate::plan::AppRepo;
use crate::repo::ForgeRepo;

pub struct AppRepoHistory {
    /// The client, made at the first question: most promotions never ask one.
    api: OnceCell<std::result::Result<Box<dyn ForgeApi>, String>>,
    repo: ForgeRepo,
    token: Option<String>,
    username: String,
    timeout: Duration,
    /// The repository as messages name it: `the github API of tomoda/app`.
    name: String,
    /// Each pair's answer, so that a retried round asks the forge once.
    answers: RefCell<HashMap<(String, String), Result<Order, Unknown>>>,
}

/// The app's history on its forge as the plan names it, or why there is none. It is read
/// with `source_token`, else with `devops_token` where the app's API is the devops
/// repository's own (a token never goes to another host), else anonymously.
pub fn for_app(
    app: &AppRepo,
    source_token: Option<String>,
    devops_token: Option<String>,
    username: &str,
    timeout: Duration,
) -> Box<dyn History> {
    match app {
        AppRepo::Forge {
            repo,
            named_by,
            same_api,
        } => {
            tracing::debug!("the app repository is {} ({named_by})", repo.path);
            let token = source_token.or(devops_token.filter(|_| *same_api));
            Box::new(AppRepoHistory::open(repo, token, username, timeout))
        }
        AppRepo::Unknown(why) => Box::new(Unnamed(why.clone())),
    }
}

impl AppRepoHistory {
    /// Speaks with `token` (sent as `username` where the forge takes Basic auth); without
    /// one, anonymously, which a public repository answers.
    pub fn open(
        repo: &ForgeRepo,
        token: Option<String>,
        username: &str,
        timeout: Duration,
    ) -> AppRepoHistory {
        AppRepoHistory {
            api: OnceCell::new(),
            repo: repo.clone(),
            token,
            username: username.to_string(),
            timeout,
            name: format!("the {} API of {}", repo.forge.name(), repo.path),
            answers: RefCell::new(HashMap::new()),
        }
    }

    fn ask(&self, deployed: &str, wanted: &str) -> Result<Order, Unknown> {
        let api = self.api.get_or_init(|| {
            let auth = self
                .token
                .clone()
                .map_or(Auth::None, |t| auth(self.repo.forge, t, &self.username));
            Api::new(auth, self.timeout)
                .map(|api| client(&self.repo, api))
                .map_err(|e| e.summary())
        });
        let api = match api {
            Ok(api) => api,
            Err(why) => return Err(Unknown::because(why.clone())),
        };
        match api.order(deployed, wanted) {
            Ok(Some(order)) => Ok(order),
            Ok(None) => Err(Unknown::because(format!(
                "{} knows no commit {wanted} or {deployed} (or the token may not read the repository: set SOURCE_GIT_TOKEN)",
                self.name
            ))),
            Err(error) => Err(Unknown::because(format!(
                "{} did not answer: {}",
                self.name,
                error.summary()
            ))),
        }
    }
}

impl History for AppRepoHistory {
    fn order(&self, deployed: &str, wanted: &str) -> Result<Order, Unknown> {
        let key = (deployed.to_string(), wanted.to_string());
        if let Some(answer) = self.answers.borrow().get(&key) {
            return answer.clone();
        }
        let answer = self.ask(deployed, wanted);
        tracing::debug!("{}: {wanted} against {deployed}: {answer:?}", self.name);
        self.answers.borrow_mut().insert(key, answer.clone());
        answer
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}
