//! deploy-server: the HTTP API of the deployment system as a library.
//!
//! [`router`] builds the axum router under `/api/v1` (plus `/healthz`,
//! `/readyz`, `/metrics`) over a [`ServerState`]: the engine (which owns the
//! store) and the clock. `deployd` picks the concrete store and executors and
//! runs `Engine::serve` beside the router; tests build the same router in
//! process. Errors are RFC 9457 problem documents (deploy-api `Problem`).
//! [`openapi`] is the OpenAPI 3 document, generated from the same route
//! declarations and served at `/api/v1/openapi.json`.

mod access;
mod agent_auth;
mod agent_records;
mod agent_relay;
mod app_secrets;
mod audit;
mod auth;
mod body;
mod config;
mod console;
mod errors;
mod http_metrics;
mod metrics;
mod notify;
mod openapi;
mod params;
mod request_id;
mod resolve;
mod routes;
mod sse;
mod state;
mod tls;
mod tokens;

pub use agent_records::{agent_info, load_agents};
pub use agent_relay::StoreRelay;
pub use app_secrets::{
    KEY_BYTES, KeyFileError, ResealError, SecretKeyError, SecretKeys, StoreSecrets, open_key_file,
    reseal_all,
};
pub use audit::UNAUDITED_ROUTES;
pub use config::{BuildInfo, ServerConfig};
pub use errors::ServerError;
pub use notify::{
    Notifier, NotifierConfig, NotifierCounters, ResealKeysError, RetrySchedule,
    reseal_webhook_keys, sign, verify,
};
pub use routes::{openapi, router};
pub use state::{DEFAULT_AGENT_HEARTBEAT_TIMEOUT, ServerState};
pub use tls::{HANDSHAKE_TIMEOUT, PeerAddr, TlsError, TlsListener, tls_acceptor};
pub use tokens::{
    BootstrapToken, LocalActor, RECOVERY_ROUTE, bootstrap_admin, create_token, expiry_in,
    generate_token, hash_token, is_bootstrapped, recover_admin,
};

#[cfg(test)]
mod tests;
