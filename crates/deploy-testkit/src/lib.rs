//! deploy-testkit: fixtures for tests only (dev-dependency), shared so every crate starts real peers the same way.
//!
//! Peers (PostgreSQL, OpenSSH, a registry, Docker images) are real programs from
//! the machine, installed by `scripts/peers/*.sh`, started on loopback on free
//! ports by the fixture, and stopped when the fixture is dropped. A missing
//! program is a test failure whose message names it, never a silent skip.

pub mod bench_report;
mod docker;
mod errors;
#[cfg(feature = "exec")]
pub mod exec;
mod http;
mod images;
mod nginx;
mod postgres;
mod process;
mod registry;
mod sshd;
mod tls;

pub use docker::{ContainerCleanup, http_get, published_addr, run_checked};
pub use errors::TestkitError;
pub use http::{
    HttpRequest, HttpResponse, http_exchange, http_response, read_request, read_request_blocking,
};
pub use images::{IMAGE_HTTP_PORT, TestImages};
pub use nginx::Nginx;
pub use postgres::{POSTGRES_TEST_USER, Postgres};
pub use process::{cargo_command, free_port, require_program, temp_dir};
pub use registry::Registry;
pub use sshd::{SSH_TEST_USER, SshdHosts};
pub use tls::TestCertificates;
