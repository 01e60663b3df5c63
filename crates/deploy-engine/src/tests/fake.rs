//! The fixture that wires an engine to a temp SQLite store and a `FakeWorld` (deploy-testkit's fake executor).

use std::sync::Arc;

use deploy_core::testing::{approved_promotion, environment, name, ssh_target, ts};
use deploy_core::*;
use deploy_exec::ExecutorRegistry;
use deploy_store::{SqliteConfig, SqliteStore, Store};

use crate::{Engine, EngineConfig, JobRequest, SystemClock};

/// The engine tests' executor: the workspace's one fake executor, under the name these
/// tests have always used for the world it simulates.
pub use deploy_testkit::exec::{Behaviour, FakeExecutor as FakeWorld, fake_addr};

/// An engine on a fresh SQLite store with `n` ssh targets served by a `FakeWorld`.
pub struct Fixture {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    pub world: Arc<FakeWorld>,
    pub targets: Vec<Target>,
    _dir: tempfile::TempDir,
}

pub fn release_with(n: u64, digest: Digest) -> Release {
    release_with_component(n, digest, 1)
}

/// Release `n` whose one component `web` has id `component_id(c)` (each real release gets new ids).
pub fn release_with_component(n: u64, digest: Digest, c: u64) -> Release {
    let component = Component {
        id: deploy_core::testing::component_id(c),
        name: name("web"),
        image: ImageRef::from_parts("127.0.0.1:5000/web", &digest).unwrap(),
    };
    Release::new(
        deploy_core::testing::release_id(n),
        name(&format!("r{n}")),
        vec![component],
        ts(n),
    )
    .unwrap()
}

pub fn health_by_command() -> HealthCheckConfig {
    let mut c = HealthCheckConfig::new(HealthCheck::Command {
        in_container: false,
        command: CommandSpec::new(vec!["check".into()]).unwrap(),
    });
    c.retries = 1;
    c.interval_ms = 0;
    c
}

impl Fixture {
    pub async fn new(n: u8) -> Self {
        let dir = deploy_testkit::temp_dir("engine-").unwrap();
        Self::open(n, dir, Arc::new(FakeWorld::default()), true).await
    }

    /// An engine over the database in `dir` (created with targets when `seed`).
    pub async fn open(n: u8, dir: tempfile::TempDir, world: Arc<FakeWorld>, seed: bool) -> Self {
        Self::open_with(n, dir, world, seed, environment("prod"), |_| {}).await
    }

    /// [`Fixture::open`] with `env` as the environment and every target passed through `tweak`.
    pub async fn open_with(
        n: u8,
        dir: tempfile::TempDir,
        world: Arc<FakeWorld>,
        seed: bool,
        env: Environment,
        tweak: impl Fn(&mut Target),
    ) -> Self {
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&SqliteConfig::new(dir.path().join("deploy.db")))
                .await
                .unwrap(),
        );
        let targets: Vec<Target> = (1..=n)
            .map(|i| {
                let mut t = ssh_target(i);
                t.health_check = Some(health_by_command());
                tweak(&mut t);
                t
            })
            .collect();
        if seed {
            store.put_environment(&env).await.unwrap();
            for t in &targets {
                store.put_target(t).await.unwrap();
            }
        }
        let engine = Self::engine_on(store.clone(), world.clone());
        Self {
            engine,
            store,
            world,
            targets,
            _dir: dir,
        }
    }

    /// An engine over an existing database at `dir/deploy.db` (the directory is not owned).
    pub async fn open_at(n: u8, dir: &std::path::Path, world: Arc<FakeWorld>) -> Self {
        let owned = tempfile::TempDir::new().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&SqliteConfig::new(dir.join("deploy.db")))
                .await
                .unwrap(),
        );
        let mut f = Self::open(n, owned, world, false).await;
        f.engine = Self::engine_on(store.clone(), f.world.clone());
        f.store = store;
        f
    }

    fn engine_on(store: Arc<dyn Store>, world: Arc<FakeWorld>) -> Engine {
        let mut executors = ExecutorRegistry::new();
        executors.register(ExecutionModel::Ssh, world);
        let mut config = EngineConfig::new("test-engine");
        config.backoff = RetryBackoff {
            base: std::time::Duration::from_millis(10),
            max: std::time::Duration::from_millis(50),
        };
        config.shutdown_grace = std::time::Duration::ZERO;
        Engine::new(store, executors, config, Arc::new(SystemClock)).unwrap()
    }

    /// Stores `release`, approves promotion `n` of it, and creates its job.
    pub async fn job(
        &self,
        n: u64,
        release: &Release,
        configure: impl FnOnce(&mut JobRequest),
    ) -> DeploymentJob {
        self.store.put_release(release).await.unwrap();
        let p = approved_promotion(n, release.id);
        self.store.put_promotion(&p).await.unwrap();
        let mut request =
            JobRequest::new(p.id, IdempotencyKey::parse(&format!("promo-{n}")).unwrap());
        configure(&mut request);
        self.engine.create_job(&request).await.unwrap().value
    }

    pub fn target(&self, i: usize) -> TargetId {
        self.targets[i].id
    }
}
