//! `FakeExecutor`: an in-memory executor (what runs where, scripted failures and hangs, every call recorded).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use deploy_core::{CommandSpec, Digest, Name, Target, TargetId, TaskId};

use crate::errors::ExecError;
use crate::executor::{
    CommandOutput, DeployFailure, DeployOutcome, DeployRequest, Deployed, ExecContext, Executor,
    Published, TrafficSwitch,
};

/// What a scripted deploy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    FailRetryable,
    FailPermanent,
    /// Blocks until cancelled.
    Hang,
}

impl Behaviour {
    /// The error of a scripted `what` (after the cancellation, for a hang).
    async fn error(self, what: &str, ctx: &ExecContext) -> ExecError {
        match self {
            Self::FailRetryable => ExecError::Connect {
                host: "fake".into(),
                port: 22,
                detail: "connection refused".into(),
            },
            Self::FailPermanent => ExecError::Authentication {
                host: "fake".into(),
                port: 22,
                user: "deploy".into(),
                method: "publickey",
            },
            Self::Hang => {
                ctx.cancel.cancelled().await;
                ExecError::Cancelled {
                    host: "fake".into(),
                    what: what.into(),
                }
            }
        }
    }
}

/// An executor over an in-memory world: what runs where (deploy, inspect, published,
/// traffic switches, retirements), a script of failures and hangs, and a record of
/// every call; the test holds it in an `Arc` and reads or changes any of it.
#[derive(Default)]
pub struct FakeExecutor {
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
    pub echo_env: AtomicBool,
    /// When set, the health command exits 1 printing this (a check that prints what the
    /// container was given).
    pub check_output: Mutex<Option<String>>,
    /// target -> how its `inspect` fails (an unreachable or hanging target).
    pub inspect_faults: Mutex<BTreeMap<TargetId, Behaviour>>,
    /// Deploy without the 5 ms pause that lets deploys overlap (benchmarks).
    pub instant: AtomicBool,
}

/// The guard of `m`, poisoned or not (a panicking test thread fails its test anyway).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The fake `host:port` a container running `digest` is published on.
pub fn fake_addr(digest: &Digest) -> String {
    let hex = digest.as_str();
    let tail = u16::from_str_radix(&hex[hex.len() - 4..], 16).unwrap_or(0);
    format!("127.0.0.1:{}", 40_000 + tail % 20_000)
}

impl FakeExecutor {
    /// The next `count` deploys of `digest` to `target` do `behaviour`.
    pub fn on(&self, target: TargetId, digest: &Digest, behaviour: Behaviour, count: usize) {
        lock(&self.script).push((target, digest.clone(), behaviour, count));
    }

    /// The digest running in `slot` (container or project) on `target`.
    pub fn digest_on(&self, target: TargetId, slot: &str) -> Option<Digest> {
        lock(&self.running).get(&(target, slot.to_owned())).cloned()
    }

    /// `target` runs `digest` in `slot`, as if deployed before the test.
    pub fn set_running(&self, target: TargetId, slot: &str, digest: Digest) {
        lock(&self.running).insert((target, slot.to_owned()), digest);
    }

    /// Every `inspect` of `target` does `behaviour` (fails, or hangs until cancelled).
    pub fn fail_inspect(&self, target: TargetId, behaviour: Behaviour) {
        lock(&self.inspect_faults).insert(target, behaviour);
    }

    fn scripted(&self, target: TargetId, digest: &Digest) -> Option<Behaviour> {
        let mut script = lock(&self.script);
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
impl Executor for FakeExecutor {
    async fn deploy(&self, request: &DeployRequest, ctx: &ExecContext) -> DeployOutcome {
        if let Some(c) = &request.component {
            lock(&self.envs).push(c.container.env.clone());
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
        lock(&self.deploys).push((task.id, task.attempt_number, target, task.digest.clone()));
        let key = (target, slot(request));
        let previous = lock(&self.running).get(&key).cloned();
        let result = match self.scripted(target, &task.digest) {
            Some(behaviour) => Err(DeployFailure::new(
                behaviour.error("deploy", ctx).await,
                previous,
            )),
            None => {
                if !self.instant.load(Ordering::SeqCst) {
                    // Let other tasks overlap, so concurrency is observable.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                let keep = request
                    .component
                    .as_ref()
                    .is_some_and(|c| c.keep_previous_running);
                if let Some(old) = &previous
                    && old != &task.digest
                {
                    lock(&self.previous).insert(key.clone(), (old.clone(), keep));
                }
                lock(&self.ops).push(format!(
                    "deploy {} {} keep={keep}",
                    request.target.name, task.digest
                ));
                lock(&self.running).insert(key, task.digest.clone());
                ctx.log.line(&format!("deployed {}", task.digest));
                Ok(Deployed {
                    published: Vec::new(),
                    agent: None,
                    deployed_digest: task.digest.clone(),
                    changed: previous.as_ref() != Some(&task.digest),
                    previous_digest: previous,
                    running: BTreeMap::new(),
                })
            }
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn inspect(
        &self,
        target: &Target,
        component: &Name,
        ctx: &ExecContext,
    ) -> Result<Option<Digest>, ExecError> {
        let fault = lock(&self.inspect_faults).get(&target.id).copied();
        if let Some(behaviour) = fault {
            return Err(behaviour.error("inspect", ctx).await);
        }
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
            let rejected = lock(&self.failing_hooks).clone();
            let fails = lock(&self.running)
                .iter()
                .any(|((t, _), d)| *t == target.id && rejected.contains(d));
            lock(&self.ops).push(format!("command {} {program}", target.name));
            ctx.log.line(&format!("{program} says hello"));
            return Ok(CommandOutput {
                exit_status: u32::from(fails),
                stdout: format!("{program} ran\n"),
            });
        }
        if let Some(output) = lock(&self.check_output).clone() {
            return Ok(CommandOutput {
                exit_status: 1,
                stdout: output,
            });
        }
        let broken = lock(&self.broken);
        let running = lock(&self.running);
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
        let current = lock(&self.running).get(&key).map(fake_addr);
        let previous = lock(&self.previous)
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
        let blue_running = lock(&self.previous)
            .iter()
            .any(|((t, _), (_, running))| *t == target.id && *running);
        lock(&self.ops).push(format!(
            "switch {} {live} blue_running={blue_running}",
            target.name
        ));
        lock(&self.proxy).insert(target.id, switch.content.clone());
        Ok(())
    }

    async fn retire_previous(
        &self,
        target: &Target,
        component: &Name,
        _ctx: &ExecContext,
    ) -> Result<(), ExecError> {
        if let Some(p) = lock(&self.previous).get_mut(&(target.id, component.to_string())) {
            p.1 = false;
        }
        lock(&self.ops).push(format!("retire {}", target.name));
        Ok(())
    }
}
