//! `router`: every route of the API, registered with its OpenAPI operation, with the body limit and the response counter.
//!
//! Every route goes through utoipa-axum's `routes!`, which takes the method
//! and path from the handler's `#[utoipa::path]`: a route cannot exist without
//! its operation in the document, nor an operation without its route. (A test
//! checks that this file registers no route any other way.)

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Extension, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::handlers as h;
use crate::openapi::{self as doc, ApiDoc, Document};
use crate::state::ServerState;
use crate::{
    agent_routes as agents, audit, environments as env, lists, log_sse, plan, promotions as promo,
    sse, token_routes,
};

/// The API router: `/api/v1/...`, `/healthz`, `/readyz`, `/metrics`.
pub fn router(state: ServerState) -> Router {
    let limit = state.config().max_body_bytes;
    let (router, doc) = api_router().split_for_parts();
    let document = Document(Arc::new(
        serde_json::to_string(&doc).unwrap_or_else(|_| "{}".to_owned()),
    ));
    router
        // After routing, so that the audit layer sees the matched route template.
        .route_layer(middleware::from_fn_with_state(state.clone(), audit::record))
        .fallback(h::not_found)
        .method_not_allowed_fallback(h::method_not_allowed)
        .layer(Extension(document))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// The OpenAPI 3 document of [`router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

/// The routes with their operations, before state and layers.
fn api_router() -> OpenApiRouter<ServerState> {
    let api = OpenApiRouter::new()
        .routes(routes!(lists::list_environments, env::create_environment))
        .routes(routes!(
            env::get_environment,
            env::update_environment,
            env::delete_environment
        ))
        .routes(routes!(
            crate::runtime_policy::get_runtime_policy,
            crate::runtime_policy::put_runtime_policy
        ))
        .routes(routes!(env::list_targets, env::create_target))
        .routes(routes!(
            env::get_target,
            env::update_target,
            env::delete_target
        ))
        .routes(routes!(lists::list_releases, h::create_release))
        .routes(routes!(h::get_release))
        .routes(routes!(h::archive_release))
        .routes(routes!(promo::list_promotions, promo::create_promotion))
        .routes(routes!(promo::get_promotion))
        .routes(routes!(promo::approve_promotion))
        .routes(routes!(promo::reject_promotion))
        .routes(routes!(audit::list_audit))
        .routes(routes!(plan::plan))
        .routes(routes!(h::list_jobs))
        .routes(routes!(h::get_job))
        .routes(routes!(h::cancel_job))
        .routes(routes!(h::rollback_job))
        .routes(routes!(sse::job_events))
        .routes(routes!(h::list_artifacts))
        .routes(routes!(h::get_artifact))
        .routes(routes!(h::get_task))
        .routes(routes!(h::task_logs))
        .routes(routes!(log_sse::task_log_events))
        .routes(routes!(crate::job_log_sse::job_log_events))
        .routes(routes!(token_routes::list_tokens, h::create_token))
        .routes(routes!(token_routes::revoke_token))
        .routes(routes!(crate::secret_routes::list_secrets))
        .routes(routes!(
            crate::secret_routes::put_secret,
            crate::secret_routes::delete_secret
        ))
        .routes(routes!(
            agents::create_bootstrap_token,
            agents::list_bootstrap_tokens
        ))
        .routes(routes!(agents::revoke_bootstrap_token))
        .routes(routes!(agents::list_agents))
        .routes(routes!(agents::get_agent))
        .routes(routes!(agents::revoke_agent))
        .routes(routes!(agents::set_agent_labels))
        .routes(routes!(agents::register))
        .routes(routes!(agents::rotate_credential))
        .routes(routes!(agents::poll))
        .routes(routes!(agents::log_chunk))
        .routes(routes!(agents::result))
        .routes(routes!(doc::openapi_json));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(deploy_api::API_PREFIX, api)
        .routes(routes!(h::healthz))
        .routes(routes!(h::readyz))
        .routes(routes!(h::metrics))
}

async fn count(State(state): State<ServerState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state.metrics().record_response(response.status().as_u16());
    response
}
