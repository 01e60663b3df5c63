//! `router`: every route of the API, registered with its OpenAPI operation, with the body limit and the request middleware (request id, access log, metrics: `crate::access`); the handlers, one module per resource, below `routes/`.
//!
//! Every route goes through utoipa-axum's `routes!`, which takes the method
//! and path from the handler's `#[utoipa::path]`: a route cannot exist without
//! its operation in the document, nor an operation without its route. (A test
//! checks that this file registers no route any other way.)

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::{Extension, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::{ApiDoc, Document};
use crate::state::ServerState;

mod agent;
mod agents;
mod artifacts;
mod audit;
mod environments;
pub(crate) mod job_streams;
pub(crate) mod jobs;
mod notifications;
mod operations;
mod plan;
pub(crate) mod promotions;
mod releases;
mod runtime_policy;
mod secrets;
mod targets;
pub(crate) mod tasks;
mod tokens;

/// The API router: `/api/v1/...`, `/healthz`, `/readyz`, `/metrics`, and the web console under `/ui/`.
pub fn router(state: ServerState) -> Router {
    let limit = state.config().max_body_bytes;
    let (router, doc) = api_router().split_for_parts();
    let document = Document(Arc::new(
        serde_json::to_string(&doc).unwrap_or_else(|_| "{}".to_owned()),
    ));
    let router = router
        // After routing, so that the audit layer sees the matched route template.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::audit::record,
        ));
    crate::console::with_console(router, &state)
        .fallback(operations::not_found)
        .method_not_allowed_fallback(operations::method_not_allowed)
        .layer(Extension(document))
        .layer(DefaultBodyLimit::max(limit))
        // Per route after routing (axum's `Router::layer`): it sees the route template.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::access::observe,
        ))
        .with_state(state)
}

/// The OpenAPI 3 document of [`router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

/// The routes with their operations, before state and layers: one module per resource.
fn api_router() -> OpenApiRouter<ServerState> {
    let api = OpenApiRouter::new()
        .routes(routes!(
            environments::list_environments,
            environments::create_environment
        ))
        .routes(routes!(
            environments::get_environment,
            environments::update_environment,
            environments::delete_environment
        ))
        .routes(routes!(
            runtime_policy::get_runtime_policy,
            runtime_policy::put_runtime_policy
        ))
        .routes(routes!(targets::list_targets, targets::create_target))
        .routes(routes!(
            targets::get_target,
            targets::update_target,
            targets::delete_target
        ))
        .routes(routes!(releases::list_releases, releases::create_release))
        .routes(routes!(releases::get_release))
        .routes(routes!(releases::archive_release))
        .routes(routes!(
            promotions::list_promotions,
            promotions::create_promotion
        ))
        .routes(routes!(promotions::get_promotion))
        .routes(routes!(promotions::approve_promotion))
        .routes(routes!(promotions::reject_promotion))
        .routes(routes!(audit::list_audit))
        .routes(routes!(plan::plan))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::rollback_job))
        .routes(routes!(job_streams::job_events))
        .routes(routes!(artifacts::list_artifacts))
        .routes(routes!(artifacts::get_artifact))
        .routes(routes!(tasks::get_task))
        .routes(routes!(tasks::task_logs))
        .routes(routes!(tasks::task_log_events))
        .routes(routes!(job_streams::job_log_events))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(secrets::list_secrets))
        .routes(routes!(secrets::put_secret, secrets::delete_secret))
        .routes(routes!(
            notifications::list_subscriptions,
            notifications::create_subscription
        ))
        .routes(routes!(notifications::remove_subscription))
        .routes(routes!(notifications::rotate_key))
        .routes(routes!(notifications::list_deliveries))
        .routes(routes!(notifications::get_delivery))
        .routes(routes!(
            agents::create_bootstrap_token,
            agents::list_bootstrap_tokens
        ))
        .routes(routes!(agents::revoke_bootstrap_token))
        .routes(routes!(agents::list_agents))
        .routes(routes!(agents::get_agent))
        .routes(routes!(agents::revoke_agent))
        .routes(routes!(agents::set_agent_labels))
        .routes(routes!(agent::register))
        .routes(routes!(agent::rotate_credential))
        .routes(routes!(agent::poll))
        .routes(routes!(agent::log_chunk))
        .routes(routes!(agent::result))
        .routes(routes!(operations::openapi_json))
        .routes(routes!(operations::version));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(deploy_api::API_PREFIX, api)
        .routes(routes!(operations::healthz))
        .routes(routes!(operations::readyz))
        .routes(routes!(operations::metrics))
}
