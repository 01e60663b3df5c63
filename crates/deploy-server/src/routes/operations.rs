//! Operations: `/healthz`, `/readyz` (the database answers), `/metrics`, `/api/v1/openapi.json`, `/api/v1/version`, and the answers to an unknown route or method.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use deploy_api::{HealthResponse, VersionResponse};
use deploy_core::JobStatus;

use crate::errors::ServerError;
use crate::openapi::Document;
use crate::state::ServerState;

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "the process is up", body = HealthResponse)))]
pub(crate) async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".to_owned(),
    })
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "the database answers", body = HealthResponse), (status = 503, description = "the database does not answer", body = HealthResponse)))]
pub(crate) async fn readyz(State(state): State<ServerState>) -> Response {
    // Migrations ran when the store was opened: answering is enough.
    match state.store().ping().await {
        Ok(()) => Json(HealthResponse {
            status: "ready".to_owned(),
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthResponse {
                    status: "database unreachable".to_owned(),
                }),
            )
                .into_response()
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain; version=0.0.4")))]
pub(crate) async fn metrics(State(state): State<ServerState>) -> Response {
    let mut text = state.metrics().render();
    crate::metrics::render_build_info(&mut text, &state.config().build);
    if let Some(counters) = state.notifier_counters() {
        counters.render(&mut text);
    }
    // One aggregate query: no job is loaded, however many there are.
    match state.store().count_jobs_by_status().await {
        Ok(counts) => {
            text.push_str("# HELP deployd_active_jobs Jobs in each active status.\n");
            text.push_str("# TYPE deployd_active_jobs gauge\n");
            for status in JobStatus::ALL.into_iter().filter(|s| s.is_active()) {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map_or(0, |(_, n)| *n);
                text.push_str(&format!(
                    "deployd_active_jobs{{status=\"{}\"}} {n}\n",
                    status.as_str()
                ));
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count active jobs for /metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}

pub(crate) async fn not_found() -> ServerError {
    ServerError::NotFound("no such route".to_owned())
}

/// A known path with a method it does not serve.
pub(crate) async fn method_not_allowed(method: axum::http::Method) -> ServerError {
    ServerError::MethodNotAllowed(format!("method {method} is not allowed on this route"))
}

/// The OpenAPI 3 document of this API (no token needed).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "the OpenAPI 3 document", body = Object, content_type = "application/json"))
)]
pub(crate) async fn openapi_json(Extension(doc): Extension<Document>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        doc.0.as_str().to_owned(),
    )
        .into_response()
}

/// What this server was built from (no token needed: the version and commit are no
/// secret, and a client compares them before it authenticates).
#[utoipa::path(
    get,
    path = "/version",
    tag = "operations",
    responses((status = 200, description = "the server's name, version and commit", body = VersionResponse))
)]
pub(crate) async fn version(State(state): State<ServerState>) -> Json<VersionResponse> {
    let build = &state.config().build;
    Json(VersionResponse {
        name: "deployd".to_owned(),
        version: build.version.clone(),
        commit: build.commit.clone(),
    })
}
