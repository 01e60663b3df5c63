//! Store transitions benchmark: 10,000 tasks through their lifecycle (about 6 transitions each, every one durable with its event row; SQLite group-commits them).
//!
//! `cargo bench -p deploy-store --bench transitions` (release). Each run uses a
//! fresh database; setup is not timed. Prints transitions/s per run and the
//! median, min and max per backend. Figures go to docs/benchmarks.md; with
//! `BENCH_REPORT_FILE` set (by `cargo xtask bench`) also as JSON lines: SQLite FULL
//! against NORMAL, PostgreSQL against SQLite FULL, each measured in the same run.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]
#![expect(clippy::unwrap_used, reason = "a benchmark aborts on any error")]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use deploy_core::testing::*;
use deploy_core::*;
use deploy_store::{PgConfig, PgStore, SqliteConfig, SqliteDurability, SqliteStore, Store};
use deploy_testkit::Postgres;
use deploy_testkit::bench_report::{Better, Figure, Goal};

const JOBS: u64 = 10;
const TARGETS_PER_ENV: u64 = 100;
const COMPONENTS: u64 = 10;
/// Concurrent workers, like the engine's in-flight tasks across jobs.
const WORKERS: usize = 32;

/// Seeds 10 environments, each with a job of 100 targets x 10 components = 1,000 tasks.
async fn seed(store: &dyn Store) -> Vec<DeploymentTask> {
    store.put_release(&release(&["api"])).await.unwrap();
    let mut tasks = Vec::new();
    for e in 1..=JOBS {
        let env = Environment {
            id: environment_id(e),
            name: name(&format!("env-{e}")),
            hooks: Hooks::default(),
            variables: Default::default(),
            approval: None,
            requires: Vec::new(),
            runtime_policy: Default::default(),
            version: 0,
            created_at: ts(0),
        };
        store.put_environment(&env).await.unwrap();
        let mut p = promotion(e);
        p.environment_id = env.id;
        store.put_promotion(&p).await.unwrap();
        let mut j = job(e, 0);
        j.environment_id = env.id;
        j.parallelism = NonZeroU32::new(100).unwrap();
        for t in 1..=TARGETS_PER_ENV {
            let mut target = ssh_target(1);
            target.id = target_id(e * 1_000 + t);
            target.environment_id = env.id;
            target.name = name(&format!("host-{t}"));
            store.put_target(&target).await.unwrap();
            for c in 1..=COMPONENTS {
                let mut task = task(e * 1_000_000 + t * 100 + c, DEFAULT_MAX_ATTEMPTS);
                task.job_id = j.id;
                task.target_id = target.id;
                task.component_id = Some(component_id(c));
                j.tasks.push(task);
            }
        }
        let created = store.create_job(&j).await.unwrap().value;
        tasks.extend(created.tasks);
    }
    tasks
}

/// One task's events: the happy path, with a retried first attempt for every fifth task (5.8 transitions on average).
fn events(index: usize) -> Vec<TaskEvent> {
    let mut e = Vec::new();
    if index.is_multiple_of(5) {
        e.extend([
            TaskEvent::Enqueue,
            TaskEvent::Dispatch,
            TaskEvent::Fail { retryable: true },
            TaskEvent::Retry,
        ]);
    }
    e.extend([
        TaskEvent::Enqueue,
        TaskEvent::Dispatch,
        TaskEvent::Start,
        TaskEvent::Verify,
        TaskEvent::Succeed,
    ]);
    e
}

/// Drives every task through its events with `WORKERS` concurrent workers; returns (transitions, seconds).
async fn drive(store: Arc<dyn Store>, tasks: Vec<DeploymentTask>) -> (usize, f64) {
    let mut shards: Vec<Vec<(usize, DeploymentTask)>> = vec![Vec::new(); WORKERS];
    for (i, t) in tasks.into_iter().enumerate() {
        shards[i % WORKERS].push((i, t));
    }
    let start = Instant::now();
    let handles: Vec<_> = shards
        .into_iter()
        .map(|shard| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut n = 0;
                for (i, task) in shard {
                    let mut version = task.version;
                    for event in events(i) {
                        version = store
                            .apply_task_event(task.id, version, event, ts(1), "bench")
                            .await
                            .unwrap()
                            .version;
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    (total, start.elapsed().as_secs_f64())
}

fn summary(label: &str, rates: &mut [f64]) {
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "{label}: median {median:.0} transitions/s, min {:.0}, max {:.0}, runs {:?}",
        rates[0],
        rates[rates.len() - 1],
        rates.iter().map(|r| r.round()).collect::<Vec<_>>()
    );
}

async fn sqlite_runs(durability: SqliteDurability, runs: usize) -> Vec<f64> {
    let mut rates = Vec::new();
    for _ in 0..runs {
        let dir = deploy_testkit::temp_dir("deploy-bench-").unwrap();
        let mut config = SqliteConfig::new(dir.path().join("deploy.db"));
        config.durability = durability;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config).await.unwrap());
        let tasks = seed(&*store).await;
        let (n, secs) = drive(store, tasks).await;
        println!("  sqlite {durability:?}: {n} transitions in {secs:.2} s");
        rates.push(n as f64 / secs);
    }
    rates
}

async fn postgres_runs(runs: usize) -> Vec<f64> {
    let mut rates = Vec::new();
    for _ in 0..runs {
        let pg = Postgres::start_durable().unwrap();
        let mut config = PgConfig::new(pg.url());
        // The default pool (10) unless BENCH_PG_CONNECTIONS says otherwise.
        if let Some(n) = std::env::var("BENCH_PG_CONNECTIONS")
            .ok()
            .and_then(|c| c.parse().ok())
        {
            config.max_connections = n;
        }
        let store: Arc<dyn Store> = Arc::new(PgStore::connect(&config).await.unwrap());
        let tasks = seed(&*store).await;
        let (n, secs) = drive(store, tasks).await;
        println!(
            "  postgres (fsync on, synchronous_commit on, {} connections): {n} transitions in {secs:.2} s",
            config.max_connections
        );
        rates.push(n as f64 / secs);
    }
    rates
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // BENCH_ONLY=full,normal,pg picks configurations (all by default).
    let only = std::env::var("BENCH_ONLY").unwrap_or_else(|_| "full,normal,pg".to_owned());
    let (mut full, mut normal, mut pg) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        if only.contains("full") {
            full = sqlite_runs(SqliteDurability::Full, runs).await;
            summary("sqlite synchronous=FULL (default)", &mut full);
        }
        if only.contains("normal") {
            normal = sqlite_runs(SqliteDurability::Normal, runs).await;
            summary("sqlite synchronous=NORMAL", &mut normal);
        }
        if only.contains("pg") {
            pg = postgres_runs(runs).await;
            summary("postgres durable", &mut pg);
        }
    });
    report(full, normal, pg);
}

/// The JSON lines for `cargo xtask bench` (nothing unless `BENCH_REPORT_FILE` is set).
fn report(full: Vec<f64>, normal: Vec<f64>, pg: Vec<f64>) {
    const SECTION: &str = "store";
    const NOTES: &str = "10,000 tasks, 58,000 transitions by 32 concurrent workers, each durable with its event row; one value per run (fresh database)";
    let with_baseline = |figure: Figure, name: &str, samples: &[f64]| {
        if samples.is_empty() {
            figure
        } else {
            figure.baseline(name, samples.to_vec())
        }
    };
    let mut figures = Vec::new();
    if !full.is_empty() {
        let figure = Figure::new(
            SECTION,
            "SQLite synchronous=FULL (the default)",
            "transitions/s",
            Better::Higher,
            full.clone(),
        )
        .goal(Goal::median_above(5_000.0))
        .notes(NOTES);
        figures.push(with_baseline(
            figure,
            "SQLite synchronous=NORMAL (no fsync per commit)",
            &normal,
        ));
    } else if !normal.is_empty() {
        figures.push(
            Figure::new(
                SECTION,
                "SQLite synchronous=NORMAL (no fsync per commit)",
                "transitions/s",
                Better::Higher,
                normal,
            )
            .notes(NOTES),
        );
    }
    if !pg.is_empty() {
        let connections = std::env::var("BENCH_PG_CONNECTIONS").unwrap_or_else(|_| "10".to_owned());
        let figure = Figure::new(
            SECTION,
            &format!("PostgreSQL durable ({connections} connections)"),
            "transitions/s",
            Better::Higher,
            pg,
        )
        .goal(Goal::median_above(3_000.0))
        .notes("fsync=on, synchronous_commit=on, a fresh cluster per run; same workload");
        figures.push(with_baseline(figure, "SQLite synchronous=FULL", &full));
    }
    for figure in figures {
        figure.emit().unwrap();
    }
}
