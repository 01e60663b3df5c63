//! API executors: orchestrators (AWS ECS, HashiCorp Nomad, Kubernetes) asked over HTTP to roll a container to a digest.
//!
//! [`ApiExecutor`] is the one executor registered for `ExecutionModel::Api`; it
//! dispatches on the target's `ApiConnection` (`ecs_service`, `nomad_job`,
//! `k8s_deployment`). `executor.rs` holds credentials, the cancel and timeout bound and
//! the result; `http.rs` the one reqwest helper (rustls, extra root CA, JSON, error
//! classification); `ecs.rs`, `nomad.rs`, `k8s.rs` one platform each.
//!
//! **Contract.** `deploy` changes only the named container's (Nomad: task's) image to
//! `<repository>@<digest>` and waits for the platform's rollout within the call's
//! timeout; the same digest already set changes nothing (`changed = false`) but still
//! waits. `inspect` returns the digest the platform has configured (none when it is not
//! pinned by digest). `run_command` is `NotSupported`: API targets take http/tcp checks
//! against a `health_endpoint`. A rollback is the engine's deploy of the last-known-good
//! digest; platform reverts are never called (ECS circuit breakers and Nomad
//! `auto_revert` still act on their own if the job enables them). One request per step,
//! never a retry inside: the engine decides, by error class.
//!
//! - **ECS**: JSON-RPC signed with our own SigV4 (`sigv4.rs`, checked against the AWS
//!   documentation's example): DescribeServices, DescribeTaskDefinition,
//!   RegisterTaskDefinition (the current revision with only the image changed),
//!   UpdateService, then DescribeServices until the PRIMARY deployment runs the new
//!   revision with `rolloutState` COMPLETED (FAILED is `RolloutFailed`). Keys come from
//!   `credential_ref` or the AWS default chain (`aws/`).
//! - **Nomad**: read the job, change the task's image, register it with
//!   `EnforceIndex`, then follow the deployment of that index until `successful`;
//!   canaries are promoted once when all are healthy and nothing promotes them.
//!   A conflicting modify index is `ApiConflict`.
//! - **Kubernetes**: a strategic-merge PATCH of the Deployment's container image
//!   carrying the `resourceVersion` read (a concurrent change is a 409), then
//!   `kubectl rollout status` logic (observed generation, updated, available and no
//!   old replicas); `ProgressDeadlineExceeded` is `RolloutFailed`. Credentials through
//!   `kube_auth.rs`.
//!
//! Errors: `ApiStatus` (401/403 and other 4xx permanent; 408, 429, 5xx retryable),
//! `ApiConflict` (retryable: the retry reads again), `ApiResponse` (an answer without
//! the expected service, container or field; permanent), `RolloutFailed`,
//! `TlsCertificate` (points at `ca_ref`); connection failures are retryable `Connect`,
//! the overall deadline a retryable `Timeout` quoting the last rollout state. Secrets
//! (and each part of an ECS key) are redacted from the task log and never appear in
//! errors.
//!
//! Tests (`tests/`): a loopback HTTP/1.1 fake per platform for rollout progress and
//! every error class; TLS against `openssl s_server`; the real `moto_server` (ECS
//! request shapes) and `kmock` (Kubernetes), installed by `scripts/peers/api.sh`.
//! Nomad has no installable server here: its fake follows the Nomad HTTP API docs.

mod aws;
mod ecs;
mod executor;
mod http;
mod k8s;
mod kube_auth;
mod nomad;
mod sigv4;

#[cfg(test)]
mod tests;

pub use aws::AwsEnvironment;
pub use executor::{ApiExecutor, ApiExecutorConfig};
pub use kube_auth::InClusterConfig;
pub use sigv4::{AwsCredentials, SigningInput, sign};
