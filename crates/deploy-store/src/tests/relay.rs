//! The agent relay on both backends: deliveries written once and ended once, relayed log lines idempotent by sequence, shared liveness, pruning, and announcements reaching a second handle.

use std::time::Duration;

use deploy_core::sha256_of;
use deploy_core::testing::*;

use super::harness::{TestStore, both_backends};
use crate::{AgentPoll, AgentRecord, DeliveryEnd, DeliveryRecord, DeliveryState, RelayLine};

both_backends!(
    a_delivery_is_written_once_and_ended_once,
    a_burst_larger_than_one_statement_is_written_and_ended_whole,
    relayed_lines_are_idempotent_and_take_a_chunk_past_a_gap,
    polls_are_shared_and_never_go_back,
    finished_deliveries_are_pruned_with_their_lines,
);

fn delivery(task: u64, attempt: u32, agent: u64, at: u64) -> DeliveryRecord {
    DeliveryRecord {
        task_id: task_id(task),
        attempt,
        agent_id: agent_id(agent),
        payload: format!("{{\"task\":{task}}}"),
        state: DeliveryState::Queued,
        result: None,
        log_seq: 0,
        created_at: ts(at),
        finished_at: None,
    }
}

fn end(task: u64, agent: Option<u64>, state: DeliveryState, at: u64) -> DeliveryEnd {
    DeliveryEnd {
        task_id: task_id(task),
        attempt: 1,
        agent_id: agent.map(agent_id),
        state,
        result: (state == DeliveryState::Done).then(|| "{\"ok\":true}".to_owned()),
        at: ts(at),
    }
}

fn lines(first: u64, texts: &[&str]) -> Vec<RelayLine> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| RelayLine {
            seq: first + i as u64,
            stream: "stdout".to_owned(),
            text: (*t).to_owned(),
        })
        .collect()
}

async fn a_delivery_is_written_once_and_ended_once(t: TestStore) {
    let s = &*t.store;
    s.put_deliveries(&[
        delivery(1, 1, 1, 1),
        delivery(2, 1, 1, 2),
        delivery(3, 1, 2, 3),
    ])
    .await
    .unwrap();
    // A key written again (a resumed attempt) keeps its row.
    let mut again = delivery(1, 1, 9, 4);
    again.payload = "{}".to_owned();
    s.put_deliveries(&[again]).await.unwrap();
    let first = s.get_delivery(task_id(1), 1).await.unwrap().unwrap();
    assert_eq!(first, delivery(1, 1, 1, 1));
    assert_eq!(s.get_delivery(task_id(1), 2).await.unwrap(), None);

    let queued: Vec<_> = s.queued_deliveries(agent_id(1)).await.unwrap();
    assert_eq!(
        queued.iter().map(|d| d.task_id).collect::<Vec<_>>(),
        [task_id(1), task_id(2)]
    );

    // Another agent cannot end it; its own can, once.
    let ended = s
        .finish_deliveries(&[
            end(1, Some(2), DeliveryState::Done, 5),
            end(2, Some(1), DeliveryState::Cancelled, 5),
        ])
        .await
        .unwrap();
    assert_eq!(ended, [false, true]);
    let ended = s
        .finish_deliveries(&[
            end(1, Some(1), DeliveryState::Done, 6),
            end(1, None, DeliveryState::Lost, 7),
        ])
        .await
        .unwrap();
    assert_eq!(ended, [true, false]);
    let done = s.get_delivery(task_id(1), 1).await.unwrap().unwrap();
    assert_eq!(done.state, DeliveryState::Done);
    assert_eq!(done.result.as_deref(), Some("{\"ok\":true}"));
    assert_eq!(done.finished_at, Some(ts(6)));
    assert!(s.queued_deliveries(agent_id(1)).await.unwrap().is_empty());
}

async fn a_burst_larger_than_one_statement_is_written_and_ended_whole(t: TestStore) {
    let s = &*t.store;
    let burst: Vec<DeliveryRecord> = (1..=450).map(|n| delivery(n, 1, n % 3, 1)).collect();
    s.put_deliveries(&burst).await.unwrap();
    let queued: usize = queued_of(s, 3).await;
    assert_eq!(queued, 450);
    let ends: Vec<DeliveryEnd> = (1..=450)
        .map(|n| end(n, Some(n % 3), DeliveryState::Done, 2))
        .collect();
    let ended = s.finish_deliveries(&ends).await.unwrap();
    assert_eq!(ended.len(), 450);
    assert!(ended.iter().all(|e| *e), "every end applied once");
    assert_eq!(queued_of(s, 3).await, 0);
}

/// Queued deliveries of agents 0..agents.
async fn queued_of(s: &dyn crate::Store, agents: u64) -> usize {
    let mut n = 0;
    for a in 0..agents {
        n += s.queued_deliveries(agent_id(a)).await.unwrap().len();
    }
    n
}

async fn relayed_lines_are_idempotent_and_take_a_chunk_past_a_gap(t: TestStore) {
    let s = &*t.store;
    s.put_deliveries(&[delivery(1, 1, 1, 1)]).await.unwrap();
    let k = task_id(1);
    assert_eq!(
        s.append_relay_lines(k, 1, agent_id(1), 0, &lines(0, &["a", "b"]))
            .await
            .unwrap(),
        Some(2)
    );
    // Re-sent, or overlapping: only the new lines are kept.
    assert_eq!(
        s.append_relay_lines(k, 1, agent_id(1), 0, &lines(0, &["a", "b"]))
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        s.append_relay_lines(k, 1, agent_id(1), 1, &lines(1, &["b", "c"]))
            .await
            .unwrap(),
        Some(3)
    );
    // Past a gap (the lines before went to another replica): taken as they are.
    assert_eq!(
        s.append_relay_lines(k, 1, agent_id(1), 7, &lines(7, &["h"]))
            .await
            .unwrap(),
        Some(8)
    );
    // Not this agent's key, or no such key.
    assert_eq!(
        s.append_relay_lines(k, 1, agent_id(2), 8, &lines(8, &["x"]))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.append_relay_lines(task_id(9), 1, agent_id(1), 0, &lines(0, &["x"]))
            .await
            .unwrap(),
        None
    );
    let read: Vec<(u64, String)> = s
        .relay_lines(k, 1, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.seq, l.text))
        .collect();
    assert_eq!(
        read,
        [
            (0, "a".into()),
            (1, "b".into()),
            (2, "c".into()),
            (7, "h".into())
        ]
    );
    assert_eq!(s.relay_lines(k, 1, 3).await.unwrap().len(), 1);
    // An ended key acknowledges lines and keeps none.
    s.finish_deliveries(&[end(1, Some(1), DeliveryState::Done, 2)])
        .await
        .unwrap();
    assert_eq!(
        s.append_relay_lines(k, 1, agent_id(1), 8, &lines(8, &["late"]))
            .await
            .unwrap(),
        Some(9)
    );
    assert_eq!(s.relay_lines(k, 1, 8).await.unwrap(), []);
}

fn agent(n: u64) -> AgentRecord {
    AgentRecord {
        id: agent_id(n),
        name: format!("agent-{n}"),
        labels: deploy_core::Labels::default(),
        capabilities: vec!["docker".into()],
        agent_version: String::new(),
        credential_hash: Some(sha256_of(format!("cred-{n}").as_bytes())),
        last_seen_at: None,
        created_at: ts(n),
        revoked_at: None,
        bootstrap_token_id: None,
        labels_version: 1,
    }
}

async fn polls_are_shared_and_never_go_back(t: TestStore) {
    let s = &*t.store;
    for n in 1..=3 {
        s.put_agent(&agent(n)).await.unwrap();
    }
    let poll = |n, at, draining| AgentPoll {
        agent_id: agent_id(n),
        at: ts(at),
        draining,
    };
    s.record_agent_polls(&[poll(1, 10, false), poll(2, 10, true)])
        .await
        .unwrap();
    // An older mark (from a slower replica) does not move a poll back.
    s.record_agent_polls(&[poll(1, 5, true)]).await.unwrap();
    s.revoke_agent(agent_id(2), ts(11)).await.unwrap();
    let mut polls = s.agent_polls().await.unwrap();
    polls.sort_by_key(|p| p.agent_id);
    assert_eq!(
        polls,
        [poll(1, 10, false)],
        "agent 3 never polled; agent 2 is revoked"
    );
}

async fn finished_deliveries_are_pruned_with_their_lines(t: TestStore) {
    let s = &*t.store;
    s.put_deliveries(&[
        delivery(1, 1, 1, 1),
        delivery(2, 1, 1, 1),
        delivery(3, 1, 1, 1),
    ])
    .await
    .unwrap();
    s.append_relay_lines(task_id(1), 1, agent_id(1), 0, &lines(0, &["a"]))
        .await
        .unwrap();
    s.finish_deliveries(&[
        end(1, None, DeliveryState::Done, 10),
        end(2, None, DeliveryState::Lost, 30),
    ])
    .await
    .unwrap();
    assert_eq!(s.prune_deliveries(ts(20), ts(0)).await.unwrap(), 1);
    assert_eq!(s.get_delivery(task_id(1), 1).await.unwrap(), None);
    assert_eq!(s.relay_lines(task_id(1), 1, 0).await.unwrap(), []);
    assert!(
        s.get_delivery(task_id(2), 1).await.unwrap().is_some(),
        "ended later"
    );
    assert!(
        s.get_delivery(task_id(3), 1).await.unwrap().is_some(),
        "still queued"
    );
    // Queued and written before the expiry: abandoned.
    assert_eq!(s.prune_deliveries(ts(20), ts(2)).await.unwrap(), 1);
    assert_eq!(s.get_delivery(task_id(3), 1).await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_announcements_reach_subscribers_of_the_process() {
    let t = super::harness::sqlite().await;
    assert!(!t.store.shared());
    let mut rx = t.store.subscribe();
    t.store.announce("1 d x").await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), "1 d x");
}

#[tokio::test]
async fn postgres_announcements_reach_another_replica() {
    let t = super::harness::postgres().await;
    // A second handle on the same database: another replica.
    let other = super::harness::open_locator(&t.locator()).await;
    assert!(other.shared());
    let mut rx = other.subscribe();
    // The listener says it listens (resync) before anything can be missed.
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, crate::RESYNC);
    t.store.announce("7 a agent").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, "7 a agent");
}
