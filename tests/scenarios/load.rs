//! Load on a real `deployd` process: 200 concurrent readers of the jobs API and 50 SSE followers while a deployment runs, against a baseline without either.
//!
//! Loopback only, bounded in count (every reader makes 5 pairs of requests, `DEPLOY_LOAD_ROUNDS` to change)
//! and in time (every phase under a timeout). The deployment is real: an sshd
//! host on the Docker Engine, the v1 test image, a command health check with a
//! soak of `soak_ms()`, so the job runs for several seconds while the readers read.
//!
//! Asserted: every response is 2xx, the job was running while it was read, and
//! every SSE follower received the job's whole event log, once and in order, and
//! its `end` event with `completed`. Printed (with `--no-capture`): p50/p99/max
//! latency of each phase, requests per second, deployd's peak RSS (`VmHWM`) after
//! each phase and the load average; the figures in docs/benchmarks.md come from here
//! (`DEPLOY_TESTS_DEPLOYD=target/release/deployd` runs a release build of deployd).
//! With `BENCH_REPORT_FILE` set (by `cargo xtask bench`) the loaded phase's figures
//! also go to that file as JSON lines, the baseline phase's beside them.

use std::time::{Duration, Instant};

use deploy_testkit::bench_report::{Better, Figure};
use deploy_testkit::{ContainerCleanup, Registry, SshdHosts, TestImages, free_port, temp_dir};
use serde_json::{Value, json};

use crate::deployd_e2e::{KEY_VAR, target_body};
use crate::deployd_proc::{ADMIN_TOKEN, Deployd, api_post, cpu_ms, deployd_path};

/// Concurrent readers, each with its own connection.
const READERS: usize = 200;
/// Concurrent followers of the running job's SSE stream.
const FOLLOWERS: usize = 50;
/// Request pairs per reader: `GET /api/v1/jobs?limit=20`, then `GET /api/v1/jobs/{id}`
/// (`DEPLOY_LOAD_ROUNDS` overrides it, 1 to 50).
fn rounds() -> usize {
    std::env::var("DEPLOY_LOAD_ROUNDS")
        .ok()
        .map_or(5, |r| r.parse().expect("DEPLOY_LOAD_ROUNDS is a number"))
        .clamp(1, 50)
}
/// The deployment's soak, which keeps it running while it is read
/// (`DEPLOY_LOAD_SOAK_MS`, default 15 s: long enough that the reads of a debug
/// build on a busy CI machine still overlap the deployment).
fn soak_ms() -> u64 {
    std::env::var("DEPLOY_LOAD_SOAK_MS")
        .ok()
        .map_or(15_000, |r| {
            r.parse().expect("DEPLOY_LOAD_SOAK_MS is a number")
        })
        .clamp(1_000, 120_000)
}
/// Upper bound of each phase.
const PHASE_TIMEOUT: Duration = Duration::from_secs(90);

/// What one phase of readers measured.
struct Reads {
    /// Every request's latency, sorted.
    latencies: Vec<Duration>,
    /// Responses that were not 2xx: (status, path).
    failures: Vec<(u16, String)>,
    /// Job reads that found the job still active.
    job_active: usize,
    elapsed: Duration,
}

impl Reads {
    fn percentile(&self, p: usize) -> Duration {
        let i = (self.latencies.len() * p / 100).min(self.latencies.len() - 1);
        self.latencies[i]
    }

    fn ms(&self, p: usize) -> f64 {
        self.percentile(p).as_secs_f64() * 1000.0
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let n = self.latencies.len();
        format!(
            "{n} requests in {:.2} s ({:.0} req/s): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.elapsed.as_secs_f64(),
            f64::from(u32::try_from(n).unwrap()) / self.elapsed.as_secs_f64(),
            ms(self.percentile(50)),
            ms(self.percentile(99)),
            ms(*self.latencies.last().unwrap()),
        )
    }
}

/// `n` HTTP clients, each keeping its own connection (built ahead: building one takes milliseconds).
fn clients(n: usize) -> Vec<reqwest::Client> {
    (0..n)
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .no_proxy()
                .build()
                .unwrap()
        })
        .collect()
}

/// `READERS` clients, each on its own connection, each making `rounds` pairs of reads.
async fn read_phase(clients: Vec<reqwest::Client>, base: &str, job: &str, rounds: usize) -> Reads {
    let started = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for client in clients {
        let list = format!("{base}/api/v1/jobs?limit=20");
        let one = format!("{base}/api/v1/jobs/{job}");
        readers.spawn(async move {
            let mut latencies = Vec::with_capacity(2 * rounds);
            let mut failures = Vec::new();
            let mut job_active = 0;
            for _ in 0..rounds {
                for url in [&list, &one] {
                    let sent = Instant::now();
                    let response = client.get(url).bearer_auth(ADMIN_TOKEN).send().await;
                    let (status, body) = match response {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            (status, r.bytes().await.unwrap_or_default())
                        }
                        Err(e) => {
                            failures.push((0, format!("{url}: {e}")));
                            continue;
                        }
                    };
                    latencies.push(sent.elapsed());
                    if !(200..300).contains(&status) {
                        failures.push((status, url.clone()));
                    } else if url == &one {
                        let doc: Value = serde_json::from_slice(&body).unwrap();
                        let settled = ["completed", "failed", "rolled_back"]
                            .contains(&doc["status"].as_str().unwrap());
                        job_active += usize::from(!settled);
                    }
                }
            }
            (latencies, failures, job_active)
        });
    }
    let mut reads = Reads {
        latencies: Vec::new(),
        failures: Vec::new(),
        job_active: 0,
        elapsed: Duration::ZERO,
    };
    while let Some(done) = readers.join_next().await {
        let (latencies, failures, active) = done.unwrap();
        reads.latencies.extend(latencies);
        reads.failures.extend(failures);
        reads.job_active += active;
    }
    reads.elapsed = started.elapsed();
    reads.latencies.sort_unstable();
    reads
}

/// What one SSE follower received: the transition ids in order, and the `end` event's status.
struct Followed {
    seqs: Vec<u64>,
    end: Option<String>,
    /// Time to the response head.
    connect: Duration,
}

/// Follows `/api/v1/jobs/{job}/events` until its `end` event (or the stream closes).
async fn follow(client: reqwest::Client, base: String, job: String) -> Result<Followed, String> {
    let sent = Instant::now();
    let mut response = client
        .get(format!("{base}/api/v1/jobs/{job}/events"))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "text/event-stream")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let connect = sent.elapsed();
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let mut followed = Followed {
        seqs: Vec::new(),
        end: None,
        connect,
    };
    let mut buffer = String::new();
    let (mut event, mut id, mut data) = (String::new(), None::<u64>, String::new());
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(pos) = buffer.find('\n') {
            let line: String = buffer.drain(..=pos).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                match event.as_str() {
                    "transition" => followed.seqs.push(id.take().ok_or("an event without id")?),
                    "end" => {
                        let doc: Value = serde_json::from_str(&data).map_err(|e| e.to_string())?;
                        followed.end = doc["status"].as_str().map(str::to_owned);
                        return Ok(followed);
                    }
                    _ => {}
                }
                event.clear();
                data.clear();
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => value.clone_into(&mut event),
                "id" => id = value.parse().ok(),
                "data" => data.push_str(value),
                _ => {}
            }
        }
    }
    Ok(followed)
}

/// Approves a new promotion of `release` to `env` and returns the job id.
fn start_job(addr: &str, release: &str, env: &str) -> String {
    let (status, promotion) = api_post(
        addr,
        "/api/v1/promotions",
        &json!({"release_id": release, "environment_id": env}),
    );
    assert_eq!(status, 201, "{promotion}");
    let id = promotion["id"].as_str().unwrap();
    let (status, approved) = api_post(
        addr,
        &format!("/api/v1/promotions/{id}/approve"),
        &json!({"max_attempts": 1}),
    );
    assert_eq!(status, 201, "{approved}");
    approved["job"]["id"].as_str().unwrap().to_owned()
}

/// Creates an environment with one target on sshd host 1, its containers named `<prefix>web`, soaking `soak_ms`.
fn environment(addr: &str, name: &str, hosts: &SshdHosts, prefix: &str, soak_ms: u64) -> String {
    let (status, env) = api_post(addr, "/api/v1/environments", &json!({"name": name}));
    assert_eq!(status, 201, "{env}");
    let env = env["id"].as_str().unwrap().to_owned();
    let (status, target) = api_post(
        addr,
        &format!("/api/v1/environments/{env}/targets"),
        &target_body(hosts, 1, prefix, soak_ms),
    );
    assert_eq!(status, 201, "{target}");
    env
}

async fn job_status(base: &str, job: &str) -> String {
    let doc: Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/jobs/{job}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    doc["status"].as_str().unwrap().to_owned()
}

async fn wait_settled(base: &str, job: &str) -> String {
    let started = Instant::now();
    loop {
        let status = job_status(base, job).await;
        if ["completed", "failed", "rolled_back"].contains(&status.as_str()) {
            return status;
        }
        assert!(
            started.elapsed() < PHASE_TIMEOUT,
            "job {job} still {status} after {PHASE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
#[expect(
    clippy::print_stdout,
    reason = "the test reports the load figures (nextest --no-capture shows them)"
)]
fn two_hundred_readers_and_fifty_sse_followers_while_a_deployment_runs() {
    let test_started = Instant::now();
    let prefix = format!("ld{}-", std::process::id());
    // First: containers go before the registry and the host stop.
    let _cleanup = ContainerCleanup::new(&prefix);
    let hosts = SshdHosts::start(1).unwrap();
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    let data = temp_dir("deployd-load-").unwrap();
    let key = std::fs::read_to_string(hosts.client_key()).unwrap();
    let port = free_port().unwrap();
    let server = Deployd::start(
        data.path(),
        port,
        &hosts.known_hosts(),
        &[(KEY_VAR, key.as_str())],
    );
    let addr = server.addr.clone();
    let base = format!("http://{addr}");
    println!(
        "deployd: {}; set up in {:.1} s",
        deployd_path().display(),
        test_started.elapsed().as_secs_f64()
    );

    // Two environments on the one host, each with its own container: the baseline's job
    // and the loaded one both start a fresh container (no old one to stop).
    let quiet_env = environment(&addr, "quiet", &hosts, &format!("{prefix}q-"), 0);
    let busy_env = environment(&addr, "busy", &hosts, &format!("{prefix}b-"), soak_ms());
    let (status, release) = api_post(
        &addr,
        "/api/v1/releases",
        &json!({"name": "v1", "components": [{"name": "web", "image": images.v1}]}),
    );
    assert_eq!(status, 201, "{release}");
    let release = release["id"].as_str().unwrap();

    let rounds = rounds();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let quiet_job = start_job(&addr, release, &quiet_env);
        assert_eq!(wait_settled(&base, &quiet_job).await, "completed");

        // Baseline: the same reads, no deployment running, no SSE follower.
        let load_before = loadavg();
        let readers = clients(READERS);
        let (cpu_before, own_before) = (server.cpu_ms(), cpu_ms("self"));
        let baseline = tokio::time::timeout(PHASE_TIMEOUT, read_phase(readers, &base, &quiet_job, rounds))
            .await
            .expect("the baseline reads end in time");
        let baseline_cpu = server.cpu_ms() - cpu_before;
        let baseline_own = cpu_ms("self") - own_before;
        let (baseline_hwm, _) = server.memory_kib();
        assert!(baseline.failures.is_empty(), "{:?}", baseline.failures);

        // Loaded: a deployment runs, 50 clients follow its events, 200 read.
        let (readers, follower_clients) = (clients(READERS), clients(FOLLOWERS));
        let (cpu_before, own_before) = (server.cpu_ms(), cpu_ms("self"));
        let busy_job = start_job(&addr, release, &busy_env);
        let started = Instant::now();
        let followers: Vec<_> = follower_clients
            .into_iter()
            .map(|c| tokio::spawn(follow(c, base.clone(), busy_job.clone())))
            .collect();
        let loaded = tokio::time::timeout(PHASE_TIMEOUT, read_phase(readers, &base, &busy_job, rounds))
            .await
            .expect("the loaded reads end in time");
        let loaded_cpu = server.cpu_ms() - cpu_before;
        let loaded_own = cpu_ms("self") - own_before;
        let load_during = loadavg();
        assert!(loaded.failures.is_empty(), "{:?}", loaded.failures);
        assert!(
            loaded.job_active * 10 >= READERS * rounds * 9,
            "the job was active for only {} of {} reads: the reads did not overlap the deployment",
            loaded.job_active,
            READERS * rounds
        );
        let mut followed = Vec::new();
        for f in followers {
            let f = tokio::time::timeout(PHASE_TIMEOUT, f)
                .await
                .expect("every follower ends in time")
                .unwrap()
                .expect("every follower's stream is 2xx and readable");
            followed.push(f);
        }
        let job_took = started.elapsed();
        assert_eq!(job_status(&base, &busy_job).await, "completed");
        let (loaded_hwm, rss) = server.memory_kib();
        // Every follower saw the whole log, once, in order, and the end.
        let first = &followed[0].seqs;
        assert!(!first.is_empty());
        assert!(first.windows(2).all(|w| w[0] < w[1]), "{first:?}");
        for f in &followed {
            assert_eq!(&f.seqs, first, "every follower sees the same events");
            assert_eq!(f.end.as_deref(), Some("completed"));
        }
        let mut connects: Vec<Duration> = followed.iter().map(|f| f.connect).collect();
        connects.sort_unstable();

        println!("load average before: {load_before}; after the loaded reads: {load_during}");
        println!(
            "baseline ({READERS} readers x {rounds} x 2 GETs, no deployment, no SSE): {}; deployd CPU {baseline_cpu} ms (load generator {baseline_own} ms); deployd VmHWM {baseline_hwm} KiB",
            baseline.summary()
        );
        println!(
            "loaded ({READERS} readers x {rounds} x 2 GETs, {FOLLOWERS} SSE followers, a deployment running): {}; deployd CPU {loaded_cpu} ms (load generator {loaded_own} ms); job read active {} of {}",
            loaded.summary(),
            loaded.job_active,
            READERS * rounds
        );
        println!(
            "SSE: {FOLLOWERS} followers got {} events + end each; response head p50 {:.1} ms, max {:.1} ms; job took {:.1} s; deployd VmHWM {loaded_hwm} KiB, VmRSS {rss} KiB",
            first.len(),
            connects[FOLLOWERS / 2].as_secs_f64() * 1000.0,
            connects[FOLLOWERS - 1].as_secs_f64() * 1000.0,
            job_took.as_secs_f64(),
        );
        report(&baseline, &loaded, (baseline_hwm, loaded_hwm), rounds);
    });
    server.terminate();
}

/// The figures for `cargo xtask bench` (nothing unless `BENCH_REPORT_FILE` is set).
fn report(baseline: &Reads, loaded: &Reads, (baseline_hwm, loaded_hwm): (u64, u64), rounds: usize) {
    const SECTION: &str = "api";
    let alone = format!("{READERS} readers alone (no deployment, no SSE)");
    let notes = format!(
        "{READERS} readers x {rounds} x 2 GETs each on its own connection, closed loop; loaded: a deployment running and {FOLLOWERS} SSE followers; one value per run"
    );
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    let figures = [
        Figure::new(
            SECTION,
            "p50 latency under load",
            "ms",
            Better::Lower,
            vec![loaded.ms(50)],
        )
        .baseline(&alone, vec![baseline.ms(50)])
        .notes(&notes),
        Figure::new(
            SECTION,
            "p99 latency under load",
            "ms",
            Better::Lower,
            vec![loaded.ms(99)],
        )
        .baseline(&alone, vec![baseline.ms(99)])
        .notes(&notes),
        Figure::new(
            SECTION,
            "throughput under load",
            "req/s",
            Better::Higher,
            vec![loaded.per_second()],
        )
        .baseline(&alone, vec![baseline.per_second()])
        .notes(&notes),
        Figure::new(
            SECTION,
            "deployd peak RSS (VmHWM) after the loaded phase",
            "MB",
            Better::Lower,
            vec![mb(loaded_hwm)],
        )
        .baseline("after the baseline phase", vec![mb(baseline_hwm)])
        .notes("VmHWM covers the process lifetime"),
    ];
    for figure in figures {
        figure.emit().unwrap();
    }
}
