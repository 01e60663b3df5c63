//! Orchestration overhead: jobs of 1,000 and 10,000 targets with an instant executor on SQLite (every transition durable).
//!
//! `cargo bench -p deploy-engine --bench orchestration` (release). Prints, per size,
//! the median and spread over runs of tasks/s and of the time from job start to
//! completed. `BENCH_SIZES=1000,10000` and `BENCH_RUNS=3` override the defaults;
//! `BENCH_STORE=postgres` runs on a durable PostgreSQL (`deploy_testkit::Postgres`,
//! fsync on) instead of SQLite.

#![expect(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary reports on stdout and stops on setup errors"
)]

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deploy_core::testing::{environment_id, name, promotion, ssh_connection, target_id, ts};
use deploy_core::*;
use deploy_engine::{Engine, EngineConfig, JobRequest, SystemClock};
use deploy_exec::{
    CommandOutput, DeployRequest, ExecContext, ExecError, ExecutionResult, Executor,
    ExecutorRegistry,
};
use deploy_store::{PgConfig, PgStore, SqliteConfig, SqliteStore, Store};

/// Deploys instantly and reports success.
struct Instant0;

#[async_trait]
impl Executor for Instant0 {
    async fn deploy(&self, request: &DeployRequest, _ctx: &ExecContext) -> ExecutionResult {
        ExecutionResult {
            success: true,
            deployed_digest: Some(request.task.digest.clone()),
            previous_digest: None,
            changed: true,
            running: BTreeMap::new(),
            error: None,
        }
    }
    async fn inspect(
        &self,
        _: &Target,
        _: &Name,
        _: &ExecContext,
    ) -> Result<Option<Digest>, ExecError> {
        Ok(None)
    }
    async fn run_command(
        &self,
        _: &Target,
        _: &CommandSpec,
        _: &ExecContext,
    ) -> Result<CommandOutput, ExecError> {
        Ok(CommandOutput {
            exit_status: 0,
            stdout: String::new(),
        })
    }
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

async fn one_run(n: u64, postgres: bool) -> (f64, Duration) {
    let (store, _guard) = open_store(postgres).await;
    store
        .put_environment(&Environment {
            id: environment_id(1),
            name: name("bench"),
            hooks: Hooks::default(),
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
    executors.register(ExecutionModel::Ssh, Arc::new(Instant0));
    let engine = Engine::new(
        store.clone(),
        executors,
        EngineConfig::new("bench"),
        Arc::new(SystemClock),
    )
    .unwrap();
    let mut request = JobRequest::new(p.id, IdempotencyKey::parse("bench").unwrap());
    request.parallelism = NonZeroU32::new(100).unwrap();
    let job = engine.create_job(&request).await.unwrap().value;
    let started = Instant::now();
    let done = engine.run_job(job.id).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(done.status, JobStatus::Completed);
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
        let mut results: Vec<(f64, Duration)> = (0..runs)
            .map(|_| rt.block_on(one_run(n, postgres)))
            .collect();
        results.sort_by(|a, b| a.0.total_cmp(&b.0));
        let median = results[results.len() / 2];
        println!(
            "| {n} | {runs} | {:.0} | {:.0}..{:.0} | {:.2} s |",
            median.0,
            results[0].0,
            results[results.len() - 1].0,
            median.1.as_secs_f64()
        );
    }
}
