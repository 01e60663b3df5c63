//! `deployctl secrets` (admin): set an application secret from a file or stdin (never from an argument), list them without values, remove one.

use std::io::Read as _;
use std::path::PathBuf;

use clap::Subcommand;
use deploy_api::API_PREFIX;
use serde_json::{Value, json};

use crate::client::{self, Client};
use crate::exit::{CliError, USAGE};
use crate::output::{self, Output};

const FIELDS: &[&str] = &[
    "name",
    "version",
    "key_id",
    "environments",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
];

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Create or replace a secret; env values reference it as `secret:NAME`. The value
    /// is read byte for byte (a trailing newline included) from a file or stdin, never
    /// from the command line, where it would land in shell history and `ps`.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["from_file", "from_stdin"])))]
    Set {
        /// The secret's name ([a-z0-9][a-z0-9_.-]{0,62}).
        name: String,
        /// Read the value from this file.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// Read the value from standard input (until end of file).
        #[arg(long)]
        from_stdin: bool,
        /// Limit the secret to this environment (name or id); repeat for more. Without
        /// `--env` or `--all-envs` a new secret may be used in every environment and a
        /// replaced one keeps its environments.
        #[arg(long = "env", value_name = "ENV", conflicts_with = "all_envs")]
        envs: Vec<String>,
        /// Let the secret be used in every environment (clears its `--env` list).
        #[arg(long)]
        all_envs: bool,
    },
    /// List secrets (never their values): name, version, key, environments, created, updated, by whom.
    List,
    /// Delete a secret; jobs created afterwards that reference it are refused.
    Rm {
        /// The secret's name.
        name: String,
    },
}

fn read_value(from_file: Option<PathBuf>, from_stdin: bool) -> Result<String, CliError> {
    let mut bytes = Vec::new();
    match (from_file, from_stdin) {
        (Some(path), false) => {
            bytes = std::fs::read(&path).map_err(|e| {
                CliError::new(
                    USAGE,
                    format!(
                        "cannot read the secret value from `{}`: {e}",
                        path.display()
                    ),
                )
            })?;
        }
        (None, true) => {
            std::io::stdin().read_to_end(&mut bytes).map_err(|e| {
                CliError::new(
                    USAGE,
                    format!("cannot read the secret value from stdin: {e}"),
                )
            })?;
        }
        _ => {
            return Err(CliError::new(
                USAGE,
                "expected exactly one of --from-file FILE and --from-stdin",
            ));
        }
    }
    String::from_utf8(bytes).map_err(|_| {
        CliError::new(
            USAGE,
            "the secret value is not UTF-8; expected text an environment variable can carry",
        )
    })
}

pub async fn run(command: SecretsCommand, client: &Client, out: Output) -> Result<(), CliError> {
    let p = API_PREFIX;
    match command {
        SecretsCommand::Set {
            name,
            from_file,
            from_stdin,
            envs,
            all_envs,
        } => {
            let value = read_value(from_file, from_stdin)?;
            let mut body = json!({ "value": value });
            if all_envs || !envs.is_empty() {
                body["environments"] = json!(envs);
            }
            let v: Value = client
                .put(&format!("{p}/secrets/{}", client::segment(&name)), &body)
                .await?;
            output::object(out, &v, FIELDS);
        }
        SecretsCommand::List => {
            let v: Value = client.get(&format!("{p}/secrets")).await?;
            output::list(out, &v, FIELDS);
        }
        SecretsCommand::Rm { name } => {
            client
                .delete(&format!("{p}/secrets/{}", client::segment(&name)))
                .await?;
        }
    }
    Ok(())
}
