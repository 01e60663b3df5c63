//! `render`: from a release, a target, the job's ids and timestamp and a compose template to the full, deterministic artifact bundle.

use std::collections::BTreeMap;

use deploy_core::naming::labels as ours;
use deploy_core::{
    ArtifactId, ArtifactKind, Component, Digest, GeneratedArtifact, JobId, Name, PromotionId,
    Release, Target, TargetId, Timestamp, UnixPath, sha256_of,
};

use crate::errors::ArtifactError;
use crate::lock::Generated;
use crate::nginx::Traffic;
use crate::systemd::ContainerRuntime;
use crate::template::{ComposeTemplate, TemplateService};
use crate::{compose, env_file, lock, manifest, nginx, systemd};

/// File name of the compose file.
pub const COMPOSE_FILE_NAME: &str = "docker-compose.yml";
/// File name of the compose lock.
pub const LOCK_FILE_NAME: &str = "docker-compose.lock.yml";
/// File name of the nginx include.
pub const NGINX_FILE_NAME: &str = "nginx.conf";
/// File name of the manifest.
pub const MANIFEST_FILE_NAME: &str = "manifest.json";

/// Everything a render depends on. Nothing else is read: same input, same bytes.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    pub release: &'a Release,
    pub target: &'a Target,
    /// Name of the environment the promotion deploys to.
    pub environment: &'a Name,
    pub promotion_id: PromotionId,
    pub job_id: JobId,
    /// The job's timestamp (never the clock): `stella.deployed.at` and `x-generated.timestamp`.
    pub timestamp: Timestamp,
    pub template: &'a ComposeTemplate,
    /// Live colour and canary share, for the nginx config.
    pub traffic: Traffic,
    /// The engine the systemd units drive.
    pub runtime: ContainerRuntime,
    /// Directory on the target where the bundle's files are placed (the units read env files from it).
    pub work_dir: &'a UnixPath,
    /// The deploy environment's variables: each replaces the value of a service's
    /// variable of the same name, and gives one to a variable declared without a value.
    pub variables: &'a BTreeMap<String, String>,
}

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedArtifact {
    pub kind: ArtifactKind,
    pub file_name: Name,
    pub content: String,
    /// sha256 of `content`.
    pub sha256: Digest,
}

impl RenderedArtifact {
    fn new(kind: ArtifactKind, file_name: String, content: String) -> Result<Self, ArtifactError> {
        let file_name = Name::parse(&file_name).map_err(|source| ArtifactError::InvalidName {
            field: format!("artifact file name `{file_name}`"),
            source,
        })?;
        let sha256 = sha256_of(content.as_bytes());
        Ok(Self {
            kind,
            file_name,
            content,
            sha256,
        })
    }

    /// The stored form, with ids chosen by the caller.
    pub fn to_generated(
        &self,
        id: ArtifactId,
        job_id: JobId,
        target_id: Option<TargetId>,
    ) -> GeneratedArtifact {
        GeneratedArtifact::new(
            id,
            job_id,
            target_id,
            self.kind,
            self.file_name.clone(),
            self.content.clone(),
        )
    }
}

/// The rendered artifacts of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// In a fixed order: compose file, lock, env files, units (by service), nginx config, manifest last.
    pub artifacts: Vec<RenderedArtifact>,
    /// The lock digest (64 lowercase hex), see [`crate::verify_lock`].
    pub lock_digest: String,
    /// sha256 of the manifest: identifies the whole deployment.
    pub bundle_digest: Digest,
}

impl Bundle {
    /// The artifact called `file_name`, if any.
    pub fn get(&self, file_name: &str) -> Option<&RenderedArtifact> {
        self.artifacts
            .iter()
            .find(|a| a.file_name.as_str() == file_name)
    }
}

/// A template service bound to its release component.
pub(crate) struct ResolvedService<'a> {
    pub template: &'a TemplateService,
    pub component: &'a Component,
    pub release_name: &'a str,
    /// `repository@sha256:…`
    pub image: String,
    pub env_file_name: String,
    /// The template's environment with the deploy environment's variables merged in,
    /// plus `STELLA_RELEASE_ID` and `STELLA_DIGEST`.
    pub env: BTreeMap<String, String>,
    /// The template's labels plus the four `stella.*` labels.
    pub labels: BTreeMap<String, String>,
}

/// Env-file name of a service.
pub fn env_file_name(service: &Name) -> String {
    format!("{service}.env")
}

/// Unit file name of a service.
pub fn unit_file_name(service: &Name) -> String {
    format!("{}.service", systemd::container_name(service.as_str()))
}

/// Renders every artifact for one target. Pure and deterministic.
pub fn render(input: &RenderInput<'_>) -> Result<Bundle, ArtifactError> {
    let release_id = input.release.id.to_string();
    let timestamp = input.timestamp.to_rfc3339();
    let services = resolve(input, &release_id, &timestamp)?;
    let header = format!(
        "generated by stella deploy-artifacts; do not edit\nrelease {} ({}), environment {}, target {}\npromotion {}, job {}, at {}",
        input.release.name,
        release_id,
        input.environment,
        input.target.name,
        input.promotion_id,
        input.job_id,
        timestamp
    );

    let mut artifacts = Vec::with_capacity(3 + services.len() * 2 + 1);
    artifacts.push(RenderedArtifact::new(
        ArtifactKind::ComposeFile,
        COMPOSE_FILE_NAME.to_owned(),
        compose::render(&header, input.template, &services),
    )?);
    let generated = Generated {
        release_id: input.release.id,
        promotion_id: input.promotion_id,
        timestamp: &timestamp,
    };
    let (lock_text, lock_digest) = lock::render(&header, input.template, &services, &generated);
    artifacts.push(RenderedArtifact::new(
        ArtifactKind::ComposeLock,
        LOCK_FILE_NAME.to_owned(),
        lock_text,
    )?);
    // A value with a line break cannot travel in an env-file: such a service gets
    // neither its env-file nor the unit that reads it (the compose file, the lock and
    // the Docker API carry it), rather than a file that would lose it.
    let lined: Vec<&ResolvedService<'_>> =
        services.iter().filter(|s| env_file::fits(&s.env)).collect();
    for svc in &lined {
        artifacts.push(RenderedArtifact::new(
            ArtifactKind::EnvFile,
            svc.env_file_name.clone(),
            env_file::render(&header, &svc.env),
        )?);
    }
    for svc in &lined {
        let env_name =
            Name::parse(&svc.env_file_name).map_err(|source| ArtifactError::InvalidName {
                field: format!("env file name `{}`", svc.env_file_name),
                source,
            })?;
        let env_path = input.work_dir.join(&env_name).map_err(|e| {
            ArtifactError::invalid(
                format!("env file path of service `{}`", svc.template.name),
                e.value,
                e.expected,
            )
        })?;
        artifacts.push(RenderedArtifact::new(
            ArtifactKind::SystemdUnit,
            unit_file_name(&svc.template.name),
            systemd::render(&header, svc, input.runtime, env_path.as_str()),
        )?);
    }
    artifacts.push(RenderedArtifact::new(
        ArtifactKind::NginxConfig,
        NGINX_FILE_NAME.to_owned(),
        nginx::render(&header, input.template.http.as_ref(), input.traffic),
    )?);
    let manifest = manifest::render(input, &lock_digest, &artifacts);
    let manifest = RenderedArtifact::new(
        ArtifactKind::Manifest,
        MANIFEST_FILE_NAME.to_owned(),
        manifest,
    )?;
    let bundle_digest = manifest.sha256.clone();
    artifacts.push(manifest);
    Ok(Bundle {
        artifacts,
        lock_digest,
        bundle_digest,
    })
}

fn resolve<'a>(
    input: &RenderInput<'a>,
    release_id: &'a str,
    timestamp: &str,
) -> Result<Vec<ResolvedService<'a>>, ArtifactError> {
    let release = input.release;
    input
        .template
        .services
        .iter()
        .map(|t| {
            let component = release.component(t.component.as_str()).map_err(|e| {
                ArtifactError::UnknownComponent {
                    service: t.name.to_string(),
                    component: e.component,
                    release: e.release,
                    available: e.available.join(", "),
                }
            })?;
            let digest = component.digest().as_str();
            let mut env = BTreeMap::new();
            for (k, v) in &t.environment {
                let value = match (input.variables.get(k), v) {
                    (Some(var), _) => var.clone(),
                    (None, Some(v)) => v.clone(),
                    (None, None) => {
                        return Err(ArtifactError::invalid(
                            format!("services.{}.environment.{k}", t.name),
                            "(no value)",
                            format!(
                                "a value in the template, or a variable `{k}` of environment `{}`",
                                input.environment
                            ),
                        ));
                    }
                };
                env_file::check_value(t.name.as_str(), k, &value)?;
                // A reference stays in every artifact as written (the digests cover it);
                // its value is resolved only when a task is handed to its executor. The
                // rest of a bad reference is left out of the error: it may be a value.
                if deploy_core::SecretRef::parse(&value).is_err() {
                    return Err(ArtifactError::invalid(
                        format!("services.{}.environment.{k}", t.name),
                        "secret:…",
                        "`secret:NAME` with NAME a secret name ([a-z0-9][a-z0-9_.-]{0,62}); a value starting with `secret:` is always a reference",
                    ));
                }
                env.insert(k.clone(), value);
            }
            env.insert("STELLA_RELEASE_ID".to_owned(), release_id.to_owned());
            env.insert("STELLA_DIGEST".to_owned(), digest.to_owned());
            let mut labels = t.labels.clone();
            labels.insert(ours::RELEASE_ID.to_owned(), release_id.to_owned());
            labels.insert(ours::COMPONENT_NAME.to_owned(), component.name.to_string());
            labels.insert(ours::DIGEST.to_owned(), digest.to_owned());
            labels.insert(ours::DEPLOYED_AT.to_owned(), timestamp.to_owned());
            Ok(ResolvedService {
                template: t,
                component,
                release_name: release.name.as_str(),
                image: format!("{}@{}", component.image.repository(), digest),
                env_file_name: env_file_name(&t.name),
                env,
                labels,
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
