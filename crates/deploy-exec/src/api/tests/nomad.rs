//! Nomad against a fake whose JSON follows the Nomad HTTP API documentation (jobs, deployments).

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

const TOKEN: &str = "5f2c7a9e-acl-token-secret";

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Outcome {
    /// `running` for this many reads, then `successful`.
    Succeeds(usize),
    Fails,
    Never,
    /// Someone registers the job between our read and our write.
    Concurrent,
}

pub(super) struct State {
    job: Value,
    deployment: Value,
    outcome: Outcome,
    canaries: u64,
    polls: usize,
}

fn job_json(index: u64) -> Value {
    json!({
        "ID": "web", "Name": "web", "Namespace": "prod", "Region": "eu", "Type": "service",
        "Version": 3, "JobModifyIndex": index, "ModifyIndex": index, "CreateIndex": 10,
        "TaskGroups": [{
            "Name": "app", "Count": 2,
            "Update": {"MaxParallel": 1, "Canary": 0, "AutoRevert": true, "AutoPromote": false},
            "Tasks": [
                {"Name": "web", "Driver": "docker", "Config": {"image": image(1), "ports": ["http"]}},
                {"Name": "sidecar", "Driver": "docker", "Config": {"image": "envoyproxy/envoy:v1.30"}}
            ]
        }]
    })
}

pub(super) fn nomad_handler(outcome: Outcome, canaries: u64) -> (Handler, Arc<Mutex<State>>) {
    let state = Arc::new(Mutex::new(State {
        job: job_json(40),
        deployment: Value::Null,
        outcome,
        canaries,
        polls: 0,
    }));
    let shared = state.clone();
    let handler: Handler = Arc::new(move |r: &Recorded| {
        let mut s = state.lock().unwrap();
        let path = r.path.split('?').next().unwrap_or_default().to_owned();
        match (r.method.as_str(), path.as_str()) {
            ("GET", "/v1/job/web") => {
                let answer = s.job.clone();
                if s.outcome == Outcome::Concurrent {
                    let bumped = s.job["JobModifyIndex"].as_u64().unwrap() + 1;
                    s.job["JobModifyIndex"] = json!(bumped);
                }
                Reply::Json(200, answer)
            }
            ("POST", "/v1/job/web") => {
                let body = r.json();
                let current = s.job["JobModifyIndex"].as_u64().unwrap();
                let sent = body["JobModifyIndex"].as_u64().unwrap_or(0);
                if body["EnforceIndex"] != true || sent != current {
                    return Reply::Text(
                        500,
                        format!(
                            "Enforcing job modify index {sent}: job exists with conflicting job modify index: {current}"
                        ),
                    );
                }
                let index = current + 7;
                let mut job = body["Job"].clone();
                job["JobModifyIndex"] = json!(index);
                job["Version"] = json!(s.job["Version"].as_u64().unwrap() + 1);
                s.job = job;
                s.deployment = json!({
                    "ID": "dep-2", "JobID": "web", "JobVersion": 4, "JobModifyIndex": index,
                    "Status": "running", "StatusDescription": "Deployment is running",
                    "TaskGroups": {"app": {
                        "AutoPromote": false, "AutoRevert": true, "Promoted": false,
                        "DesiredCanaries": s.canaries, "DesiredTotal": 2,
                        "PlacedAllocs": 0, "HealthyAllocs": 0, "UnhealthyAllocs": 0
                    }}
                });
                Reply::Json(
                    200,
                    json!({"EvalID": "eval-1", "EvalCreateIndex": index, "JobModifyIndex": index, "Warnings": "", "Index": index}),
                )
            }
            ("GET", "/v1/job/web/deployment") => {
                if s.deployment.is_null() {
                    return Reply::Json(
                        200,
                        json!({"ID": "dep-1", "JobModifyIndex": 30, "Status": "successful", "TaskGroups": {}}),
                    );
                }
                s.polls += 1;
                let polls = s.polls;
                let d = &mut s.deployment;
                let g = &mut d["TaskGroups"]["app"];
                let canaries = g["DesiredCanaries"].as_u64().unwrap();
                if canaries > 0 && g["Promoted"] != true {
                    // Canaries become healthy, then wait for the promotion.
                    g["HealthyAllocs"] = json!(canaries);
                } else {
                    g["HealthyAllocs"] = json!((polls as u64).min(2));
                }
                let status = match outcome {
                    Outcome::Succeeds(n)
                        if polls > n && (canaries == 0 || g["Promoted"] == true) =>
                    {
                        "successful"
                    }
                    Outcome::Fails if polls > 1 => "failed",
                    _ => "running",
                };
                d["Status"] = json!(status);
                if status == "failed" {
                    d["StatusDescription"] = json!(
                        "Failed due to unhealthy allocations - rolling back to job version 3"
                    );
                }
                Reply::Json(200, d.clone())
            }
            ("POST", "/v1/deployment/promote/dep-2") => {
                s.deployment["TaskGroups"]["app"]["Promoted"] = json!(true);
                Reply::Json(
                    200,
                    json!({"EvalID": "eval-2", "DeploymentModifyIndex": 60, "Index": 60}),
                )
            }
            _ => Reply::Text(404, "not found".into()),
        }
    });
    (handler, shared)
}

pub(super) fn nomad_target(base: &str) -> deploy_core::Target {
    target(
        TargetType::NomadJob,
        ApiConnection::Nomad {
            address: HttpUrl::parse(base).unwrap(),
            namespace: Some(ResourceName::parse("prod").unwrap()),
            region: Some(ResourceName::parse("eu").unwrap()),
            job: ResourceName::parse("web").unwrap(),
            task_group: ResourceName::parse("app").unwrap(),
            task: ResourceName::parse("web").unwrap(),
            credential_ref: Some(CredentialRef::parse("env:NOMAD_TOKEN").unwrap()),
            ca_ref: None,
            client_cert_ref: None,
            client_key_ref: None,
        },
    )
}

#[tokio::test]
async fn deploy_registers_with_enforce_index_and_follows_the_deployment() {
    let (handler, state) = nomad_handler(Outcome::Succeeds(2), 0);
    let fake = Fake::start(handler).await;
    let t = nomad_target(&fake.base);
    let exec = executor(&[("env:NOMAD_TOKEN", TOKEN)]);
    let (c, sink) = ctx(5_000);
    let result = exec.deploy(&request(&t, 2), &c).await;
    let result = result.unwrap_or_else(|e| panic!("{e:?}"));
    assert!(result.changed);
    assert_eq!(result.previous_digest, Some(digest(1)));
    let calls = fake.calls();
    assert_eq!(calls[0], "GET /v1/job/web?namespace=prod&region=eu");
    assert_eq!(calls[1], "POST /v1/job/web?namespace=prod&region=eu");
    assert!(
        calls[2..]
            .iter()
            .all(|c| c == "GET /v1/job/web/deployment?namespace=prod&region=eu"),
        "{calls:?}"
    );
    assert_eq!(calls.len(), 2 + 3);
    let requests = fake.requests();
    assert!(requests.iter().all(|r| r.header("x-nomad-token") == TOKEN));
    let register = requests[1].json();
    assert_eq!(register["EnforceIndex"], true);
    assert_eq!(register["JobModifyIndex"], 40);
    let tasks = &register["Job"]["TaskGroups"][0]["Tasks"];
    assert_eq!(tasks[0]["Config"]["image"], image(2));
    assert_eq!(tasks[0]["Config"]["ports"][0], "http");
    assert_eq!(tasks[1]["Config"]["image"], "envoyproxy/envoy:v1.30");
    assert_eq!(
        state.lock().unwrap().job["TaskGroups"][0]["Tasks"][0]["Config"]["image"],
        image(2)
    );
    assert_no_secret(&sink, TOKEN);

    assert_redeploy_is_a_no_op(&exec, &t).await;
    assert_eq!(
        fake.calls()
            .iter()
            .filter(|c| c.starts_with("POST /v1/job/"))
            .count(),
        1
    );
}

#[tokio::test]
async fn canaries_are_promoted_once_healthy() {
    let (handler, _) = nomad_handler(Outcome::Succeeds(1), 1);
    let fake = Fake::start(handler).await;
    let (c, _) = ctx(5_000);
    let result = executor(&[("env:NOMAD_TOKEN", TOKEN)])
        .deploy(&request(&nomad_target(&fake.base), 2), &c)
        .await;
    assert!(result.is_ok(), "{result:?}");
    let promotes: Vec<Recorded> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1/deployment/promote/"))
        .collect();
    assert_eq!(promotes.len(), 1, "{:?}", fake.calls());
    assert_eq!(
        promotes[0].json(),
        json!({"DeploymentID": "dep-2", "All": true})
    );
}

#[tokio::test]
async fn a_failed_deployment_is_a_permanent_failure() {
    let (handler, _) = nomad_handler(Outcome::Fails, 0);
    let fake = Fake::start(handler).await;
    let err = deploy_failure(
        &nomad_target(&fake.base),
        &[("env:NOMAD_TOKEN", TOKEN)],
        5_000,
    )
    .await;
    assert!(matches!(err, ExecError::RolloutFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("unhealthy allocations"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_deployment_that_never_finishes_hits_the_progress_deadline() {
    let (handler, _) = nomad_handler(Outcome::Never, 0);
    let fake = Fake::start(handler).await;
    let err = deploy_failure(
        &nomad_target(&fake.base),
        &[("env:NOMAD_TOKEN", TOKEN)],
        300,
    )
    .await;
    assert!(matches!(err, ExecError::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string().contains("deployment dep-2 running"),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_concurrent_register_is_a_retryable_conflict() {
    let (handler, state) = nomad_handler(Outcome::Concurrent, 0);
    let fake = Fake::start(handler).await;
    let err = deploy_failure(
        &nomad_target(&fake.base),
        &[("env:NOMAD_TOKEN", TOKEN)],
        5_000,
    )
    .await;
    assert!(matches!(err, ExecError::ApiConflict { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("changed concurrently"), "{err}");
    assert!(
        err.to_string().contains("conflicting job modify index: 41"),
        "{err}"
    );
    // The job was not changed.
    assert_eq!(
        state.lock().unwrap().job["TaskGroups"][0]["Tasks"][0]["Config"]["image"],
        image(1)
    );
}

#[tokio::test]
async fn auth_failures_are_permanent_and_server_and_transport_failures_retry() {
    super::fake::check_error_classes(nomad_target, &[("env:NOMAD_TOKEN", TOKEN)]).await;
}

#[tokio::test]
async fn an_unchanged_job_without_a_current_deployment_needs_no_wait() {
    // The fake's latest deployment (index 30) predates the job's modify index (40).
    let (handler, _) = nomad_handler(Outcome::Never, 0);
    let fake = Fake::start(handler).await;
    let (c, _) = ctx(5_000);
    let result = executor(&[("env:NOMAD_TOKEN", TOKEN)])
        .deploy(&request(&nomad_target(&fake.base), 1), &c)
        .await;
    assert!(result.as_ref().is_ok_and(|d| !d.changed), "{result:?}");
    assert_eq!(
        fake.calls(),
        [
            "GET /v1/job/web?namespace=prod&region=eu",
            "GET /v1/job/web/deployment?namespace=prod&region=eu"
        ]
    );
}
