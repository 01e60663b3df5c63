//! `POST /api/v1/plan` over a fake executor: waves, digests, what runs now, and an inspect error kept in its entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use deploy_api::Role;
use deploy_core::{Digest, ExecutionModel, TargetId};
use deploy_exec::ExecutorRegistry;
use deploy_testkit::exec::{Behaviour, FakeExecutor};
use serde_json::json;

use super::{Fixture, release_body};
use crate::ServerConfig;

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

/// A fake executor serving the fixture's ssh targets.
fn executors(fake: &Arc<FakeExecutor>) -> impl FnOnce(&std::path::Path) -> ExecutorRegistry {
    let fake = fake.clone();
    move |_| {
        let mut executors = ExecutorRegistry::new();
        executors.register(ExecutionModel::Ssh, fake);
        executors
    }
}

/// Creates the targets `names` in `env_id`, each running on `fake` what its name says:
/// `current` and `old` run digests `a` and `b`, `empty` nothing; `hangs` never answers
/// an inspect and any other refuses the connection.
async fn add_targets(f: &Fixture, fake: &FakeExecutor, env_id: &str, names: &[&str]) {
    for name in names {
        let created = f.add_target(env_id, name).await;
        let id = TargetId::parse(created["id"].as_str().unwrap()).unwrap();
        match *name {
            "current" => fake.set_running(id, "web", digest('a')),
            "old" => fake.set_running(id, "web", digest('b')),
            "empty" => {}
            "hangs" => fake.fail_inspect(id, Behaviour::Hang),
            _ => fake.fail_inspect(id, Behaviour::FailRetryable),
        }
    }
}

#[tokio::test]
async fn plan_shows_waves_digests_what_runs_and_inspect_errors() {
    let fake = Arc::new(FakeExecutor::default());
    let f = Fixture::build(ServerConfig::default(), executors(&fake)).await;
    let env = f.env_named("plan", json!({})).await;
    let env_id = env["id"].as_str().unwrap();
    add_targets(&f, &fake, env_id, &["old", "empty", "current", "broken"]).await;
    let release = f
        .ok(
            "POST",
            "/api/v1/releases",
            Role::Deployer,
            Some(release_body("plan")),
        )
        .await;
    let release_id = release["id"].as_str().unwrap();

    let plan = f
        .ok(
            "POST",
            "/api/v1/plan",
            Role::Deployer,
            Some(json!({
                "release_id": release_id,
                "environment_id": env_id,
                "strategy": {"type": "rolling", "batch": {"count": 2}},
            })),
        )
        .await;
    assert_eq!(plan["strategy"], "rolling");
    let waves = plan["waves"].as_array().unwrap();
    // Targets are planned by name: broken, current | empty, old.
    let summary: Vec<Vec<(String, String, String)>> = waves
        .iter()
        .map(|w| {
            w["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["target_name"].as_str().unwrap().to_owned(),
                        e["change"].as_str().unwrap().to_owned(),
                        e["running"].as_str().unwrap_or("-").to_owned(),
                    )
                })
                .collect()
        })
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        summary,
        vec![
            vec![
                s("broken", "unknown", "-"),
                s("current", "unchanged", &digest('a').to_string())
            ],
            vec![
                s("empty", "install", "-"),
                s("old", "update", &digest('b').to_string())
            ],
        ]
    );
    assert_eq!(waves[0]["index"], 0);
    assert_eq!(waves[1]["kind"], "batch");
    let broken = &waves[0]["entries"][0];
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{broken}"
    );
    for w in waves {
        for e in w["entries"].as_array().unwrap() {
            assert_eq!(e["digest"], digest('a').to_string());
            assert_eq!(e["component"], "web");
        }
    }
    // A dry run: no job was created.
    let jobs = f.ok("GET", "/api/v1/jobs", Role::Viewer, None).await;
    assert_eq!(jobs["jobs"], json!([]));

    // An unknown release is a semantic error on its field; a viewer may not plan.
    let (status, problem) = f
        .call(
            "POST",
            "/api/v1/plan",
            Some(f.token(Role::Deployer)),
            Some(json!({"release_id": "019a0000-0000-7000-8000-000000000000", "environment_id": env_id})),
        )
        .await;
    assert_eq!(
        (status.as_u16(), &problem["field"]),
        (422, &json!("release"))
    );
    let (status, _) = f
        .call(
            "POST",
            "/api/v1/plan",
            Some(f.token(Role::Viewer)),
            Some(json!({"release_id": release_id, "environment_id": env_id})),
        )
        .await;
    assert_eq!(status.as_u16(), 403);
}

/// An inspect that never answers is cut at the plan engine's task timeout (1 s in
/// the fixture) and shows in its row; the whole plan is bounded by `plan_timeout`.
#[tokio::test]
async fn a_hanging_inspect_times_out_in_its_row_and_the_plan_is_bounded() {
    for plan_timeout in [Duration::from_secs(30), Duration::from_millis(300)] {
        let fake = Arc::new(FakeExecutor::default());
        let f = Fixture::build(
            ServerConfig {
                plan_timeout,
                ..ServerConfig::default()
            },
            executors(&fake),
        )
        .await;
        let env = f.env_named("hang", json!({})).await;
        let env_id = env["id"].as_str().unwrap();
        add_targets(&f, &fake, env_id, &["current", "hangs"]).await;
        let release = f
            .ok(
                "POST",
                "/api/v1/releases",
                Role::Deployer,
                Some(release_body("hang")),
            )
            .await;
        let started = Instant::now();
        let (status, plan) = f
            .call(
                "POST",
                "/api/v1/plan",
                Some(f.token(Role::Deployer)),
                Some(json!({"release_id": release["id"], "environment_id": env_id})),
            )
            .await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "the plan took {took:?}");
        if plan_timeout < Duration::from_secs(1) {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{plan}");
            assert_eq!(plan["type"], "urn:deploy:problem:unavailable", "{plan}");
            assert!(
                plan["detail"].as_str().unwrap().contains("within 300ms"),
                "{plan}"
            );
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{plan}");
        let entries: Vec<&serde_json::Value> = plan["waves"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|w| w["entries"].as_array().unwrap())
            .collect();
        let row = |name: &str| {
            *entries
                .iter()
                .find(|e| e["target_name"] == name)
                .unwrap_or_else(|| panic!("no entry for {name}: {plan}"))
        };
        assert_eq!(row("current")["change"], "unchanged", "{plan}");
        assert_eq!(row("hangs")["change"], "unknown", "{plan}");
        assert_eq!(
            row("hangs")["error"],
            "inspect did not answer within 1 s",
            "{plan}"
        );
    }
}
