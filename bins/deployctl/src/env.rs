//! `deployctl env`: create, show, list, update (variables, approval policy, pipeline) and delete environments, by name or id.

use std::collections::BTreeMap;

use clap::Subcommand;
use deploy_api::{API_PREFIX, CreateEnvironmentRequest, EnvironmentList, UpdateEnvironmentRequest};
use deploy_core::{ApprovalPolicy, ApproverRole, Environment, Name};
use serde_json::Value;

use crate::client::{Client, segment};
use crate::exit::{CliError, USAGE};
use crate::output::{self, Output};
use crate::render::parse_variables;
use crate::{PageArgs, page_query, print_page};

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Create an environment.
    #[command(after_help = "Examples:
  deployctl env create staging --var DATABASE_URL=postgres://db.staging/app
  deployctl env create prod --requires staging --approvals 2")]
    Create {
        /// Its name: `[a-z0-9][a-z0-9_.-]*`.
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Show an environment: its version, approval policy and pipeline.
    Show {
        /// The environment's name or id.
        env: String,
    },
    /// List environments, newest first.
    List(PageArgs),
    /// Change an environment: only what the flags name changes (read, changed, written
    /// back with its version: a concurrent change makes it fail instead of being lost).
    #[command(after_help = "Examples:
  deployctl env update prod --approvals 2 --approver-role admin
  deployctl env update prod --var LOG_LEVEL=debug --unset-var OLD_FLAG
  deployctl env update prod --no-approval --no-requires")]
    Update {
        /// The environment's name or id.
        env: String,
        #[command(flatten)]
        settings: Settings,
        /// A new name.
        #[arg(long)]
        rename: Option<String>,
        /// Remove a variable (repeatable).
        #[arg(long = "unset-var", value_name = "KEY")]
        unset: Vec<String>,
        /// Remove the approval policy: one approval by any deployer, the requester included.
        #[arg(long, conflicts_with_all = ["approvals", "approver_role", "approvers", "allow_self_approval"])]
        no_approval: bool,
        /// Remove the pipeline: no environment is required first.
        #[arg(long, conflicts_with = "requires")]
        no_requires: bool,
    },
    /// Show or replace an environment's runtime policy: what its containers may get
    /// from their hosts (privileges, host namespaces, capabilities, devices, binds).
    Policy {
        #[command(subcommand)]
        command: crate::runtime_policy::PolicyCommand,
    },
    /// Delete an environment and its targets (refused while a job is active in it); its
    /// jobs stay readable and its name is free again.
    Delete {
        /// The environment's name or id.
        env: String,
    },
}

/// What `env create` sets and `env update` changes.
#[derive(Debug, Default, clap::Args)]
pub struct Settings {
    /// A value of this environment, `KEY=value` (repeatable): it replaces a service
    /// variable of that name, and gives one to a variable declared without a value
    /// (e.g. `--var DATABASE_URL=postgres://db.staging/app`).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    variables: Vec<String>,
    /// An environment a release must have completed in before it may be promoted here
    /// (repeatable; replaces the list): the pipeline, e.g. `--requires staging`.
    #[arg(long = "requires", value_name = "ENV")]
    requires: Vec<String>,
    /// Approvals by distinct tokens a promotion here needs (sets an approval policy, in
    /// which the requester's own approval does not count unless --allow-self-approval).
    #[arg(long, value_name = "N")]
    approvals: Option<u32>,
    /// The lowest role that may approve: `deployer` or `admin`.
    #[arg(long, value_parser = ["deployer", "admin"])]
    approver_role: Option<String>,
    /// Only tokens of these names may approve (repeatable; replaces the list).
    #[arg(long = "approver", value_name = "TOKEN_NAME")]
    approvers: Vec<String>,
    /// Whether the requester may approve their own promotion (`true` or `false`).
    #[arg(long, value_name = "BOOL")]
    allow_self_approval: Option<bool>,
}

impl Settings {
    fn touches_policy(&self) -> bool {
        self.approvals.is_some()
            || self.approver_role.is_some()
            || !self.approvers.is_empty()
            || self.allow_self_approval.is_some()
    }

    /// `policy` (or a new default one) with the flags applied.
    fn policy(&self, policy: Option<ApprovalPolicy>) -> Option<ApprovalPolicy> {
        if !self.touches_policy() {
            return policy;
        }
        let mut p = policy.unwrap_or_default();
        if let Some(n) = self.approvals {
            p.required_approvals = n;
        }
        if let Some(role) = &self.approver_role {
            p.approver_role = if role == "admin" {
                ApproverRole::Admin
            } else {
                ApproverRole::Deployer
            };
        }
        if !self.approvers.is_empty() {
            p.approvers.clone_from(&self.approvers);
        }
        if let Some(allow) = self.allow_self_approval {
            p.allow_self_approval = allow;
        }
        Some(p)
    }
}

fn name(value: &str, flag: &str) -> Result<Name, CliError> {
    Name::parse(value)
        .map_err(|e| CliError::new(USAGE, format!("{flag} `{value}` is not a name: {e}")))
}

/// The fields `env show` prints.
const FIELDS: &[&str] = &[
    "id",
    "name",
    "version",
    "variables",
    "approval.required_approvals",
    "approval.approver_role",
    "approval.allow_self_approval",
    "requires",
    "created_at",
];

pub async fn run(command: EnvCommand, client: &Client, out: Output) -> Result<(), CliError> {
    let p = API_PREFIX;
    match command {
        EnvCommand::Create { name: n, settings } => {
            let request = CreateEnvironmentRequest {
                name: name(&n, "the name")?,
                hooks: Default::default(),
                variables: parse_variables(&settings.variables)?,
                approval: settings.policy(None),
                requires: settings.requires.clone(),
            };
            let created: Environment = client
                .post(&format!("{p}/environments"), Some(&request))
                .await?;
            output::object(out, &to_value(&created), FIELDS);
        }
        EnvCommand::Show { env } => {
            let found: Environment = client
                .get(&format!("{p}/environments/{}", segment(&env)))
                .await?;
            output::object(out, &to_value(&found), FIELDS);
        }
        EnvCommand::List(page) => {
            let list: EnvironmentList = client
                .get(&format!("{p}/environments?{}", page_query(&page)))
                .await?;
            print_page(
                out,
                &to_value(&list),
                "environments",
                &["id", "name", "version", "created_at"],
            );
        }
        EnvCommand::Update {
            env,
            settings,
            rename,
            unset,
            no_approval,
            no_requires,
        } => {
            let path = format!("{p}/environments/{}", segment(&env));
            let current: Environment = client.get(&path).await?;
            let mut variables: BTreeMap<String, String> = current.variables.clone();
            for key in &unset {
                if variables.remove(key).is_none() {
                    return Err(CliError::new(
                        USAGE,
                        format!(
                            "--unset-var `{key}`: environment `{}` has no such variable",
                            current.name
                        ),
                    ));
                }
            }
            variables.extend(parse_variables(&settings.variables)?);
            let requires = if no_requires {
                Vec::new()
            } else if settings.requires.is_empty() {
                // Ids: the server accepts names or ids.
                current.requires.iter().map(ToString::to_string).collect()
            } else {
                settings.requires.clone()
            };
            let approval = if no_approval {
                None
            } else {
                settings.policy(current.approval.clone())
            };
            let request = UpdateEnvironmentRequest {
                name: match &rename {
                    Some(r) => name(r, "--rename")?,
                    None => current.name.clone(),
                },
                hooks: current.hooks.clone(),
                variables,
                approval,
                requires,
                version: Some(current.version),
            };
            let updated: Environment = client.put(&path, &request).await.map_err(|e| {
                if e.status == Some(409) {
                    CliError::new(
                        e.code,
                        format!(
                            "{}; it changed since it was read: run the command again",
                            e.message
                        ),
                    )
                } else {
                    e
                }
            })?;
            output::object(out, &to_value(&updated), FIELDS);
        }
        EnvCommand::Policy { command } => crate::runtime_policy::run(command, client, out).await?,
        EnvCommand::Delete { env } => {
            client
                .delete(&format!("{p}/environments/{}", segment(&env)))
                .await?;
            if out == Output::Table {
                output::line(&format!("environment {env} deleted"));
            }
        }
    }
    Ok(())
}

/// A typed answer as the JSON the printers take.
pub fn to_value(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
