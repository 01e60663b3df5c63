//! A hand-rolled HTTP/1.1 fake server on loopback (one request per connection) and shared fixtures.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy_core::testing::{digest, name, task};
use deploy_core::{ApiConnection, Connection, ImageRef, Labels, Target, TargetType};
use deploy_testkit::{http_response, read_request};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::api::{ApiExecutor, ApiExecutorConfig};
use crate::errors::ExecError;
use crate::executor::{ComponentSpec, DeployRequest, ExecContext, Executor};
use crate::logs::MemorySink;
use crate::testing::FakeSecrets;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// What the fake answers.
pub enum Reply {
    Json(u16, Value),
    Text(u16, String),
    /// Close the connection without answering.
    Reset,
}

pub type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A running fake; stops when dropped.
pub struct Fake {
    pub base: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    pub async fn start(handler: Handler) -> Self {
        Self::start_with(handler, None).await
    }

    /// The fake behind TLS (`https://` base): `config` says its certificate and
    /// whether it demands a client certificate; a failed handshake records no request.
    pub async fn start_tls(
        handler: Handler,
        config: Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> Self {
        Self::start_with(handler, Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn start_with(handler: Handler, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let seen = seen.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => {
                            let _ = serve(stream, handler, seen).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = serve(stream, handler, seen).await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            base,
            requests,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// `METHOD path` of every request, in order.
    pub fn calls(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

async fn serve(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    handler: Handler,
    seen: Arc<Mutex<Vec<Recorded>>>,
) -> std::io::Result<()> {
    let Some(request) = read_request(&mut stream, &mut Vec::new()).await? else {
        return Ok(());
    };
    let recorded = Recorded {
        body: request.text(),
        method: request.method,
        path: request.path,
        headers: request.headers,
    };
    seen.lock().unwrap().push(recorded.clone());
    let (status, body) = match handler(&recorded) {
        Reply::Json(s, v) => (s, v.to_string()),
        Reply::Text(s, t) => (s, t),
        Reply::Reset => return Ok(()),
    };
    let response = http_response(status, "application/json", &body);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// An executor polling every 10 ms, with `secrets`.
pub fn executor(secrets: &[(&str, &str)]) -> ApiExecutor {
    ApiExecutor::new(
        Arc::new(FakeSecrets::new(secrets.iter().copied())),
        ApiExecutorConfig {
            poll_interval: Duration::from_millis(10),
            request_timeout: Duration::from_secs(5),
        },
    )
}

pub fn target(target_type: TargetType, api: ApiConnection) -> Target {
    let mut t = deploy_core::testing::ssh_target(1);
    t.name = name("api-1");
    t.target_type = target_type;
    t.connection = Connection::Api(api);
    t.labels = Labels::default();
    t
}

pub const REPO: &str = "registry.local/team/web";

/// `registry.local/team/web@<digest n>`.
pub fn image(n: u64) -> String {
    format!("{REPO}@{}", digest(n))
}

/// A deploy of digest `n` of component `web` to `target`.
pub fn request(target: &Target, n: u64) -> DeployRequest {
    let mut t = task(1, 3);
    t.digest = digest(n);
    DeployRequest {
        target: target.clone(),
        task: t,
        component: Some(ComponentSpec {
            name: name("web"),
            container: deploy_core::ContainerSpec::from_image(ImageRef::parse(&image(n)).unwrap()),
            keep_previous_running: false,
        }),
        project: name("web"),
        artifacts: Vec::new(),
        stored_lock: None,
        rollback: false,
    }
}

/// A context logging into a fresh memory sink.
pub fn ctx(timeout_ms: u64) -> (ExecContext, MemorySink) {
    let sink = MemorySink::new();
    (
        ExecContext::new(Arc::new(sink.clone()), Duration::from_millis(timeout_ms)),
        sink,
    )
}

/// Asserts that no log line contains `secret`.
pub fn assert_no_secret(sink: &MemorySink, secret: &str) {
    for line in sink.lines() {
        assert!(!line.contains(secret), "secret leaked into the log: {line}");
    }
}

/// Every request answered with `status` (or reset, for `None`): deploy fails with the expected class,
/// and a closed port is a retryable connect error.
pub async fn check_error_classes(make_target: impl Fn(&str) -> Target, secrets: &[(&str, &str)]) {
    let exec = executor(secrets);
    for (reply, retryable) in [
        (Some(401), false),
        (Some(403), false),
        (Some(503), true),
        (Some(500), true),
        (None, true),
    ] {
        // The error body echoes the request headers (as some proxies do): the
        // credential in them must not reach the error or the log.
        let fake = Fake::start(Arc::new(move |r: &Recorded| match reply {
            Some(status) => Reply::Text(
                status,
                format!("status {status} from the fake; headers {:?}", r.headers),
            ),
            None => Reply::Reset,
        }))
        .await;
        let (c, sink) = ctx(5_000);
        let result = exec.deploy(&request(&make_target(&fake.base), 2), &c).await;
        assert!(result.is_err(), "{reply:?}: {result:?}");
        let err = result.clone().unwrap_err().error;
        assert_eq!(err.is_retryable(), retryable, "{reply:?}: {err:?}");
        match reply {
            Some(status) => {
                assert!(
                    matches!(err, ExecError::ApiStatus { status: s, .. } if s == status),
                    "{err:?}"
                );
                // The echoed credential header was replaced, not dropped.
                assert!(err.to_string().contains(crate::REDACTED), "{err}");
                assert!(
                    err.to_string().contains(&format!("status {status}")),
                    "{err}"
                );
            }
            None => assert!(matches!(err, ExecError::Connect { .. }), "{err:?}"),
        }
        // One request: errors are classified, not retried inside the executor.
        assert_eq!(fake.requests().len(), 1, "{:?}", fake.calls());
        for (_, secret) in secrets {
            assert_no_secret(&sink, secret);
            assert!(!err.to_string().contains(secret), "{err}");
        }
    }
    let port = deploy_testkit::free_port().unwrap();
    let (c, _) = ctx(5_000);
    let result = exec
        .deploy(
            &request(&make_target(&format!("http://127.0.0.1:{port}")), 2),
            &c,
        )
        .await;
    let err = result.unwrap_err().error;
    assert!(
        matches!(err, ExecError::Connect { .. }) && err.is_retryable(),
        "{err:?}"
    );
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

/// Deploys digest 2 to `target` and returns the error it must fail with.
pub async fn deploy_failure(
    target: &Target,
    secrets: &[(&str, &str)],
    timeout_ms: u64,
) -> ExecError {
    let (c, _) = ctx(timeout_ms);
    let result = executor(secrets).deploy(&request(target, 2), &c).await;
    assert!(result.is_err(), "{result:?}");
    // Known once the platform was read: every failure after that names what ran before.
    let read = !matches!(
        result.as_ref().err().map(|f| &f.error),
        Some(ExecError::Secret { .. } | ExecError::InvalidInput { .. })
    );
    let failure = result.unwrap_err();
    assert_eq!(failure.previous_digest.is_some(), read, "{failure:?}");
    failure.error
}

/// After a deploy of digest 2: inspect reads it back, and deploying it again changes nothing.
pub async fn assert_redeploy_is_a_no_op(exec: &ApiExecutor, target: &Target) {
    let (c, _) = ctx(5_000);
    assert_eq!(
        exec.inspect(target, &name("web"), &c).await.unwrap(),
        Some(digest(2))
    );
    let again = exec.deploy(&request(target, 2), &c).await;
    assert!(again.as_ref().is_ok_and(|d| !d.changed), "{again:?}");
}
