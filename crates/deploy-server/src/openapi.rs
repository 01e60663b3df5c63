//! The OpenAPI 3 document: its base (info, bearer scheme, problem responses); `routes/operations.rs` serves it at `GET /api/v1/openapi.json`.
//!
//! The paths are not listed here: `routes::router` registers every route
//! through utoipa-axum from its handler's `#[utoipa::path]`, so the router and
//! the document are built from the same declarations. The document is served
//! without a token: it holds no data, only the shape of the API.

use std::collections::BTreeMap;
use std::sync::Arc;

use deploy_api::{PROBLEM_MEDIA_TYPE, Problem, ProblemType};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi};

/// The base document the router's paths are added to.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "deployd",
        description = "The HTTP API of the deployment system. Authenticate with `Authorization: Bearer <token>`; roles: viewer (read), deployer (plan, deploy, cancel, roll back), admin (environments, targets, tokens). Errors are RFC 9457 problem documents with a stable `type` (`urn:deploy:problem:<slug>`)."
    ),
    components(schemas(Problem)),
    modifiers(&BearerScheme),
    tags(
        (name = "environments", description = "environments and their targets"),
        (name = "releases", description = "releases: component images pinned by digest"),
        (name = "promotions", description = "promotions; approving one creates its job"),
        (name = "plan", description = "dry runs of deploys"),
        (name = "jobs", description = "deployment jobs, their events and artifacts"),
        (name = "tasks", description = "tasks and their logs"),
        (name = "tokens", description = "API tokens (admin)"),
        (name = "secrets", description = "application secrets (admin): written and listed, never read back"),
        (name = "notifications", description = "webhook subscriptions (admin) and their delivery log"),
        (name = "agents", description = "agents as operators see them: bootstrap tokens, list, revoke"),
        (name = "agent", description = "the agent protocol (bearer = a bootstrap token to register, else the agent's credential; API tokens are refused)"),
        (name = "operations", description = "health, readiness, metrics and this document")
    )
)]
pub(crate) struct ApiDoc;

/// Adds the security schemes the operations name: `bearer` (API tokens), `agent`
/// (an agent's credential) and `agent_bootstrap` (a one-time bootstrap token).
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("deployd API token")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "agent",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("deploy-agent credential (dpa_...)")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "agent_bootstrap",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("one-time agent bootstrap token (dpb_...)")
                    .build(),
            ),
        );
    }
}

/// The problem responses every authenticated operation may answer.
pub(crate) struct ProblemResponses;

impl IntoResponses for ProblemResponses {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        let kinds = [
            ProblemType::BadRequest,
            ProblemType::Unauthorized,
            ProblemType::Forbidden,
            ProblemType::NotFound,
            ProblemType::Conflict,
            ProblemType::PayloadTooLarge,
            ProblemType::UnsupportedMediaType,
            ProblemType::Unprocessable,
            ProblemType::Unavailable,
        ];
        let mut map = BTreeMap::new();
        for kind in kinds {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build();
            let description = match kind {
                ProblemType::Conflict => format!(
                    "{}, or `{}` (`type` {})",
                    kind.title(),
                    ProblemType::EnvironmentBusy.title(),
                    ProblemType::EnvironmentBusy.uri()
                ),
                _ => format!("{} (`type` {})", kind.title(), kind.uri()),
            };
            let response = ResponseBuilder::new()
                .description(description)
                .content(PROBLEM_MEDIA_TYPE, content)
                .build();
            map.insert(kind.status().to_string(), RefOr::T(response));
        }
        map
    }
}

/// The document as served, rendered once when the router is built.
#[derive(Clone)]
pub(crate) struct Document(pub Arc<String>);
