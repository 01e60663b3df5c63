//! Real-thing tests of the SSH executor: OpenSSH sshd, the Docker Engine, docker-compose and a registry, all on loopback.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a panic there is a failing test"
)]

mod ciphers;
mod common;
mod compose_host;
mod docker_host;
mod failures;
mod files;
mod injection;
mod logs;
mod revert;
