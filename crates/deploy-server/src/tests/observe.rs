//! Request ids (kept, generated, replaced), the access log line, the request id in a job event's cause, and the per-route latency histogram and process metrics on `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode};
use deploy_api::Role;
use deploy_core::JobId;
use tower::ServiceExt;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};

use super::Fixture;
use crate::request_id::{MAX_LEN, RequestId};

/// Sends `GET path` with `X-Request-Id: id` (raw bytes) when given; the status and the
/// answer's `X-Request-Id`.
async fn get_with_id(f: &Fixture, path: &str, id: Option<&[u8]>) -> (StatusCode, String) {
    let mut req = Request::builder().method("GET").uri(path);
    if let Some(id) = id {
        req = req.header("x-request-id", HeaderValue::from_bytes(id).unwrap());
    }
    let resp = f
        .app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let returned = resp
        .headers()
        .get("x-request-id")
        .expect("every answer has an X-Request-Id")
        .to_str()
        .unwrap()
        .to_owned();
    (resp.status(), returned)
}

fn is_generated(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 7)
}

#[tokio::test]
async fn an_id_is_generated_when_none_is_given() {
    let f = Fixture::new().await;
    let (status, first) = get_with_id(&f, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(is_generated(&first), "{first}");
    let (_, second) = get_with_id(&f, "/healthz", None).await;
    assert_ne!(first, second, "each request gets its own id");
    // Unmatched paths and errors get one too.
    let (status, id) = get_with_id(&f, "/no/such/path", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(is_generated(&id), "{id}");
}

#[tokio::test]
async fn a_sane_id_is_kept_and_an_insane_one_replaced() {
    let f = Fixture::new().await;
    let longest = "x".repeat(MAX_LEN);
    for sane in [
        "abc-123",
        "a.b_c~d:e/f=",
        "0190c3b2-7c1d-7000-8000-000000000000",
        &longest,
    ] {
        let (_, returned) = get_with_id(&f, "/healthz", Some(sane.as_bytes())).await;
        assert_eq!(returned, sane);
    }
    let too_long = "x".repeat(500);
    let insane: [&[u8]; 6] = [
        b"",
        b"has space",
        b"tab\there",
        "caf\u{e9}".as_bytes(),
        b"\xff\xfe",
        too_long.as_bytes(),
    ];
    for given in insane {
        let (_, returned) = get_with_id(&f, "/healthz", Some(given)).await;
        assert!(is_generated(&returned), "{given:?} -> {returned}");
    }
}

#[test]
fn request_ids_are_visible_ascii_of_bounded_length() {
    for (given, sane) in [
        ("a", true),
        ("~!#$%&'*+-.^_`|", true),
        ("", false),
        (" leading", false),
        ("new\nline", false),
        ("\u{7f}", false),
        ("\u{e9}", false),
    ] {
        assert_eq!(RequestId::parse(given).is_some(), sane, "{given:?}");
    }
    assert!(RequestId::parse(&"a".repeat(MAX_LEN)).is_some());
    assert!(RequestId::parse(&"a".repeat(MAX_LEN + 1)).is_none());
    let id = RequestId::parse("r-1").unwrap();
    assert_eq!(
        id.attribute("cancelled by alice"),
        "cancelled by alice (request r-1)"
    );
}

/// The fields of each event on `deployd::access`, as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

impl Capture {
    fn lines(&self) -> Vec<BTreeMap<String, String>> {
        self.0.lock().unwrap().clone()
    }

    /// Captures this thread's events until the guard drops.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() != crate::access::TARGET {
            return;
        }
        let mut fields = BTreeMap::new();
        fields.insert("level".to_owned(), meta.level().to_string());
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(fields);
    }
}

/// The one captured line whose `request_id` is `id`.
fn line_of(
    lines: &[BTreeMap<String, String>],
    id: &str,
    message: &str,
) -> BTreeMap<String, String> {
    let found: Vec<_> = lines
        .iter()
        .filter(|l| {
            l.get("request_id").map(String::as_str) == Some(id)
                && l.get("message").map(String::as_str) == Some(message)
        })
        .collect();
    assert_eq!(found.len(), 1, "one `{message}` line for {id}: {lines:?}");
    found[0].clone()
}

#[tokio::test]
async fn each_request_writes_one_access_line_without_query_or_token() {
    let f = Fixture::new().await;
    let capture = Capture::default();
    let _guard = capture.install();
    let token = f.token(Role::Viewer).to_owned();
    let (status, _, body) = f
        .raw(
            "GET",
            "/api/v1/jobs?limit=5&token=hunter2",
            Some(&token),
            None,
            &[("x-request-id", "list-1")],
        )
        .await;
    // An unknown query parameter is refused; the line says so, without the query.
    assert_eq!(status, StatusCode::BAD_REQUEST);
    f.raw(
        "GET",
        "/nowhere?x=1",
        None,
        None,
        &[("x-request-id", "lost-1")],
    )
    .await;
    // A probe's success is a debug line; so is the agent data plane's.
    f.raw(
        "GET",
        "/healthz",
        None,
        None,
        &[("x-request-id", "probe-1")],
    )
    .await;

    let lines = capture.lines();
    let line = line_of(&lines, "list-1", "request");
    let expected_bytes = body.len().to_string();
    for (field, value) in [
        ("level", "INFO"),
        ("method", "GET"),
        ("route", "/api/v1/jobs"),
        ("path", "/api/v1/jobs"),
        ("status", "400"),
        ("remote", "-"),
        ("bytes", expected_bytes.as_str()),
    ] {
        assert_eq!(
            line.get(field).map(String::as_str),
            Some(value),
            "{field} in {line:?}"
        );
    }
    let ms: f64 = line["duration_ms"].parse().unwrap();
    assert!(ms >= 0.0, "{line:?}");
    assert_eq!(line_of(&lines, "probe-1", "request")["level"], "DEBUG");
    let unmatched = line_of(&lines, "lost-1", "request");
    assert_eq!(unmatched["route"], "unmatched");
    assert_eq!(unmatched["path"], "/nowhere");
    assert_eq!(unmatched["status"], "404");
    let all = format!("{lines:?}");
    assert!(!all.contains("hunter2"), "no query: {all}");
    assert!(!all.contains(&token), "no token: {all}");
}

/// A job of a fresh world, approved as a deployer: its id.
async fn pending_job(f: &Fixture, name: &str) -> JobId {
    let w = f.world(name).await;
    let approved = f
        .ok(
            "POST",
            &format!("/api/v1/promotions/{}/approve", w.promotion_id),
            Role::Deployer,
            None,
        )
        .await;
    JobId::parse(approved["job"]["id"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_cancel_through_the_api_names_its_request_in_the_event_cause() {
    let f = Fixture::new().await;
    let job = pending_job(&f, "observe-cancel").await;
    let capture = Capture::default();
    let _guard = capture.install();
    let (status, headers, _) = f
        .raw(
            "POST",
            &format!("/api/v1/jobs/{job}/cancel"),
            Some(f.token(Role::Deployer)),
            None,
            &[("x-request-id", "cancel-req-1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-request-id"], "cancel-req-1");
    let events = f.store.job_events(job, 0, 100).await.unwrap();
    let causes: Vec<&str> = events.iter().map(|e| e.cause.as_str()).collect();
    assert!(
        causes.contains(&"cancelled by deployer (request cancel-req-1)"),
        "{causes:?}"
    );

    // The job's event stream (settled: it ends) logs its start and its end.
    let (status, _, body) = f
        .raw(
            "GET",
            &format!("/api/v1/jobs/{job}/events"),
            Some(f.token(Role::Viewer)),
            None,
            &[("x-request-id", "stream-1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let lines = capture.lines();
    let started = line_of(&lines, "stream-1", "stream started");
    assert_eq!(started["route"], "/api/v1/jobs/{id}/events");
    let ended = line_of(&lines, "stream-1", "stream ended");
    assert_eq!(ended["bytes"], body.len().to_string());
}

#[tokio::test]
async fn the_latency_histogram_is_labelled_by_route_template() {
    let f = Fixture::new().await;
    let token = f.token(Role::Viewer).to_owned();
    let (status, _) = f
        .call("GET", "/api/v1/jobs/not-a-job-id", Some(&token), None)
        .await;
    assert!(status.is_client_error(), "{status}");
    let (status, _, text) = f.raw("GET", "/metrics", None, None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(text).unwrap();
    let labels = r#"method="GET",route="/api/v1/jobs/{id}",status="4xx""#;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("deployd_http_request_duration_seconds") && l.contains(labels))
        .collect();
    assert_eq!(lines.len(), 11 + 1 + 2, "{lines:#?}");
    assert!(
        lines.contains(
            &format!("deployd_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 1")
                .as_str()
        ),
        "{lines:#?}"
    );
    assert!(
        lines.contains(
            &format!("deployd_http_request_duration_seconds_count{{{labels}}} 1").as_str()
        ),
        "{lines:#?}"
    );
    assert!(text.contains("# TYPE deployd_http_request_duration_seconds histogram"));
    assert!(!text.contains("not-a-job-id"), "paths are never labels");
    if cfg!(target_os = "linux") {
        for metric in [
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_cpu_seconds_total ",
        ] {
            let value: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix(metric))
                .unwrap_or_else(|| panic!("{metric} in {text}"))
                .parse()
                .unwrap();
            assert!(value >= 0.0, "{metric}{value}");
        }
        assert!(
            text.contains("process_resident_memory_bytes ")
                && !text.contains("process_resident_memory_bytes 0\n")
        );
    }
}
