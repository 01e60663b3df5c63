//! Benchmark: server time to render the web console's overview, jobs list and 1,000-task job page, each beside the JSON API calls that return the same data (the baseline, measured interleaved in the same run).
//!
//! Run: `cargo bench -p deploy-server --bench console`. Goal: each page's median
//! ≤ 2× its JSON baseline and < 50 ms. The requests go through the whole router
//! in process (routing, session lookup, store reads on SQLite, rendering), not
//! over a socket. With `BENCH_REPORT_FILE` set (by `cargo xtask bench`) the
//! figures also go to that file (deploy_testkit::bench_report).

#![expect(
    clippy::unwrap_used,
    reason = "benchmark setup over fixed, valid inputs"
)]
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use deploy_api::Role;
use deploy_engine::{Engine, EngineConfig, SystemClock};
use deploy_exec::ExecutorRegistry;
use deploy_server::{ServerConfig, ServerState, create_token, router};
use deploy_store::{SqliteConfig, SqliteStore, Store};
use deploy_testkit::bench_report::{self, Better, Figure, Goal};
use tower::ServiceExt;

#[path = "console_world.rs"]
mod console_world;

const SECTION: &str = "console";

/// One request through the router; its wall-clock ms (the body read to the end).
async fn timed(app: &Router, path: &str, auth: &(&str, String)) -> f64 {
    let request = Request::builder()
        .uri(path)
        .header(auth.0, auth.1.as_str())
        .body(Body::empty())
        .unwrap();
    let start = Instant::now();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    std::hint::black_box(body);
    start.elapsed().as_secs_f64() * 1000.0
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn main() {
    let samples: usize = std::env::var("BENCH_SAMPLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50)
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(measure(samples));
}

async fn measure(samples: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&SqliteConfig::new(dir.path().join("db.sqlite")))
            .await
            .unwrap(),
    );
    let big = console_world::seed(store.as_ref()).await;
    let engine = Engine::new(
        store.clone(),
        ExecutorRegistry::new(),
        EngineConfig::new("bench"),
        Arc::new(SystemClock),
    )
    .unwrap();
    let state = ServerState::new(engine, Arc::new(SystemClock), ServerConfig::default());
    let now = deploy_engine::Clock::now(&SystemClock);
    let token = create_token(store.as_ref(), "bench", Role::Admin, None, now)
        .await
        .unwrap();
    let app = router(state);
    let bearer = ("authorization", format!("Bearer {}", token.token));
    let cookie = ("cookie", sign_in(&app, &token.token).await);

    let environments: Vec<String> = (1..=console_world::ENVIRONMENTS)
        .map(|e| deploy_core::testing::environment_id(e).to_string())
        .collect();
    // The JSON calls an API client makes for the overview's data: the environments,
    // and per environment its targets and its latest jobs.
    let mut overview_json = vec!["/api/v1/environments".to_owned()];
    for id in &environments {
        overview_json.push(format!("/api/v1/environments/{id}/targets"));
        overview_json.push(format!("/api/v1/jobs?environment={id}&limit=5"));
    }
    let pages: [(&str, Vec<String>, Vec<String>); 3] = [
        (
            "overview (5 environments, 1,000 jobs)",
            vec!["/ui/".to_owned()],
            overview_json,
        ),
        (
            "jobs list, first page of 1,000 jobs",
            vec!["/ui/jobs".to_owned()],
            vec!["/api/v1/jobs?limit=50".to_owned()],
        ),
        (
            "job page of a 1,000-task job",
            vec![format!("/ui/jobs/{big}")],
            vec![format!("/api/v1/jobs/{big}")],
        ),
    ];
    for (title, page, json) in pages {
        // Warm-up, not recorded.
        for _ in 0..3 {
            for p in &page {
                timed(&app, p, &cookie).await;
            }
            for j in &json {
                timed(&app, j, &bearer).await;
            }
        }
        let (mut page_ms, mut json_ms) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            let mut sum = 0.0;
            for p in &page {
                sum += timed(&app, p, &cookie).await;
            }
            page_ms.push(sum);
            let mut sum = 0.0;
            for j in &json {
                sum += timed(&app, j, &bearer).await;
            }
            json_ms.push(sum);
        }
        let (p, j) = (median(&page_ms), median(&json_ms));
        println!(
            "{title}: page median {p:.2} ms, JSON median {j:.2} ms ({} call(s)), ratio {:.2}",
            json.len(),
            p / j
        );
        if bench_report::enabled() {
            Figure::new(SECTION, title, "ms", Better::Lower, page_ms)
                .baseline(
                    &format!("the same data as JSON ({} API call(s))", json.len()),
                    json_ms,
                )
                .goal(Goal::ratio_below(2.0))
                .notes(
                    "server time through the router in process, SQLite; goal also < 50 ms median",
                )
                .emit()
                .unwrap();
        }
    }
}

/// Signs in through the console's form; the session cookie header value.
async fn sign_in(app: &Router, token: &str) -> String {
    let body = serde_urlencoded::to_string([("token", token)]).unwrap();
    let request = Request::builder()
        .method("POST")
        .uri("/ui/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    set_cookie.split(';').next().unwrap().to_owned()
}
