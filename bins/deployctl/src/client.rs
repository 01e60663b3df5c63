//! The HTTP client: JSON calls mapped to exit codes, and the SSE reader.

use deploy_api::{Problem, SSE_EVENT_END};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::exit::{CliError, UNREACHABLE, USAGE};

/// `e` and its causes, `: `-separated: reqwest's own message alone hides why a
/// request failed (refused, certificate not trusted, …).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// One server-sent event.
#[derive(Debug, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl Client {
    /// A client for `server`, trusting the PEM CA certificate(s) in `ca_file` besides the system roots.
    pub fn new(
        server: &str,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, CliError> {
        let mut builder =
            reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(10));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                CliError::new(
                    USAGE,
                    format!("cannot read --ca-file {}: {e}", path.display()),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    CliError::new(
                        USAGE,
                        format!(
                            "--ca-file {} holds no PEM certificate; expected `-----BEGIN CERTIFICATE-----` blocks",
                            path.display()
                        ),
                    )
                })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| {
            CliError::new(UNREACHABLE, format!("cannot build the HTTP client: {e}"))
        })?;
        Ok(Self {
            http,
            base: server.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CliError> {
        let resp = req.send().await.map_err(|e| {
            CliError::transport(format!(
                "cannot reach the server at {}: {}",
                self.base,
                error_chain(&e)
            ))
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let detail = match serde_json::from_str::<Problem>(&text) {
            Ok(p) => match p.field {
                Some(f) => format!("{} (field `{f}`)", p.detail),
                None => p.detail,
            },
            Err(_) => text,
        };
        let message = format!("server answered {status}: {detail}");
        let code = match status {
            StatusCode::SERVICE_UNAVAILABLE => return Err(CliError::unavailable(message)),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => UNREACHABLE,
            s if s.is_client_error() => USAGE,
            _ => UNREACHABLE,
        };
        Err(CliError::new(code, message))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        decode(resp).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CliError> {
        let mut req = self.request(Method::POST, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.send(req).await?;
        decode(resp).await
    }

    /// Follows an SSE stream until its `end` event, calling `on_event` for each
    /// event. A broken or closed connection, or a 503 (the server's database is
    /// restarting), is resumed with `Last-Event-ID` (so no event is missed or
    /// repeated), up to `RECONNECTS` times, a second apart.
    pub async fn follow(
        &self,
        path: &str,
        mut on_event: impl FnMut(SseEvent) -> Result<(), CliError>,
    ) -> Result<(), CliError> {
        const RECONNECTS: u32 = 30;
        let mut last_id: Option<String> = None;
        let mut failure = None;
        for attempt in 0..=RECONNECTS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            match self.follow_once(path, &mut last_id, &mut on_event).await {
                Ok(true) => return Ok(()),
                Ok(false) => failure = None,
                // A broken connection (deployd restarting) or a 503 (its database
                // restarting): wait and reconnect, from the last event seen.
                Err(e) if e.retryable => failure = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(failure.unwrap_or_else(|| {
            CliError::new(
                UNREACHABLE,
                format!("the event stream closed {RECONNECTS} times before the job settled"),
            )
        }))
    }

    /// One connection: true when the `end` event arrived.
    async fn follow_once(
        &self,
        path: &str,
        last_id: &mut Option<String>,
        on_event: &mut impl FnMut(SseEvent) -> Result<(), CliError>,
    ) -> Result<bool, CliError> {
        let mut req = self
            .request(Method::GET, path)
            .header("accept", "text/event-stream");
        if let Some(id) = last_id.as_deref() {
            req = req.header("last-event-id", id);
        }
        let mut resp = self.send(req).await?;
        let mut buffer = String::new();
        let mut current = SseEvent::default();
        loop {
            let chunk = resp.chunk().await.map_err(|e| {
                CliError::transport(format!("the event stream broke: {}", error_chain(&e)))
            })?;
            let Some(chunk) = chunk else {
                return Ok(false);
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(pos) = buffer.find('\n') {
                let line: String = buffer.drain(..=pos).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if !current.event.is_empty() || !current.data.is_empty() {
                        let event = std::mem::take(&mut current);
                        if event.id.is_some() {
                            last_id.clone_from(&event.id);
                        }
                        let end = event.event == SSE_EVENT_END;
                        on_event(event)?;
                        if end {
                            return Ok(true);
                        }
                    }
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => current.id = Some(value.to_owned()),
                    "event" => current.event = value.to_owned(),
                    "data" => {
                        if !current.data.is_empty() {
                            current.data.push('\n');
                        }
                        current.data.push_str(value);
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, CliError> {
    let text = resp
        .text()
        .await
        .map_err(|e| CliError::new(UNREACHABLE, format!("cannot read the response: {e}")))?;
    let value: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).map_err(|e| {
            CliError::new(UNREACHABLE, format!("the server's answer is not JSON: {e}"))
        })?
    };
    serde_json::from_value(value).map_err(|e| {
        CliError::new(
            UNREACHABLE,
            format!("unexpected answer from the server: {e}"),
        )
    })
}
