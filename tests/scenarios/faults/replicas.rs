//! Fault scenario `replicas`: two `deployd` replicas on one PostgreSQL; the one running a job is SIGKILLed, and the other takes the job over once its lease expires and finishes it.
//!
//! Real processes and peers only: one testkit PostgreSQL, two deployd processes
//! (separate data directories, owners `replica-a` and `replica-b`, a 3 s job lease
//! through `DEPLOYD_JOB_LEASE_MS`), one sshd host in front of the Docker Engine, a
//! loopback registry with the v1/v2 test images. Three jobs in a row; each time
//! the test finds which replica holds the job (`jobs.claimed_by`, read with psql:
//! the API does not expose the holder), starts `deployctl jobs watch` on the
//! other one, and SIGKILLs the holder, in alternating phases: during the task's
//! health soak, and as soon as the task is dispatched (inside the container swap).
//!
//! Checked each time: the survivor claims the job only after the killed replica's
//! lease expired (its claim time, read back from the lease it wrote, is after the
//! dead lease's `lease_until`) and within the lease plus a margin; the job
//! completes; no task attempt ran twice (`assert_each_attempt_ran_once`); the
//! watcher on the survivor saw every stored event of the job once, in order, and
//! its end; the survivor answered every authenticated API call made every 100 ms
//! during the whole round; the target runs the job's release under the container
//! name and nothing else with the test's prefix runs (no `-next` left behind).
//! The killed replica is started again (same data dir, so same owner) before the
//! next round. Takeover times (kill -> survivor's claim, kill -> job completed)
//! are printed for docs/benchmarks.md, not asserted beyond the lease bound.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use deploy_testkit::{
    ContainerCleanup, Postgres, Registry, SshdHosts, TestImages, free_port, temp_dir,
};
use serde_json::Value;

use crate::deployd_e2e::{
    KEY_VAR, KillOnDrop, assert_each_attempt_ran_once, at_ms, now_ms, serves, target_body,
    watch_all,
};
use crate::deployd_proc::{
    ADMIN_TOKEN, Deployd, api_post, create_release, ctl_command, json_lines, ok_json,
};

/// The job lease both replicas run with.
const LEASE_MS: u64 = 3_000;

/// How long the task's health soak lasts: long enough to kill inside it.
const SOAK_MS: u64 = 5_000;

/// Slack on top of the lease for the survivor's claim: its poll interval (500 ms)
/// plus a loaded shared machine.
const TAKEOVER_MARGIN_MS: u64 = 3_000;

/// Starts a deployd on PostgreSQL `url` as `owner` with a `lease_ms` job lease.
pub(crate) fn start_on_postgres(
    data: &Path,
    port: u16,
    hosts: &SshdHosts,
    key: &str,
    url: &str,
    owner: &str,
    lease_ms: u64,
) -> Deployd {
    let lease = lease_ms.to_string();
    Deployd::start(
        data,
        port,
        &hosts.known_hosts(),
        &[
            (KEY_VAR, key),
            ("DEPLOYD_DATABASE_URL", url),
            ("DEPLOYD_OWNER", owner),
            ("DEPLOYD_JOB_LEASE_MS", &lease),
        ],
    )
}

/// `GET path` with the admin token over plain HTTP/1.1, bounded by 15 s: the status
/// (0 when the connection failed) and the body.
pub(crate) fn api_get(addr: &str, path: &str) -> (u16, String) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    deploy_testkit::http_exchange(addr, &request, Duration::from_secs(15))
        .map_or_else(|_| (0, String::new()), |r| (r.status, r.body))
}

/// Calls `GET path` on `addr` every 100 ms until dropped; remembers every answer
/// that was not 200.
pub(crate) struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u32, Vec<String>)>>,
}

impl Prober {
    pub(crate) fn start(addr: &str, path: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, path, flag) = (addr.to_owned(), path.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut calls, mut bad) = (0, Vec::new());
            // Bounded: at most 10 minutes of probes.
            for _ in 0..6_000 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let (status, body) = api_get(&addr, &path);
                calls += 1;
                if status != 200 {
                    bad.push(format!("{} ms: {status} {body}", now_ms()));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (calls, bad)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops probing: how many calls were made and the answers that were not 200.
    pub(crate) fn finish(mut self) -> (u32, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Containers (all states) whose name starts with `prefix`: `name state` lines, sorted.
pub(crate) fn containers(prefix: &str) -> Vec<String> {
    let out = deploy_testkit::run_checked(
        "docker",
        &[
            "ps",
            "-a",
            "--filter",
            &format!("name=^{prefix}"),
            "--format",
            "{{.Names}} {{.State}}",
        ],
    )
    .unwrap();
    let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// The target after a job: `<prefix>web` runs and serves `version`; the only other
/// container allowed is `<prefix>web-previous` (kept for a fast rollback), stopped:
/// the swap stops it in the background with a 10 s grace, so it is given 30 s
/// (bounded, polled every 500 ms) to stop.
pub(crate) fn assert_target_runs(prefix: &str, version: &str) {
    let container = format!("{prefix}web");
    assert_eq!(serves(&container, "/version"), version);
    let previous = format!("{container}-previous");
    let begun = Instant::now();
    loop {
        let stray: Vec<String> = containers(prefix)
            .into_iter()
            .filter(|line| {
                let (name, state) = line.split_once(' ').unwrap();
                !((name == container && state == "running")
                    || (name == previous && state != "running"))
            })
            .collect();
        if stray.is_empty() {
            return;
        }
        let only_previous_stopping = stray.iter().all(|l| l.starts_with(&format!("{previous} ")));
        assert!(
            only_previous_stopping && begun.elapsed() < Duration::from_secs(30),
            "stray containers on the target after {:.1} s: {stray:?}",
            begun.elapsed().as_secs_f64()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every stored event of `job` (seq, task or job, from, to), from PostgreSQL, in order.
pub(crate) fn stored_events(pg: &Postgres, job: &str) -> Vec<(u64, String, String, String)> {
    pg.query(&format!(
        "SELECT seq, coalesce(task_id::text, 'job'), coalesce(from_status, ''), to_status \
         FROM job_events WHERE job_id = '{job}' ORDER BY seq"
    ))
    .unwrap()
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (
            f[0].parse().unwrap(),
            f[1].to_owned(),
            f[2].to_owned(),
            f[3].to_owned(),
        )
    })
    .collect()
}

/// The stored history of `job` is one unbroken chain per entity: each event of the
/// job, and of each task, starts from the state the previous one ended in.
pub(crate) fn assert_chains_unbroken(events: &[(u64, String, String, String)]) {
    let mut last: std::collections::BTreeMap<&str, &str> = Default::default();
    for (seq, entity, from, to) in events {
        if let Some(prev) = last.get(entity.as_str()) {
            assert_eq!(
                from, prev,
                "event {seq} of {entity} starts from {from}, the previous one ended in {prev}: {events:#?}"
            );
        }
        last.insert(entity, to);
    }
}

/// The watcher saw exactly the stored events, once each, in order, then an `end`
/// with the job's final status.
pub(crate) fn assert_watched_everything(
    watched: &[Value],
    stored: &[(u64, String, String, String)],
    status: &str,
) {
    let seen: Vec<u64> = watched
        .iter()
        .filter(|e| e["event"] == "transition")
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let expected: Vec<u64> = stored.iter().map(|e| e.0).collect();
    assert_eq!(seen, expected, "watched {watched:#?}");
    let end = watched.last().unwrap();
    assert_eq!(end["event"], "end", "{watched:#?}");
    assert_eq!(end["data"]["status"], status, "{watched:#?}");
}

/// `claimed_by`, `lease_until` (ms) of `job`, and the status of its first task.
fn holder(pg: &Postgres, job: &str) -> (String, u64, String) {
    let row = pg
        .query(&format!(
            "SELECT coalesce(j.claimed_by, ''), coalesce(j.lease_until, 0), t.status \
             FROM jobs j JOIN tasks t ON t.job_id = j.id WHERE j.id = '{job}' ORDER BY t.position LIMIT 1"
        ))
        .unwrap();
    let f: Vec<&str> = row.trim().split('|').collect();
    assert_eq!(f.len(), 3, "{row:?}");
    (f[0].to_owned(), f[1].parse().unwrap(), f[2].to_owned())
}

/// Where in the job the holder is killed.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// As soon as the task is dispatched: inside the pull and container swap.
    Swap,
    /// 500 ms into the task's health soak.
    Soak,
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

#[test]
fn the_survivor_takes_over_a_killed_replicas_job_after_the_lease() {
    let prefix = format!("rp{}-", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let pg = Postgres::start().unwrap();
    let hosts = SshdHosts::start(1).unwrap();
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    let key = std::fs::read_to_string(hosts.client_key()).unwrap();
    let owners = ["replica-a", "replica-b"];
    let dirs = [
        temp_dir("faults-replica-a-").unwrap(),
        temp_dir("faults-replica-b-").unwrap(),
    ];
    let ports = [free_port().unwrap(), free_port().unwrap()];
    let start = |i: usize| {
        start_on_postgres(
            dirs[i].path(),
            ports[i],
            &hosts,
            &key,
            &pg.url(),
            owners[i],
            LEASE_MS,
        )
    };
    // One after the other: the first start migrates and stores the admin token.
    let mut replicas = [Some(start(0)), Some(start(1))];
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);

    let env_id = ok_json(&addr(0), &["env", "create", "replicas"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, target) = api_post(
        &addr(0),
        &format!("/api/v1/environments/{env_id}/targets"),
        &target_body(&hosts, 1, &prefix, SOAK_MS),
    );
    assert_eq!(status, 201, "{target:#}");
    let mut releases = Vec::new();
    for (name, image) in [("v1", &images.v1), ("v2", &images.v2)] {
        releases.push((name, create_release(&addr(1), name, image)));
    }

    let rounds = [(Phase::Soak, 0), (Phase::Swap, 1), (Phase::Soak, 0)];
    let (mut takeovers, mut completions) = (Vec::new(), Vec::new());
    for (round, (phase, release)) in rounds.into_iter().enumerate() {
        let (version, release_id) = &releases[release];
        // Created on either replica; whichever polls first claims it.
        let job = ok_json(
            &addr(round % 2),
            &[
                "deploy",
                "--release",
                release_id,
                "--env",
                &env_id,
                "--max-attempts",
                "3",
            ],
        )["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // Wait (bounded) for the phase, then kill whoever holds the job.
        let begun = Instant::now();
        let (victim_owner, seen_status) = loop {
            let (owner, _, status) = holder(&pg, &job);
            let ready = match phase {
                Phase::Swap => ["dispatched", "running", "verifying"].contains(&status.as_str()),
                Phase::Soak => status == "verifying",
            };
            if !owner.is_empty() && ready {
                break (owner, status);
            }
            assert!(
                begun.elapsed() < Duration::from_secs(90),
                "round {round}: job {job} never reached {phase:?}: holder {owner:?}, task {status}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let victim = owners.iter().position(|o| *o == victim_owner).unwrap();
        let survivor = 1 - victim;
        let watch_out = dirs[survivor].path().join(format!("watch-{round}.jsonl"));
        let mut watcher = KillOnDrop(
            ctl_command(
                &addr(survivor),
                &["jobs", "watch", &job, "--output", "json"],
            )
            .stdout(std::fs::File::create(&watch_out).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        );
        let prober = Prober::start(&addr(survivor), &format!("/api/v1/jobs/{job}"));
        if matches!(phase, Phase::Soak) {
            std::thread::sleep(Duration::from_millis(500));
        }
        replicas[victim].take().unwrap().kill();
        let killed_ms = now_ms();
        // The dead replica's lease, as it last wrote it (nobody else may claim before it ends).
        let (owner, dead_until, _) = holder(&pg, &job);
        assert_eq!(
            owner, owners[victim],
            "round {round}: claimed before the lease expired"
        );

        // The survivor's claim: its lease_until minus the lease is when it claimed.
        let begun = Instant::now();
        let claimed_ms = loop {
            let (owner, until, _) = holder(&pg, &job);
            if owner == owners[survivor] {
                break until - LEASE_MS;
            }
            assert!(
                owner == owners[victim] || owner.is_empty(),
                "round {round}: held by {owner:?}"
            );
            assert!(
                begun.elapsed() < Duration::from_secs(60),
                "round {round}: the survivor never claimed job {job}: {}",
                replicas[survivor].as_ref().unwrap().stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            claimed_ms > dead_until,
            "round {round}: claimed at {claimed_ms}, before the dead lease ended at {dead_until}"
        );
        let takeover = claimed_ms.saturating_sub(killed_ms);
        assert!(
            takeover <= LEASE_MS + TAKEOVER_MARGIN_MS,
            "round {round}: takeover took {takeover} ms with a {LEASE_MS} ms lease"
        );

        // The watcher on the survivor ends with the job.
        let begun = Instant::now();
        let code = loop {
            if let Some(status) = watcher.0.try_wait().unwrap() {
                break status.code();
            }
            assert!(
                begun.elapsed() < Duration::from_secs(120),
                "round {round}: jobs watch did not end: {}\n{}",
                std::fs::read_to_string(&watch_out).unwrap(),
                replicas[survivor].as_ref().unwrap().stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let (calls, bad) = prober.finish();
        let watched = json_lines(&std::fs::read(&watch_out).unwrap());
        let mut stderr = String::new();
        watcher
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(code, Some(0), "round {round}: {watched:#?}\n{stderr}");
        assert!(
            bad.is_empty(),
            "round {round}: the survivor failed {} of {calls} API calls: {bad:#?}",
            bad.len()
        );
        let stored = stored_events(&pg, &job);
        assert_watched_everything(&watched, &stored, "completed");
        assert_chains_unbroken(&stored);
        let completed_ms = watched
            .iter()
            .filter(|e| e["event"] == "transition" && e["data"]["to_status"] == "completed")
            .map(at_ms)
            .next_back()
            .unwrap_or_else(|| panic!("no completed event: {watched:#?}"));
        let first_after = watched
            .iter()
            .filter(|e| e["event"] == "transition" && at_ms(e) > killed_ms)
            .map(at_ms)
            .next()
            .unwrap();
        let shown = ok_json(&addr(survivor), &["jobs", "show", &job]);
        assert_eq!(shown["status"], "completed", "{shown:#}");
        let (_, events) = watch_all(&addr(survivor), &job);
        assert_each_attempt_ran_once(&shown, &events);
        assert_target_runs(&prefix, version);
        let attempts = shown["tasks"][0]["attempt_number"].as_u64().unwrap();
        eprintln!(
            "replicas round {round} ({phase:?}, task {seen_status} at the kill, {victim_owner} killed): \
             takeover (kill -> survivor's claim) {takeover} ms, kill -> first survivor event {} ms, \
             kill -> completed {} ms, attempts {attempts}, {calls} API calls on the survivor all 200",
            first_after - killed_ms,
            completed_ms - killed_ms
        );
        takeovers.push(takeover);
        completions.push(completed_ms - killed_ms);
        // The killed replica comes back (same data dir: same owner) for the next round.
        replicas[victim] = Some(start(victim));
    }
    let (min, max) = (
        *takeovers.iter().min().unwrap(),
        *takeovers.iter().max().unwrap(),
    );
    let (cmin, cmax) = (
        *completions.iter().min().unwrap(),
        *completions.iter().max().unwrap(),
    );
    eprintln!(
        "replicas: lease {LEASE_MS} ms, {} kills: takeover median {} ms ({min}..{max}); \
         kill -> completed median {} ms ({cmin}..{cmax}); takeovers {takeovers:?}",
        takeovers.len(),
        median(&mut takeovers.clone()),
        median(&mut completions.clone()),
    );
    for replica in replicas.iter_mut() {
        replica.take().unwrap().terminate();
    }
}
