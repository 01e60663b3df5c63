//! deployd: config -> store -> engine -> HTTP API -> wait for SIGTERM/SIGINT -> drain.

mod admin_token;
mod backup;
mod config;
mod identity;
mod notify_config;
mod otlp_config;
mod subcommand;
#[cfg(feature = "otlp")]
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use deploy_core::ExecutionModel;
use deploy_engine::{Clock, Engine, EngineConfig, SystemClock};
use deploy_exec::agent::{AgentExecutor, AgentHub};
use deploy_exec::api::{ApiExecutor, ApiExecutorConfig};
use deploy_exec::ssh::{SshExecutor, SshExecutorConfig};
use deploy_exec::winrm::{WinrmClientConfig, WinrmExecutor};
use deploy_exec::{ExecutorRegistry, ScopedSecrets};
use deploy_server::{
    BuildInfo, ServerConfig, ServerState, StoreRelay, TlsListener, load_agents, router,
    tls_acceptor,
};
use deploy_store::StoreConfig;
use tokio_util::sync::CancellationToken;

use crate::config::{Args, Config, LogFormat};

fn main() -> ExitCode {
    // Hidden (for packagers): man pages, the local subcommands' too, and completions.
    if let Some(code) = deploy_cli_docs::dispatch(|| {
        (
            <Args as clap::CommandFactory>::command(),
            vec![
                <admin_token::AdminTokenArgs as clap::CommandFactory>::command(),
                <backup::BackupArgs as clap::CommandFactory>::command(),
                <backup::RestoreArgs as clap::CommandFactory>::command(),
            ],
        )
    }) {
        return code;
    }
    // The subcommands: local actions on the database, with their own flags, that
    // serve nothing.
    match std::env::args_os().nth(1) {
        Some(a) if a == "admin-token" => return admin_token::main(std::env::args_os().skip(1)),
        Some(a) if a == "backup" => return backup::backup_main(std::env::args_os().skip(1)),
        Some(a) if a == "restore" => return backup::restore_main(std::env::args_os().skip(1)),
        _ => {}
    }
    let args = Args::parse();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let config = match Config::load(args, home.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("deployd: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("deployd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The trace exporter sends from the runtime: started after it, before any span.
    let traces = match init_tracing(&config, runtime.handle()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("deployd: {e:#}");
            return ExitCode::from(2);
        }
    };
    let traced = traces.is_some();
    let finished = runtime.block_on(async move {
        let result = run(config, traced).await;
        // Last, whichever way `run` ended (an early error included): the spans of the
        // drained requests and of the stopped job runners, flushed within a bound.
        #[cfg(feature = "otlp")]
        if let Some(traces) = traces {
            traces.shutdown().await;
        }
        #[cfg(not(feature = "otlp"))]
        let _ = traces;
        result
    });
    match finished {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("deployd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The trace exporter, when `otlp_endpoint` is set (and this build has the `otlp` feature).
#[cfg(feature = "otlp")]
type Traces = Option<telemetry::Telemetry>;
#[cfg(not(feature = "otlp"))]
type Traces = Option<std::convert::Infallible>;

/// Logs to stderr (filtered by `RUST_LOG`, default info) and, with `otlp_endpoint`,
/// spans to the OTLP collector (their own filter: deployd's spans at info).
fn init_tracing(config: &Config, runtime: &tokio::runtime::Handle) -> anyhow::Result<Traces> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    #[cfg(feature = "otlp")]
    let (traces, otel) = match &config.otlp {
        Some(otlp) => {
            let (t, layer) = telemetry::start(otlp, runtime.clone())?;
            (Some(t), Some(layer))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "otlp"))]
    let (traces, otel): (Traces, Option<tracing_subscriber::layer::Identity>) = {
        let _ = runtime;
        if config.otlp.is_some() {
            anyhow::bail!(
                "otlp_endpoint is set but this deployd was built without the `otlp` feature"
            );
        }
        (None, None)
    };
    let filter = log_filter(tracing_subscriber::EnvFilter::try_from_default_env())?;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let subscriber = tracing_subscriber::registry().with(otel);
    match config.log_format {
        LogFormat::Human => subscriber.with(logs.with_filter(filter)).init(),
        LogFormat::Json => subscriber.with(logs.json().with_filter(filter)).init(),
    }
    Ok(traces)
}

/// The log output's filter: `RUST_LOG` (default info), never the trace spans and
/// events (target [`deploy_engine::TRACE_TARGET`]): they are for the exporter only,
/// so log lines carry no span prefix of theirs, and with the exporter off nothing is
/// interested in them (each costs a callsite check).
fn log_filter(
    from_env: Result<tracing_subscriber::EnvFilter, tracing_subscriber::filter::FromEnvError>,
) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    let filter = from_env.unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let off = format!("{}=off", deploy_engine::TRACE_TARGET)
        .parse()
        .context("the trace target's log directive")?;
    Ok(filter.add_directive(off))
}

/// The executors of every execution model: SSH, WinRM, the platform APIs (ECS,
/// Nomad, Kubernetes) and agents (through `hub`, which the agent routes serve).
/// Credentials resolve only within `secret_env_prefix` and `secrets_dir`.
/// The secrets every executor (and the agent relay) resolves references with.
fn secrets(config: &Config) -> Arc<dyn deploy_exec::SecretsProvider> {
    Arc::new(ScopedSecrets::new(
        config.secret_env_prefix.clone(),
        config.secrets_dir.clone(),
    ))
}

fn executors(config: &Config, hub: &AgentHub) -> ExecutorRegistry {
    let secrets = secrets(config);
    let mut executors = ExecutorRegistry::new();
    executors.register(
        ExecutionModel::Ssh,
        Arc::new(SshExecutor::new(
            SshExecutorConfig::new(config.known_hosts.clone()),
            secrets.clone(),
        )),
    );
    executors.register(
        ExecutionModel::Winrm,
        Arc::new(WinrmExecutor::new(
            WinrmClientConfig::default(),
            secrets.clone(),
        )),
    );
    executors.register(
        ExecutionModel::Api,
        Arc::new(ApiExecutor::new(
            secrets.clone(),
            ApiExecutorConfig::default(),
        )),
    );
    executors.register(
        ExecutionModel::Agent,
        Arc::new(AgentExecutor::new(hub.clone(), secrets)),
    );
    executors
}

async fn run(config: Config, traced: bool) -> anyhow::Result<()> {
    // First: one live deployd per data directory, so its owner names one live replica.
    let _lock = identity::lock(&config.data_dir)?;
    let owner = identity::owner(config.owner.clone(), &config.data_dir)?;
    if let StoreConfig::Sqlite(sqlite) = &config.store
        && let Some(dir) = sqlite.path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory `{}`", dir.display()))?;
    }
    let store = deploy_store::open(&config.store)
        .await
        .with_context(|| format!("cannot open the database {}", config.database_display))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    // Application secrets: the key file is read (or created) before serving, and rows
    // sealed under an older key are re-sealed under the first one (a key rotation). The
    // agent relay seals stored deliveries with the same keys.
    let secret_keys = Arc::new(
        deploy_server::open_key_file(store.as_ref(), &config.secrets_key_file, clock.now())
            .await
            .context("cannot load the application secrets key")?,
    );
    let resealed = deploy_server::reseal_all(store.as_ref(), &secret_keys)
        .await
        .context("cannot re-seal application secrets under the current key")?;
    // Webhook signing keys are sealed under the same keys: re-sealed with them.
    let resealed_webhook_keys = deploy_server::reseal_webhook_keys(store.as_ref(), &secret_keys)
        .await
        .context("cannot re-seal webhook signing keys under the current key")?;
    tracing::info!(
        key_file = %config.secrets_key_file.display(),
        current_key = secret_keys.current_id(),
        resealed,
        resealed_webhook_keys,
        "application secrets key loaded"
    );

    // Agents: known from the store, active once they poll; the reaper fails the tasks
    // of an agent that stops polling.
    // Agents: any replica serves any agent; what crosses replicas goes through the store.
    let hub = AgentHub::with_relay(
        config.agent_heartbeat_timeout,
        Arc::new(StoreRelay::new(
            store.clone(),
            secrets(&config),
            secret_keys.clone(),
        )),
    );
    let agents = load_agents(store.as_ref(), &hub)
        .await
        .context("cannot load the registered agents")?;
    tracing::info!(
        agents,
        heartbeat_timeout_ms = config.agent_heartbeat_timeout.as_millis() as u64,
        "agents loaded"
    );
    let reaper_stop = CancellationToken::new();
    let reaper = hub.spawn_reaper(reaper_stop.clone());

    let executors = executors(&config, &hub);
    // `POST /plan` inspects through its own engine (same store and executors, never
    // serving jobs) whose task timeout bounds each target's inspect.
    let mut plan_config = EngineConfig::new(owner.clone());
    plan_config.task_timeout = PLAN_INSPECT_TIMEOUT;
    let plan_engine = Engine::new(store.clone(), executors.clone(), plan_config, clock.clone())
        .context("cannot start the plan engine")?;
    let mut engine_config = EngineConfig::new(owner.clone());
    engine_config.lease = config.job_lease;
    let engine = Engine::new(store.clone(), executors, engine_config, clock.clone())
        .context("cannot start the engine")?;
    let app_secrets = Arc::new(deploy_server::StoreSecrets::new(
        store.clone(),
        secret_keys.clone(),
    ));
    engine.set_app_secrets(app_secrets.clone());
    plan_engine.set_app_secrets(app_secrets);
    #[cfg(feature = "otlp")]
    if traced {
        engine.set_trace_link(Arc::new(telemetry::OtelLink));
    }
    #[cfg(not(feature = "otlp"))]
    let _ = traced;

    let preset = std::env::var("DEPLOYD_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    admin_token::first_start(store.as_ref(), &config.data_dir, preset, clock.now())
        .await
        .context("cannot create the first admin token")?;

    // Webhooks: the engine writes deliveries in its own transactions; the notifier
    // sends them, so no deploy waits on a receiver.
    let mut notify_config = deploy_server::NotifierConfig::new(owner.clone());
    notify_config.timeout = config.notify.timeout;
    notify_config.connect_timeout = config.notify.timeout.min(notify_config.connect_timeout);
    notify_config.retry = config.notify.retry;
    let notifier = deploy_server::Notifier::new(
        store.clone(),
        secret_keys.clone(),
        clock.clone(),
        notify_config,
    )
    .map_err(anyhow::Error::msg)?;

    let state = ServerState::with_agent_hub(
        engine.clone(),
        clock,
        ServerConfig {
            max_body_bytes: config.max_body_bytes,
            secure_cookies: config.tls.is_some(),
            build: BuildInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                commit: env!("DEPLOY_BUILD_COMMIT").to_owned(),
            },
            ..ServerConfig::default()
        },
        hub,
    );
    state.set_plan_engine(plan_engine);
    state.set_secret_keys(secret_keys);
    state.set_notifier_counters(notifier.counters());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // Read before serving, so a bad certificate stops the start with its path named.
    let tls = match &config.tls {
        Some(files) => Some(tls_acceptor(&files.cert, &files.key).context("cannot set up HTTPS")?),
        None => {
            if let Some(warning) = plain_http_warning(local) {
                tracing::warn!(listen = %local, "{warning}");
            }
            None
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        listen = %local,
        scheme,
        database = %config.database_display,
        owner = %owner,
        job_lease_ms = config.job_lease.as_millis() as u64,
        "deployd started"
    );

    // Shutdown order: the signal stops the listener and ends every SSE stream
    // (followers reconnect with Last-Event-ID to the next start); in-flight
    // requests get DRAIN to finish; then the engine stops: in-flight tasks get its
    // grace to reach a safe point, the rest are cancelled, and the job leases are
    // released so the next start resumes them; then the webhook notifier stops (a
    // send it cuts is sent again after a restart); last, queued trace spans are
    // flushed (bounded by telemetry::SHUTDOWN_FLUSH).
    let engine_shutdown = CancellationToken::new();
    let service = tokio::spawn({
        let engine = engine.clone();
        let shutdown = engine_shutdown.clone();
        async move { engine.serve(shutdown).await }
    });
    let notifier_stop = CancellationToken::new();
    let notifier = tokio::spawn(notifier.run(notifier_stop.clone()));
    let http_shutdown = state.shutdown_token();
    let mut server = tokio::spawn({
        let stop = http_shutdown.clone();
        async move {
            let app = router(state);
            match tls {
                Some(acceptor) => {
                    let listener = TlsListener::new(listener, acceptor)?;
                    axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<deploy_server::PeerAddr>(),
                    )
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                }
                None => {
                    axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<deploy_server::PeerAddr>(),
                    )
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                }
            }
        }
    });
    let early = tokio::select! {
        () = signal() => None,
        joined = &mut server => Some(joined),
    };
    http_shutdown.cancel();
    let result = match early {
        Some(joined) => flatten(joined),
        None => match tokio::time::timeout(DRAIN, &mut server).await {
            Ok(joined) => flatten(joined),
            Err(_) => {
                tracing::warn!(
                    drain_secs = DRAIN.as_secs(),
                    "requests still open after the drain timeout; closing them"
                );
                server.abort();
                Ok(())
            }
        },
    };
    engine_shutdown.cancel();
    if let Err(e) = service.await {
        tracing::error!(error = %e, "the engine's service loop panicked");
    }
    // After the engine: the deliveries its last transitions wrote may still go out;
    // a send cut here is sent again by the next start (its lease runs out).
    notifier_stop.cancel();
    if let Err(e) = notifier.await {
        tracing::error!(error = %e, "the webhook notifier panicked");
    }
    reaper_stop.cancel();
    if let Err(e) = reaper.await {
        tracing::error!(error = %e, "the agent reaper panicked");
    }
    // The queued spans are flushed by the caller, after this returns.
    tracing::info!("deployd stopped");
    result
}

/// deployd speaks plain HTTP: on an address other hosts can reach, bearer tokens
/// travel in clear, so it says so (the README shows a TLS proxy in front instead).
fn plain_http_warning(listen: std::net::SocketAddr) -> Option<String> {
    (!listen.ip().is_loopback()).then(|| {
        format!(
            "listening on {listen} over plain HTTP: API tokens travel in clear text to any \
             host that can reach it; put a TLS-terminating proxy in front and listen on \
             127.0.0.1, or keep the network private"
        )
    })
}

/// Bound of one target's `inspect` in `POST /plan` (a deploy step gets the engine's 600 s).
const PLAN_INSPECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long in-flight HTTP requests get to finish after the shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

fn flatten(joined: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match joined {
        Ok(r) => r.context("the HTTP server failed"),
        Err(e) => Err(anyhow::anyhow!("the HTTP server panicked: {e}")),
    }
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
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => None } } => {
            tracing::info!("SIGTERM: shutting down");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn every_execution_model_has_an_executor() {
        let args = Args::try_parse_from(["deployd"]).unwrap();
        let config = Config::load(args, Some(Path::new("/home/u"))).unwrap();
        let registry = executors(&config, &AgentHub::new(config.agent_heartbeat_timeout));
        for model in [
            ExecutionModel::Ssh,
            ExecutionModel::Winrm,
            ExecutionModel::Api,
            ExecutionModel::Agent,
        ] {
            assert!(registry.supports(model), "{model:?}");
        }
    }

    #[test]
    fn only_non_loopback_listeners_get_the_plain_http_warning() {
        for quiet in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.2:1"] {
            assert_eq!(plain_http_warning(quiet.parse().unwrap()), None, "{quiet}");
        }
        for loud in ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:80"] {
            let warning = plain_http_warning(loud.parse().unwrap()).unwrap();
            assert!(warning.contains(loud), "{warning}");
            assert!(warning.contains("plain HTTP"), "{warning}");
        }
    }
}
