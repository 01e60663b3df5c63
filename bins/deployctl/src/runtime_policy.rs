//! `deployctl env policy`: show and replace an environment's runtime policy (what its containers may get from their hosts; replacing it needs an admin token).

use std::path::PathBuf;

use clap::Subcommand;
use deploy_api::API_PREFIX;
use deploy_core::RuntimePolicy;
use serde_json::{Value, json};

use crate::client::{Client, segment};
use crate::exit::{CliError, USAGE};
use crate::output::{self, Output};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show what an environment's containers may get from their hosts.
    Show {
        /// The environment's name or id.
        env: String,
    },
    /// Replace an environment's runtime policy (admin). The flags, or `--file`, are the
    /// whole policy: what they do not name is refused (no flag at all: the default,
    /// which refuses everything).
    #[command(after_help = "Examples:
  deployctl env policy set prod --bind-prefix /srv/app --cap NET_BIND_SERVICE
  deployctl env policy set ci --privileged --host-namespace network
  deployctl env policy set prod --file policy.json
  deployctl env policy set prod          (back to the default: refuse all)")]
    Set {
        /// The environment's name or id.
        env: String,
        /// The policy as a JSON object (the body of PUT /api/v1/environments/{id}/runtime-policy).
        #[arg(long, conflicts_with_all = ["privileged", "host_namespaces", "capabilities", "devices", "unconfined", "bind_prefixes", "docker_socket", "other_containers"])]
        file: Option<PathBuf>,
        /// Allow `privileged: true`.
        #[arg(long)]
        privileged: bool,
        /// Allow a host namespace: network, pid, ipc, uts, userns or cgroup (repeatable).
        #[arg(long = "host-namespace", value_name = "NAMESPACE")]
        host_namespaces: Vec<String>,
        /// Allow `cap_add` of a capability, such as NET_ADMIN; ALL allows any (repeatable).
        #[arg(long = "cap", value_name = "CAPABILITY")]
        capabilities: Vec<String>,
        /// Allow host devices (`devices`, `device_cgroup_rules`, `gpus`).
        #[arg(long)]
        devices: bool,
        /// Allow `security_opt` entries other than `no-new-privileges`.
        #[arg(long)]
        unconfined: bool,
        /// Allow bind mounts from this absolute host directory and below (repeatable).
        #[arg(long = "bind-prefix", value_name = "DIR")]
        bind_prefixes: Vec<String>,
        /// Allow a bind of the Docker (or containerd, podman) socket, or of a directory holding it.
        #[arg(long)]
        docker_socket: bool,
        /// Allow `volumes_from: container:…` and `network_mode`/`pid`/`ipc: container:…`.
        #[arg(long)]
        other_containers: bool,
    },
}

pub async fn run(command: PolicyCommand, client: &Client, out: Output) -> Result<(), CliError> {
    match command {
        PolicyCommand::Show { env } => {
            let policy: RuntimePolicy = client.get(&path(&env)).await?;
            print(out, &policy);
        }
        PolicyCommand::Set {
            env,
            file,
            privileged,
            host_namespaces,
            capabilities,
            devices,
            unconfined,
            bind_prefixes,
            docker_socket,
            other_containers,
        } => {
            let (text, origin) = match &file {
                Some(file) => (
                    std::fs::read_to_string(file).map_err(|e| {
                        CliError::new(USAGE, format!("--file `{}`: {e}", file.display()))
                    })?,
                    format!("--file `{}`", file.display()),
                ),
                None => (
                    json!({
                        "privileged": privileged,
                        "host_namespaces": host_namespaces,
                        "capabilities": capabilities,
                        "devices": devices,
                        "unconfined": unconfined,
                        "bind_prefixes": bind_prefixes,
                        "docker_socket": docker_socket,
                        "other_containers": other_containers,
                    })
                    .to_string(),
                    "the flags".to_owned(),
                ),
            };
            let policy = parse(&text).map_err(|e| {
                CliError::new(USAGE, format!("{origin} are not a runtime policy: {e}"))
            })?;
            let stored: RuntimePolicy = client.put(&path(&env), &policy).await?;
            print(out, &stored);
        }
    }
    Ok(())
}

fn path(env: &str) -> String {
    format!("{API_PREFIX}/environments/{}/runtime-policy", segment(env))
}

/// Reads a policy, naming the field at fault (`capabilities[0]: …`).
fn parse(text: &str) -> Result<RuntimePolicy, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })
}

fn print(out: Output, policy: &RuntimePolicy) {
    let value = serde_json::to_value(policy).unwrap_or(Value::Null);
    if out != Output::Table {
        output::object(out, &value, &[]);
        return;
    }
    let Some(fields) = value.as_object() else {
        return;
    };
    let width = fields.keys().map(String::len).max().unwrap_or(0);
    for (key, v) in fields {
        let shown = match v {
            Value::Array(items) if items.is_empty() => "(none)".to_owned(),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        };
        output::line(&format!("{key:<width$}  {shown}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_policy_is_named_before_anything_is_sent() {
        for (text, named) in [
            (r#"{"capabilities": ["NET_ADMINN"]}"#, "NET_ADMINN"),
            (r#"{"bind_prefixes": ["srv"]}"#, "bind_prefixes[0]"),
            (r#"{"bind_prefixes": ["/srv/../etc"]}"#, "/srv/../etc"),
            (r#"{"privilege": true}"#, "privilege"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(named), "{text}: {err}");
        }
        assert_eq!(parse("{}"), Ok(RuntimePolicy::default()));
    }
}
