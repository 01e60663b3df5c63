//! Orchestration overhead: jobs of 1,000 and 10,000 targets with an instant executor on SQLite or PostgreSQL (every transition durable).
//!
//! `cargo bench -p deploy-engine --bench orchestration` (release). Prints, per size,
//! the median and spread over runs of tasks/s and of the time from job start to
//! completed. `BENCH_SIZES=1000,10000` and `BENCH_RUNS=3` override the defaults;
//! `BENCH_STORE=postgres` runs on a durable PostgreSQL (`deploy_testkit::Postgres`,
//! fsync and synchronous_commit on, a fresh cluster per run) instead of SQLite.
//! The goal, on either store: at least 2,000 tasks/s.
//!
//! Baseline, in the same run, interleaved run by run: the same job's 4 durable
//! transitions per task (dispatch, start, verify, succeed) written straight to the
//! store by 100 concurrent workers, without the engine; the ratio of the two is
//! the engine's own overhead. With `BENCH_REPORT_FILE` set (by `cargo xtask bench`)
//! the figures also go to that file as JSON lines.

#![expect(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary reports on stdout and stops on setup errors"
)]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy_core::testing::{environment_id, name, promotion, ssh_connection, target_id, ts};
use deploy_core::*;
use deploy_engine::{Engine, EngineConfig, JobRequest, SystemClock};
use deploy_exec::ExecutorRegistry;
use deploy_store::{PgConfig, PgStore, SqliteConfig, SqliteStore, Store};
use deploy_testkit::bench_report::{Better, Figure, Goal};
use deploy_testkit::exec::FakeExecutor;

/// In-flight tasks, for the engine (`parallelism`) and the store-only baseline (workers).
const PARALLELISM: u32 = 100;

/// The fake executor, deploying at once (no pause) and reporting success.
fn instant_executor() -> Arc<FakeExecutor> {
    let fake = FakeExecutor::default();
    fake.instant
        .store(true, std::sync::atomic::Ordering::SeqCst);
    Arc::new(fake)
}

/// A fresh store of the chosen backend; the guard keeps its files (or server) alive.
async fn open_store(postgres: bool) -> (Arc<dyn Store>, Box<dyn std::any::Any>) {
    if postgres {
        let pg = deploy_testkit::Postgres::start_durable().unwrap();
        let store = PgStore::connect(&PgConfig::new(pg.url())).await.unwrap();
        (Arc::new(store), Box::new(pg))
    } else {
        let dir = tempfile::TempDir::new().unwrap();
        let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("bench.db")))
            .await
            .unwrap();
        (Arc::new(store), Box::new(dir))
    }
}

/// The engine run of one job of `n` targets, or with `store_only` its transitions written straight to the store.
async fn one_run(n: u64, postgres: bool, store_only: bool) -> (f64, Duration) {
    let (store, _guard) = open_store(postgres).await;
    store
        .put_environment(&Environment {
            id: environment_id(1),
            name: name("bench"),
            hooks: Hooks::default(),
            variables: Default::default(),
            approval: None,
            requires: Vec::new(),
            runtime_policy: Default::default(),
            version: 0,
            created_at: ts(0),
        })
        .await
        .unwrap();
    for i in 1..=n {
        let t = Target {
            id: target_id(i),
            environment_id: environment_id(1),
            name: name(&format!("host-{i}")),
            target_type: TargetType::DockerHost,
            connection: ssh_connection(1),
            health_endpoint: None,
            health_check: None,
            labels: Labels::default(),
            disabled: false,
            version: 0,
            created_at: ts(0),
        };
        store.put_target(&t).await.unwrap();
    }
    let release = deploy_core::testing::release(&["web"]);
    store.put_release(&release).await.unwrap();
    let mut p = promotion(1);
    p.decide(PromotionDecision::Approve, "bench", ts(1))
        .unwrap();
    store.put_promotion(&p).await.unwrap();
    let mut executors = ExecutorRegistry::new();
    executors.register(ExecutionModel::Ssh, instant_executor());
    let engine = Engine::new(
        store.clone(),
        executors,
        EngineConfig::new("bench"),
        Arc::new(SystemClock),
    )
    .unwrap();
    let mut request = JobRequest::new(p.id, IdempotencyKey::parse("bench").unwrap());
    request.parallelism = NonZeroU32::new(PARALLELISM).unwrap();
    let job = engine.create_job(&request).await.unwrap().value;
    if store_only {
        return store_transitions(store, job.tasks).await;
    }
    let started = Instant::now();
    let done = engine.run_to_settled(job.id).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(done.status, JobStatus::Completed);
    (n as f64 / elapsed.as_secs_f64(), elapsed)
}

/// The baseline: every task's dispatch, start, verify and succeed, durable, by `PARALLELISM` workers.
async fn store_transitions(store: Arc<dyn Store>, tasks: Vec<DeploymentTask>) -> (f64, Duration) {
    let n = tasks.len();
    let mut shards: Vec<Vec<DeploymentTask>> = vec![Vec::new(); PARALLELISM as usize];
    for (i, t) in tasks.into_iter().enumerate() {
        shards[i % PARALLELISM as usize].push(t);
    }
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for shard in shards {
        let store = store.clone();
        workers.spawn(async move {
            for task in shard {
                let mut version = task.version;
                for event in [
                    TaskEvent::Dispatch,
                    TaskEvent::Start,
                    TaskEvent::Verify,
                    TaskEvent::Succeed,
                ] {
                    version = store
                        .apply_task_event(task.id, version, event, ts(1), "bench")
                        .await
                        .unwrap()
                        .version;
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    let elapsed = started.elapsed();
    (n as f64 / elapsed.as_secs_f64(), elapsed)
}

fn main() {
    let sizes: Vec<u64> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".to_owned())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes are numbers"))
        .collect();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let postgres = std::env::var("BENCH_STORE").is_ok_and(|s| s == "postgres");
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "store: {}",
        if postgres {
            "postgres (durable)"
        } else {
            "sqlite (synchronous=FULL)"
        }
    );
    println!("| targets | runs | tasks/s median | tasks/s min..max | start to completed median |");
    println!("|---|---|---|---|---|");
    for n in sizes {
        let mut results: Vec<(f64, Duration)> = Vec::new();
        let mut baseline: Vec<(f64, Duration)> = Vec::new();
        for _ in 0..runs {
            results.push(rt.block_on(one_run(n, postgres, false)));
            baseline.push(rt.block_on(one_run(n, postgres, true)));
        }
        let report = Figure::new(
            "engine",
            &format!(
                "{n} targets, {}",
                if postgres { "PostgreSQL" } else { "SQLite FULL" }
            ),
            "tasks/s",
            Better::Higher,
            results.iter().map(|r| r.0).collect(),
        )
        .baseline(
            "the same transitions written straight to the store (no engine)",
            baseline.iter().map(|r| r.0).collect(),
        )
        .notes(if postgres {
            "one all-at-once job, parallelism 100, instant executor, 4 durable transitions per task; PostgreSQL with fsync and synchronous_commit on, 10 connections; one value per run (fresh cluster)"
        } else {
            "one all-at-once job, parallelism 100, instant executor, 4 durable transitions per task; one value per run (fresh database)"
        })
        .goal(Goal::median_above(2_000.0));
        report.emit().unwrap();
        results.sort_by(|a, b| a.0.total_cmp(&b.0));
        baseline.sort_by(|a, b| a.0.total_cmp(&b.0));
        let median = results[results.len() / 2];
        println!(
            "| {n} | {runs} | {:.0} | {:.0}..{:.0} | {:.2} s |",
            median.0,
            results[0].0,
            results[results.len() - 1].0,
            median.1.as_secs_f64()
        );
        println!(
            "  baseline, store only: {:.0} tasks/s ({:.0}..{:.0})",
            baseline[baseline.len() / 2].0,
            baseline[0].0,
            baseline[baseline.len() - 1].0
        );
    }
}
