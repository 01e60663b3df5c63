//! The HTTP client: JSON calls mapped to exit codes, and the SSE reader (with its idle and overall timeouts).

use std::time::Duration;

use deploy_api::{Problem, SSE_EVENT_END};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::exit::{CliError, TIMED_OUT, UNREACHABLE, USAGE};

/// A followed stream silent this long is taken for broken and resumed. The
/// server sends a keep-alive comment every 15 s, so this is four lost in a row:
/// a connection dropped without a reset (a NAT or proxy forgot it), not a quiet job.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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

/// `--timeout`: `90` (seconds), `30s`, `5m` or `1h`; whole units, more than zero.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let expected = "expected a number of seconds (`90`) or a number with a unit: `30s`, `5m`, `1h`";
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("`{text}` is not a duration; {expected}")),
    };
    let count: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; {expected}"))?;
    if count == 0 {
        // Zero would give up before the first event: never what a user means.
        return Err(format!("`{text}` is zero; {expected}, more than zero"));
    }
    let seconds = count
        .checked_mul(seconds_per_unit)
        .ok_or_else(|| format!("`{text}` is too long; {expected}"))?;
    Ok(Duration::from_secs(seconds))
}

/// `d` in the largest whole unit `parse_timeout` reads (`300s` shows as `5m`).
fn show_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `text` as one URL path segment: names and ids pass as they are (`[a-z0-9_.-]`,
/// UUIDs); anything else a user typed is percent-encoded, so it cannot change the path.
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// How long `follow` waits in all for a stream's end (`--timeout`); `None`: until it ends.
    follow_timeout: Option<Duration>,
    /// Silence after which a followed connection counts as broken (a field so tests can shorten it).
    idle_timeout: Duration,
}

/// One server-sent event.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// Server-sent events out of a byte stream fed as it arrives. Bytes wait here
/// until their line is complete and each line is decoded whole, so a character
/// split across two network chunks stays one character.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// The bytes after the last `\n`: the start of a line not complete yet.
    partial: Vec<u8>,
    /// The fields read since the last blank line.
    current: SseEvent,
}

impl SseDecoder {
    /// Takes the next bytes of the stream; returns the events they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let Self { partial, current } = self;
        partial.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(len) = partial[start..].iter().position(|&b| b == b'\n') {
            let line = &partial[start..start + len];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            // Lossy only for a line that is not UTF-8 as a whole: that is the server's
            // doing, and one bad line should not end the stream.
            if let Some(event) = Self::line(current, &String::from_utf8_lossy(line)) {
                events.push(event);
            }
            start += len + 1;
        }
        partial.drain(..start);
        events
    }

    /// Applies one line (without its line ending) to `current`; a blank line
    /// ends the event, which is returned unless it is empty.
    fn line(current: &mut SseEvent, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if current.event.is_empty() && current.data.is_empty() {
                return None;
            }
            return Some(std::mem::take(current));
        }
        if line.starts_with(':') {
            // A comment: the server's keep-alive.
            return None;
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
            // `retry` and unknown fields: the reconnect delay is ours to choose.
            _ => {}
        }
        None
    }
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
            follow_timeout: None,
            idle_timeout: IDLE_TIMEOUT,
        })
    }

    /// Bounds every `follow` of this client (`--timeout`): once `timeout` has
    /// passed without the stream's end, `follow` fails with exit 5 ([`TIMED_OUT`]).
    #[must_use]
    pub fn with_follow_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.follow_timeout = timeout;
        self
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
        Err(CliError {
            status: Some(status.as_u16()),
            ..CliError::new(code, message)
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        decode(resp).await
    }

    /// `get`, with a 404 as `None` (for "create or update" decisions).
    pub async fn get_optional<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, CliError> {
        match self.get(path).await {
            Err(e) if e.status == Some(404) => Ok(None),
            other => other.map(Some),
        }
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let resp = self
            .send(self.request(Method::PUT, path).json(body))
            .await?;
        decode(resp).await
    }

    /// A DELETE; its answer has no body.
    pub async fn delete(&self, path: &str) -> Result<(), CliError> {
        self.send(self.request(Method::DELETE, path)).await?;
        Ok(())
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
    /// event. A broken or closed connection, one silent for a minute, or a 503 (the
    /// server's database is restarting), is resumed with `Last-Event-ID` (so no event
    /// is missed or repeated), up to `RECONNECTS` times, a second apart. With a
    /// follow timeout, gives up once it has passed (exit 5): the job goes on.
    pub async fn follow(
        &self,
        path: &str,
        on_event: impl FnMut(SseEvent) -> Result<(), CliError>,
    ) -> Result<(), CliError> {
        let Some(limit) = self.follow_timeout else {
            return self.follow_to_end(path, on_event).await;
        };
        match tokio::time::timeout(limit, self.follow_to_end(path, on_event)).await {
            Ok(followed) => followed,
            // Only the waiting stops: the server runs the job whether or not anyone follows it.
            Err(_) => Err(CliError::new(
                TIMED_OUT,
                format!(
                    "stopped waiting after {} (--timeout); the job goes on on the server \
                     (`deployctl jobs watch <JOB_ID>` follows it again)",
                    show_duration(limit)
                ),
            )),
        }
    }

    async fn follow_to_end(
        &self,
        path: &str,
        mut on_event: impl FnMut(SseEvent) -> Result<(), CliError>,
    ) -> Result<(), CliError> {
        const RECONNECTS: u32 = 30;
        let mut last_id: Option<String> = None;
        let mut failure = None;
        for attempt in 0..=RECONNECTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match self.follow_once(path, &mut last_id, &mut on_event).await {
                Ok(true) => return Ok(()),
                Ok(false) => failure = None,
                // A broken connection (deployd restarting), a silent one, or a 503 (its
                // database restarting): wait and reconnect, from the last event seen.
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
        let silent = || {
            CliError::transport(format!(
                "the event stream was silent for {} (the server sends a keep-alive every 15s)",
                show_duration(self.idle_timeout)
            ))
        };
        // Headers count too: a server that accepted the connection and never answers is as broken.
        let mut resp = tokio::time::timeout(self.idle_timeout, self.send(req))
            .await
            .map_err(|_| silent())??;
        let mut decoder = SseDecoder::default();
        loop {
            let chunk = tokio::time::timeout(self.idle_timeout, resp.chunk())
                .await
                .map_err(|_| silent())?
                .map_err(|e| {
                    CliError::transport(format!("the event stream broke: {}", error_chain(&e)))
                })?;
            let Some(chunk) = chunk else {
                return Ok(false);
            };
            for event in decoder.feed(&chunk) {
                if event.id.is_some() {
                    last_id.clone_from(&event.id);
                }
                let end = event.event == SSE_EVENT_END;
                on_event(event)?;
                if end {
                    return Ok(true);
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn event(id: Option<&str>, event: &str, data: &str) -> SseEvent {
        SseEvent {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    /// Feeds `parts` one after the other and checks the events they give, and
    /// that byte-by-byte feeding gives the same (where the chunks split must not matter).
    fn check(parts: &[&[u8]], expected: &[SseEvent]) {
        let mut decoder = SseDecoder::default();
        let events: Vec<SseEvent> = parts.iter().flat_map(|p| decoder.feed(p)).collect();
        assert_eq!(events, expected, "fed as {parts:?}");
        let mut decoder = SseDecoder::default();
        let bytes: Vec<SseEvent> = parts
            .concat()
            .iter()
            .flat_map(|b| decoder.feed(std::slice::from_ref(b)))
            .collect();
        assert_eq!(bytes, expected, "fed byte by byte");
    }

    #[test]
    fn a_character_split_across_two_feeds_arrives_whole() {
        let text = "data: launch 🚀 now\n\n".as_bytes();
        // Inside the rocket's four bytes.
        let split = text.iter().position(|&b| b == 0xF0).unwrap() + 2;
        check(
            &[&text[..split], &text[split..]],
            &[event(None, "", "launch 🚀 now")],
        );
    }

    #[test]
    fn crlf_lines_end_fields_and_events() {
        check(
            &[b"id: 7\r\nevent: transition\r\ndata: {\"a\":1}\r\n\r\n"],
            &[event(Some("7"), "transition", "{\"a\":1}")],
        );
    }

    #[test]
    fn data_lines_join_with_newlines() {
        check(
            &[b"event: log\ndata: one\ndata:two\ndata: \ndata: four\n\n"],
            &[event(None, "log", "one\ntwo\n\nfour")],
        );
    }

    #[test]
    fn comments_are_keep_alives_and_ignored() {
        check(&[b": keep-alive\n\n:\n\n"], &[]);
        check(
            &[b"id: 1\n: keep-alive\ndata: x\n\n: keep-alive\n\nid: 2\nevent: end\ndata: {}\n\n"],
            &[event(Some("1"), "", "x"), event(Some("2"), "end", "{}")],
        );
    }

    #[test]
    fn an_incomplete_event_waits_for_its_blank_line() {
        let mut decoder = SseDecoder::default();
        assert_eq!(decoder.feed(b"event: end\ndata: {}\n"), []);
        assert_eq!(decoder.feed(b"\n"), [event(None, "end", "{}")]);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_decoded_lossily() {
        check(&[b"data: a\xFFb\n\n"], &[event(None, "", "a\u{FFFD}b")]);
    }

    #[test]
    fn timeouts_parse_seconds_minutes_and_hours() {
        for (text, seconds) in [("90", 90), ("30s", 30), ("5m", 300), ("1h", 3600)] {
            assert_eq!(
                parse_timeout(text),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
        for text in [
            "",
            "0",
            "0s",
            "s",
            "5x",
            "1.5m",
            "-1",
            " 5",
            "5 m",
            "99999999999999999999h",
        ] {
            let error = parse_timeout(text).unwrap_err();
            assert!(error.contains(&format!("`{text}`")), "{text}: {error}");
            assert!(error.contains("`30s`, `5m`, `1h`"), "{text}: {error}");
        }
        assert_eq!(show_duration(Duration::from_secs(300)), "5m");
        assert_eq!(show_duration(Duration::from_secs(90)), "90s");
        assert_eq!(show_duration(Duration::from_secs(7200)), "2h");
    }

    /// A loopback server that answers each connection with the next of `bodies`
    /// (an SSE response of that text, then silence until the client leaves), and
    /// records each request head.
    async fn sse_server(bodies: Vec<&'static str>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        tokio::spawn(async move {
            for body in bodies {
                let (mut stream, _) = listener.accept().await.unwrap();
                let head = read_head(&mut stream).await;
                seen.lock().unwrap().push(head);
                tokio::spawn(async move {
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                         transfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n",
                        body.len()
                    );
                    stream.write_all(response.as_bytes()).await.unwrap();
                    // Silent, open until the client gives up on it.
                    let _ = stream.read(&mut [0; 1]).await;
                });
            }
        });
        (addr, heads)
    }

    async fn read_head(stream: &mut TcpStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0; 1];
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).to_lowercase()
    }

    #[tokio::test]
    async fn a_silent_stream_is_resumed_from_the_last_event() {
        let (addr, heads) = sse_server(vec![
            "id: 1\nevent: transition\ndata: {}\n\n",
            "id: 2\nevent: end\ndata: {\"status\":\"completed\"}\n\n",
        ])
        .await;
        let mut client = Client::new(&addr, None, None).unwrap();
        client.idle_timeout = Duration::from_millis(200);
        let mut events = Vec::new();
        client
            .follow("/events", |e| {
                events.push(e.event);
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(events, ["transition", "end"]);
        let heads = heads.lock().unwrap();
        assert!(!heads[0].contains("last-event-id"), "{}", heads[0]);
        assert!(heads[1].contains("last-event-id: 1\r\n"), "{}", heads[1]);
    }

    #[tokio::test]
    async fn the_follow_timeout_ends_the_wait_with_exit_5() {
        let (addr, _) = sse_server(vec![": keep-alive\n\n"]).await;
        let client = Client::new(&addr, None, None)
            .unwrap()
            .with_follow_timeout(Some(Duration::from_millis(300)));
        let error = client.follow("/events", |_| Ok(())).await.unwrap_err();
        assert_eq!(error.code, TIMED_OUT);
        assert!(!error.retryable);
        assert!(error.message.contains("the job goes on"), "{error}");
    }
}
