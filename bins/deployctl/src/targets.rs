//! `deployctl target`: add (see `target.rs` for the document from flags), list, show, disable, enable and delete an environment's targets.

use clap::Subcommand;
use deploy_api::API_PREFIX;
use serde_json::Value;

use crate::client::{self, Client};
use crate::exit::CliError;
use crate::output::{self, Output};
use crate::target;

#[derive(Debug, Subcommand)]
pub enum TargetCommand {
    /// Add a target to an environment: an SSH Docker host from flags (with a health check and labels), or any target from `--file`.
    Add(Box<target::AddArgs>),
    /// List the targets of an environment.
    List {
        /// The environment's name or id.
        #[arg(long)]
        env: String,
    },
    /// Show a target.
    Show {
        /// The environment's name or id.
        #[arg(long)]
        env: String,
        /// The target's name or id.
        target: String,
    },
    /// Disable a target: new jobs skip it (their plan lists it as skipped).
    Disable {
        /// The environment's name or id.
        #[arg(long)]
        env: String,
        /// The target's name or id.
        target: String,
    },
    /// Enable a disabled target again.
    Enable {
        /// The environment's name or id.
        #[arg(long)]
        env: String,
        /// The target's name or id.
        target: String,
    },
    /// Delete a target (refused while an active job uses it); past jobs keep showing it.
    Delete {
        /// The environment's name or id.
        #[arg(long)]
        env: String,
        /// The target's name or id.
        target: String,
    },
}

/// The fields shown for one target.
const TARGET_SHOW_FIELDS: &[&str] = &[
    "id",
    "name",
    "target_type",
    "connection.host",
    "connection.port",
    "labels",
    "disabled",
    "version",
    "created_at",
];

/// The columns shown for a target.
const TARGET_FIELDS: &[&str] = &[
    "id",
    "name",
    "target_type",
    "connection.host",
    "connection.port",
];

pub async fn run(command: TargetCommand, client: &Client, out: Output) -> Result<(), CliError> {
    let p = API_PREFIX;
    match command {
        TargetCommand::Add(args) => {
            let body = target::request(&args)?;
            let env = client::segment(&args.env);
            let v: Value = client
                .post(&format!("{p}/environments/{env}/targets"), Some(&body))
                .await?;
            output::object(out, &v, TARGET_FIELDS);
        }
        TargetCommand::List { env } => {
            let v: Value = client
                .get(&format!(
                    "{p}/environments/{}/targets",
                    client::segment(&env)
                ))
                .await?;
            output::list(out, &v, TARGET_FIELDS);
        }
        TargetCommand::Show { env, target } => {
            let v: Value = client.get(&target::path(&env, &target)).await?;
            output::object(out, &v, TARGET_SHOW_FIELDS);
        }
        TargetCommand::Disable { env, target } => {
            let v = target::set_disabled(client, &env, &target, true).await?;
            output::object(out, &v, TARGET_SHOW_FIELDS);
        }
        TargetCommand::Enable { env, target } => {
            let v = target::set_disabled(client, &env, &target, false).await?;
            output::object(out, &v, TARGET_SHOW_FIELDS);
        }
        TargetCommand::Delete { env, target } => {
            client.delete(&target::path(&env, &target)).await?;
            if out == Output::Table {
                output::line(&format!("target {target} of environment {env} deleted"));
            }
        }
    }
    Ok(())
}
