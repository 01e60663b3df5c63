//! Console tests: sign-in, sessions, CSRF, security headers; and the signed-in client the other console tests use.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use deploy_api::Role;
use tower::ServiceExt;

use std::sync::Arc;
use std::time::Duration;

use deploy_core::ExecutionModel;
use deploy_exec::ExecutorRegistry;
use deploy_testkit::exec::FakeExecutor;
use serde_json::{Value, json};

use super::Fixture;
use crate::ServerConfig;

/// A browser-like client of one fixture: a session cookie and the session's CSRF token.
pub(super) struct Signed<'a> {
    fixture: &'a Fixture,
    pub cookie: String,
    pub csrf: String,
}

/// An answer: status, headers, body text.
pub(super) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The `Location` of a redirect.
    pub(super) fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Sends one request to the fixture's router.
pub(super) async fn send(
    f: &Fixture,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<String>,
    extra: &[(&str, &str)],
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, format!("deployd_session={c}"));
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = match form {
        Some(body) => req
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body)),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let response = f.app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The form body of `fields`.
pub(super) fn form(fields: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(fields).unwrap()
}

/// Signs in with the fixture's token of `role`.
pub(super) async fn sign_in(f: &Fixture, role: Role) -> Signed<'_> {
    let answer = send(
        f,
        "POST",
        "/ui/login",
        None,
        Some(form(&[("token", f.token(role)), ("next", "/ui/")])),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let set_cookie = answer
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let cookie = set_cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("deployd_session=")
        .unwrap()
        .to_owned();
    let mut signed = Signed {
        fixture: f,
        cookie,
        csrf: String::new(),
    };
    let page = signed.get("/ui/").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    signed.csrf = csrf_in(&page.body).expect("a signed-in page carries the CSRF token");
    signed
}

/// The CSRF token in a page's forms.
pub(super) fn csrf_in(html: &str) -> Option<String> {
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_owned())
}

impl Signed<'_> {
    /// `GET path` with the session.
    pub(super) async fn get(&self, path: &str) -> Answer {
        send(self.fixture, "GET", path, Some(&self.cookie), None, &[]).await
    }

    /// `POST path` of `fields` plus the session's CSRF token.
    pub(super) async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut all = fields.to_vec();
        all.push(("csrf", &self.csrf));
        self.post_raw(path, form(&all)).await
    }

    /// `POST path` of exactly `body` (no CSRF token added).
    pub(super) async fn post_raw(&self, path: &str, body: String) -> Answer {
        send(
            self.fixture,
            "POST",
            path,
            Some(&self.cookie),
            Some(body),
            &[],
        )
        .await
    }
}

/// A fixture whose ssh targets are served by `fake`.
pub(super) async fn fake_fixture(fake: &Arc<FakeExecutor>) -> Fixture {
    let fake = fake.clone();
    Fixture::build(ServerConfig::default(), move |_| {
        let mut executors = ExecutorRegistry::new();
        executors.register(ExecutionModel::Ssh, fake);
        executors
    })
    .await
}

/// Job `id` as the API shows it.
pub(super) async fn api_job(f: &Fixture, id: &str) -> Value {
    f.ok("GET", &format!("/api/v1/jobs/{id}"), Role::Viewer, None)
        .await
}

/// Waits until job `id` has `status` per the API (30 s at most).
pub(super) async fn wait_for(f: &Fixture, id: &str, status: &str) -> Value {
    for _ in 0..600 {
        let job = api_job(f, id).await;
        if job["status"] == status && job["winding_down"] != true {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} never became {status}: {}", api_job(f, id).await);
}

/// Releases `name` with image digest `c` repeated, promoted to `env_id` and approved
/// (one attempt per task); the job's id.
pub(super) async fn deploy(f: &Fixture, env_id: &str, name: &str, c: char) -> String {
    let release = f
        .ok(
            "POST",
            "/api/v1/releases",
            Role::Deployer,
            Some(json!({"name": name, "components": [{"name": "web",
                "image": format!("127.0.0.1:5000/web@sha256:{}", c.to_string().repeat(64))}]})),
        )
        .await;
    let promotion = f
        .ok(
            "POST",
            "/api/v1/promotions",
            Role::Deployer,
            Some(json!({"release_id": release["id"], "environment_id": env_id})),
        )
        .await;
    let approved = f
        .ok(
            "POST",
            &format!(
                "/api/v1/promotions/{}/approve",
                promotion["id"].as_str().unwrap()
            ),
            Role::Deployer,
            Some(json!({"max_attempts": 1})),
        )
        .await;
    approved["job"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_root_and_every_page_lead_to_sign_in_first() {
    let f = Fixture::new().await;
    let root = send(&f, "GET", "/", None, None, &[]).await;
    assert_eq!(root.location(), "/ui/");
    let page = send(&f, "GET", "/ui/jobs?before=x", None, None, &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/ui/login?next=%2Fui%2Fjobs%3Fbefore%3Dx");
    let login = send(&f, "GET", "/ui/login", None, None, &[]).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(
        login.body.contains(r#"id="sign-in-form""#),
        "{}",
        login.body
    );
}

#[tokio::test]
async fn a_token_becomes_a_strict_http_only_session_until_sign_out() {
    let f = Fixture::new().await;
    let signed = sign_in(&f, Role::Viewer).await;
    let page = signed.get("/ui/").await;
    assert!(page.body.contains(r#"data-role="viewer""#));
    // The cookie holds a random secret, not the token.
    assert!(!signed.cookie.contains(f.token(Role::Viewer)));

    let out = signed.post("/ui/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    let cleared = out
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The session is gone on the server, not only in the browser.
    let after = signed.get("/ui/").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert!(after.location().starts_with("/ui/login"));
}

#[tokio::test]
async fn a_bad_token_is_refused_with_a_message_and_no_cookie() {
    let f = Fixture::new().await;
    let answer = send(
        &f,
        "POST",
        "/ui/login",
        None,
        Some(form(&[("token", "dpl_nope")])),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.body.contains("unknown or revoked API token"));
    assert!(answer.headers.get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn revoking_the_token_ends_its_console_sessions() {
    let f = Fixture::new().await;
    let signed = sign_in(&f, Role::Deployer).await;
    let tokens = f.ok("GET", "/api/v1/tokens", Role::Admin, None).await;
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "deployer")
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .unwrap();
    f.ok(
        "POST",
        &format!("/api/v1/tokens/{id}/revoke"),
        Role::Admin,
        None,
    )
    .await;
    let page = signed.get("/ui/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_or_from_another_origin_are_refused() {
    let f = Fixture::new().await;
    let signed = sign_in(&f, Role::Admin).await;
    let missing = signed.post_raw("/ui/logout", String::new()).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert!(missing.body.contains("no CSRF token"), "{}", missing.body);
    let wrong = signed
        .post_raw("/ui/logout", form(&[("csrf", "0000")]))
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let foreign = send(
        &f,
        "POST",
        "/ui/logout",
        Some(&signed.cookie),
        Some(form(&[("csrf", &signed.csrf)])),
        &[
            ("host", "deployd.local"),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    // Still signed in: nothing was done.
    assert_eq!(signed.get("/ui/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn pages_carry_a_strict_content_security_policy() {
    let f = Fixture::new().await;
    let signed = sign_in(&f, Role::Viewer).await;
    let page = signed.get("/ui/").await;
    let csp = page
        .headers
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(page.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert_eq!(page.headers.get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
    // No inline code anywhere: the policy would block it.
    assert!(!page.body.contains("<script>") && !page.body.contains("style="));
    let js = signed.get("/ui/assets/console.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(
        js.headers
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("javascript")
    );
}

#[tokio::test]
async fn console_writes_are_audited_as_the_signed_in_token() {
    let f = Fixture::new().await;
    let signed = sign_in(&f, Role::Admin).await;
    signed.post("/ui/logout", &[]).await;
    let audit = f.ok("GET", "/api/v1/audit", Role::Admin, None).await;
    let row = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/ui/logout")
        .unwrap_or_else(|| panic!("no audit row for the sign-out: {audit}"));
    assert_eq!(row["actor_kind"], "token");
    assert_eq!(row["status"], 303);
    let sign_in_row = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/ui/login")
        .unwrap_or_else(|| panic!("no audit row for the sign-in: {audit}"));
    assert_eq!(sign_in_row["actor_name"], row["actor_name"]);
}
