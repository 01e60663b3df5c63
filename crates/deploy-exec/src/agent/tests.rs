//! Unit tests of the hub and the agent executor, driven by a fake agent loop in the test (the real agent is tested end to end elsewhere).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deploy_api::agent::{
    AgentCapability, AgentError, AgentErrorCode, AgentLogLine, LogChunkRequest, LogStream,
    PollRequest, PollResponse, TaskKey, TaskOutcome, TaskResultRequest,
};
use deploy_core::testing::*;
use deploy_core::*;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::testing::FakeSecrets;
use crate::{ComponentSpec, DeployRequest, ExecContext, ExecError, Executor, MemorySink};

const HEARTBEAT: Duration = Duration::from_millis(400);

fn info(n: u64, labels: &[(&str, &str)], caps: &[AgentCapability]) -> AgentInfo {
    let map: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    AgentInfo {
        id: agent_id(n),
        name: name(&format!("agent-{n}")),
        labels: Labels::new(map).unwrap(),
        labels_version: 1,
        capabilities: caps.to_vec(),
        credential_hash: Some(sha256_of(format!("cred-{n}").as_bytes())),
        created_at: ts(n),
        last_seen_at: None,
        revoked_at: None,
    }
}

fn target(agent: Option<AgentId>, selector: &[(&str, &str)], registry: bool) -> Target {
    let map: BTreeMap<String, String> = selector
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut t = ssh_target(1);
    t.connection = Connection::Agent(AgentConnection {
        agent_id: agent,
        selector: Labels::new(map).unwrap(),
        work_dir: Some(UnixPath::parse("/srv/deploy").unwrap()),
        stop_first: true,
        registry_auth: registry.then(|| CredentialRef::parse("env:REG").unwrap()),
    });
    t
}

fn hub_with(agents: &[AgentInfo]) -> AgentHub {
    let hub = AgentHub::new(HEARTBEAT);
    for a in agents {
        hub.upsert_agent(a.clone());
    }
    hub
}

fn executor(hub: &AgentHub) -> AgentExecutor {
    let secrets = FakeSecrets::new([("env:REG", "robot:s3cr3t-pass")]);
    AgentExecutor::new(hub.clone(), Arc::new(secrets))
}

fn request(target: Target, n: u64) -> DeployRequest {
    let mut task = task(n, 3);
    task.attempt_number = 1;
    DeployRequest {
        target,
        task,
        component: Some(ComponentSpec {
            name: name("web"),
            container: deploy_core::ContainerSpec::from_image(
                ImageRef::parse(&format!("registry.local:5000/web@{}", digest(1))).unwrap(),
            ),
            keep_previous_running: false,
        }),
        project: name("web"),
        artifacts: Vec::new(),
        stored_lock: None,
        rollback: false,
    }
}

async fn poll(hub: &AgentHub, n: u64, running: &[TaskKey], wait_ms: u64) -> PollResponse {
    hub.poll(
        agent_id(n),
        &PollRequest {
            protocol: 1,
            running: running.to_vec(),
            wait_ms,
            draining: false,
        },
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

fn deployed() -> TaskResultRequest {
    TaskResultRequest {
        protocol: 1,
        log_lines: 0,
        outcome: TaskOutcome::Deployed {
            deployed_digest: digest(1),
            previous_digest: Some(digest(2)),
            changed: true,
            running: BTreeMap::from([("web".to_owned(), digest(1))]),
            published: Vec::new(),
        },
    }
}

fn chunk(first_seq: u64, lines: &[&str]) -> LogChunkRequest {
    LogChunkRequest {
        protocol: 1,
        first_seq,
        lines: lines
            .iter()
            .map(|l| AgentLogLine {
                stream: LogStream::Stdout,
                text: (*l).to_owned(),
            })
            .collect(),
    }
}

fn ctx(sink: &MemorySink, timeout: Duration) -> ExecContext {
    ExecContext::new(Arc::new(sink.clone()), timeout)
}

#[tokio::test]
async fn delivery_is_repeated_until_the_result_unless_running_and_logs_are_idempotent() {
    let hub = hub_with(&[info(1, &[], &[AgentCapability::Docker])]);
    poll(&hub, 1, &[], 0).await;
    let exec = executor(&hub);
    let sink = MemorySink::new();
    let mut c = ctx(&sink, Duration::from_secs(10));
    // As the engine hands it over: an application secret resolved into the request, in
    // its log's redaction.
    c.log = c.log.with_secret("app-v4lue");
    let mut req = request(target(None, &[], true), 1);
    if let Some(component) = req.component.as_mut() {
        component
            .container
            .env
            .insert("DB".to_owned(), "app-v4lue".to_owned());
    }
    let deploy = tokio::spawn(async move { exec.deploy(&req, &c).await });

    // A waiting poll returns as soon as the task is queued.
    let first = poll(&hub, 1, &[], 5_000).await;
    assert_eq!(first.deliveries.len(), 1);
    let d = &first.deliveries[0];
    let key = d.key;
    assert_eq!((key.task_id, key.attempt), (task_id(1), 1));
    let deploy_action = match &d.action {
        deploy_api::agent::AgentAction::Deploy { deploy } => deploy.clone(),
        other => panic!("{other:?}"),
    };
    let auth = deploy_action.registry_auth.unwrap();
    assert_eq!(
        (
            auth.server.as_str(),
            auth.username.as_str(),
            auth.password.as_str()
        ),
        ("registry.local:5000", "robot", "s3cr3t-pass")
    );
    // The agent is told which values to hide; never the registry password (the
    // delivery is stored without it).
    assert_eq!(deploy_action.secret_values, ["app-v4lue"]);
    assert!(deploy_action.component.unwrap().stop_first);

    // Redelivered until the result, unless the poll says it runs.
    assert_eq!(poll(&hub, 1, &[], 0).await.deliveries.len(), 1);
    assert!(poll(&hub, 1, &[key], 0).await.deliveries.is_empty());

    let ack = hub
        .log_chunk(
            agent_id(1),
            key,
            &chunk(0, &["pulling", "pass s3cr3t-pass"]),
        )
        .unwrap();
    assert_eq!(ack.next_seq, 2);
    // Re-sent and overlapping chunks add only what is new.
    assert_eq!(
        hub.log_chunk(
            agent_id(1),
            key,
            &chunk(0, &["pulling", "pass s3cr3t-pass"])
        )
        .unwrap()
        .next_seq,
        2
    );
    assert_eq!(
        hub.log_chunk(
            agent_id(1),
            key,
            &chunk(1, &["pass s3cr3t-pass", "started with app-v4lue"])
        )
        .unwrap()
        .next_seq,
        3
    );
    // A gap stores nothing and says where to resume.
    assert_eq!(
        hub.log_chunk(agent_id(1), key, &chunk(9, &["lost"]))
            .unwrap()
            .next_seq,
        3
    );
    assert_eq!(hub.summaries()[0].in_flight, 1);

    hub.complete(agent_id(1), key, &deployed()).unwrap();
    let result = deploy.await.unwrap();
    let result = result.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(result.deployed_digest, digest(1));
    assert_eq!(result.previous_digest, Some(digest(2)));
    assert!(result.changed);
    // A re-sent result is acknowledged again; the key is no longer delivered.
    assert_eq!(
        hub.complete(agent_id(1), key, &deployed()).unwrap().key,
        key
    );
    assert!(poll(&hub, 1, &[], 0).await.deliveries.is_empty());
    let lines = sink.lines();
    let agent_lines: Vec<&String> = lines.iter().skip(1).collect();
    assert_eq!(
        agent_lines,
        ["pulling", "pass [REDACTED]", "started with [REDACTED]"]
    );
    assert_eq!(hub.summaries()[0].in_flight, 0);
}

#[tokio::test]
async fn another_agent_is_refused_on_a_key_and_never_gets_it() {
    let hub = hub_with(&[
        info(1, &[("zone", "a")], &[AgentCapability::Docker]),
        info(2, &[("zone", "b")], &[AgentCapability::Docker]),
    ]);
    poll(&hub, 1, &[], 0).await;
    poll(&hub, 2, &[], 0).await;
    let exec = executor(&hub);
    let c = ctx(&MemorySink::new(), Duration::from_secs(10));
    let req = request(target(None, &[("zone", "a")], false), 1);
    let deploy = tokio::spawn(async move { exec.deploy(&req, &c).await });
    let key = poll(&hub, 1, &[], 5_000).await.deliveries[0].key;

    assert!(poll(&hub, 2, &[], 0).await.deliveries.is_empty());
    assert_eq!(
        hub.log_chunk(agent_id(2), key, &chunk(0, &["x"])),
        Err(HubError::UnknownKey(key))
    );
    assert_eq!(
        hub.complete(agent_id(2), key, &deployed()),
        Err(HubError::UnknownKey(key))
    );
    let unknown = TaskKey {
        task_id: task_id(9),
        attempt: 1,
    };
    assert_eq!(
        hub.complete(agent_id(1), unknown, &deployed()),
        Err(HubError::UnknownKey(unknown))
    );
    hub.complete(agent_id(1), key, &deployed()).unwrap();
    assert!(deploy.await.unwrap().is_ok());
    // Even after completion, B is refused on A's key.
    assert!(hub.complete(agent_id(2), key, &deployed()).is_err());
}

#[tokio::test]
async fn a_silent_agent_fails_its_tasks_as_retryable_and_a_late_result_is_dropped() {
    let hub = hub_with(&[info(1, &[], &[AgentCapability::Docker])]);
    poll(&hub, 1, &[], 0).await;
    let stop = CancellationToken::new();
    let reaper = hub.spawn_reaper(stop.clone());
    let exec = executor(&hub);
    let c = ctx(&MemorySink::new(), Duration::from_secs(30));
    let req = request(target(Some(agent_id(1)), &[], false), 1);
    let deploy = tokio::spawn(async move { exec.deploy(&req, &c).await });
    let key = poll(&hub, 1, &[], 5_000).await.deliveries[0].key;
    // The agent now goes silent.
    let result = tokio::time::timeout(Duration::from_secs(5), deploy)
        .await
        .expect("the reaper fails the task")
        .unwrap();
    let error = result.unwrap_err().error;
    assert!(
        matches!(&error, ExecError::AgentLost { attempt: 1, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert!(!hub.summaries()[0].active);
    // The engine gave up on the attempt: the agent, back from a partition, is told to stop it.
    let back = poll(&hub, 1, &[key], 0).await;
    assert!(back.deliveries.is_empty());
    assert_eq!(back.cancel, [key]);
    // Its late result is acknowledged and dropped.
    assert_eq!(
        hub.complete(agent_id(1), key, &deployed()).unwrap().key,
        key
    );
    stop.cancel();
    reaper.await.unwrap();
}

#[tokio::test]
async fn timeout_and_cancel_send_the_key_in_cancel() {
    let hub = hub_with(&[info(1, &[], &[AgentCapability::Docker])]);
    poll(&hub, 1, &[], 0).await;
    let exec = Arc::new(executor(&hub));

    let c = ctx(&MemorySink::new(), Duration::from_millis(100));
    let e = exec.clone();
    let req = request(target(None, &[], false), 1);
    let deploy = tokio::spawn(async move { e.deploy(&req, &c).await });
    let key = poll(&hub, 1, &[], 5_000).await.deliveries[0].key;
    let result = deploy.await.unwrap();
    let error = result.unwrap_err().error;
    assert!(matches!(error, ExecError::Timeout { .. }), "{error:?}");
    assert!(error.is_retryable());
    let answer = poll(&hub, 1, &[key], 0).await;
    assert!(answer.deliveries.is_empty());
    assert_eq!(answer.cancel, [key]);
    // Repeated (an answer may have gone to a stale poll) until the key's result arrives.
    assert_eq!(poll(&hub, 1, &[], 0).await.cancel, [key]);
    let cancelled = TaskResultRequest {
        protocol: 1,
        log_lines: 0,
        outcome: TaskOutcome::Failed {
            error: AgentError {
                code: AgentErrorCode::Cancelled,
                message: "cancelled".into(),
            },
            previous_digest: None,
        },
    };
    assert!(hub.complete(agent_id(1), key, &cancelled).is_ok());
    assert!(poll(&hub, 1, &[], 0).await.cancel.is_empty());

    let c = ctx(&MemorySink::new(), Duration::from_secs(30));
    let cancel = c.cancel.clone();
    let e = exec.clone();
    let req = request(target(None, &[], false), 2);
    let deploy = tokio::spawn(async move { e.deploy(&req, &c).await });
    let key = poll(&hub, 1, &[], 5_000).await.deliveries[0].key;
    cancel.cancel();
    let error = deploy.await.unwrap().unwrap_err().error;
    assert!(matches!(error, ExecError::Cancelled { .. }), "{error:?}");
    assert_eq!(poll(&hub, 1, &[], 5_000).await.cancel, [key]);
    // The agent's cancelled result is acknowledged.
    assert!(hub.complete(agent_id(1), key, &cancelled).is_ok());
}

#[tokio::test]
async fn failures_are_classified_by_code_and_inspect_and_commands_round_trip() {
    let hub = hub_with(&[info(1, &[], &[AgentCapability::Docker])]);
    poll(&hub, 1, &[], 0).await;
    let exec = Arc::new(executor(&hub));
    for (code, retryable) in [
        (AgentErrorCode::PullRefused, false),
        (AgentErrorCode::PullFailed, true),
    ] {
        let e = exec.clone();
        let c = ctx(&MemorySink::new(), Duration::from_secs(10));
        let req = request(target(None, &[], false), 1);
        let deploy = tokio::spawn(async move { e.deploy(&req, &c).await });
        let key = poll(&hub, 1, &[], 5_000).await.deliveries[0].key;
        let failed = TaskResultRequest {
            protocol: 1,
            log_lines: 0,
            outcome: TaskOutcome::Failed {
                error: AgentError {
                    code,
                    message: "pull web".into(),
                },
                previous_digest: None,
            },
        };
        hub.complete(agent_id(1), key, &failed).unwrap();
        let error = deploy.await.unwrap().unwrap_err().error;
        assert_eq!(error.is_retryable(), retryable, "{code:?}");
        assert!(matches!(error, ExecError::Agent { .. }));
    }

    let e = exec.clone();
    let inspect = tokio::spawn(async move {
        let c = ExecContext::quiet(Duration::from_secs(10));
        e.inspect(&target(None, &[], false), &name("web"), &c).await
    });
    let d = poll(&hub, 1, &[], 5_000).await.deliveries.remove(0);
    assert_eq!(d.key.attempt, 0);
    let answer = TaskResultRequest {
        protocol: 1,
        log_lines: 0,
        outcome: TaskOutcome::Inspected {
            digest: Some(digest(3)),
            published: Vec::new(),
        },
    };
    hub.complete(agent_id(1), d.key, &answer).unwrap();
    assert_eq!(inspect.await.unwrap().unwrap(), Some(digest(3)));

    let e = exec.clone();
    let command = tokio::spawn(async move {
        let c = ExecContext::quiet(Duration::from_secs(10));
        let argv = CommandSpec::new(vec!["true".to_owned()]).unwrap();
        e.run_command(&target(None, &[], false), &argv, &c).await
    });
    let d = poll(&hub, 1, &[], 5_000).await.deliveries.remove(0);
    let ran = TaskResultRequest {
        protocol: 1,
        log_lines: 0,
        outcome: TaskOutcome::CommandRan {
            exit_status: 0,
            stdout: "ok".into(),
        },
    };
    hub.complete(agent_id(1), d.key, &ran).unwrap();
    assert_eq!(command.await.unwrap().unwrap().stdout, "ok");
}

#[tokio::test]
async fn agents_are_selected_by_id_or_labels_least_busy_first() {
    let docker = [AgentCapability::Docker];
    let hub = hub_with(&[
        info(1, &[("zone", "a")], &docker),
        info(2, &[("zone", "a"), ("tier", "web")], &docker),
        info(3, &[("zone", "b")], &[AgentCapability::Compose]),
        info(4, &[("zone", "c")], &docker),
    ]);
    for n in [1, 2, 3] {
        poll(&hub, n, &[], 0).await;
    }
    let zone = |z: &str| Labels::new(BTreeMap::from([("zone".into(), z.into())])).unwrap();
    let d = AgentCapability::Docker;
    // Equal load: the lowest id.
    assert_eq!(hub.select(None, &zone("a"), d), Ok(agent_id(1)));
    // Least in flight first.
    let key = TaskKey {
        task_id: task_id(1),
        attempt: 1,
    };
    let delivery = deploy_api::agent::TaskDelivery {
        key,
        target: target(None, &[], false),
        action: deploy_api::agent::AgentAction::Inspect {
            component: name("web"),
        },
        timeout_ms: 1_000,
    };
    let _rx = hub
        .dispatch(
            agent_id(1),
            delivery,
            crate::TaskLog::new(Arc::new(crate::NullSink), 1024),
        )
        .await
        .unwrap();
    assert_eq!(hub.select(None, &zone("a"), d), Ok(agent_id(2)));

    let err = |r: Result<AgentId, NoAgent>| r.unwrap_err().0;
    assert_eq!(
        err(hub.select(None, &zone("x"), d)),
        "no agent matches the selector {zone=x}"
    );
    assert_eq!(
        err(hub.select(None, &zone("b"), d)),
        "no unrevoked agent matching the selector {zone=b} has the `docker` capability"
    );
    assert!(err(hub.select(None, &zone("c"), d)).contains("are inactive"));
    assert!(err(hub.select(Some(agent_id(4)), &Labels::default(), d)).contains("never polled"));
    assert!(
        err(hub.select(Some(agent_id(3)), &Labels::default(), d))
            .contains("lacks the `docker` capability")
    );
    assert!(err(hub.select(Some(agent_id(9)), &Labels::default(), d)).contains("not registered"));
    assert!(hub.revoke_agent(agent_id(2), ts(50)));
    assert!(err(hub.select(Some(agent_id(2)), &Labels::default(), d)).contains("was revoked"));

    // The executor names the target and why.
    let exec = executor(&hub);
    let error = exec
        .inspect(
            &target(None, &[("zone", "x")], false),
            &name("web"),
            &ExecContext::quiet(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "find an agent for target `host-1`: no agent matches the selector {zone=x}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn revoking_fails_in_flight_keys_and_refuses_polls() {
    let hub = hub_with(&[info(1, &[], &[AgentCapability::Docker])]);
    poll(&hub, 1, &[], 0).await;
    let exec = executor(&hub);
    let c = ctx(&MemorySink::new(), Duration::from_secs(10));
    let req = request(target(None, &[], false), 1);
    let deploy = tokio::spawn(async move { exec.deploy(&req, &c).await });
    poll(&hub, 1, &[], 5_000).await;
    hub.revoke_agent(agent_id(1), ts(9));
    let error = deploy.await.unwrap().unwrap_err().error;
    assert!(matches!(&error, ExecError::AgentLost { reason, .. } if reason.contains("revoked")));
    assert!(error.is_retryable());
    let refused = hub
        .poll(
            agent_id(1),
            &PollRequest {
                protocol: 1,
                running: Vec::new(),
                wait_ms: 0,
                draining: false,
            },
            CancellationToken::new(),
        )
        .await;
    assert_eq!(refused, Err(HubError::UnknownAgent(agent_id(1))));
}

async fn poll_as(
    hub: &AgentHub,
    n: u64,
    running: &[TaskKey],
    wait_ms: u64,
    draining: bool,
) -> PollResponse {
    hub.poll(
        agent_id(n),
        &PollRequest {
            protocol: 1,
            running: running.to_vec(),
            wait_ms,
            draining,
        },
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_draining_agent_keeps_its_heartbeat_and_cancels_but_gets_nothing_new() {
    let hub = hub_with(&[
        info(1, &[], &[AgentCapability::Docker]),
        info(2, &[], &[AgentCapability::Docker]),
    ]);
    poll(&hub, 1, &[], 0).await;
    let exec = Arc::new(executor(&hub));
    let e = exec.clone();
    let c = ctx(&MemorySink::new(), Duration::from_secs(10));
    let req = request(target(Some(agent_id(1)), &[], false), 1);
    let deploy = tokio::spawn(async move { e.deploy(&req, &c).await });
    let key = poll(&hub, 1, &[], 5_000).await.deliveries[0].key;

    // Queued while it drains: not delivered (nor a second key), the agent stays active.
    let e = exec.clone();
    let c2 = ctx(&MemorySink::new(), Duration::from_secs(10));
    let cancel2 = c2.cancel.clone();
    let req = request(target(Some(agent_id(1)), &[], false), 2);
    let second = tokio::spawn(async move { e.deploy(&req, &c2).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let key2 = TaskKey {
        task_id: task_id(2),
        attempt: 1,
    };
    let drained = poll_as(&hub, 1, &[key], 0, true).await;
    assert!(drained.deliveries.is_empty(), "{drained:?}");
    // A waiting draining poll is not answered with the queued key either.
    let drained = poll_as(&hub, 1, &[key], 100, true).await;
    assert!(drained.deliveries.is_empty(), "{drained:?}");
    assert!(hub.summaries()[0].active);
    assert_eq!(
        hub.summaries()[0].in_flight,
        2,
        "the key stays queued for it"
    );
    // Not selected while draining: the other agent wins once it polls.
    assert!(
        hub.select(None, &Labels::default(), AgentCapability::Docker)
            .unwrap_err()
            .0
            .contains("or draining")
    );
    poll(&hub, 2, &[], 0).await;
    assert_eq!(
        hub.select(None, &Labels::default(), AgentCapability::Docker),
        Ok(agent_id(2))
    );
    assert!(
        hub.select(
            Some(agent_id(1)),
            &Labels::default(),
            AgentCapability::Docker
        )
        .unwrap_err()
        .0
        .contains("draining")
    );
    // Cancels still reach a draining agent.
    cancel2.cancel();
    assert!(second.await.unwrap().is_err());
    let drained = poll_as(&hub, 1, &[key], 0, true).await;
    assert!(drained.deliveries.is_empty());
    assert_eq!(drained.cancel, [key2]);
    // Undrained, it gets what is queued for it again.
    hub.complete(agent_id(1), key, &deployed()).unwrap();
    assert!(deploy.await.unwrap().is_ok());
    let e = exec.clone();
    let c = ctx(&MemorySink::new(), Duration::from_secs(10));
    let req = request(target(Some(agent_id(1)), &[], false), 3);
    let third = tokio::spawn(async move { e.deploy(&req, &c).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(poll_as(&hub, 1, &[], 0, true).await.deliveries.is_empty());
    let d = poll(&hub, 1, &[], 5_000).await.deliveries.remove(0);
    assert_eq!(d.key.task_id, task_id(3));
    hub.complete(agent_id(1), d.key, &deployed()).unwrap();
    assert!(third.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_stale_long_poll_neither_delays_the_live_one_nor_swallows_a_cancel() {
    let hub = hub_with(&[info(1, &[], &[AgentCapability::Docker])]);
    poll(&hub, 1, &[], 0).await;
    // The stale poll (its connection is gone, the handler still waits), then the live one.
    let h = hub.clone();
    let stale = tokio::spawn(async move { poll(&h, 1, &[], 5_000).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let h = hub.clone();
    let live = tokio::spawn(async move { poll(&h, 1, &[], 5_000).await });
    tokio::time::sleep(Duration::from_millis(30)).await;

    let exec = Arc::new(executor(&hub));
    let e = exec.clone();
    let c = ctx(&MemorySink::new(), Duration::from_secs(10));
    let cancel = c.cancel.clone();
    let req = request(target(None, &[], false), 1);
    let started = std::time::Instant::now();
    let deploy = tokio::spawn(async move { e.deploy(&req, &c).await });
    let live = tokio::time::timeout(Duration::from_secs(1), live)
        .await
        .expect("the live poll wakes at once")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(live.deliveries.len(), 1);
    let key = live.deliveries[0].key;
    let _ = stale.await.unwrap();

    // A cancel answered to a stale poll is answered again to the live one.
    let h = hub.clone();
    let stale = tokio::spawn(async move { poll(&h, 1, &[key], 5_000).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    cancel.cancel();
    assert!(deploy.await.unwrap().is_err());
    assert_eq!(stale.await.unwrap().cancel, [key]);
    assert_eq!(poll(&hub, 1, &[], 0).await.cancel, [key]);
    // Forgotten after two heartbeat timeouts when no result comes.
    tokio::time::sleep(HEARTBEAT * 2 + Duration::from_millis(50)).await;
    assert!(poll(&hub, 1, &[], 0).await.cancel.is_empty());
}

#[tokio::test]
async fn the_executor_waits_for_a_registered_agent_to_poll_before_giving_up() {
    let hub = hub_with(&[info(1, &[("zone", "a")], &[AgentCapability::Docker])]);
    let exec = Arc::new(executor(&hub));
    // As after a restart: registered, never polled. The task waits for its first poll.
    for t in [
        target(Some(agent_id(1)), &[], false),
        target(None, &[("zone", "a")], false),
    ] {
        let e = exec.clone();
        let inspect = tokio::spawn(async move {
            let c = ExecContext::quiet(Duration::from_secs(10));
            e.inspect(&t, &name("web"), &c).await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!inspect.is_finished());
        let d = poll(&hub, 1, &[], 5_000).await.deliveries.remove(0);
        let answer = TaskResultRequest {
            protocol: 1,
            log_lines: 0,
            outcome: TaskOutcome::Inspected {
                digest: None,
                published: Vec::new(),
            },
        };
        hub.complete(agent_id(1), d.key, &answer).unwrap();
        assert_eq!(inspect.await.unwrap().unwrap(), None);
        // Silent again for the next round.
        tokio::time::sleep(HEARTBEAT + Duration::from_millis(20)).await;
    }
    // Bounded by the heartbeat timeout (and the call's timeout).
    let started = std::time::Instant::now();
    let error = exec
        .inspect(
            &target(Some(agent_id(1)), &[], false),
            &name("web"),
            &ExecContext::quiet(Duration::from_millis(150)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, ExecError::NoAgentAvailable { .. }),
        "{error:?}"
    );
    assert!(started.elapsed() < HEARTBEAT);
    // Cancellable.
    let c = ExecContext::quiet(Duration::from_secs(10));
    let cancel = c.cancel.clone();
    let e = exec.clone();
    let waiting = tokio::spawn(async move {
        e.inspect(&target(Some(agent_id(1)), &[], false), &name("web"), &c)
            .await
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    cancel.cancel();
    let error = waiting.await.unwrap().unwrap_err();
    assert!(matches!(error, ExecError::Cancelled { .. }), "{error:?}");
    // Revoked while an executor waits for it: the wait ends at once, naming why.
    let e = exec.clone();
    let started = std::time::Instant::now();
    let waiting = tokio::spawn(async move {
        let c = ExecContext::quiet(Duration::from_secs(10));
        e.inspect(&target(Some(agent_id(1)), &[], false), &name("web"), &c)
            .await
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    hub.revoke_agent(agent_id(1), ts(9));
    let error = waiting.await.unwrap().unwrap_err();
    assert!(error.to_string().contains("was revoked"), "{error}");
    assert!(started.elapsed() < HEARTBEAT);
}

#[tokio::test]
async fn compose_targets_neither_resolve_nor_send_registry_credentials() {
    let hub = hub_with(&[info(1, &[], &[AgentCapability::Compose])]);
    poll(&hub, 1, &[], 0).await;
    // The credential reference cannot even be resolved: it must not be tried.
    let exec = AgentExecutor::new(hub.clone(), Arc::new(FakeSecrets::default()));
    let mut t = target(None, &[], true);
    t.target_type = TargetType::ComposeHost;
    let mut req = request(t, 1);
    req.component = None;
    let c = ctx(&MemorySink::new(), Duration::from_secs(10));
    let deploy = tokio::spawn(async move { exec.deploy(&req, &c).await });
    let d = poll(&hub, 1, &[], 5_000).await.deliveries.remove(0);
    match &d.action {
        deploy_api::agent::AgentAction::Deploy { deploy } => {
            assert!(deploy.registry_auth.is_none())
        }
        other => panic!("{other:?}"),
    }
    hub.complete(agent_id(1), d.key, &deployed()).unwrap();
    assert!(deploy.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_stale_record_cannot_readmit_a_revoked_agent() {
    let hub = hub_with(&[info(1, &[], &[AgentCapability::Docker])]);
    // A rotation read the agent, then the revocation came: its write keeps the revocation.
    let stale = hub.agent(agent_id(1)).unwrap();
    assert!(hub.revoke_agent(agent_id(1), ts(9)));
    let mut rotated = stale;
    rotated.credential_hash = Some(sha256_of(b"cred-1c"));
    hub.upsert_agent(rotated);
    let known = hub.agent(agent_id(1)).unwrap();
    assert_eq!(known.revoked_at, Some(ts(9)));
    assert_eq!(known.credential_hash, Some(sha256_of(b"cred-1c")));
}
