//! The one shape of the API's Server-Sent Event streams (job events, a task's log, a job's log): entries after a position, then live, then `end`.
//!
//! The store is the source of truth: a stream reads its source's entries after the
//! last position it sent, queues them, and when nothing is new asks the source
//! whether the stream is over ([`Follow::idle`], which waits a tick or a wake-up from
//! the engine's broadcast when it is not). Every SSE `id` is a position, so a client
//! that reconnects with `Last-Event-ID` ([`start`]) misses nothing and sees
//! nothing twice. The stream ends with an `end` event once its subject is settled, or
//! without one when a read fails or the server shuts down
//! (`ServerState::shutdown_token`): the client reconnects. Idle connections get
//! axum's default keep-alive comments.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use deploy_api::{Role, SSE_EVENT_END};
use deploy_engine::EngineEvent;
use deploy_store::{Store, StoreError};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::IntoParams;

use crate::auth::authorize;
use crate::errors::ServerError;
use crate::params;
use crate::state::ServerState;

/// Entries read from the store per query.
pub(crate) const PAGE: u32 = 500;

/// The query of a stream request.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ResumeQuery {
    /// Same as the `Last-Event-ID` header (which wins): send what comes after this
    /// position (the `id` of the last event received).
    after: Option<u64>,
}

/// The header of a reconnect, as documented (the handlers read it from the headers).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(
    dead_code,
    reason = "documents the header for the OpenAPI document only"
)]
pub(crate) struct ResumeHeader {
    /// Resume after this position: the `id` of the last event received (wins over `after`).
    #[param(rename = "Last-Event-ID")]
    last_event_id: Option<u64>,
}

/// The start of a stream request: the caller may read (viewer), the path names a
/// `what` (`id`, parsed by `parse`), and the position the stream resumes after: the
/// `Last-Event-ID` header's (a reconnect) or else the `after` query parameter's (0:
/// from the start). A header that is not a number is a 400 saying what it should be
/// (`position`).
pub(crate) async fn start<T, E: std::fmt::Display>(
    state: &ServerState,
    headers: &HeaderMap,
    query: Result<Query<ResumeQuery>, QueryRejection>,
    what: &str,
    id: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
    position: &str,
) -> Result<(T, u64), ServerError> {
    authorize(state, headers, Role::Viewer).await?;
    let after = params::query(query)?.after;
    let id = params::parse_id(what, id, parse)?;
    Ok((id, resume_position(headers, after, position)?))
}

/// Where a stream resumes: after the `Last-Event-ID` header's position (a reconnect,
/// which wins) or else after `after` (0: from the start). A header that is not a
/// number is a 400 saying what it should be (`position`). The web console's streams
/// resume the same way.
pub(crate) fn resume_position(
    headers: &HeaderMap,
    after: Option<u64>,
    position: &str,
) -> Result<u64, ServerError> {
    match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ServerError::bad_request(
                    format!("Last-Event-ID is not {position}"),
                    Some("Last-Event-ID"),
                )
            }),
        None => Ok(after.unwrap_or(0)),
    }
}

/// What one stream follows: its entries, and when it is over.
pub(crate) trait Follow: Send + 'static {
    /// An entry as read from the store.
    type Item: Send;
    /// An entry as sent (the event's JSON data).
    type Dto: Serialize;
    /// The SSE event name of an entry.
    const EVENT: &'static str;

    /// What the stream follows, for the log (`the log of job <id>`).
    fn subject(&self) -> String;

    /// Up to [`PAGE`] entries after position `after`, oldest first.
    fn read(
        &mut self,
        store: &dyn Store,
        after: u64,
    ) -> impl Future<Output = Result<Vec<Self::Item>, StoreError>> + Send;

    /// An entry's position (its SSE `id`, where a reconnect resumes) and its data.
    fn entry(&mut self, item: Self::Item) -> (u64, Self::Dto);

    /// A read found nothing new: the `end` event's data when the stream is over, else
    /// `None` once it is time to read again (after a tick or a wake-up, or at once).
    fn idle(
        &mut self,
        store: &dyn Store,
    ) -> impl Future<Output = Result<Option<serde_json::Value>, StoreError>> + Send;
}

/// A stream's own state: its source, the last position sent and what is queued.
struct Cursor<F> {
    state: ServerState,
    source: F,
    after: u64,
    queue: VecDeque<Event>,
    done: bool,
}

/// The SSE response that follows `source` from position `after`.
pub(crate) fn follow<F: Follow>(state: ServerState, after: u64, source: F) -> Response {
    let cursor = Cursor {
        state,
        source,
        after,
        queue: VecDeque::new(),
        done: false,
    };
    let stream = stream::unfold(cursor, |mut c| async move {
        let shutdown = c.state.shutdown_token();
        loop {
            // On shutdown the stream ends without `end`: the follower reconnects
            // with `Last-Event-ID` to the next server.
            if shutdown.is_cancelled() {
                return None;
            }
            if let Some(event) = c.queue.pop_front() {
                return Some((Ok::<_, Infallible>(event), c));
            }
            if c.done {
                return None;
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = c.fill() => {}
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

impl<F: Follow> Cursor<F> {
    /// Queues the next entries, the `end` event, or waits for the source to change.
    async fn fill(&mut self) {
        let store = self.state.store().as_ref();
        let read = match self.source.read(store, self.after).await {
            Ok(items) if !items.is_empty() => {
                for item in items {
                    let (position, dto) = self.source.entry(item);
                    self.after = position;
                    self.queue.push_back(
                        Event::default()
                            .event(F::EVENT)
                            .id(position.to_string())
                            .data(serde_json::to_string(&dto).unwrap_or_default()),
                    );
                }
                return;
            }
            Ok(_) => self.source.idle(store).await,
            Err(e) => Err(e),
        };
        match read {
            Ok(None) => {}
            Ok(Some(end)) => {
                self.queue
                    .push_back(Event::default().event(SSE_EVENT_END).data(end.to_string()));
                self.done = true;
            }
            Err(e) => {
                tracing::warn!(subject = %self.source.subject(), error = %e, "cannot read what an event stream follows; ending the stream");
                self.done = true;
            }
        }
    }
}

/// Waits `tick`, or less when the engine broadcasts an event `wakes` accepts (`None`:
/// this receiver lagged and events were missed). Without a broadcast any more, the
/// tick.
pub(crate) async fn tick_or_wake(
    events: &mut broadcast::Receiver<EngineEvent>,
    tick: Duration,
    wakes: impl Fn(Option<&EngineEvent>) -> bool,
) {
    let deadline = tokio::time::sleep(tick);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return,
            received = events.recv() => match received {
                Ok(e) if wakes(Some(&e)) => return,
                Err(broadcast::error::RecvError::Lagged(_)) if wakes(None) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    (&mut deadline).await;
                    return;
                }
            },
        }
    }
}
