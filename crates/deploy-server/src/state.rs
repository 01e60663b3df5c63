//! `ServerState`: what every handler shares: the engine, its store, the clock, the limits and the metrics.

use std::sync::Arc;

use deploy_core::Timestamp;
use deploy_engine::{Clock, Engine};
use deploy_store::Store;

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
}

impl ServerState {
    /// State over `engine` (whose store the API reads and writes). Must be
    /// called inside a tokio runtime: it starts the task counting job transitions for `/metrics`.
    pub fn new(engine: Engine, clock: Arc<dyn Clock>, config: ServerConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        metrics.watch(engine.subscribe());
        Self {
            inner: Arc::new(Shared {
                engine,
                clock,
                config,
                metrics,
            }),
        }
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
}
