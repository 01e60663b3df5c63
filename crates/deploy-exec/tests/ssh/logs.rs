//! Task logs through real sshd: lines reach the sink while the command still runs, and the byte cap ends in the truncation marker.

use std::sync::Arc;
use std::time::Duration;

use deploy_core::{CommandSpec, TargetType};
use deploy_exec::{ExecContext, Executor, MemorySink, TRUNCATION_MARKER, TaskLog};
use deploy_testkit::SshdHosts;

use crate::common::*;

#[tokio::test]
async fn lines_stream_while_the_command_runs_and_the_cap_truncates() {
    let hosts = SshdHosts::start(1).unwrap();
    let exec = executor(&hosts);
    let t = target(&hosts, 1, TargetType::DockerHost, "/tmp");
    let (logs, c) = ctx(30);
    let slow = CommandSpec::new(vec![
        "sh".into(),
        "-c".into(),
        // `read` blocks: the channel's stdin is never closed, so only cancel ends it.
        "echo first; read never; echo second >&2".into(),
    ])
    .unwrap();
    let run = exec.run_command(&t, &slow, &c);
    let watch = async {
        for _ in 0..300 {
            if !logs.lines().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seen = logs.lines();
        c.cancel.cancel();
        seen
    };
    let (out, seen_early) = tokio::join!(run, watch);
    assert_eq!(
        seen_early,
        ["first"],
        "the first line arrives while the command runs"
    );
    assert!(
        matches!(out, Err(deploy_exec::ExecError::Cancelled { .. })),
        "{out:?}"
    );
    assert_eq!(logs.lines(), ["first"]);

    let sink = MemorySink::new();
    let capped = ExecContext {
        log: TaskLog::new(Arc::new(sink.clone()), 1000),
        ..ExecContext::quiet(Duration::from_secs(30))
    };
    let many = CommandSpec::new(vec!["seq".into(), "1".into(), "100000".into()]).unwrap();
    let out = exec.run_command(&t, &many, &capped).await.unwrap();
    assert_eq!(out.exit_status, 0);
    let lines = sink.lines();
    assert_eq!(lines.last().map(String::as_str), Some(TRUNCATION_MARKER));
    assert_eq!(lines.iter().filter(|l| *l == TRUNCATION_MARKER).count(), 1);
    assert!(lines.iter().map(|l| l.len() + 1).sum::<usize>() <= 1000 + TRUNCATION_MARKER.len() + 1);
    assert_eq!(lines[0], "1");
}
