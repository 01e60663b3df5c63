//! Sign-in and sessions: an API token, checked once, becomes a random session secret in an HttpOnly, SameSite=Strict cookie; the store keeps only its hash.
//!
//! Every request looks the session and its token up again, so revoking the token
//! or signing out ends the session at once, and a token's role change applies on
//! the next page. The CSRF token of a session is derived from its secret (a hash
//! the page carries in its forms): a cross-site page can neither read the cookie
//! nor the page, so it cannot forge it. Sign-in itself has no session yet and is
//! protected by the `Origin` check instead.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine as _;
use deploy_api::Role;
use deploy_core::Digest;
use deploy_store::{AuditActorKind, AuditRecord, ConsoleSession};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::page::{self, PageError};
use crate::auth::{role_of, usable_at};
use crate::state::ServerState;
use crate::tokens::hash_token;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "deployd_session";

/// Largest console form body (forms hold a reason or a token, nothing bigger).
const MAX_FORM_BYTES: usize = 16 * 1024;

/// A signed-in console user.
#[derive(Debug, Clone)]
pub(crate) struct ConsoleUser {
    pub name: String,
    pub token_id: uuid::Uuid,
    pub role: Role,
    /// The session's CSRF token, for the page's forms.
    pub csrf: String,
}

impl ConsoleUser {
    /// Refuses (403 page) a user whose role is below `required`.
    pub(crate) fn require(&self, required: Role) -> Result<(), PageError> {
        if self.role.allows(required) {
            Ok(())
        } else {
            Err(PageError::forbidden(format!(
                "role `{}` may not do this; it needs `{required}`",
                self.role
            )))
        }
    }

    /// The user as an API caller (for the engine calls the API makes too).
    pub(crate) fn caller(&self) -> crate::auth::Caller {
        crate::auth::Caller {
            name: self.name.clone(),
            token_id: self.token_id,
            role: self.role,
        }
    }
}

impl FromRequestParts<ServerState> for ConsoleUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ServerState,
    ) -> Result<Self, Self::Rejection> {
        match signed_in(state, &parts.headers).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(to_sign_in(parts)),
            Err(e) => Err(e.into_response()),
        }
    }
}

/// Where an unauthenticated request goes: pages to the sign-in page (coming back
/// afterwards), streams and fragments get a plain 401.
fn to_sign_in(parts: &Parts) -> Response {
    let path = parts.uri.path();
    let job_fragment = path.starts_with("/ui/jobs/") && path.ends_with("/live");
    if path.ends_with("/events") || job_fragment {
        return (StatusCode::UNAUTHORIZED, "sign in again").into_response();
    }
    // A form posted after the session ended cannot be replayed by a GET: start over.
    let next = match parts.method {
        axum::http::Method::GET => parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/ui/"),
        _ => "/ui/",
    };
    let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
    Redirect::to(&format!("/ui/login?{query}")).into_response()
}

/// The user of the request's session cookie, if it names a live session whose
/// token is still usable and has a role.
async fn signed_in(
    state: &ServerState,
    headers: &HeaderMap,
) -> Result<Option<ConsoleUser>, PageError> {
    let Some(secret) = cookie_secret(headers) else {
        return Ok(None);
    };
    let now = state.now();
    let Some((_, token)) = state
        .store()
        .find_console_session(&session_hash(secret), now)
        .await?
    else {
        return Ok(None);
    };
    if usable_at(&token, now).is_err() {
        return Ok(None);
    }
    let Some(role) = role_of(&token) else {
        return Ok(None);
    };
    crate::auth::touch(state, &token, now).await;
    Ok(Some(ConsoleUser {
        name: token.name,
        token_id: token.id,
        role,
        csrf: csrf_of(secret),
    }))
}

/// The audit actor of a console request (its session's token), for `audit::record`.
pub(crate) async fn session_actor(
    state: &ServerState,
    headers: &HeaderMap,
) -> Option<(AuditActorKind, String, String)> {
    let user = signed_in(state, headers).await.ok()??;
    Some((AuditActorKind::Token, user.token_id.to_string(), user.name))
}

/// The session secret from the `Cookie` header, if exactly one is sent: two
/// would mean another site of the domain planted one beside ours (which one the
/// browser sends first is not ours to guess), so neither is trusted.
fn cookie_secret(headers: &HeaderMap) -> Option<&str> {
    let mut secrets = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim());
    let secret = secrets.next()?;
    if secrets.next().is_some() {
        return None;
    }
    Some(secret).filter(|v| !v.is_empty() && v.len() <= 128)
}

/// What the store keeps of a session secret.
fn session_hash(secret: &str) -> Digest {
    hash_token(secret)
}

/// The CSRF token of the session whose secret is `secret`: a hash with its own
/// prefix, so it reveals nothing of the secret and never equals its stored hash.
fn csrf_of(secret: &str) -> String {
    hash_token(&format!("deployd-console-csrf:{secret}"))
        .as_str()
        .trim_start_matches("sha256:")
        .to_owned()
}

/// A new session secret: 256 random bits, URL-safe base64.
fn new_secret() -> Result<String, PageError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| PageError::internal("no randomness for a session secret"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Compares two strings in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Refuses a request whose `Origin` (or, without one, `Sec-Fetch-Site`) says it
/// comes from another site. Browsers send `Origin` on every POST.
fn check_same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        if host.is_none_or(|h| h != origin_host) {
            return Err(PageError::forbidden(format!(
                "the form was posted from `{origin}`, not from this server's own pages"
            )));
        }
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("cross-site" | "same-site") => Err(PageError::forbidden(
            "the form was posted from another site, not from this server's own pages",
        )),
        _ => Ok(()),
    }
}

/// A form body whose `csrf` field matches the session's token, parsed into `T`
/// (which ignores the `csrf` field). Anything else is a 403 page.
pub(crate) struct CsrfForm<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ServerState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &ServerState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        check_same_origin(&parts.headers).map_err(IntoResponse::into_response)?;
        let expected = cookie_secret(&parts.headers)
            .map(csrf_of)
            .ok_or_else(|| PageError::forbidden("not signed in").into_response())?;
        let bytes = read_form(&parts.headers, body).await?;
        let fields: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&bytes).map_err(|e| bad_form(&e))?;
        let sent = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str());
        match sent {
            Some(sent) if same(sent, &expected) => {}
            Some(_) => {
                return Err(PageError::forbidden(
                    "the form's CSRF token does not match this session; reload the page",
                )
                .into_response());
            }
            None => {
                return Err(PageError::forbidden(
                    "the form has no CSRF token; post it from the console's own page",
                )
                .into_response());
            }
        }
        let _ = state;
        let value = serde_urlencoded::from_bytes(&bytes).map_err(|e| bad_form(&e))?;
        Ok(Self(value))
    }
}

fn bad_form(e: &serde_urlencoded::de::Error) -> Response {
    PageError::bad_request(format!("the form is not valid: {e}")).into_response()
}

/// The body of a form POST, bounded, after checking its content type.
async fn read_form(headers: &HeaderMap, body: axum::body::Body) -> Result<Bytes, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(PageError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type `{content_type}` is not supported; expected application/x-www-form-urlencoded"
            ),
        )
        .into_response());
    }
    axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            PageError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the form is larger than {MAX_FORM_BYTES} bytes"),
            )
            .into_response()
        })
}

/// The sign-in page's query.
#[derive(Debug, Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
}

/// Where to go after signing in: a console path of visible ASCII only (never
/// another site, never a header-breaking character).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.starts_with("/ui//")
                && !n.contains('\\')
                && n.len() <= 2048
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n
        }
        _ => "/ui/",
    }
}

/// `GET /ui/login`.
pub(crate) async fn login_page(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
) -> Result<Response, PageError> {
    if signed_in(&state, &headers).await?.is_some() {
        return Ok(Redirect::to(safe_next(query.next.as_deref())).into_response());
    }
    let next = safe_next(query.next.as_deref()).to_owned();
    Ok(page::render(&page::LoginPage { next, error: None })?.into_response())
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub(crate) struct SignIn {
    token: String,
    next: Option<String>,
}

/// `POST /ui/login`: the token becomes a session.
pub(crate) async fn sign_in(
    State(state): State<ServerState>,
    request: Request,
) -> Result<Response, PageError> {
    let (parts, body) = request.into_parts();
    check_same_origin(&parts.headers)?;
    let bytes = match read_form(&parts.headers, body).await {
        Ok(bytes) => bytes,
        Err(response) => return Ok(response),
    };
    let form: SignIn = match serde_urlencoded::from_bytes(&bytes) {
        Ok(form) => form,
        Err(e) => return Ok(bad_form(&e)),
    };
    let next = safe_next(form.next.as_deref()).to_owned();
    let refuse = |why: &str| -> Result<Response, PageError> {
        let page = page::LoginPage {
            next: next.clone(),
            error: Some(why.to_owned()),
        };
        Ok((StatusCode::UNAUTHORIZED, page::render(&page)?).into_response())
    };
    let now = state.now();
    let token = form.token.trim();
    let Some(record) = state.store().find_api_token(&hash_token(token)).await? else {
        tracing::warn!("console sign-in with an unknown or revoked token");
        return refuse("unknown or revoked API token");
    };
    if let Err(e) = usable_at(&record, now) {
        return refuse(&e.to_string());
    }
    if role_of(&record).is_none() {
        return refuse("this token has no role (an agent bootstrap token cannot sign in)");
    }
    let ttl = state.config().console_session_ttl;
    let mut expires_at = now.saturating_add(ttl);
    if let Some(token_end) = record.expires_at {
        expires_at = expires_at.min(token_end);
    }
    let secret = new_secret()?;
    state
        .store()
        .put_console_session(&ConsoleSession {
            id_hash: session_hash(&secret),
            token_id: record.id,
            created_at: now,
            expires_at,
        })
        .await?;
    // Best effort housekeeping: expired sessions are refused anyway.
    if let Err(e) = state.store().prune_console_sessions(now).await {
        tracing::warn!(error = %e, "cannot prune expired console sessions");
    }
    tracing::info!(token = %record.id, name = %record.name, "console sign-in");
    // A sign-in is a write of its own (a session now exists): recorded like the
    // console's other writes, which the audit layer sees only once signed in.
    let audit = AuditRecord {
        seq: 0,
        at: now,
        actor_kind: AuditActorKind::Token,
        actor_id: record.id.to_string(),
        actor_name: record.name.clone(),
        method: "POST".to_owned(),
        route: "/ui/login".to_owned(),
        path: "/ui/login".to_owned(),
        entity_id: Some(record.id.to_string()),
        status: StatusCode::SEE_OTHER.as_u16(),
        remote: crate::audit::remote_of(&parts.extensions, &parts.headers),
        before: None,
        after: None,
    };
    if let Err(e) = state.store().append_audit(&audit).await {
        tracing::error!(error = %e, "cannot append a console sign-in to the audit log");
    }
    let max_age = expires_at.duration_since(now).as_secs();
    let cookie = session_cookie(&secret, max_age, secure(&state, &parts.headers));
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// Whether the cookie must be `Secure`: deployd serves HTTPS itself, or a proxy in
/// front of it says the browser's connection is HTTPS (`X-Forwarded-Proto`).
fn secure(state: &ServerState, headers: &HeaderMap) -> bool {
    state.config().secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value of a session (an empty secret and age 0 clear it).
fn session_cookie(secret: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = format!(
        "{COOKIE}={secret}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The sign-out form (only its CSRF token).
#[derive(Debug, Deserialize)]
pub(crate) struct Empty {}

/// `POST /ui/logout`: deletes the session and clears the cookie.
pub(crate) async fn sign_out(
    State(state): State<ServerState>,
    headers: HeaderMap,
    CsrfForm(Empty {}): CsrfForm<Empty>,
) -> Result<Response, PageError> {
    if let Some(secret) = cookie_secret(&headers) {
        state
            .store()
            .delete_console_session(&session_hash(secret))
            .await?;
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", 0, secure(&state, &headers)),
    );
    Ok(response)
}

/// Renders a page or an error page; the handlers' common answer.
pub(crate) type PageResult = Result<Html<String>, PageError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/ui/jobs/1")), "/ui/jobs/1");
        for hostile in [
            "https://evil.example/",
            "//evil.example/",
            "/ui//evil.example",
            "/api/v1/jobs",
            "/ui/\\evil",
            "/ui/jobs\nSet-Cookie:x",
            "/ui/a b",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/ui/", "{hostile}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn the_csrf_token_reveals_nothing_of_the_secret() {
        let csrf = csrf_of("abc");
        assert_ne!(csrf, csrf_of("abd"));
        assert!(!csrf.contains("abc"));
        assert_ne!(format!("sha256:{csrf}"), session_hash("abc").as_str());
    }

    #[test]
    fn a_cross_site_post_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("deployd:8080"));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://deployd:8080"),
        );
        assert!(check_same_origin(&headers).is_ok());
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://evil:8080"));
        assert!(check_same_origin(&headers).is_err());
        headers.remove(header::ORIGIN);
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_same_origin(&headers).is_err());
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let c = session_cookie("s", 60, true);
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(
            !session_cookie("s", 60, false)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; deployd_session=xyz; b=2"),
        );
        assert_eq!(cookie_secret(&headers), Some("xyz"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("deployd_session=planted"),
        );
        assert_eq!(
            cookie_secret(&headers),
            None,
            "two session cookies: trust neither"
        );
    }
}
