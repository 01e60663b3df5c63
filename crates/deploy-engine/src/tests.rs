//! Engine tests on a real SQLite store with an in-memory executor: strategies, retries, policy, rollback, cancel, crash and resume.

mod app_secrets;
mod approve;
mod bluegreen;
mod fake;
mod mixed;
mod scenarios;
mod service;
mod trace;
