//! In-process tests of the router: every route with each role, every error case, a deploy that fails cleanly, SSE resume.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use deploy_api::Role;
use deploy_api::agent::{AgentAction, TaskDelivery, TaskKey};
use deploy_core::{AgentId, ExecutionModel, TaskId};
use deploy_engine::{Engine, EngineConfig, SystemClock};
use deploy_exec::ExecutorRegistry;
use deploy_exec::ssh::{SshExecutor, SshExecutorConfig};
use deploy_store::{SqliteConfig, SqliteStore, Store};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::{ServerConfig, ServerState, bootstrap_admin, create_token, router};

/// The key file every replica of a test shares (as deployd's replicas share theirs):
/// `old` opens what an earlier key sealed, `new` seals.
const RELAY_KEYS: &str = "new AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\nold ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n";

/// [`RELAY_KEYS`], read.
fn relay_keys() -> Arc<crate::SecretKeys> {
    Arc::new(crate::SecretKeys::parse(RELAY_KEYS, std::path::Path::new("relay.key")).unwrap())
}

/// A hub relayed through `store`, its loops running as long as the test's runtime.
fn relayed_hub(store: &Arc<dyn Store>) -> deploy_exec::agent::AgentHub {
    let hub = deploy_exec::agent::AgentHub::with_relay(
        crate::DEFAULT_AGENT_HEARTBEAT_TIMEOUT,
        Arc::new(crate::StoreRelay::new(
            store.clone(),
            Arc::new(deploy_exec::DefaultSecrets),
            relay_keys(),
        )),
    );
    drop(hub.spawn_reaper(CancellationToken::new()));
    hub
}

struct Fixture {
    _dir: tempfile::TempDir,
    /// The PostgreSQL server of a fixture on PostgreSQL.
    _pg: Option<deploy_testkit::Postgres>,
    store: Arc<dyn Store>,
    app: Router,
    engine: Engine,
    /// The server's shutdown token (`ServerState::shutdown_token`).
    shutdown: CancellationToken,
    tokens: Vec<(Role, String)>,
    /// The agent hub of the server's state.
    hub: deploy_exec::agent::AgentHub,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_config(ServerConfig::default()).await
    }

    async fn with_config(config: ServerConfig) -> Self {
        Self::build(config, |dir| {
            let mut executors = ExecutorRegistry::new();
            executors.register(
                ExecutionModel::Ssh,
                Arc::new(SshExecutor::new(
                    SshExecutorConfig::new(dir.join("known_hosts")),
                    Arc::new(deploy_exec::DefaultSecrets),
                )),
            );
            executors
        })
        .await
    }

    /// A fixture whose engine runs agent targets through its hub.
    async fn with_agents() -> Self {
        let hub = deploy_exec::agent::AgentHub::new(crate::DEFAULT_AGENT_HEARTBEAT_TIMEOUT);
        Self::build_with_hub(ServerConfig::default(), hub.clone(), |_| {
            let mut executors = ExecutorRegistry::new();
            executors.register(
                ExecutionModel::Agent,
                Arc::new(deploy_exec::agent::AgentExecutor::new(
                    hub,
                    Arc::new(deploy_exec::DefaultSecrets),
                )),
            );
            executors
        })
        .await
    }

    /// A fixture whose engine dispatches through the registry `executors` makes.
    async fn build(
        config: ServerConfig,
        executors: impl FnOnce(&std::path::Path) -> ExecutorRegistry,
    ) -> Self {
        let hub = deploy_exec::agent::AgentHub::new(crate::DEFAULT_AGENT_HEARTBEAT_TIMEOUT);
        Self::build_with_hub(config, hub, executors).await
    }

    /// A fixture whose agent routes serve `hub` (which `executors` may dispatch through).
    async fn build_with_hub(
        config: ServerConfig,
        hub: deploy_exec::agent::AgentHub,
        executors: impl FnOnce(&std::path::Path) -> ExecutorRegistry,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&SqliteConfig::new(dir.path().join("db.sqlite")))
                .await
                .unwrap(),
        );
        Self::build_on(store, None, dir, config, hub, executors).await
    }

    /// A fixture (SSH executors) whose store is on a fresh PostgreSQL database.
    async fn on_postgres() -> Self {
        let pg = tokio::task::spawn_blocking(deploy_testkit::Postgres::start)
            .await
            .unwrap()
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(
            deploy_store::PgStore::connect(&deploy_store::PgConfig::new(pg.url()))
                .await
                .unwrap(),
        );
        let hub = deploy_exec::agent::AgentHub::new(crate::DEFAULT_AGENT_HEARTBEAT_TIMEOUT);
        let dir = tempfile::tempdir().unwrap();
        Self::build_on(store, Some(pg), dir, ServerConfig::default(), hub, |_| {
            ExecutorRegistry::new()
        })
        .await
    }

    /// A fixture on PostgreSQL whose agent hub shares its agents' work through the
    /// store, as deployd's does.
    async fn on_postgres_relayed() -> Self {
        let pg = tokio::task::spawn_blocking(deploy_testkit::Postgres::start)
            .await
            .unwrap()
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(
            deploy_store::PgStore::connect(&deploy_store::PgConfig::new(pg.url()))
                .await
                .unwrap(),
        );
        let hub = relayed_hub(&store);
        let dir = tempfile::tempdir().unwrap();
        Self::build_on(store, Some(pg), dir, ServerConfig::default(), hub, |_| {
            ExecutorRegistry::new()
        })
        .await
    }

    /// Another replica on this fixture's database: its own engine, relayed agent hub and
    /// router; the same tokens.
    async fn replica(&self) -> Self {
        let hub = relayed_hub(&self.store);
        let engine = Engine::new(
            self.store.clone(),
            ExecutorRegistry::new(),
            EngineConfig::new("replica-b"),
            Arc::new(SystemClock),
        )
        .unwrap();
        let state = ServerState::with_agent_hub(
            engine.clone(),
            Arc::new(SystemClock),
            ServerConfig::default(),
            hub,
        );
        Self {
            _dir: tempfile::tempdir().unwrap(),
            _pg: None,
            store: self.store.clone(),
            shutdown: state.shutdown_token(),
            hub: state.agent_hub().clone(),
            app: router(state),
            engine,
            tokens: self.tokens.clone(),
        }
    }

    async fn build_on(
        store: Arc<dyn Store>,
        pg: Option<deploy_testkit::Postgres>,
        dir: tempfile::TempDir,
        config: ServerConfig,
        hub: deploy_exec::agent::AgentHub,
        executors: impl FnOnce(&std::path::Path) -> ExecutorRegistry,
    ) -> Self {
        let executors = executors(dir.path());
        let mut engine_config = EngineConfig::new("test");
        engine_config.poll_interval = Duration::from_millis(50);
        // As deployd: plans inspect through an engine with a short task timeout.
        let mut plan_config = engine_config.clone();
        plan_config.task_timeout = Duration::from_secs(1);
        let plan_engine = Engine::new(
            store.clone(),
            executors.clone(),
            plan_config,
            Arc::new(SystemClock),
        )
        .unwrap();
        let engine = Engine::new(
            store.clone(),
            executors,
            engine_config,
            Arc::new(SystemClock),
        )
        .unwrap();
        let now = deploy_engine::Clock::now(&SystemClock);
        let admin = bootstrap_admin(store.as_ref(), None, now)
            .await
            .unwrap()
            .unwrap();
        assert!(admin.generated);
        let mut tokens = vec![(Role::Admin, admin.token.token)];
        for role in [Role::Viewer, Role::Deployer] {
            let t = create_token(store.as_ref(), role.as_str(), role, None, now)
                .await
                .unwrap();
            tokens.push((role, t.token));
        }
        // As deployd: application secrets sealed with a key file in the data dir.
        let keys =
            Arc::new(crate::SecretKeys::load_or_create(&dir.path().join("secrets.key")).unwrap());
        let app_secrets = Arc::new(crate::StoreSecrets::new(store.clone(), keys.clone()));
        engine.set_app_secrets(app_secrets.clone());
        plan_engine.set_app_secrets(app_secrets);
        let state = ServerState::with_agent_hub(engine.clone(), Arc::new(SystemClock), config, hub);
        state.set_plan_engine(plan_engine);
        state.set_secret_keys(keys);
        Self {
            _dir: dir,
            _pg: pg,
            store,
            shutdown: state.shutdown_token(),
            hub: state.agent_hub().clone(),
            app: router(state),
            engine,
            tokens,
        }
    }

    fn token(&self, role: Role) -> &str {
        &self.tokens.iter().find(|(r, _)| *r == role).unwrap().1
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, bytes) = self
            .raw(method, path, token, body.map(|b| b.to_string()), &[])
            .await;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = tokio::time::timeout(
            Duration::from_secs(60),
            axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024),
        )
        .await
        .expect("the response body ends")
        .unwrap();
        (status, headers, bytes.to_vec())
    }

    async fn ok(&self, method: &str, path: &str, role: Role, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, Some(self.token(role)), body).await;
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    /// Creates environment `name` as an admin, `extra`'s fields added to its body; the
    /// environment.
    async fn env_named(&self, name: &str, extra: Value) -> Value {
        let mut body = json!({ "name": name });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.ok("POST", "/api/v1/environments", Role::Admin, Some(body))
            .await
    }

    /// Adds the SSH target `name` ([`target_body`]) to environment `env` (its id or name), as an admin.
    async fn add_target(&self, env: &str, name: &str) -> Value {
        self.ok(
            "POST",
            &format!("/api/v1/environments/{env}/targets"),
            Role::Admin,
            Some(target_body(name)),
        )
        .await
    }

    /// Creates environment `env` with one docker_host target `target` run by whichever
    /// agent `selector` selects, in `work_dir`; the environment's id.
    async fn agent_env(&self, env: &str, target: &str, selector: Value, work_dir: &str) -> String {
        let created = self.env_named(env, json!({})).await;
        let env_id = created["id"].as_str().unwrap().to_owned();
        self.ok(
            "POST",
            &format!("/api/v1/environments/{env_id}/targets"),
            Role::Admin,
            Some(json!({
                "name": target,
                "target_type": "docker_host",
                "connection": {"model": "agent", "selector": selector, "work_dir": work_dir},
            })),
        )
        .await;
        env_id
    }

    /// Creates release `name` ([`release_body`]) and its promotion to environment
    /// `env_id`, as a deployer; the promotion.
    async fn promote_release(&self, env_id: &str, name: &str) -> Value {
        let release = self
            .ok(
                "POST",
                "/api/v1/releases",
                Role::Deployer,
                Some(release_body(name)),
            )
            .await;
        self.ok(
            "POST",
            "/api/v1/promotions",
            Role::Deployer,
            Some(json!({"release_id": release["id"], "environment_id": env_id})),
        )
        .await
    }

    /// Approves `promotion` (as the API returned it) as a deployer, with the default job
    /// settings; the answer, which holds the job.
    async fn approve(&self, promotion: &Value) -> Value {
        self.ok(
            "POST",
            &format!(
                "/api/v1/promotions/{}/approve",
                promotion["id"].as_str().unwrap()
            ),
            Role::Deployer,
            None,
        )
        .await
    }

    /// Runs the engine's service loop in the background until the returned token is
    /// cancelled; await the handle after cancelling.
    fn serve_engine(&self) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let shutdown = CancellationToken::new();
        let serve = tokio::spawn({
            let engine = self.engine.clone();
            let shutdown = shutdown.clone();
            async move { engine.serve(shutdown).await }
        });
        (shutdown, serve)
    }

    /// Hands `delivery` to `agent` through this fixture's hub, its log masking `secrets`;
    /// the completion to await and the sink the log's lines reach.
    async fn dispatch(
        &self,
        agent: AgentId,
        delivery: TaskDelivery,
        secrets: &[&str],
    ) -> (
        tokio::sync::oneshot::Receiver<deploy_exec::agent::Completion>,
        deploy_exec::MemorySink,
    ) {
        let sink = deploy_exec::MemorySink::new();
        let log = secrets.iter().fold(
            deploy_exec::TaskLog::new(Arc::new(sink.clone()), 1 << 20),
            |log, secret| log.with_secret(secret),
        );
        let done = self.hub.dispatch(agent, delivery, log).await.unwrap();
        (done, sink)
    }

    /// An environment with one SSH target on a closed loopback port, a release and a requested promotion.
    async fn world(&self, name: &str) -> World {
        let env = self.env_named(name, json!({})).await;
        let env_id = env["id"].as_str().unwrap().to_owned();
        self.add_target(&env_id, "host-1").await;
        let release = self
            .ok(
                "POST",
                "/api/v1/releases",
                Role::Deployer,
                Some(release_body(name)),
            )
            .await;
        let release_id = release["id"].as_str().unwrap().to_owned();
        let promotion = self
            .ok(
                "POST",
                "/api/v1/promotions",
                Role::Deployer,
                Some(json!({ "release_id": release_id, "environment_id": env_id })),
            )
            .await;
        World {
            env_id,
            release_id,
            promotion_id: promotion["id"].as_str().unwrap().to_owned(),
        }
    }
}

struct World {
    env_id: String,
    release_id: String,
    promotion_id: String,
}

fn target_body(name: &str) -> Value {
    // Port 1 on loopback: connection refused, the deploy fails cleanly.
    json!({
        "name": name,
        "target_type": "docker_host",
        "connection": {"model": "ssh", "host": "127.0.0.1", "port": 1, "user": "deploy",
                        "credential_ref": "env:DEPLOY_TEST_NO_SUCH_KEY", "work_dir": "/tmp"}
    })
}

fn release_body(name: &str) -> Value {
    json!({
        "name": name,
        "components": [{"name": "web", "image": format!("127.0.0.1:5000/web@sha256:{}", "a".repeat(64))}]
    })
}

/// Attempt 1 of task `task_id(task)`: an inspect of `web` on `ssh_target(1)`.
fn inspect_delivery(task: u64) -> TaskDelivery {
    TaskDelivery {
        key: TaskKey {
            task_id: deploy_core::testing::task_id(task),
            attempt: 1,
        },
        target: deploy_core::testing::ssh_target(1),
        action: AgentAction::Inspect {
            component: deploy_core::testing::name("web"),
        },
        timeout_ms: 10_000,
    }
}

#[tokio::test]
async fn health_ready_and_metrics_need_no_token() {
    let f = Fixture::new().await;
    assert_eq!(
        f.call("GET", "/healthz", None, None).await.0,
        StatusCode::OK
    );
    let (status, body) = f.call("GET", "/readyz", None, None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    let (status, _, bytes) = f.raw("GET", "/metrics", None, None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.contains("deployd_active_jobs{status=\"pending\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("deployd_http_responses_total{class=\"2xx\"} 2"),
        "{text}"
    );
}

/// Every route x (no token, wrong token, each role): 401 / 401 / 403 below the required role / 2xx at or above it.
#[tokio::test]
async fn role_matrix() {
    let f = Fixture::new().await;
    let w = f.world("matrix").await;
    // A job to read: approve, then cancel it (nothing runs it here).
    let approved = f
        .ok(
            "POST",
            &format!("/api/v1/promotions/{}/approve", w.promotion_id),
            Role::Deployer,
            None,
        )
        .await;
    let job_id = approved["job"]["id"].as_str().unwrap().to_owned();
    let task_id = approved["job"]["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    f.ok(
        "POST",
        &format!("/api/v1/jobs/{job_id}/cancel"),
        Role::Deployer,
        None,
    )
    .await;

    let spare = f
        .ok(
            "POST",
            "/api/v1/tokens",
            Role::Admin,
            Some(json!({"name": "spare", "role": "viewer"})),
        )
        .await;
    let spare_token = spare["id"].as_str().unwrap().to_owned();
    let (agent_id, _) = agents::register_agent(&f, "matrix-agent", &[("zone", "a")]).await;
    let spare_bootstrap = f
        .ok(
            "POST",
            "/api/v1/agents/bootstrap-tokens",
            Role::Admin,
            Some(json!({"name": "spare-bootstrap"})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut n = 0;
    let mut unique = || {
        n += 1;
        format!("m{n}")
    };
    let env = &w.env_id;
    // (method, path, body, required role, expected success status or None when the call is
    // authorized but its success depends on state; those are covered by the flow tests).
    type Case = (&'static str, String, Option<Value>, Role, Option<u16>);
    type MakeCase<'a> = Box<dyn FnMut(&mut dyn FnMut() -> String) -> Case + 'a>;
    let mut cases: Vec<MakeCase> = Vec::new();
    cases.push(Box::new(|u| {
        (
            "POST",
            "/api/v1/environments".into(),
            Some(json!({"name": u()})),
            Role::Admin,
            Some(201),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/environments/{env}"),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/environments/{env}/runtime-policy"),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    // The default policy again: an admin-only write that changes nothing else.
    cases.push(Box::new(|_| {
        (
            "PUT",
            format!("/api/v1/environments/{env}/runtime-policy"),
            Some(json!({})),
            Role::Admin,
            Some(200),
        )
    }));
    cases.push(Box::new(|u| {
        (
            "POST",
            format!("/api/v1/environments/{env}/targets"),
            Some(target_body(&u())),
            Role::Admin,
            Some(201),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/environments/{env}/targets"),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|u| {
        (
            "POST",
            "/api/v1/releases".into(),
            Some(release_body(&u())),
            Role::Deployer,
            Some(201),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/releases/{}", w.release_id),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "POST",
            "/api/v1/promotions".into(),
            Some(json!({"release_id": w.release_id, "environment_id": env})),
            Role::Deployer,
            Some(201),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/promotions/{}", w.promotion_id),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    // Approving the approved promotion again returns its job.
    cases.push(Box::new(|_| {
        (
            "POST",
            format!("/api/v1/promotions/{}/approve", w.promotion_id),
            None,
            Role::Deployer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "POST",
            format!("/api/v1/promotions/{}/reject", w.promotion_id),
            None,
            Role::Deployer,
            None,
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/jobs?environment={env}&status=failed&limit=5"),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/jobs/{job_id}"),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "POST",
            format!("/api/v1/jobs/{job_id}/cancel"),
            None,
            Role::Deployer,
            None,
        )
    }));
    cases.push(Box::new(|_| {
        (
            "POST",
            format!("/api/v1/jobs/{job_id}/rollback"),
            Some(json!({"reason": "test"})),
            Role::Deployer,
            None,
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/jobs/{job_id}/events"),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/jobs/{job_id}/artifacts"),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/jobs/{job_id}/artifacts/manifest"),
            None,
            Role::Viewer,
            None,
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/tasks/{task_id}"),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/tasks/{task_id}/logs"),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/tasks/{task_id}/logs/events"),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/jobs/{job_id}/logs/events"),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|u| {
        (
            "POST",
            "/api/v1/tokens".into(),
            Some(json!({"name": u(), "role": "viewer"})),
            Role::Admin,
            Some(201),
        )
    }));
    cases.push(Box::new(|_| {
        ("GET", "/api/v1/tokens".into(), None, Role::Admin, Some(200))
    }));
    // Application secrets: admin only; the delete finds the secret gone after the first.
    cases.push(Box::new(|_| {
        (
            "PUT",
            "/api/v1/secrets/matrix".into(),
            Some(json!({"value": "v"})),
            Role::Admin,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            "/api/v1/secrets".into(),
            None,
            Role::Admin,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "DELETE",
            "/api/v1/secrets/matrix".into(),
            None,
            Role::Admin,
            None,
        )
    }));
    // Webhook subscriptions: admin only (deployd POSTs where they point); the
    // delivery log: deployer. Unknown ids: authorized, then 404.
    const NO_SUCH_ID: &str = "019b76da-a800-7000-8000-000000000001";
    cases.push(Box::new(|_| {
        (
            "POST",
            "/api/v1/notifications".into(),
            Some(
                json!({"environment": env, "url": "https://hooks.example.com/x",
                        "events": ["job.failed"]}),
            ),
            Role::Admin,
            None,
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            "/api/v1/notifications".into(),
            None,
            Role::Admin,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "POST",
            format!("/api/v1/notifications/{NO_SUCH_ID}/rotate-key"),
            None,
            Role::Admin,
            None,
        )
    }));
    cases.push(Box::new(|_| {
        (
            "DELETE",
            format!("/api/v1/notifications/{NO_SUCH_ID}"),
            None,
            Role::Admin,
            None,
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            "/api/v1/notifications/deliveries".into(),
            None,
            Role::Deployer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/notifications/deliveries/{NO_SUCH_ID}"),
            None,
            Role::Deployer,
            None,
        )
    }));
    // Revoking a revoked token again answers it again.
    cases.push(Box::new(|_| {
        (
            "POST",
            format!("/api/v1/tokens/{spare_token}/revoke"),
            None,
            Role::Admin,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            "/api/v1/environments?limit=2".into(),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            "/api/v1/releases?limit=2".into(),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|u| {
        (
            "POST",
            "/api/v1/agents/bootstrap-tokens".into(),
            Some(json!({"name": u(), "expires_in_secs": 60})),
            Role::Admin,
            Some(201),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            "/api/v1/agents/bootstrap-tokens".into(),
            None,
            Role::Admin,
            Some(200),
        )
    }));
    // Revoking a revoked bootstrap token again answers it again.
    cases.push(Box::new(|_| {
        (
            "POST",
            format!("/api/v1/agents/bootstrap-tokens/{spare_bootstrap}/revoke"),
            None,
            Role::Admin,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            "/api/v1/agents".into(),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/agents/{agent_id}"),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    // Called once by an admin (the only role allowed), from the version just registered.
    cases.push(Box::new(|_| {
        (
            "PUT",
            format!("/api/v1/agents/{agent_id}/labels"),
            Some(json!({"labels": {"zone": "b"}, "version": 1})),
            Role::Admin,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "POST",
            format!("/api/v1/agents/{agent_id}/revoke"),
            None,
            Role::Admin,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            "/api/v1/promotions?status=requested&limit=5".into(),
            None,
            Role::Viewer,
            Some(200),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "GET",
            "/api/v1/audit?limit=5".into(),
            None,
            Role::Admin,
            Some(200),
        )
    }));
    // By name: the target of the environment (404 or 200, never 401/403 for a viewer).
    cases.push(Box::new(|_| {
        (
            "GET",
            format!("/api/v1/environments/{env}/targets/no-such-target"),
            None,
            Role::Viewer,
            Some(404),
        )
    }));
    // A stale version: 409 once the first admin call bumped it.
    cases.push(Box::new(|u| {
        (
            "PUT",
            format!("/api/v1/environments/{env}"),
            Some(json!({"name": format!("renamed-{}", u()), "version": 0})),
            Role::Admin,
            None,
        )
    }));
    // The target's SSH port is closed: the plan answers with the inspect error in its entry.
    cases.push(Box::new(|_| {
        (
            "POST",
            "/api/v1/plan".into(),
            Some(json!({"release_id": w.release_id, "environment_id": env})),
            Role::Deployer,
            Some(200),
        )
    }));

    cases.push(Box::new(|_| {
        (
            "PUT",
            format!("/api/v1/environments/{env}/targets/no-such-target"),
            Some(json!({"name": "x", "connection": {"model": "ssh", "host": "127.0.0.1", "user": "deploy", "credential_ref": "env:K", "work_dir": "/tmp"}, "version": 0})),
            Role::Admin,
            Some(404),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "DELETE",
            format!("/api/v1/environments/{env}/targets/no-such-target"),
            None,
            Role::Admin,
            Some(404),
        )
    }));
    cases.push(Box::new(|_| {
        (
            "DELETE",
            "/api/v1/environments/no-such-environment".into(),
            None,
            Role::Admin,
            Some(404),
        )
    }));
    // Last: archiving the release (again answers the same).
    cases.push(Box::new(|_| {
        (
            "POST",
            format!("/api/v1/releases/{}/archive", w.release_id),
            None,
            Role::Deployer,
            Some(200),
        )
    }));

    let mut checked = 0;
    let mut covered = std::collections::BTreeSet::new();
    for case in &mut cases {
        for caller in [None, Some("dpl_wrong-token-000000000000")]
            .into_iter()
            .map(|t| (None, t))
            .chain(Role::ALL.into_iter().map(|r| (Some(r), Some(f.token(r)))))
        {
            let (method, path, body, required, success) = case(&mut unique);
            covered.insert((method.to_lowercase(), path.clone()));
            let (role, token) = caller;
            let (status, value) = f.call(method, &path, token, body).await;
            let status = status.as_u16();
            match role {
                None => assert_eq!(
                    status, 401,
                    "{method} {path} without a valid token: {value}"
                ),
                Some(r) if !r.allows(required) => {
                    assert_eq!(status, 403, "{method} {path} as {r}: {value}");
                    assert_eq!(value["type"], "urn:deploy:problem:forbidden");
                }
                Some(r) => match success {
                    Some(s) => assert_eq!(status, s, "{method} {path} as {r}: {value}"),
                    None => assert!(
                        status != 401 && status != 403 && status < 500,
                        "{method} {path} as {r}: {status} {value}"
                    ),
                },
            }
            checked += 1;
        }
    }
    assert_eq!(checked, cases.len() * 5);
    // Every operation of the document that needs a token is in the matrix.
    let templates = openapi::operations(&crate::openapi());
    let mut matrix: std::collections::BTreeSet<(String, String)> = covered
        .iter()
        .map(|(method, path)| (method.clone(), openapi::template_of(path, &templates)))
        .collect();
    let secured: std::collections::BTreeSet<(String, String)> = templates
        .iter()
        .filter(|o| o.secured)
        .map(|o| (o.method.clone(), o.path.clone()))
        .collect();
    matrix.retain(|o| !o.1.is_empty());
    assert_eq!(
        matrix, secured,
        "the role matrix and the secured operations differ"
    );
}

/// SSE `id:` values of a stream's text.
fn sse_ids(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

/// A task's log as SSE: chunks written while it is followed arrive in order, once each,
/// `end` follows once the job settled, and `Last-Event-ID` resumes after a chunk.
#[tokio::test]
async fn task_log_streams_live_and_resumes() {
    let f = Fixture::new().await;
    let w = f.world("logs").await;
    let approved = f
        .ok(
            "POST",
            &format!("/api/v1/promotions/{}/approve", w.promotion_id),
            Role::Deployer,
            Some(json!({})),
        )
        .await;
    let job_id = approved["job"]["id"].as_str().unwrap().to_owned();
    let task_id = approved["job"]["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let task = TaskId::parse(&task_id).unwrap();
    let store = f.engine.store().clone();
    let now = deploy_engine::Clock::now(&SystemClock);
    store.append_log(task, now, "pulling web\n").await.unwrap();
    let viewer = f.token(Role::Viewer).to_owned();
    let path = format!("/api/v1/tasks/{task_id}/logs/events");
    // Nobody runs the job (no `serve`): the stream stays open until the job is cancelled.
    let stream = {
        let (app, path, viewer) = (f.app.clone(), path.clone(), viewer.clone());
        tokio::spawn(async move {
            let req = Request::builder()
                .uri(path)
                .header("authorization", format!("Bearer {viewer}"))
                .body(Body::empty())
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!stream.is_finished(), "the stream waits for more");
    store
        .append_log(task, now, "started web-next\n")
        .await
        .unwrap();
    store
        .append_log(task, now, "healthy after 1 attempt\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    f.ok(
        "POST",
        &format!("/api/v1/jobs/{job_id}/cancel"),
        Role::Deployer,
        None,
    )
    .await;
    let text = tokio::time::timeout(Duration::from_secs(20), stream)
        .await
        .expect("the stream ends once the job settled")
        .unwrap();
    assert_eq!(sse_ids(&text), [1, 2, 3], "{text}");
    assert_eq!(text.matches("event: log").count(), 3, "{text}");
    let order = ["pulling web", "started web-next", "healthy after 1 attempt"].map(|l| {
        text.find(l)
            .unwrap_or_else(|| panic!("{l} missing: {text}"))
    });
    assert!(order.windows(2).all(|p| p[0] < p[1]), "{text}");
    let end = text.rfind("event: end").expect("an end event");
    assert!(end > order[2], "{text}");

    // Resumed after chunk 1 (the header wins over `after`): chunks 2 and 3 only, then `end`.
    let (status, headers, bytes) = f
        .raw(
            "GET",
            &format!("{path}?after=0"),
            Some(&viewer),
            None,
            &[("last-event-id", "1")],
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let resumed = String::from_utf8(bytes).unwrap();
    assert_eq!(sse_ids(&resumed), [2, 3], "{resumed}");
    assert!(resumed.contains("event: end"), "{resumed}");
    // A bad Last-Event-ID and an unknown task are problems, not streams.
    let (status, _, _) = f
        .raw("GET", &path, Some(&viewer), None, &[("last-event-id", "x")])
        .await;
    assert_eq!(status, 400);
    let (status, _, _) = f
        .raw(
            "GET",
            "/api/v1/tasks/019a0000-0000-7000-8000-000000000000/logs/events",
            Some(&viewer),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 404);
}

/// A name that exists: 409 naming the field, the name and the id of the one that holds it.
#[tokio::test]
async fn duplicate_names_name_the_existing_entity() {
    let f = Fixture::new().await;
    let w = f.world("dup").await;
    let admin = Some(f.token(Role::Admin));
    let targets_path = format!("/api/v1/environments/{}/targets", w.env_id);
    let (_, _, bytes) = f.raw("GET", &targets_path, admin, None, &[]).await;
    let targets: Value = serde_json::from_slice(&bytes).unwrap();
    let target_id = targets[0]["id"].as_str().unwrap().to_owned();
    for (path, body, detail) in [
        (
            "/api/v1/environments".to_owned(),
            json!({"name": "dup"}),
            format!(
                "environment name `dup` is already taken by environment `{}`",
                w.env_id
            ),
        ),
        (
            "/api/v1/releases".to_owned(),
            release_body("dup"),
            format!(
                "release name `dup` is already taken by release `{}`",
                w.release_id
            ),
        ),
        (
            targets_path.clone(),
            target_body("host-1"),
            format!("target name `host-1` is already taken by target `{target_id}`"),
        ),
    ] {
        let (status, headers, bytes) = f
            .raw("POST", &path, admin, Some(body.to_string()), &[])
            .await;
        let problem: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status.as_u16(), 409, "{path}: {problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(problem["type"], "urn:deploy:problem:conflict");
        assert_eq!(problem["field"], "name", "{problem}");
        assert_eq!(problem["detail"], detail.as_str(), "{problem}");
    }
}

/// Each error case: status, stable type, and the field path where there is one.
#[tokio::test]
async fn error_cases() {
    let f = Fixture::with_config(ServerConfig {
        max_body_bytes: 4096,
        ..ServerConfig::default()
    })
    .await;
    let w = f.world("errors").await;
    let admin = Some(f.token(Role::Admin));
    let unknown_job = "/api/v1/jobs/019a0000-0000-7000-8000-000000000000";
    /// (method, path, body, status, problem type slug, field path)
    type ErrorCase<'a> = (
        &'a str,
        String,
        Option<String>,
        u16,
        &'a str,
        Option<&'a str>,
    );
    let cases: Vec<ErrorCase> = vec![
        ("POST", "/api/v1/environments".into(), Some("{not json".into()), 400, "bad-request", None),
        ("POST", "/api/v1/environments".into(), Some(r#"{"name":"x","nmae":"y"}"#.into()), 400, "bad-request", Some("nmae")),
        ("POST", "/api/v1/environments".into(), Some(r#"{"name":"Bad Name"}"#.into()), 400, "bad-request", Some("name")),
        ("POST", "/api/v1/releases".into(), Some(json!({"name": "r", "components": [{"name": "web", "image": "nginx:latest"}]}).to_string()), 400, "bad-request", Some("components[0].image")),
        ("GET", "/api/v1/jobs/not-a-uuid".into(), None, 400, "bad-request", Some("id")),
        ("GET", format!("/api/v1/tasks/{}/logs?limit=100000", w.env_id), None, 400, "bad-request", Some("limit")),
        ("GET", "/api/v1/jobs?status=exploded".into(), None, 400, "bad-request", Some("status")),
        ("GET", "/api/v1/jobs?limit=501".into(), None, 400, "bad-request", Some("limit")),
        ("GET", unknown_job.into(), None, 404, "not-found", None),
        ("GET", "/api/v1/nothing-here".into(), None, 404, "not-found", None),
        ("POST", "/api/v1/environments".into(), Some(r#"{"name":"errors"}"#.into()), 409, "conflict", Some("name")),
        ("POST", "/api/v1/releases".into(), Some(release_body("errors").to_string()), 409, "conflict", Some("name")),
        ("POST", format!("/api/v1/environments/{}/targets", w.env_id), Some(target_body("host-1").to_string()), 409, "conflict", Some("name")),
        ("POST", "/api/v1/environments".into(), Some(format!(r#"{{"name":"{}"}}"#, "a".repeat(5000))), 413, "payload-too-large", None),
        ("POST", "/api/v1/promotions".into(), Some(json!({"release_id": "019a0000-0000-7000-8000-000000000000", "environment_id": w.env_id}).to_string()), 422, "unprocessable", Some("release")),
        ("POST", "/api/v1/releases".into(), Some(json!({"name": "dup", "components": [
            {"name": "web", "image": format!("r/web@sha256:{}", "a".repeat(64))},
            {"name": "web", "image": format!("r/web@sha256:{}", "b".repeat(64))}]}).to_string()), 422, "unprocessable", Some("components.name")),
        ("POST", "/api/v1/releases".into(), Some(json!({"name": "none", "components": []}).to_string()), 422, "unprocessable", Some("components")),
    ];
    for (method, path, body, status, kind, field) in cases {
        let (got, headers, bytes) = f.raw(method, &path, admin, body.clone(), &[]).await;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(got.as_u16(), status, "{method} {path} {body:?}: {value}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(
            value["type"],
            format!("urn:deploy:problem:{kind}"),
            "{value}"
        );
        assert_eq!(value["status"], status);
        assert_eq!(value["field"].as_str(), field, "{value}");
    }

    // 409: a second job for a busy environment; an already decided promotion.
    f.ok(
        "POST",
        &format!("/api/v1/promotions/{}/approve", w.promotion_id),
        Role::Deployer,
        None,
    )
    .await;
    let second = f
        .ok(
            "POST",
            "/api/v1/promotions",
            Role::Deployer,
            Some(json!({"release_id": w.release_id, "environment_id": w.env_id})),
        )
        .await;
    let second = second["id"].as_str().unwrap();
    let (status, value) = f
        .call(
            "POST",
            &format!("/api/v1/promotions/{second}/approve"),
            admin,
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), value["type"].as_str()),
        (409, Some("urn:deploy:problem:environment-busy")),
        "{value}"
    );
    let (status, value) = f
        .call(
            "POST",
            &format!("/api/v1/promotions/{}/reject", w.promotion_id),
            admin,
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), value["type"].as_str()),
        (409, Some("urn:deploy:problem:conflict")),
        "{value}"
    );
    // 400: an unknown artifact kind.
    let (status, value) = f
        .call(
            "GET",
            &format!("{unknown_job}/artifacts/binary"),
            admin,
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), value["field"].as_str()),
        (400, Some("kind")),
        "{value}"
    );
}

/// Approve -> the engine's service loop runs the job -> the SSH target is unreachable -> failed;
/// the SSE stream replays the log, ends with `end`, and resumes after Last-Event-ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_over_unreachable_ssh_fails_and_streams_events() {
    let f = Fixture::new().await;
    let w = f.world("flow").await;
    let (shutdown, serve) = f.serve_engine();
    let approved = f
        .ok(
            "POST",
            &format!("/api/v1/promotions/{}/approve", w.promotion_id),
            Role::Deployer,
            Some(json!({"max_attempts": 1})),
        )
        .await;
    assert_eq!(approved["promotion"]["status"], "approved");
    let job_id = approved["job"]["id"].as_str().unwrap().to_owned();
    let viewer = Some(f.token(Role::Viewer));

    let (status, headers, bytes) = f
        .raw(
            "GET",
            &format!("/api/v1/jobs/{job_id}/events"),
            viewer,
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = String::from_utf8(bytes).unwrap();
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
        .map(|s| s.trim().parse().unwrap())
        .collect();
    assert!(ids.len() >= 3, "{text}");
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "{ids:?}");
    assert!(
        text.contains("event: end") || text.contains("event:end"),
        "{text}"
    );
    assert!(text.contains(r#""status":"failed""#), "{text}");

    let job = f
        .ok("GET", &format!("/api/v1/jobs/{job_id}"), Role::Viewer, None)
        .await;
    assert_eq!(job["status"], "failed");
    let task = &job["tasks"][0];
    assert_eq!(task["status"], "failed");
    assert!(task["error"].as_str().is_some(), "{task}");

    // Resume after the first event: the rest, nothing twice.
    let first = ids[0].to_string();
    let (_, _, bytes) = f
        .raw(
            "GET",
            &format!("/api/v1/jobs/{job_id}/events"),
            viewer,
            None,
            &[("last-event-id", &first)],
        )
        .await;
    let resumed = String::from_utf8(bytes).unwrap();
    let resumed_ids: Vec<u64> = resumed
        .lines()
        .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
        .map(|s| s.trim().parse().unwrap())
        .collect();
    // Nothing twice, nothing missed (the second stream may also carry events written after the first ended).
    assert!(
        resumed_ids.starts_with(&ids[1..]),
        "{resumed_ids:?} after {ids:?}"
    );
    assert!(
        resumed_ids.windows(2).all(|p| p[0] < p[1]),
        "{resumed_ids:?}"
    );

    // Task logs page through the store.
    let task_id = task["id"].as_str().unwrap();
    let page = f
        .ok(
            "GET",
            &format!("/api/v1/tasks/{task_id}/logs?limit=1"),
            Role::Viewer,
            None,
        )
        .await;
    assert_eq!(page["task_id"], task_id);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), serve)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn bootstrap_happens_once_and_takes_a_preset_token() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("db.sqlite")))
        .await
        .unwrap();
    let now = deploy_engine::Clock::now(&SystemClock);
    let preset = "preset-admin-token-0123456789".to_owned();
    let first = bootstrap_admin(&store, Some(preset.clone()), now)
        .await
        .unwrap()
        .unwrap();
    assert!(!first.generated);
    assert_eq!(first.token.token, preset);
    assert!(bootstrap_admin(&store, None, now).await.unwrap().is_none());
    let stored = store
        .find_api_token(&crate::hash_token(&preset))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.scopes, vec!["admin".to_owned()]);
    assert!(
        bootstrap_admin(
            &SqliteStore::open(&SqliteConfig::new(dir.path().join("other.sqlite")))
                .await
                .unwrap(),
            Some("short".into()),
            now
        )
        .await
        .is_err()
    );
}

/// Jobs list newest first, filtered by environment and status, paged by `before`.
#[tokio::test]
async fn jobs_list_filters_and_pages() {
    let f = Fixture::new().await;
    let mut jobs = Vec::new();
    let mut envs = Vec::new();
    for name in ["a", "b", "c"] {
        let w = f.world(name).await;
        let approved = f
            .ok(
                "POST",
                &format!("/api/v1/promotions/{}/approve", w.promotion_id),
                Role::Deployer,
                None,
            )
            .await;
        jobs.push(approved["job"]["id"].as_str().unwrap().to_owned());
        envs.push(w.env_id);
    }
    f.ok(
        "POST",
        &format!("/api/v1/jobs/{}/cancel", jobs[0]),
        Role::Deployer,
        None,
    )
    .await;
    let ids = |page: &Value| -> Vec<String> {
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = f
        .ok("GET", "/api/v1/jobs?limit=2", Role::Viewer, None)
        .await;
    assert_eq!(ids(&first), vec![jobs[2].clone(), jobs[1].clone()]);
    let before = first["next_before"].as_str().unwrap();
    let second = f
        .ok(
            "GET",
            &format!("/api/v1/jobs?limit=2&before={before}"),
            Role::Viewer,
            None,
        )
        .await;
    assert_eq!(ids(&second), vec![jobs[0].clone()]);
    assert!(second["next_before"].is_null());
    let by_env = f
        .ok(
            "GET",
            &format!("/api/v1/jobs?environment={}", envs[1]),
            Role::Viewer,
            None,
        )
        .await;
    assert_eq!(ids(&by_env), vec![jobs[1].clone()]);
    let failed = f
        .ok("GET", "/api/v1/jobs?status=failed", Role::Viewer, None)
        .await;
    assert_eq!(ids(&failed), vec![jobs[0].clone()]);
    let (_, _, metrics) = f.raw("GET", "/metrics", None, None, &[]).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("deployd_active_jobs{status=\"pending\"} 2"),
        "{metrics}"
    );
}

mod admin;
mod agent_identity;
mod agent_retries;
mod agents;
mod console;
mod console_audit;
mod console_budget;
mod console_catalog;
mod console_jobs;
mod console_overview;
mod job_logs;
mod metrics;
mod notifications;
mod observe;
mod openapi;
mod operator;
mod plan;
mod replicas;
mod runtime_policy;
mod secrets;
mod version;

/// The body `deployctl deploy --strategy canary:1:50% --parallelism 4 --max-attempts 5
/// --max-failures 2 --max-failure-ratio 0.25 --auto-rollback` sends lands in the job.
#[tokio::test]
async fn approve_takes_deployctls_job_settings() {
    let f = Fixture::new().await;
    let w = f.world("settings").await;
    let (status, bad) = f
        .call(
            "POST",
            &format!("/api/v1/promotions/{}/approve", w.promotion_id),
            Some(f.token(Role::Deployer)),
            Some(json!({"parallelism": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(bad["field"], "parallelism", "{bad}");
    let approved = f
        .ok(
            "POST",
            &format!("/api/v1/promotions/{}/approve", w.promotion_id),
            Role::Deployer,
            Some(json!({
                "strategy": {"type": "canary", "canary": {"count": 1}, "batch": {"percent": 50}},
                "parallelism": 4,
                "max_attempts": 5,
                "failure_policy": {"auto_rollback": true, "max_failures": 2, "max_failure_ratio": 0.25},
            })),
        )
        .await;
    let job_id = approved["job"]["id"].as_str().unwrap();
    let job = f
        .ok("GET", &format!("/api/v1/jobs/{job_id}"), Role::Viewer, None)
        .await;
    assert_eq!(
        job["strategy"],
        json!({"type": "canary", "canary": {"count": 1}, "batch": {"percent": 50}, "min_healthy_time_ms": 0})
    );
    assert_eq!(job["parallelism"], 4);
    assert_eq!(
        job["failure_policy"],
        json!({"auto_rollback": true, "max_failures": 2, "max_failure_ratio": 0.25})
    );
    assert_eq!(job["tasks"][0]["max_attempts"], 5, "{job}");
}

/// Server shutdown ends open SSE streams (job events and task logs) of a job that
/// is still active, without an `end` event, so a follower reconnects elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_without_end() {
    let f = Fixture::new().await;
    let w = f.world("shutdown").await;
    // Nothing serves the engine here: the job stays pending, its streams stay open.
    let approved = f
        .ok(
            "POST",
            &format!("/api/v1/promotions/{}/approve", w.promotion_id),
            Role::Deployer,
            None,
        )
        .await;
    let job_id = approved["job"]["id"].as_str().unwrap().to_owned();
    let task_id = approved["job"]["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shutdown = f.shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        shutdown.cancel();
    });
    let token = f.token(Role::Viewer).to_owned();
    let events_path = format!("/api/v1/jobs/{job_id}/events");
    let logs_path = format!("/api/v1/tasks/{task_id}/logs/events");
    let started = std::time::Instant::now();
    let (events, logs) = tokio::join!(
        f.raw("GET", &events_path, Some(&token), None, &[]),
        f.raw("GET", &logs_path, Some(&token), None, &[]),
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(10),
        "the streams ended after {took:?}, expected soon after the shutdown at 1.5 s"
    );
    let events = String::from_utf8(events.2).unwrap();
    assert!(events.contains("event: transition"), "{events}");
    assert!(!events.contains("event: end"), "{events}");
    assert_eq!(logs.0, StatusCode::OK);
    let logs = String::from_utf8(logs.2).unwrap();
    assert!(!logs.contains("event: end"), "{logs}");
    // A stream opened after the shutdown ends at once.
    let (status, _, late) = f
        .raw(
            "GET",
            &format!("/api/v1/jobs/{job_id}/events"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8(late).unwrap().is_empty());
}
mod unavailable;
