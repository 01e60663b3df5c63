//! The data the console's render budget is measured on: five environments in a pipeline with 20 targets each, 1,000 settled jobs, and one running job of 1,000 tasks in 10 waves; written straight to the store.
//!
//! Shared by the benchmark (`benches/console.rs`) and the budget test
//! (`src/tests/console_budget.rs`, which includes this file by path).

#![allow(
    clippy::unwrap_used,
    reason = "setup over fixed, valid inputs; a failure is a broken fixture"
)]

use std::num::NonZeroU32;

use deploy_core::testing::{
    component_id, environment_id, job, name, promotion, release, ssh_target, target_id, task, ts,
};
use deploy_core::{DEFAULT_MAX_ATTEMPTS, JobId, JobStatus, TaskStatus};
use deploy_store::Store;

/// Environments, in pipeline order (each requires the one before).
pub const ENVIRONMENTS: u64 = 5;
/// Targets per environment.
pub const TARGETS: u64 = 20;
/// Settled jobs, spread over the environments.
pub const SETTLED_JOBS: u64 = 1_000;
/// Tasks of the running job: 100 targets x 10 components.
pub const BIG_JOB_TASKS: u64 = 1_000;

/// Writes the world and returns the running 1,000-task job.
pub async fn seed(store: &dyn Store) -> JobId {
    let rel = release(&["api", "web"]);
    store.put_release(&rel).await.unwrap();
    for e in 1..=ENVIRONMENTS {
        let mut env = deploy_core::testing::environment(&format!("env-{e}"));
        env.id = environment_id(e);
        if e > 1 {
            env.requires = vec![environment_id(e - 1)];
        }
        store.put_environment(&env).await.unwrap();
        for t in 1..=TARGETS {
            let mut target = ssh_target(1);
            target.id = target_id(e * 10_000 + t);
            target.environment_id = env.id;
            target.name = name(&format!("host-{t}"));
            store.put_target(&target).await.unwrap();
        }
    }
    // Settled jobs: one task each, completed (every 10th failed), oldest first.
    for n in 1..=SETTLED_JOBS {
        let e = (n % ENVIRONMENTS) + 1;
        let mut p = promotion(n);
        p.environment_id = environment_id(e);
        p.release_id = rel.id;
        store.put_promotion(&p).await.unwrap();
        let mut j = job(n, 1);
        j.environment_id = environment_id(e);
        j.release_id = rel.id;
        j.created_at = ts(n * 1_000);
        j.started_at = Some(ts(n * 1_000 + 10));
        j.completed_at = Some(ts(n * 1_000 + 500));
        let failed = n % 10 == 0;
        j.status = if failed {
            JobStatus::Failed
        } else {
            JobStatus::Completed
        };
        for t in &mut j.tasks {
            t.job_id = j.id;
            t.id = deploy_core::testing::task_id(n * 10);
            t.target_id = target_id(e * 10_000 + 1);
            t.status = if failed {
                TaskStatus::Failed
            } else {
                TaskStatus::Succeeded
            };
            t.attempt_number = 1;
            t.started_at = j.started_at;
            t.completed_at = j.completed_at;
        }
        store.create_job(&j).await.unwrap();
    }
    // The running job: 100 targets of the last environment x 10 components, 10 waves.
    let e = ENVIRONMENTS;
    let big_targets = BIG_JOB_TASKS / 10;
    for t in TARGETS + 1..=big_targets {
        let mut target = ssh_target(1);
        target.id = target_id(e * 10_000 + t);
        target.environment_id = environment_id(e);
        target.name = name(&format!("host-{t}"));
        store.put_target(&target).await.unwrap();
    }
    let n = SETTLED_JOBS + 1;
    let mut p = promotion(n);
    p.environment_id = environment_id(e);
    p.release_id = rel.id;
    store.put_promotion(&p).await.unwrap();
    let mut big = job(n, 0);
    big.environment_id = environment_id(e);
    big.release_id = rel.id;
    big.status = JobStatus::Running;
    big.parallelism = NonZeroU32::new(100).unwrap();
    big.created_at = ts(n * 1_000);
    big.started_at = Some(ts(n * 1_000 + 10));
    for t in 1..=big_targets {
        for c in 1..=10 {
            let index = t * 10 + c;
            let mut task = task(5_000_000 + index, DEFAULT_MAX_ATTEMPTS);
            task.job_id = big.id;
            task.target_id = target_id(e * 10_000 + t);
            task.component_id = Some(component_id(c));
            task.wave = ((t - 1) / 10) as u32;
            // The first waves are done, one is under way, the rest wait.
            let (status, attempt) = match task.wave {
                0..=3 => (TaskStatus::Succeeded, 1),
                4 => (TaskStatus::Running, 1),
                _ => (TaskStatus::Pending, 0),
            };
            task.status = status;
            task.attempt_number = attempt;
            if attempt > 0 {
                task.started_at = Some(ts(n * 1_000 + 20 + index));
            }
            if status == TaskStatus::Succeeded {
                task.completed_at = Some(ts(n * 1_000 + 900 + index));
            }
            big.tasks.push(task);
        }
    }
    store.create_job(&big).await.unwrap().value.id
}
