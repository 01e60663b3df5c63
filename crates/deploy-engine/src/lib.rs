//! deploy-engine: the deployment job manager of the spec ("Promotion -> Create Job -> Plan Tasks -> Execute Tasks").
//!
//! The engine keeps no rollout state in memory that is not in the store: after
//! every persisted change it asks deploy-core's `decide` what is left to do, and
//! performs it, persisting each decision before acting on it. Resuming after a
//! crash is therefore the same loop: in-flight tasks without a worker come back
//! as `Reconcile` and are checked against the target with `inspect`.

mod app_secrets;
mod approve;
mod attempt;
mod bluegreen;
mod clock;
mod config;
mod context;
mod create;
mod engine;
mod errors;
mod events;
mod logs;
mod preview;
mod rollback;
mod runner;
mod service;
mod trace;
mod verify;

pub use app_secrets::{AppSecrets, AppSecretsError, ResolvedSecret};
pub use approve::Approval;
pub use bluegreen::{
    NGINX_COMMAND_LABEL, NGINX_INCLUDE_LABEL, NGINX_LISTEN_LABEL, NGINX_UPSTREAM_PORT_LABEL,
};
pub use clock::{Clock, SystemClock, random_bytes};
pub use config::EngineConfig;
pub use context::CONTAINER_PREFIX_LABEL;
pub use create::{
    JobRequest, check_release_for_environment, check_release_template, release_template,
};
pub use deploy_core::{Traceparent, TraceparentError};
pub use engine::Engine;
pub use errors::EngineError;
pub use events::EngineEvent;
pub use preview::{Preview, PreviewEntry, PreviewWave};
pub use trace::{TRACE_TARGET, TraceLink};

#[cfg(test)]
mod tests;
