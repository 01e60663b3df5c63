//! Console tests: catalog pages (releases and the promotions queue with approve and reject).

use axum::http::StatusCode;
use deploy_api::Role;
use serde_json::{Value, json};

use super::console::{csrf_in, form, send, sign_in};
use super::{Fixture, release_body};

/// How many times `needle` occurs in `haystack`.
fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Asserts that `raw` markup shows in `html` as escaped text only. Askama 0.16
/// escapes `<` and `>` as `&#60;` and `&#62;`; `&lt;`/`&gt;` are accepted too.
fn assert_escaped(html: &str, raw: &str) {
    assert!(!html.contains(raw), "raw `{raw}` in: {html}");
    let named = raw.replace('<', "&lt;").replace('>', "&gt;");
    let numeric = raw.replace('<', "&#60;").replace('>', "&#62;");
    assert!(
        html.contains(&named) || html.contains(&numeric),
        "`{raw}` not shown escaped in: {html}"
    );
}

/// Environment `name` with one SSH target and `extra` (an approval policy), its id.
async fn env_with_target(f: &Fixture, name: &str, extra: Value) -> String {
    let env = f.env_named(name, extra).await;
    let id = env["id"].as_str().unwrap().to_owned();
    f.add_target(&id, "host-1").await;
    id
}

/// Signs in with `token` (not one of the fixture's role tokens); the session
/// cookie and its CSRF token.
async fn sign_in_with(f: &Fixture, token: &str) -> (String, String) {
    let answer = send(
        f,
        "POST",
        "/ui/login",
        None,
        Some(form(&[("token", token)])),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let set_cookie = answer.headers["set-cookie"].to_str().unwrap();
    let cookie = set_cookie
        .split(';')
        .next()
        .and_then(|c| c.strip_prefix("deployd_session="))
        .unwrap()
        .to_owned();
    let page = send(f, "GET", "/ui/promotions", Some(&cookie), None, &[]).await;
    let csrf = csrf_in(&page.body).unwrap();
    (cookie, csrf)
}

/// The promotion `id` as the API reads it.
async fn promotion(f: &Fixture, id: &str) -> Value {
    f.ok(
        "GET",
        &format!("/api/v1/promotions/{id}"),
        Role::Viewer,
        None,
    )
    .await
}

#[tokio::test]
async fn the_releases_list_pages_newest_first() {
    let f = Fixture::new().await;
    for i in 0..51 {
        f.ok(
            "POST",
            "/api/v1/releases",
            Role::Deployer,
            Some(release_body(&format!("r-{i:03}"))),
        )
        .await;
    }
    f.ok(
        "POST",
        "/api/v1/releases/r-050/archive",
        Role::Deployer,
        None,
    )
    .await;
    let signed = sign_in(&f, Role::Viewer).await;
    let first = signed.get("/ui/releases").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(
        count(&first.body, r#"<tr class="release" data-release-id=""#),
        50
    );
    // Newest first: r-050 (archived, with its badge) leads, r-000 is on the next page.
    let newest = first.body.find(">r-050</a>").unwrap();
    assert!(newest < first.body.find(">r-049</a>").unwrap());
    assert!(
        first.body.contains(r#"class="badge archived""#),
        "{}",
        first.body
    );
    assert!(!first.body.contains(">r-000</a>"));
    let marker = r#"href="/ui/releases?before="#;
    let start = first.body.find(marker).expect("an Older link") + marker.len();
    let before = &first.body[start..start + first.body[start..].find('"').unwrap()];
    let second = signed.get(&format!("/ui/releases?before={before}")).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(count(&second.body, r#"<tr class="release""#), 1);
    assert!(second.body.contains(">r-000</a>"), "{}", second.body);
    assert!(!second.body.contains("Older →"));

    let bad = signed.get("/ui/releases?before=nope").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_release_page_shows_components_digests_the_escaped_template_and_its_jobs() {
    let f = Fixture::new().await;
    let env_id = env_with_target(&f, "staging", json!({})).await;
    let mut body = release_body("r1");
    body["template"] = json!(
        "services:\n  web:\n    componentName: web\n    environment:\n      GREETING: <b>x</b>\n"
    );
    let release = f
        .ok("POST", "/api/v1/releases", Role::Deployer, Some(body))
        .await;
    let release_id = release["id"].as_str().unwrap();
    let requested = f
        .ok(
            "POST",
            "/api/v1/promotions",
            Role::Deployer,
            Some(json!({"release_id": release_id, "environment_id": env_id})),
        )
        .await;
    let job = f.approve(&requested).await["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let signed = sign_in(&f, Role::Viewer).await;
    // By id and by name, as in the API.
    for path in [
        format!("/ui/releases/{release_id}"),
        "/ui/releases/r1".to_owned(),
    ] {
        let page = signed.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(
            page.body
                .contains(r#"<tr class="component" data-component="web">"#)
        );
        assert!(
            page.body
                .contains(r#"<td class="image">127.0.0.1:5000/web</td>"#),
            "{}",
            page.body
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(
            page.body
                .contains(&format!(r#"<td class="digest"><code>{digest}</code></td>"#)),
            "{}",
            page.body
        );
        assert!(page.body.contains(r#"<pre id="template""#));
        assert_escaped(&page.body, "GREETING: <b>x</b>");
        // Where it has run: the job, its environment, a link to its page.
        assert!(
            page.body.contains(&format!(r#"data-job-id="{job}""#)),
            "{}",
            page.body
        );
        assert!(page.body.contains(&format!(r#"href="/ui/jobs/{job}""#)));
        assert!(
            page.body
                .contains(r#"<td class="environment">staging</td>"#)
        );
    }
    let missing = signed.get("/ui/releases/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_queue_shows_pending_promotions_with_their_policy() {
    let f = Fixture::new().await;
    let env_id = env_with_target(&f, "prod", json!({"approval": {"required_approvals": 2}})).await;
    let pending = f.promote_release(&env_id, "r1").await;
    let pending_id = pending["id"].as_str().unwrap();
    let other = env_with_target(&f, "staging", json!({})).await;
    let decided = f.promote_release(&other, "r2").await;
    f.approve(&decided).await;
    let decided_id = decided["id"].as_str().unwrap();

    let signed = sign_in(&f, Role::Deployer).await;
    let queue = signed.get("/ui/promotions").await;
    assert_eq!(queue.status, StatusCode::OK, "{}", queue.body);
    let row = format!(
        r#"<tr class="promotion" data-promotion-id="{pending_id}" data-status="requested">"#
    );
    assert!(queue.body.contains(&row), "{}", queue.body);
    assert!(
        queue.body.contains(r#"<span class="count">0 of 2</span>"#),
        "{}",
        queue.body
    );
    assert!(queue.body.contains(r#"<td class="environment">prod</td>"#));
    assert!(
        queue
            .body
            .contains(&format!(r#"action="/ui/promotions/{pending_id}/approve""#))
    );
    assert!(queue.body.contains(r#"class="approve primary""#));
    assert!(queue.body.contains(r#"name="reason" type="text" required"#));
    // The pending queue holds no decided promotion; "all" does, without buttons.
    assert!(!queue.body.contains(decided_id));
    let all = signed.get("/ui/promotions?status=all").await;
    assert!(all.body.contains(&format!(
        r#"data-promotion-id="{decided_id}" data-status="approved""#
    )));
    assert!(
        !all.body
            .contains(&format!("/ui/promotions/{decided_id}/approve"))
    );
    assert_eq!(count(&all.body, r#"class="approve primary""#), 1);
    let bad = signed.get("/ui/promotions?status=maybe").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn approving_in_the_console_follows_the_policy_and_creates_the_job() {
    let f = Fixture::new().await;
    let env_id = env_with_target(&f, "prod", json!({"approval": {"required_approvals": 2}})).await;
    // Requested by the deployer token, which the policy forbids to approve it.
    let requested = f.promote_release(&env_id, "r1").await;
    let id = requested["id"].as_str().unwrap();
    let approve = format!("/ui/promotions/{id}/approve");

    let deployer = sign_in(&f, Role::Deployer).await;
    let own = deployer.post(&approve, &[]).await;
    assert_eq!(own.status, StatusCode::FORBIDDEN, "{}", own.body);
    assert!(
        own.body.contains("requested this promotion"),
        "{}",
        own.body
    );

    // The first of two approvals: back to the queue, which counts it.
    let admin = sign_in(&f, Role::Admin).await;
    let first = admin.post(&approve, &[]).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    assert_eq!(first.location(), "/ui/promotions");
    assert_eq!(promotion(&f, id).await["status"], "requested");
    let queue = admin.get("/ui/promotions").await;
    assert!(
        queue.body.contains(r#"<span class="count">1 of 2</span>"#),
        "{}",
        queue.body
    );
    // The same token again: the engine's 409, on the error page.
    let again = admin.post(&approve, &[]).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert!(again.body.contains("already approved"), "{}", again.body);

    // A second approver (another deployer token) completes the count: the job's page.
    let bob = f
        .ok(
            "POST",
            "/api/v1/tokens",
            Role::Admin,
            Some(json!({"name": "bob", "role": "deployer"})),
        )
        .await;
    let (cookie, csrf) = sign_in_with(&f, bob["token"].as_str().unwrap()).await;
    let done = send(
        &f,
        "POST",
        &approve,
        Some(&cookie),
        Some(form(&[("csrf", &csrf)])),
        &[],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let after = promotion(&f, id).await;
    assert_eq!(after["status"], "approved", "{after}");
    let job = done
        .location()
        .strip_prefix("/ui/jobs/")
        .unwrap_or_else(|| panic!("not a job page: {}", done.location()))
        .to_owned();
    let read = f
        .ok("GET", &format!("/api/v1/jobs/{job}"), Role::Viewer, None)
        .await;
    assert_eq!(read["promotion_id"], id, "{read}");
}

#[tokio::test]
async fn a_simple_approval_goes_to_the_new_jobs_page() {
    let f = Fixture::new().await;
    let env_id = env_with_target(&f, "staging", json!({})).await;
    let requested = f.promote_release(&env_id, "r1").await;
    let id = requested["id"].as_str().unwrap();
    let signed = sign_in(&f, Role::Deployer).await;
    let answer = signed
        .post(&format!("/ui/promotions/{id}/approve"), &[])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert!(
        answer.location().starts_with("/ui/jobs/"),
        "{}",
        answer.location()
    );
    let jobs = f.ok("GET", "/api/v1/jobs", Role::Viewer, None).await;
    let job = &jobs["jobs"][0];
    assert_eq!(job["promotion_id"], id, "{jobs}");
    assert_eq!(
        answer.location(),
        format!("/ui/jobs/{}", job["id"].as_str().unwrap())
    );
    assert_eq!(promotion(&f, id).await["status"], "approved");
}

#[tokio::test]
async fn rejecting_in_the_console_keeps_the_escaped_reason() {
    let f = Fixture::new().await;
    let env_id = env_with_target(&f, "prod", json!({})).await;
    let requested = f.promote_release(&env_id, "r1").await;
    let id = requested["id"].as_str().unwrap();
    let reject = format!("/ui/promotions/{id}/reject");
    let signed = sign_in(&f, Role::Deployer).await;

    let blank = signed.post(&reject, &[("reason", "  ")]).await;
    assert_eq!(
        blank.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        blank.body
    );
    assert_eq!(promotion(&f, id).await["status"], "requested");

    let answer = signed
        .post(&reject, &[("reason", "<b>x</b> breaks checkout")])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.location(), "/ui/promotions");
    let after = promotion(&f, id).await;
    assert_eq!(after["status"], "rejected");
    assert_eq!(after["rejection_reason"], "<b>x</b> breaks checkout");

    let queue = signed.get("/ui/promotions").await;
    assert!(!queue.body.contains(id), "{}", queue.body);
    let rejected = signed.get("/ui/promotions?status=rejected").await;
    assert!(rejected.body.contains(&format!(
        r#"data-promotion-id="{id}" data-status="rejected""#
    )));
    assert_escaped(&rejected.body, "<b>x</b> breaks checkout");
    // Deciding twice: the API's 409 on the error page.
    let twice = signed.post(&reject, &[("reason", "again")]).await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "{}", twice.body);
}

#[tokio::test]
async fn a_viewer_sees_no_decision_and_its_forged_posts_are_refused() {
    let f = Fixture::new().await;
    let env_id = env_with_target(&f, "prod", json!({})).await;
    let requested = f.promote_release(&env_id, "r1").await;
    let id = requested["id"].as_str().unwrap();
    let viewer = sign_in(&f, Role::Viewer).await;
    let queue = viewer.get("/ui/promotions").await;
    assert_eq!(queue.status, StatusCode::OK);
    assert!(queue.body.contains(&format!(r#"data-promotion-id="{id}""#)));
    assert!(!queue.body.contains(r#"class="approve"#), "{}", queue.body);
    assert!(!queue.body.contains(r#"class="reject"#));
    assert!(!queue.body.contains("/approve\""));

    // Its own valid CSRF token does not make it a deployer.
    let approve = viewer
        .post(&format!("/ui/promotions/{id}/approve"), &[])
        .await;
    assert_eq!(approve.status, StatusCode::FORBIDDEN, "{}", approve.body);
    let reject = viewer
        .post(&format!("/ui/promotions/{id}/reject"), &[("reason", "no")])
        .await;
    assert_eq!(reject.status, StatusCode::FORBIDDEN);

    // A deployer's form without its CSRF token is refused too.
    let deployer = sign_in(&f, Role::Deployer).await;
    let no_csrf = deployer
        .post_raw(&format!("/ui/promotions/{id}/approve"), String::new())
        .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN, "{}", no_csrf.body);
    let no_csrf = deployer
        .post_raw(
            &format!("/ui/promotions/{id}/reject"),
            form(&[("reason", "no")]),
        )
        .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let after = promotion(&f, id).await;
    assert_eq!(after["status"], "requested");
    assert_eq!(after["approvals"], json!([]));
}
