//! The job log stream (`GET /api/v1/jobs/{id}/logs/events`): the chunks of every task in one stream, resumed by `Last-Event-ID` after a broken connection with nothing lost or repeated while chunks keep coming, then `end`.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use deploy_api::{JobLogChunkDto, Role};
use deploy_core::TaskId;
use deploy_engine::{Clock, SystemClock};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::Fixture;

/// One SSE event: its name, id and data.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    event: String,
    id: Option<u64>,
    data: String,
}

/// The complete events of an SSE text (keep-alive comments and a cut-off last event left out).
fn parse(text: &str) -> Vec<Sse> {
    let mut out = Vec::new();
    let mut blocks: Vec<&str> = text.split("\n\n").collect();
    // What follows the last blank line is not a whole event yet.
    blocks.pop();
    for block in blocks {
        let mut e = Sse {
            event: String::new(),
            id: None,
            data: String::new(),
        };
        for line in block.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => e.event = value.to_owned(),
                "id" => e.id = Some(value.parse().unwrap()),
                "data" => e.data.push_str(value),
                _ => {}
            }
        }
        if !e.event.is_empty() {
            out.push(e);
        }
    }
    out
}

/// Opens the job's log stream, after `last_id` when given.
async fn open(f: &Fixture, job: &str, last_id: Option<u64>) -> Reader {
    let mut req = Request::builder()
        .uri(format!("/api/v1/jobs/{job}/logs/events"))
        .header("authorization", format!("Bearer {}", f.token(Role::Viewer)));
    if let Some(id) = last_id {
        req = req.header("last-event-id", id.to_string());
    }
    let resp = f
        .app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    Reader {
        body: resp.into_body().into_data_stream(),
        text: String::new(),
    }
}

/// One connection's body and the text it has sent so far.
struct Reader {
    body: axum::body::BodyDataStream,
    text: String,
}

impl Reader {
    /// Reads until `done` holds for the events received on this connection; those events.
    async fn until(&mut self, done: impl Fn(&[Sse]) -> bool) -> Vec<Sse> {
        let read = async {
            loop {
                let events = parse(&self.text);
                if done(&events) {
                    return events;
                }
                let chunk = self.body.next().await.expect("the stream goes on").unwrap();
                self.text.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        };
        match tokio::time::timeout(Duration::from_secs(30), read).await {
            Ok(events) => events,
            Err(_) => panic!("the stream stalled; so far: {}", self.text),
        }
    }
}

fn chunk(e: &Sse) -> JobLogChunkDto {
    serde_json::from_str(&e.data).unwrap()
}

#[tokio::test]
async fn a_job_log_stream_resumes_by_last_event_id_without_loss_or_repeat() {
    let f = Fixture::new().await;
    let w = f.world("job-logs").await;
    for name in ["host-2", "host-3"] {
        f.add_target(&w.env_id, name).await;
    }
    // Nobody runs the job (no `serve`): the logs are written here, and the stream stays
    // open until the job is cancelled.
    let approved = f
        .ok(
            "POST",
            &format!("/api/v1/promotions/{}/approve", w.promotion_id),
            Role::Deployer,
            Some(json!({})),
        )
        .await;
    let job = approved["job"]["id"].as_str().unwrap().to_owned();
    let tasks: Vec<TaskId> = approved["job"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| TaskId::parse(t["id"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(tasks.len(), 3);
    let store = f.engine.store().clone();
    let mut written: Vec<(TaskId, String)> = Vec::new();
    let mut round = 0;
    let mut write_round = async |written: &mut Vec<(TaskId, String)>| {
        for (i, task) in tasks.iter().enumerate() {
            let line = format!("task {i} round {round}\n");
            store
                .append_log(*task, SystemClock.now(), &line)
                .await
                .unwrap();
            written.push((*task, line));
        }
        round += 1;
    };
    write_round(&mut written).await;
    write_round(&mut written).await;

    // The first connection breaks after four chunks (whatever else was on the wire is lost).
    let mut first = open(&f, &job, None).await;
    let mut got = first.until(|e| e.len() >= 4).await;
    got.truncate(4);
    drop(first);
    // Written while nobody follows.
    write_round(&mut written).await;

    // Resumed after the last chunk received: the rest, then what is written meanwhile, then `end`.
    let last = got.last().unwrap().id.unwrap();
    let mut second = open(&f, &job, Some(last)).await;
    let seen = second.until(|e| e.len() >= 5).await;
    assert_eq!(seen[0].id, Some(last + 1), "{seen:?}");
    write_round(&mut written).await;
    f.ok(
        "POST",
        &format!("/api/v1/jobs/{job}/cancel"),
        Role::Deployer,
        None,
    )
    .await;
    let rest = second.until(|e| e.iter().any(|e| e.event == "end")).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), second.body.next())
            .await
            .expect("the stream closes after `end`")
            .is_none()
    );
    let (end, logs) = rest.split_last().unwrap();
    assert_eq!(end.event, "end");
    let end: Value = serde_json::from_str(&end.data).unwrap();
    assert_eq!(end, json!({"job_id": job, "status": "failed"}));
    got.extend(logs.iter().cloned());

    assert!(got.iter().all(|e| e.event == "log"), "{got:?}");
    assert_eq!(
        got.iter().map(|e| e.id.unwrap()).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<u64>>(),
        "every position once, in order"
    );
    assert_eq!(
        got.iter()
            .map(|e| {
                let c = chunk(e);
                (c.task_id, c.content)
            })
            .collect::<Vec<_>>(),
        written,
        "every task's chunks, in the order they were written"
    );
    let third_task: Vec<u64> = got
        .iter()
        .map(chunk)
        .filter(|c| c.task_id == tasks[2])
        .map(|c| c.seq)
        .collect();
    assert_eq!(third_task, [1, 2, 3, 4], "each chunk keeps its task's seq");

    // A finished job's stream replays from `?after=` (the header wins) and ends.
    let (status, _, bytes) = f
        .raw(
            "GET",
            &format!("/api/v1/jobs/{job}/logs/events?after=10"),
            Some(f.token(Role::Viewer)),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    let replay = parse(&String::from_utf8(bytes).unwrap());
    assert_eq!(
        replay
            .iter()
            .map(|e| (e.event.as_str(), e.id))
            .collect::<Vec<_>>(),
        [("log", Some(11)), ("log", Some(12)), ("end", None)]
    );
    let (_, _, bytes) = f
        .raw(
            "GET",
            &format!("/api/v1/jobs/{job}/logs/events?after=1"),
            Some(f.token(Role::Viewer)),
            None,
            &[("last-event-id", "11")],
        )
        .await;
    let ids: Vec<_> = parse(&String::from_utf8(bytes).unwrap())
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [Some(12), None]);

    // A bad Last-Event-ID and an unknown job are problems, not streams.
    let (status, _, _) = f
        .raw(
            "GET",
            &format!("/api/v1/jobs/{job}/logs/events"),
            Some(f.token(Role::Viewer)),
            None,
            &[("last-event-id", "x")],
        )
        .await;
    assert_eq!(status, 400);
    let (status, _, _) = f
        .raw(
            "GET",
            "/api/v1/jobs/019a0000-0000-7000-8000-000000000000/logs/events",
            Some(f.token(Role::Viewer)),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 404);
}
