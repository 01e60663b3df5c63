//! What every source of the AWS default chain shares: the session type, the walk order, and the HTTP and parsing helpers that keep secrets out of errors.

use std::time::Duration;

use reqwest::{Client, RequestBuilder, Url};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::env::AwsEnvironment;
use crate::REDACTED;
use crate::api::sigv4::AwsCredentials;
use crate::errors::ExecError;
use crate::secrets::Secret;

/// Link-local services answer at once or not at all: a short bound keeps a machine
/// outside EC2 from waiting long on the last source.
pub(crate) const LOCAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Credentials with their expiry (`None`: long-term keys) and where they came from.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) credentials: AwsCredentials,
    pub(crate) expires: Option<OffsetDateTime>,
    pub(crate) source: String,
}

/// What one source yields: credentials, or why it has none (the chain moves on).
#[derive(Debug)]
pub(crate) enum Outcome {
    Loaded(Session),
    Absent(String),
}

/// The order of the default chain, as in the AWS SDKs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Environment,
    Profile,
    WebIdentity,
    Container,
    InstanceMetadata,
}

impl Source {
    pub(crate) const ORDER: [Self; 5] = [
        Self::Environment,
        Self::Profile,
        Self::WebIdentity,
        Self::Container,
        Self::InstanceMetadata,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Environment => "environment",
            Self::Profile => "profile",
            Self::WebIdentity => "web identity",
            Self::Container => "container credentials",
            Self::InstanceMetadata => "instance metadata",
        }
    }
}

/// What the sources need: the environment, two clients, and the target's region
/// (for the regional STS endpoint when no region variable is set).
pub(crate) struct Sources<'a> {
    pub(crate) env: &'a AwsEnvironment,
    /// No proxy, short timeout: link-local and loopback endpoints.
    pub(crate) local: &'a Client,
    /// STS: proxies from the environment, the executor's request timeout.
    pub(crate) remote: &'a Client,
    pub(crate) region: &'a str,
}

pub(super) fn secret_error(reference: impl Into<String>, detail: impl Into<String>) -> ExecError {
    ExecError::Secret {
        reference: reference.into(),
        detail: detail.into(),
    }
}

/// `text` with every non-empty `hide` replaced by the redaction marker.
pub(super) fn redact(text: &str, hide: &[&str]) -> String {
    let mut out = text.to_owned();
    for h in hide.iter().filter(|h| !h.is_empty()) {
        out = out.replace(h, REDACTED);
    }
    out
}

/// The first 300 characters of an error body, on one line.
pub(super) fn tail(body: &str) -> String {
    let line = body.trim().replace(['\r', '\n'], " ");
    match line.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

/// `RFC 3339` expiry as the three JSON/XML formats spell it (`2026-12-06T10:00:00Z`).
pub(super) fn expiry(value: Option<&str>, reference: &str) -> Result<OffsetDateTime, ExecError> {
    let value = value.ok_or_else(|| secret_error(reference, "the answer has no Expiration"))?;
    OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
        secret_error(
            reference,
            format!("Expiration `{value}`: expected an RFC 3339 time such as 2026-12-06T10:00:00Z"),
        )
    })
}

/// Keys built from the parts an answer carried; an empty part is an error naming the field, never its value.
pub(super) fn keys(
    reference: &str,
    id: Option<&str>,
    secret: Option<&str>,
    token: Option<&str>,
) -> Result<AwsCredentials, ExecError> {
    let missing = |field: &str| secret_error(reference, format!("the answer has no {field}"));
    let id = id
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing("AccessKeyId"))?;
    let secret = secret
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing("SecretAccessKey"))?;
    Ok(AwsCredentials::new(
        id,
        Secret::new(secret),
        token.filter(|t| !t.is_empty()).map(Secret::new),
    ))
}

/// Form encoding (`application/x-www-form-urlencoded`) through the URL parser, so no extra crate.
pub(super) fn form(pairs: &[(&str, &str)]) -> String {
    let Ok(mut url) = Url::parse("http://form.invalid/") else {
        return String::new();
    };
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_owned()
}

/// The status and body of an answer; a transport failure is a retryable connect error.
pub(super) async fn send(
    request: RequestBuilder,
    platform: &'static str,
    action: &str,
    resource: &str,
) -> Result<(u16, String), ExecError> {
    let response = request.send().await.map_err(|e| {
        let (host, port) = e
            .url()
            .map(|u| {
                (
                    u.host_str().unwrap_or("(no host)").to_owned(),
                    u.port_or_known_default().unwrap_or(0),
                )
            })
            .unwrap_or_else(|| (resource.to_owned(), 0));
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "the request failed"
        };
        ExecError::Connect {
            host,
            port,
            detail: format!("{platform} {action}: {kind}"),
        }
    })?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|_| ExecError::Connect {
        host: resource.to_owned(),
        port: 0,
        detail: format!("{platform} {action}: the answer was cut off"),
    })?;
    Ok((status, body))
}

pub(super) fn status_error(
    platform: &'static str,
    action: &str,
    resource: &str,
    status: u16,
    detail: String,
) -> ExecError {
    ExecError::ApiStatus {
        platform,
        action: action.to_owned(),
        resource: resource.to_owned(),
        status,
        detail,
    }
}

impl Sources<'_> {
    /// One source's credentials, or why it has none.
    pub(crate) async fn load(&self, source: Source) -> Result<Outcome, ExecError> {
        match source {
            Source::Environment => self.environment(),
            Source::Profile => self.profile().await,
            Source::WebIdentity => self.web_identity().await,
            Source::Container => self.container().await,
            Source::InstanceMetadata => self.instance_metadata().await,
        }
    }

    pub(super) fn environment(&self) -> Result<Outcome, ExecError> {
        let Some(id) = self.env.var("AWS_ACCESS_KEY_ID") else {
            return Ok(Outcome::Absent("AWS_ACCESS_KEY_ID unset".into()));
        };
        let secret = self.env.var("AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
            secret_error(
                "aws environment",
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
            )
        })?;
        Ok(Outcome::Loaded(Session {
            credentials: AwsCredentials::new(
                id,
                Secret::new(secret),
                self.env.var("AWS_SESSION_TOKEN").map(Secret::new),
            ),
            expires: None,
            source: "environment".into(),
        }))
    }
}

/// The JSON both the container endpoint and IMDS answer with.
pub(super) fn json_session(
    text: &str,
    reference: &str,
    source: String,
) -> Result<Session, ExecError> {
    // serde's messages can quote a value: only the field names go into the error.
    let value: Value = serde_json::from_str(text).map_err(|_| {
        secret_error(
            reference,
            "the answer is not a JSON object with AccessKeyId, SecretAccessKey, Token and Expiration",
        )
    })?;
    let get = |k: &str| value.get(k).and_then(Value::as_str);
    if let Some(code) = get("Code").filter(|c| *c != "Success") {
        return Err(secret_error(
            reference,
            format!("the answer's Code is `{code}`, expected `Success`"),
        ));
    }
    let credentials = keys(
        reference,
        get("AccessKeyId"),
        get("SecretAccessKey"),
        get("Token"),
    )?;
    Ok(Session {
        credentials,
        expires: Some(expiry(get("Expiration"), reference)?),
        source,
    })
}
