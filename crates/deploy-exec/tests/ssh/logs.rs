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
        "echo first; sleep 3; echo second >&2".into(),
    ])
    .unwrap();
    let run = exec.run_command(&t, &slow, &c);
    let watch = async {
        for _ in 0..25 {
            if logs.lines().contains(&"first".to_owned()) {
                return logs.lines();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        logs.lines()
    };
    let (out, seen_early) = tokio::join!(run, watch);
    assert_eq!(
        seen_early,
        ["first"],
        "the first line must arrive before the command ends"
    );
    assert_eq!(out.unwrap().exit_status, 0);
    assert_eq!(logs.lines(), ["first", "second"]);

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
