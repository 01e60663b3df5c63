//! Runtime policies through the routes: only an admin sets one (its own route, audited), viewers read it, and a template asking for more is refused with 422 naming service and key at release creation, at promotion and at job creation.

use axum::http::StatusCode;
use deploy_api::Role;
use serde_json::{Value, json};

use super::{Fixture, release_body, target_body};

const PRIVILEGED: &str = "services:\n  web:\n    componentName: web\n    privileged: true\n";

fn policy_path(env: &str) -> String {
    format!("/api/v1/environments/{env}/runtime-policy")
}

async fn environment(f: &Fixture, name: &str, target_type: &str) -> String {
    let env = f.env_named(name, json!({})).await;
    let mut target = target_body("host-1");
    target["target_type"] = json!(target_type);
    f.ok(
        "POST",
        &format!("/api/v1/environments/{name}/targets"),
        Role::Admin,
        Some(target),
    )
    .await;
    env["id"].as_str().unwrap().to_owned()
}

async fn set_policy(f: &Fixture, env: &str, policy: Value) -> Value {
    f.ok("PUT", &policy_path(env), Role::Admin, Some(policy))
        .await
}

fn release_with(name: &str, template: &str) -> Value {
    let mut body = release_body(name);
    body["template"] = json!(template);
    body
}

/// A 422 whose detail names the service, the setting and the environment (or every
/// environment), and whose field is `template.services.<service>.<key>`.
fn assert_refused(status: StatusCode, body: &Value, service: &str, key: &str, words: &[&str]) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["field"],
        format!("template.services.{service}.{key}"),
        "{body}"
    );
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("service `{service}` sets `{key}")),
        "{detail}"
    );
    for w in words {
        assert!(detail.contains(w), "`{w}` not in: {detail}");
    }
}

#[tokio::test]
async fn only_an_admin_sets_a_policy_and_viewers_read_it() {
    let f = Fixture::new().await;
    environment(&f, "prod", "docker_host").await;
    let shown = f
        .ok("GET", "/api/v1/environments/prod", Role::Viewer, None)
        .await;
    assert_eq!(
        shown["runtime_policy"],
        json!({"privileged": false, "host_namespaces": [], "capabilities": [], "devices": false,
               "unconfined": false, "bind_prefixes": [], "docker_socket": false, "other_containers": false}),
        "the default refuses everything: {shown}"
    );
    let wanted = json!({"capabilities": ["cap_net_admin"], "bind_prefixes": ["/srv/app/"]});
    for role in [Role::Viewer, Role::Deployer] {
        let (status, body) = f
            .call(
                "PUT",
                &policy_path("prod"),
                Some(f.token(role)),
                Some(wanted.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role:?}: {body}");
    }
    let stored = set_policy(&f, "prod", wanted).await;
    assert_eq!(stored["capabilities"], json!(["NET_ADMIN"]), "{stored}");
    assert_eq!(stored["bind_prefixes"], json!(["/srv/app"]), "{stored}");
    let read = f.ok("GET", &policy_path("prod"), Role::Viewer, None).await;
    assert_eq!(read, stored);
    let env = f
        .ok("GET", "/api/v1/environments/prod", Role::Viewer, None)
        .await;
    assert_eq!(env["runtime_policy"], stored);
    assert_eq!(env["version"], 1, "{env}");

    // The ordinary update cannot change it, and keeps it.
    let (status, body) = f
        .call(
            "PUT",
            "/api/v1/environments/prod",
            Some(f.token(Role::Admin)),
            Some(json!({"name": "prod", "version": 1, "runtime_policy": {"privileged": true}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("runtime_policy"),
        "{body}"
    );
    let updated = f
        .ok(
            "PUT",
            "/api/v1/environments/prod",
            Role::Admin,
            Some(json!({"name": "prod", "version": 1, "variables": {"A": "1"}})),
        )
        .await;
    assert_eq!(updated["runtime_policy"], stored, "{updated}");

    // A stale If-Match changes nothing.
    let (status, _, body) = f
        .raw(
            "PUT",
            &policy_path("prod"),
            Some(f.token(Role::Admin)),
            Some(json!({"privileged": true}).to_string()),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&body)
    );

    // Bad bodies are refused naming the value, and change nothing.
    for (bad, named) in [
        (
            json!({"privileged": true, "priviledged": true}),
            "priviledged",
        ),
        (json!({"bind_prefixes": ["srv/app"]}), "srv/app"),
        (json!({"bind_prefixes": ["/srv/../etc"]}), "/srv/../etc"),
        (json!({"capabilities": ["NET_ADMINN"]}), "NET_ADMINN"),
        (json!({"host_namespaces": ["host"]}), "host"),
    ] {
        let (status, body) = f
            .call(
                "PUT",
                &policy_path("prod"),
                Some(f.token(Role::Admin)),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(named),
            "{bad}: {body}"
        );
    }
    assert_eq!(
        f.ok("GET", &policy_path("prod"), Role::Viewer, None).await,
        stored
    );

    // The change is in the audit log, with the policy it replaced.
    let audit = f
        .ok("GET", "/api/v1/audit?limit=100", Role::Admin, None)
        .await;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["route"] == "/api/v1/environments/{id}/runtime-policy" && e["status"] == 200)
        .unwrap_or_else(|| panic!("no audit row: {audit}"));
    assert_eq!(entry["before"]["capabilities"], json!([]), "{entry}");
    assert_eq!(
        entry["after"]["capabilities"],
        json!(["NET_ADMIN"]),
        "{entry}"
    );
}

#[tokio::test]
async fn a_release_no_environment_allows_is_refused_at_creation() {
    let f = Fixture::new().await;
    environment(&f, "prod", "docker_host").await;
    let (status, body) = f
        .call(
            "POST",
            "/api/v1/releases",
            Some(f.token(Role::Deployer)),
            Some(release_with("r1", PRIVILEGED)),
        )
        .await;
    assert_refused(
        status,
        &body,
        "web",
        "privileged",
        &[
            "every environment's runtime policy refuses",
            "privileged: true",
        ],
    );
    // An allowed-looking prefix does not hand over the Docker socket.
    set_policy(&f, "prod", json!({"bind_prefixes": ["/var/run", "/srv"]})).await;
    let socket = "services:\n  web:\n    componentName: web\n    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n";
    let (status, body) = f
        .call(
            "POST",
            "/api/v1/releases",
            Some(f.token(Role::Deployer)),
            Some(release_with("r2", socket)),
        )
        .await;
    assert_refused(
        status,
        &body,
        "web",
        "volumes",
        &[
            "engine socket `/var/run/docker.sock`",
            "docker_socket: true",
        ],
    );
    // Once some environment allows it, the release is created.
    environment(&f, "lab", "compose_host").await;
    set_policy(&f, "lab", json!({"privileged": true})).await;
    f.ok(
        "POST",
        "/api/v1/releases",
        Role::Deployer,
        Some(release_with("r1", PRIVILEGED)),
    )
    .await;
}

#[tokio::test]
async fn promotions_and_jobs_are_checked_against_their_environment() {
    let f = Fixture::new().await;
    environment(&f, "prod", "compose_host").await;
    environment(&f, "lab", "compose_host").await;
    set_policy(&f, "lab", json!({"privileged": true})).await;
    let release = f
        .ok(
            "POST",
            "/api/v1/releases",
            Role::Deployer,
            Some(release_with("r1", PRIVILEGED)),
        )
        .await;
    let release_id = release["id"].as_str().unwrap();

    // Promotion to an environment whose policy refuses it: 422 at once.
    let (status, body) = f
        .call(
            "POST",
            "/api/v1/promotions",
            Some(f.token(Role::Deployer)),
            Some(json!({"release_id": release_id, "environment_id": "prod"})),
        )
        .await;
    assert_refused(
        status,
        &body,
        "web",
        "privileged",
        &[
            "environment `prod`'s runtime policy refuses",
            "deployctl env policy set prod",
        ],
    );

    // Allowed when requested, tightened before approval: the job is refused and the
    // promotion stays as it was.
    let promotion = f
        .ok(
            "POST",
            "/api/v1/promotions",
            Role::Deployer,
            Some(json!({"release_id": release_id, "environment_id": "lab"})),
        )
        .await;
    let promotion_id = promotion["id"].as_str().unwrap();
    set_policy(&f, "lab", json!({})).await;
    let approve = format!("/api/v1/promotions/{promotion_id}/approve");
    let (status, body) = f
        .call(
            "POST",
            &approve,
            Some(f.token(Role::Deployer)),
            Some(json!({})),
        )
        .await;
    assert_refused(
        status,
        &body,
        "web",
        "privileged",
        &["environment `lab`'s runtime policy refuses"],
    );
    let still = f
        .ok(
            "GET",
            &format!("/api/v1/promotions/{promotion_id}"),
            Role::Viewer,
            None,
        )
        .await;
    assert_eq!(still["status"], "requested", "{still}");

    // A job's own template is checked the same way.
    set_policy(&f, "lab", json!({"privileged": true})).await;
    let pid = "services:\n  web:\n    componentName: web\n    pid: host\n";
    let (status, body) = f
        .call(
            "POST",
            &approve,
            Some(f.token(Role::Deployer)),
            Some(json!({"template": pid})),
        )
        .await;
    assert_refused(
        status,
        &body,
        "web",
        "pid",
        &["`pid: host`", "host_namespaces: [\"pid\"]"],
    );
    // What the policy allows is approved and gets its job.
    let approved = f
        .ok("POST", &approve, Role::Deployer, Some(json!({})))
        .await;
    assert!(approved["job"]["id"].is_string(), "{approved}");
}
