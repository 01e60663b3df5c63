//! `deployctl agent`: one-time bootstrap tokens (admin), list, show and revoke agents.

use clap::Subcommand;
use deploy_api::API_PREFIX;
use serde_json::{Value, json};

use crate::client::{self, Client};
use crate::exit::CliError;
use crate::output::{self, Output};

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create a one-time token an agent registers with; prints the token alone (once).
    BootstrapToken {
        /// What the token is for (shown in listings).
        #[arg(long)]
        name: String,
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
    /// Revoke an agent: its credential is refused at once, its in-flight tasks fail (retryable).
    Revoke {
        /// The agent's name or id.
        id: String,
    },
}

/// The fields shown for a bootstrap token (`revoked_at`: spent or revoked).
const BOOTSTRAP_TOKEN_FIELDS: &[&str] = &["id", "name", "created_at", "expires_at", "revoked_at"];

/// The fields shown for one agent.
const AGENT_FIELDS: &[&str] = &[
    "id",
    "name",
    "active",
    "in_flight",
    "capabilities",
    "labels",
    "last_seen_at",
    "created_at",
    "revoked_at",
];

pub async fn run(command: AgentCommand, client: &Client, out: Output) -> Result<(), CliError> {
    let p = API_PREFIX;
    match command {
        AgentCommand::BootstrapToken {
            name,
            expires_in_secs,
        } => {
            let mut body = json!({ "name": name });
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
        AgentCommand::Revoke { id } => {
            let v: Value = client
                .post::<Value, Value>(&format!("{p}/agents/{}/revoke", client::segment(&id)), None)
                .await?;
            output::object(out, &v, AGENT_FIELDS);
        }
    }
    Ok(())
}
