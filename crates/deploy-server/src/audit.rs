//! The audit log: every write through the API (refused ones too) is recorded with who, what, when and from where, secrets redacted (`routes/audit.rs` reads it back).
//!
//! Recording is a route layer, so no handler can forget it: it runs after the
//! handler, identifies the caller from the same bearer token (an API token, a
//! bootstrap token, or an agent credential), and appends one row before the answer
//! leaves. Requests without a known token are not recorded (they changed nothing and
//! would let anyone fill the table); the tracing log still shows them. The agent data
//! plane (polls, log chunks, results) is not recorded either: it is the engine's
//! traffic, already in job events and task logs, at up to several requests per
//! second per agent.

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use deploy_store::{AuditActorKind, AuditRecord};
use serde_json::Value;

use crate::auth::bearer;
use crate::state::ServerState;
use crate::tls::PeerAddr;
use crate::tokens::hash_token;

/// Routes of the agent data plane, which are not audited (see the module doc).
pub const UNAUDITED_ROUTES: [&str; 3] = [
    "/api/v1/agent/poll",
    "/api/v1/agent/tasks/{task_id}/attempts/{attempt}/logs",
    "/api/v1/agent/tasks/{task_id}/attempts/{attempt}/result",
];

/// Largest answer kept as `after`; a bigger one (a job with thousands of tasks) is
/// summarised: the entity itself holds the full state.
const MAX_RECORDED_BYTES: usize = 16 * 1024;

/// Words that mark a key whose value is never recorded (matched inside the key,
/// case-insensitively: `AWS_SECRET_ACCESS_KEY`, `db_password`, `api_key`).
const SECRET_WORDS: [&str; 8] = [
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "private_key",
    "api_key",
    "apikey",
];

/// Objects whose every value is left out, keys kept: an environment's variables hold
/// connection strings and keys under any name (`DATABASE_URL=postgres://u:pw@…`).
const VALUES_NEVER_RECORDED: [&str; 1] = ["variables"];

/// The entity's state before an update, attached by the handler to its response.
#[derive(Debug, Clone)]
pub(crate) struct Before(pub Value);

/// Attaches `entity` as the audit row's `before`.
pub(crate) fn with_before(mut response: Response, entity: &impl serde::Serialize) -> Response {
    if let Ok(value) = serde_json::to_value(entity) {
        response.extensions_mut().insert(Before(value));
    }
    response
}

fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The route layer: runs the handler, then appends the audit row of a write.
pub(crate) async fn record(
    State(state): State<ServerState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let Some(route) =
        route.filter(|r| is_write(&method) && !UNAUDITED_ROUTES.contains(&r.as_str()))
    else {
        return next.run(request).await;
    };
    let path = request.uri().path().to_owned();
    let remote = remote(&request);
    let actor = actor(&state, request.headers()).await;
    let response = next.run(request).await;
    let Some((actor_kind, actor_id, actor_name)) = actor else {
        return response;
    };
    let status = response.status().as_u16();
    let before_value = response.extensions().get::<Before>().map(|b| b.0.clone());
    let before = before_value.as_ref().map(redacted_text);
    let (response, answer) = buffered(response).await;
    // The answer's id (a path may name the entity by its name), else the path's.
    let entity_id = answer
        .as_ref()
        .filter(|_| response.status().is_success())
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        // A delete answers no body: the entity it was.
        .or_else(|| {
            before_value
                .as_ref()
                .and_then(|v| v.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .or_else(|| entity_from_path(&route, &path));
    let record = AuditRecord {
        seq: 0,
        at: state.now(),
        actor_kind,
        actor_id,
        actor_name,
        method: method.to_string(),
        route,
        path,
        entity_id,
        status,
        remote,
        before,
        after: answer.as_ref().map(redacted_text),
    };
    if let Err(e) = state.store().append_audit(&record).await {
        // The write itself is done and cannot be undone here; say so loudly.
        tracing::error!(error = %e, route = record.route, actor = record.actor_name, status, "cannot append to the audit log");
    }
    response
}

/// The caller of a write, from its bearer token (an API or bootstrap token, or an
/// agent) or, without one, from its web-console session (the token that signed in).
async fn actor(
    state: &ServerState,
    headers: &HeaderMap,
) -> Option<(AuditActorKind, String, String)> {
    let Ok(bearer) = bearer(headers) else {
        return crate::console::session_actor(state, headers).await;
    };
    let hash = hash_token(bearer);
    if let Ok(Some(token)) = state.store().find_api_token(&hash).await {
        return Some((AuditActorKind::Token, token.id.to_string(), token.name));
    }
    let agent = crate::agent_auth::authenticate(state, &hash).await.ok()??;
    let name = match state.store().get_agent(agent).await {
        Ok(record) => record.name,
        Err(_) => agent.to_string(),
    };
    Some((AuditActorKind::Agent, agent.to_string(), name))
}

/// The peer address, and what `X-Forwarded-For` claims (a proxy's word, kept beside it).
fn remote(request: &Request) -> Option<String> {
    remote_of(request.extensions(), request.headers())
}

/// [`remote`] from a request's parts.
pub(crate) fn remote_of(
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
) -> Option<String> {
    let peer = extensions
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0.0.to_string());
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(200).collect::<String>());
    match (peer, forwarded) {
        (Some(p), Some(f)) => Some(format!("{p} (x-forwarded-for: {f})")),
        (Some(p), None) => Some(p),
        (None, Some(f)) => Some(format!("x-forwarded-for: {f}")),
        (None, None) => None,
    }
}

/// Reads a JSON answer into memory (answers to writes are small documents) and rebuilds
/// the response around the same bytes.
async fn buffered(response: Response) -> (Response, Option<Value>) {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if !is_json {
        return (response, None);
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            let value = if bytes.len() > MAX_RECORDED_BYTES {
                Some(serde_json::json!({
                    "truncated": format!("{} bytes; read the entity for its full state", bytes.len())
                }))
            } else {
                serde_json::from_slice(&bytes).ok()
            };
            (Response::from_parts(parts, Body::from(bytes)), value)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read an answer for the audit log");
            (Response::from_parts(parts, Body::empty()), None)
        }
    }
}

/// The path segment standing where the route has `{id}` (the entity written).
fn entity_from_path(route: &str, path: &str) -> Option<String> {
    route
        .split('/')
        .zip(path.split('/'))
        .find(|(r, _)| *r == "{id}")
        .map(|(_, p)| p.to_owned())
}

/// `value` with every secret-looking key's value replaced, as JSON text.
fn redacted_text(value: &Value) -> String {
    redacted(value).to_string()
}

fn redacted(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_lowercase();
                    let secret = SECRET_WORDS.iter().any(|s| lower.contains(s)) && !v.is_null();
                    let v = if secret {
                        Value::String("[redacted]".to_owned())
                    } else if VALUES_NEVER_RECORDED.contains(&lower.as_str()) {
                        keys_only(v)
                    } else {
                        redacted(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

/// An object with every value replaced (its keys say what changed, not to what).
fn keys_only(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.keys()
                .map(|k| (k.clone(), Value::String("[redacted]".to_owned())))
                .collect(),
        ),
        other => redacted(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let value = serde_json::json!({
            "id": "t1",
            "token": "dpl_secret",
            "nested": {"agent_credential": "dpa_x", "password": null, "key_ref": "env:KEY"},
            "list": [{"client_secret": "s"}],
            "requested_by_token": "0190-…",
            "variables": {"DATABASE_URL": "postgres://u:hunter2@db/app", "LOG_LEVEL": "info"},
            "AWS_SECRET_ACCESS_KEY": "abc123",
        });
        let text = redacted_text(&value);
        for secret in ["dpl_secret", "dpa_x", "\"s\"", "hunter2", "info", "abc123"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(
            text.contains("env:KEY"),
            "references are not secrets: {text}"
        );
        assert!(text.contains("\"password\":null"), "{text}");
        assert!(text.contains("DATABASE_URL"), "variable names stay: {text}");
    }

    #[test]
    fn the_entity_is_the_path_id() {
        assert_eq!(
            entity_from_path(
                "/api/v1/promotions/{id}/approve",
                "/api/v1/promotions/abc/approve"
            ),
            Some("abc".to_owned())
        );
        assert_eq!(
            entity_from_path("/api/v1/releases", "/api/v1/releases"),
            None
        );
    }
}
