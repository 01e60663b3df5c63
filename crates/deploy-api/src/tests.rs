//! Tests of the wire types: unknown fields refused, problem types stable, roles ordered, schemas in step with deploy-core.

use super::*;

#[test]
fn unknown_fields_are_refused() {
    let err = serde_json::from_str::<CreateEnvironmentRequest>(r#"{"name":"prod","nmae":"x"}"#)
        .unwrap_err();
    assert!(err.to_string().contains("unknown field `nmae`"), "{err}");
}

#[test]
fn bad_values_fail_while_decoding() {
    let err = serde_json::from_str::<CreateReleaseRequest>(
        r#"{"name":"r1","components":[{"name":"web","image":"nginx:latest"}]}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("digest"), "{err}");
}

#[test]
fn problem_types_are_stable() {
    let uris: Vec<String> = ProblemType::ALL.iter().map(|t| t.uri()).collect();
    assert_eq!(uris[0], "urn:deploy:problem:bad-request");
    assert_eq!(
        ProblemType::from_uri("urn:deploy:problem:environment-busy"),
        Some(ProblemType::EnvironmentBusy)
    );
    let p = Problem::new(ProblemType::Unprocessable, "x").with_field("components[0].name");
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["type"], "urn:deploy:problem:unprocessable");
    assert_eq!(json["status"], 422);
    assert_eq!(json["field"], "components[0].name");
}

#[test]
fn roles_are_ordered() {
    assert!(Role::Admin.allows(Role::Deployer));
    assert!(Role::Deployer.allows(Role::Viewer));
    assert!(!Role::Viewer.allows(Role::Deployer));
    assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
    assert_eq!(
        "root".parse::<Role>().unwrap_err().to_string(),
        "role `root` is unknown; expected viewer, deployer or admin"
    );
}

/// The property names of a `ToSchema` type's (object) schema.
fn properties<T: utoipa::PartialSchema>() -> Vec<String> {
    let schema = serde_json::to_value(T::schema()).unwrap();
    let mut keys: Vec<String> = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("not an object schema: {schema}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// The keys of a value's JSON object.
fn keys<T: serde::Serialize>(value: &T) -> Vec<String> {
    let mut keys: Vec<String> = serde_json::to_value(value)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Each schema-only mirror has exactly the fields deploy-core serializes: a field
/// added to or removed from a deploy-core entity fails here, not in a client.
#[test]
fn schema_mirrors_match_deploy_core() {
    use deploy_core::testing;
    let mut job = testing::job(1, 2);
    job.artifacts.push(deploy_core::GeneratedArtifact::new(
        testing::artifact_id(1),
        job.id,
        None,
        deploy_core::ArtifactKind::ALL[0],
        testing::name("manifest.json"),
        "{}".to_owned(),
    ));
    let checks: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        (
            "Environment",
            properties::<schema::Environment>(),
            keys(&testing::environment("prod")),
        ),
        (
            "RuntimePolicy",
            properties::<schema::RuntimePolicy>(),
            keys(&deploy_core::RuntimePolicy::default()),
        ),
        (
            "Target",
            properties::<schema::Target>(),
            keys(&testing::ssh_target(1)),
        ),
        (
            "Release",
            properties::<schema::Release>(),
            keys(&testing::release(&["web"])),
        ),
        (
            "Component",
            properties::<schema::Component>(),
            keys(&testing::release(&["web"]).components[0]),
        ),
        (
            "Promotion",
            properties::<schema::Promotion>(),
            keys(&testing::promotion(1)),
        ),
        (
            "DeploymentTask",
            properties::<schema::DeploymentTask>(),
            keys(&testing::task(1, 3)),
        ),
        (
            "GeneratedArtifact",
            properties::<schema::GeneratedArtifact>(),
            keys(&job.artifacts[0]),
        ),
        (
            "DeploymentJob",
            properties::<schema::DeploymentJob>(),
            keys(&job),
        ),
    ];
    for (name, schema, value) in checks {
        assert_eq!(
            schema, value,
            "schema `{name}` and deploy-core's JSON differ"
        );
    }
}

/// API-owned bodies: the schema's properties are the serialized fields.
#[test]
fn api_schemas_match_their_json() {
    let token = TokenSummary {
        id: uuid::Uuid::nil(),
        name: "ci".to_owned(),
        role: Role::Deployer,
        created_at: deploy_core::testing::ts(1),
        last_used_at: None,
        revoked_at: None,
        expires_at: None,
    };
    assert_eq!(properties::<TokenSummary>(), keys(&token));
    assert!(
        !properties::<TokenSummary>()
            .iter()
            .any(|k| k.contains("hash") || k == "token")
    );
    let problem = Problem::new(ProblemType::NotFound, "x").with_field("id");
    assert_eq!(properties::<Problem>(), keys(&problem));
}

/// A listed job has every field of `DeploymentJob`; its artifacts keep kind, target,
/// file name, size and sha256 but not their content.
#[test]
fn listed_jobs_drop_artifact_contents_only() {
    use deploy_core::testing;
    let mut job = testing::job(1, 2);
    job.artifacts.push(deploy_core::GeneratedArtifact::new(
        testing::artifact_id(1),
        job.id,
        None,
        deploy_core::ArtifactKind::ALL[0],
        testing::name("manifest.json"),
        "{\"secret-ish\": \"body\"}".to_owned(),
    ));
    let listed = JobListItem::from(job.clone());
    assert_eq!(keys(&listed), keys(&job));
    assert_eq!(properties::<JobListItem>(), keys(&listed));
    let json = serde_json::to_value(&listed).unwrap();
    let artifact = &json["artifacts"][0];
    assert!(artifact.get("content").is_none(), "{artifact}");
    assert_eq!(artifact["file_name"], "manifest.json");
    assert_eq!(artifact["size"], job.artifacts[0].size);
    assert_eq!(artifact["sha256"], job.artifacts[0].sha256.to_string());
    assert_eq!(json["tasks"], serde_json::to_value(&job.tasks).unwrap());
}

#[test]
fn agent_secrets_never_show_in_debug() {
    use deploy_core::testing::{agent_id, ts};
    let at = ts(1);
    let created = agent::CreatedBootstrapToken {
        id: uuid::Uuid::nil(),
        name: deploy_core::Name::parse("rack-1").unwrap(),
        labels: deploy_core::Labels::default(),
        capabilities: vec![agent::AgentCapability::Docker],
        token: "dpb_secret-token".into(),
        expires_at: at,
    };
    let text = format!("{created:?}");
    assert!(!text.contains("dpb_secret-token"), "{text}");
    assert!(
        text.contains("rack-1") && text.contains("<redacted>"),
        "{text}"
    );
    let credentials = agent::AgentCredentials {
        protocol: 1,
        agent_id: agent_id(1),
        name: deploy_core::Name::parse("rack-1").unwrap(),
        labels: deploy_core::Labels::default(),
        credential: "dpa_secret-credential".into(),
        heartbeat_timeout_ms: 30_000,
    };
    let text = format!("{credentials:?}");
    assert!(!text.contains("dpa_secret-credential"), "{text}");
    assert!(
        text.contains("30000") && text.contains("<redacted>"),
        "{text}"
    );
}

#[test]
fn proposed_agent_credentials_never_show_in_debug_and_are_optional_on_the_wire() {
    let credential = format!("dpa_{}", "ab".repeat(32));
    let register: agent::RegisterAgentRequest = serde_json::from_value(serde_json::json!({
        "protocol": 1, "name": "web-1", "capabilities": ["docker"], "credential": credential,
    }))
    .unwrap();
    let text = format!("{register:?}");
    assert!(!text.contains(&credential), "{text}");
    assert!(
        text.contains("web-1") && text.contains("<redacted>"),
        "{text}"
    );
    let rotate = agent::RotateCredentialRequest {
        protocol: 1,
        credential: credential.clone(),
    };
    assert!(!format!("{rotate:?}").contains(&credential));
    // Old agents send no credential; and none is written when there is none.
    let old: agent::RegisterAgentRequest = serde_json::from_value(serde_json::json!({
        "protocol": 1, "name": "web-1", "capabilities": ["docker"],
    }))
    .unwrap();
    assert_eq!(old.credential, None);
    assert!(!serde_json::to_string(&old).unwrap().contains("credential"));
}

#[test]
fn agent_credentials_have_one_shape() {
    let hex = "0123456789abcdef".repeat(4);
    assert!(agent::is_agent_credential(&format!("dpa_{hex}")));
    for bad in [
        String::new(),
        hex.clone(),
        format!("dpb_{hex}"),
        format!("dpa_{}", &hex[1..]),
        format!("dpa_{hex}0"),
        format!("dpa_{}", hex.to_uppercase()),
        format!("dpa_{}g", &hex[1..]),
        format!("dpa_{}é", &hex[2..]),
    ] {
        assert!(!agent::is_agent_credential(&bad), "{bad}");
    }
}
