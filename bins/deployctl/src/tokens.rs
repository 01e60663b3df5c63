//! `deployctl token` (admin): create (optionally expiring), list and revoke API tokens.

use clap::Subcommand;
use deploy_api::API_PREFIX;
use serde_json::{Value, json};

use crate::client::{self, Client};
use crate::exit::CliError;
use crate::output::{self, Output};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        /// Its name (unique; approval policies name approvers by it).
        name: String,
        /// viewer, deployer or admin.
        #[arg(long)]
        role: String,
        /// Seconds until it stops being accepted, 60 to ten years [default: never].
        #[arg(long, value_name = "SECS")]
        expires_in_secs: Option<u64>,
    },
    /// List tokens (never their secrets): id, name, role, created, last used, revoked, expires.
    List,
    /// Revoke a token: it is refused from the next request on.
    Revoke {
        /// The token's name or id.
        id: String,
    },
}

pub async fn run(command: TokenCommand, client: &Client, out: Output) -> Result<(), CliError> {
    let p = API_PREFIX;
    match command {
        TokenCommand::Create {
            name,
            role,
            expires_in_secs,
        } => {
            let mut body = json!({"name": name, "role": role});
            if let Some(secs) = expires_in_secs {
                body["expires_in_secs"] = json!(secs);
            }
            let v: Value = client.post(&format!("{p}/tokens"), Some(&body)).await?;
            output::object(out, &v, &["id", "name", "role", "expires_at", "token"]);
        }
        TokenCommand::List => {
            let v: Value = client.get(&format!("{p}/tokens")).await?;
            output::list(
                out,
                &v,
                &[
                    "id",
                    "name",
                    "role",
                    "created_at",
                    "last_used_at",
                    "revoked_at",
                    "expires_at",
                ],
            );
        }
        TokenCommand::Revoke { id } => {
            let v: Value = client
                .post::<Value, Value>(&format!("{p}/tokens/{}/revoke", client::segment(&id)), None)
                .await?;
            output::object(out, &v, &["id", "name", "role", "revoked_at"]);
        }
    }
    Ok(())
}
