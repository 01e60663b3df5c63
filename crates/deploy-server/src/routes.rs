//! `router`: every route of the API, with the body limit and the response counter.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::handlers as h;
use crate::sse;
use crate::state::ServerState;

/// The API router: `/api/v1/...`, `/healthz`, `/readyz`, `/metrics`.
pub fn router(state: ServerState) -> Router {
    let api = Router::new()
        .route("/environments", post(h::create_environment))
        .route("/environments/{id}", get(h::get_environment))
        .route(
            "/environments/{id}/targets",
            post(h::create_target).get(h::list_targets),
        )
        .route("/releases", post(h::create_release))
        .route("/releases/{id}", get(h::get_release))
        .route("/promotions", post(h::create_promotion))
        .route("/promotions/{id}", get(h::get_promotion))
        .route("/promotions/{id}/approve", post(h::approve_promotion))
        .route("/promotions/{id}/reject", post(h::reject_promotion))
        .route("/jobs", get(h::list_jobs))
        .route("/jobs/{id}", get(h::get_job))
        .route("/jobs/{id}/cancel", post(h::cancel_job))
        .route("/jobs/{id}/rollback", post(h::rollback_job))
        .route("/jobs/{id}/events", get(sse::job_events))
        .route("/jobs/{id}/artifacts", get(h::list_artifacts))
        .route("/jobs/{id}/artifacts/{kind}", get(h::get_artifact))
        .route("/tasks/{id}", get(h::get_task))
        .route("/tasks/{id}/logs", get(h::task_logs))
        .route("/tokens", post(h::create_token));
    let limit = state.config().max_body_bytes;
    Router::new()
        .nest(deploy_api::API_PREFIX, api)
        .route("/healthz", get(h::healthz))
        .route("/readyz", get(h::readyz))
        .route("/metrics", get(h::metrics))
        .fallback(h::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

async fn count(State(state): State<ServerState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state.metrics().record_response(response.status().as_u16());
    response
}
