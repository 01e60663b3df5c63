//! `PUT /api/v1/secrets/{id}`, `GET /api/v1/secrets`, `DELETE /api/v1/secrets/{id}` (admin): application secrets go in sealed and never come back out.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use deploy_api::{MAX_SECRET_BYTES, PutSecretRequest, Role, SecretSummary};
use deploy_core::Name;
use deploy_store::AppSecretRecord;

use crate::auth::authorize;
use crate::body::ApiJson;
use crate::errors::ServerError;
use crate::openapi::ProblemResponses;
use crate::state::ServerState;

/// Most environments one secret may be limited to.
const MAX_SECRET_ENVIRONMENTS: usize = 100;

/// The listed view of a secret: never its value, nor the sealed text. Its environments
/// by name (the id of one deleted since).
async fn summary(
    state: &ServerState,
    record: AppSecretRecord,
) -> Result<SecretSummary, ServerError> {
    let mut environments = Vec::with_capacity(record.environments.len());
    for id in &record.environments {
        let name = match deploy_core::EnvironmentId::parse(id) {
            Ok(parsed) => match state.store().get_environment(parsed).await {
                Ok(e) => e.name.to_string(),
                Err(deploy_store::StoreError::NotFound { .. }) => id.clone(),
                Err(e) => return Err(e.into()),
            },
            Err(_) => id.clone(),
        };
        environments.push(name);
    }
    Ok(SecretSummary {
        environments,
        name: Name::parse(&record.name).map_err(|e| {
            ServerError::Store(deploy_store::StoreError::Corrupt {
                column: "app_secrets.name",
                value: record.name.clone(),
                reason: e.to_string(),
            })
        })?,
        version: record.version,
        key_id: record.key_id,
        created_at: record.created_at,
        created_by: record.created_by,
        updated_at: record.updated_at,
        updated_by: record.updated_by,
    })
}

fn secret_name(id: &str) -> Result<Name, ServerError> {
    // The name alone is quoted: a caller who swapped name and value would see the
    // value in the error, so a long or odd one is cut.
    let shown: String = id.chars().take(64).collect();
    Name::parse(id).map_err(|_| {
        ServerError::bad_request(
            format!(
                "secret name `{}`: expected [a-z0-9][a-z0-9_.-]{{0,62}}",
                shown.escape_debug()
            ),
            Some("name"),
        )
    })
}

/// The ids of the environments `list` names (names or ids), deduplicated; an unknown
/// one is refused, naming it.
async fn environment_ids(state: &ServerState, list: &[String]) -> Result<Vec<String>, ServerError> {
    if list.len() > MAX_SECRET_ENVIRONMENTS {
        return Err(ServerError::unprocessable(
            format!(
                "a secret lists {} environments; expected at most {MAX_SECRET_ENVIRONMENTS}",
                list.len()
            ),
            Some("environments"),
        ));
    }
    let mut ids: Vec<String> = Vec::with_capacity(list.len());
    for (i, reference) in list.iter().enumerate() {
        let field = format!("environments[{i}]");
        let found =
            crate::resolve::environment(state, reference, crate::resolve::Source::Field(&field))
                .await?;
        let id = found.id.to_string();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

fn keys(state: &ServerState) -> Result<&crate::app_secrets::SecretKeys, ServerError> {
    state.secret_keys().ok_or_else(|| {
        ServerError::Unavailable(
            "application secrets: this deployd has no secrets key configured".to_owned(),
        )
    })
}

#[utoipa::path(
    put,
    path = "/secrets/{id}",
    tag = "secrets",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "secret name")),
    request_body = PutSecretRequest,
    responses((status = 200, description = "created or replaced (admin); the answer never holds the value", body = SecretSummary), ProblemResponses)
)]
pub(crate) async fn put_secret(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PutSecretRequest>,
) -> Result<Json<SecretSummary>, ServerError> {
    let caller = authorize(&state, &headers, Role::Admin).await?;
    let name = secret_name(&id)?;
    if req.value.len() > MAX_SECRET_BYTES {
        return Err(ServerError::unprocessable(
            format!(
                "secret `{name}` is {} bytes; expected at most {MAX_SECRET_BYTES}",
                req.value.len()
            ),
            Some("value"),
        ));
    }
    if req.value.contains('\0') {
        return Err(ServerError::unprocessable(
            format!(
                "secret `{name}` holds a NUL byte; expected text an environment variable can carry"
            ),
            Some("value"),
        ));
    }
    let scope = match &req.environments {
        Some(list) => Some(environment_ids(&state, list).await?),
        None => None,
    };
    let keys = keys(&state)?;
    // The version is sealed into the value (an older ciphertext written back does not
    // open): it is written only over the version read, else read and seal again.
    let mut attempts = 0;
    let record = loop {
        let current = state.store().get_app_secret(name.as_str()).await?;
        let version = current.as_ref().map_or(1, |c| c.version + 1);
        let environments = match (&scope, &current) {
            (Some(ids), _) => ids.clone(),
            (None, Some(c)) => c.environments.clone(),
            (None, None) => Vec::new(),
        };
        let (key_id, sealed) = keys
            .seal_secret(name.as_str(), version, req.value.as_bytes())
            .map_err(|e| ServerError::Unavailable(e.to_string()))?;
        if let Some(record) = state
            .store()
            .put_app_secret(
                name.as_str(),
                &key_id,
                &sealed,
                version,
                &environments,
                &caller.name,
                state.now(),
            )
            .await?
        {
            break record;
        }
        attempts += 1;
        if attempts >= 5 {
            return Err(ServerError::Conflict(format!(
                "secret `{name}` is being written concurrently; try again"
            )));
        }
    };
    drop(req);
    tracing::info!(secret = %name, version = record.version, environments = ?record.environments, by = caller.name, "application secret written");
    Ok(Json(summary(&state, record).await?))
}

#[utoipa::path(
    get,
    path = "/secrets",
    tag = "secrets",
    security(("bearer" = [])),
    responses((status = 200, description = "every secret by name, without values (admin)", body = Vec<SecretSummary>), ProblemResponses)
)]
pub(crate) async fn list_secrets(
    State(state): State<ServerState>,
    headers: HeaderMap,
) -> Result<Json<Vec<SecretSummary>>, ServerError> {
    authorize(&state, &headers, Role::Admin).await?;
    let records = state.store().list_app_secrets().await?;
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        out.push(summary(&state, record).await?);
    }
    Ok(Json(out))
}

/// Deletes a secret. Releases and environments that reference it are not searched: a
/// job created afterwards is refused (422 naming it), and a task of an existing job
/// fails without retry, naming it.
#[utoipa::path(
    delete,
    path = "/secrets/{id}",
    tag = "secrets",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "secret name")),
    responses((status = 204, description = "deleted (admin)"), ProblemResponses)
)]
pub(crate) async fn delete_secret(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ServerError> {
    let caller = authorize(&state, &headers, Role::Admin).await?;
    let name = secret_name(&id)?;
    let Some(current) = state.store().get_app_secret(name.as_str()).await? else {
        return Err(ServerError::NotFound(format!(
            "secret `{name}` does not exist"
        )));
    };
    if !state.store().delete_app_secret(name.as_str()).await? {
        return Err(ServerError::NotFound(format!(
            "secret `{name}` does not exist"
        )));
    }
    tracing::info!(secret = %name, by = caller.name, "application secret deleted");
    Ok(crate::audit::with_before(
        StatusCode::NO_CONTENT.into_response(),
        &summary(&state, current).await?,
    ))
}
