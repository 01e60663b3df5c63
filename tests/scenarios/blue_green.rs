//! Blue-green end to end: a real nginx in front of docker_host containers deployed over the real SSH executor, under a concurrent HTTP request loop.
//!
//! One sshd "host" on 127.0.0.1 in front of the local Docker Engine; nginx (Debian's,
//! `daemon off`, prefix in a temp dir, run as the SSH test user so that the executor's
//! `nginx -s reload` over SSH may signal it) listens on a free loopback port and
//! includes the file the cut-over replaces. A thread sends one request per few
//! milliseconds through nginx during the job, another samples the kept
//! `<name>-previous` container (blue) with `docker inspect`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deploy_core::testing::environment;
use deploy_core::{
    CommandSpec, DeploymentJob, Hooks, IdempotencyKey, ImageRef, JobStatus, Labels, Strategy,
    Target,
};
use deploy_engine::{
    CONTAINER_PREFIX_LABEL, Engine, JobRequest, NGINX_COMMAND_LABEL, NGINX_INCLUDE_LABEL,
    NGINX_LISTEN_LABEL, NGINX_UPSTREAM_PORT_LABEL,
};
use deploy_store::{SqliteConfig, SqliteStore, Store};
use deploy_testkit::{
    ContainerCleanup, IMAGE_HTTP_PORT, Nginx, Registry, SSH_TEST_USER, SshdHosts, TestImages,
};

use crate::deployd_e2e::now_ms;

/// One host behind nginx, on an environment with hooks (also used by `hooks.rs`).
pub(crate) struct World {
    _cleanup: ContainerCleanup,
    pub(crate) prefix: String,
    pub(crate) container: String,
    engine: Engine,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) images: TestImages,
    nginx: Nginx,
    _registry: Registry,
    _hosts: SshdHosts,
    _dir: tempfile::TempDir,
}

impl World {
    /// `hooks` gets nginx's port as its argument.
    pub(crate) async fn start(test: &str, hooks: impl FnOnce(u16) -> Hooks) -> Self {
        let prefix = format!("bg{test}{}", std::process::id());
        let cleanup = ContainerCleanup::new(&prefix);
        let hosts = SshdHosts::start(1).unwrap();
        let registry = Registry::start().unwrap();
        let images = TestImages::build(&registry, &format!("{prefix}/app")).unwrap();
        let nginx = Nginx::start(SSH_TEST_USER).unwrap();
        let dir = deploy_testkit::temp_dir("blue-green-").unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&SqliteConfig::new(dir.path().join("deploy.db")))
                .await
                .unwrap(),
        );
        let mut env = environment("prod");
        env.hooks = hooks(nginx.port());
        store.put_environment(&env).await.unwrap();
        let container = format!("{prefix}-h1-web");
        store
            .put_target(&target(&hosts, &prefix, &container, &nginx))
            .await
            .unwrap();
        let engine = crate::engine_world::ssh_engine(store.clone(), &hosts, &prefix);
        Self {
            _cleanup: cleanup,
            prefix,
            container,
            engine,
            store,
            images,
            nginx,
            _registry: registry,
            _hosts: hosts,
            _dir: dir,
        }
    }

    /// Runs a blue-green job of release `n` (`image`) to its end.
    async fn run(&self, n: u64, image: &str, auto_rollback: bool) -> DeploymentJob {
        self.run_with(n, image, Strategy::BlueGreen, auto_rollback)
            .await
    }

    /// Runs a job of release `n` (`image`) with `strategy` to its end.
    pub(crate) async fn run_with(
        &self,
        n: u64,
        image: &str,
        strategy: Strategy,
        auto_rollback: bool,
    ) -> DeploymentJob {
        let promotion = crate::engine_world::promoted_release(&*self.store, n, image).await;
        let mut request = JobRequest::new(
            promotion,
            IdempotencyKey::parse(&format!("bg-{n}")).unwrap(),
        );
        request.strategy = strategy;
        request.parallelism = NonZeroU32::new(1).unwrap();
        request.failure_policy.auto_rollback = auto_rollback;
        let job = self.engine.create_job(&request).await.unwrap().value;
        tokio::time::timeout(Duration::from_secs(90), self.engine.run_to_settled(job.id))
            .await
            .expect("the job ends within 90 s")
            .unwrap()
    }

    /// `docker inspect --format <format>` of `container`, trimmed ("" when it does not exist).
    pub(crate) fn inspect(container: &str, format: &str) -> String {
        deploy_testkit::run_checked("docker", &["inspect", "--format", format, container])
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    }

    fn previous(&self) -> String {
        format!("{}-previous", self.container)
    }

    /// The time of the job's `complete` (verification passed) event, in Unix ms.
    async fn completed_at(&self, job: &DeploymentJob) -> u64 {
        let events = self.store.job_events(job.id, 0, 10_000).await.unwrap();
        events
            .iter()
            .find(|e| e.task_id.is_none() && e.to_status == "completed")
            .map(|e| e.at.unix_millis())
            .unwrap_or_else(|| panic!("no completed event in {events:#?}"))
    }
}

/// A docker_host target behind `nginx`, its container checked by `docker exec ... wget /health`.
fn target(hosts: &SshdHosts, prefix: &str, container: &str, nginx: &Nginx) -> Target {
    let mut t = crate::engine_world::sshd_docker_target(hosts, 1, prefix, container, 5, 200);
    t.labels = Labels::new(BTreeMap::from([
        (CONTAINER_PREFIX_LABEL.to_owned(), format!("{prefix}-h1-")),
        (
            NGINX_INCLUDE_LABEL.to_owned(),
            nginx.include_path().display().to_string(),
        ),
        (
            NGINX_UPSTREAM_PORT_LABEL.to_owned(),
            IMAGE_HTTP_PORT.to_string(),
        ),
        (NGINX_LISTEN_LABEL.to_owned(), nginx.port().to_string()),
        (
            NGINX_COMMAND_LABEL.to_owned(),
            nginx.test_argv()[..nginx.test_argv().len() - 1].join(" "),
        ),
    ]))
    .unwrap();
    t
}

/// One answer of nginx: when, status (0 = no HTTP answer), body.
type Sample = (u64, u16, String);

/// Requests `/version` through nginx every few ms, and samples blue with `docker
/// inspect` back to back (each takes some tens of ms), until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    requests: Option<std::thread::JoinHandle<Vec<Sample>>>,
    blue: Option<std::thread::JoinHandle<Vec<(u64, String)>>>,
}

impl Load {
    fn start(nginx: &str, previous: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = nginx.to_owned();
        let s = stop.clone();
        let requests = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let (status, body) = deploy_testkit::http_get(&addr, "/version")
                    .map_or_else(|e| (0, e.to_string()), |(st, b)| (st, b.trim().to_owned()));
                samples.push((now_ms(), status, body));
                std::thread::sleep(Duration::from_millis(5));
            }
            samples
        });
        let s = stop.clone();
        let blue = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let state = World::inspect(
                    &previous,
                    "{{.State.Running}} {{index .Config.Labels \"stella.digest\"}}",
                );
                samples.push((now_ms(), state));
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        });
        Self {
            stop,
            requests: Some(requests),
            blue: Some(blue),
        }
    }

    fn finish(mut self) -> (Vec<Sample>, Vec<(u64, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        let requests = self.requests.take().unwrap().join().unwrap();
        let blue = self.blue.take().unwrap().join().unwrap();
        (requests, blue)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The versions answered, with consecutive repeats collapsed, e.g. `["v1", "v2"]`.
fn phases(samples: &[Sample]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, _, body) in samples {
        if out.last() != Some(body) {
            out.push(body.clone());
        }
    }
    out
}

fn assert_no_failed_request(samples: &[Sample]) {
    let failed: Vec<&Sample> = samples
        .iter()
        .filter(|(_, status, body)| *status != 200 || !matches!(body.as_str(), "v1" | "v2"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failed.len(),
        samples.len(),
        failed.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::print_stdout,
    reason = "the test reports the request counts (nextest --no-capture shows them)"
)]
async fn a_blue_green_v1_to_v2_cut_over_fails_no_request_and_keeps_blue_until_completion() {
    let w = World::start("cut", |_| Hooks::default()).await;
    let v1 = w.run(1, &w.images.v1, false).await;
    assert_eq!(v1.status, JobStatus::Completed, "{:?}", v1.failure_reason);
    let v1_digest = ImageRef::parse(&w.images.v1).unwrap().digest().to_string();
    let v1_id = World::inspect(&w.container, "{{.Id}}");

    let load = Load::start(&w.nginx.address(), w.previous());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v2 = w.run(2, &w.images.v2, false).await;
    let done_ms = now_ms();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (samples, blue) = load.finish();
    assert_eq!(v2.status, JobStatus::Completed, "{:?}", v2.failure_reason);

    assert!(samples.len() > 100, "only {} requests", samples.len());
    assert_no_failed_request(&samples);
    // The answers switch from v1 to v2 (an nginx reload hands new connections to new
    // workers at once; old workers finish theirs, still on blue, which still runs).
    let seen = phases(&samples);
    let first_v2 = samples.iter().find(|s| s.2 == "v2").unwrap().0;
    let last_v1 = samples.iter().rev().find(|s| s.2 == "v1").unwrap().0;
    println!(
        "blue-green v1 -> v2: {} requests through nginx, none failed; answers in order {seen:?}; \
         both versions answered for {} ms while the reload was applied",
        samples.len(),
        last_v1.saturating_sub(first_v2)
    );
    assert_eq!(seen.first().map(String::as_str), Some("v1"), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("v2"), "{seen:?}");
    let completed = w.completed_at(&v2).await;
    assert!(
        last_v1 < completed,
        "blue still answered at {last_v1}, after the job completed at {completed}"
    );

    // Blue (v1, as `-previous`) runs beside green from the cut-over until the job
    // completed, and is stopped once it has (kept, stopped, for a fast rollback).
    let running_v1 = format!("true {v1_digest}");
    let during: Vec<&(u64, String)> = blue
        .iter()
        .filter(|(at, _)| *at >= first_v2 && *at + 50 < completed)
        .collect();
    println!(
        "blue sampled {} times between the first v2 answer and the job's completion",
        during.len()
    );
    assert!(!during.is_empty(), "blue never sampled during the cut-over");
    assert!(
        during.iter().all(|(_, state)| *state == running_v1),
        "{during:?}"
    );
    assert_eq!(World::inspect(&w.previous(), "{{.Id}}"), v1_id);
    assert_eq!(
        World::inspect(&w.previous(), "{{.State.Running}}"),
        "false",
        "blue retired after completion ({done_ms})"
    );
    let include = std::fs::read_to_string(w.nginx.include_path()).unwrap();
    let green = deploy_testkit::published_addr(&w.container, IMAGE_HTTP_PORT).unwrap();
    assert!(
        include.contains(&format!("server {green} weight=100; # green")),
        "{include}"
    );
    // The task log tells the story.
    let log = w.store.read_log(v2.tasks[0].id, 0, 100).await.unwrap();
    let text: String = log.iter().map(|c| c.content.clone() + "\n").collect();
    for line in [
        "previous kept as",
        "(still running)",
        "cut over: host-1 serves green",
        "blue (",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::print_stdout,
    reason = "the test reports the request counts (nextest --no-capture shows them)"
)]
async fn a_failure_after_the_cut_over_cuts_back_to_blue_without_redeploying() {
    // The post-deploy hook is a smoke test through nginx that only accepts v1: it passes
    // for release 1 and fails after release 2's cut-over (any later failure would do).
    let w = World::start("back", |port| Hooks {
        pre_deploy: None,
        post_deploy: Some(
            CommandSpec::new(vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                format!(
                    "/bin/busybox wget -q -O- http://127.0.0.1:{port}/version | /bin/busybox grep -qx v1"
                ),
            ])
            .unwrap(),
        ),
    })
    .await;
    let v1 = w.run(1, &w.images.v1, false).await;
    let log = w.store.read_log(v1.tasks[0].id, 0, 100).await.unwrap();
    let text: String = log.iter().map(|c| c.content.clone() + "\n").collect();
    assert_eq!(
        v1.status,
        JobStatus::Completed,
        "{:?}\n{text}",
        v1.failure_reason
    );
    let blue_id = World::inspect(&w.container, "{{.Id}}");
    let blue_started = World::inspect(&w.container, "{{.State.StartedAt}}");

    let load = Load::start(&w.nginx.address(), w.previous());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v2 = w.run(2, &w.images.v2, true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (samples, _) = load.finish();

    let events = w.store.job_events(v2.id, 0, 10_000).await.unwrap();
    assert_eq!(v2.status, JobStatus::RolledBack, "{events:#?}");
    assert!(
        v2.failure_reason
            .as_deref()
            .unwrap_or_default()
            .contains("post-deploy hook exited 1 after the cut-over"),
        "{:?}",
        v2.failure_reason
    );
    assert_no_failed_request(&samples);
    let seen = phases(&samples);
    println!(
        "blue-green cut back: {} requests through nginx, none failed; answers in order {seen:?}",
        samples.len()
    );
    assert!(seen.contains(&"v2".to_owned()), "never cut over: {seen:?}");
    assert_eq!(seen.first().map(String::as_str), Some("v1"), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("v1"), "{seen:?}");

    // Without redeploying: the container serving v1 now is blue itself, never stopped
    // or restarted (same id, same start time), and green is stopped beside it.
    assert_eq!(World::inspect(&w.container, "{{.Id}}"), blue_id);
    assert_eq!(
        World::inspect(&w.container, "{{.State.StartedAt}}"),
        blue_started
    );
    // The rollback job re-pointed the proxy at what it restored (blue's unchanged
    // address) and then retired the failed green.
    let include = std::fs::read_to_string(w.nginx.include_path()).unwrap();
    let blue = deploy_testkit::published_addr(&w.container, IMAGE_HTTP_PORT).unwrap();
    assert!(
        include.contains(&format!("server {blue} weight=100;")),
        "{include}"
    );
    let v2_digest = ImageRef::parse(&w.images.v2).unwrap().digest().to_string();
    assert_eq!(
        World::inspect(
            &w.previous(),
            "{{.State.Running}} {{index .Config.Labels \"stella.digest\"}}"
        ),
        format!("false {v2_digest}")
    );
    let log = w.store.read_log(v2.tasks[0].id, 0, 100).await.unwrap();
    let text: String = log.iter().map(|c| c.content.clone() + "\n").collect();
    assert!(text.contains("cut back: host-1 serves blue"), "{text}");
}
