//! The OpenAPI document: served without a token, every operation routed (and every route documented), the main schemas present.

use axum::http::StatusCode;
use serde_json::Value;

use super::Fixture;

/// One operation of the document.
#[derive(Debug, Clone)]
pub(super) struct Operation {
    /// Lowercase, as in the document.
    pub method: String,
    pub path: String,
    /// True when it names the bearer scheme (API tokens).
    pub secured: bool,
    /// True when it names an agent scheme (`agent`, `agent_bootstrap`): API tokens are refused.
    pub agent: bool,
}

/// Every operation of `doc`.
pub(super) fn operations(doc: &utoipa::openapi::OpenApi) -> Vec<Operation> {
    let doc = serde_json::to_value(doc).unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let secured = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            let agent = op["security"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|r| r.get("agent").is_some() || r.get("agent_bootstrap").is_some())
            });
            ops.push(Operation {
                method: method.clone(),
                path: path.clone(),
                secured,
                agent,
            });
        }
    }
    ops
}

/// The document path template a concrete request path matches (`""` when none does).
pub(super) fn template_of(path: &str, ops: &[Operation]) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    ops.iter()
        .map(|o| o.path.as_str())
        .find(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == segments.len()
                && ts
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
        })
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_document_is_served_without_a_token_and_is_the_generated_one() {
    let f = Fixture::new().await;
    let (status, headers, bytes) = f.raw("GET", "/api/v1/openapi.json", None, None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let served: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        served["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        served["openapi"]
    );
    assert_eq!(served, serde_json::to_value(crate::openapi()).unwrap());
    assert_eq!(
        served["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

/// Document -> router: each operation is served (an unknown route is the fallback's
/// 404, an unknown method 405), secured ones answer 401 without a token, the others 200.
/// Router -> document: routes.rs registers routes only through `routes!` (from the
/// operations), checked on its source.
#[tokio::test]
async fn every_route_is_documented_and_every_operation_routed() {
    let f = Fixture::new().await;
    let ops = operations(&crate::openapi());
    assert!(ops.len() >= 38, "{} operations", ops.len());
    let agent_ops: Vec<&str> = ops
        .iter()
        .filter(|o| o.agent)
        .map(|o| o.path.as_str())
        .collect();
    assert_eq!(
        agent_ops,
        [
            "/api/v1/agent/credential/rotate",
            "/api/v1/agent/poll",
            "/api/v1/agent/register",
            "/api/v1/agent/tasks/{task_id}/attempts/{attempt}/logs",
            "/api/v1/agent/tasks/{task_id}/attempts/{attempt}/result",
        ]
    );
    assert!(
        ops.iter().all(|o| !(o.agent && o.secured)),
        "an operation takes API tokens and agent credentials"
    );
    let id = "019a0000-0000-7000-8000-000000000000";
    for op in &ops {
        let path = op
            .path
            .replace("{id}", id)
            .replace("{task_id}", id)
            .replace("{attempt}", "1")
            .replace("{kind}", "manifest");
        let (status, _, bytes) = f
            .raw(&op.method.to_uppercase(), &path, None, None, &[])
            .await;
        let body = String::from_utf8_lossy(&bytes);
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{} {}: {status} {body}",
            op.method,
            op.path
        );
        // Secured operations (API token or agent credential) answer 401 before looking
        // at the (missing) body.
        let expected = if op.secured || op.agent {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        assert_eq!(status, expected, "{} {}: {body}", op.method, op.path);
    }
    let unsecured: Vec<&str> = ops
        .iter()
        .filter(|o| !o.secured && !o.agent)
        .map(|o| o.path.as_str())
        .collect();
    assert_eq!(
        unsecured,
        [
            "/api/v1/openapi.json",
            "/api/v1/version",
            "/healthz",
            "/metrics",
            "/readyz"
        ]
    );

    let source = include_str!("../routes.rs");
    for forbidden in [".route(", ".route_service(", ".nest_service(", ".merge("] {
        assert!(
            !source.contains(forbidden),
            "routes.rs registers a route with `{forbidden}`: use `routes!` so it is documented"
        );
    }
}

#[test]
fn the_main_bodies_have_schemas() {
    let doc = serde_json::to_value(crate::openapi()).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "Problem",
        "Environment",
        "Target",
        "Release",
        "Component",
        "Promotion",
        "DeploymentJob",
        "DeploymentTask",
        "CreateEnvironmentRequest",
        "CreateTargetRequest",
        "CreateReleaseRequest",
        "CreatePromotionRequest",
        "ApprovePromotionRequest",
        "ApprovePromotionResponse",
        "RollbackRequest",
        "JobList",
        "JobListItem",
        "EnvironmentList",
        "ReleaseList",
        "LogPage",
        "JobEventDto",
        "ArtifactSummary",
        "CreateTokenRequest",
        "CreatedToken",
        "TokenSummary",
        "PlanRequest",
        "PlanResponse",
        "PlanEntry",
        "CreateBootstrapTokenRequest",
        "CreatedBootstrapToken",
        "RegisterAgentRequest",
        "RotateCredentialRequest",
        "AgentCredentials",
        "AgentSummary",
        "PollRequest",
        "PollResponse",
        "LogChunkRequest",
        "LogAck",
        "TaskResultRequest",
        "ResultAck",
    ] {
        assert!(schemas.contains_key(name), "no schema `{name}`");
    }
    let body_ref = |path: &str, method: &str| {
        doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        body_ref("/api/v1/releases", "post"),
        "#/components/schemas/CreateReleaseRequest"
    );
    assert_eq!(
        body_ref("/api/v1/plan", "post"),
        "#/components/schemas/PlanRequest"
    );
    // Rotation takes an optional body: older agents send none.
    let rotate = &doc["paths"]["/api/v1/agent/credential/rotate"]["post"]["requestBody"];
    assert_ne!(rotate["required"], true, "{rotate}");
    let proposed = rotate["content"]["application/json"]["schema"].to_string();
    assert!(
        proposed.contains("#/components/schemas/RotateCredentialRequest"),
        "{rotate}"
    );
    let ok = &doc["paths"]["/api/v1/jobs/{id}"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"]["$ref"];
    assert_eq!(ok, "#/components/schemas/DeploymentJob");
    let problem = &doc["paths"]["/api/v1/jobs/{id}"]["get"]["responses"]["404"]["content"]["application/problem+json"]
        ["schema"]["$ref"];
    assert_eq!(problem, "#/components/schemas/Problem");
    // A token is listed without its secret or hash.
    let token = schemas["TokenSummary"]["properties"].as_object().unwrap();
    assert!(!token.contains_key("token") && !token.keys().any(|k| k.contains("hash")));
    // Every $ref points at a schema of the document.
    let text = doc.to_string();
    for part in text.split("\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref `{name}`");
    }
}
