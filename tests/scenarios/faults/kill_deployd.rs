//! Fault scenario `kill_deployd`: SIGKILL a real `deployd` at seeded random points across 50 jobs (SQLite and PostgreSQL), restart it each time, and check every job against what runs on the targets.
//!
//! Setup (real components only): two sshd hosts from the testkit in front of the
//! local Docker Engine, a loopback registry with the v1, v2 and v3-broken images,
//! and a debug `deployd` (SQLite in its data dir, or a testkit PostgreSQL through
//! `DEPLOYD_DATABASE_URL`). Two environments, one target each (containers
//! `<prefix>a-web` and `<prefix>b-web`), a command health check probing every
//! 100 ms and a 300 ms soak.
//!
//! The run: 25 cycles, each starting one job in each environment, so 50 jobs.
//! Healthy jobs alternate v1 and v2 (every job changes what runs); about a
//! quarter are v3-broken with `auto_rollback`, which fails its health check and is
//! rolled back to the last-known-good release. Cycles 0 and 1 are not killed: they
//! measure how long each phase of a healthy and of a broken job lasts (and warm the
//! image pulls). In each later cycle one job leads: a phase is drawn for it
//! (created, dispatch, swap, soak, completion for a healthy job; for a broken one
//! instead of completion: its wind-down until the rollback job is created, the
//! rollback job created but not yet dispatched, and the rollback job running until
//! its end settles the original) and a delay inside that phase's measured
//! duration; the test polls
//! the job (`GET /jobs/{id}` every few ms) until it is in that phase, waits the
//! delay and SIGKILLs deployd. The other job was started a random head start
//! earlier and is killed wherever it then is. deployd is restarted at once on the
//! same data dir and database (same lease owner, so it resumes its jobs at once).
//! Phase durations are refined from every job's events before its kill.
//!
//! Checked for every job, once it settles (bounded waits):
//! - its status is what it must be: completed (healthy) or rolled_back (broken;
//!   its rollback job completed, on the last-known-good release);
//! - the target's container `<prefix>{a,b}-web` runs, and its `stella.digest` label
//!   is the job's release digest (completed) or the last-known-good one (rolled
//!   back); it was started by a task of this environment that deployed that
//!   digest (the job's own, or an earlier one whose kept `-previous` container a
//!   deploy of the same digest starts again);
//! - no task attempt ran twice (`assert_each_attempt_ran_once`, job and rollback job);
//! - no event lost: per job and per task the transitions form one chain (each
//!   `from` is the previous `to`, from the job's `create` event, and from `pending`
//!   for a task) that ends in the status the job and each task have now (the task's
//!   final status is its last recorded transition); sequence numbers strictly
//!   increase; the `deployctl jobs watch` started right after the job was created,
//!   following across the kill and the restart, printed exactly the events the log
//!   holds, and exited as the job ended (0 completed, 3 rolled back).
//!
//! At the end: on SQLite the event sequence numbers of all jobs are exactly 1..=n
//! (no gap, no duplicate); on PostgreSQL (whose sequences hand out values that an
//! aborted transaction does not give back) no duplicate, and a gap only where a
//! kill happened between the events on either side of it; deployd never panicked;
//! no `-next` container is left; at least four different phases were hit, and at
//! least three quarters of the leading jobs and half of the other jobs of the
//! killed cycles were cut off mid-life.
//!
//! The phase a kill hit is read after the fact from the job's events (the last
//! event before the kill). The seed, each kill point and the histogram are
//! printed. Reproduce a run with its seed (the timing still varies with the
//! machine's load, so the phases hit may differ slightly):
//! `DEPLOY_FAULT_SEED=<seed> cargo nextest run -p deploy-tests faults::kill --no-capture`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use deploy_testkit::{
    ContainerCleanup, Postgres, Registry, SshdHosts, TestImages, free_port, run_checked, temp_dir,
};
use serde_json::{Value, json};

use crate::deployd_e2e::{
    KEY_VAR, KillOnDrop, assert_each_attempt_ran_once, at_ms, now_ms, target_body, watch_all,
};
use crate::deployd_proc::{
    Deployd, api_get, api_post, ctl_command, json_lines, tail, wait_settled,
};

/// The seed when `DEPLOY_FAULT_SEED` is not set.
const DEFAULT_SEED: u64 = 0x5EED_0000_0011;
/// Jobs per backend (two per cycle).
const JOBS: usize = 50;
/// Cycles that are not killed: they measure the phases.
const CALIBRATION_CYCLES: usize = 2;
/// The health soak of every target.
const SOAK_MS: u64 = 300;
/// The health probe interval of every target.
const PROBE_MS: u64 = 100;
/// Bound on the wait for a job to settle after the restart.
const SETTLE_BOUND: Duration = Duration::from_secs(120);

#[test]
fn sigkill_across_50_jobs_on_sqlite() {
    run(Backend::Sqlite);
}

#[test]
fn sigkill_across_50_jobs_on_postgres() {
    run(Backend::Postgres);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// splitmix64: small, seeded, reproducible (no dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
}

/// Where in a job's life a kill landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Created, not yet claimed (`pending`).
    Created,
    /// Claimed: preparing, running with its task not yet started (dispatch written or not).
    Dispatch,
    /// The task runs: pull, start of `-next`, the swap.
    Swap,
    /// The task verifies: health probes and soak.
    Soak,
    /// The task succeeded; the job's waves and final verification complete it.
    Completion,
    /// The task failed; the job fails and winds down until its rollback job is created.
    WindDown,
    /// The rollback job exists (the original is `rolling_back`), not yet dispatched.
    RollbackQueued,
    /// The rollback job's task was dispatched; its end settles the original.
    RollbackRun,
    /// The job had settled before the kill.
    AfterEnd,
}

const HEALTHY_PHASES: [Phase; 5] = [
    Phase::Created,
    Phase::Dispatch,
    Phase::Swap,
    Phase::Soak,
    Phase::Completion,
];
const BROKEN_PHASES: [Phase; 7] = [
    Phase::Created,
    Phase::Dispatch,
    Phase::Swap,
    Phase::Soak,
    Phase::WindDown,
    Phase::RollbackQueued,
    Phase::RollbackRun,
];

/// Measured phase durations of one kind of job (running means, in ms).
#[derive(Debug, Default)]
struct Durations(BTreeMap<Phase, f64>);

impl Durations {
    /// Blends an observed duration into the running mean (the first one is taken as is).
    fn observe(&mut self, phase: Phase, ms: u64) {
        let ms = ms as f64;
        self.0
            .entry(phase)
            .and_modify(|d| *d = 0.7 * *d + 0.3 * ms)
            .or_insert(ms);
    }

    /// A delay into `phase`: within the first half of its mean duration. The phase is
    /// seen by polling (late by a request's latency) and on a busy machine often runs
    /// shorter than its mean: aimed anywhere up to 90%, one kill in three meant for the
    /// short completion phase (~150 ms) landed after the job had ended.
    fn pick(&self, phase: Phase, rng: &mut Rng) -> u64 {
        let d = self.0.get(&phase).copied().unwrap_or(300.0).max(20.0);
        rng.between(0, (0.5 * d) as u64)
    }

    /// The mean time from creation to the end of the job.
    fn total(&self) -> u64 {
        self.0.values().sum::<f64>() as u64
    }
}

/// The phase a job is in, from its status and its task's (as `GET /jobs/{id}` shows
/// them), and for a `rolling_back` job its rollback job's.
fn phase_of(job: &Value, rollback: Option<&Value>) -> Phase {
    let task = job["tasks"][0]["status"].as_str().unwrap_or("");
    match (job["status"].as_str().unwrap_or(""), task) {
        ("completed" | "rolled_back", _) => Phase::AfterEnd,
        ("rolling_back", _) => {
            let dispatched = rollback.is_some_and(|r| {
                !matches!(r["status"].as_str(), Some("pending" | "preparing"))
                    || r["tasks"][0]["status"] != "pending"
            });
            if dispatched {
                Phase::RollbackRun
            } else {
                Phase::RollbackQueued
            }
        }
        ("failed", _) | (_, "failed") => Phase::WindDown,
        ("completing", _) | (_, "succeeded") => Phase::Completion,
        (_, "verifying") => Phase::Soak,
        (_, "running") => Phase::Swap,
        ("pending", _) => Phase::Created,
        _ => Phase::Dispatch,
    }
}

/// The rollback job of `job` (as `GET /jobs/{id}` shows it), if one was created.
fn rollback_job_of(addr: &str, job: &Value) -> Option<Value> {
    let id = job["id"].as_str()?;
    let env = job["environment_id"].as_str()?;
    let (status, list) = api_get(addr, &format!("/api/v1/jobs?environment={env}&limit=5"));
    assert_eq!(status, 200, "{list:#}");
    let listed = list["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["rollback_of"] == id)?
        .clone();
    let rollback_id = listed["id"].as_str()?;
    let (status, rollback) = api_get(addr, &format!("/api/v1/jobs/{rollback_id}"));
    assert_eq!(status, 200, "{rollback:#}");
    Some(rollback)
}

/// The events of one job read from the store after the fact (event, task, from, to,
/// at), and those of its rollback job (empty when it has none).
struct Timeline<'a>(&'a [Value], &'a [Value]);

impl Timeline<'_> {
    /// When the first event named `name` (job level if `task` is false) happened.
    fn first(&self, name: &str, task: bool) -> Option<u64> {
        self.0
            .iter()
            .find(|e| e["data"]["event"] == name && e["data"]["task_id"].is_string() == task)
            .map(at_ms)
    }

    /// When the first task event moving to `to` happened.
    fn task_to(&self, to: &str) -> Option<u64> {
        self.0
            .iter()
            .find(|e| e["data"]["to_status"] == to && e["data"]["task_id"].is_string())
            .map(at_ms)
    }

    /// The phase the job was in at `t` (ms since the epoch): [`phase_of`] the job and
    /// task statuses of the last events before `t`.
    fn phase_at(&self, t: u64) -> Phase {
        let shown_at = |events: &[Value]| {
            let before: Vec<&Value> = events.iter().filter(|e| at_ms(e) <= t).collect();
            let last_to = |task: bool| {
                before
                    .iter()
                    .rev()
                    .find(|e| e["data"]["task_id"].is_string() == task)
                    .map_or("pending", |e| e["data"]["to_status"].as_str().unwrap_or(""))
            };
            json!({"status": last_to(false), "tasks": [{"status": last_to(true)}]})
        };
        phase_of(&shown_at(self.0), Some(&shown_at(self.1)))
    }

    /// The durations of the phases that began and ended before `kill` (all of them when
    /// not killed): undisturbed by a kill.
    fn observe(&self, created: u64, kill: Option<u64>, durations: &mut Durations) {
        let cut = kill.unwrap_or(u64::MAX);
        let seen = |t: Option<u64>| t.filter(|&t| t <= cut);
        let bounds = [
            (
                Phase::Created,
                Some(created),
                seen(self.first("start", false)),
            ),
            (
                Phase::Dispatch,
                seen(self.first("start", false)),
                seen(self.task_to("running")),
            ),
            (
                Phase::Swap,
                seen(self.task_to("running")),
                seen(self.task_to("verifying")),
            ),
            (
                Phase::Soak,
                seen(self.task_to("verifying")),
                seen(self.task_to("succeeded").or_else(|| self.task_to("failed"))),
            ),
            (
                Phase::Completion,
                seen(self.task_to("succeeded")),
                seen(self.first("verification_passed", false)),
            ),
            (
                Phase::WindDown,
                seen(self.task_to("failed")),
                seen(self.first("rollback_started", false)),
            ),
            (
                Phase::RollbackQueued,
                seen(self.first("rollback_started", false)),
                seen(Timeline(self.1, &[]).first("dispatch", true)),
            ),
            (
                Phase::RollbackRun,
                seen(Timeline(self.1, &[]).first("dispatch", true)),
                seen(self.first("rollback_succeeded", false)),
            ),
        ];
        for (phase, start, end) in bounds {
            if let (Some(start), Some(end)) = (start, end) {
                durations.observe(phase, end.saturating_sub(start));
            }
        }
    }
}

/// One environment with its one target, and what the test knows runs there.
struct Env {
    id: String,
    container: String,
    /// The release (name) the target runs, after its last completed job.
    current: Option<&'static str>,
    /// Per digest, the tasks of this environment that deployed it: the only ones that
    /// may have started the container running it (a deploy of the digest the kept
    /// `-previous` container has starts that one again instead of a new one).
    origins: BTreeMap<String, BTreeSet<String>>,
}

/// One job of a cycle.
struct Planned {
    env: usize,
    n: usize,
    release: &'static str,
    /// The phase to kill it in and the delay into that phase (the leading job of a
    /// cycle after calibration), or none.
    kill: Option<(Phase, u64)>,
    /// How long before the next job this one is started (ms).
    head_start: u64,
}

struct Started {
    plan: Planned,
    job: String,
    created_ms: u64,
    watch_out: std::path::PathBuf,
    watcher: KillOnDrop,
}

/// Progress lines of one run, printed when it ends (also when it fails), and written
/// as they come to a file that outlives a run killed from outside (a timeout).
struct Progress {
    label: &'static str,
    lines: Vec<String>,
    live: Option<std::fs::File>,
    path: std::path::PathBuf,
}

impl Progress {
    fn new(label: &'static str, path: &std::path::Path) -> Self {
        Self {
            label,
            lines: Vec::new(),
            live: std::fs::File::create(path).ok(),
            path: path.to_path_buf(),
        }
    }

    fn say(&mut self, line: String) {
        if let Some(file) = &mut self.live {
            let _ = std::io::Write::write_all(file, format!("{line}\n").as_bytes());
        }
        self.lines.push(line);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "kill_deployd[{}]: what happened before the failure above:",
                self.label
            );
        }
        for line in &self.lines {
            eprintln!("kill_deployd[{}]: {line}", self.label);
        }
        // Kept after a failure, next to what the test left for a post-mortem.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn run(backend: Backend) {
    let started = Instant::now();
    let seed = std::env::var("DEPLOY_FAULT_SEED")
        .ok()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("DEPLOY_FAULT_SEED={s:?} is not a u64"))
        })
        .unwrap_or(DEFAULT_SEED);
    let label = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let live =
        std::env::temp_dir().join(format!("kill_deployd-{label}-{}.log", std::process::id()));
    eprintln!(
        "kill_deployd[{label}]: seed {seed} (DEPLOY_FAULT_SEED={seed} reproduces it); progress also in {}",
        live.display()
    );
    // Progress lines are held and printed when the test ends, after a failure's panic
    // message: CI shows the start of a failing test's output, so the cause comes first.
    let mut progress = Progress::new(label, &live);
    let mut rng = Rng(seed);

    let prefix = format!("kd{}{}-", std::process::id(), &label[..1]);
    // First: containers go before the registry and the hosts stop.
    let _cleanup = ContainerCleanup::new(&prefix);
    let hosts = SshdHosts::start(2).unwrap();
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    let postgres = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(Postgres::start().unwrap()),
    };
    let database_url = postgres
        .as_ref()
        .map(|pg| pg.create_database("killdeployd").unwrap());
    progress.say(format!(
        "fixtures up in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let data = temp_dir("kill-deployd-").unwrap();
    let key = std::fs::read_to_string(hosts.client_key()).unwrap();
    let mut env_vars = vec![(KEY_VAR, key.as_str())];
    if let Some(url) = &database_url {
        env_vars.push(("DEPLOYD_DATABASE_URL", url.as_str()));
    }
    let built = Instant::now();
    crate::deployd_proc::binaries();
    progress.say(format!(
        "deployd and deployctl built (or found fresh) in {:.1} s",
        built.elapsed().as_secs_f64()
    ));
    let port = free_port().unwrap();
    let start_deployd = || Deployd::start(data.path(), port, &hosts.known_hosts(), &env_vars);
    let mut server = Some(start_deployd());
    let addr = server.as_ref().unwrap().addr.clone();

    let mut envs = Vec::new();
    for (i, name) in [(1u8, "a"), (2, "b")] {
        let (status, env) = api_post(&addr, "/api/v1/environments", &json!({"name": name}));
        assert_eq!(status, 201, "{env:#}");
        let id = env["id"].as_str().unwrap().to_owned();
        let env_prefix = format!("{prefix}{name}-");
        let mut body = target_body(&hosts, i, &env_prefix, SOAK_MS);
        body["health_check"]["interval_ms"] = json!(PROBE_MS);
        let (status, target) =
            api_post(&addr, &format!("/api/v1/environments/{id}/targets"), &body);
        assert_eq!(status, 201, "{target:#}");
        envs.push(Env {
            id,
            container: format!("{env_prefix}web"),
            current: None,
            origins: BTreeMap::new(),
        });
    }
    let mut releases: BTreeMap<&'static str, (String, String)> = BTreeMap::new();
    for (name, image) in [
        ("v1", &images.v1),
        ("v2", &images.v2),
        ("v3-broken", &images.v3_broken),
    ] {
        let (status, release) = api_post(
            &addr,
            "/api/v1/releases",
            &json!({"name": name, "components": [{"name": "web", "image": image}]}),
        );
        assert_eq!(status, 201, "{release:#}");
        let digest = image.rsplit_once('@').unwrap().1.to_owned();
        releases.insert(name, (release["id"].as_str().unwrap().to_owned(), digest));
    }

    progress.say(format!(
        "deployd serving, environments and releases created after {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let mut healthy = Durations::default();
    let mut broken = Durations::default();
    let mut histogram: BTreeMap<Phase, usize> = BTreeMap::new();
    // Jobs of killed cycles cut off before their end: the leading job (killed in the
    // phase it was aimed at) and the other one.
    let mut leads_mid_life = 0usize;
    let mut others_mid_life = 0usize;
    // (seq, at) of every event of every job, and when each kill happened.
    let mut all_seqs: Vec<(u64, u64)> = Vec::new();
    let mut kill_times: Vec<u64> = Vec::new();
    let mut kills = 0usize;
    let mut n = 0usize;
    for cycle in 0..JOBS / 2 {
        // Plan both jobs: the release each runs and, after calibration, the phase the
        // leading job is killed in (the other one is killed wherever it is then).
        let lead = cycle % 2;
        let mut plans = Vec::new();
        for (e, env) in envs.iter().enumerate() {
            let release = match (cycle, env.current) {
                (0, _) | (_, None) => "v1",
                (1, _) if e == 1 => "v3-broken",
                (c, Some(_)) if c >= CALIBRATION_CYCLES && rng.below(4) == 0 => "v3-broken",
                (_, Some("v1")) => "v2",
                (_, Some(_)) => "v1",
            };
            let durations = if release == "v3-broken" {
                &broken
            } else {
                &healthy
            };
            let kill = (cycle >= CALIBRATION_CYCLES && e == lead).then(|| {
                let phases: &[Phase] = if release == "v3-broken" {
                    &BROKEN_PHASES
                } else {
                    &HEALTHY_PHASES
                };
                let phase = phases[rng.below(phases.len() as u64) as usize];
                (phase, durations.pick(phase, &mut rng))
            });
            plans.push(Planned {
                env: e,
                n,
                release,
                kill,
                head_start: 0,
            });
            n += 1;
        }
        // The other job is started first, by a head start that puts the kill (expected
        // when the leading job reaches its phase, plus the delay) inside its measured life.
        if let Some((phase, delay)) = plans[lead].kill {
            let durations_of = |release: &str| {
                if release == "v3-broken" {
                    &broken
                } else {
                    &healthy
                }
            };
            let lead_durations = durations_of(plans[lead].release);
            let lead_offset = delay
                + lead_durations
                    .0
                    .iter()
                    .filter(|(p, _)| {
                        **p < phase && !(phase >= Phase::WindDown && **p == Phase::Completion)
                    })
                    .map(|(_, d)| *d as u64)
                    .sum::<u64>();
            let other = &mut plans[1 - lead];
            let room = durations_of(other.release)
                .total()
                .saturating_sub(lead_offset);
            // Within the first half of the room: jobs on a busy machine often run
            // shorter than their mean, and a head start near the whole room had the
            // other job over before the kill in up to half of the cycles.
            other.head_start = rng.below(room / 2 + 1);
        }
        plans.sort_by_key(|p| p.kill.is_some());
        let mut jobs: Vec<Started> = Vec::new();
        for plan in plans {
            let env = &envs[plan.env];
            let (release_id, _) = &releases[plan.release];
            let job = start_job(&addr, &env.id, release_id, plan.release == "v3-broken");
            let created_ms = now_ms();
            let watch_out = data.path().join(format!("watch-{}.jsonl", plan.n));
            let watcher = KillOnDrop(
                ctl_command(&addr, &["jobs", "watch", &job, "--output", "json"])
                    .stdout(std::fs::File::create(&watch_out).unwrap())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            std::thread::sleep(Duration::from_millis(plan.head_start));
            jobs.push(Started {
                plan,
                job,
                created_ms,
                watch_out,
                watcher,
            });
        }
        // The kill: once the leading job is seen in its phase (polled), after the delay.
        let mut killed_ms = None;
        if let Some(lead) = jobs.iter().find(|j| j.plan.kill.is_some()) {
            let (phase, delay) = lead.plan.kill.unwrap();
            let polled = Instant::now();
            loop {
                let (status, shown) = api_get(&addr, &format!("/api/v1/jobs/{}", lead.job));
                assert_eq!(status, 200, "{shown:#}");
                let rollback = (shown["status"] == "rolling_back")
                    .then(|| rollback_job_of(&addr, &shown))
                    .flatten();
                if phase_of(&shown, rollback.as_ref()) >= phase {
                    break;
                }
                assert!(
                    polled.elapsed() < SETTLE_BOUND,
                    "job {} never reached {phase:?}: {shown:#}",
                    lead.job
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(delay));
            let t = now_ms();
            server.take().unwrap().kill();
            kills += 1;
            killed_ms = Some(t);
            kill_times.push(t);
            server = Some(start_deployd());
        }
        let restarted = Instant::now();
        for started in &mut jobs {
            let job = wait_settled(&addr, &started.job, server.as_ref().unwrap(), SETTLE_BOUND);
            let env = &mut envs[started.plan.env];
            let outcome = check_job(&addr, started, &job, env, &releases, &mut all_seqs);
            let timeline = Timeline(&outcome.events, &outcome.rollback_events);
            let durations = if started.plan.release == "v3-broken" {
                &mut broken
            } else {
                &mut healthy
            };
            timeline.observe(started.created_ms, killed_ms, durations);
            let line = match (started.plan.kill, killed_ms) {
                (_, None) => "not killed (calibration)".to_owned(),
                (aim, Some(k)) => {
                    let hit = timeline.phase_at(k);
                    *histogram.entry(hit).or_default() += 1;
                    if hit != Phase::AfterEnd {
                        if aim.is_some() {
                            leads_mid_life += 1;
                        } else {
                            others_mid_life += 1;
                        }
                    }
                    let aim = aim.map_or_else(
                        || format!("started {} ms before the other", started.plan.head_start),
                        |(phase, delay)| format!("aimed at {phase:?} + {delay} ms"),
                    );
                    format!(
                        "killed {} ms after creation ({aim}): hit {hit:?}",
                        k.saturating_sub(started.created_ms)
                    )
                }
            };
            progress.say(format!(
                "job {:2} env {} {:9} {}: {line}; {} {:.1} s after the restart",
                started.plan.n,
                ["a", "b"][started.plan.env],
                started.plan.release,
                started.job,
                job["status"].as_str().unwrap_or("?"),
                restarted.elapsed().as_secs_f64(),
            ));
        }
        if cycle + 1 == CALIBRATION_CYCLES {
            progress.say(format!(
                "measured phase durations (ms): healthy {:?}, broken {:?}",
                healthy.0, broken.0
            ));
        }
    }

    // Every event of every job (rollback jobs included) once; on SQLite, no gap either.
    all_seqs.sort_unstable();
    let at: BTreeMap<u64, u64> = all_seqs.iter().copied().collect();
    assert_eq!(
        at.len(),
        all_seqs.len(),
        "an event sequence number appears twice"
    );
    let max = at.keys().last().copied().unwrap_or(0);
    let gaps: Vec<u64> = (1..=max).filter(|s| !at.contains_key(s)).collect();
    match backend {
        Backend::Sqlite => assert!(gaps.is_empty(), "event seqs missing: {gaps:?}"),
        // A PostgreSQL sequence value drawn by a transaction that a kill aborted is not
        // given back, so a gap is no lost event (the chains above prove none was lost)
        // as long as a kill happened between the events on either side of it.
        Backend::Postgres => {
            for gap in &gaps {
                let before = at.range(..gap).next_back().map_or(0, |(_, t)| *t);
                let after = at.range(gap..).next().map_or(u64::MAX, |(_, t)| *t);
                assert!(
                    kill_times
                        .iter()
                        .any(|k| before <= k + 1_000 && k.saturating_sub(1_000) <= after),
                    "event seq {gap} is missing and no kill happened near it \
                     (neighbours at {before} and {after}; kills at {kill_times:?})"
                );
            }
            progress.say(format!(
                "{} events; sequence values of aborted transactions (each next to a kill): {gaps:?}",
                all_seqs.len()
            ));
        }
    }
    // No `-next` container left behind, and each target runs its container.
    let names = crate::agent_e2e::containers(&prefix);
    assert!(
        !names.iter().any(|n| n.ends_with("-next")),
        "stray -next containers: {names:?}"
    );
    for env in &envs {
        assert!(names.contains(&env.container), "{names:?}");
    }
    progress.say(format!(
        "{kills} kills over {JOBS} jobs; phases hit: {histogram:?}"
    ));
    assert!(
        histogram.keys().filter(|p| **p != Phase::AfterEnd).count() >= 4,
        "kills hit fewer than 4 phases: {histogram:?}"
    );
    // Kills inside jobs, not after them: at least three quarters of the leading jobs
    // (each polled into its phase) and half of the other jobs (each wherever it is
    // then) were cut off mid-life. Measured with these
    // aims, 5 runs beside the rest of the suite: 1 of 115 leading jobs and 20 of 115
    // other jobs had ended before the kill (before, up to 13 of 46 jobs in a run, and
    // more in one CI run, which failed the old bound of two thirds).
    assert!(
        leads_mid_life * 4 >= kills * 3,
        "only {leads_mid_life} of {kills} leading jobs were killed mid-life: {histogram:?}"
    );
    assert!(
        others_mid_life * 2 >= kills,
        "only {others_mid_life} of {kills} other jobs were killed mid-life: {histogram:?}"
    );
    // deployd never panicked across its starts (one log for all of them).
    let server = server.take().unwrap();
    let log = server.stderr();
    assert!(
        !log.contains("panicked"),
        "deployd panicked: {}",
        tail(&log, 80)
    );
    progress.say(format!(
        "{} deployd starts; runners stopped by an error: {}",
        kills + 1,
        log.matches("job runner stopped with an error").count()
    ));
    server.terminate();
    progress.say(format!(
        "{JOBS} jobs, {kills} kills in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
}

/// Creates and approves a promotion of `release` to `env`: the new job's id.
fn start_job(addr: &str, env: &str, release: &str, auto_rollback: bool) -> String {
    let (status, promotion) = api_post(
        addr,
        "/api/v1/promotions",
        &json!({"release_id": release, "environment_id": env}),
    );
    assert_eq!(status, 201, "{promotion:#}");
    let id = promotion["id"].as_str().unwrap();
    let (status, approved) = api_post(
        addr,
        &format!("/api/v1/promotions/{id}/approve"),
        &json!({"failure_policy": {"auto_rollback": auto_rollback}}),
    );
    assert_eq!(status, 201, "{approved:#}");
    approved["job"]["id"].as_str().unwrap().to_owned()
}

struct Outcome {
    events: Vec<Value>,
    /// The rollback job's transitions (empty for a healthy job).
    rollback_events: Vec<Value>,
}

/// Checks a settled job against the target, its events and its follower; updates `env`.
fn check_job(
    addr: &str,
    started: &mut Started,
    job: &Value,
    env: &mut Env,
    releases: &BTreeMap<&'static str, (String, String)>,
    all_seqs: &mut Vec<(u64, u64)>,
) -> Outcome {
    let id = &started.job;
    let broken = started.plan.release == "v3-broken";
    let (code, events) = watch_all(addr, id);
    let expected_status = if broken { "rolled_back" } else { "completed" };
    assert_eq!(
        job["status"], expected_status,
        "job {id} ({}): {job:#}\n{events:#?}",
        started.plan.release
    );
    assert_eq!(code, Some(if broken { 3 } else { 0 }), "jobs watch {id}");
    let transitions: Vec<Value> = events
        .iter()
        .filter(|e| e["event"] == "transition")
        .cloned()
        .collect();
    assert_chains(job, &transitions);
    assert_each_attempt_ran_once(job, &transitions);
    all_seqs.extend(transitions.iter().map(|e| (seq_of(e), at_ms(e))));

    // The follower started right after creation saw exactly the log, across the kill.
    let follow_started = Instant::now();
    let follower_code = loop {
        if let Some(status) = started.watcher.0.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            follow_started.elapsed() < Duration::from_secs(60),
            "jobs watch {id} did not end within 60 s of the job settling"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let followed = json_lines(&std::fs::read(&started.watch_out).unwrap());
    let followed_seqs: Vec<u64> = followed
        .iter()
        .filter(|e| e["event"] == "transition")
        .map(seq_of)
        .collect();
    let logged_seqs: Vec<u64> = transitions.iter().map(seq_of).collect();
    assert_eq!(
        followed_seqs, logged_seqs,
        "job {id}: the follower across the kill saw other events than the log holds"
    );
    assert_eq!(follower_code, code, "job {id}: the follower's exit code");

    // What runs on the target.
    let (release_id, digest) = &releases[started.plan.release];
    let (running_digest, task_label) = inspect(&env.container);
    let task_of = |job: &Value| job["tasks"][0]["id"].as_str().unwrap().to_owned();
    let mut rollback_events = Vec::new();
    if broken {
        let good = env.current.expect("a broken job follows a completed one");
        let (good_id, good_digest) = &releases[good];
        assert_eq!(
            &running_digest, good_digest,
            "job {id} rolled back: {} must run {good}",
            env.container
        );
        let (status, list) = api_get(
            addr,
            &format!("/api/v1/jobs?environment={}&limit=5", env.id),
        );
        assert_eq!(status, 200, "{list:#}");
        let rollback = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["rollback_of"] == id.as_str())
            .unwrap_or_else(|| panic!("no rollback job of {id}: {list:#}"));
        let rollback_id = rollback["id"].as_str().unwrap();
        let (_, rollback) = api_get(addr, &format!("/api/v1/jobs/{rollback_id}"));
        assert_eq!(rollback["status"], "completed", "{rollback:#}");
        assert_eq!(&rollback["release_id"], good_id.as_str(), "{rollback:#}");
        let (code, events) = watch_all(addr, rollback_id);
        assert_eq!(code, Some(0), "jobs watch {rollback_id}");
        let transitions: Vec<Value> = events
            .iter()
            .filter(|e| e["event"] == "transition")
            .cloned()
            .collect();
        assert_chains(&rollback, &transitions);
        assert_each_attempt_ran_once(&rollback, &transitions);
        let origins = env.origins.entry(good_digest.clone()).or_default();
        origins.insert(task_of(&rollback));
        assert!(
            origins.contains(&task_label),
            "job {id}: {} was started by task {task_label}, which never deployed {good}: {origins:?}",
            env.container
        );
        env.origins
            .entry(digest.clone())
            .or_default()
            .insert(task_of(job));
        all_seqs.extend(transitions.iter().map(|e| (seq_of(e), at_ms(e))));
        rollback_events = transitions;
    } else {
        assert_eq!(
            &running_digest, digest,
            "job {id} completed: {} must run {}",
            env.container, started.plan.release
        );
        assert_eq!(&job["release_id"], release_id.as_str());
        // Started by this job's task, or by an earlier task on the same digest (kept as
        // `-previous` and started again).
        let origins = env.origins.entry(digest.clone()).or_default();
        origins.insert(task_of(job));
        assert!(
            origins.contains(&task_label),
            "job {id}: {} was started by task {task_label}, which never deployed {}: {origins:?}",
            env.container,
            started.plan.release
        );
        env.current = Some(started.plan.release);
    }
    Outcome {
        events: transitions,
        rollback_events,
    }
}

fn seq_of(event: &Value) -> u64 {
    event["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {event}"))
}

/// Per entity (the job, each task) the transitions form one chain from `pending` to the
/// entity's current status; sequence numbers strictly increase.
fn assert_chains(job: &Value, transitions: &[Value]) {
    let id = job["id"].as_str().unwrap();
    let seqs: Vec<u64> = transitions.iter().map(seq_of).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "job {id}: seqs not strictly increasing: {seqs:?}"
    );
    let mut entities: Vec<(Option<&str>, &str)> = vec![(None, job["status"].as_str().unwrap())];
    for task in job["tasks"].as_array().unwrap() {
        entities.push((task["id"].as_str(), task["status"].as_str().unwrap()));
    }
    for (entity, now) in entities {
        // A job's log starts with its `create` event (from "" to pending); a task's
        // with its first transition out of pending.
        let mut status = if entity.is_none() { "" } else { "pending" };
        for e in transitions
            .iter()
            .filter(|e| e["data"]["task_id"].as_str() == entity)
        {
            let from = e["data"]["from_status"].as_str().unwrap();
            assert_eq!(
                from, status,
                "job {id}, {entity:?}: an event is missing before {e}: {transitions:#?}"
            );
            status = e["data"]["to_status"].as_str().unwrap();
        }
        assert_eq!(
            status, now,
            "job {id}, {entity:?}: the last transition is not the status it has: {transitions:#?}"
        );
    }
}

/// The `stella.digest` and `stella.task` labels of running container `name`.
fn inspect(name: &str) -> (String, String) {
    let out = run_checked(
        "docker",
        &[
            "inspect",
            "--type",
            "container",
            "--format",
            r#"{{.State.Running}} {{index .Config.Labels "stella.digest"}} {{index .Config.Labels "stella.task"}}"#,
            name,
        ],
    )
    .unwrap_or_else(|e| panic!("docker inspect {name}: {e}"));
    let parts: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(parts.first(), Some(&"true"), "{name} does not run: {out}");
    (
        parts.get(1).copied().unwrap_or("").to_owned(),
        parts.get(2).copied().unwrap_or("").to_owned(),
    )
}
