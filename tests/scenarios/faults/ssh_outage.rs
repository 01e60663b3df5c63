//! Fault scenario `ssh_outage`: the sshd of one of five targets goes down mid-job; that target fails after its retries, the failure policy fails the job, and the automatic rollback leaves the other four on their last-known-good digest.
//!
//! A real deployd (driven through deployctl and its API), five sshd hosts of the
//! testkit (127.0.0.1..5, one Docker Engine, so each target names its containers
//! with its own `deploy.container-prefix`), a loopback registry with v1 and v2.
//! v1 is deployed everywhere; then v2 all at once with `--auto-rollback`,
//! `--max-attempts 3` and `--max-failures 0` (one failed target fails the job).
//! While host 5's v2 task soaks in verification, host 5 goes down: its listening
//! sshd and the sessions it forked (the executor's pooled connection) are killed.
//!
//! Checked: host 5's task fails only after its three attempts (counted from the
//! `dispatch` and `fail` events; the time from the outage to its final failure is
//! printed), the job fails per the policy and a rollback job runs; the rollback puts
//! v1 back on hosts 1 to 4 (docker inspect of each container's digest, and what it
//! serves); host 5's rollback task fails with a message naming its address and the
//! connection; no task of either job ran an attempt twice.

use std::time::{Duration, Instant};

use deploy_testkit::{ContainerCleanup, Registry, SshdHosts, TestImages, free_port, temp_dir};
use serde_json::Value;

use crate::agent_e2e::{digest_of, running_digest};
use crate::deployd_e2e::{
    KEY_VAR, assert_each_attempt_ran_once, at_ms, now_ms, serves, target_body, watch_all,
};
use crate::deployd_proc::{Deployd, api_post, create_release, ctl, ok_json};
use crate::faults::common::wait_terminal;

/// Hosts in the scenario; the last one goes down.
const HOSTS: u8 = 5;

/// How long a deployed container must stay healthy before its task succeeds.
const SOAK_MS: u64 = 5_000;

/// Attempts per task.
const MAX_ATTEMPTS: u64 = 3;

/// Bounds every wait for a job.
const JOB_LIMIT: Duration = Duration::from_secs(180);

/// `deployctl jobs show` of `job`.
fn show(addr: &str, job: &str) -> Value {
    ok_json(addr, &["jobs", "show", job])
}

/// The task of `job` on target `target_id`.
fn task_on<'a>(job: &'a Value, target_id: &str) -> &'a Value {
    job["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target_id"] == target_id)
        .unwrap_or_else(|| panic!("no task on target {target_id}: {job:#}"))
}

#[test]
#[expect(
    clippy::print_stdout,
    reason = "the test reports its figures (nextest --no-capture shows them)"
)]
fn sshd_down_on_one_of_five_targets_fails_it_after_its_retries_and_rolls_the_others_back() {
    let prefix = format!("so{}-", std::process::id());
    let host_prefix = |i: u8| format!("{prefix}h{i}-");
    let container = |i: u8| format!("{prefix}h{i}-web");
    // First: containers go before the registry and the hosts stop.
    let _cleanup = ContainerCleanup::new(&prefix);
    let mut hosts = SshdHosts::start(HOSTS).unwrap();
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    let data = temp_dir("fault-ssh-outage-").unwrap();
    let key = std::fs::read_to_string(hosts.client_key()).unwrap();
    let env = [(KEY_VAR, key.as_str())];
    let server = Deployd::start(
        data.path(),
        free_port().unwrap(),
        &hosts.known_hosts(),
        &env,
    );
    let addr = server.addr.clone();

    let env_id = ok_json(&addr, &["env", "create", "outage"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut target_ids = Vec::new();
    for i in 1..=HOSTS {
        let (status, target) = api_post(
            &addr,
            &format!("/api/v1/environments/{env_id}/targets"),
            &target_body(&hosts, i, &host_prefix(i), SOAK_MS),
        );
        assert_eq!(status, 201, "{target:#}");
        target_ids.push(target["id"].as_str().unwrap().to_owned());
    }
    let release = |name: &str, image: &str| create_release(&addr, name, image);
    let v1 = release("v1", &images.v1);
    let v2 = release("v2", &images.v2);
    let max_attempts = MAX_ATTEMPTS.to_string();
    let deploy = |release: &str, extra: &[&str]| {
        let args = [
            &[
                "deploy",
                "--release",
                release,
                "--env",
                &env_id,
                "--max-attempts",
                &max_attempts,
            ][..],
            extra,
        ]
        .concat();
        ctl(&addr, &args)
    };

    // v1 everywhere.
    let out = deploy(&v1, &["--follow"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 1..=HOSTS {
        assert_eq!(serves(&container(i), "/version"), "v1", "host {i}");
    }

    // v2 with automatic rollback; host 5 goes down while its task soaks.
    let out = deploy(
        &v2,
        &["--auto-rollback", "--max-failures", "0", "--output", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v2_job = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let down = &target_ids[usize::from(HOSTS) - 1];
    let started = Instant::now();
    loop {
        let shown = show(&addr, &v2_job);
        let task = task_on(&shown, down);
        if task["status"] == "verifying" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "host {HOSTS}'s v2 task never reached verifying: {shown:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    hosts.stop_with_sessions(HOSTS);
    let stopped_at = now_ms();
    let stopped = Instant::now();

    let v2_shown = wait_terminal(&addr, &v2_job, JOB_LIMIT);
    let settled_after = stopped.elapsed();
    let (_, v2_events) = watch_all(&addr, &v2_job);
    assert_ne!(v2_shown["status"], "completed", "{v2_shown:#}");
    let down_task = task_on(&v2_shown, down);
    let down_task_id = down_task["id"].as_str().unwrap();
    assert_eq!(down_task["status"], "failed", "{v2_shown:#}");
    let of_down = |event: &str| -> Vec<&Value> {
        v2_events
            .iter()
            .filter(|e| e["data"]["task_id"] == down_task_id && e["data"]["event"] == event)
            .collect()
    };
    assert_eq!(
        of_down("dispatch").len() as u64,
        MAX_ATTEMPTS,
        "host {HOSTS}'s task failed after all its attempts: {v2_events:#?}"
    );
    assert_eq!(
        down_task["attempt_number"].as_u64(),
        Some(MAX_ATTEMPTS),
        "{v2_shown:#}"
    );
    let failures: Vec<&Value> = v2_events
        .iter()
        .filter(|e| {
            e["data"]["task_id"] == down_task_id
                && e["data"]["event"]
                    .as_str()
                    .is_some_and(|ev| ev.starts_with("fail"))
        })
        .collect();
    assert_eq!(failures.len() as u64, MAX_ATTEMPTS, "{failures:#?}");
    let failed_at = at_ms(failures.last().unwrap());
    let time_to_fail = failed_at.saturating_sub(stopped_at);
    assert_each_attempt_ran_once(&v2_shown, &v2_events);
    // The policy decided: one failed target of five fails the job.
    assert!(
        v2_events.iter().any(|e| e["data"]["event"] == "fail"
            && e["data"]["task_id"].is_null()
            && e["data"]["cause"].as_str().is_some_and(
                |c| c.contains("1 of 5 targets failed") && c.contains("failure policy")
            )),
        "the job failed by its failure policy: {v2_events:#?}"
    );

    // The rollback job: v1 back on hosts 1 to 4; host 5's rollback task says why it failed.
    let jobs = ok_json(&addr, &["jobs", "list", "--env", &env_id]);
    let rollback_id = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["rollback_of"] == v2_job.as_str())
        .unwrap_or_else(|| panic!("no rollback job of {v2_job}: {jobs:#}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rollback = wait_terminal(&addr, &rollback_id, JOB_LIMIT);
    let v2_final = show(&addr, &v2_job);
    let (_, rollback_events) = watch_all(&addr, &rollback_id);
    for i in 1..HOSTS {
        assert_eq!(
            running_digest(&container(i)),
            digest_of(&images.v1),
            "host {i} runs its last-known-good v1: {rollback:#}"
        );
        assert_eq!(serves(&container(i), "/version"), "v1", "host {i}");
        let task = task_on(&rollback, &target_ids[usize::from(i) - 1]);
        assert_eq!(task["status"], "succeeded", "host {i}: {rollback:#}");
    }
    let down_rollback = task_on(&rollback, down);
    assert_eq!(down_rollback["status"], "failed", "{rollback:#}");
    let down_rollback_id = down_rollback["id"].as_str().unwrap();
    let why: Vec<String> = rollback_events
        .iter()
        .filter(|e| {
            e["data"]["task_id"] == down_rollback_id
                && e["data"]["event"]
                    .as_str()
                    .is_some_and(|ev| ev.starts_with("fail"))
        })
        .map(|e| e["data"]["cause"].as_str().unwrap_or_default().to_owned())
        .collect();
    let last_why = why
        .last()
        .unwrap_or_else(|| panic!("no failure of host {HOSTS}'s rollback: {rollback_events:#?}"));
    assert!(
        last_why.contains(&hosts.host(HOSTS)) && last_why.to_lowercase().contains("connect"),
        "host {HOSTS}'s rollback failure names its address and the connection: {why:#?}"
    );
    assert_ne!(rollback["status"], "completed", "{rollback:#}");
    assert_each_attempt_ran_once(&rollback, &rollback_events);

    println!(
        "ssh_outage: host {HOSTS}'s task failed {:.2} s after its sshd went down ({MAX_ATTEMPTS} attempts); \
         the v2 job settled {:.2} s after the outage as `{}`, then `{}`; the rollback job ended `{}`; \
         host {HOSTS}'s rollback: {last_why}",
        Duration::from_millis(time_to_fail).as_secs_f64(),
        settled_after.as_secs_f64(),
        v2_shown["status"].as_str().unwrap_or(""),
        v2_final["status"].as_str().unwrap_or(""),
        rollback["status"].as_str().unwrap_or(""),
    );
    server.terminate();
}
