//! `WinrmClient`: WS-Management over reqwest (Create shell, Command, Receive, Signal, Delete) with size, time and cancel bounds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use deploy_core::{WinrmAuth, WinrmConnection};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::errors::ExecError;
use crate::logs::{Stream, TaskLog};
use crate::secrets::Secret;
use crate::winrm::envelope::{self, Header, Request, Response};
use crate::winrm::ntlm;

/// Largest stdout kept in [`RunOutput::stdout`] (the log gets everything up to its own cap).
pub const STDOUT_KEEP: usize = 64 * 1024;
/// Bytes of stderr kept for error messages.
pub const STDERR_TAIL: usize = 2048;
/// Longest command line cmd.exe accepts (the shell runs commands through it).
pub const COMMAND_LINE_MAX: usize = 8191;
/// How long cleanup (Signal, Delete) may take after a cancel or a timeout.
const CLEANUP_BOUND: Duration = Duration::from_secs(5);

/// Protocol limits of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinrmClientConfig {
    /// How long the server may hold a Receive open before answering "no output yet".
    pub operation_timeout: Duration,
    /// The MaxEnvelopeSize asked of the server; a larger response is refused.
    pub max_envelope_size: usize,
    pub connect_timeout: Duration,
}

impl Default for WinrmClientConfig {
    fn default() -> Self {
        Self {
            operation_timeout: Duration::from_secs(20),
            max_envelope_size: 153_600,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A finished command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    pub exit_code: i64,
    /// The head of stdout, at most [`STDOUT_KEEP`] bytes.
    pub stdout: Vec<u8>,
    /// The tail of stderr, at most [`STDERR_TAIL`] bytes.
    pub stderr_tail: Vec<u8>,
}

/// A WS-Management client for one endpoint.
pub struct WinrmClient {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    port: u16,
    user: String,
    password: Secret,
    auth: WinrmAuth,
    /// NTLM: the pooled connection has completed the handshake.
    ntlm_ready: AtomicBool,
    config: WinrmClientConfig,
}

impl std::fmt::Debug for WinrmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WinrmClient")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A timeout error naming the whole budget of the call rather than what was left.
fn with_seconds(e: ExecError, seconds: u64) -> ExecError {
    match e {
        ExecError::Timeout { host, what, .. } if seconds > 0 => ExecError::Timeout {
            host,
            what,
            seconds,
        },
        other => other,
    }
}

/// Splits a Basic credential `user:password` (the secret's first line ending trimmed).
pub fn split_credential(secret: &Secret) -> Option<(String, Secret)> {
    let text = secret.expose().trim_end_matches(['\r', '\n']);
    let (user, password) = text.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some((user.to_owned(), Secret::new(password)))
}

impl WinrmClient {
    /// A client for `conn`, authenticating as `user`; `ca_pem` adds a trusted CA.
    pub fn new(
        conn: &WinrmConnection,
        user: &str,
        password: Secret,
        ca_pem: Option<&str>,
        config: WinrmClientConfig,
    ) -> Result<Self, ExecError> {
        let endpoint = conn.endpoint.as_str().to_owned();
        if !conn.endpoint.is_https() && !conn.allow_insecure_http {
            return Err(ExecError::invalid(
                "connection.endpoint",
                endpoint,
                "an https:// endpoint, or allow_insecure_http = true",
            ));
        }
        let url = reqwest::Url::parse(&endpoint).map_err(|e| {
            ExecError::invalid("connection.endpoint", &endpoint, format!("a url ({e})"))
        })?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(0);
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.operation_timeout + Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            // One idle connection: NTLM authenticates a connection, and calls are sequential.
            .pool_max_idle_per_host(1);
        if let Some(pem) = ca_pem {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(ExecError::invalid(
                    "connection.ca_ref",
                    "(ca bundle)",
                    "a PEM certificate (no BEGIN CERTIFICATE block found)",
                ));
            }
            let cert = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| {
                ExecError::invalid(
                    "connection.ca_ref",
                    "(ca bundle)",
                    format!("a PEM certificate ({e})"),
                )
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| ExecError::Protocol {
            endpoint: endpoint.clone(),
            operation: "set up the http client".to_owned(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            http,
            endpoint,
            host,
            port,
            user: user.to_owned(),
            password,
            auth: conn.auth,
            ntlm_ready: AtomicBool::new(false),
            config,
        })
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn protocol(&self, req: &Request<'_>, detail: impl Into<String>) -> ExecError {
        ExecError::Protocol {
            endpoint: self.endpoint.clone(),
            operation: req.action().name().to_owned(),
            detail: detail.into(),
        }
    }

    fn transport(&self, req: &Request<'_>, e: &reqwest::Error) -> ExecError {
        if e.is_timeout() {
            return ExecError::Timeout {
                host: self.endpoint.clone(),
                what: req.action().name().to_owned(),
                seconds: (self.config.operation_timeout + Duration::from_secs(10)).as_secs(),
            };
        }
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        if detail.to_ascii_lowercase().contains("certificate") {
            // A certificate the configured roots do not trust: retrying cannot help.
            return ExecError::Protocol {
                endpoint: self.endpoint.clone(),
                operation: format!("{} (verify the tls certificate)", req.action().name()),
                detail,
            };
        }
        ExecError::Connect {
            host: self.host.clone(),
            port: self.port,
            detail,
        }
    }

    fn unauthorized(&self) -> ExecError {
        ExecError::Authentication {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            method: match self.auth {
                WinrmAuth::Basic => "basic",
                WinrmAuth::Ntlm => "ntlm",
            },
        }
    }

    /// One HTTP POST: status, WWW-Authenticate and the body, read up to MaxEnvelopeSize.
    async fn post(
        &self,
        req: &Request<'_>,
        body: Vec<u8>,
        authorization: Option<&str>,
    ) -> Result<(reqwest::StatusCode, Option<String>, Vec<u8>), ExecError> {
        let mut builder = self
            .http
            .post(&self.endpoint)
            .header("Content-Type", "application/soap+xml;charset=UTF-8")
            .body(body);
        if let Some(a) = authorization {
            builder = builder.header("Authorization", a);
        }
        let mut resp = builder.send().await.map_err(|e| self.transport(req, &e))?;
        let status = resp.status();
        let challenge = resp
            .headers()
            .get("WWW-Authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let limit = self.config.max_envelope_size;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(self.protocol(
                req,
                format!("expected a response of at most {limit} bytes (MaxEnvelopeSize), the server announced more"),
            ));
        }
        let mut data = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(req, &e))? {
            if data.len() + chunk.len() > limit {
                return Err(self.protocol(
                    req,
                    format!("expected a response of at most {limit} bytes (MaxEnvelopeSize), received more"),
                ));
            }
            data.extend_from_slice(&chunk);
        }
        Ok((status, challenge, data))
    }

    /// NTLM is connection-bound: the handshake (Negotiate, Challenge, Authenticate carrying
    /// the first real request) runs once per connection; a later 401 means the connection
    /// was replaced, and the handshake runs once more.
    async fn post_ntlm(
        &self,
        req: &Request<'_>,
        body: Vec<u8>,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), ExecError> {
        if self.ntlm_ready.load(Ordering::Acquire) {
            let (status, _, data) = self.post(req, body.clone(), None).await?;
            if status != reqwest::StatusCode::UNAUTHORIZED {
                return Ok((status, data));
            }
            self.ntlm_ready.store(false, Ordering::Release);
        }
        let negotiate = format!("Negotiate {}", BASE64.encode(ntlm::negotiate()));
        let (status, challenge, _) = self.post(req, Vec::new(), Some(&negotiate)).await?;
        let token = challenge
            .as_deref()
            .filter(|_| status == reqwest::StatusCode::UNAUTHORIZED)
            .and_then(|h| h.strip_prefix("Negotiate "))
            .ok_or_else(|| self.unauthorized())?;
        let challenge = BASE64
            .decode(token.trim())
            .map_err(|e| e.to_string())
            .and_then(|b| ntlm::parse_challenge(&b))
            .map_err(|d| self.protocol(req, format!("expected an ntlm challenge: {d}")))?;
        let mut client_challenge = [0u8; 8];
        client_challenge.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
        let authenticate = ntlm::authenticate(
            &challenge,
            &self.user,
            self.password.expose(),
            client_challenge,
            ntlm::filetime_now(),
        );
        let authorization = format!("Negotiate {}", BASE64.encode(authenticate));
        let (status, _, data) = self.post(req, body, Some(&authorization)).await?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized());
        }
        self.ntlm_ready.store(true, Ordering::Release);
        Ok((status, data))
    }

    /// Sends one request and parses the answer; a SOAP fault comes back as `Ok` with `fault` set.
    async fn exchange(
        &self,
        req: &Request<'_>,
        shell_id: Option<&str>,
    ) -> Result<Response, ExecError> {
        let message_id = format!("uuid:{}", uuid::Uuid::new_v4());
        let body = envelope::build(
            &Header {
                to: &self.endpoint,
                message_id: &message_id,
                max_envelope_size: self.config.max_envelope_size,
                operation_timeout: self.config.operation_timeout,
                shell_id,
            },
            req,
        );
        let (status, data) = match self.auth {
            WinrmAuth::Basic => {
                let basic = format!(
                    "Basic {}",
                    BASE64.encode(format!("{}:{}", self.user, self.password.expose()))
                );
                let (status, _, data) = self.post(req, body, Some(&basic)).await?;
                (status, data)
            }
            WinrmAuth::Ntlm => self.post_ntlm(req, body).await?,
        };
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized());
        }
        if matches!(status.as_u16(), 502..=504) {
            return Err(ExecError::Connect {
                host: self.host.clone(),
                port: self.port,
                detail: format!(
                    "{}: http {status} (the endpoint or a proxy is unavailable)",
                    req.action().name()
                ),
            });
        }
        if !(status.is_success() || status == reqwest::StatusCode::INTERNAL_SERVER_ERROR) {
            return Err(self.protocol(req, format!("expected http 200, got {status}")));
        }
        let parsed = envelope::parse(&data).map_err(|detail| {
            self.protocol(
                req,
                format!("expected a soap envelope (http {status}): {detail}"),
            )
        })?;
        if let Some(r) = &parsed.relates_to
            && r != &message_id
        {
            return Err(self.protocol(
                req,
                format!("expected a response relating to {message_id}, got one relating to {r}"),
            ));
        }
        if parsed.fault.is_none() && !status.is_success() {
            return Err(self.protocol(
                req,
                format!("expected http 200 or a soap fault, got {status} without a fault"),
            ));
        }
        Ok(parsed)
    }

    /// Like `exchange`, a fault turned into an error.
    async fn call(&self, req: &Request<'_>, shell_id: Option<&str>) -> Result<Response, ExecError> {
        let resp = self.exchange(req, shell_id).await?;
        match &resp.fault {
            Some(f) => Err(self.fault(req, f)),
            None => Ok(resp),
        }
    }

    fn fault(&self, req: &Request<'_>, f: &envelope::Fault) -> ExecError {
        ExecError::SoapFault {
            endpoint: self.endpoint.clone(),
            operation: req.action().name().to_owned(),
            fault: f.summary(),
        }
    }

    /// Creates a cmd shell; returns its ShellId.
    pub async fn create_shell(&self) -> Result<String, ExecError> {
        let req = Request::Create;
        let resp = self.call(&req, None).await?;
        resp.shell_id
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.protocol(&req, "expected a ShellId selector in the response"))
    }

    /// Starts `command` with `arguments` in `shell`; returns the CommandId.
    pub async fn command(
        &self,
        shell: &str,
        command: &str,
        arguments: &[String],
    ) -> Result<String, ExecError> {
        let length = command.len() + arguments.iter().map(|a| a.len() + 1).sum::<usize>();
        if length > COMMAND_LINE_MAX {
            return Err(ExecError::invalid(
                "winrm command line",
                format!("{command} ... ({length} characters)"),
                format!("at most {COMMAND_LINE_MAX} characters (the cmd.exe limit)"),
            ));
        }
        let req = Request::Command { command, arguments };
        let resp = self.call(&req, Some(shell)).await?;
        resp.command_id
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.protocol(&req, "expected a CommandId in the response"))
    }

    /// One Receive; `None` when the server had no output within OperationTimeout.
    pub async fn receive(
        &self,
        shell: &str,
        command_id: &str,
    ) -> Result<Option<Response>, ExecError> {
        let req = Request::Receive { command_id };
        let resp = self.exchange(&req, Some(shell)).await?;
        match &resp.fault {
            Some(f) if f.is_operation_timeout() => Ok(None),
            Some(f) => Err(self.fault(&req, f)),
            None => Ok(Some(resp)),
        }
    }

    /// Sends the terminate signal to `command_id`.
    pub async fn signal_terminate(&self, shell: &str, command_id: &str) -> Result<(), ExecError> {
        self.call(&Request::Signal { command_id }, Some(shell))
            .await
            .map(|_| ())
    }

    /// Deletes `shell`.
    pub async fn delete_shell(&self, shell: &str) -> Result<(), ExecError> {
        self.call(&Request::Delete, Some(shell)).await.map(|_| ())
    }

    /// Runs `command` in a fresh shell that is deleted afterwards (see [`Self::run_in`]).
    pub async fn run(
        &self,
        command: &str,
        arguments: &[String],
        what: &str,
        log: &TaskLog,
        cancel: &CancellationToken,
        deadline: Instant,
    ) -> Result<RunOutput, ExecError> {
        let shell = self.open_shell(what, cancel, deadline).await?;
        let result = self
            .run_in(&shell, command, arguments, what, log, cancel, deadline)
            .await;
        self.close_shell(&shell).await;
        result
    }

    /// Creates a shell unless `cancel` fires or `deadline` passes first.
    pub async fn open_shell(
        &self,
        what: &str,
        cancel: &CancellationToken,
        deadline: Instant,
    ) -> Result<String, ExecError> {
        let seconds = deadline.saturating_duration_since(Instant::now()).as_secs();
        self.bounded(self.create_shell(), what, cancel, deadline)
            .await
            .map_err(|e| with_seconds(e, seconds))
    }

    /// Deletes `shell`, waiting at most 5 s; a failure is only logged (the server reaps idle shells).
    pub async fn close_shell(&self, shell: &str) {
        if let Err(e) = tokio::time::timeout(CLEANUP_BOUND, self.delete_shell(shell))
            .await
            .unwrap_or_else(|_| Err(self.protocol(&Request::Delete, "no answer within 5 s")))
        {
            tracing::warn!(endpoint = %self.endpoint, error = %e, "winrm shell not deleted");
        }
    }

    /// Runs `command` in `shell`, streaming output to `log`, until it is done, `cancel`
    /// fires or `deadline` passes (then the command is terminated with Signal).
    #[expect(
        clippy::too_many_arguments,
        reason = "one call's whole context, passed once"
    )]
    pub async fn run_in(
        &self,
        shell: &str,
        command: &str,
        arguments: &[String],
        what: &str,
        log: &TaskLog,
        cancel: &CancellationToken,
        deadline: Instant,
    ) -> Result<RunOutput, ExecError> {
        let seconds = deadline.saturating_duration_since(Instant::now()).as_secs();
        let result = self
            .run_in_shell(shell, command, arguments, what, log, cancel, deadline)
            .await;
        log.flush();
        result.map_err(|e| with_seconds(e, seconds))
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call's whole context, passed once"
    )]
    async fn run_in_shell(
        &self,
        shell: &str,
        command: &str,
        arguments: &[String],
        what: &str,
        log: &TaskLog,
        cancel: &CancellationToken,
        deadline: Instant,
    ) -> Result<RunOutput, ExecError> {
        let command_id = self
            .bounded(
                self.command(shell, command, arguments),
                what,
                cancel,
                deadline,
            )
            .await?;
        let mut out = RunOutput {
            exit_code: 0,
            stdout: Vec::new(),
            stderr_tail: Vec::new(),
        };
        // Bounded by `deadline`: every round either returns or waits for the server.
        loop {
            let round = self
                .bounded(self.receive(shell, &command_id), what, cancel, deadline)
                .await;
            let resp = match round {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    if matches!(e, ExecError::Cancelled { .. } | ExecError::Timeout { .. }) {
                        let signal = self.signal_terminate(shell, &command_id);
                        if let Ok(Err(err)) = tokio::time::timeout(CLEANUP_BOUND, signal).await {
                            tracing::warn!(endpoint = %self.endpoint, error = %err, "winrm terminate failed");
                        }
                    }
                    return Err(e);
                }
            };
            for chunk in &resp.streams {
                if chunk.name == "stderr" {
                    log.bytes(Stream::Stderr, &chunk.data);
                    out.stderr_tail.extend_from_slice(&chunk.data);
                    let excess = out.stderr_tail.len().saturating_sub(STDERR_TAIL);
                    out.stderr_tail.drain(..excess);
                } else {
                    log.bytes(Stream::Stdout, &chunk.data);
                    let room = STDOUT_KEEP.saturating_sub(out.stdout.len());
                    out.stdout
                        .extend_from_slice(&chunk.data[..chunk.data.len().min(room)]);
                }
            }
            if resp.done() {
                out.exit_code = resp.exit_code.unwrap_or(0);
                return Ok(out);
            }
        }
    }

    /// Runs `op` unless `cancel` fires or `deadline` passes first.
    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, ExecError>>,
        what: &str,
        cancel: &CancellationToken,
        deadline: Instant,
    ) -> Result<T, ExecError> {
        tokio::select! {
            // Cancel first, then the deadline: a call that is both is reported as cancelled.
            biased;
            () = cancel.cancelled() => Err(ExecError::Cancelled {
                host: self.endpoint.clone(),
                what: what.to_owned(),
            }),
            () = tokio::time::sleep_until(deadline) => Err(ExecError::Timeout {
                host: self.endpoint.clone(),
                what: what.to_owned(),
                seconds: deadline.saturating_duration_since(Instant::now()).as_secs(),
            }),
            r = op => r,
        }
    }
}
