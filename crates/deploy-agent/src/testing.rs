//! Test helpers of the crate's unit tests: a minimal HTTP/1.1 server on loopback whose answers a closure decides, down to cutting the connection without one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use deploy_testkit::{http_response, read_request};
use tokio::io::AsyncWriteExt;

/// One request the fake server received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) path: String,
    /// The bearer of its `Authorization` header (empty without one).
    pub(crate) bearer: String,
    pub(crate) body: String,
    /// For a poll: how many polls came before it (0 for other requests).
    pub(crate) nth_poll: usize,
}

/// Every request the fake server received, in order.
pub(crate) type Log = Arc<Mutex<Vec<Seen>>>;

/// What the fake server does with one request: answer with a status and a JSON body,
/// or close the connection without answering (a response lost on the way).
pub(crate) enum Reply {
    Answer(u16, String),
    Cut,
}

/// A server on a free loopback port (one request per connection); its base URL and
/// the log of what it received.
pub(crate) async fn fake_server_with(
    reply: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
) -> (String, Log) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let reply = Arc::new(reply);
    let polls = Arc::new(AtomicUsize::new(0));
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (reply, seen, polls) = (reply.clone(), seen.clone(), polls.clone());
            tokio::spawn(async move {
                let Ok(Some(raw)) = read_request(&mut sock, &mut Vec::new()).await else {
                    return;
                };
                let (path, bearer, body) = (raw.path.clone(), raw.bearer().to_owned(), raw.text());
                let nth_poll = if path.ends_with("/poll") {
                    polls.fetch_add(1, Ordering::SeqCst)
                } else {
                    0
                };
                let request = Seen {
                    path,
                    bearer,
                    body,
                    nth_poll,
                };
                seen.lock().unwrap().push(request.clone());
                match reply(&request) {
                    Reply::Answer(status, text) => {
                        let answer = http_response(status, "application/json", &text);
                        let _ = sock.write_all(answer.as_bytes()).await;
                    }
                    Reply::Cut => drop(sock),
                }
            });
        }
    });
    (url, log)
}

/// [`fake_server_with`] answering every request: `answer(path, n-th poll)` gives its
/// status and body.
pub(crate) async fn fake_server(
    answer: impl Fn(&str, usize) -> (u16, String) + Send + Sync + 'static,
) -> (String, Log) {
    fake_server_with(move |r| {
        let (status, body) = answer(&r.path, r.nth_poll);
        Reply::Answer(status, body)
    })
    .await
}
