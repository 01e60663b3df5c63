//! deploy-artifacts: renders what lands on a target (compose file, compose lock, env files, systemd units, nginx config, manifest), deterministically and content-addressed.
//!
//! Pure: no I/O, no clock, no randomness. [`parse_template`] reads a compose
//! template strictly (size limit, alias-bomb guard, errors with line and
//! column); [`render`] turns a release, a target, the job's ids and timestamp
//! and the template into a [`Bundle`] whose manifest digest identifies the
//! deployment; [`verify_lock`] recomputes a lock's digest.
//!
//! | kind | file | content |
//! |---|---|---|
//! | compose file | `docker-compose.yml` | the template's services (every key carried through, keys sorted) with `image: repository@sha256:…`, the environment inline (the template's values, the environment's variables merged in, plus `STELLA_RELEASE_ID` and `STELLA_DIGEST`; `$` written `$$`) and the labels plus `stella.release.id`, `stella.component.name`, `stella.digest`, `stella.deployed.at`; top-level volumes and networks |
//! | compose lock | `docker-compose.lock.yml` | the same document plus `x-generated`, with its own digest (`lock.rs`): what compose hosts bring up, docker_host containers are built from, and a rollback re-deploys |
//! | env file | `<service>.env` | `KEY=value` lines, unquoted, read by the unit only (`env_file.rs`) |
//! | systemd unit | `stella-<service>.service` | `Type=exec`, `Restart=` from the service's restart policy, `TimeoutStopSec=` = stop grace + 5 s, `ExecStart=` a `docker` or `podman run` of the pinned image, every word escaped for unit syntax |
//! | nginx config | `nginx.conf` | an `http`-context include: an upstream per routed service weighted by [`Traffic`], one server block |
//! | manifest | `manifest.json` | release, target, promotion and job ids, lock digest, traffic, and every other artifact's kind, name, size and sha256; **its sha256 is the bundle digest** |
//!
//! Every string a template supplies is checked where it lands: names are deploy-core
//! `Name`s (service names at most 48 bytes, so `stella-<name>.service` is one too),
//! environment keys match `[A-Za-z_][A-Za-z0-9_]*`, NUL is refused naming the
//! variable (never quoting the value), route paths and addresses are checked before
//! they reach nginx syntax.
//!
//! The tests run the real readers on what is rendered, each with a negative case:
//! `docker-compose config` (and `docker compose config`) on every compose file and
//! lock, compared with the template with its images pinned; `nginx -t`;
//! `systemd-analyze verify`; `docker create --env-file` then `docker inspect` for env
//! files, on values such as quotes, ` # `, `${HOME}`, surrounding spaces and unicode.
//! The programs come from `scripts/peers/artifacts.sh`.

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
pub use docker_host::{ServiceContainer, container_specs};
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
