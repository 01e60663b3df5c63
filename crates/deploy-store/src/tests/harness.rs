//! Test harness: a fresh store per test on each backend, seeding helpers, and `both_backends!`.

use std::sync::Arc;

use deploy_core::testing::*;
use deploy_core::*;
use deploy_testkit::Postgres;
use tempfile::TempDir;

use crate::{PgConfig, PgStore, SqliteConfig, SqliteDurability, SqliteStore, Store};

/// What keeps a test database alive.
pub(crate) enum Backing {
    Sqlite(TempDir),
    Postgres(Postgres),
}

/// A store on a fresh database, plus what it lives on.
pub(crate) struct TestStore {
    pub store: Arc<dyn Store>,
    pub backing: Backing,
}

impl TestStore {
    /// A second, independent store on the same database (another process / replica).
    pub async fn reopen(&self) -> Arc<dyn Store> {
        match &self.backing {
            Backing::Sqlite(dir) => Arc::new(
                SqliteStore::open(&SqliteConfig::new(dir.path().join("deploy.db")))
                    .await
                    .unwrap(),
            ),
            Backing::Postgres(pg) => {
                Arc::new(PgStore::connect(&PgConfig::new(pg.url())).await.unwrap())
            }
        }
    }

    /// How a child process reaches the same database: `sqlite:<path>` or `postgres:<url>`.
    pub fn locator(&self) -> String {
        match &self.backing {
            Backing::Sqlite(dir) => format!("sqlite:{}", dir.path().join("deploy.db").display()),
            Backing::Postgres(pg) => format!("postgres:{}", pg.url()),
        }
    }
}

/// Opens the store a locator names (see [`TestStore::locator`]).
pub(crate) async fn open_locator(locator: &str) -> Arc<dyn Store> {
    if let Some(path) = locator.strip_prefix("sqlite:") {
        Arc::new(SqliteStore::open(&SqliteConfig::new(path)).await.unwrap())
    } else if let Some(url) = locator.strip_prefix("postgres:") {
        Arc::new(PgStore::connect(&PgConfig::new(url)).await.unwrap())
    } else {
        panic!("unknown locator {locator}")
    }
}

pub(crate) async fn sqlite() -> TestStore {
    let dir = deploy_testkit::temp_dir("deploy-store-").unwrap();
    let mut config = SqliteConfig::new(dir.path().join("deploy.db"));
    config.durability = SqliteDurability::Full;
    let store = SqliteStore::open(&config).await.unwrap();
    TestStore {
        store: Arc::new(store),
        backing: Backing::Sqlite(dir),
    }
}

pub(crate) async fn postgres() -> TestStore {
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .unwrap()
        .unwrap();
    let store = PgStore::connect(&PgConfig::new(pg.url())).await.unwrap();
    TestStore {
        store: Arc::new(store),
        backing: Backing::Postgres(pg),
    }
}

/// Runs `async fn $name(t: TestStore)` once per backend, as `$name::sqlite` and `$name::postgres`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(crate::tests::harness::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name(crate::tests::harness::postgres().await).await;
            }
        }
    )*};
}
pub(crate) use both_backends;

/// An environment numbered `e` with `targets` ssh targets, in the store.
pub(crate) async fn seed_env(
    store: &dyn Store,
    e: u64,
    targets: u64,
) -> (EnvironmentId, Vec<TargetId>) {
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
    let mut ids = Vec::new();
    for i in 1..=targets {
        let mut t = ssh_target(1);
        t.id = target_id(e * 10_000 + i);
        t.environment_id = env.id;
        t.name = name(&format!("host-{i}"));
        store.put_target(&t).await.unwrap();
        ids.push(t.id);
    }
    (env.id, ids)
}

/// Release `n` (`r<n>`), whose components' digests are numbered from `n * 100`.
pub(crate) fn release_n(n: u64) -> Release {
    let mut r = release(&["api", "web"]);
    r.id = release_id(n);
    r.name = name(&format!("r{n}"));
    for (i, c) in (0..).zip(r.components.iter_mut()) {
        c.image = ImageRef::from_parts("127.0.0.1:5000/app", &digest(n * 100 + i)).unwrap();
    }
    r
}

pub(crate) async fn seed_release(store: &dyn Store, n: u64) -> ReleaseId {
    let r = release_n(n);
    store.put_release(&r).await.unwrap();
    r.id
}

/// Job `n` of release `release` on `targets` (one task per target, digest `digest(d)`), with its promotion stored.
pub(crate) async fn new_job(
    store: &dyn Store,
    n: u64,
    env: EnvironmentId,
    release: ReleaseId,
    targets: &[TargetId],
    d: u64,
) -> DeploymentJob {
    let mut p = promotion(n);
    p.environment_id = env;
    p.release_id = release;
    store.put_promotion(&p).await.unwrap();
    let mut j = job(n, 0);
    j.environment_id = env;
    j.release_id = release;
    j.tasks = targets
        .iter()
        .zip(1..)
        .map(|(t, i)| {
            let mut task = task(n * 10_000 + i, DEFAULT_MAX_ATTEMPTS);
            task.job_id = j.id;
            task.target_id = *t;
            task.digest = digest(d);
            task
        })
        .collect();
    j
}

/// Drives every task of the job to `succeeded` and the job to `completed` at `at`.
pub(crate) async fn complete(store: &dyn Store, job: &DeploymentJob, at: u64) -> DeploymentJob {
    let mut j = store.get_job(job.id).await.unwrap();
    for e in [JobEvent::Start, JobEvent::ArtifactsReady] {
        j = store
            .apply_job_event(j.id, j.version, e, ts(at), "test")
            .await
            .unwrap();
    }
    for t in &j.tasks {
        let mut v = t.version;
        for e in LIFECYCLE {
            v = store
                .apply_task_event(t.id, v, e, ts(at), "test")
                .await
                .unwrap()
                .version;
        }
    }
    for e in [JobEvent::WavesSucceeded, JobEvent::VerificationPassed] {
        j = store
            .apply_job_event(j.id, j.version, e, ts(at), "test")
            .await
            .unwrap();
    }
    store.get_job(j.id).await.unwrap()
}

/// A task's successful lifecycle.
pub(crate) const LIFECYCLE: [TaskEvent; 5] = [
    TaskEvent::Enqueue,
    TaskEvent::Dispatch,
    TaskEvent::Start,
    TaskEvent::Verify,
    TaskEvent::Succeed,
];

/// Environment 1 with one target, release 1, and job 1 on it, created.
pub(crate) async fn one_job(store: &dyn Store) -> DeploymentJob {
    let (env, targets) = seed_env(store, 1, 1).await;
    let rel = seed_release(store, 1).await;
    let job = new_job(store, 1, env, rel, &targets, 1).await;
    store.create_job(&job).await.unwrap().value
}

/// Creates the job, starts it and fails it at `at` (it then deployed nothing that counts).
pub(crate) async fn create_and_fail(store: &dyn Store, job: &DeploymentJob, at: u64) {
    store.create_job(job).await.unwrap();
    let started = store
        .apply_job_event(job.id, 0, JobEvent::Start, ts(at), "test")
        .await
        .unwrap();
    store
        .apply_job_event(job.id, started.version, JobEvent::Fail, ts(at + 1), "test")
        .await
        .unwrap();
}
