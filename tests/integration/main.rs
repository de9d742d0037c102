//! The integration tests: the built binary against git's own smart-HTTP server, with
//! fixture repositories built in temporary directories. One test binary, so the crate is
//! built once.

mod argocd_server;
mod bounded;
mod dsl;
mod forge_server;
mod git_server;
mod proxy;

mod action;
mod argocd;
mod bench;
mod cli;
mod commit_via_api;
mod concurrency;
mod container;
mod errors;
mod examples;
mod faults;
mod history;
mod hostile;
mod kustomize;
mod layout;
mod local;
mod ordering;
mod promote;
mod pull_request;
mod registry;
mod secrets;
mod targets;
mod tls;
