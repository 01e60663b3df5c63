//! Real-thing tests of the SSH executor: OpenSSH sshd, the Docker Engine, docker-compose and a registry, all on loopback.

mod common;
mod compose_host;
mod docker_host;
mod failures;
mod injection;
