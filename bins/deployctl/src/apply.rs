//! `deployctl apply -f env.yaml` and `deployctl get env NAME`: an environment, its policy, pipeline and targets kept in a file and made so on the server (idempotent; `--dry-run` prints the diff; `--prune` removes targets not in the file).
//!
//! The document (YAML or JSON):
//!
//! ```yaml
//! name: prod
//! variables: {LOG_LEVEL: info}
//! hooks: {}                        # pre_deploy / post_deploy commands
//! approval: {required_approvals: 2, approver_role: deployer, approvers: [], allow_self_approval: false}
//! requires: [staging]              # environments a release must have completed in first
//! targets:
//!   - name: host-1
//!     target_type: docker_host
//!     connection: {model: ssh, host: 10.0.0.5, user: deploy, credential_ref: "env:SSH_KEY", work_dir: /srv/app}
//!     health_check: {type: http, path: /health}
//!     labels: {zone: a}
//!     disabled: false
//! ```
//!
//! Every field is validated before anything is sent, with its path in the error
//! (`targets[1].connection.port`); a document that fails changes nothing.

use std::collections::BTreeMap;
use std::path::Path;

use deploy_api::{
    API_PREFIX, CreateEnvironmentRequest, UpdateEnvironmentRequest, UpdateTargetRequest,
};
use deploy_core::{
    ApprovalPolicy, Connection, Environment, HealthCheckConfig, Hooks, HttpUrl, Labels, Name,
    Target, TargetType,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client::{Client, segment};
use crate::exit::{CliError, USAGE};
use crate::output::{self, Output};

/// An environment as a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentDocument {
    pub name: Name,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_default_hooks")]
    pub hooks: Hooks,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalPolicy>,
    /// Names of the environments a release must have completed in first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    #[serde(default)]
    pub targets: Vec<TargetDocument>,
}

fn is_default_hooks(hooks: &Hooks) -> bool {
    *hooks == Hooks::default()
}

fn no_labels(labels: &Labels) -> bool {
    labels.as_map().is_empty()
}

/// A target as a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetDocument {
    pub name: Name,
    pub target_type: TargetType,
    pub connection: Connection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_endpoint: Option<HttpUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default, skip_serializing_if = "no_labels")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

impl TargetDocument {
    fn of(target: &Target) -> Self {
        Self {
            name: target.name.clone(),
            target_type: target.target_type,
            connection: target.connection.clone(),
            health_endpoint: target.health_endpoint.clone(),
            health_check: target.health_check.clone(),
            labels: target.labels.clone(),
            disabled: target.disabled,
        }
    }
}

/// Reads and checks a document: unknown keys, bad values and the rules that span fields
/// (a target's connection for its type) fail with the field's path.
pub fn read(path: &Path) -> Result<EnvironmentDocument, CliError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::new(USAGE, format!("cannot read `{shown}`: {e}")))?;
    let value: Value = serde_yaml::from_str(&text)
        .map_err(|e| CliError::new(USAGE, format!("`{shown}` is not YAML or JSON: {e}")))?;
    let document: EnvironmentDocument = serde_path_to_error::deserialize(&value).map_err(|e| {
        CliError::new(
            USAGE,
            format!("`{shown}` is invalid at `{}`: {}", e.path(), e.inner()),
        )
    })?;
    let mut names = std::collections::BTreeSet::new();
    for (i, t) in document.targets.iter().enumerate() {
        if !names.insert(t.name.as_str()) {
            return Err(CliError::new(
                USAGE,
                format!(
                    "`{shown}` is invalid at `targets[{i}].name`: `{}` appears twice",
                    t.name
                ),
            ));
        }
        let probe = Target {
            id: deploy_core::TargetId::from_parts(deploy_core::Timestamp::UNIX_EPOCH, [0; 10]),
            environment_id: deploy_core::EnvironmentId::from_parts(
                deploy_core::Timestamp::UNIX_EPOCH,
                [0; 10],
            ),
            name: t.name.clone(),
            target_type: t.target_type,
            connection: t.connection.clone(),
            health_endpoint: t.health_endpoint.clone(),
            health_check: t.health_check.clone(),
            labels: t.labels.clone(),
            disabled: t.disabled,
            version: 0,
            created_at: deploy_core::Timestamp::UNIX_EPOCH,
        };
        probe.validate().map_err(|e| {
            CliError::new(
                USAGE,
                format!("`{shown}` is invalid at `targets[{i}]`: {e}"),
            )
        })?;
    }
    if let Some(policy) = &document.approval {
        policy
            .validate("approval")
            .map_err(|e| CliError::new(USAGE, format!("`{shown}` is invalid: {e}")))?;
    }
    Ok(document)
}

/// The document of environment `env` as it is on the server.
pub async fn current(
    client: &Client,
    env: &str,
) -> Result<Option<(Environment, Vec<Target>, EnvironmentDocument)>, CliError> {
    let p = API_PREFIX;
    let Some(environment) = client
        .get_optional::<Environment>(&format!("{p}/environments/{}", segment(env)))
        .await?
    else {
        return Ok(None);
    };
    let targets: Vec<Target> = client
        .get(&format!("{p}/environments/{}/targets", environment.id))
        .await?;
    let mut requires = Vec::new();
    for id in &environment.requires {
        let required: Environment = client.get(&format!("{p}/environments/{id}")).await?;
        requires.push(required.name.to_string());
    }
    let document = EnvironmentDocument {
        name: environment.name.clone(),
        variables: environment.variables.clone(),
        hooks: environment.hooks.clone(),
        approval: environment.approval.clone(),
        requires,
        targets: targets.iter().map(TargetDocument::of).collect(),
    };
    Ok(Some((environment, targets, document)))
}

/// One change `apply` makes (or, with `--dry-run`, would make).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    CreateEnvironment,
    UpdateEnvironment(Vec<String>),
    CreateTarget(Name),
    UpdateTarget(Name, Vec<String>),
    DeleteTarget(Name),
}

impl Change {
    fn describe(&self, env: &Name) -> Vec<String> {
        match self {
            Self::CreateEnvironment => vec![format!("+ environment {env}")],
            Self::UpdateEnvironment(fields) => std::iter::once(format!("~ environment {env}"))
                .chain(fields.iter().map(|f| format!("    {f}")))
                .collect(),
            Self::CreateTarget(t) => vec![format!("+ target {t}")],
            Self::UpdateTarget(t, fields) => std::iter::once(format!("~ target {t}"))
                .chain(fields.iter().map(|f| format!("    {f}")))
                .collect(),
            Self::DeleteTarget(t) => vec![format!("- target {t}")],
        }
    }
}

/// The differences between two JSON values, as `path: old -> new` lines.
fn differences(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                differences(
                    &sub,
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        // Variables often hold credentials: a diff says which changed, not their values.
        (a, b) if a != b && path.starts_with("variables.") => out.push(match (a, b) {
            (Value::Null, _) => format!("{path}: added"),
            (_, Value::Null) => format!("{path}: removed"),
            _ => format!("{path}: changed"),
        }),
        (a, b) if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

fn diff(old: &impl Serialize, new: &impl Serialize) -> Vec<String> {
    let mut out = Vec::new();
    differences(
        "",
        &serde_json::to_value(old).unwrap_or(Value::Null),
        &serde_json::to_value(new).unwrap_or(Value::Null),
        &mut out,
    );
    out
}

/// The environment's own settings (no targets), to compare.
fn settings(document: &EnvironmentDocument) -> Value {
    json!({
        "variables": document.variables,
        "hooks": document.hooks,
        "approval": document.approval,
        "requires": document.requires,
    })
}

/// Makes the server match `desired`; returns the changes (made, or with `dry_run` only
/// computed).
pub async fn apply(
    client: &Client,
    desired: &EnvironmentDocument,
    dry_run: bool,
    prune: bool,
) -> Result<Vec<String>, CliError> {
    let p = API_PREFIX;
    let env = desired.name.as_str();
    let existing = current(client, env).await?;
    let mut changes = Vec::new();
    let (environment, targets) = match &existing {
        None => {
            changes.push(Change::CreateEnvironment);
            (None, Vec::new())
        }
        Some((environment, targets, document)) => {
            let fields = diff(&settings(document), &settings(desired));
            if !fields.is_empty() {
                changes.push(Change::UpdateEnvironment(fields));
            }
            (Some(environment), targets.clone())
        }
    };
    let by_name: BTreeMap<&str, &Target> = targets.iter().map(|t| (t.name.as_str(), t)).collect();
    for t in &desired.targets {
        match by_name.get(t.name.as_str()) {
            None => changes.push(Change::CreateTarget(t.name.clone())),
            Some(current) if current.target_type != t.target_type => {
                return Err(CliError::new(
                    USAGE,
                    format!(
                        "target `{}` is a {} on the server and a {} in the file; a target's type cannot change: delete it first (or rename it)",
                        t.name,
                        current.target_type.as_str(),
                        t.target_type.as_str()
                    ),
                ));
            }
            Some(current) => {
                let fields = diff(&TargetDocument::of(current), t);
                if !fields.is_empty() {
                    changes.push(Change::UpdateTarget(t.name.clone(), fields));
                }
            }
        }
    }
    let wanted: std::collections::BTreeSet<&str> =
        desired.targets.iter().map(|t| t.name.as_str()).collect();
    let extra: Vec<&Target> = targets
        .iter()
        .filter(|t| !wanted.contains(t.name.as_str()))
        .collect();
    if prune {
        changes.extend(extra.iter().map(|t| Change::DeleteTarget(t.name.clone())));
    }
    let mut lines: Vec<String> = changes
        .iter()
        .flat_map(|c| c.describe(&desired.name))
        .collect();
    if !prune && !extra.is_empty() {
        let names: Vec<&str> = extra.iter().map(|t| t.name.as_str()).collect();
        lines.push(format!(
            "  (targets on the server but not in the file, kept without --prune: {})",
            names.join(", ")
        ));
    }
    if dry_run {
        return Ok(lines);
    }
    for change in &changes {
        match change {
            Change::CreateEnvironment => {
                let request = CreateEnvironmentRequest {
                    name: desired.name.clone(),
                    hooks: desired.hooks.clone(),
                    variables: desired.variables.clone(),
                    approval: desired.approval.clone(),
                    requires: desired.requires.clone(),
                };
                let _: Environment = client
                    .post(&format!("{p}/environments"), Some(&request))
                    .await?;
            }
            Change::UpdateEnvironment(_) => {
                let Some(current) = environment else { continue };
                let request = UpdateEnvironmentRequest {
                    name: desired.name.clone(),
                    hooks: desired.hooks.clone(),
                    variables: desired.variables.clone(),
                    approval: desired.approval.clone(),
                    requires: desired.requires.clone(),
                    version: Some(current.version),
                };
                let _: Environment = client
                    .put(&format!("{p}/environments/{}", current.id), &request)
                    .await?;
            }
            Change::CreateTarget(name) => {
                let Some(t) = desired.targets.iter().find(|t| &t.name == name) else {
                    continue;
                };
                let request = deploy_api::CreateTargetRequest {
                    name: t.name.clone(),
                    target_type: t.target_type,
                    connection: t.connection.clone(),
                    health_endpoint: t.health_endpoint.clone(),
                    health_check: t.health_check.clone(),
                    labels: t.labels.clone(),
                };
                let created: Target = client
                    .post(
                        &format!("{p}/environments/{}/targets", segment(env)),
                        Some(&request),
                    )
                    .await?;
                if t.disabled {
                    update_target(client, env, &created, t).await?;
                }
            }
            Change::UpdateTarget(name, _) => {
                let (Some(current), Some(t)) = (
                    by_name.get(name.as_str()),
                    desired.targets.iter().find(|t| &t.name == name),
                ) else {
                    continue;
                };
                update_target(client, env, current, t).await?;
            }
            Change::DeleteTarget(name) => {
                client
                    .delete(&format!(
                        "{p}/environments/{}/targets/{}",
                        segment(env),
                        segment(name.as_str())
                    ))
                    .await?;
            }
        }
    }
    Ok(lines)
}

async fn update_target(
    client: &Client,
    env: &str,
    current: &Target,
    desired: &TargetDocument,
) -> Result<(), CliError> {
    let request = UpdateTargetRequest {
        name: desired.name.clone(),
        connection: desired.connection.clone(),
        health_endpoint: desired.health_endpoint.clone(),
        health_check: desired.health_check.clone(),
        labels: desired.labels.clone(),
        disabled: desired.disabled,
        version: Some(current.version),
    };
    let _: Target = client
        .put(
            &format!(
                "{API_PREFIX}/environments/{}/targets/{}",
                segment(env),
                current.id
            ),
            &request,
        )
        .await?;
    Ok(())
}

/// `deployctl apply`: prints the changes (or "unchanged").
pub async fn run(
    client: &Client,
    out: Output,
    file: &Path,
    dry_run: bool,
    prune: bool,
) -> Result<(), CliError> {
    let desired = read(file)?;
    let lines = apply(client, &desired, dry_run, prune).await?;
    let changed = lines.iter().any(|l| !l.starts_with("  ("));
    match out {
        Output::Table => {
            if !changed {
                output::line(&format!("environment {} unchanged", desired.name));
            }
            for l in &lines {
                output::line(l);
            }
            if dry_run && changed {
                output::line("(dry run: nothing was changed)");
            }
        }
        Output::Json | Output::Yaml => output::object(
            out,
            &json!({"environment": desired.name, "dry_run": dry_run, "changed": changed, "changes": lines}),
            &[],
        ),
    }
    Ok(())
}

/// `deployctl get env NAME`: the document `apply` accepts (YAML unless `-o json`).
pub async fn get(client: &Client, out: Output, env: &str) -> Result<(), CliError> {
    let Some((_, _, document)) = current(client, env).await? else {
        return Err(CliError::new(
            USAGE,
            format!("no environment named `{env}`"),
        ));
    };
    let value = serde_json::to_value(&document).unwrap_or(Value::Null);
    let shown = if out == Output::Json {
        Output::Json
    } else {
        Output::Yaml
    };
    output::object(shown, &value, &[]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_document_round_trips_and_errors_name_the_field() {
        let (_d, path) = write(
            "name: prod\nrequires: [staging]\napproval: {required_approvals: 2}\ntargets:\n  - name: host-1\n    target_type: docker_host\n    connection: {model: ssh, host: 10.0.0.5, user: deploy, credential_ref: 'env:K', work_dir: /srv}\n",
        );
        let doc = read(&path).unwrap();
        assert_eq!(doc.targets[0].name.as_str(), "host-1");
        assert_eq!(doc.approval.as_ref().unwrap().required_approvals, 2);
        let text = serde_yaml::to_string(&doc).unwrap();
        let (_d2, again) = write(&text);
        assert_eq!(
            read(&again).unwrap(),
            doc,
            "get's output is what apply reads"
        );

        for (bad, field) in [
            (
                "name: prod\ntargets:\n  - name: h\n    target_type: docker_host\n    connection: {model: ssh, host: x, port: 99999, user: u, credential_ref: 'env:K', work_dir: /srv}\n",
                "targets[0].connection",
            ),
            ("name: prod\ncolour: blue\n", "colour"),
            ("name: Prod\n", "name"),
            (
                "name: prod\napproval: {required_approvals: 0}\n",
                "approval.required_approvals",
            ),
            (
                "name: prod\ntargets:\n  - {name: h, target_type: docker_host, connection: {model: ssh, host: x, user: u, credential_ref: 'env:K', work_dir: /srv}}\n  - {name: h, target_type: docker_host, connection: {model: ssh, host: y, user: u, credential_ref: 'env:K', work_dir: /srv}}\n",
                "targets[1].name",
            ),
        ] {
            let (_d, path) = write(bad);
            let err = read(&path).unwrap_err();
            assert_eq!(err.code, USAGE);
            assert!(err.message.contains(field), "{field}: {}", err.message);
        }
    }

    #[test]
    fn differences_are_listed_by_path() {
        let mut out = Vec::new();
        differences(
            "",
            &json!({"variables": {"A": "1", "B": "2"}, "approval": null}),
            &json!({"variables": {"A": "1", "B": "3", "C": "4"}, "approval": {"required_approvals": 2}}),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "approval: null -> {\"required_approvals\":2}",
                "variables.B: changed",
                "variables.C: added",
            ]
        );
    }
}
