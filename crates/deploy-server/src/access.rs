//! The request middleware (`observe`): gives each request its [`RequestId`] and a span, counts and times its response (`/metrics`), and writes one access log line per request on target `deployd::access`.
//!
//! It is a `Router::layer`, which axum applies to each route after routing, so
//! the matched route template ([`MatchedPath`]) is known: it labels the latency
//! histogram and the log line (a request that matched nothing is `unmatched`).
//! A server-sent event stream logs when it starts, like any response, and once
//! more when it ends, with the stream's duration and bytes.

use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody as _};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt as _;
use tracing::Instrument as _;

use crate::http_metrics::UNMATCHED_ROUTE;
use crate::request_id::{self, RequestId};
use crate::state::ServerState;

/// The tracing target of access log lines (`RUST_LOG=deployd::access=off` silences them).
pub(crate) const TARGET: &str = "deployd::access";

/// Routes called by machines on a timer (health probes, metric scrapes): their
/// successes are logged at debug, not info.
const QUIET_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// What the access log says about one request. The path is logged without its query
/// (a query may carry a secret); the headers (tokens, cookies) never are.
#[derive(Debug, Clone)]
pub(crate) struct AccessLine {
    pub(crate) method: Method,
    /// The matched route template, or `unmatched`.
    pub(crate) route: String,
    pub(crate) path: String,
    pub(crate) status: StatusCode,
    /// Until the response head (until the end, for the end of a stream).
    pub(crate) duration: Duration,
    pub(crate) request_id: RequestId,
    /// The peer address (and `X-Forwarded-For`), when known.
    pub(crate) remote: Option<String>,
    /// The body's length when it is known without reading it (the bytes sent, for the
    /// end of a stream).
    pub(crate) bytes: Option<u64>,
}

impl AccessLine {
    /// Writes the line on [`TARGET`]; `event` says which: `request`, or `stream
    /// started` / `stream ended` for server-sent events. Info level, except the
    /// successful requests of the agent data plane (polls, log chunks, results:
    /// several a second per agent, already in job events and task logs) and of
    /// [`QUIET_ROUTES`] (probes and scrapes), which are debug.
    pub(crate) fn emit(&self, event: &str) {
        let duration_ms = self.duration.as_secs_f64() * 1000.0;
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    target: TARGET,
                    method = %self.method,
                    route = %self.route,
                    path = %self.path,
                    status = self.status.as_u16(),
                    duration_ms = format_args!("{duration_ms:.3}"),
                    request_id = %self.request_id,
                    remote = self.remote.as_deref().unwrap_or("-"),
                    bytes = self.bytes,
                    "{event}"
                )
            };
        }
        let route = self.route.as_str();
        let frequent =
            crate::audit::UNAUDITED_ROUTES.contains(&route) || QUIET_ROUTES.contains(&route);
        if frequent && self.status.is_success() {
            line!(debug);
        } else {
            line!(info);
        }
    }
}

/// The middleware: see the module doc.
pub(crate) async fn observe(
    State(state): State<ServerState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = RequestId::from_headers(request.headers());
    request.extensions_mut().insert(id.clone());
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let path = request.uri().path().to_owned();
    let remote = crate::audit::remote_of(request.extensions(), request.headers());
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let mut response = next.run(request).instrument(span).await;
    let duration = started.elapsed();
    let status = response.status();
    if let Some(value) = id.header_value() {
        response.headers_mut().insert(request_id::HEADER, value);
    }
    let metrics = state.metrics();
    metrics.record_response(status.as_u16());
    metrics
        .http
        .observe(method.as_str(), &route, status.as_u16(), duration);
    let line = AccessLine {
        method,
        route,
        path,
        status,
        duration,
        request_id: id,
        remote,
        bytes: response.body().size_hint().exact(),
    };
    if !is_event_stream(&response) {
        line.emit("request");
        return response;
    }
    line.emit("stream started");
    let (parts, body) = response.into_parts();
    // Moved into the stream, whole (a method call, not a field): dropped with it.
    let mut end = StreamEnd {
        line,
        started,
        bytes: 0,
    };
    let body = Body::from_stream(body.into_data_stream().map(move |chunk| {
        end.count(&chunk);
        chunk
    }));
    Response::from_parts(parts, body)
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Owned by a stream's body: logs the stream's end (its duration and bytes) when the
/// body is dropped, whether it ended or the client went away.
struct StreamEnd {
    line: AccessLine,
    started: Instant,
    bytes: u64,
}

impl StreamEnd {
    fn count<E>(&mut self, chunk: &Result<axum::body::Bytes, E>) {
        if let Ok(bytes) = chunk {
            self.bytes += bytes.len() as u64;
        }
    }
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        self.line.duration = self.started.elapsed();
        self.line.bytes = Some(self.bytes);
        self.line.emit("stream ended");
    }
}
