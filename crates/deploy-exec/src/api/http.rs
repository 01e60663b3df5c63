//! The shared HTTP client of the API executors: rustls, optional cluster CA (then the only root trusted), JSON in and out, status and transport errors classified.

use std::time::Duration;

use reqwest::{RequestBuilder, Response, Url};
use serde_json::Value;

use crate::errors::ExecError;
use crate::logs::TaskLog;

/// At most this many bytes of an error body go into an error message.
const BODY_TAIL: usize = 512;

/// One platform's HTTP client for one call: its log redacts the call's credential.
pub(crate) struct Http {
    client: reqwest::Client,
    pub(crate) platform: &'static str,
    pub(crate) log: TaskLog,
    /// Credentials met during the call (a rotated token file), redacted like the log's.
    also_secret: std::sync::Mutex<Vec<String>>,
}

impl Http {
    /// A client for `platform`, trusting only `ca_pem` when given (else the built-in roots) and
    /// presenting the client certificate in `identity_pem` (chain then key) when asked.
    pub(crate) fn new(
        platform: &'static str,
        ca_pem: Option<&str>,
        identity_pem: Option<&str>,
        request_timeout: Duration,
        log: TaskLog,
    ) -> Result<Self, ExecError> {
        let mut builder = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            let bad = |detail: String| {
                ExecError::invalid(
                    format!("{platform} ca certificate"),
                    "(the ca_ref secret)",
                    format!("a PEM certificate ({detail})"),
                )
            };
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(bad("no `-----BEGIN CERTIFICATE-----` block".into()));
            }
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no certificate could be read".into()));
            }
            // The given CA replaces the built-in public roots: a server with a publicly
            // trusted certificate is not the cluster the operator named.
            builder = builder.tls_certs_only(certs);
        }
        if let Some(pem) = identity_pem {
            // reqwest's message names no key material; the PEM itself never goes into the error.
            let identity = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| {
                ExecError::invalid(
                    format!("{platform} client certificate"),
                    "(not shown: it holds the private key)",
                    format!("a PEM certificate followed by its private key ({e})"),
                )
            })?;
            builder = builder.identity(identity);
        }
        let client = builder.build().map_err(|e| {
            ExecError::invalid(
                format!("{platform} http client"),
                e.to_string(),
                "a client that can be built",
            )
        })?;
        Ok(Self {
            client,
            platform,
            log,
            also_secret: std::sync::Mutex::default(),
        })
    }

    /// Redacts `secret` from this call's errors from now on.
    pub(crate) fn also_redact(&self, secret: &str) {
        if let Ok(mut s) = self.also_secret.lock()
            && secret.len() >= 4
            && !s.iter().any(|k| k == secret)
        {
            s.push(secret.to_owned());
        }
    }

    /// `text` without any credential of this call.
    fn redact(&self, text: &str) -> String {
        let mut out = self.log.redact(text);
        if let Ok(s) = self.also_secret.lock() {
            for secret in s.iter() {
                out = out.replace(secret.as_str(), crate::REDACTED);
            }
        }
        out
    }

    /// The underlying client, to build requests.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `request` for `action` on `resource`; a 2xx answer's JSON body (`Null` when empty).
    pub(crate) async fn send(
        &self,
        request: RequestBuilder,
        action: &str,
        resource: &str,
    ) -> Result<Value, ExecError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, action))?;
        self.read(response, action, resource).await
    }

    async fn read(
        &self,
        response: Response,
        action: &str,
        resource: &str,
    ) -> Result<Value, ExecError> {
        let status = response.status();
        let url = response.url().clone();
        let body = response.text().await.map_err(|e| ExecError::Connect {
            host: host_of(&url),
            port: url.port_or_known_default().unwrap_or(0),
            detail: self.redact(&format!("{action}: read the answer: {}", chain(&e))),
        })?;
        if status.is_success() {
            if body.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&body).map_err(|e| ExecError::ApiResponse {
                platform: self.platform,
                resource: resource.to_owned(),
                expected: format!("a JSON answer to {action} ({e})"),
            });
        }
        let detail = tail(&self.redact(&body));
        if status.as_u16() == 409 {
            return Err(ExecError::ApiConflict {
                platform: self.platform,
                action: action.to_owned(),
                resource: resource.to_owned(),
                detail,
            });
        }
        Err(ExecError::ApiStatus {
            platform: self.platform,
            action: action.to_owned(),
            resource: resource.to_owned(),
            status: status.as_u16(),
            detail,
        })
    }

    /// Refused, reset, timed out: all retryable [`ExecError::Connect`].
    fn transport_error(&self, e: &reqwest::Error, action: &str) -> ExecError {
        let (host, port) = e
            .url()
            .map(|u| (host_of(u), u.port_or_known_default().unwrap_or(0)))
            .unwrap_or_else(|| (String::from("(unknown)"), 0));
        let detail = chain(e);
        if detail.contains("invalid peer certificate") {
            return ExecError::TlsCertificate {
                host,
                port,
                detail: self.redact(&format!(
                    "{action}: {detail} (set the target's ca_ref, or the kubeconfig's certificate-authority, to the cluster CA)"
                )),
            };
        }
        // The server's alert after our part of the handshake: it wants a client
        // certificate, or does not accept ours. Retrying cannot change that.
        if detail.contains("received fatal alert: CertificateRequired")
            || detail.contains("received fatal alert: BadCertificate")
            || detail.contains("received fatal alert: UnknownCA")
            || detail.contains("received fatal alert: CertificateUnknown")
        {
            return ExecError::TlsCertificate {
                host,
                port,
                detail: self.redact(&format!(
                    "{action}: {detail} (the server demands a client certificate signed by a CA it trusts: \
                     give the target one)"
                )),
            };
        }
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "connection lost"
        };
        ExecError::Connect {
            host,
            port,
            detail: self.redact(&format!("{action}: {kind}: {}", chain(e))),
        }
    }
}

/// The host of `url` as text (brackets kept off IPv6 literals).
pub(crate) fn host_of(url: &Url) -> String {
    url.host_str().unwrap_or("(no host)").to_owned()
}

/// Parses a configured base URL, trimming one trailing slash.
pub(crate) fn base_url(platform: &'static str, value: &str) -> Result<String, ExecError> {
    Url::parse(value).map_err(|e| {
        ExecError::invalid(
            format!("{platform} address"),
            value,
            format!("an absolute http(s) URL ({e})"),
        )
    })?;
    Ok(value.trim_end_matches('/').to_owned())
}

/// The error and its sources, `: `-joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The first [`BODY_TAIL`] bytes of `body` on one line.
fn tail(body: &str) -> String {
    let one_line = body.trim().replace(['\r', '\n'], " ");
    if one_line.len() <= BODY_TAIL {
        return one_line;
    }
    let mut end = BODY_TAIL;
    while !one_line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &one_line[..end])
}
