//! API executors: orchestrators (AWS ECS, HashiCorp Nomad, Kubernetes) asked over HTTP to roll a container to a digest.

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
