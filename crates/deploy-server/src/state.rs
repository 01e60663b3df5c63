//! `ServerState`: what every handler shares: the engine, its store, the clock, the limits, the metrics and the agent hub.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use deploy_core::Timestamp;
use deploy_engine::{Clock, Engine};
use deploy_exec::agent::AgentHub;
use deploy_store::Store;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// The shared state of the router. Cheap to clone.
#[derive(Clone)]
pub struct ServerState {
    inner: Arc<Shared>,
}

struct Shared {
    engine: Engine,
    clock: Arc<dyn Clock>,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down: every long-lived stream (job events,
    /// task logs) ends on it, so a graceful shutdown never waits on a follower.
    shutdown: CancellationToken,
    /// The engine `POST /plan` previews with, when set (else `engine`).
    plan_engine: OnceLock<Engine>,
    /// Token id -> when this process last wrote its `last_used_at` (so concurrent
    /// requests with one token write it once, not once each).
    touched: Mutex<HashMap<uuid::Uuid, Timestamp>>,
    /// Agents: who is connected, what is delivered to whom, results by notification.
    agents: AgentHub,
    /// Which agent a credential belongs to (checked against `agents`' records).
    agent_keys: crate::agent_auth::AgentKeys,
    /// The keys application secrets are sealed with (`None`: the secrets routes answer 503).
    secret_keys: OnceLock<Arc<crate::app_secrets::SecretKeys>>,
    /// What this process's webhook notifier sent, for `/metrics` (`None`: no notifier).
    notifier: OnceLock<Arc<crate::notify::NotifierCounters>>,
}

/// The heartbeat timeout of the hub [`ServerState::new`] makes.
pub const DEFAULT_AGENT_HEARTBEAT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

impl ServerState {
    /// State over `engine` (whose store the API reads and writes). Must be
    /// called inside a tokio runtime: it starts the task counting job transitions for `/metrics`.
    /// Its agent hub is a fresh one with [`DEFAULT_AGENT_HEARTBEAT_TIMEOUT`].
    pub fn new(engine: Engine, clock: Arc<dyn Clock>, config: ServerConfig) -> Self {
        let hub = AgentHub::new(DEFAULT_AGENT_HEARTBEAT_TIMEOUT);
        Self::with_agent_hub(engine, clock, config, hub)
    }

    /// State over `engine` whose agent routes serve `hub` (the one the engine's
    /// `AgentExecutor` dispatches through). Must be called inside a tokio runtime.
    pub fn with_agent_hub(
        engine: Engine,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
        agents: AgentHub,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        metrics.watch(engine.subscribe());
        Self {
            inner: Arc::new(Shared {
                engine,
                clock,
                config,
                metrics,
                shutdown: CancellationToken::new(),
                plan_engine: OnceLock::new(),
                touched: Mutex::new(HashMap::new()),
                agents,
                agent_keys: crate::agent_auth::AgentKeys::default(),
                secret_keys: OnceLock::new(),
                notifier: OnceLock::new(),
            }),
        }
    }

    /// The server's shutdown token: cancel it to end every open SSE stream (without
    /// an `end` event, so followers reconnect with `Last-Event-ID` to the next server).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Sets the engine `POST /plan` previews with: the same store and executors
    /// as the main one, but a short `task_timeout`, which bounds each target's
    /// `inspect` (deployd: 20 s, where a deploy step gets 600 s). Without it the
    /// main engine's task timeout applies. Only the first call counts.
    pub fn set_plan_engine(&self, engine: Engine) {
        if self.inner.plan_engine.set(engine).is_err() {
            tracing::warn!("the plan engine was already set; keeping the first");
        }
    }

    pub(crate) fn plan_engine(&self) -> &Engine {
        self.inner.plan_engine.get().unwrap_or(&self.inner.engine)
    }

    /// Sets the keys `/secrets` seals with (the engines read secrets through
    /// [`crate::StoreSecrets`] over the same keys). Only the first call counts.
    pub fn set_secret_keys(&self, keys: Arc<crate::app_secrets::SecretKeys>) {
        if self.inner.secret_keys.set(keys).is_err() {
            tracing::warn!("the secrets keys were already set; keeping the first");
        }
    }

    /// Sets the counters of the webhook notifier running beside this server, shown on
    /// `/metrics`. Only the first call counts.
    pub fn set_notifier_counters(&self, counters: Arc<crate::notify::NotifierCounters>) {
        if self.inner.notifier.set(counters).is_err() {
            tracing::warn!("the notifier counters were already set; keeping the first");
        }
    }

    pub(crate) fn notifier_counters(&self) -> Option<&crate::notify::NotifierCounters> {
        self.inner.notifier.get().map(Arc::as_ref)
    }

    pub(crate) fn secret_keys(&self) -> Option<&crate::app_secrets::SecretKeys> {
        self.inner.secret_keys.get().map(Arc::as_ref)
    }

    /// The agent hub the agent routes serve.
    pub fn agent_hub(&self) -> &AgentHub {
        &self.inner.agents
    }

    pub(crate) fn agent_keys(&self) -> &crate::agent_auth::AgentKeys {
        &self.inner.agent_keys
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        self.inner.engine.store()
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub(crate) fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// True when `token`'s use at `now` should be written: neither the store's
    /// `last_used_at` nor this process's last write is `resolution` old or newer.
    pub(crate) fn should_touch(
        &self,
        token: uuid::Uuid,
        stored: Option<Timestamp>,
        now: Timestamp,
        resolution: std::time::Duration,
    ) -> bool {
        let fresh = |t: Timestamp| now.duration_since(t) < resolution;
        if stored.is_some_and(fresh) {
            return false;
        }
        let Ok(mut touched) = self.inner.touched.lock() else {
            return true;
        };
        if touched.get(&token).is_some_and(|t| fresh(*t)) {
            return false;
        }
        if touched.len() >= 10_000 {
            touched.clear();
        }
        touched.insert(token, now);
        true
    }
}
