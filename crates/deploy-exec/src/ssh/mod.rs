//! The SSH executor: russh sessions, host key policy, SFTP uploads, the Docker Engine API forwarded over the connection, docker_host and compose_host deploys.
//!
//! **Host keys** (`HostKeyPolicy` on the target, `host_key.rs`): `known_hosts` (the
//! executor's file) and `known_hosts_file` are strict: a recorded key that differs is
//! `HostKeyMismatch` (presented and expected fingerprints), no recorded key is
//! `HostKeyUnknown`; `pinned` compares the SHA256 fingerprint; `accept_new` records an
//! unknown key on first use and is strict afterwards. There is no accept-anything mode.
//!
//! **Connections** (`session.rs`): one russh connection per (host, port, user,
//! credential, policy), pooled in the `SshExecutor` and reused across a job's tasks;
//! each call opens its own channel, a dead connection is replaced, keepalive is on.
//!
//! **Quoting.** Every value that reaches the remote `/bin/sh` (compose_host, the
//! traffic switch, `run_command`) goes through `sh_quote` or `sh_join`; names are
//! `Name`s and paths `UnixPath`s. Artifact contents travel over SFTP (`files.rs`: the
//! private work dir, exclusive 0600 uploads, rename into place), never through a
//! shell. Each remote command starts with `echo <marker>$$`: sshd makes the command's
//! shell a process-group leader, so a cancel or timeout kills the whole group (`kill
//! -KILL -<pid>` on a second channel) and closes the channel.
//!
//! **docker_host** runs deploy-docker's `DockerHost` over `BollardApi` on the Docker
//! Engine API reached through the connection (`docker_api.rs`): each request on its
//! own `direct-streamlocal` channel to `/var/run/docker.sock`, or, where sshd refuses
//! socket forwarding, a channel running `docker system dial-stdio`; the API version is
//! negotiated once per connection, each request answers within 120 s. When the engine
//! refuses a pull for want of credentials, the host's own `docker pull` runs with the
//! SSH user's `docker login` (the engine does not read the CLI's credential store); the
//! API pull comes first because an abandoned API request also stops the engine's pull.
//! A deploy cut by cancel or timeout is recovered (`DockerHost::recover`, at most 30 s).
//!
//! **compose_host** (`compose_host.rs`): the project's containers (by the
//! `com.docker.compose.project` label) and the recorded lock digest
//! (`.stella-<project>.lock.sha256` in the work dir) are read first: the same lock
//! running is a no-op. Otherwise: detect `docker compose` (preferred) or
//! `docker-compose`; upload every artifact to a temp name and rename the others into
//! place; `pull` from the staged lock (a failed pull leaves the deployed lock and
//! project untouched); remove the recorded digest (a failed or cut `up` must not pass
//! for the old lock); move the lock into place; `up -d --remove-orphans` with an
//! explicit `--project-name` and `--file` (application secrets come in a second
//! `--file`, the `<project>.secrets.yml` override); record the digest; report each
//! service's running digest and published ports.
//!
//! **Traffic switch** (blue-green, nginx on the target): the new include is uploaded
//! beside its destination, the current file copied aside, the new one renamed into
//! place, then `nginx -t` and `nginx -s reload` (argv words, each quoted). On a failure
//! the old file is put back and reloaded, and the call fails with nginx's message.
//! Since `-s reload` only signals the master, the script then waits (3 s at most)
//! until the master has new workers and none of its old ones still active.

mod compose_host;
mod config;
mod docker_api;
mod executor;
mod files;
mod host_key;
mod session;

pub use config::SshExecutorConfig;
pub use docker_api::{DOCKER_SOCKET, docker_over_ssh};
pub use executor::SshExecutor;
pub use files::{CheckedDir, FILE_MODE, RemoteFiles, WORK_DIR_MODE, first_temp_name};
pub use host_key::{HostKeyCheck, fingerprint_of};
pub use session::{ChannelStream, RemoteOutput, SshAuth, SshSession};
