//! ECS against a deterministic fake: request shapes, signing, rollout outcomes and error classes.

use std::sync::{Arc, Mutex};

use deploy_core::testing::digest;
use deploy_core::{ApiConnection, CredentialRef, HttpUrl, ResourceName, TargetType};
use serde_json::{Value, json};

use super::fake::{
    Fake, Handler, Recorded, Reply, assert_no_secret, assert_redeploy_is_a_no_op, ctx,
    deploy_failure, executor, image, request, target,
};
use crate::errors::ExecError;
use crate::executor::Executor;

const SECRET: &str = "AKIDTEST:s3cr3t-access-key-value";

/// How the fake's rollout ends.
#[derive(Clone, Copy)]
pub(super) enum Rollout {
    /// IN_PROGRESS for this many reads, then COMPLETED.
    Completes(usize),
    Fails,
    Never,
    /// No rolloutState (older answers): the old deployment drains after one read.
    Legacy,
}

struct State {
    definitions: Vec<Value>,
    service_arn: String,
    rollout: Rollout,
    polls: usize,
}

fn arn(revision: usize) -> String {
    format!("arn:aws:ecs:eu-west-1:123456789012:task-definition/web:{revision}")
}

pub(super) fn ecs_handler(rollout: Rollout) -> Handler {
    let first = json!({
        "taskDefinitionArn": arn(1), "family": "web", "revision": 1, "status": "ACTIVE",
        "networkMode": "awsvpc", "cpu": "256", "memory": "512",
        "requiresCompatibilities": ["FARGATE"], "compatibilities": ["EC2", "FARGATE"],
        "registeredAt": 1_700_000_000.0,
        "containerDefinitions": [
            {"name": "web", "image": image(1), "essential": true, "portMappings": [{"containerPort": 8080}]},
            {"name": "envoy", "image": "envoyproxy/envoy:v1.30", "essential": false}
        ]
    });
    let state = Arc::new(Mutex::new(State {
        definitions: vec![first],
        service_arn: arn(1),
        rollout,
        polls: 0,
    }));
    Arc::new(move |r: &Recorded| {
        let mut s = state.lock().unwrap();
        let body = r.json();
        let action = r
            .header("x-amz-target")
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        match action.as_str() {
            "DescribeServices" => {
                let updated = s.service_arn != arn(1);
                let rollout_state = if !updated {
                    "COMPLETED"
                } else {
                    s.polls += 1;
                    match s.rollout {
                        Rollout::Completes(n) if s.polls > n => "COMPLETED",
                        Rollout::Fails if s.polls > 1 => "FAILED",
                        _ => "IN_PROGRESS",
                    }
                };
                let mut answer = json!({
                    "services": [{
                        "serviceName": "web", "taskDefinition": s.service_arn,
                        "deployments": [{
                            "status": "PRIMARY", "taskDefinition": s.service_arn,
                            "desiredCount": 2, "runningCount": 1,
                            "rolloutState": rollout_state,
                            "rolloutStateReason": "ECS deployment circuit breaker: tasks failed to start."
                        }]
                    }],
                    "failures": []
                });
                if matches!(s.rollout, Rollout::Legacy) && updated {
                    let d = &mut answer["services"][0]["deployments"];
                    d[0].as_object_mut().unwrap().remove("rolloutState");
                    if s.polls <= 1 {
                        d.as_array_mut().unwrap().push(json!({"status": "ACTIVE", "taskDefinition": arn(1), "desiredCount": 0, "runningCount": 1}));
                    } else {
                        d[0]["runningCount"] = json!(2);
                    }
                }
                Reply::Json(200, answer)
            }
            "DescribeTaskDefinition" => {
                let wanted = body["taskDefinition"].as_str().unwrap_or_default();
                match s.definitions.iter().find(|d| d["taskDefinitionArn"] == wanted) {
                    Some(d) => Reply::Json(200, json!({"taskDefinition": d})),
                    None => Reply::Text(400, r#"{"__type":"ClientException","message":"Unable to describe task definition."}"#.into()),
                }
            }
            "RegisterTaskDefinition" => {
                let mut d = body.clone();
                let revision = s.definitions.len() + 1;
                d["taskDefinitionArn"] = json!(arn(revision));
                d["revision"] = json!(revision);
                s.definitions.push(d.clone());
                Reply::Json(200, json!({"taskDefinition": d}))
            }
            "UpdateService" => {
                s.service_arn = body["taskDefinition"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                Reply::Json(
                    200,
                    json!({"service": {"serviceName": "web", "taskDefinition": s.service_arn}}),
                )
            }
            _ => Reply::Text(400, "unknown action".into()),
        }
    })
}

pub(super) fn ecs_target(base: &str) -> deploy_core::Target {
    target(
        TargetType::EcsService,
        ApiConnection::Ecs {
            endpoint: Some(HttpUrl::parse(base).unwrap()),
            region: ResourceName::parse("eu-west-1").unwrap(),
            cluster: ResourceName::parse("prod").unwrap(),
            service: ResourceName::parse("web").unwrap(),
            container: ResourceName::parse("web").unwrap(),
            credential_ref: Some(CredentialRef::parse("env:AWS_KEYS").unwrap()),
            profile: None,
        },
    )
}

#[tokio::test]
async fn deploy_registers_a_copy_with_one_image_changed_and_waits_for_completed() {
    let fake = Fake::start(ecs_handler(Rollout::Completes(3))).await;
    let t = ecs_target(&fake.base);
    let exec = executor(&[("env:AWS_KEYS", SECRET)]);
    let (c, sink) = ctx(5_000);
    let result = exec.deploy(&request(&t, 2), &c).await;
    let result = result.unwrap_or_else(|e| panic!("{e:?}"));
    assert!(result.changed);
    assert_eq!(result.previous_digest, Some(digest(1)));
    assert_eq!(result.deployed_digest, digest(2));
    let actions: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.header("x-amz-target").to_owned())
        .collect();
    assert_eq!(
        &actions[..4],
        [
            "AmazonEC2ContainerServiceV20141113.DescribeServices",
            "AmazonEC2ContainerServiceV20141113.DescribeTaskDefinition",
            "AmazonEC2ContainerServiceV20141113.RegisterTaskDefinition",
            "AmazonEC2ContainerServiceV20141113.UpdateService",
        ]
    );
    // 3 IN_PROGRESS reads, then COMPLETED.
    assert_eq!(actions.len(), 4 + 4);
    let requests = fake.requests();
    let register = requests[2].json();
    assert_eq!(register["family"], "web");
    assert_eq!(register["containerDefinitions"][0]["image"], image(2));
    assert_eq!(
        register["containerDefinitions"][0]["portMappings"][0]["containerPort"],
        8080
    );
    assert_eq!(
        register["containerDefinitions"][1]["image"],
        "envoyproxy/envoy:v1.30"
    );
    for read_only in [
        "taskDefinitionArn",
        "revision",
        "status",
        "compatibilities",
        "registeredAt",
    ] {
        assert!(
            register.get(read_only).is_none(),
            "{read_only} was sent back: {register}"
        );
    }
    assert_eq!(
        requests[3].json(),
        json!({"cluster": "prod", "service": "web", "taskDefinition": arn(2)})
    );
    let auth = requests[0].header("authorization");
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/"),
        "{auth}"
    );
    assert!(auth.contains("/eu-west-1/ecs/aws4_request"), "{auth}");
    assert!(
        auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target"),
        "{auth}"
    );
    assert_eq!(
        requests[0].header("content-type"),
        "application/x-amz-json-1.1"
    );
    assert_no_secret(&sink, "s3cr3t-access-key-value");
    assert!(
        sink.lines()
            .iter()
            .any(|l| l.contains("rolloutState IN_PROGRESS")),
        "{:?}",
        sink.lines()
    );

    // Inspect now reads the new revision; deploying the same digest again changes nothing.
    assert_redeploy_is_a_no_op(&exec, &t).await;
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.header("x-amz-target").ends_with("RegisterTaskDefinition"))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_failed_rollout_is_a_permanent_failure_with_the_reason() {
    let fake = Fake::start(ecs_handler(Rollout::Fails)).await;
    let err = deploy_failure(&ecs_target(&fake.base), &[("env:AWS_KEYS", SECRET)], 5_000).await;
    assert!(matches!(err, ExecError::RolloutFailed { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("circuit breaker"), "{err}");
}

#[tokio::test]
async fn a_rollout_that_never_completes_hits_the_progress_deadline() {
    let fake = Fake::start(ecs_handler(Rollout::Never)).await;
    let err = deploy_failure(&ecs_target(&fake.base), &[("env:AWS_KEYS", SECRET)], 300).await;
    assert!(matches!(err, ExecError::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string().contains("rolloutState IN_PROGRESS"),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn run_command_is_not_supported() {
    let t = ecs_target("http://127.0.0.1:9");
    let (c, _) = ctx(1_000);
    let cmd = deploy_core::CommandSpec::new(vec!["true".into()]).unwrap();
    let err = executor(&[]).run_command(&t, &cmd, &c).await.unwrap_err();
    assert!(matches!(err, ExecError::NotSupported { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("ecs_service"), "{err}");
}

#[tokio::test]
async fn a_malformed_access_key_is_a_permanent_secret_error() {
    let err = deploy_failure(
        &ecs_target("http://127.0.0.1:9"),
        &[("env:AWS_KEYS", "no-colon-here")],
        1_000,
    )
    .await;
    assert!(matches!(err, ExecError::Secret { .. }), "{err:?}");
    assert!(!err.to_string().contains("no-colon-here"), "{err}");
}

#[tokio::test]
async fn auth_failures_are_permanent_and_server_and_transport_failures_retry() {
    super::fake::check_error_classes(ecs_target, &[("env:AWS_KEYS", SECRET)]).await;
}

#[tokio::test]
async fn without_rollout_state_the_service_must_be_stable() {
    let fake = Fake::start(ecs_handler(Rollout::Legacy)).await;
    let (c, sink) = ctx(5_000);
    let result = executor(&[("env:AWS_KEYS", SECRET)])
        .deploy(&request(&ecs_target(&fake.base), 2), &c)
        .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        sink.lines()
            .iter()
            .any(|l| l.contains("no rolloutState, 2 deployments, running 1/2")),
        "{:?}",
        sink.lines()
    );
}
