//! deploy-artifacts: renders what lands on a target (compose file, compose lock, env files, systemd units, nginx config, manifest), deterministically and content-addressed.
//!
//! Pure: no I/O, no clock, no randomness. [`parse_template`] reads a compose
//! template strictly (size limit, alias-bomb guard, errors with line and
//! column); [`render`] turns a release, a target, the job's ids and timestamp
//! and the template into a [`Bundle`] whose manifest digest identifies the
//! deployment; [`verify_lock`] recomputes a lock's digest.

mod compose;
mod compose_secrets;
mod compose_syntax;
mod container;
mod docker_host;
mod env_file;
mod errors;
mod lock;
mod manifest;
mod nginx;
mod policy;
mod render;
mod systemd;
mod template;
mod yaml_in;
mod yaml_out;

pub use compose_secrets::{
    lock_secret_refs, lock_without_secret_refs, secrets_override_file, secrets_override_file_name,
};
pub use container::{Applies, COMPOSE_ONLY_KEYS, DOCKER_HOST_KEYS, ServiceContext, container_spec};
pub use docker_host::{COMPONENT_LABEL, ServiceContainer, container_specs};
pub use errors::ArtifactError;
pub use lock::{LockInfo, verify_lock};
pub use manifest::MANIFEST_SCHEMA;
pub use nginx::{Colour, HttpRouting, Route, Traffic, render_routing};
pub use policy::{PolicyScope, check_lock_policy, check_runtime_policy};
pub use render::{
    Bundle, COMPOSE_FILE_NAME, LOCK_FILE_NAME, MANIFEST_FILE_NAME, NGINX_FILE_NAME, RenderInput,
    RenderedArtifact, env_file_name, render, unit_file_name,
};
pub use systemd::{ContainerRuntime, STOP_MARGIN_SECS};
pub use template::{
    ComposeTemplate, DEFAULT_COMPOSE_VERSION, Restart, SERVICE_NAME_MAX_LEN, TemplateService,
    parse_template,
};
pub use yaml_in::{MAX_DOCUMENT_BYTES, MAX_NODES, MAX_SCALAR_BYTES};
