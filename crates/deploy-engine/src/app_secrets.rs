//! `AppSecrets`: where the engine reads application secrets (`secret:NAME` env values) just before a task goes to its executor; deploy-server implements it over the store and deployd's key.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use deploy_core::{
    ArtifactId, ArtifactKind, Environment, GeneratedArtifact, Name, Secret, SecretRef, Timestamp,
    secret_refs,
};
use deploy_exec::TaskLog;

/// One secret's current value and its version (1 at creation, +1 at every replacement).
#[derive(Debug, Clone)]
pub struct ResolvedSecret {
    pub value: Secret,
    pub version: u64,
    /// The environments (ids) the secret may be used in; empty: every environment.
    pub environments: Vec<String>,
}

/// Whether a secret scoped to `environments` (ids; empty: every one) may be used in
/// `environment`.
pub(crate) fn allowed_in(environments: &[String], environment: &Environment) -> bool {
    environments.is_empty()
        || environments
            .iter()
            .any(|e| *e == environment.id.to_string())
}

/// The refusal of a secret outside its environments: names the variable, the secret
/// and the environment, never a value.
pub(crate) fn not_allowed(key: &str, secret: &Name, environment: &Environment) -> String {
    format!(
        "variable `{key}` references secret `{secret}`, which may not be used in environment `{}`; expected one of the secret's environments (`deployctl secrets set {secret} --env {}` adds it)",
        environment.name, environment.name
    )
}

/// A secret could not be read (the store, or a value the key cannot open).
#[derive(Debug, Clone, thiserror::Error)]
#[error("read application secret `{name}`: {reason}")]
pub struct AppSecretsError {
    pub name: String,
    pub reason: String,
    /// Trying again may help (the database was unreachable), or not (a ciphertext no
    /// key in the key file opens).
    pub retryable: bool,
}

/// The application secrets deployd holds. The engine knows neither the database nor
/// the key: it asks by name, at job creation (does it exist) and at dispatch (its value).
#[async_trait]
pub trait AppSecrets: Send + Sync {
    /// The secret `name`, opened; `Ok(None)` when there is none.
    async fn resolve(&self, name: &Name) -> Result<Option<ResolvedSecret>, AppSecretsError>;
    /// The environments (ids) the secret `name` may be used in, empty for every one;
    /// `Ok(None)` when there is no such secret (nothing is opened).
    async fn environments(&self, name: &Name) -> Result<Option<Vec<String>>, AppSecretsError>;
}

/// Replaces every `secret:NAME` value of `env` by the secret's value, and returns `log`
/// redacting each value. The error says why, and whether a retry can help; it names
/// the variable and the secret, never a value.
pub(crate) async fn resolve_env(
    secrets: Option<&Arc<dyn AppSecrets>>,
    environment: &Environment,
    env: &mut BTreeMap<String, String>,
    mut log: TaskLog,
) -> Result<TaskLog, (bool, String)> {
    let refs = secret_refs(env).map_err(|(key, e)| {
        (
            false,
            format!("variable `{key}` holds a bad secret reference: {e}"),
        )
    })?;
    if refs.is_empty() {
        return Ok(log);
    }
    let Some(secrets) = secrets else {
        return Err((
            false,
            "the environment references application secrets and this deployd has no secrets key configured".to_owned(),
        ));
    };
    for (key, r) in refs {
        let value = resolve_one(secrets.as_ref(), environment, &key, &r).await?;
        log = log.with_secret(value.expose());
        env.insert(key, value.expose().to_owned());
    }
    Ok(log)
}

/// The value of `r`, referenced by variable `key` in `environment`; a missing secret,
/// or one that may not be used in `environment`, is no retry.
async fn resolve_one(
    secrets: &dyn AppSecrets,
    environment: &Environment,
    key: &str,
    r: &SecretRef,
) -> Result<Secret, (bool, String)> {
    match secrets.resolve(r.name()).await {
        Ok(Some(s)) if !allowed_in(&s.environments, environment) => {
            Err((false, not_allowed(key, r.name(), environment)))
        }
        Ok(Some(s)) => Ok(s.value),
        Ok(None) => Err((
            false,
            format!(
                "variable `{key}` references secret `{}`, which does not exist (deleted after the job was created?); create it with `deployctl secrets set {}`",
                r.name(),
                r.name()
            ),
        )),
        Err(e) => Err((e.retryable, e.to_string())),
    }
}

/// compose_host: the lock in `artifacts` loses its secret variables, which the
/// project's secrets override file (`<project>.secrets.yml`, added to `artifacts`, this
/// request only; the executor passes it as a second `--file`) sets; returns `log`
/// redacting each value, and the lock as stored when it was rewritten (an executor
/// whose host checks the lock's digest, the agent, sends that one). The lock keeps its
/// stored sha256: the deployment it names is the stored lock, references included.
pub(crate) async fn resolve_compose(
    secrets: Option<&Arc<dyn AppSecrets>>,
    environment: &Environment,
    project: &Name,
    artifacts: &mut Vec<GeneratedArtifact>,
    mut log: TaskLog,
    now: Timestamp,
) -> Result<(TaskLog, Option<GeneratedArtifact>), (bool, String)> {
    let Some(lock) = artifacts
        .iter_mut()
        .find(|a| a.kind == ArtifactKind::ComposeLock)
    else {
        return Ok((log, None));
    };
    let refs =
        deploy_artifacts::lock_secret_refs(&lock.content).map_err(|e| (false, e.to_string()))?;
    if refs.is_empty() {
        return Ok((log, None));
    }
    let stored = lock.clone();
    let Some(secrets) = secrets else {
        return Err((
            false,
            "the environment references application secrets and this deployd has no secrets key configured".to_owned(),
        ));
    };
    let mut values: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (service, vars) in &refs {
        for (key, r) in vars {
            let value = resolve_one(secrets.as_ref(), environment, key, r).await?;
            log = log.with_secret(value.expose());
            values
                .entry(service.clone())
                .or_default()
                .insert(key.clone(), value.expose().to_owned());
        }
    }
    let file_name = Name::parse(&deploy_artifacts::secrets_override_file_name(
        project.as_str(),
    ))
    .map_err(|e| (false, format!("project `{project}`: {e}")))?;
    let file = GeneratedArtifact::new(
        ArtifactId::from_parts(now, crate::clock::random_bytes()),
        lock.job_id,
        lock.target_id,
        ArtifactKind::ComposeFile,
        file_name,
        deploy_artifacts::secrets_override_file(&values),
    );
    let content = deploy_artifacts::lock_without_secret_refs(&lock.content, &refs)
        .map_err(|e| (false, e.to_string()))?;
    lock.size = content.len() as u64;
    lock.content = content;
    artifacts.push(file);
    Ok((log, Some(stored)))
}

/// The secret references of one service's environment, for the checks at job creation:
/// `(variable, reference)`.
pub(crate) fn references(env: &BTreeMap<String, String>) -> Vec<(String, SecretRef)> {
    // Render refused bad references already; one that slips through is no reference.
    secret_refs(env)
        .map(|m| m.into_iter().collect())
        .unwrap_or_default()
}

/// `log` redacting the values of every secret `task` references on `target`, for every
/// line of its attempt whatever the phase: the deploy's, the health check's (a command
/// printing a variable), the hooks', a probe's and the failure's reason. Best effort: a
/// secret that cannot be read is left out here (the deploy phase refuses it, naming it).
pub(crate) async fn attempt_log(
    secrets: Option<&Arc<dyn AppSecrets>>,
    ctx: &crate::context::JobContext,
    target: &deploy_core::Target,
    task: &deploy_core::DeploymentTask,
    mut log: TaskLog,
) -> TaskLog {
    let Some(secrets) = secrets else {
        return log;
    };
    let refs: Vec<SecretRef> = match task.component_id {
        Some(id) => ctx
            .component(id)
            .ok()
            .and_then(|c| ctx.container_spec(target, c, &task.digest).ok())
            .map(|spec| references(&spec.env).into_iter().map(|(_, r)| r).collect())
            .unwrap_or_default(),
        None => ctx
            .artifacts_for(target.id)
            .iter()
            .find(|a| a.kind == ArtifactKind::ComposeLock)
            .and_then(|lock| deploy_artifacts::lock_secret_refs(&lock.content).ok())
            .map(|services| {
                services
                    .into_values()
                    .flat_map(BTreeMap::into_values)
                    .collect()
            })
            .unwrap_or_default(),
    };
    for r in refs {
        if let Ok(Some(s)) = secrets.resolve(r.name()).await {
            log = log.with_secret(s.value.expose());
        }
    }
    log
}
