//! Console tests: the overview (pipeline order, release, digests, health, in-flight job, paging, escaping), the live inspect with its drift marker, and the agents page with revocation.

use std::sync::Arc;

use axum::http::StatusCode;
use deploy_api::Role;
use deploy_core::{Digest, TargetId};
use deploy_testkit::exec::FakeExecutor;
use serde_json::{Value, json};

use super::Fixture;
use super::agents::register_agent;
use super::console::{deploy, fake_fixture, sign_in, wait_for};

/// `<b>x</b>` as askama escapes it (numeric references).
const ESCAPED: &str = "&#60;b&#62;x&#60;/b&#62;";

/// The HTML of the `<section>` of environment `name` on an overview page.
fn section<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!(r#"data-environment="{name}""#))
        .unwrap_or_else(|| panic!("no section of {name}: {html}"));
    let end = html[start..]
        .find("</section>")
        .map_or(html.len(), |e| start + e);
    &html[start..end]
}

/// The HTML of the row of target `name` in `html`.
fn row<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!(r#"data-target="{name}""#))
        .unwrap_or_else(|| panic!("no row of {name}: {html}"));
    let end = html[start..]
        .find("</tr>")
        .map_or(html.len(), |e| start + e);
    &html[start..end]
}

#[tokio::test]
async fn environments_are_listed_in_pipeline_order() {
    let f = Fixture::new().await;
    // Created out of order: prod first, its requirement added once staging exists.
    let prod = f.env_named("prod", json!({})).await;
    f.env_named("alpha", json!({})).await;
    f.env_named("dev", json!({})).await;
    f.env_named("staging", json!({"requires": ["dev"]})).await;
    f.ok(
        "PUT",
        "/api/v1/environments/prod",
        Role::Admin,
        Some(json!({"name": "prod", "requires": ["staging"], "version": prod["version"]})),
    )
    .await;

    let viewer = sign_in(&f, Role::Viewer).await;
    let page = viewer.get("/ui/").await;
    assert_eq!(page.status, StatusCode::OK);
    let at = |name: &str| {
        page.body
            .find(&format!(r#"data-environment="{name}""#))
            .unwrap_or_else(|| panic!("{name} missing: {}", page.body))
    };
    assert!(at("alpha") < at("dev"), "{}", page.body);
    assert!(at("dev") < at("staging"), "{}", page.body);
    assert!(at("staging") < at("prod"), "{}", page.body);
    assert!(section(&page.body, "prod").contains("staging"));
    // Nothing completed or running yet.
    assert!(section(&page.body, "dev").contains("none completed yet"));
    // A viewer cannot inspect targets (the API's plan needs a deployer).
    assert!(!page.body.contains("Inspect live"), "{}", page.body);
    let dev = f
        .ok("GET", "/api/v1/environments/dev", Role::Viewer, None)
        .await;
    let live = viewer
        .get(&format!(
            "/ui/environments/{}/live",
            dev["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(live.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn environments_are_paged_by_fifty() {
    let f = Fixture::new().await;
    for i in 0..51 {
        f.env_named(&format!("env-{i:02}"), json!({})).await;
    }
    let viewer = sign_in(&f, Role::Viewer).await;
    let first = viewer.get("/ui/").await;
    assert_eq!(first.body.matches(r#"class="environment""#).count(), 50);
    assert!(
        first.body.contains(r#"href="/ui/?page=2""#),
        "{}",
        first.body
    );
    assert!(!first.body.contains("env-50"));
    let second = viewer.get("/ui/?page=2").await;
    assert_eq!(second.body.matches(r#"class="environment""#).count(), 1);
    assert!(second.body.contains(r#"data-environment="env-50""#));
    assert!(!second.body.contains("?page=3"));
    assert_eq!(
        viewer.get("/ui/?page=x").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_what_runs_and_the_live_inspect_marks_drift() {
    let fake = Arc::new(FakeExecutor::default());
    let f = fake_fixture(&fake).await;
    let env = f.env_named("dev", json!({})).await;
    let env_id = env["id"].as_str().unwrap();
    let mut body = super::target_body("host-1");
    body["labels"] = json!({"note": "<b>x</b>"});
    let target = f
        .ok(
            "POST",
            &format!("/api/v1/environments/{env_id}/targets"),
            Role::Admin,
            Some(body),
        )
        .await;
    let target_id = TargetId::parse(target["id"].as_str().unwrap()).unwrap();
    let idle = f.add_target(env_id, "host-2").await;
    let mut update = super::target_body("host-2");
    update.as_object_mut().unwrap().remove("target_type");
    update["disabled"] = json!(true);
    update["version"] = idle["version"].clone();
    f.ok(
        "PUT",
        &format!("/api/v1/environments/{env_id}/targets/host-2"),
        Role::Admin,
        Some(update),
    )
    .await;

    let (shutdown, serve) = f.serve_engine();
    let job = deploy(&f, env_id, "r1", 'a').await;
    wait_for(&f, &job, "completed").await;
    shutdown.cancel();
    serve.await.unwrap();
    // With the engine stopped, the next job stays pending: in flight.
    let pending = deploy(&f, env_id, "r2", 'b').await;

    let viewer = sign_in(&f, Role::Viewer).await;
    let page = viewer.get("/ui/").await;
    assert_eq!(page.status, StatusCode::OK);
    let dev = section(&page.body, "dev");
    assert!(dev.contains(r#"class="release""#), "{dev}");
    assert!(dev.contains(">r1</a>"), "{dev}");
    assert!(
        dev.contains(&format!(r#"href="/ui/jobs/{pending}""#)),
        "{dev}"
    );
    let host = row(dev, "host-1");
    assert!(host.contains("sha256:aaaaaaaaaaaa"), "{host}");
    assert!(
        host.contains(r#"<td class="health"><span class="status-healthy""#),
        "{host}"
    );
    // The label value is escaped, never markup.
    assert!(host.contains(ESCAPED), "{host}");
    assert!(!page.body.contains("<b>x</b>"));
    let idle = row(dev, "host-2");
    assert!(idle.contains("disabled"), "{idle}");
    assert!(
        idle.contains(r#"<td class="health"><span class="status-unknown""#),
        "{idle}"
    );

    // The release page says where the release completed (one store query), and a
    // release whose job is still pending completed nowhere.
    let r1 = viewer.get("/ui/releases/r1").await;
    assert!(
        r1.body
            .contains(r#"<span class="badge status-completed environment">dev</span>"#),
        "{}",
        r1.body
    );
    let r2 = viewer.get("/ui/releases/r2").await;
    assert!(
        r2.body.contains("It has not completed in any environment."),
        "{}",
        r2.body
    );

    // Live: the target runs what the job deployed...
    let deployer = sign_in(&f, Role::Deployer).await;
    let overview = deployer.get("/ui/").await;
    let live_path = format!("/ui/environments/{env_id}/live");
    assert!(overview.body.contains(&live_path), "{}", overview.body);
    let live = deployer.get(&live_path).await;
    assert_eq!(live.status, StatusCode::OK, "{}", live.body);
    let host = row(&live.body, "host-1");
    assert!(host.contains(r#"class="live-digest""#), "{host}");
    assert!(host.contains("matches"), "{host}");
    assert!(!live.body.contains("target drift"), "{}", live.body);
    assert!(live.body.contains("host-2"), "the disabled target is named");
    // ...until someone runs something else there.
    let slot = fake
        .running
        .lock()
        .unwrap()
        .keys()
        .find(|(t, _)| *t == target_id)
        .map(|(_, slot)| slot.clone())
        .unwrap();
    let other = Digest::parse(&format!("sha256:{}", "c".repeat(64))).unwrap();
    fake.set_running(target_id, &slot, other);
    let live = deployer.get(&live_path).await;
    let host = row(&live.body, "host-1");
    assert!(
        live.body
            .contains(r#"<tr class="target drift" data-target="host-1">"#),
        "{}",
        live.body
    );
    assert!(host.contains("drift-marker"), "{host}");
    assert!(host.contains("sha256:cccccccccccc"), "{host}");
    assert!(live.body.contains("1 drifted"), "{}", live.body);
}

#[tokio::test]
async fn the_live_inspect_of_an_environment_without_a_completed_job_says_so() {
    let f = Fixture::new().await;
    let w = f.world("lonely").await;
    let deployer = sign_in(&f, Role::Deployer).await;
    let live = deployer
        .get(&format!("/ui/environments/{}/live", w.env_id))
        .await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(live.body.contains("nothing to compare"), "{}", live.body);
    // By name too; an unknown one is a 404 page.
    assert_eq!(
        deployer.get("/ui/environments/lonely/live").await.status,
        StatusCode::OK
    );
    assert_eq!(
        deployer.get("/ui/environments/nope/live").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn agents_are_listed_and_only_an_admin_revokes_one() {
    let f = Fixture::new().await;
    let (id, _) = register_agent(&f, "web-1", &[("zone", "<b>x</b>")]).await;
    let path = format!("/ui/agents/{id}/revoke");

    for role in [Role::Viewer, Role::Deployer] {
        let signed = sign_in(&f, role).await;
        let page = signed.get("/ui/agents").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.body.contains(&format!(r#"data-agent-id="{id}""#)),
            "{}",
            page.body
        );
        assert!(!page.body.contains(r#"class="revoke"#), "{}", page.body);
        assert_eq!(signed.post(&path, &[]).await.status, StatusCode::FORBIDDEN);
    }

    let admin = sign_in(&f, Role::Admin).await;
    let page = admin.get("/ui/agents").await;
    assert!(page.body.contains("web-1"));
    assert!(
        page.body.contains(&format!("zone={ESCAPED}")),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<b>x</b>"));
    assert!(
        page.body
            .contains(r#"<td class="version hide-narrow">test</td>"#),
        "{}",
        page.body
    );
    assert!(page.body.contains(&format!(r#"action="{path}""#)));
    assert!(page.body.contains(r#"class="revoke danger""#));
    assert!(
        page.body.contains(r#"data-status="disconnected""#),
        "{}",
        page.body
    );
    // Without the CSRF token: refused, nothing revoked.
    assert_eq!(
        admin.post_raw(&path, String::new()).await.status,
        StatusCode::FORBIDDEN
    );
    let agent: Value = f
        .ok("GET", &format!("/api/v1/agents/{id}"), Role::Viewer, None)
        .await;
    assert!(agent["revoked_at"].is_null());

    let done = admin.post(&path, &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/ui/agents");
    let agent = f
        .ok("GET", &format!("/api/v1/agents/{id}"), Role::Viewer, None)
        .await;
    assert!(!agent["revoked_at"].is_null(), "{agent}");
    let page = admin.get("/ui/agents").await;
    assert!(
        page.body.contains(r#"data-status="revoked""#),
        "{}",
        page.body
    );
    assert!(!page.body.contains(r#"class="revoke danger""#));
    assert_eq!(
        admin.post("/ui/agents/not-an-id/revoke", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}
