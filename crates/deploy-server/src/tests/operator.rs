//! The operator workflow on both stores: names everywhere, approval policies, the environment pipeline, versioned updates, token expiry, and an audit row for every write route.

use axum::http::StatusCode;
use deploy_api::Role;
use deploy_core::{JobEvent, TaskEvent};
use serde_json::{Value, json};

use super::{Fixture, openapi, release_body};

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Fixture::new().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Fixture::on_postgres().await).await;
            }
        }
    )*};
}

on_both_stores!(
    names_resolve_in_paths_bodies_and_queries,
    an_approval_policy_refuses_self_approval_and_counts_distinct_approvers,
    the_pipeline_refuses_a_release_that_did_not_complete_upstream,
    updates_compare_versions_and_validate_with_field_paths,
    every_write_route_appends_an_audit_row,
    targets_change_disable_and_retire_only_when_no_job_uses_them,
    a_busy_environment_queues_an_approval_that_asks_for_it,
    an_approved_promotion_is_only_for_approvers_and_a_deleted_environment_takes_no_job,
);

impl Fixture {
    /// A token of `role` named `name`; its secret.
    async fn named_token(&self, name: &str, role: Role) -> String {
        let created = self
            .ok(
                "POST",
                "/api/v1/tokens",
                Role::Admin,
                Some(json!({"name": name, "role": role.as_str()})),
            )
            .await;
        created["token"].as_str().unwrap().to_owned()
    }

    /// Drives `job` (every task, then the job) to `completed` through the store, as the
    /// engine would after a successful deploy.
    async fn complete_through_store(&self, job: &str) {
        let id = deploy_core::JobId::parse(job).unwrap();
        let now = deploy_engine::Clock::now(&deploy_engine::SystemClock);
        let mut j = self.store.get_job(id).await.unwrap();
        for e in [JobEvent::Start, JobEvent::ArtifactsReady] {
            j = self
                .store
                .apply_job_event(j.id, j.version, e, now, "test")
                .await
                .unwrap();
        }
        for t in j.tasks.clone() {
            let mut task = t;
            for e in [
                TaskEvent::Enqueue,
                TaskEvent::Dispatch,
                TaskEvent::Start,
                TaskEvent::Verify,
                TaskEvent::Succeed,
            ] {
                task = self
                    .store
                    .apply_task_event(task.id, task.version, e, now, "test")
                    .await
                    .unwrap();
            }
        }
        for e in [JobEvent::WavesSucceeded, JobEvent::VerificationPassed] {
            j = self
                .store
                .apply_job_event(j.id, j.version, e, now, "test")
                .await
                .unwrap();
        }
        assert_eq!(j.status.as_str(), "completed");
    }
}

async fn names_resolve_in_paths_bodies_and_queries(f: Fixture) {
    let env = f.env_named("staging", json!({})).await;
    f.add_target("staging", "host-1").await;
    f.ok(
        "POST",
        "/api/v1/releases",
        Role::Deployer,
        Some(release_body("r1")),
    )
    .await;
    let by_name = f
        .ok("GET", "/api/v1/environments/staging", Role::Viewer, None)
        .await;
    assert_eq!(by_name["id"], env["id"]);
    let target = f
        .ok(
            "GET",
            "/api/v1/environments/staging/targets/host-1",
            Role::Viewer,
            None,
        )
        .await;
    assert_eq!(target["name"], "host-1");
    let by_id = f
        .ok(
            "GET",
            &format!(
                "/api/v1/environments/staging/targets/{}",
                target["id"].as_str().unwrap()
            ),
            Role::Viewer,
            None,
        )
        .await;
    assert_eq!(by_id, target);
    f.ok("GET", "/api/v1/releases/r1", Role::Viewer, None).await;
    let promotion = f
        .ok(
            "POST",
            "/api/v1/promotions",
            Role::Deployer,
            Some(json!({"release": "r1", "environment": "staging"})),
        )
        .await;
    assert_eq!(promotion["environment_id"], env["id"]);
    let listed = f
        .ok(
            "GET",
            "/api/v1/promotions?environment=staging&status=requested",
            Role::Viewer,
            None,
        )
        .await;
    assert_eq!(listed["promotions"][0]["id"], promotion["id"]);
    f.ok(
        "GET",
        "/api/v1/jobs?environment=staging",
        Role::Viewer,
        None,
    )
    .await;

    // Misses name what was asked and what is close.
    let deployer = Some(f.token(Role::Deployer));
    let (status, problem) = f
        .call("GET", "/api/v1/environments/stagin", deployer, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        problem["detail"],
        "no environment named `stagin`; close matches: `staging`"
    );
    let (status, problem) = f
        .call(
            "POST",
            "/api/v1/promotions",
            deployer,
            Some(json!({"release": "r2", "environment": "heldout"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["field"], "release");
    assert_eq!(
        problem["detail"],
        "no release named `r2`; close matches: `r1`"
    );
    let (status, problem) = f
        .call(
            "GET",
            "/api/v1/environments/staging/targets/host-2",
            deployer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        problem["detail"],
        "no target in environment `staging` named `host-2`; close matches: `host-1`"
    );
    let (status, problem) = f
        .call("GET", "/api/v1/jobs?environment=prod", deployer, None)
        .await;
    assert_eq!(
        (status, &problem["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("environment"))
    );
}

async fn an_approval_policy_refuses_self_approval_and_counts_distinct_approvers(f: Fixture) {
    f.env_named("prod", json!({"approval": {"required_approvals": 2}}))
        .await;
    f.add_target("prod", "host-1").await;
    f.ok(
        "POST",
        "/api/v1/releases",
        Role::Deployer,
        Some(release_body("r1")),
    )
    .await;
    let alice = f.named_token("alice", Role::Deployer).await;
    let bob = f.named_token("bob", Role::Deployer).await;
    let (status, promotion) = f
        .call(
            "POST",
            "/api/v1/promotions",
            Some(&alice),
            Some(json!({"release": "r1", "environment": "prod"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{promotion}");
    let approve = format!(
        "/api/v1/promotions/{}/approve",
        promotion["id"].as_str().unwrap()
    );

    let (status, problem) = f.call("POST", &approve, Some(&alice), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("token `alice` requested this promotion"),
        "{problem}"
    );
    let (status, _) = f
        .call("POST", &approve, Some(f.token(Role::Viewer)), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, first) = f.call("POST", &approve, Some(&bob), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["missing_approvals"], 1);
    assert_eq!(first["job"], Value::Null);
    assert_eq!(first["promotion"]["status"], "requested");
    assert_eq!(first["promotion"]["approvals"][0]["by"], "bob");

    let (status, again) = f.call("POST", &approve, Some(&bob), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert!(
        again["detail"]
            .as_str()
            .unwrap()
            .contains("already approved"),
        "{again}"
    );

    let (status, done) = f
        .call("POST", &approve, Some(f.token(Role::Admin)), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["promotion"]["status"], "approved");
    assert_eq!(done["promotion"]["approvals"].as_array().unwrap().len(), 2);
    assert!(done["job"]["id"].is_string(), "{done}");
    // Idempotent afterwards: the same job.
    let (status, same) = f.call("POST", &approve, Some(&bob), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same["job"]["id"], done["job"]["id"]);
    f.ok(
        "POST",
        &format!(
            "/api/v1/jobs/{}/cancel",
            done["job"]["id"].as_str().unwrap()
        ),
        Role::Deployer,
        None,
    )
    .await;

    // A rejection keeps its reason and ends the promotion.
    let (_, second) = f
        .call(
            "POST",
            "/api/v1/promotions",
            Some(&alice),
            Some(json!({"release": "r1", "environment": "prod"})),
        )
        .await;
    let id = second["id"].as_str().unwrap();
    let (status, rejected) = f
        .call(
            "POST",
            &format!("/api/v1/promotions/{id}/reject"),
            Some(&bob),
            Some(json!({"reason": "freeze until Monday"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rejected}");
    assert_eq!(rejected["rejection_reason"], "freeze until Monday");
    assert_eq!(rejected["decided_by"], "bob");
    let (status, _) = f
        .call(
            "POST",
            &format!("/api/v1/promotions/{id}/approve"),
            Some(f.token(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let queue = f
        .ok(
            "GET",
            "/api/v1/promotions?environment=prod&status=rejected",
            Role::Viewer,
            None,
        )
        .await;
    assert_eq!(queue["promotions"].as_array().unwrap().len(), 1);
}

async fn the_pipeline_refuses_a_release_that_did_not_complete_upstream(f: Fixture) {
    f.env_named("staging", json!({})).await;
    f.env_named("prod", json!({"requires": ["staging"]})).await;
    for env in ["staging", "prod"] {
        f.add_target(env, "host-1").await;
    }
    f.ok(
        "POST",
        "/api/v1/releases",
        Role::Deployer,
        Some(release_body("r1")),
    )
    .await;
    let deployer = Some(f.token(Role::Deployer));
    let promote = |env: &str| json!({"release": "r1", "environment": env});
    let (status, problem) = f
        .call(
            "POST",
            "/api/v1/promotions",
            deployer,
            Some(promote("prod")),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(
        problem["detail"],
        "release `r1` has not completed in `staging` yet; environment `prod` requires it first (its pipeline)"
    );

    // A staging job that is created but not completed does not open the way.
    let staging = f
        .ok(
            "POST",
            "/api/v1/promotions",
            Role::Deployer,
            Some(promote("staging")),
        )
        .await;
    let approved = f.approve(&staging).await;
    let (status, _) = f
        .call(
            "POST",
            "/api/v1/promotions",
            deployer,
            Some(promote("prod")),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    f.complete_through_store(approved["job"]["id"].as_str().unwrap())
        .await;
    let (status, promotion) = f
        .call(
            "POST",
            "/api/v1/promotions",
            deployer,
            Some(promote("prod")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{promotion}");

    // An environment cannot require itself, nor an unknown one.
    let prod = f
        .ok("GET", "/api/v1/environments/prod", Role::Viewer, None)
        .await;
    let (status, problem) = f
        .call(
            "PUT",
            "/api/v1/environments/prod",
            Some(f.token(Role::Admin)),
            Some(json!({"name": "prod", "requires": ["prod"], "version": prod["version"]})),
        )
        .await;
    assert_eq!(
        (status, &problem["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("requires")),
        "{problem}"
    );
    let (status, problem) = f
        .call(
            "PUT",
            "/api/v1/environments/prod",
            Some(f.token(Role::Admin)),
            Some(
                json!({"name": "prod", "requires": ["staging", "qa"], "version": prod["version"]}),
            ),
        )
        .await;
    assert_eq!(
        (status, &problem["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("requires[1]")),
        "{problem}"
    );
    // A loop: staging requiring prod while prod requires staging.
    let staging = f
        .ok("GET", "/api/v1/environments/staging", Role::Viewer, None)
        .await;
    let (status, problem) = f
        .call(
            "PUT",
            "/api/v1/environments/staging",
            Some(f.token(Role::Admin)),
            Some(json!({"name": "staging", "requires": ["prod"], "version": staging["version"]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("staging -> prod -> staging"),
        "{problem}"
    );
    // staging cannot go while prod requires it.
    let (status, problem) = f
        .call(
            "DELETE",
            "/api/v1/environments/staging",
            Some(f.token(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("required first by `prod`"),
        "{problem}"
    );
}

async fn updates_compare_versions_and_validate_with_field_paths(f: Fixture) {
    f.env_named("staging", json!({"variables": {"LOG_LEVEL": "info"}}))
        .await;
    let admin = Some(f.token(Role::Admin));
    let (status, headers, body) = f
        .raw("GET", "/api/v1/environments/staging", admin, None, &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["etag"], "\"0\"");
    let current: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(current["version"], 0);

    let update = json!({
        "name": "staging",
        "variables": {"LOG_LEVEL": "debug"},
        "approval": {"required_approvals": 1, "approver_role": "admin"},
        "version": 0,
    });
    let (status, updated) = f
        .call(
            "PUT",
            "/api/v1/environments/staging",
            admin,
            Some(update.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 1);
    assert_eq!(updated["variables"]["LOG_LEVEL"], "debug");
    assert_eq!(updated["approval"]["approver_role"], "admin");
    assert_eq!(updated["created_at"], current["created_at"]);

    // The same update again was made from version 0: stale, and nothing changes.
    let (status, problem) = f
        .call("PUT", "/api/v1/environments/staging", admin, Some(update))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let stored = f
        .ok("GET", "/api/v1/environments/staging", Role::Viewer, None)
        .await;
    assert_eq!(stored["version"], 1);

    for (body, field) in [
        (
            json!({"name": "staging", "approval": {"required_approvals": 0}, "version": 1}),
            "approval.required_approvals",
        ),
        (
            json!({"name": "staging", "approval": {"required_approvals": 2, "approvers": ["lead"]}, "version": 1}),
            "approval.approvers",
        ),
        (
            json!({"name": "staging", "variables": {"STELLA_X": "1"}, "version": 1}),
            "variables",
        ),
    ] {
        let (status, problem) = f
            .call("PUT", "/api/v1/environments/staging", admin, Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    // The version may come as If-Match (the ETag of the read) instead of in the body.
    let (status, _, body) = f
        .raw(
            "PUT",
            "/api/v1/environments/staging",
            admin,
            Some(json!({"name": "staging", "variables": {"LOG_LEVEL": "warn"}}).to_string()),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = f
        .raw(
            "PUT",
            "/api/v1/environments/staging",
            admin,
            Some(json!({"name": "staging"}).to_string()),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a stale If-Match");
    for (headers, field) in [
        (vec![], "version"),
        (vec![("if-match", "\"2\"")], "version"),
        (vec![("if-match", "*")], "If-Match"),
    ] {
        let body = if headers.is_empty() {
            json!({"name": "staging"})
        } else {
            json!({"name": "staging", "version": 1})
        };
        let (status, _, problem) = f
            .raw(
                "PUT",
                "/api/v1/environments/staging",
                admin,
                Some(body.to_string()),
                &headers,
            )
            .await;
        let problem: Value = serde_json::from_slice(&problem).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    // Deployers may not change an environment.
    let (status, _) = f
        .call(
            "PUT",
            "/api/v1/environments/staging",
            Some(f.token(Role::Deployer)),
            Some(json!({"name": "staging", "version": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Token expiry: bounded, and listed.
    let (status, problem) = f
        .call(
            "POST",
            "/api/v1/tokens",
            admin,
            Some(json!({"name": "short", "role": "viewer", "expires_in_secs": 5})),
        )
        .await;
    assert_eq!(
        (status, &problem["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("expires_in_secs"))
    );
    f.ok(
        "POST",
        "/api/v1/tokens",
        Role::Admin,
        Some(json!({"name": "ci-day", "role": "deployer", "expires_in_secs": 86_400})),
    )
    .await;
    let tokens = f.ok("GET", "/api/v1/tokens", Role::Admin, None).await;
    let ci = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci-day")
        .unwrap();
    assert!(ci["expires_at"].is_string(), "{ci}");
    // An expired token is refused.
    let past = deploy_core::Timestamp::from_unix_millis(1_000).unwrap();
    let expired = crate::tokens::create_token_expiring(
        f.store.as_ref(),
        "expired",
        Role::Admin,
        Some(past),
        past,
    )
    .await
    .unwrap();
    let (status, _) = f
        .call("GET", "/api/v1/environments", Some(&expired.token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Walks the OpenAPI document: every write operation is called once (most are refused
/// for their empty body or unknown id, and refusals are recorded too), and each must
/// leave an audit row naming its route; only the agent data plane is exempt.
async fn every_write_route_appends_an_audit_row(f: Fixture) {
    let admin = f.token(Role::Admin).to_owned();
    let (_, credential) = super::agents::register_agent(&f, "audited-agent", &[]).await;
    let bootstrap = f
        .ok(
            "POST",
            "/api/v1/agents/bootstrap-tokens",
            Role::Admin,
            Some(json!({"name": "for-walk"})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ops = openapi::operations(&crate::openapi());
    let writes: Vec<_> = ops
        .iter()
        .filter(|o| ["post", "put", "patch", "delete"].contains(&o.method.as_str()))
        .collect();
    assert!(writes.len() >= 20, "{} write operations", writes.len());
    let mut exempt = Vec::new();
    for op in &writes {
        let path = op
            .path
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "019a0000-0000-7000-8000-000000000001"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let token = if op.path.ends_with("/agent/register") {
            &bootstrap
        } else if op.agent {
            &credential
        } else {
            &admin
        };
        let (status, _) = f
            .call(
                &op.method.to_uppercase(),
                &path,
                Some(token),
                Some(json!({})),
            )
            .await;
        let entries = f
            .ok("GET", "/api/v1/audit?limit=1", Role::Admin, None)
            .await;
        let last = &entries["entries"][0];
        let recorded = last["route"] == op.path.as_str()
            && last["method"] == op.method.to_uppercase()
            && last["path"] == path.as_str()
            && last["status"] == status.as_u16();
        if crate::UNAUDITED_ROUTES.contains(&op.path.as_str()) {
            assert!(
                !recorded,
                "{} {} is exempt but was recorded",
                op.method, op.path
            );
            exempt.push(op.path.clone());
        } else {
            assert!(
                recorded,
                "{} {} ({status}) wrote no audit row; the newest is {last}",
                op.method, op.path
            );
            let actor = if op.agent && !op.path.ends_with("/agent/register") {
                "audited-agent"
            } else if op.path.ends_with("/agent/register") {
                // A bootstrap token's name is its agent's, made unique by its id.
                "for-walk (bootstrap token "
            } else {
                "bootstrap-admin"
            };
            let name = last["actor_name"].as_str().unwrap_or_default();
            if op.path.ends_with("/agent/register") {
                assert!(name.starts_with(actor), "{last}");
            } else {
                assert_eq!(name, actor, "{last}");
            }
        }
    }
    exempt.sort();
    let mut expected: Vec<String> = crate::UNAUDITED_ROUTES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    expected.sort();
    assert_eq!(
        exempt, expected,
        "the exempt routes are exactly the agent data plane"
    );

    // A successful update: who, what, before/after, from where; secrets redacted.
    let audited = f.env_named("audited", json!({})).await;
    let (status, headers, _) = f
        .raw(
            "PUT",
            "/api/v1/environments/audited",
            Some(&admin),
            Some(json!({"name": "audited", "variables": {"A": "1"}, "version": 0}).to_string()),
            &[("x-forwarded-for", "203.0.113.7")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["etag"], "\"1\"");
    let entry = &f
        .ok(
            "GET",
            "/api/v1/audit?actor=bootstrap-admin&limit=1",
            Role::Admin,
            None,
        )
        .await["entries"][0];
    assert_eq!(entry["route"], "/api/v1/environments/{id}");
    assert_eq!(
        entry["entity_id"], audited["id"],
        "the id, though the path named it"
    );
    assert_eq!(entry["before"]["version"], 0);
    assert_eq!(entry["after"]["version"], 1);
    assert_eq!(
        entry["after"]["variables"]["A"], "[redacted]",
        "variables are named, their values never recorded"
    );
    assert_eq!(entry["remote"], "x-forwarded-for: 203.0.113.7");
    assert_eq!(entry["actor_kind"], "token");
    let created = f
        .ok(
            "POST",
            "/api/v1/tokens",
            Role::Admin,
            Some(json!({"name": "audited-token", "role": "viewer"})),
        )
        .await;
    let entry = &f
        .ok(
            "GET",
            &format!("/api/v1/audit?entity={}", created["id"].as_str().unwrap()),
            Role::Admin,
            None,
        )
        .await["entries"][0];
    assert_eq!(entry["after"]["token"], "[redacted]", "{entry}");
    let text = entry.to_string();
    assert!(!text.contains(created["token"].as_str().unwrap()));
    // Viewers and deployers do not read the audit log.
    let (status, _) = f
        .call("GET", "/api/v1/audit", Some(f.token(Role::Deployer)), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn targets_change_disable_and_retire_only_when_no_job_uses_them(f: Fixture) {
    f.env_named("staging", json!({})).await;
    for name in ["host-1", "host-2"] {
        f.add_target("staging", name).await;
    }
    f.ok(
        "POST",
        "/api/v1/releases",
        Role::Deployer,
        Some(release_body("r1")),
    )
    .await;
    let admin = Some(f.token(Role::Admin));
    let host2 = f
        .ok(
            "GET",
            "/api/v1/environments/staging/targets/host-2",
            Role::Viewer,
            None,
        )
        .await;
    assert_eq!(host2["version"], 0);
    assert_eq!(host2["disabled"], false);

    // Change the connection and disable it, from version 0.
    let mut update = json!({
        "name": "host-2",
        "connection": {"model": "ssh", "host": "127.0.0.2", "port": 1, "user": "deploy",
                       "credential_ref": "env:DEPLOY_TEST_NO_SUCH_KEY", "work_dir": "/tmp"},
        "labels": {"zone": "b"},
        "disabled": true,
        "version": 0,
    });
    let (status, updated) = f
        .call(
            "PUT",
            "/api/v1/environments/staging/targets/host-2",
            admin,
            Some(update.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 1);
    assert_eq!(updated["connection"]["host"], "127.0.0.2");
    assert_eq!(
        updated["id"], host2["id"],
        "the same target, changed in place"
    );
    let (status, _) = f
        .call(
            "PUT",
            "/api/v1/environments/staging/targets/host-2",
            admin,
            Some(update.clone()),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a stale version changes nothing"
    );
    update["connection"]["port"] = json!(0);
    update["version"] = json!(1);
    let (status, problem) = f
        .call(
            "PUT",
            "/api/v1/environments/staging/targets/host-2",
            admin,
            Some(update),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["field"]
            .as_str()
            .unwrap()
            .ends_with("connection.port"),
        "{problem}"
    );

    // The plan lists the disabled target as skipped; the job gets no task there.
    let plan = f
        .ok(
            "POST",
            "/api/v1/plan",
            Role::Deployer,
            Some(json!({"release": "r1", "environment": "staging"})),
        )
        .await;
    assert_eq!(plan["skipped"][0]["target_name"], "host-2", "{plan}");
    assert_eq!(plan["skipped"][0]["reason"], "disabled");
    let promotion = f
        .ok(
            "POST",
            "/api/v1/promotions",
            Role::Deployer,
            Some(json!({"release": "r1", "environment": "staging"})),
        )
        .await;
    let approved = f.approve(&promotion).await;
    let job = approved["job"]["id"].as_str().unwrap().to_owned();
    let tasks = approved["job"]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_ne!(tasks[0]["target_id"], host2["id"]);

    // host-1 has a task of the active job: neither it nor the environment goes.
    let (status, problem) = f
        .call(
            "DELETE",
            "/api/v1/environments/staging/targets/host-1",
            admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains(&job),
        "{problem}"
    );
    let (status, problem) = f
        .call("DELETE", "/api/v1/environments/staging", admin, None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains(&job),
        "{problem}"
    );
    // host-2 has none: it goes, its name is free again, the job still reads.
    let (status, _) = f
        .call(
            "DELETE",
            "/api/v1/environments/staging/targets/host-2",
            admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let listed = f
        .ok(
            "GET",
            "/api/v1/environments/staging/targets",
            Role::Viewer,
            None,
        )
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    f.add_target("staging", "host-2").await;

    // Once the job settled, the environment goes; its jobs stay readable.
    f.ok(
        "POST",
        &format!("/api/v1/jobs/{job}/cancel"),
        Role::Deployer,
        None,
    )
    .await;
    let (status, _) = f
        .call("DELETE", "/api/v1/environments/staging", admin, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = f
        .call("GET", "/api/v1/environments/staging", admin, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    f.ok("GET", &format!("/api/v1/jobs/{job}"), Role::Viewer, None)
        .await;
    f.env_named("staging", json!({})).await;

    // An archived release is not promoted again.
    let archived = f
        .ok("POST", "/api/v1/releases/r1/archive", Role::Deployer, None)
        .await;
    assert!(archived["archived_at"].is_string(), "{archived}");
    let (status, problem) = f
        .call(
            "POST",
            "/api/v1/promotions",
            Some(f.token(Role::Deployer)),
            Some(json!({"release": "r1", "environment": "staging"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(
        problem["detail"],
        "release `r1` is archived; it can no longer be promoted"
    );
}

async fn a_busy_environment_queues_an_approval_that_asks_for_it(f: Fixture) {
    f.env_named("staging", json!({})).await;
    f.add_target("staging", "host-1").await;
    for r in ["r1", "r2", "r3"] {
        f.ok(
            "POST",
            "/api/v1/releases",
            Role::Deployer,
            Some(release_body(r)),
        )
        .await;
    }
    let f = &f;
    let promote = |r: &'static str| async move {
        let p = f
            .ok(
                "POST",
                "/api/v1/promotions",
                Role::Deployer,
                Some(json!({"release": r, "environment": "staging"})),
            )
            .await;
        format!("/api/v1/promotions/{}/approve", p["id"].as_str().unwrap())
    };
    let first = f
        .ok("POST", &promote("r1").await, Role::Deployer, None)
        .await;
    let holder = first["job"]["id"].as_str().unwrap().to_owned();

    // Without asking to queue: 409 environment-busy, and the approval is not recorded:
    // no promotion is left approved without a job.
    let second = promote("r2").await;
    let (status, problem) = f
        .call("POST", &second, Some(f.token(Role::Deployer)), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["type"], "urn:deploy:problem:environment-busy");
    let still = f
        .ok("GET", &second.replace("/approve", ""), Role::Viewer, None)
        .await;
    assert_eq!(still["status"], "requested", "{still}");
    assert_eq!(still["approvals"], json!([]));
    // Asking to queue: created pending, behind the holder.
    let (status, queued) = f
        .call(
            "POST",
            &second,
            Some(f.token(Role::Deployer)),
            Some(json!({"queue": true})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{queued}");
    assert_eq!(queued["job"]["status"], "pending");
    assert_eq!(queued["job"]["queued_behind"], holder.as_str());
    let second_job = queued["job"]["id"].as_str().unwrap().to_owned();
    // A third waits behind the second.
    let (_, third) = f
        .call(
            "POST",
            &promote("r3").await,
            Some(f.token(Role::Deployer)),
            Some(json!({"queue": true})),
        )
        .await;
    assert_eq!(third["job"]["queued_behind"], second_job.as_str());

    // The holder ends: the second is let in (the engine's claim loop does this), not the third.
    f.ok(
        "POST",
        &format!("/api/v1/jobs/{holder}/cancel"),
        Role::Deployer,
        None,
    )
    .await;
    let now = deploy_engine::Clock::now(&deploy_engine::SystemClock);
    let let_in = f.store.dequeue_jobs(now).await.unwrap();
    assert_eq!(
        let_in.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![second_job.clone()]
    );
    let job = f
        .ok(
            "GET",
            &format!("/api/v1/jobs/{second_job}"),
            Role::Viewer,
            None,
        )
        .await;
    assert_eq!(job["queued_behind"], Value::Null);
}

async fn an_approved_promotion_is_only_for_approvers_and_a_deleted_environment_takes_no_job(
    f: Fixture,
) {
    f.env_named("prod", json!({"approval": {"approver_role": "admin"}}))
        .await;
    f.env_named("old", json!({})).await;
    for env in ["prod", "old"] {
        f.add_target(env, "host-1").await;
    }
    f.ok(
        "POST",
        "/api/v1/releases",
        Role::Deployer,
        Some(release_body("r1")),
    )
    .await;
    let promotion = f
        .ok(
            "POST",
            "/api/v1/promotions",
            Role::Deployer,
            Some(json!({"release": "r1", "environment": "prod"})),
        )
        .await;
    let approve = format!(
        "/api/v1/promotions/{}/approve",
        promotion["id"].as_str().unwrap()
    );
    let (status, _) = f
        .call("POST", &approve, Some(f.token(Role::Deployer)), None)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a deployer is no approver here"
    );
    let (status, done) = f
        .call("POST", &approve, Some(f.token(Role::Admin)), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    // Approved: asking again (with other job settings) is still for approvers only.
    let (status, problem) = f
        .call(
            "POST",
            &approve,
            Some(f.token(Role::Deployer)),
            Some(
                json!({"max_attempts": 1, "strategy": {"type": "rolling", "batch": {"count": 1}}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let (status, same) = f
        .call("POST", &approve, Some(f.token(Role::Admin)), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same["job"]["id"], done["job"]["id"]);

    // A promotion requested before its environment was deleted gets no job after.
    let stale = f
        .ok(
            "POST",
            "/api/v1/promotions",
            Role::Deployer,
            Some(json!({"release": "r1", "environment": "old"})),
        )
        .await;
    let (status, _) = f
        .call(
            "DELETE",
            "/api/v1/environments/old",
            Some(f.token(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, problem) = f
        .call(
            "POST",
            &format!(
                "/api/v1/promotions/{}/approve",
                stale["id"].as_str().unwrap()
            ),
            Some(f.token(Role::Deployer)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let jobs = f.ok("GET", "/api/v1/jobs", Role::Viewer, None).await;
    assert_eq!(
        jobs["jobs"].as_array().unwrap().len(),
        1,
        "only prod's job: {jobs}"
    );
}
