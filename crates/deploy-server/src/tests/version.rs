//! `GET /api/v1/version` and the `deployd_build_info` metric: both report the build the embedder put in `ServerConfig::build`, without a token.

use axum::http::StatusCode;
use serde_json::json;

use super::Fixture;
use crate::{BuildInfo, ServerConfig};

fn config(version: &str, commit: &str) -> ServerConfig {
    ServerConfig {
        build: BuildInfo {
            version: version.to_owned(),
            commit: commit.to_owned(),
        },
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn version_is_served_without_a_token() {
    let f = Fixture::with_config(config("1.2.3", "1a2b3c4d5e6f")).await;
    let (status, body) = f.call("GET", "/api/v1/version", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"name": "deployd", "version": "1.2.3", "commit": "1a2b3c4d5e6f"})
    );
    // The wire type reads it back.
    let typed: deploy_api::VersionResponse = serde_json::from_value(body).unwrap();
    assert_eq!(typed.commit, "1a2b3c4d5e6f");
}

#[tokio::test]
async fn version_defaults_to_the_librarys_version_and_an_unknown_commit() {
    let f = Fixture::new().await;
    let (status, body) = f.call("GET", "/api/v1/version", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["commit"], "unknown");
}

#[tokio::test]
async fn metrics_carry_a_build_info_gauge() {
    let f = Fixture::with_config(config("1.2.3", "1a2b3c4d5e6f")).await;
    let (status, _, bytes) = f.raw("GET", "/metrics", None, None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("deployd_build_info"))
        .collect();
    assert_eq!(
        lines,
        [
            "# HELP deployd_build_info The version and git commit deployd was built from.",
            "# TYPE deployd_build_info gauge",
            "deployd_build_info{version=\"1.2.3\",commit=\"1a2b3c4d5e6f\"} 1",
        ],
        "{text}"
    );
}

#[test]
fn build_info_label_values_are_escaped() {
    let mut text = String::new();
    crate::metrics::render_build_info(
        &mut text,
        &BuildInfo {
            version: "0.1.0".to_owned(),
            commit: "a\"b\\c\nd".to_owned(),
        },
    );
    assert!(
        text.contains(r#"deployd_build_info{version="0.1.0",commit="a\"b\\c\nd"} 1"#),
        "{text}"
    );
}

#[test]
fn version_is_in_the_document_as_an_operation_with_its_schema() {
    let doc = serde_json::to_value(crate::openapi()).unwrap();
    let get = &doc["paths"]["/api/v1/version"]["get"];
    assert_eq!(
        get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/VersionResponse",
        "{get}"
    );
    assert!(get.get("security").is_none(), "{get}");
    let schema = &doc["components"]["schemas"]["VersionResponse"];
    assert_eq!(schema["required"], json!(["name", "version", "commit"]));
}
