//! deploy-agent: config -> detect the host's capabilities -> register or load credentials -> poll and run tasks -> drain on SIGTERM.

mod config;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use deploy_agent::compose::{ComposeHost, ComposeTool};
use deploy_agent::docker::{DockerConfig, DockerHost};
use deploy_agent::{Agent, AgentConfig, Runtime};
use deploy_api::agent::AgentCapability;
use tokio_util::sync::CancellationToken;

use crate::config::{Args, BOOTSTRAP_TOKEN_ENV, Config, LogFormat};

/// How long running tasks may finish after SIGTERM before they are cancelled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    // Hidden (for packagers): the man page and completions.
    if let Some(code) =
        deploy_cli_docs::dispatch(|| (<Args as clap::CommandFactory>::command(), vec![]))
    {
        return code;
    }
    let args = Args::parse();
    let env_token = std::env::var(BOOTSTRAP_TOKEN_ENV).ok();
    let config = match Config::load(args, env_token) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("deploy-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("deploy-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("deploy-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The executors this host has: the asked capabilities must all be present; without a
/// list, whatever answers is used (and at least one must).
async fn executors(config: &Config) -> anyhow::Result<Runtime> {
    let socket = &config.docker_socket;
    let docker = DockerHost::connect(socket, DockerConfig::default()).await;
    let compose = ComposeTool::detect().await;
    let wants = |c: AgentCapability| config.capabilities.as_ref().map(|list| list.contains(&c));
    let docker = match (docker, wants(AgentCapability::Docker)) {
        (Ok(d), Some(true) | None) => Some(d),
        (Ok(_), Some(false)) => None,
        (Err(e), Some(true)) => anyhow::bail!("capability docker: {}", e.message),
        (Err(e), None) => {
            // Capabilities are fixed at registration (the protocol has no update): an
            // agent first started while Docker was down stays without docker.
            tracing::warn!(
                socket = %socket.display(),
                "no docker capability: the Docker Engine on `{}` does not answer ({}); capabilities are set when the agent registers and are not updated later: if Docker should be here, fix it and register again (see docs/agent.md, \"Capabilities\")",
                socket.display(),
                e.message
            );
            None
        }
        (Err(_), Some(false)) => None,
    };
    // Compose also needs the engine: the project's containers are read through it.
    let compose = match (compose, &docker, wants(AgentCapability::Compose)) {
        (Some(p), Some(d), Some(true) | None) => Some(ComposeHost::new(p, d.client().clone())),
        (None, _, Some(true)) => {
            anyhow::bail!(
                "capability compose: neither `docker-compose` on PATH nor the `docker compose` plugin answers"
            )
        }
        (Some(_), None, Some(true)) => anyhow::bail!(
            "capability compose: the Docker Engine on `{}` does not answer (compose needs it too)",
            socket.display()
        ),
        _ => None,
    };
    let runtime = Runtime::new(docker, compose);
    if runtime.capabilities().is_empty() {
        anyhow::bail!(
            "this host has neither capability: the Docker Engine on `{}` does not answer and no Compose CLI (`docker-compose` or `docker compose`) is usable",
            socket.display()
        );
    }
    Ok(runtime)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            signal().await;
            stop.cancel();
        }
    });
    let runtime = executors(&config).await?;
    let capabilities = runtime.capabilities();
    tracing::info!(
        name = %config.name, servers = %config.servers.join(","), state_dir = %config.state_dir.display(),
        ?capabilities, "deploy-agent starting"
    );
    let agent_config = AgentConfig {
        servers: config.servers.clone(),
        name: config.name.clone(),
        state_dir: config.state_dir.clone(),
        labels: config.labels.clone(),
        capabilities,
        ca_file: config.ca_file.clone(),
        poll_wait_ms: config.poll_wait_ms,
        bootstrap_token: config.bootstrap_token.clone(),
        rotate_credential: config.rotate_credential,
        shutdown_grace: SHUTDOWN_GRACE,
    };
    let Some(agent) = Agent::connect(agent_config, runtime, &stop).await? else {
        tracing::info!("stopped before the agent was connected");
        return Ok(());
    };
    agent.run(stop).await?;
    tracing::info!("deploy-agent stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            None
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => None } } => {
            tracing::info!("SIGTERM: stopping");
        }
    }
}
