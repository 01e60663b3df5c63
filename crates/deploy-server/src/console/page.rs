//! What every console page shares: the chrome (navigation, who is signed in, the sign-out form), rendering, error pages, times and short digests.

use std::fmt;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use deploy_api::Role;
use deploy_core::Timestamp;

use super::session::ConsoleUser;
use crate::errors::ServerError;

/// The part of the console a page belongs to (its navigation entry is marked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Overview,
    Jobs,
    Releases,
    Promotions,
    Agents,
    Audit,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Self::Overview => "overview",
            Self::Jobs => "jobs",
            Self::Releases => "releases",
            Self::Promotions => "promotions",
            Self::Agents => "agents",
            Self::Audit => "audit",
        }
    }
}

/// The page chrome: navigation, the signed-in user and the sign-out form.
#[derive(Debug, Clone)]
pub(crate) struct Chrome {
    pub name: String,
    pub role: &'static str,
    pub csrf: String,
    pub section: Section,
    /// The user may start, cancel, roll back, approve (deployer and admin).
    pub can_deploy: bool,
    /// The user is an admin (audit log, agent revocation).
    pub is_admin: bool,
}

impl Chrome {
    pub(crate) fn new(user: &ConsoleUser, section: Section) -> Self {
        Self {
            name: user.name.clone(),
            role: match user.role {
                Role::Viewer => "viewer",
                Role::Deployer => "deployer",
                Role::Admin => "admin",
            },
            csrf: user.csrf.clone(),
            section,
            can_deploy: user.role.allows(Role::Deployer),
            is_admin: user.role.allows(Role::Admin),
        }
    }

    /// `aria-current` for the navigation entry named `section` (`jobs`).
    pub(crate) fn current(&self, section: &str) -> &'static str {
        if self.section.name() == section {
            "page"
        } else {
            "false"
        }
    }
}

/// Renders `template` as an HTML answer.
pub(crate) fn render(template: &impl Template) -> Result<Html<String>, PageError> {
    template
        .render()
        .map(Html)
        .map_err(|e| PageError::internal(format!("cannot render a page: {e}")))
}

/// A refused or failed page: an HTML error page with the status and the API's words.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    detail: String,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }

    pub(crate) fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub(crate) fn internal(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        tracing::error!(error = %detail, "console page failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log",
        )
    }
}

impl From<ServerError> for PageError {
    fn from(e: ServerError) -> Self {
        let problem = e.problem();
        if problem.status >= 500 {
            tracing::error!(error = %e, "console page failed");
        }
        Self::new(
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            problem.detail,
        )
    }
}

impl From<deploy_store::StoreError> for PageError {
    fn from(e: deploy_store::StoreError) -> Self {
        ServerError::from(e).into()
    }
}

impl From<deploy_engine::EngineError> for PageError {
    fn from(e: deploy_engine::EngineError) -> Self {
        ServerError::from(e).into()
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    detail: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("Error"),
            detail: &self.detail,
        };
        match page.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(_) => (self.status, self.detail).into_response(),
        }
    }
}

/// The sign-in page.
#[derive(Template)]
#[template(path = "console/login.html")]
pub(crate) struct LoginPage {
    pub next: String,
    pub error: Option<String>,
}

/// `GET /ui/{*rest}` that matches no page.
pub(crate) async fn not_found() -> PageError {
    PageError::not_found("no such console page")
}

/// A query string parsed into `T`; a bad one is a 400 page with axum's words,
/// which name the parameter and what was expected.
pub(crate) struct UiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S>
    for UiQuery<T>
{
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(query)| Self(query))
            .map_err(|e| PageError::bad_request(e.body_text()))
    }
}

/// A time shown in the viewer's zone (console.js), with UTC in its title and as
/// the text without JavaScript. Renders its own markup: use `{{ t|safe }}`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Time(pub Timestamp);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RFC 3339 holds only digits, '-', ':', '.', 'T' and 'Z': nothing to escape.
        let iso = self.0.to_rfc3339();
        let utc = utc_text(&iso);
        write!(f, r#"<time datetime="{iso}" title="{utc}">{utc}</time>"#)
    }
}

/// `2026-12-06T09:44:56.123Z` as `2026-12-06 09:44:56 UTC`.
fn utc_text(iso: &str) -> String {
    let seconds = iso.split('.').next().unwrap_or(iso).trim_end_matches('Z');
    format!("{} UTC", seconds.replace('T', " "))
}

/// An optional time, or a dash.
pub(crate) fn time_or_dash(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "—".to_owned(), |t| Time(t).to_string())
}

/// A digest shortened for tables (`sha256:0123456789ab`); the full value goes in a title.
pub(crate) fn short_digest(digest: &str) -> String {
    let (algo, hex) = digest.split_once(':').unwrap_or(("", digest));
    let hex: String = hex.chars().take(12).collect();
    if algo.is_empty() {
        hex
    } else {
        format!("{algo}:{hex}")
    }
}

/// A duration as `1.2 s`, `3 min 4 s`, `2 h 5 min`.
pub(crate) fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{} h {} min", secs / 3600, (secs % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_shows_utc_and_carries_its_instant() {
        let t = Timestamp::parse("2026-12-06T09:44:56.123Z").unwrap();
        let html = Time(t).to_string();
        assert!(
            html.contains(r#"datetime="2026-12-06T09:44:56.123Z""#),
            "{html}"
        );
        assert!(html.contains(">2026-12-06 09:44:56 UTC</time>"), "{html}");
    }

    #[test]
    fn digests_and_durations_are_short() {
        assert_eq!(
            short_digest(&format!("sha256:{}", "a".repeat(64))),
            "sha256:aaaaaaaaaaaa"
        );
        assert_eq!(
            human_duration(std::time::Duration::from_millis(1200)),
            "1.2 s"
        );
        assert_eq!(
            human_duration(std::time::Duration::from_secs(184)),
            "3 min 4 s"
        );
        assert_eq!(
            human_duration(std::time::Duration::from_secs(7500)),
            "2 h 5 min"
        );
    }
}
