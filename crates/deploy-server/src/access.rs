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
        if is_frequent(&self.route) && self.status.is_success() {
            line!(debug);
        } else {
            line!(info);
        }
    }
}

/// Whether `route` is called by machines several times a second or on a timer: the
/// agent data plane (polls, log chunks, results; already in job events and task logs)
/// and [`QUIET_ROUTES`]. Their successes are logged at debug; they start no trace of
/// their own ([`trace_span`]).
fn is_frequent(route: &str) -> bool {
    crate::audit::UNAUDITED_ROUTES.contains(&route) || QUIET_ROUTES.contains(&route)
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
    // The trace span (with tracing on) goes inside the log span: handlers see it as the
    // current span (a job created here joins its trace), the log output never sees it.
    let traced = trace_span(&state, request.headers(), &method, &route, &id);
    let mut response = next
        .run(request)
        .instrument(traced.clone())
        .instrument(span)
        .await;
    let duration = started.elapsed();
    let status = response.status();
    if !traced.is_disabled() {
        traced.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            traced.record("otel.status_code", "error");
        }
    }
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

/// The request's trace span, when tracing is on (the engine has a trace link):
/// [`Span::none`](tracing::Span::none) otherwise, so with tracing off a request costs
/// nothing more. A request carrying one W3C `traceparent` continues the caller's trace
/// (its sampled flag decides whether this part is recorded too); one without starts a
/// trace, except on the frequent routes (probes, scrapes, agent polls), whose traces
/// would bury the deploys' and fill the export queue.
fn trace_span(
    state: &ServerState,
    headers: &axum::http::HeaderMap,
    method: &Method,
    route: &str,
    id: &RequestId,
) -> tracing::Span {
    let Some(link) = state.engine().trace_link() else {
        return tracing::Span::none();
    };
    let parent = incoming_traceparent(headers);
    if parent.is_none() && is_frequent(route) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: deploy_engine::TRACE_TARGET,
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        request_id = %id,
    );
    if let Some(parent) = parent {
        link.adopt(&span, &parent);
    }
    span
}

/// The caller's trace context: the request's one `traceparent` header, when it reads
/// as one. None when it does not, or when there are several (the W3C specification
/// makes that invalid): the request then starts a trace of its own. `tracestate` is
/// not carried over (deployd adds no vendor entry and needs none).
pub(crate) fn incoming_traceparent(
    headers: &axum::http::HeaderMap,
) -> Option<deploy_engine::Traceparent> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?;
    if values.next().is_some() {
        tracing::debug!("incoming traceparent ignored: more than one header");
        return None;
    }
    match value.to_str().map(deploy_engine::Traceparent::parse) {
        Ok(Ok(parent)) => Some(parent),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "incoming traceparent ignored");
            None
        }
        Err(_) => {
            tracing::debug!("incoming traceparent ignored: not visible ASCII");
            None
        }
    }
}

/// The W3C Trace Context header.
const TRACEPARENT: header::HeaderName = header::HeaderName::from_static("traceparent");

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

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(TRACEPARENT, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    #[test]
    fn exactly_one_readable_traceparent_is_taken() {
        let one = incoming_traceparent(&headers(&[GOOD.as_bytes()])).unwrap();
        assert_eq!(one.to_string(), GOOD);
        for (why, given) in [
            ("none", headers(&[])),
            (
                "two, even equal",
                headers(&[GOOD.as_bytes(), GOOD.as_bytes()]),
            ),
            ("unreadable", headers(&[b"00-nothex"])),
            ("not visible ASCII", headers(&[b"00-\xff"])),
        ] {
            assert_eq!(incoming_traceparent(&given), None, "{why}");
        }
    }
}
