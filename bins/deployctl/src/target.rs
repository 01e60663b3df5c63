//! `deployctl target add`: the target document from flags (SSH connection, health check, labels) or from `--file`, validated before it is sent.

use std::path::PathBuf;

use deploy_api::CreateTargetRequest;
use deploy_core::{EnvironmentId, Target, TargetId, Timestamp};
use serde_json::{Value, json};

use crate::exit::{CliError, USAGE};

/// `deployctl target add`: an SSH Docker host from flags, or any target from `--file`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  deployctl target add --env staging host-1 --host 10.0.0.5 --user deploy --key-ref env:SSH_KEY \\
    --health-check command --health-command 'docker exec web wget -q -O- http://127.0.0.1:8080/health' \\
    --health-retries 3 --health-interval 500ms --label deploy.container-prefix=prod-
  deployctl target add --env staging host-2 --host 10.0.0.6 --user deploy --key-ref env:SSH_KEY \\
    --health-check http --health-port 8080 --health-path /health
  deployctl target add --env staging --file target.json   # the API's document (see `target list --output json`)")]
pub struct AddArgs {
    /// The environment's name or id.
    #[arg(long)]
    pub env: String,
    /// The target's name (with the flags; `--file` carries its own).
    #[arg(required_unless_present = "file")]
    name: Option<String>,
    /// A JSON file holding the API's target document (`POST /api/v1/environments/{id}/targets`):
    /// name, target_type, connection, health_endpoint, health_check, labels.
    #[arg(long, conflicts_with_all = ["name", "host", "user", "key_ref", "health_check", "label"])]
    file: Option<PathBuf>,
    #[arg(long, required_unless_present = "file")]
    host: Option<String>,
    #[arg(long, default_value_t = 22)]
    port: u16,
    #[arg(long, required_unless_present = "file")]
    user: Option<String>,
    /// Where the private key comes from, e.g. `env:SSH_KEY` or `file:/path`.
    #[arg(long, required_unless_present = "file")]
    key_ref: Option<String>,
    /// Directory on the target for the deploy's files [default: `~/.local/share/deploy/<name>`
    /// of the login user, created 0700].
    #[arg(long)]
    work_dir: Option<String>,
    /// `known_hosts` (deployd's file), `accept_new`, `file:/path/known_hosts` or a pinned `SHA256:…` fingerprint.
    #[arg(long, default_value = "known_hosts")]
    host_key: String,
    /// A label `key=value` (repeatable), e.g. `deploy.container-prefix=prod-`.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// The health check run after each deploy: `http`, `tcp` or `command`.
    #[arg(long, value_parser = ["http", "tcp", "command"])]
    health_check: Option<String>,
    /// http, tcp: a fixed base URL to probe instead of the deployed instance (a load
    /// balancer), e.g. `http://10.0.0.5:8080`. Without it, the check aims at the
    /// address where the new container publishes `--health-port`.
    #[arg(long, requires = "health_check")]
    health_endpoint: Option<String>,
    /// http: the path to GET [default: /health].
    #[arg(long, requires = "health_check")]
    health_path: Option<String>,
    /// http: the status that means healthy [default: 200].
    #[arg(long, requires = "health_check")]
    health_status: Option<u16>,
    /// http: a substring the body must contain.
    #[arg(long, requires = "health_check")]
    health_body: Option<String>,
    /// http, tcp: the container port to probe where the new instance publishes it (for
    /// http, default: its only published port); with --health-endpoint, tcp connects to
    /// this port on the endpoint's host.
    #[arg(long, requires = "health_check")]
    health_port: Option<u16>,
    /// command: run the command inside the new container (`docker exec`; docker_host).
    #[arg(long, requires = "health_command")]
    health_in_container: bool,
    /// command: the program and its arguments, run on the target through its connection:
    /// words split on spaces, or a JSON array of strings (`'["sh", "-c", "…"]'`).
    #[arg(long, requires = "health_check")]
    health_command: Option<String>,
    /// Attempts before the target is declared unhealthy [default: 3].
    #[arg(long, requires = "health_check")]
    health_retries: Option<u32>,
    /// Pause between attempts, e.g. `500ms`, `2s` [default: 1s].
    #[arg(long, requires = "health_check")]
    health_interval: Option<String>,
    /// Limit of one attempt, e.g. `5s` [default: 5s].
    #[arg(long, requires = "health_check")]
    health_timeout: Option<String>,
    /// How long the target must stay healthy after its first success, e.g. `30s` [default: 0].
    #[arg(long, requires = "health_check")]
    health_min_healthy: Option<String>,
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::new(USAGE, message)
}

/// The validated request body of `target add`.
pub fn request(args: &AddArgs) -> Result<CreateTargetRequest, CliError> {
    let (document, source) = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("cannot read `{}`: {e}", path.display())))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| usage(format!("`{}` is not a JSON document: {e}", path.display())))?;
            (value, format!("`{}`", path.display()))
        }
        None => (from_flags(args)?, "the target".to_owned()),
    };
    let request: CreateTargetRequest =
        serde_path_to_error::deserialize(&document).map_err(|e| {
            let field = e.path().to_string();
            if field == "." {
                usage(format!("{source} is invalid: {}", e.inner()))
            } else {
                usage(format!("{source} is invalid at `{field}`: {}", e.inner()))
            }
        })?;
    // The environment may be named; the check below needs only some id.
    let environment_id = EnvironmentId::parse(&args.env)
        .unwrap_or_else(|_| EnvironmentId::from_parts(Timestamp::UNIX_EPOCH, [0; 10]));
    // The rules that span fields (model for the type, an http check needs an endpoint), as the server checks them.
    let target = Target {
        id: TargetId::from_parts(Timestamp::UNIX_EPOCH, [0; 10]),
        environment_id,
        name: request.name.clone(),
        target_type: request.target_type,
        connection: request.connection.clone(),
        health_endpoint: request.health_endpoint.clone(),
        health_check: request.health_check.clone(),
        labels: request.labels.clone(),
        disabled: false,
        version: 0,
        created_at: Timestamp::UNIX_EPOCH,
    };
    target
        .validate()
        .map_err(|e| usage(format!("{source} is invalid: {e}")))?;
    Ok(request)
}

/// The API document from the flags (an SSH docker host).
fn from_flags(args: &AddArgs) -> Result<Value, CliError> {
    let host_key = if let Some(fp) = args.host_key.strip_prefix("SHA256:") {
        json!({"mode": "pinned", "fingerprint": format!("SHA256:{fp}")})
    } else if let Some(path) = args.host_key.strip_prefix("file:") {
        json!({"mode": "known_hosts_file", "path": path})
    } else if ["known_hosts", "accept_new"].contains(&args.host_key.as_str()) {
        json!({"mode": args.host_key})
    } else {
        return Err(usage(format!(
            "--host-key `{}` is not a policy; expected known_hosts, accept_new, file:/path or SHA256:<fingerprint>",
            args.host_key
        )));
    };
    let mut body = json!({
        "name": args.name,
        "target_type": "docker_host",
        "connection": {"model": "ssh", "host": args.host, "port": args.port, "user": args.user,
                       "credential_ref": args.key_ref, "host_key": host_key},
    });
    if let Some(dir) = &args.work_dir {
        body["connection"]["work_dir"] = json!(dir);
    }
    let mut labels = serde_json::Map::new();
    for label in &args.label {
        match label.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                if labels.insert(k.to_owned(), json!(v)).is_some() {
                    return Err(usage(format!("--label `{k}` is given twice")));
                }
            }
            _ => {
                return Err(usage(format!("--label `{label}` is not `key=value`")));
            }
        }
    }
    body["labels"] = Value::Object(labels);
    if let Some(endpoint) = &args.health_endpoint {
        body["health_endpoint"] = json!(endpoint);
    }
    if let Some(kind) = &args.health_check {
        body["health_check"] = health_check(args, kind)?;
    }
    Ok(body)
}

/// The `health_check` object of the document.
fn health_check(args: &AddArgs, kind: &str) -> Result<Value, CliError> {
    let only = |flag: &str, set: bool, for_kind: &str| {
        if set && kind != for_kind {
            Err(usage(format!(
                "{flag} applies to --health-check {for_kind}, not {kind}"
            )))
        } else {
            Ok(())
        }
    };
    only(
        "--health-endpoint",
        args.health_endpoint.is_some() && kind == "command",
        "http",
    )?;
    only("--health-path", args.health_path.is_some(), "http")?;
    only("--health-status", args.health_status.is_some(), "http")?;
    only("--health-body", args.health_body.is_some(), "http")?;
    only(
        "--health-port",
        args.health_port.is_some() && kind == "command",
        "tcp",
    )?;
    only("--health-command", args.health_command.is_some(), "command")?;
    let mut check = json!({"type": kind});
    match kind {
        "http" => {
            if let Some(port) = args.health_port {
                check["port"] = json!(port);
            }
            if let Some(path) = &args.health_path {
                check["path"] = json!(path);
            }
            if let Some(status) = args.health_status {
                check["expected_status"] = json!(status);
            }
            if let Some(body) = &args.health_body {
                check["expected_body"] = json!(body);
            }
        }
        "tcp" => {
            let port = args
                .health_port
                .ok_or_else(|| usage("--health-check tcp needs --health-port"))?;
            check["port"] = json!(port);
        }
        _ => {
            let command = args
                .health_command
                .as_deref()
                .ok_or_else(|| usage("--health-check command needs --health-command"))?;
            check["command"] = json!(command_words(command)?);
            if args.health_in_container {
                check["in_container"] = json!(true);
            }
        }
    }
    let mut config = json!({"check": check});
    if let Some(n) = args.health_retries {
        config["retries"] = json!(n);
    }
    for (flag, value, key) in [
        ("--health-interval", &args.health_interval, "interval_ms"),
        ("--health-timeout", &args.health_timeout, "timeout_ms"),
        (
            "--health-min-healthy",
            &args.health_min_healthy,
            "min_healthy_time_ms",
        ),
    ] {
        if let Some(v) = value {
            config[key] = json!(duration_ms(flag, v)?);
        }
    }
    Ok(config)
}

/// `--health-command`: a JSON array of strings, or words split on whitespace.
fn command_words(command: &str) -> Result<Vec<String>, CliError> {
    if command.trim_start().starts_with('[') {
        serde_json::from_str(command).map_err(|e| {
            usage(format!(
                "--health-command `{command}` is not a JSON array of strings: {e}"
            ))
        })
    } else {
        Ok(command.split_whitespace().map(str::to_owned).collect())
    }
}

/// `500ms`, `2s`, `1m` in milliseconds.
fn duration_ms(flag: &str, value: &str) -> Result<u64, CliError> {
    let bad = || {
        usage(format!(
            "{flag} `{value}` is not a duration; expected a whole number with ms, s or m, e.g. 500ms or 2s"
        ))
    };
    let (number, factor) = if let Some(n) = value.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = value.strip_suffix('m') {
        (n, 60_000)
    } else {
        return Err(bad());
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests;

/// The API path of target `target` of environment `env` (names or ids).
pub fn path(env: &str, target: &str) -> String {
    format!(
        "{}/environments/{}/targets/{}",
        deploy_api::API_PREFIX,
        crate::client::segment(env),
        crate::client::segment(target)
    )
}

/// Disables or enables a target: read, changed, written back with its version.
pub async fn set_disabled(
    client: &crate::client::Client,
    env: &str,
    target: &str,
    disabled: bool,
) -> Result<Value, CliError> {
    let path = path(env, target);
    let current: Target = client.get(&path).await?;
    let request = deploy_api::UpdateTargetRequest {
        name: current.name.clone(),
        connection: current.connection.clone(),
        health_endpoint: current.health_endpoint.clone(),
        health_check: current.health_check.clone(),
        labels: current.labels.clone(),
        disabled,
        version: Some(current.version),
    };
    client.put(&path, &request).await
}
