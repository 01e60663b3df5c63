//! The API while PostgreSQL is down: requests answer a 503 `unavailable` problem with `Retry-After` (they were opaque 500s), `/readyz` says the database is unreachable, and all answer 200 again once it is back.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use deploy_engine::{Engine, EngineConfig, SystemClock};
use deploy_exec::ExecutorRegistry;
use deploy_store::{PgConfig, PgStore, Store};
use serde_json::Value;
use tower::ServiceExt;

use crate::{ServerConfig, ServerState, bootstrap_admin, router};

async fn get(app: &axum::Router, path: &str, token: &str) -> (StatusCode, Option<String>, Value) {
    let req = Request::builder()
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        retry,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_a_503_problem_until_it_is_back() {
    let pg = deploy_testkit::Postgres::start().unwrap();
    let mut config = PgConfig::new(pg.url());
    // Bounds each request's wait for a connection (deployd's default is 10 s).
    config.acquire_timeout = Duration::from_secs(1);
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&config).await.unwrap());
    let engine = Engine::new(
        store.clone(),
        ExecutorRegistry::new(),
        EngineConfig::new("test"),
        Arc::new(SystemClock),
    )
    .unwrap();
    let now = deploy_engine::Clock::now(&SystemClock);
    let admin = bootstrap_admin(store.as_ref(), None, now)
        .await
        .unwrap()
        .unwrap()
        .token
        .token;
    let app = router(ServerState::new(
        engine,
        Arc::new(SystemClock),
        ServerConfig::default(),
    ));
    let (status, _, _) = get(&app, "/api/v1/environments", &admin).await;
    assert_eq!(status, StatusCode::OK);
    let ready = |status, text: &str| (status, Value::from(text));
    let (status, _, body) = get(&app, "/readyz", &admin).await;
    assert_eq!(
        (status, body["status"].clone()),
        ready(StatusCode::OK, "ready")
    );

    tokio::task::block_in_place(|| pg.stop()).unwrap();
    for path in ["/api/v1/environments", "/api/v1/jobs"] {
        let (status, retry, problem) = get(&app, path, &admin).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {problem}");
        assert_eq!(retry.as_deref(), Some("2"), "{path}");
        assert_eq!(
            problem["type"], "urn:deploy:problem:unavailable",
            "{problem}"
        );
        assert_eq!(
            problem["detail"],
            "the database is unavailable (restarting or unreachable); try again shortly"
        );
    }

    let (status, _, body) = get(&app, "/readyz", &admin).await;
    assert_eq!(
        (status, body["status"].clone()),
        ready(StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
    );

    tokio::task::block_in_place(|| pg.start_again()).unwrap();
    let (status, _, body) = get(&app, "/api/v1/environments", &admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = get(&app, "/readyz", &admin).await;
    assert_eq!(
        (status, body["status"].clone()),
        ready(StatusCode::OK, "ready")
    );
}
