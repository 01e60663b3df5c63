//! Fault scenario `postgres_outage`: PostgreSQL is stopped under a running `deployd` while a job's task soaks in health verification, stays down for 12 s, and is started again.
//!
//! Real processes and peers only: one testkit PostgreSQL (stopped with a fast
//! shutdown, so every connection deployd holds is cut, and started again on the
//! same data directory and port by `Postgres::stop` / `start_again`), one deployd
//! on it (6 s job lease, so the outage outlasts several renewals and the lease
//! itself), one sshd host in front of the Docker Engine, a loopback registry.
//!
//! v1 is deployed first; then v2, and 1 s into its task's soak PostgreSQL goes
//! down for 12 s. Checked: deployd does not exit (`/healthz` answers throughout);
//! `/readyz` says 503 and an authenticated API call made during the outage fails
//! with a 503 problem (`urn:deploy:problem:unavailable`, a detail saying the
//! database is unavailable, `Retry-After`), not a 500 or a hang (it is bounded by
//! the pool's 3 s acquire timeout). Once PostgreSQL is back, without restarting
//! deployd: the job settles (completed, or failed with its reason), no task
//! attempt ran twice, the stored events are one unbroken chain per job and task
//! and `jobs watch` replays exactly them, no task is left in a non-terminal state,
//! the target runs what the outcome says (v2 after completed, v1 after failed)
//! and nothing stray; and a new deploy of v1 afterwards completes. The time from
//! PostgreSQL's return to the job settling is printed. A `jobs watch` started
//! before the outage follows it through (deployctl waits out 503s as it waits out
//! a broken connection) and prints exactly the stored events.

use std::process::Stdio;
use std::time::{Duration, Instant};

use deploy_testkit::{
    ContainerCleanup, Postgres, Registry, SshdHosts, TestImages, free_port, http_get, temp_dir,
};
use serde_json::Value;

use crate::deployd_e2e::{
    KillOnDrop, assert_each_attempt_ran_once, at_ms, now_ms, target_body, watch_all,
};
use crate::deployd_proc::{api_post, create_release, ctl, ctl_command, json_lines, ok_json};
use crate::faults::replicas::{
    api_get, assert_chains_unbroken, assert_target_runs, assert_watched_everything,
    start_on_postgres, stored_events,
};

/// deployd's job lease here (renewed every 2 s).
const LEASE_MS: u64 = 6_000;

/// The task's health soak: the outage starts inside it.
const SOAK_MS: u64 = 6_000;

/// How long PostgreSQL stays down: longer than the lease and than the pool's
/// acquire timeout (3 s), so a request made at its start gets its answer during it.
const DOWN: Duration = Duration::from_secs(12);

#[test]
fn a_postgres_restart_mid_job_leaves_deployd_serving_and_the_job_consistent() {
    let prefix = format!("po{}-", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let pg = Postgres::start().unwrap();
    let hosts = SshdHosts::start(1).unwrap();
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    let key = std::fs::read_to_string(hosts.client_key()).unwrap();
    let data = temp_dir("faults-pg-outage-").unwrap();
    let port = free_port().unwrap();
    let server = start_on_postgres(
        data.path(),
        port,
        &hosts,
        &key,
        &pg.url(),
        "outage-replica",
        LEASE_MS,
    );
    let addr = server.addr.clone();

    let env_id = ok_json(&addr, &["env", "create", "outage"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, target) = api_post(
        &addr,
        &format!("/api/v1/environments/{env_id}/targets"),
        &target_body(&hosts, 1, &prefix, SOAK_MS),
    );
    assert_eq!(status, 201, "{target:#}");
    let mut releases = Vec::new();
    for (name, image) in [("v1", &images.v1), ("v2", &images.v2)] {
        releases.push(create_release(&addr, name, image));
    }
    let deploy = |release: &str, extra: &[&str]| {
        let args = [
            &[
                "deploy",
                "--release",
                release,
                "--env",
                &env_id,
                "--max-attempts",
                "3",
            ][..],
            extra,
        ]
        .concat();
        ctl(&addr, &args)
    };
    let out = deploy(&releases[0], &["--follow"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_target_runs(&prefix, "v1");

    // v2, followed by a watcher from before the outage.
    let out = deploy(&releases[1], &["--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let job = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let watch_out = data.path().join("watch.jsonl");
    let mut watcher = KillOnDrop(
        ctl_command(&addr, &["jobs", "watch", &job, "--output", "json"])
            .stdout(std::fs::File::create(&watch_out).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let begun = Instant::now();
    loop {
        let shown = ok_json(&addr, &["jobs", "show", &job]);
        if shown["tasks"][0]["status"] == "verifying" {
            break;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(90),
            "the v2 task never reached verifying: {shown:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));

    // The outage.
    pg.stop().unwrap();
    let down_ms = now_ms();
    let down_at = Instant::now();
    let ask = |path: String| {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let asked = Instant::now();
            let (status, body) = api_get(&addr, &path);
            (status, body, asked.elapsed())
        })
    };
    let during = ask(format!("/api/v1/jobs/{job}"));
    let ready = ask("/readyz".to_owned());
    let mut healthz_failures = Vec::new();
    while down_at.elapsed() < DOWN {
        match http_get(&addr, "/healthz") {
            Ok((200, _)) => {}
            other => healthz_failures.push(format!("{other:?}")),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (status, body, took) = during.join().unwrap();
    let (ready_status, ready_body, _) = ready.join().unwrap();
    pg.start_again().unwrap();
    let up_ms = now_ms();

    assert!(
        healthz_failures.is_empty(),
        "deployd stopped answering /healthz during the outage: {healthz_failures:?}\n{}",
        server.stderr()
    );
    assert_eq!(ready_status, 503, "/readyz during the outage: {ready_body}");
    let problem: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(
        status, 503,
        "GET a job during the outage ({took:?}): {body}"
    );
    assert_eq!(problem["type"], "urn:deploy:problem:unavailable", "{body}");
    // Bounded by the pool's 3 s acquire timeout (the slack is for a busy machine).
    assert!(
        took < Duration::from_secs(6),
        "the 503 took {took:?}: a caller waits only for the pool's acquire timeout"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("the database is unavailable")),
        "{body}"
    );
    assert!(
        !body.contains("127.0.0.1") && !body.contains("pool"),
        "driver details leak: {body}"
    );
    eprintln!(
        "postgres_outage: GET /api/v1/jobs/<id> during the outage answered {status} after {:.1} s: {body}",
        took.as_secs_f64()
    );

    // PostgreSQL is back: the job settles without a deployd restart.
    let begun = Instant::now();
    let shown = loop {
        let (status, body) = api_get(&addr, &format!("/api/v1/jobs/{job}"));
        if status == 200 {
            let shown: Value = serde_json::from_str(&body).unwrap();
            if ["completed", "failed", "rolled_back"].contains(&shown["status"].as_str().unwrap()) {
                break shown;
            }
        }
        assert!(
            begun.elapsed() < Duration::from_secs(120),
            "job {job} did not settle within 120 s of PostgreSQL's return: {status} {body}\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let outcome = shown["status"].as_str().unwrap().to_owned();
    let (code, events) = watch_all(&addr, &job);
    assert!(matches!(code, Some(0 | 1)), "{code:?}");
    let settled_ms = events
        .iter()
        .filter(|e| e["event"] == "transition")
        .map(at_ms)
        .max()
        .unwrap();
    let stored = stored_events(&pg, &job);
    assert_watched_everything(&events, &stored, &outcome);
    assert_chains_unbroken(&stored);
    assert_each_attempt_ran_once(&shown, &events);
    for task in shown["tasks"].as_array().unwrap() {
        assert!(
            ["succeeded", "failed", "cancelled", "skipped"]
                .contains(&task["status"].as_str().unwrap()),
            "task left in flight: {task:#}"
        );
    }
    let attempts = shown["tasks"][0]["attempt_number"].as_u64().unwrap();
    match outcome.as_str() {
        "completed" => assert_target_runs(&prefix, "v2"),
        _ => {
            let reason = shown["tasks"][0]["error"].as_str().unwrap_or_default();
            assert!(!reason.is_empty(), "failed without a reason: {shown:#}");
            eprintln!("postgres_outage: the job failed: {reason}");
        }
    }
    let log = server.stderr();
    let lost = log.contains("lost the job's lease");
    eprintln!(
        "postgres_outage: down {:.1} s; job {outcome} {} ms after PostgreSQL came back \
         (attempts {attempts}; lease {} during the outage)",
        (up_ms - down_ms) as f64 / 1000.0,
        settled_ms.saturating_sub(up_ms),
        if lost {
            "given up and re-claimed"
        } else {
            "kept"
        },
    );

    // The watcher started before the outage followed it through: deployctl waits out
    // 503s like a broken connection, then prints exactly the stored events and
    // exits as the job ended.
    let begun = Instant::now();
    let watch_code = loop {
        if let Some(status) = watcher.0.try_wait().unwrap() {
            break status.code();
        }
        if begun.elapsed() > Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let watched = json_lines(&std::fs::read(&watch_out).unwrap());
    let mut watch_err = String::new();
    if let Some(mut err) = watcher.0.stderr.take()
        && watch_code.is_some()
    {
        let _ = std::io::Read::read_to_string(&mut err, &mut watch_err);
    }
    eprintln!(
        "postgres_outage: jobs watch across the outage exited {watch_code:?} after {} lines; stderr: {}",
        watched.len(),
        watch_err.trim()
    );
    assert_eq!(
        watch_code,
        code,
        "jobs watch across the outage: {}",
        watch_err.trim()
    );
    let seqs = |lines: &[Value]| -> Vec<Value> {
        lines
            .iter()
            .filter(|e| e["event"] == "transition")
            .map(|e| e["id"].clone())
            .collect()
    };
    assert_eq!(
        seqs(&watched),
        seqs(&events),
        "the watcher across the outage saw other events than the log holds"
    );

    // A new deploy works without restarting deployd.
    let out = deploy(&releases[0], &["--follow"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_target_runs(&prefix, "v1");
    server.terminate();
}
