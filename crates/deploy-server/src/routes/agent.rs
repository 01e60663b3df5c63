//! The agent protocol (`/agent/…`): register with a bootstrap token, rotate the credential, poll for work, send log chunks and results.
//!
//! Agents authenticate with their credential (`dpa_…`), checked by `agent_auth`
//! against the hub's records (no database read per poll of a known agent); the store's
//! `last_seen_at` is written at most once a minute per agent. API tokens never
//! authenticate an agent route, nor agent credentials an API route: they live in
//! different maps. A key that is not the calling agent's answers 404, like an
//! unknown one. A registration claims only what its bootstrap token allows
//! ([`BootstrapBinding`]). No token or credential is ever logged.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use deploy_api::agent::{
    AGENT_CREDENTIAL_SHAPE, AGENT_PROTOCOL_VERSION, AgentCredentials, LogAck, LogChunkRequest,
    PollRequest, PollResponse, RegisterAgentRequest, ResultAck, RotateCredentialRequest, TaskKey,
    TaskResultRequest, is_agent_credential,
};
use deploy_core::{AgentId, TaskId, Timestamp};
use deploy_exec::agent::{AgentHub, HubError, capability_name};
use deploy_store::{
    AGENT_BOOTSTRAP_SCOPE, AgentRecord, ApiTokenRecord, BootstrapBinding, StoreError,
};
use uuid::Uuid;

use super::agents::secret;
use crate::agent_auth::{self, authenticate_agent};
use crate::agent_records::{agent_info, capability_names};
use crate::auth::bearer;
use crate::body::decode;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::params::parse_id;
use crate::state::ServerState;
use crate::tokens::hash_token;

/// Prefix of agent credentials.
const CREDENTIAL_PREFIX: &str = "dpa_";
const MAX_AGENT_VERSION_LEN: usize = 64;

/// A fresh agent id: UUID v7 from `now` and random bytes, like every id.
fn new_agent_id(now: Timestamp) -> AgentId {
    let random = Uuid::new_v4();
    let mut bytes = [0u8; 10];
    bytes.copy_from_slice(&random.as_bytes()[..10]);
    AgentId::from_parts(now, bytes)
}

fn check_protocol(protocol: u32) -> Result<(), ServerError> {
    if protocol == AGENT_PROTOCOL_VERSION {
        return Ok(());
    }
    Err(ServerError::bad_request(
        format!(
            "agent protocol version {protocol} is not supported; this server speaks version {AGENT_PROTOCOL_VERSION}"
        ),
        Some("protocol"),
    ))
}

/// A credential the agent proposes must have the shape the server would generate: the
/// error names the field and the shape, never the value (it is a secret).
fn check_proposed_credential(credential: &str) -> Result<(), ServerError> {
    if is_agent_credential(credential) {
        return Ok(());
    }
    Err(ServerError::bad_request(
        format!("credential is not a valid agent credential; expected {AGENT_CREDENTIAL_SHAPE}"),
        Some("credential"),
    ))
}

/// The answer to a proposed credential another agent already holds (nothing changed).
fn credential_taken() -> ServerError {
    ServerError::Conflict(
        "the proposed credential is already in use; generate a new one".to_owned(),
    )
}

fn hub_error(e: HubError) -> ServerError {
    match e {
        HubError::UnknownAgent(_) => {
            ServerError::Unauthenticated("unknown or revoked agent credential")
        }
        HubError::UnknownKey(key) => ServerError::NotFound(format!(
            "task `{}` attempt {} does not exist",
            key.task_id, key.attempt
        )),
        e @ HubError::TooManyLines { .. } => ServerError::bad_request(e.to_string(), Some("lines")),
        e @ HubError::Relay(_) => ServerError::Unavailable(e.to_string()),
    }
}

/// The body, once the caller is authenticated; 413 past the body limit.
fn body<T: serde::de::DeserializeOwned>(
    state: &ServerState,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<T, ServerError> {
    let bytes = bytes.map_err(|rejection| {
        if rejection.into_response().status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServerError::PayloadTooLarge {
                limit: state.config().max_body_bytes,
            }
        } else {
            ServerError::bad_request("cannot read the request body", None)
        }
    })?;
    decode(&bytes)
}

/// A report on a task attempt (its log, its result): the calling agent, the attempt's
/// key from the path, and the request (read as [`agent_request`] does).
async fn attempt_report<T: serde::de::DeserializeOwned>(
    state: &ServerState,
    headers: &HeaderMap,
    (task_id, attempt): (String, String),
    bytes: Result<Bytes, BytesRejection>,
    protocol: impl Fn(&T) -> u32,
) -> Result<(AgentId, TaskKey, T), ServerError> {
    let agent = authenticate_agent(state, headers).await?;
    let key = task_key(&task_id, &attempt)?;
    let req = agent_request(state, agent, bytes, protocol).await?;
    Ok((agent, key, req))
}

fn task_key(task_id: &str, attempt: &str) -> Result<TaskKey, ServerError> {
    let task_id = parse_id("task", task_id, TaskId::parse)?;
    let attempt = attempt.parse::<u32>().map_err(|_| {
        ServerError::bad_request(
            format!("attempt `{attempt}` is invalid; expected a non-negative integer"),
            Some("attempt"),
        )
    })?;
    Ok(TaskKey { task_id, attempt })
}

/// Records that the agent was seen, writing `last_seen_at` at most once a minute.
async fn heartbeat(state: &ServerState, agent: AgentId) -> Result<(), ServerError> {
    if let Some(at) = state.agent_hub().heartbeat(agent).map_err(hub_error)?
        && let Err(e) = state.store().touch_agent(agent, at).await
    {
        tracing::warn!(agent = %agent, error = %e, "cannot record that an agent was seen");
    }
    Ok(())
}

#[utoipa::path(post, path = "/agent/register", tag = "agent", security(("agent_bootstrap" = [])), request_body = RegisterAgentRequest, responses((status = 201, description = "registered; the bootstrap token is spent and the agent's credential is in this response only (the proposed one when the request has `credential`). A retry with the spent token, the same name and the same proposed credential is answered the same again, while the agent is not revoked and has not rotated its credential", body = AgentCredentials), ProblemResponses))]
pub(crate) async fn register(
    State(state): State<ServerState>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<AgentCredentials>), ServerError> {
    let hash = hash_token(bearer(&headers)?);
    let now = state.now();
    // A first look that spends nothing, for a precise answer; the spend below decides.
    let unknown = ServerError::Unauthenticated("unknown agent bootstrap token");
    let found = state
        .store()
        .find_api_token(&hash)
        .await?
        .filter(|t| t.scopes == [AGENT_BOOTSTRAP_SCOPE])
        .ok_or(unknown)?;
    // A bootstrap token without a binding registers nothing (every token made since
    // bindings exist has one; older ones were spent by the migration).
    let binding =
        state
            .store()
            .bootstrap_binding(found.id)
            .await?
            .ok_or(ServerError::Unauthenticated(
                "unknown agent bootstrap token",
            ))?;
    if found.revoked_at.is_some() {
        // Checked before the expiry: a retry may come after the token's expiry, and it
        // gains nothing it did not have (it must hold the credential it proposes).
        return match registered_before(&state, &found, &binding, bytes).await? {
            Some(answer) => Ok((StatusCode::CREATED, Json(answer))),
            None => Err(ServerError::Unauthenticated(
                "the agent bootstrap token was already spent or revoked",
            )),
        };
    }
    if let Some(at) = found.expires_at.filter(|e| *e <= now) {
        return Err(ServerError::Expired {
            what: "agent bootstrap token",
            at,
        });
    }
    let req: RegisterAgentRequest = body(&state, bytes)?;
    check_protocol(req.protocol)?;
    if req.agent_version.chars().count() > MAX_AGENT_VERSION_LEN {
        return Err(ServerError::bad_request(
            format!(
                "agent_version is {} characters; expected at most {MAX_AGENT_VERSION_LEN}",
                req.agent_version.chars().count()
            ),
            Some("agent_version"),
        ));
    }
    check_claims(found.id, &binding, &req)?;
    if let Some(proposed) = &req.credential {
        check_proposed_credential(proposed)?;
    }
    let credential = req
        .credential
        .clone()
        .unwrap_or_else(|| secret(CREDENTIAL_PREFIX));
    let credential_hash = hash_token(&credential);
    let hub = state.agent_hub();
    if hub.name_taken(&req.name) {
        return Err(ServerError::Conflict(format!(
            "agent name `{}` is already taken",
            req.name
        )));
    }
    if state.agent_keys().known(hub, &credential_hash).is_some() {
        return Err(credential_taken());
    }
    let spent = state
        .store()
        .spend_bootstrap_token(&hash, now)
        .await?
        .ok_or(ServerError::Unauthenticated(
            "the agent bootstrap token was already spent or revoked",
        ))?;
    let mut capabilities = req.capabilities.clone();
    capabilities.sort();
    capabilities.dedup();
    let record = AgentRecord {
        id: new_agent_id(now),
        name: req.name.to_string(),
        // The token's labels, not the agent's claim (checked to be among them above).
        labels: binding.labels.clone(),
        capabilities: capability_names(&capabilities),
        agent_version: req.agent_version.clone(),
        credential_hash: Some(credential_hash),
        last_seen_at: Some(now),
        created_at: now,
        revoked_at: None,
        bootstrap_token_id: Some(spent.id),
        labels_version: 1,
    };
    let refused = match state.store().put_agent(&record).await {
        Ok(()) => None,
        Err(StoreError::NameTaken { name, .. }) => Some(ServerError::Conflict(format!(
            "agent name `{name}` is already taken"
        ))),
        // The credential's unique index (the hub check above is per replica).
        Err(StoreError::AlreadyExists { .. }) => Some(credential_taken()),
        Err(e) => return Err(e.into()),
    };
    if let Some(refused) = refused {
        // Lost a race for the name or the credential (the hub checks above are per
        // replica and not atomic with the insert): give the token back so its holder
        // can retry. Only this spend's own mark is cleared.
        match state.store().unspend_bootstrap_token(spent.id, now).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(token = %spent.id, "bootstrap token revoked meanwhile; left spent");
            }
            Err(e) => {
                tracing::warn!(token = %spent.id, error = %e, "cannot unspend a bootstrap token");
            }
        }
        return Err(refused);
    }
    hub.upsert_agent(agent_info(&record)?);
    // Other replicas learn the agent now, not at its first poll there.
    hub.announce_agent(record.id);
    tracing::info!(agent = %record.id, name = record.name, labels = %record.labels, bootstrap_token = %spent.id, "agent registered");
    Ok((
        StatusCode::CREATED,
        Json(AgentCredentials {
            protocol: AGENT_PROTOCOL_VERSION,
            agent_id: record.id,
            name: req.name,
            labels: record.labels,
            credential,
            heartbeat_timeout_ms: heartbeat_ms(hub),
        }),
    ))
}

/// Refuses (403) a registration claiming what bootstrap token `token` does not allow:
/// another agent name, a label not among its labels, a capability not among its
/// capabilities. The detail names the claim and what the token allows (the caller holds
/// the token, so telling it what the token is for reveals nothing new).
fn check_claims(
    token: Uuid,
    binding: &BootstrapBinding,
    req: &RegisterAgentRequest,
) -> Result<(), ServerError> {
    if req.name.as_str() != binding.agent_name {
        return Err(ServerError::IdentityForbidden(format!(
            "bootstrap token `{token}` is for agent `{}`, not `{}`",
            binding.agent_name, req.name
        )));
    }
    let allowed = binding.labels.as_map();
    for (key, value) in req.labels.as_map() {
        if allowed.get(key) != Some(value) {
            return Err(ServerError::IdentityForbidden(format!(
                "label `{key}={value}` is not among the labels of bootstrap token `{token}`: {}",
                binding.labels
            )));
        }
    }
    for capability in &req.capabilities {
        let name = capability_name(*capability);
        if !binding.capabilities.iter().any(|c| c == name) {
            return Err(ServerError::IdentityForbidden(format!(
                "capability `{name}` is not among the capabilities of bootstrap token `{token}`: {}",
                binding.capabilities.join(", ")
            )));
        }
    }
    Ok(())
}

/// For a registration with a spent token: the first answer again when this is a retry
/// of the registration that spent it (its answer was lost): the body proposes a
/// credential, and the agent the token registered has the same name, is not revoked and
/// still has that credential. `None` otherwise (the caller answers 401, as for any spent
/// token; a body that cannot be read is no retry either).
async fn registered_before(
    state: &ServerState,
    token: &ApiTokenRecord,
    binding: &BootstrapBinding,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Option<AgentCredentials>, ServerError> {
    let Ok(req) = body::<RegisterAgentRequest>(state, bytes) else {
        return Ok(None);
    };
    // A retry claims what the first call claimed, which the token allowed.
    if check_claims(token.id, binding, &req).is_err() {
        return Ok(None);
    }
    let Some(credential) = req.credential.filter(|c| is_agent_credential(c)) else {
        return Ok(None);
    };
    if req.protocol != AGENT_PROTOCOL_VERSION {
        return Ok(None);
    }
    let Some(record) = state
        .store()
        .find_agent_by_bootstrap_token(token.id)
        .await?
    else {
        return Ok(None);
    };
    let same = record.name == req.name.as_str()
        && record.revoked_at.is_none()
        && record.credential_hash.as_ref() == Some(&hash_token(&credential));
    if !same {
        return Ok(None);
    }
    // Another replica may have served the first call: this one learns the agent now.
    // Only then: a hub that knows the agent is at least as new as this read (a
    // rotation since would otherwise be undone in it).
    let hub = state.agent_hub();
    if hub.agent(record.id).is_none() {
        hub.upsert_agent(agent_info(&record)?);
    }
    tracing::info!(agent = %record.id, name = record.name, bootstrap_token = %token.id, "agent registration repeated: answered as the first time");
    Ok(Some(AgentCredentials {
        protocol: AGENT_PROTOCOL_VERSION,
        agent_id: record.id,
        name: req.name,
        labels: record.labels,
        credential,
        heartbeat_timeout_ms: heartbeat_ms(hub),
    }))
}

/// A data-plane request's body, once `agent` is authenticated: read, its protocol
/// version checked, and the agent recorded as seen.
async fn agent_request<T: serde::de::DeserializeOwned>(
    state: &ServerState,
    agent: AgentId,
    bytes: Result<Bytes, BytesRejection>,
    protocol: impl Fn(&T) -> u32,
) -> Result<T, ServerError> {
    let req: T = body(state, bytes)?;
    check_protocol(protocol(&req))?;
    heartbeat(state, agent).await?;
    Ok(req)
}

fn heartbeat_ms(hub: &AgentHub) -> u64 {
    u64::try_from(hub.heartbeat_timeout().as_millis()).unwrap_or(u64::MAX)
}

#[utoipa::path(post, path = "/agent/credential/rotate", tag = "agent", security(("agent" = [])), request_body(content = Option<RotateCredentialRequest>, description = "optional: the credential the agent proposes as its next one; without a body the server generates it"), responses((status = 200, description = "the new credential (the proposed one, if any); the old one is refused from now on. When the bearer already is the proposed credential (a retry after a lost answer) the same answer again, nothing changed", body = AgentCredentials), ProblemResponses))]
pub(crate) async fn rotate_credential(
    State(state): State<ServerState>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<AgentCredentials>, ServerError> {
    let agent = authenticate_agent(&state, &headers).await?;
    let bearer_hash = hash_token(bearer(&headers)?);
    let hub = state.agent_hub();
    let proposed = match bytes {
        // No body (older agents): the server generates the credential.
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => None,
        bytes => {
            let req: RotateCredentialRequest = body(&state, bytes)?;
            check_protocol(req.protocol)?;
            check_proposed_credential(&req.credential)?;
            Some(req.credential)
        }
    };
    let credential = proposed.unwrap_or_else(|| secret(CREDENTIAL_PREFIX));
    let hash = hash_token(&credential);
    // The answer carries the agent's name and labels as recorded: a rotation changes
    // neither, and tells the agent of a label change made since.
    let info = hub.agent(agent).ok_or(ServerError::Unauthenticated(
        "unknown or revoked agent credential",
    ))?;
    if hash == bearer_hash {
        // The bearer authenticated, so the rotation to it already happened: a retry.
        tracing::info!(agent = %agent, "agent credential rotation repeated: answered as the first time");
        return Ok(Json(AgentCredentials {
            protocol: AGENT_PROTOCOL_VERSION,
            agent_id: agent,
            name: info.name,
            labels: info.labels,
            credential,
            heartbeat_timeout_ms: heartbeat_ms(hub),
        }));
    }
    match state.store().set_agent_credential(agent, &hash).await {
        Err(StoreError::NotFound { .. }) => {
            return Err(ServerError::Unauthenticated(
                "unknown or revoked agent credential",
            ));
        }
        Err(StoreError::AlreadyExists { .. }) => return Err(credential_taken()),
        other => other?,
    }
    // One hub call (one lock section): a revocation between a read and a write of the
    // agent would otherwise be overwritten and the revoked agent accepted again. The
    // store's update above is conditional on the agent being unrevoked too.
    agent_auth::rotated(&state, agent, &hash).await?;
    tracing::info!(agent = %agent, "agent credential rotated");
    Ok(Json(AgentCredentials {
        protocol: AGENT_PROTOCOL_VERSION,
        agent_id: agent,
        name: info.name,
        labels: info.labels,
        credential,
        heartbeat_timeout_ms: heartbeat_ms(hub),
    }))
}

#[utoipa::path(post, path = "/agent/poll", tag = "agent", security(("agent" = [])), request_body = PollRequest, responses((status = 200, description = "tasks to run and keys to cancel (both may be empty after the wait)", body = PollResponse), ProblemResponses))]
pub(crate) async fn poll(
    State(state): State<ServerState>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<PollResponse>, ServerError> {
    let agent = authenticate_agent(&state, &headers).await?;
    let req = agent_request(&state, agent, bytes, |r: &PollRequest| r.protocol).await?;
    let hub = state.agent_hub();
    let work = hub.poll(agent, &req, state.shutdown_token()).await;
    Ok(Json(work.map_err(hub_error)?))
}

#[utoipa::path(post, path = "/agent/tasks/{task_id}/attempts/{attempt}/logs", tag = "agent", security(("agent" = [])), params(("task_id" = String, Path, description = "task id"), ("attempt" = u32, Path, description = "attempt number")), request_body = LogChunkRequest, responses((status = 200, description = "stored up to `next_seq` (lines already stored are skipped)", body = LogAck), ProblemResponses))]
pub(crate) async fn log_chunk(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(key): Path<(String, String)>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<LogAck>, ServerError> {
    let (agent, key, req) = attempt_report(&state, &headers, key, bytes, |r: &LogChunkRequest| {
        r.protocol
    })
    .await?;
    let hub = state.agent_hub();
    Ok(Json(
        hub.report_log(agent, key, &req).await.map_err(hub_error)?,
    ))
}

#[utoipa::path(post, path = "/agent/tasks/{task_id}/attempts/{attempt}/result", tag = "agent", security(("agent" = [])), params(("task_id" = String, Path, description = "task id"), ("attempt" = u32, Path, description = "attempt number")), request_body = TaskResultRequest, responses((status = 200, description = "stored, or already stored (a re-sent result is acknowledged again)", body = ResultAck), ProblemResponses))]
pub(crate) async fn result(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(key): Path<(String, String)>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<ResultAck>, ServerError> {
    let (agent, key, req) =
        attempt_report(&state, &headers, key, bytes, |r: &TaskResultRequest| {
            r.protocol
        })
        .await?;
    let hub = state.agent_hub();
    Ok(Json(
        hub.report_result(agent, key, &req)
            .await
            .map_err(hub_error)?,
    ))
}
