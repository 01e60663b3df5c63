//! The web console: server-rendered pages under `/ui/` over the same store, engine and roles as the API, signed in with an API token that becomes a session cookie.
//!
//! Pages are askama templates (`templates/console/`), escaped by default, with
//! a little hand-written JavaScript (`assets/console/console.js`) for live
//! updates, local times and confirmations; both assets are compiled into the
//! binary. No inline script or style exists, so the Content-Security-Policy
//! allows only this origin's own files. Every write is a form POST that carries
//! the session's CSRF token, goes through the engine exactly as the API's, and
//! is recorded by the same audit layer. See `docs/console.md`.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::state::ServerState;

mod agents;
mod assets;
mod audit;
mod jobs;
mod overview;
mod page;
mod promotions;
mod releases;
mod session;

pub(crate) use session::session_actor;

/// The policy of every console answer: this origin's own scripts, styles and
/// connections only; no inline code, no framing, forms only to this origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// Adds the console's routes to the API router `api` (before its fallback).
pub(crate) fn with_console(api: Router<ServerState>, state: &ServerState) -> Router<ServerState> {
    let pages = Router::new()
        .route("/ui/login", get(session::login_page).post(session::sign_in))
        .route("/ui/logout", post(session::sign_out))
        .route("/ui/assets/{file}", get(assets::serve))
        .merge(overview::routes())
        .merge(jobs::routes())
        .merge(releases::routes())
        .merge(promotions::routes())
        .merge(agents::routes())
        .merge(audit::routes())
        .route("/ui/{*rest}", get(page::not_found))
        // After routing, so that the audit layer sees the matched route template.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::audit::record,
        ))
        .layer(middleware::from_fn_with_state(
            state.config().secure_cookies,
            security_headers,
        ));
    api.route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .merge(pages)
}

/// Security headers on every console answer; pages are never cached (they show
/// what a signed-in role may see), assets briefly; HSTS when deployd serves HTTPS.
async fn security_headers(State(https): State<bool>, request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/ui/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if https {
        // Served over HTTPS by deployd itself: browsers must not fall back to HTTP.
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response.into_response()
}
