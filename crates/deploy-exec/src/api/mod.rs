//! API executors: orchestrators (AWS ECS, HashiCorp Nomad, Kubernetes) asked over HTTP to roll a container to a digest.

mod ecs;
mod executor;
mod http;
mod k8s;
mod nomad;
mod sigv4;

#[cfg(test)]
mod tests;

pub use executor::{ApiExecutor, ApiExecutorConfig};
pub use sigv4::{AwsCredentials, SigningInput, sign};
