//! What a docker_host target runs, read back from a rendered compose lock: one `ContainerSpec` per service, for the executors (deploy and rollback alike).
//!
//! The lock is the record of a deployment: a rollback re-deploys the lock of the
//! job it restores, so a container is always rebuilt from stored bytes (checked
//! against their digest first), never from a template the client might resend.

use std::collections::BTreeMap;

use deploy_core::naming::labels::COMPONENT_NAME as COMPONENT_LABEL;
use deploy_core::{ContainerSpec, ImageRef, Name};
use serde_yaml::Value;

use crate::compose_syntax::{describe, string_map};
use crate::container::{Applies, ServiceContext, container_spec};
use crate::errors::ArtifactError;
use crate::lock::{LockDoc, verify_lock};
use crate::yaml_in;

/// One service of a lock, resolved for a docker_host target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContainer {
    pub service: Name,
    /// The release component it runs.
    pub component: Name,
    pub spec: ContainerSpec,
}

/// Every service of `lock` as a docker_host container; volumes and networks the
/// template does not name itself are called `<project>_<key>`, as Compose calls them.
/// Keys a docker_host cannot apply are refused, naming them.
pub fn container_specs(lock: &[u8], project: &str) -> Result<Vec<ServiceContainer>, ArtifactError> {
    verify_lock(lock)?;
    let doc: LockDoc = yaml_in::parse("compose lock", lock)?;
    let mut out = Vec::with_capacity(doc.services.len());
    for (service, body) in &doc.services {
        let at = |key: &str| format!("services.{service}.{key}");
        let image = match body.get("image") {
            Some(Value::String(i)) => ImageRef::parse(i)
                .map_err(|e| ArtifactError::invalid(at("image"), i, e.to_string()))?,
            other => {
                return Err(ArtifactError::invalid(
                    at("image"),
                    other.map_or_else(|| "(none)".to_owned(), describe),
                    "an image pinned by digest",
                ));
            }
        };
        let read = |key: &str| -> Result<BTreeMap<String, String>, ArtifactError> {
            body.get(key)
                .map_or_else(|| Ok(BTreeMap::new()), |v| string_map(&at(key), v))
        };
        let env = read("environment")?;
        let labels = read("labels")?;
        let component = labels.get(COMPONENT_LABEL).ok_or_else(|| {
            ArtifactError::invalid(
                at("labels"),
                "(none)",
                format!("a `{COMPONENT_LABEL}` label"),
            )
        })?;
        let component = Name::parse(component).map_err(|source| ArtifactError::InvalidName {
            field: at(&format!("labels.{COMPONENT_LABEL}")),
            source,
        })?;
        let service_name = Name::parse(service).map_err(|source| ArtifactError::InvalidName {
            field: format!("services.{service}"),
            source,
        })?;
        let mut rest = body.clone();
        rest.remove("image");
        let spec = container_spec(
            service,
            &rest,
            &ServiceContext {
                image: &image,
                project,
                env: &env,
                labels: &labels,
                volumes: doc.volumes.as_ref(),
                networks: doc.networks.as_ref(),
            },
            Applies::DockerHost,
        )?;
        out.push(ServiceContainer {
            service: service_name,
            component,
            spec,
        });
    }
    Ok(out)
}
