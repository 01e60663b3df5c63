//! `Client`: the agent's side of the agent protocol over HTTP(S) (reqwest + rustls), with problem+json errors read into typed `ClientError`s, failing over between the servers it knows.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deploy_api::agent::{
    AgentCredentials, LogAck, LogChunkRequest, PollRequest, PollResponse, RegisterAgentRequest,
    ResultAck, RotateCredentialRequest, TaskKey, TaskResultRequest,
};
pub use deploy_core::Secret;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::errors::AgentRunError;

/// Time allowed for a request other than a poll.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Slack over a poll's `wait_ms` before the request counts as lost.
pub const POLL_SLACK: Duration = Duration::from_secs(15);

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// 401: the bearer was refused (credential revoked, token spent or wrong).
    #[error("{what}: unauthorized (HTTP 401): {detail}")]
    Unauthorized { what: String, detail: String },
    /// 404: the server does not know this key (it restarted, or it is not this agent's).
    #[error("{what}: not found (HTTP 404): {detail}")]
    NotFound { what: String, detail: String },
    /// Any other error status.
    #[error("{what}: HTTP {status}: {detail}")]
    Status {
        what: String,
        status: u16,
        detail: String,
    },
    /// No answer: connection refused, reset, timeout, TLS failure.
    #[error("{what}: {detail}")]
    Transport { what: String, detail: String },
    /// An answer that is not the expected JSON.
    #[error("{what}: unreadable answer: {detail}")]
    Decode { what: String, detail: String },
}

impl ClientError {
    /// Whether the server that gave this answer may be down or sick (no answer, a timeout,
    /// a 5xx such as a 503 while it starts or drains): the next request goes to the next
    /// server. A 4xx is an answer about the request, the same from every server.
    pub fn server_unusable(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// The agent's HTTP client for the servers it knows (deployd replicas sharing one
/// database). Requests go to the current server; one that fails as
/// [`ClientError::server_unusable`] makes the next server current, so the caller's
/// retry (after its backoff) goes there; a server that answers stays current. Clones
/// share the current server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    bases: Arc<[String]>,
    current: Arc<AtomicUsize>,
}

/// The `detail` of a problem+json body (else its `title`, else the start of the body).
pub fn problem_detail(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Problem {
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        detail: Option<String>,
    }
    match serde_json::from_str::<Problem>(body) {
        Ok(Problem {
            detail: Some(d), ..
        }) => d,
        Ok(Problem { title: Some(t), .. }) => t,
        _ => body.chars().take(200).collect(),
    }
}

/// Flattens a reqwest error with its causes ("connection refused" sits in a source).
fn transport_detail(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl Client {
    /// A client for `server` (`http://` or `https://`), trusting also the PEM roots in `ca_file`.
    pub fn new(server: &str, ca_file: Option<&Path>) -> Result<Self, AgentRunError> {
        Self::with_servers(&[server.to_owned()], ca_file)
    }

    /// A client for `servers` (the first one current at first; at least one), trusting
    /// also the PEM roots in `ca_file`.
    pub fn with_servers(servers: &[String], ca_file: Option<&Path>) -> Result<Self, AgentRunError> {
        if servers.is_empty() {
            return Err(AgentRunError::Client("no server URL".to_owned()));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("deploy-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(AgentRunError::io("read the CA file", path))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                AgentRunError::Client(format!("read the CA file `{}`: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(AgentRunError::Client(format!(
                    "read the CA file `{}`: no PEM certificate in it",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| AgentRunError::Client(e.to_string()))?;
        Ok(Self {
            http,
            bases: servers
                .iter()
                .map(|s| s.trim_end_matches('/').to_owned())
                .collect(),
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The base URL requests go to now.
    pub fn server(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Every server, in the configured order.
    pub fn servers(&self) -> &[String] {
        &self.bases
    }

    /// After a failure on server `failed` (an index): the next one becomes current, unless
    /// a concurrent request already moved on (then that choice stands).
    fn fail_over(&self, failed: usize) {
        if self.bases.len() < 2 {
            return;
        }
        let next = (failed + 1) % self.bases.len();
        if self
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                from = %self.bases[failed], to = %self.bases[next],
                "server unusable: switching to the next one"
            );
        }
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        bearer: &Secret,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let index = self.current.load(Ordering::Relaxed) % self.bases.len();
        let answer = self
            .post_to(&self.bases[index], what, path, bearer, body, timeout)
            .await;
        if let Err(e) = &answer
            && e.server_unusable()
        {
            self.fail_over(index);
        }
        answer
    }

    async fn post_to<B: Serialize, T: DeserializeOwned>(
        &self,
        base: &str,
        what: &str,
        path: &str,
        bearer: &Secret,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let mut req = self
            .http
            .post(format!("{base}{path}"))
            .bearer_auth(bearer.expose())
            .timeout(timeout);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| ClientError::Transport {
            what: what.to_owned(),
            detail: transport_detail(&e),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| ClientError::Transport {
            what: what.to_owned(),
            detail: transport_detail(&e),
        })?;
        let what = what.to_owned();
        match status {
            200..=299 => serde_json::from_str(&text).map_err(|e| ClientError::Decode {
                what,
                detail: e.to_string(),
            }),
            401 => Err(ClientError::Unauthorized {
                what,
                detail: problem_detail(&text),
            }),
            404 => Err(ClientError::NotFound {
                what,
                detail: problem_detail(&text),
            }),
            status => Err(ClientError::Status {
                what,
                status,
                detail: problem_detail(&text),
            }),
        }
    }

    /// `POST /api/v1/agent/register` with the bootstrap token.
    pub async fn register(
        &self,
        bootstrap: &Secret,
        req: &RegisterAgentRequest,
    ) -> Result<AgentCredentials, ClientError> {
        self.post(
            "register",
            "/api/v1/agent/register",
            bootstrap,
            Some(req),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST /api/v1/agent/credential/rotate`: a new credential replaces `credential`, the
    /// one `req` proposes, else one the server generates.
    pub async fn rotate(
        &self,
        credential: &Secret,
        req: Option<&RotateCredentialRequest>,
    ) -> Result<AgentCredentials, ClientError> {
        self.post(
            "rotate the credential",
            "/api/v1/agent/credential/rotate",
            credential,
            req,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST /api/v1/agent/poll`, held open up to `req.wait_ms`.
    pub async fn poll(
        &self,
        credential: &Secret,
        req: &PollRequest,
    ) -> Result<PollResponse, ClientError> {
        let timeout = Duration::from_millis(req.wait_ms) + POLL_SLACK;
        self.post("poll", "/api/v1/agent/poll", credential, Some(req), timeout)
            .await
    }

    fn key_path(key: &TaskKey, tail: &str) -> String {
        format!(
            "/api/v1/agent/tasks/{}/attempts/{}/{tail}",
            key.task_id, key.attempt
        )
    }

    /// `POST …/logs`.
    pub async fn logs(
        &self,
        credential: &Secret,
        key: &TaskKey,
        req: &LogChunkRequest,
    ) -> Result<LogAck, ClientError> {
        self.post(
            "send log lines",
            &Self::key_path(key, "logs"),
            credential,
            Some(req),
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST …/result`.
    pub async fn result(
        &self,
        credential: &Secret,
        key: &TaskKey,
        req: &TaskResultRequest,
    ) -> Result<ResultAck, ClientError> {
        self.post(
            "send the result",
            &Self::key_path(key, "result"),
            credential,
            Some(req),
            REQUEST_TIMEOUT,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_details_are_read() {
        assert_eq!(
            problem_detail(
                r#"{"type":"about:blank","title":"Unauthorized","status":401,"detail":"credential revoked"}"#
            ),
            "credential revoked"
        );
        assert_eq!(problem_detail(r#"{"title":"Not Found"}"#), "Not Found");
        assert_eq!(problem_detail("plain"), "plain");
        assert_eq!(format!("{:?}", Secret::new("dpa_x")), "Secret([REDACTED])");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_transport_error_and_a_bad_ca_file_is_named() {
        let port = deploy_testkit::free_port().unwrap();
        let c = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let err = c
            .rotate(&Secret::new("dpa_secret"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
        assert!(!err.to_string().contains("dpa_secret"));
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a pem").unwrap();
        let err = Client::new("https://x", Some(&ca)).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }

    #[tokio::test]
    async fn unusable_servers_are_failed_over_and_one_that_answers_is_kept() {
        use crate::testing::fake_server;
        let dead = format!("http://127.0.0.1:{}", deploy_testkit::free_port().unwrap());
        let (sick, _) = fake_server(|_, _| (503, r#"{"detail":"draining"}"#.to_owned())).await;
        let (good, seen) = fake_server(|_, _| (401, r#"{"detail":"refused"}"#.to_owned())).await;
        let c =
            Client::with_servers(&[dead.clone(), format!("{sick}/"), good.clone()], None).unwrap();
        assert_eq!(c.server(), dead);
        let bearer = Secret::new("dpa_x");
        let err = c.rotate(&bearer, None).await.unwrap_err();
        assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
        assert_eq!(c.server(), sick, "connection refused: the next server");
        let err = c.rotate(&bearer, None).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Status { status: 503, .. }),
            "{err:?}"
        );
        assert_eq!(c.server(), good, "a 503: the next server");
        // A 4xx is an answer about the request: the server stays, for every clone.
        let clone = c.clone();
        for _ in 0..3 {
            let err = clone.rotate(&bearer, None).await.unwrap_err();
            assert!(matches!(err, ClientError::Unauthorized { .. }), "{err:?}");
        }
        assert_eq!(c.server(), good);
        assert_eq!(seen.lock().unwrap().len(), 3);
        assert!(
            !ClientError::Decode {
                what: String::new(),
                detail: String::new()
            }
            .server_unusable()
        );
        assert!(Client::with_servers(&[], None).is_err());
    }
}
