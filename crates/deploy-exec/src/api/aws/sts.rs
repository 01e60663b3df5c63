//! AWS STS over its query protocol: AssumeRoleWithWebIdentity (unsigned, the IRSA source) and AssumeRole (SigV4-signed, for profile role chaining); form POST in, XML out.

use std::collections::BTreeMap;
use std::path::Path;

use quick_xml::events::Event;
use reqwest::Url;
use time::OffsetDateTime;

use super::source::{
    Outcome, Session, Sources, expiry, form, keys, redact, secret_error, send, status_error, tail,
};
use crate::api::sigv4::{AwsCredentials, SigningInput, amz_date_now, sign};
use crate::errors::ExecError;

const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// What one AssumeRole* call asks for.
pub(super) struct RoleRequest<'a> {
    pub(super) role_arn: &'a str,
    pub(super) session_name: String,
    /// The signing and endpoint region (a profile's `region`, else the chain's).
    pub(super) region: Option<&'a str>,
    pub(super) external_id: Option<&'a str>,
    pub(super) duration_seconds: Option<&'a str>,
}

/// A default session name, as the SDKs make one when none is configured.
pub(super) fn session_name(configured: Option<&str>) -> String {
    configured.map_or_else(
        || format!("deployd-{}", OffsetDateTime::now_utc().unix_timestamp()),
        str::to_owned,
    )
}

impl Sources<'_> {
    /// The signing region: `region` if given, else `AWS_REGION`, `AWS_DEFAULT_REGION`, the target's.
    fn sts_region<'r>(&'r self, region: Option<&'r str>) -> &'r str {
        region
            .or_else(|| self.env.var("AWS_REGION"))
            .or_else(|| self.env.var("AWS_DEFAULT_REGION"))
            .unwrap_or(self.region)
    }

    /// The STS endpoint: `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, else regional.
    fn sts_endpoint(&self, region: &str) -> Result<Url, ExecError> {
        let (var, value) = match (
            self.env.var("AWS_ENDPOINT_URL_STS"),
            self.env.var("AWS_ENDPOINT_URL"),
        ) {
            (Some(v), _) => ("AWS_ENDPOINT_URL_STS", v.to_owned()),
            (None, Some(v)) => ("AWS_ENDPOINT_URL", v.to_owned()),
            (None, None) => (
                "the regional endpoint",
                format!("https://sts.{region}.amazonaws.com/"),
            ),
        };
        Url::parse(&value)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| ExecError::invalid(var, value.clone(), "an absolute http(s) URL"))
    }

    /// The environment's web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`.
    pub(super) async fn web_identity(&self) -> Result<Outcome, ExecError> {
        let Some(token_file) = self.env.var("AWS_WEB_IDENTITY_TOKEN_FILE") else {
            return Ok(Outcome::Absent("AWS_WEB_IDENTITY_TOKEN_FILE unset".into()));
        };
        let role = self.env.var("AWS_ROLE_ARN").ok_or_else(|| {
            secret_error(
                "aws web identity",
                "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not",
            )
        })?;
        let request = RoleRequest {
            role_arn: role,
            session_name: session_name(self.env.var("AWS_ROLE_SESSION_NAME")),
            region: None,
            external_id: None,
            duration_seconds: None,
        };
        let path = self.env.expand(token_file);
        self.assume_role_with_web_identity(&request, &path)
            .await
            .map(Outcome::Loaded)
    }

    /// AssumeRoleWithWebIdentity with the token in `token_file`, read now: the kubelet
    /// rotates the projected token, so every refresh reads it again.
    pub(super) async fn assume_role_with_web_identity(
        &self,
        request: &RoleRequest<'_>,
        token_file: &Path,
    ) -> Result<Session, ExecError> {
        let role = request.role_arn;
        let reference = format!("aws web identity for role {role}");
        let token = tokio::fs::read_to_string(token_file).await.map_err(|e| {
            secret_error(
                &reference,
                format!("read the token file {}: {e}", token_file.display()),
            )
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(secret_error(
                &reference,
                format!("the token file {} is empty", token_file.display()),
            ));
        }
        let region = self.sts_region(request.region);
        let url = self.sts_endpoint(region)?;
        let body = form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role),
            ("RoleSessionName", &request.session_name),
            ("WebIdentityToken", token),
        ]);
        // AssumeRoleWithWebIdentity is unsigned: the token is the proof.
        let http = self
            .remote
            .post(url)
            .header("content-type", FORM)
            .header("accept", "application/xml")
            .body(body);
        let (status, text) = send(http, "sts", "AssumeRoleWithWebIdentity", role).await?;
        let mut session = read_answer(
            status,
            &text,
            "AssumeRoleWithWebIdentity",
            role,
            &reference,
            &[token],
        )?;
        session.source = format!("web identity (role `{role}`)");
        Ok(session)
    }

    /// AssumeRole signed with `source` (a profile's `role_arn` over its source).
    pub(super) async fn assume_role(
        &self,
        source: &AwsCredentials,
        request: &RoleRequest<'_>,
    ) -> Result<Session, ExecError> {
        let role = request.role_arn;
        let reference = format!("aws role {role}");
        let region = self.sts_region(request.region);
        let url = self.sts_endpoint(region)?;
        let mut pairs = vec![
            ("Action", "AssumeRole"),
            ("Version", "2011-06-15"),
            ("RoleArn", role),
            ("RoleSessionName", request.session_name.as_str()),
        ];
        if let Some(id) = request.external_id {
            pairs.push(("ExternalId", id));
        }
        if let Some(d) = request.duration_seconds {
            pairs.push(("DurationSeconds", d));
        }
        let body = form(&pairs);
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let amz_date = amz_date_now();
        let mut headers = vec![
            ("content-type", FORM),
            ("host", host.as_str()),
            ("x-amz-date", amz_date.as_str()),
        ];
        if let Some(token) = source.session_token() {
            headers.push(("x-amz-security-token", token));
        }
        let authorization = sign(
            source,
            &SigningInput {
                method: "POST",
                path: url.path(),
                query: "",
                headers: &headers,
                body: body.as_bytes(),
                region,
                service: "sts",
                amz_date: &amz_date,
            },
        );
        let mut http = self
            .remote
            .post(url.clone())
            .header("authorization", authorization)
            .header("accept", "application/xml")
            .body(body);
        for (name, value) in headers.iter().filter(|(n, _)| *n != "host") {
            http = http.header(*name, *value);
        }
        let (status, text) = send(http, "sts", "AssumeRole", role).await?;
        let hide = [source.session_token().unwrap_or_default()];
        read_answer(status, &text, "AssumeRole", role, &reference, &hide)
    }
}

/// The credentials of an AssumeRole* answer, or its `ErrorResponse` as a status error
/// (`Code: Message`, with `hide` redacted: STS may quote what it was sent).
fn read_answer(
    status: u16,
    text: &str,
    action: &str,
    role: &str,
    reference: &str,
    hide: &[&str],
) -> Result<Session, ExecError> {
    if !(200..300).contains(&status) {
        let fields = xml_fields(text).unwrap_or_default();
        let detail = match (fields.get("Code"), fields.get("Message")) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            _ => tail(text),
        };
        return Err(status_error(
            "sts",
            action,
            role,
            status,
            redact(&detail, hide),
        ));
    }
    let fields = xml_fields(text)
        .map_err(|e| secret_error(reference, format!("the STS answer is not XML ({e})")))?;
    let get = |k: &str| fields.get(k).map(String::as_str);
    let credentials = keys(
        reference,
        get("AccessKeyId"),
        get("SecretAccessKey"),
        get("SessionToken"),
    )?;
    Ok(Session {
        credentials,
        expires: Some(expiry(get("Expiration"), reference)?),
        source: format!("role `{role}`"),
    })
}

/// The text of each element by local name (the last occurrence wins): enough for the
/// flat STS answers (`Credentials/AccessKeyId`, `Error/Code`).
pub(crate) fn xml_fields(xml: &str) -> Result<BTreeMap<String, String>, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut saw_element = false;
    loop {
        // The reader's messages may quote content (a secret): position only.
        let event = reader
            .read_event()
            .map_err(|_| format!("malformed at byte {}", reader.error_position()))?;
        match event {
            Event::Start(e) => {
                saw_element = true;
                let name = e.name();
                let full: &str = name.as_ref();
                let name = full.rsplit_once(':').map_or(full, |(_, l)| l).to_owned();
                out.insert(name.clone(), String::new());
                stack.push(name);
            }
            Event::End(_) => {
                stack.pop();
            }
            Event::Empty(_) => saw_element = true,
            Event::Text(t) => {
                if let Some(name) = stack.last() {
                    out.entry(name.clone())
                        .or_default()
                        .push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(name) = stack.last() {
                    out.entry(name.clone())
                        .or_default()
                        .push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(name) = stack.last() {
                    let raw = format!("&{};", r.xml10_content());
                    let v = quick_xml::escape::unescape(&raw)
                        .map_err(|_| "an unknown entity reference".to_owned())?;
                    out.entry(name.clone()).or_default().push_str(&v);
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) => {}
        }
    }
    if !saw_element {
        return Err("no element".into());
    }
    for v in out.values_mut() {
        *v = v.trim().to_owned();
    }
    Ok(out)
}
