//! `/metrics` from the engine's events: the task duration histogram by outcome and the executor errors by class.

use deploy_core::{JobId, TaskId, Timestamp};
use deploy_engine::{EngineEvent, random_bytes};

use super::Fixture;
use crate::metrics::Metrics;

fn at(millis: u64) -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000 + millis).unwrap()
}

fn event(job: JobId, task: TaskId, name: &'static str, millis: u64) -> EngineEvent {
    EngineEvent {
        job_id: job,
        task_id: Some(task),
        event: name,
        status: "-",
        cause: String::new(),
        at: at(millis),
    }
}

/// The exposition's lines that start with `prefix`.
fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn task_durations_and_executor_errors_are_exposed() {
    let m = Metrics::default();
    let job = JobId::from_parts(at(0), random_bytes());
    let a = TaskId::from_parts(at(0), random_bytes());
    let b = TaskId::from_parts(at(0), random_bytes());
    let c = TaskId::from_parts(at(0), random_bytes());
    for e in [
        // a: one attempt of 1.5 s that succeeds.
        event(job, a, "dispatch", 0),
        event(job, a, "start", 100),
        event(job, a, "succeed", 1500),
        // b: a 0.2 s retryable failure, then a 40 s permanent one.
        event(job, b, "dispatch", 0),
        event(job, b, "fail_retryable", 200),
        event(job, b, "retry", 300),
        event(job, b, "dispatch", 1000),
        event(job, b, "fail_permanent", 41_000),
        // c: cancelled before it was dispatched: no duration.
        event(job, c, "cancel", 5),
    ] {
        m.record_transition(&e);
    }
    let text = m.render();
    assert_eq!(
        lines(
            &text,
            "deployd_task_duration_seconds_bucket{outcome=\"succeeded\""
        ),
        [
            "deployd_task_duration_seconds_bucket{outcome=\"succeeded\",le=\"0.5\"} 0",
            "deployd_task_duration_seconds_bucket{outcome=\"succeeded\",le=\"1\"} 0",
            "deployd_task_duration_seconds_bucket{outcome=\"succeeded\",le=\"2.5\"} 1",
            "deployd_task_duration_seconds_bucket{outcome=\"succeeded\",le=\"5\"} 1",
            "deployd_task_duration_seconds_bucket{outcome=\"succeeded\",le=\"10\"} 1",
            "deployd_task_duration_seconds_bucket{outcome=\"succeeded\",le=\"30\"} 1",
            "deployd_task_duration_seconds_bucket{outcome=\"succeeded\",le=\"60\"} 1",
            "deployd_task_duration_seconds_bucket{outcome=\"succeeded\",le=\"120\"} 1",
            "deployd_task_duration_seconds_bucket{outcome=\"succeeded\",le=\"300\"} 1",
            "deployd_task_duration_seconds_bucket{outcome=\"succeeded\",le=\"600\"} 1",
            "deployd_task_duration_seconds_bucket{outcome=\"succeeded\",le=\"1800\"} 1",
            "deployd_task_duration_seconds_bucket{outcome=\"succeeded\",le=\"+Inf\"} 1",
        ]
    );
    for (line, expected) in [
        (
            "deployd_task_duration_seconds_sum{outcome=\"succeeded\"}",
            "1.5",
        ),
        (
            "deployd_task_duration_seconds_count{outcome=\"succeeded\"}",
            "1",
        ),
        (
            "deployd_task_duration_seconds_bucket{outcome=\"failed_retryable\",le=\"0.5\"}",
            "1",
        ),
        (
            "deployd_task_duration_seconds_sum{outcome=\"failed_retryable\"}",
            "0.2",
        ),
        (
            "deployd_task_duration_seconds_bucket{outcome=\"failed_permanent\",le=\"30\"}",
            "0",
        ),
        (
            "deployd_task_duration_seconds_bucket{outcome=\"failed_permanent\",le=\"60\"}",
            "1",
        ),
        (
            "deployd_task_duration_seconds_sum{outcome=\"failed_permanent\"}",
            "40",
        ),
        (
            "deployd_task_duration_seconds_count{outcome=\"cancelled\"}",
            "0",
        ),
        ("deployd_executor_errors_total{class=\"retryable\"}", "1"),
        ("deployd_executor_errors_total{class=\"permanent\"}", "1"),
        ("deployd_transitions_total{kind=\"task\",status=\"-\"}", "9"),
    ] {
        assert_eq!(
            lines(&text, &format!("{line} ")),
            [format!("{line} {expected}")],
            "{text}"
        );
    }
    assert!(text.contains("# TYPE deployd_task_duration_seconds histogram\n"));
    assert!(text.contains("# TYPE deployd_executor_errors_total counter\n"));
}

/// Through the router: the engine's events of a deploy that fails reach `/metrics`.
#[tokio::test]
async fn a_failed_deploy_shows_in_metrics() {
    let f = Fixture::new().await;
    let w = f.world("metrics").await;
    let approved = f
        .ok(
            "POST",
            &format!("/api/v1/promotions/{}/approve", w.promotion_id),
            deploy_api::Role::Deployer,
            Some(serde_json::json!({"max_attempts": 1})),
        )
        .await;
    let job = approved["job"]["id"].as_str().unwrap().to_owned();
    let cancel = tokio_util::sync::CancellationToken::new();
    let engine = f.engine.clone();
    let serving = tokio::spawn({
        let cancel = cancel.clone();
        async move { engine.serve(cancel).await }
    });
    let mut text = String::new();
    for _ in 0..600 {
        let (_, _, bytes) = f.raw("GET", "/metrics", None, None, &[]).await;
        text = String::from_utf8(bytes).unwrap();
        if !text.contains("deployd_task_duration_seconds_count{outcome=\"failed_retryable\"} 0")
            || !text.contains("deployd_task_duration_seconds_count{outcome=\"failed_permanent\"} 0")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    cancel.cancel();
    let _ = serving.await;
    let errors: u64 = lines(&text, "deployd_executor_errors_total{")
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(errors >= 1, "job {job}: {text}");
}
