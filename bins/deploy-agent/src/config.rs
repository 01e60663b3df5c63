//! deploy-agent's configuration: TOML file, then environment and flags (clap; flags win over env), validated at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use deploy_agent::client::Secret;
use deploy_api::agent::{AgentCapability, MAX_POLL_WAIT_MS};
use deploy_core::{HttpUrl, Labels, Name};
use serde::Deserialize;

/// The environment variable holding the bootstrap token (never a flag: it would show in `ps`).
pub const BOOTSTRAP_TOKEN_ENV: &str = "DEPLOY_AGENT_BOOTSTRAP_TOKEN";

/// deploy-agent: runs deployments on this host for deployd.
///
/// It connects out to deployd (no inbound port), registers once with a bootstrap token
/// (from DEPLOY_AGENT_BOOTSTRAP_TOKEN or --bootstrap-token-file) and keeps its credential
/// in <state-dir>/credentials.json; then it long-polls for tasks and runs them on the
/// local Docker Engine and Compose CLI.
///
/// Examples:
///   DEPLOY_AGENT_BOOTSTRAP_TOKEN=dpb_… deploy-agent --server https://deployd:8443 --name web-1
///   deploy-agent --config /etc/deploy-agent/agent.toml
///   deploy-agent --server https://deployd:8443 --name web-1 --label zone=a --ca-file /etc/deploy-agent/ca.pem
///   deploy-agent --server https://deployd-a:8443,https://deployd-b:8443 --name web-1
#[derive(Debug, Parser)]
#[command(
    name = "deploy-agent",
    version = env!("DEPLOY_BUILD_VERSION"),
    verbatim_doc_comment
)]
pub struct Args {
    /// TOML configuration file (keys: server, name, state_dir, labels, capabilities, ca_file, docker_socket, log_format, poll_wait_ms, bootstrap_token_file, allow_insecure_http).
    #[arg(long, env = "DEPLOY_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// deployd's base URL, http:// or https://. Several (repeated, or comma-separated):
    /// replicas sharing one database, tried in order; the agent fails over to the next
    /// one when a server does not answer or answers 5xx, and stays on one that answers.
    #[arg(long, env = "DEPLOY_AGENT_SERVER", value_delimiter = ',')]
    pub server: Vec<String>,
    /// This agent's name (unique among agents): [a-z0-9][a-z0-9_.-]{0,62}.
    #[arg(long, env = "DEPLOY_AGENT_NAME")]
    pub name: Option<String>,
    /// Where credentials.json and the journal live (default /var/lib/deploy-agent).
    #[arg(long, env = "DEPLOY_AGENT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// A label `key=value` this agent expects (repeatable; env: comma-separated): each must
    /// be among its bootstrap token's labels, else registration is refused. The agent's
    /// labels are the token's (set by the server), whatever is given here.
    #[arg(long = "label", env = "DEPLOY_AGENT_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// What this host serves: docker, compose (comma-separated). Default: detected (the
    /// Docker socket answers: docker; docker-compose on PATH as well: compose).
    #[arg(
        long,
        env = "DEPLOY_AGENT_CAPABILITIES",
        value_delimiter = ',',
        value_enum
    )]
    pub capabilities: Vec<Capability>,
    /// PEM file of a CA to trust for deployd's TLS certificate (self-signed setups).
    #[arg(long, env = "DEPLOY_AGENT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The Docker Engine's unix socket (default /var/run/docker.sock).
    #[arg(long, env = "DEPLOY_AGENT_DOCKER_SOCKET")]
    pub docker_socket: Option<PathBuf>,
    /// Log format (on stderr).
    #[arg(long, env = "DEPLOY_AGENT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Rotate the credential at start (the new one is stored), then run.
    #[arg(long)]
    pub rotate_credential: bool,
    /// How long one poll waits for a task, in ms (default min(25000, heartbeat timeout / 3)).
    #[arg(long, env = "DEPLOY_AGENT_POLL_WAIT_MS")]
    pub poll_wait_ms: Option<u64>,
    /// File holding the one-time bootstrap token (only read when no credentials are stored).
    #[arg(long, env = "DEPLOY_AGENT_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Allow an http:// server that is not on loopback (the bootstrap token, the agent
    /// credential and registry passwords then travel in clear): for trusted networks only.
    #[arg(long, env = "DEPLOY_AGENT_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Docker,
    Compose,
}

impl From<Capability> for AgentCapability {
    fn from(c: Capability) -> Self {
        match c {
            Capability::Docker => Self::Docker,
            Capability::Compose => Self::Compose,
        }
    }
}

/// The file's keys; every one optional, unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// `server = "https://…"` or `server = ["https://…", "https://…"]`.
    #[serde(default, deserialize_with = "one_or_many")]
    server: Option<Vec<String>>,
    name: Option<String>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    capabilities: Option<Vec<Capability>>,
    ca_file: Option<PathBuf>,
    docker_socket: Option<PathBuf>,
    log_format: Option<LogFormat>,
    poll_wait_ms: Option<u64>,
    bootstrap_token_file: Option<PathBuf>,
    allow_insecure_http: Option<bool>,
}

/// A string or a list of strings (the file's `server`): the list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a URL or a list of URLs")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element::<String>()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Visitor).map(Some)
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// At least one, each validated, no two the same.
    pub servers: Vec<String>,
    pub name: Name,
    pub state_dir: PathBuf,
    pub labels: Labels,
    /// `None`: detect.
    pub capabilities: Option<Vec<AgentCapability>>,
    pub ca_file: Option<PathBuf>,
    pub docker_socket: PathBuf,
    pub log_format: LogFormat,
    pub rotate_credential: bool,
    pub poll_wait_ms: Option<u64>,
    pub bootstrap_token: Option<Secret>,
}

/// Reads the bootstrap token from `file`, else from `env_token`; an empty one is an error.
fn bootstrap_token(
    file: Option<&Path>,
    env_token: Option<String>,
) -> anyhow::Result<Option<Secret>> {
    let token = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| {
                    format!("cannot read the bootstrap token file `{}`", path.display())
                })?
                .trim()
                .to_owned(),
        ),
        None => env_token.map(|t| t.trim().to_owned()),
    };
    match token {
        Some(t) if t.is_empty() => bail!(
            "the bootstrap token is empty; set {BOOTSTRAP_TOKEN_ENV} or --bootstrap-token-file to the token from `POST /api/v1/agents/bootstrap-tokens`"
        ),
        Some(t) => Ok(Some(Secret::new(t))),
        None => Ok(None),
    }
}

/// Validates each server URL (naming a bad one) and refuses duplicates; at least one.
fn servers_checked(servers: Vec<String>, allow_insecure_http: bool) -> anyhow::Result<Vec<String>> {
    if servers.is_empty() {
        bail!(
            "no server: pass --server https://deployd.example:8443 (or DEPLOY_AGENT_SERVER, or `server` in the config file)"
        );
    }
    let mut checked: Vec<String> = Vec::with_capacity(servers.len());
    for server in servers {
        let server = server.trim().trim_end_matches('/').to_owned();
        let url = HttpUrl::parse(&server).with_context(|| {
            format!(
                "server `{server}` is invalid; expected http://host[:port] or https://host[:port] (several: comma-separated)"
            )
        })?;
        if !url.is_https() && !url.is_loopback() && !allow_insecure_http {
            bail!(
                "server `{server}` is plain http on a non-loopback host: the bootstrap token, the agent credential and registry passwords would travel in clear; use https:// (with --ca-file for a private CA), or accept the risk with --allow-insecure-http (DEPLOY_AGENT_ALLOW_INSECURE_HTTP=true, or `allow_insecure_http = true` in the config file)"
            );
        }
        if checked.contains(&server) {
            bail!("server `{server}` is listed twice; expected each server once");
        }
        checked.push(server);
    }
    Ok(checked)
}

impl Config {
    /// Merges file < env < flags (clap already put env under flags) and validates.
    /// `env_token` is `DEPLOY_AGENT_BOOTSTRAP_TOKEN`.
    pub fn load(args: Args, env_token: Option<String>) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file `{}`", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config file `{}`", path.display()))?
            }
            None => FileConfig::default(),
        };
        let servers = if args.server.is_empty() {
            file.server.unwrap_or_default()
        } else {
            args.server
        };
        let allow_insecure_http =
            args.allow_insecure_http || file.allow_insecure_http.unwrap_or(false);
        let servers = servers_checked(servers, allow_insecure_http)?;
        let Some(name) = args.name.or(file.name) else {
            bail!("no name: pass --name (or DEPLOY_AGENT_NAME, or `name` in the config file)");
        };
        let name =
            Name::parse(&name).map_err(|e| anyhow::anyhow!("name `{name}` is invalid: {e}"))?;
        let mut labels = file.labels;
        for l in &args.labels {
            let Some((k, v)) = l.split_once('=') else {
                bail!("label `{l}` is invalid; expected key=value such as zone=eu-1");
            };
            labels.insert(k.to_owned(), v.to_owned());
        }
        let labels = Labels::new(labels).map_err(|e| anyhow::anyhow!("invalid label: {e}"))?;
        let capabilities = if args.capabilities.is_empty() {
            file.capabilities
        } else {
            Some(args.capabilities)
        };
        let capabilities = match capabilities {
            Some(c) if c.is_empty() => bail!(
                "capabilities is empty; expected docker, compose or both (or leave it out to detect)"
            ),
            Some(c) => {
                let mut c: Vec<AgentCapability> = c.into_iter().map(Into::into).collect();
                c.sort();
                c.dedup();
                Some(c)
            }
            None => None,
        };
        let poll_wait_ms = args.poll_wait_ms.or(file.poll_wait_ms);
        if let Some(ms) = poll_wait_ms
            && !(100..=MAX_POLL_WAIT_MS).contains(&ms)
        {
            bail!("poll_wait_ms is {ms}; expected 100 to {MAX_POLL_WAIT_MS}");
        }
        let ca_file = args.ca_file.or(file.ca_file);
        if let Some(ca) = &ca_file
            && !ca.is_file()
        {
            bail!("ca_file `{}` is not a readable file", ca.display());
        }
        let token_file = args.bootstrap_token_file.or(file.bootstrap_token_file);
        Ok(Self {
            servers,
            name,
            state_dir: args
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from("/var/lib/deploy-agent")),
            labels,
            capabilities,
            ca_file,
            docker_socket: args
                .docker_socket
                .or(file.docker_socket)
                .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock")),
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            rotate_credential: args.rotate_credential,
            poll_wait_ms,
            bootstrap_token: bootstrap_token(token_file.as_deref(), env_token)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(argv: &[&str], file: Option<&str>) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let mut argv: Vec<String> = std::iter::once("deploy-agent")
            .chain(argv.iter().copied())
            .map(str::to_owned)
            .collect();
        if let Some(text) = file {
            let path = dir.path().join("agent.toml");
            std::fs::write(&path, text).unwrap();
            argv.push("--config".to_owned());
            argv.push(path.display().to_string());
        }
        Config::load(Args::try_parse_from(argv).unwrap(), None)
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_apply() {
        let c = load(
            &["--name", "web-1", "--label", "zone=b", "--capabilities", "docker"],
            Some("server = \"https://deployd:8443/\"\nname = \"other\"\nlabels = { zone = \"a\", rack = \"r1\" }\npoll_wait_ms = 500\n"),
        )
        .unwrap();
        assert_eq!(c.servers, ["https://deployd:8443"]);
        assert_eq!(c.name.as_str(), "web-1");
        assert_eq!(c.labels.as_map().get("zone").map(String::as_str), Some("b"));
        assert_eq!(
            c.labels.as_map().get("rack").map(String::as_str),
            Some("r1")
        );
        assert_eq!(c.capabilities, Some(vec![AgentCapability::Docker]));
        assert_eq!(c.poll_wait_ms, Some(500));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/deploy-agent"));
        assert_eq!(c.docker_socket, PathBuf::from("/var/run/docker.sock"));
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.bootstrap_token.is_none());
    }

    #[test]
    fn bad_values_are_named() {
        let err =
            |argv: &[&str], file: Option<&str>| format!("{:#}", load(argv, file).unwrap_err());
        assert!(err(&["--server", "ftp://x", "--name", "a"], None).contains("ftp://x"));
        assert!(
            err(
                &["--server", "http://127.0.0.1", "--name", "Bad Name"],
                None
            )
            .contains("Bad Name")
        );
        assert!(
            err(
                &[
                    "--server",
                    "http://127.0.0.1",
                    "--name",
                    "a",
                    "--label",
                    "novalue"
                ],
                None
            )
            .contains("novalue")
        );
        assert!(
            err(
                &[
                    "--server",
                    "http://127.0.0.1",
                    "--name",
                    "a",
                    "--poll-wait-ms",
                    "99999"
                ],
                None
            )
            .contains("99999")
        );
        assert!(err(&["--name", "a"], None).contains("no server"));
        assert!(err(&[], Some("server = \"http://127.0.0.1\"\nnmae = \"a\"\n")).contains("nmae"));
    }

    #[test]
    fn several_servers_from_flags_env_style_lists_or_the_file() {
        let servers = |argv: &[&str], file: Option<&str>| load(argv, file).unwrap().servers;
        assert_eq!(
            servers(
                &[
                    "--name",
                    "a",
                    "--server",
                    "https://a:1/,https://b:2",
                    "--server",
                    "https://c"
                ],
                None
            ),
            ["https://a:1", "https://b:2", "https://c"]
        );
        assert_eq!(
            servers(
                &["--name", "a"],
                Some("server = [\"https://a\", \"https://b/\"]\n")
            ),
            ["https://a", "https://b"]
        );
        assert_eq!(
            servers(&["--name", "a"], Some("server = \"https://a\"\n")),
            ["https://a"]
        );
        // Flags replace the file's list.
        assert_eq!(
            servers(
                &["--name", "a", "--server", "https://c"],
                Some("server = [\"https://a\", \"https://b\"]\n")
            ),
            ["https://c"]
        );
        let err =
            |argv: &[&str], file: Option<&str>| format!("{:#}", load(argv, file).unwrap_err());
        let e = err(&["--name", "a", "--server", "https://a,ftp://b"], None);
        assert!(
            e.contains("ftp://b") && e.contains("expected http://"),
            "{e}"
        );
        let e = err(&["--name", "a", "--server", "https://a,,https://b"], None);
        assert!(e.contains("server `` is invalid"), "{e}");
        let e = err(&["--name", "a", "--server", "https://a,https://a/"], None);
        assert!(e.contains("`https://a` is listed twice"), "{e}");
        let e = err(
            &["--name", "a", "--server", "https://a,http://10.0.0.1"],
            None,
        );
        assert!(
            e.contains("http://10.0.0.1") && e.contains("plain http"),
            "{e}"
        );
        let e = err(&["--name", "a"], Some("server = [\"https://a\", 3]\n"));
        assert!(e.contains("server"), "{e}");
        let e = err(&["--name", "a"], Some("server = []\n"));
        assert!(e.contains("no server"), "{e}");
    }

    #[test]
    fn plain_http_is_refused_off_loopback_unless_allowed() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://localhost:80",
            "http://[::1]:8080",
            "https://deployd.example",
        ] {
            assert!(load(&["--server", ok, "--name", "a"], None).is_ok(), "{ok}");
        }
        let err = format!(
            "{:#}",
            load(
                &["--server", "http://deployd.example:8080", "--name", "a"],
                None
            )
            .unwrap_err()
        );
        assert!(err.contains("http://deployd.example:8080"), "{err}");
        assert!(
            err.contains("https://") && err.contains("--allow-insecure-http"),
            "{err}"
        );
        assert!(err.contains("allow_insecure_http"), "{err}");
        assert!(load(&["--server", "http://10.0.0.1", "--name", "a"], None).is_err());
        let flag = &[
            "--server",
            "http://deployd.example",
            "--name",
            "a",
            "--allow-insecure-http",
        ];
        assert!(load(flag, None).is_ok());
        assert!(
            load(
                &["--name", "a"],
                Some("server = \"http://10.0.0.1\"\nallow_insecure_http = true\n")
            )
            .is_ok()
        );
    }

    #[test]
    fn the_bootstrap_token_comes_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "dpb_fromfile\n").unwrap();
        assert_eq!(
            bootstrap_token(Some(&path), Some("dpb_env".to_owned())).unwrap(),
            Some(Secret::new("dpb_fromfile"))
        );
        assert_eq!(
            bootstrap_token(None, Some("dpb_env".to_owned())).unwrap(),
            Some(Secret::new("dpb_env"))
        );
        assert!(bootstrap_token(None, Some(" ".to_owned())).is_err());
        assert_eq!(bootstrap_token(None, None).unwrap(), None);
    }
}
