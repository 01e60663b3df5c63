//! Tests of the wire types: unknown fields refused, problem types stable, roles ordered.

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
