//! `FakeWorld`: an in-memory executor (what runs where, scripted failures and hangs) and the fixture that wires an engine to a temp SQLite store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deploy_core::testing::{approved_promotion, environment, name, ssh_target, ts};
use deploy_core::*;
use deploy_exec::{
    CommandOutput, DeployRequest, ExecContext, ExecError, ExecutionResult, Executor,
    ExecutorRegistry, Published, TrafficSwitch,
};
use deploy_store::{SqliteConfig, SqliteStore, Store};

use crate::{Engine, EngineConfig, JobRequest, SystemClock};

/// What a scripted deploy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    FailRetryable,
    FailPermanent,
    /// Blocks until cancelled.
    Hang,
}

/// The targets' state and a script of failures, shared with the test.
#[derive(Default)]
pub struct FakeWorld {
    /// (target, container or project) -> digest running.
    pub running: Mutex<BTreeMap<(TargetId, String), Digest>>,
    /// Every deploy call: (task, attempt, target, digest).
    pub deploys: Mutex<Vec<(TaskId, u32, TargetId, Digest)>>,
    /// (target, digest) -> behaviour, used `count` times.
    pub script: Mutex<Vec<(TargetId, Digest, Behaviour, usize)>>,
    /// Digests whose health command fails.
    pub broken: Mutex<BTreeSet<Digest>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// (target, container) -> the kept `-previous`: its digest and whether it runs.
    pub previous: Mutex<BTreeMap<(TargetId, String), (Digest, bool)>>,
    /// Deploys, traffic switches, hook commands and retirements, in order, as text.
    pub ops: Mutex<Vec<String>>,
    /// Commands other than the health check (hooks) exit 1 on a target running one of
    /// these digests (a smoke test that rejects a release); they are recorded in `ops`.
    pub failing_hooks: Mutex<BTreeSet<Digest>>,
    /// target -> the proxy include as last switched.
    pub proxy: Mutex<BTreeMap<TargetId, String>>,
    /// The environment of every docker_host deploy, as the executor received it.
    pub envs: Mutex<Vec<BTreeMap<String, String>>>,
    /// Write each received env value to the task log (an executor that echoes what it
    /// runs), so the log's redaction is observable.
    pub echo_env: std::sync::atomic::AtomicBool,
    /// When set, the health command exits 1 printing this (a check that prints what the
    /// container was given).
    pub check_output: Mutex<Option<String>>,
}

/// The fake `host:port` a container running `digest` is published on.
pub fn fake_addr(digest: &Digest) -> String {
    let hex = digest.as_str();
    let tail = u16::from_str_radix(&hex[hex.len() - 4..], 16).unwrap();
    format!("127.0.0.1:{}", 40_000 + tail % 20_000)
}

impl FakeWorld {
    pub fn on(&self, target: TargetId, digest: &Digest, behaviour: Behaviour, count: usize) {
        self.script
            .lock()
            .unwrap()
            .push((target, digest.clone(), behaviour, count));
    }

    pub fn digest_on(&self, target: TargetId, slot: &str) -> Option<Digest> {
        self.running
            .lock()
            .unwrap()
            .get(&(target, slot.to_owned()))
            .cloned()
    }

    fn scripted(&self, target: TargetId, digest: &Digest) -> Option<Behaviour> {
        let mut script = self.script.lock().unwrap();
        let entry = script
            .iter_mut()
            .find(|(t, d, _, n)| *t == target && d == digest && *n > 0)?;
        entry.3 -= 1;
        Some(entry.2)
    }
}

fn slot(request: &DeployRequest) -> String {
    request
        .component
        .as_ref()
        .map_or_else(|| request.project.to_string(), |c| c.name.to_string())
}

#[async_trait]
impl Executor for FakeWorld {
    async fn deploy(&self, request: &DeployRequest, ctx: &ExecContext) -> ExecutionResult {
        if let Some(c) = &request.component {
            self.envs.lock().unwrap().push(c.container.env.clone());
            if self.echo_env.load(Ordering::SeqCst) {
                for (k, v) in &c.container.env {
                    ctx.log.line(&format!("env {k}={v}"));
                }
            }
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let task = &request.task;
        let target = request.target.id;
        self.deploys.lock().unwrap().push((
            task.id,
            task.attempt_number,
            target,
            task.digest.clone(),
        ));
        let key = (target, slot(request));
        let previous = self.running.lock().unwrap().get(&key).cloned();
        let result = match self.scripted(target, &task.digest) {
            Some(Behaviour::FailRetryable) => ExecutionResult::failed(
                ExecError::Connect {
                    host: "fake".into(),
                    port: 22,
                    detail: "connection refused".into(),
                },
                previous,
            ),
            Some(Behaviour::FailPermanent) => ExecutionResult::failed(
                ExecError::Authentication {
                    host: "fake".into(),
                    port: 22,
                    user: "deploy".into(),
                    method: "publickey",
                },
                previous,
            ),
            Some(Behaviour::Hang) => {
                ctx.cancel.cancelled().await;
                ExecutionResult::failed(
                    ExecError::Cancelled {
                        host: "fake".into(),
                        what: "deploy".into(),
                    },
                    previous,
                )
            }
            None => {
                // Let other tasks overlap, so concurrency is observable.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                let keep = request
                    .component
                    .as_ref()
                    .is_some_and(|c| c.keep_previous_running);
                if let Some(old) = &previous
                    && old != &task.digest
                {
                    self.previous
                        .lock()
                        .unwrap()
                        .insert(key.clone(), (old.clone(), keep));
                }
                self.ops.lock().unwrap().push(format!(
                    "deploy {} {} keep={keep}",
                    request.target.name, task.digest
                ));
                self.running
                    .lock()
                    .unwrap()
                    .insert(key, task.digest.clone());
                ctx.log.line(&format!("deployed {}", task.digest));
                ExecutionResult {
                    success: true,
                    published: Vec::new(),
                    agent: None,
                    deployed_digest: Some(task.digest.clone()),
                    changed: previous.as_ref() != Some(&task.digest),
                    previous_digest: previous,
                    running: BTreeMap::new(),
                    error: None,
                }
            }
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn inspect(
        &self,
        target: &Target,
        component: &Name,
        _ctx: &ExecContext,
    ) -> Result<Option<Digest>, ExecError> {
        Ok(self.digest_on(target.id, component.as_str()))
    }

    async fn run_command(
        &self,
        target: &Target,
        command: &CommandSpec,
        ctx: &ExecContext,
    ) -> Result<CommandOutput, ExecError> {
        let program = command.argv()[0].clone();
        if program != "check" {
            let rejected = self.failing_hooks.lock().unwrap().clone();
            let fails = self
                .running
                .lock()
                .unwrap()
                .iter()
                .any(|((t, _), d)| *t == target.id && rejected.contains(d));
            self.ops
                .lock()
                .unwrap()
                .push(format!("command {} {program}", target.name));
            ctx.log.line(&format!("{program} says hello"));
            return Ok(CommandOutput {
                exit_status: u32::from(fails),
                stdout: format!("{program} ran\n"),
            });
        }
        if let Some(output) = self.check_output.lock().unwrap().clone() {
            return Ok(CommandOutput {
                exit_status: 1,
                stdout: output,
            });
        }
        let broken = self.broken.lock().unwrap();
        let running = self.running.lock().unwrap();
        let sick = running
            .iter()
            .any(|((t, _), d)| *t == target.id && broken.contains(d));
        Ok(CommandOutput {
            exit_status: u32::from(sick),
            stdout: if sick {
                "unhealthy".into()
            } else {
                String::new()
            },
        })
    }

    async fn published(
        &self,
        target: &Target,
        component: &Name,
        _port: u16,
        _ctx: &ExecContext,
    ) -> Result<Published, ExecError> {
        let key = (target.id, component.to_string());
        let current = self.running.lock().unwrap().get(&key).map(fake_addr);
        let previous = self
            .previous
            .lock()
            .unwrap()
            .get(&key)
            .filter(|(_, running)| *running)
            .map(|(d, _)| fake_addr(d));
        Ok(Published { current, previous })
    }

    async fn switch_traffic(
        &self,
        target: &Target,
        switch: &TrafficSwitch,
        _ctx: &ExecContext,
    ) -> Result<(), ExecError> {
        let live = if switch.content.contains(": green live") {
            "green"
        } else {
            "blue"
        };
        let blue_running = self
            .previous
            .lock()
            .unwrap()
            .iter()
            .any(|((t, _), (_, running))| *t == target.id && *running);
        self.ops.lock().unwrap().push(format!(
            "switch {} {live} blue_running={blue_running}",
            target.name
        ));
        self.proxy
            .lock()
            .unwrap()
            .insert(target.id, switch.content.clone());
        Ok(())
    }

    async fn retire_previous(
        &self,
        target: &Target,
        component: &Name,
        _ctx: &ExecContext,
    ) -> Result<(), ExecError> {
        if let Some(p) = self
            .previous
            .lock()
            .unwrap()
            .get_mut(&(target.id, component.to_string()))
        {
            p.1 = false;
        }
        self.ops
            .lock()
            .unwrap()
            .push(format!("retire {}", target.name));
        Ok(())
    }
}

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
