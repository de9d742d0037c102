//! tomoda-promote: the last step of a CI pipeline, putting a freshly built image into a
//! GitOps repository's Kustomize overlay.

pub mod kustomize;
pub mod yaml;
pub mod config;
pub mod error;
pub mod image;
