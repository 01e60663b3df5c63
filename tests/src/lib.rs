//! deploy-tests: support code for the workspace's cross-crate scenarios and its tidy checks.

pub mod tidy;
