//! `deployctl agent`: one-time bootstrap tokens bound to an agent's name and labels (admin), list, show, relabel and revoke agents.

use clap::Subcommand;
use deploy_api::API_PREFIX;
use serde_json::{Value, json};

use crate::client::{self, Client};
use crate::exit::{CliError, USAGE};
use crate::output::{self, Output};

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create a one-time token one agent registers with, under this name and with these
    /// labels (it can claim no others); prints the token alone (once).
    BootstrapToken {
        /// The agent's name: it registers under no other.
        #[arg(long)]
        name: String,
        /// One of the agent's labels, `key=value` (repeatable): targets select agents by them.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// A capability the agent may claim: docker or compose (repeatable) [default: both].
        #[arg(long = "capability", value_name = "CAPABILITY")]
        capabilities: Vec<String>,
        /// Seconds until it expires unspent [server default: 3600; at most 604800].
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
    /// List agent bootstrap tokens (never their secrets): id, name, created, expires,
    /// spent or revoked.
    BootstrapTokens,
    /// Revoke an unspent bootstrap token: no agent can register with it any more.
    RevokeBootstrapToken {
        /// The bootstrap token's id.
        id: String,
    },
    /// List agents: id, name, active, in flight, last seen, revoked.
    List,
    /// Show one agent.
    Show {
        /// The agent's name or id.
        id: String,
    },
    /// Replace an agent's labels (admin): targets select it by these from now on.
    SetLabels {
        /// The agent's name or id.
        id: String,
        /// One of its new labels, `key=value` (repeatable; none: no labels).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// The `labels_version` the change is made from [default: the one read now].
        #[arg(long)]
        version: Option<u64>,
    },
    /// Revoke an agent: its credential is refused at once, its in-flight tasks fail (retryable).
    Revoke {
        /// The agent's name or id.
        id: String,
    },
}

/// The fields shown for a bootstrap token (`revoked_at`: spent or revoked).
const BOOTSTRAP_TOKEN_FIELDS: &[&str] = &[
    "id",
    "name",
    "labels",
    "capabilities",
    "created_at",
    "expires_at",
    "revoked_at",
];

/// `key=value` flags as a labels object; a flag without `=` or a key given twice is a
/// usage error naming it (the server validates keys and values).
fn labels_body(labels: &[String]) -> Result<Value, CliError> {
    let mut map = serde_json::Map::new();
    for label in labels {
        match label.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                if map.insert(k.to_owned(), json!(v)).is_some() {
                    return Err(CliError::new(
                        USAGE,
                        format!("--label `{k}` is given twice"),
                    ));
                }
            }
            _ => {
                return Err(CliError::new(
                    USAGE,
                    format!("--label `{label}` is not `key=value`"),
                ));
            }
        }
    }
    Ok(Value::Object(map))
}

/// The fields shown for one agent.
const AGENT_FIELDS: &[&str] = &[
    "id",
    "name",
    "active",
    "in_flight",
    "capabilities",
    "labels",
    "labels_version",
    "last_seen_at",
    "created_at",
    "revoked_at",
];

pub async fn run(command: AgentCommand, client: &Client, out: Output) -> Result<(), CliError> {
    let p = API_PREFIX;
    match command {
        AgentCommand::BootstrapToken {
            name,
            labels,
            capabilities,
            expires_in_secs,
        } => {
            let mut body = json!({ "name": name, "labels": labels_body(&labels)? });
            if !capabilities.is_empty() {
                body["capabilities"] = json!(capabilities);
            }
            if let Some(secs) = expires_in_secs {
                body["expires_in_secs"] = json!(secs);
            }
            let v: Value = client
                .post(&format!("{p}/agents/bootstrap-tokens"), Some(&body))
                .await?;
            match out {
                // The token alone, so `TOKEN=$(deployctl agent bootstrap-token ...)` works.
                Output::Table => output::line(v["token"].as_str().unwrap_or_default()),
                Output::Json | Output::Yaml => output::object(out, &v, &[]),
            }
        }
        AgentCommand::BootstrapTokens => {
            let v: Value = client.get(&format!("{p}/agents/bootstrap-tokens")).await?;
            output::list(out, &v, BOOTSTRAP_TOKEN_FIELDS);
        }
        AgentCommand::RevokeBootstrapToken { id } => {
            let v: Value = client
                .post::<Value, Value>(
                    &format!(
                        "{p}/agents/bootstrap-tokens/{}/revoke",
                        client::segment(&id)
                    ),
                    None,
                )
                .await?;
            output::object(out, &v, BOOTSTRAP_TOKEN_FIELDS);
        }
        AgentCommand::List => {
            let v: Value = client.get(&format!("{p}/agents")).await?;
            output::list(
                out,
                &v,
                &[
                    "id",
                    "name",
                    "active",
                    "in_flight",
                    "last_seen_at",
                    "revoked_at",
                ],
            );
        }
        AgentCommand::Show { id } => {
            let v: Value = client
                .get(&format!("{p}/agents/{}", client::segment(&id)))
                .await?;
            output::object(out, &v, AGENT_FIELDS);
        }
        AgentCommand::SetLabels {
            id,
            labels,
            version,
        } => {
            let labels = labels_body(&labels)?;
            let path = format!("{p}/agents/{}", client::segment(&id));
            let version = match version {
                Some(v) => v,
                None => {
                    let agent: Value = client.get(&path).await?;
                    agent["labels_version"].as_u64().unwrap_or_default()
                }
            };
            let v: Value = client
                .put(
                    &format!("{path}/labels"),
                    &json!({ "labels": labels, "version": version }),
                )
                .await?;
            output::object(out, &v, AGENT_FIELDS);
        }
        AgentCommand::Revoke { id } => {
            let v: Value = client
                .post::<Value, Value>(&format!("{p}/agents/{}/revoke", client::segment(&id)), None)
                .await?;
            output::object(out, &v, AGENT_FIELDS);
        }
    }
    Ok(())
}
