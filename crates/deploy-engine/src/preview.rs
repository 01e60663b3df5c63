//! `Engine::preview`: the dry run of a deploy: the rollout planner's waves and, per target and component, the digest it would get and what `inspect` finds running now.

use std::num::NonZeroU32;
use std::sync::Arc;

use deploy_core::{
    Digest, Environment, EnvironmentId, Name, Release, ReleaseId, Strategy, Target, TargetType,
    Wave, plan,
};
use deploy_exec::{ExecContext, Executor};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::context::container_name;
use crate::engine::Engine;
use crate::errors::EngineError;

/// Most `inspect` calls in flight at once during a preview.
const INSPECT_CONCURRENCY: usize = 16;

/// What a deploy of a release to an environment would do.
#[derive(Debug, Clone)]
pub struct Preview {
    pub release: Release,
    pub environment: Environment,
    pub strategy: Strategy,
    pub waves: Vec<PreviewWave>,
    /// Targets a job would skip: disabled ones.
    pub skipped: Vec<Target>,
}

/// One wave of the rollout with its entries.
#[derive(Debug, Clone)]
pub struct PreviewWave {
    pub wave: Wave,
    pub entries: Vec<PreviewEntry>,
}

/// One target (and component) of a wave.
#[derive(Debug, Clone)]
pub struct PreviewEntry {
    pub target: Target,
    /// `None` for a compose_host target, deployed as one project.
    pub component: Option<Name>,
    /// The digest it would get; `None` for a compose_host target (its compose lock is rendered with the job).
    pub digest: Option<Digest>,
    /// What `inspect` found running, or why it could not tell.
    pub running: Result<Option<Digest>, String>,
}

impl Engine {
    /// Plans a deploy of `release` to `environment` without creating a job: the
    /// waves come from deploy-core's planner (as for a real job) and each
    /// target's running digest from its executor's `inspect`. An `inspect` that
    /// fails (or a target no executor serves) is reported in its entry; it does
    /// not fail the preview.
    pub async fn preview(
        &self,
        release: ReleaseId,
        environment: EnvironmentId,
        strategy: &Strategy,
        parallelism: NonZeroU32,
    ) -> Result<Preview, EngineError> {
        let store = &self.inner.store;
        let release = store.get_release(release).await?;
        let environment = store.get_environment(environment).await?;
        let (skipped, targets): (Vec<Target>, Vec<Target>) = store
            .list_targets(environment.id)
            .await?
            .into_iter()
            .partition(|t| t.disabled);
        let ids: Vec<_> = targets.iter().map(|t| t.id).collect();
        let rollout = plan(strategy, &ids, parallelism)?;

        // One inspect per (target, slot), whichever waves the target appears in.
        let mut slots: Vec<(usize, Option<Name>, Name)> = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            if target.target_type == TargetType::ComposeHost {
                slots.push((i, None, environment.name.clone()));
            } else {
                for c in &release.components {
                    let slot = container_name(target, &c.name)?;
                    slots.push((i, Some(c.name.clone()), slot));
                }
            }
        }
        let limit = Arc::new(Semaphore::new(INSPECT_CONCURRENCY));
        let timeout = self.inner.config.task_timeout;
        let mut inspections = JoinSet::new();
        for (n, (i, _, slot)) in slots.iter().enumerate() {
            let target = targets[*i].clone();
            let slot = slot.clone();
            let executor = self.inner.executors.for_target(&target);
            let limit = limit.clone();
            inspections.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let found = match executor {
                    Ok(executor) => inspect(executor, &target, &slot, timeout).await,
                    Err(e) => Err(e.to_string()),
                };
                (n, found)
            });
        }
        let mut running: Vec<Result<Option<Digest>, String>> =
            vec![Err("not inspected".to_owned()); slots.len()];
        while let Some(joined) = inspections.join_next().await {
            match joined {
                Ok((n, found)) => running[n] = found,
                Err(e) => tracing::warn!(error = %e, "an inspect of the preview panicked"),
            }
        }

        let waves = rollout
            .waves
            .into_iter()
            .map(|wave| {
                let mut entries = Vec::new();
                for (n, (i, component, _)) in slots.iter().enumerate() {
                    let target = &targets[*i];
                    if !wave.targets.contains(&target.id) {
                        continue;
                    }
                    let digest = component.as_ref().and_then(|c| {
                        release
                            .components
                            .iter()
                            .find(|rc| &rc.name == c)
                            .map(|rc| rc.digest().clone())
                    });
                    entries.push(PreviewEntry {
                        target: target.clone(),
                        component: component.clone(),
                        digest,
                        running: running[n].clone(),
                    });
                }
                PreviewWave { wave, entries }
            })
            .collect();
        Ok(Preview {
            release,
            environment,
            strategy: strategy.clone(),
            waves,
            skipped,
        })
    }
}

async fn inspect(
    executor: Arc<dyn Executor>,
    target: &Target,
    slot: &Name,
    timeout: std::time::Duration,
) -> Result<Option<Digest>, String> {
    let ctx = ExecContext::quiet(timeout);
    match tokio::time::timeout(timeout, executor.inspect(target, slot, &ctx)).await {
        Ok(found) => found.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "inspect did not answer within {} s",
            timeout.as_secs()
        )),
    }
}
