//! Secret references through the engine: resolved into the executor's request only, redacted from the task log, kept as references in the stored artifacts, refused at job creation when missing, and a task failing without retry when its secret is gone at dispatch.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deploy_core::testing::digest;
use deploy_core::*;

use super::fake::{Fixture, release_with, release_with_component};
use crate::{AppSecrets, AppSecretsError, EngineError, ResolvedSecret};

const VALUE: &str = "hunter2-engine $x #y";
const TEMPLATE: &str = "services:\n  web:\n    componentName: web\n    environment:\n      DB: secret:db\n      PLAIN: hello\n";

/// Secrets by name (the engine's side of the contract; the store and the key are
/// deploy-server's, tested there).
#[derive(Default)]
struct MapSecrets(
    Mutex<BTreeMap<String, String>>,
    /// name -> the environments (ids) it may be used in; absent: every one.
    Mutex<BTreeMap<String, Vec<String>>>,
);

impl MapSecrets {
    fn scope(&self, name: &str) -> Vec<String> {
        self.1
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait]
impl AppSecrets for MapSecrets {
    async fn resolve(&self, name: &Name) -> Result<Option<ResolvedSecret>, AppSecretsError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(name.as_str())
            .map(|v| ResolvedSecret {
                value: Secret::new(v.clone()),
                version: 1,
                environments: self.scope(name.as_str()),
            }))
    }

    async fn environments(&self, name: &Name) -> Result<Option<Vec<String>>, AppSecretsError> {
        let exists = self.0.lock().unwrap().contains_key(name.as_str());
        Ok(exists.then(|| self.scope(name.as_str())))
    }
}

async fn fixture() -> (Fixture, Arc<MapSecrets>) {
    let f = Fixture::new(1).await;
    let secrets = Arc::new(MapSecrets::default());
    secrets
        .0
        .lock()
        .unwrap()
        .insert("db".to_owned(), VALUE.to_owned());
    f.engine.set_app_secrets(secrets.clone());
    f.world.echo_env.store(true, Ordering::SeqCst);
    (f, secrets)
}

async fn log_text(f: &Fixture, task: TaskId) -> String {
    f.store
        .read_log(task, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.content.clone())
        .collect()
}

#[tokio::test]
async fn the_value_reaches_the_executor_only_and_the_log_is_redacted() {
    let (f, _) = fixture().await;
    let job = f
        .job(1, &release_with(1, digest(1)), |r| {
            r.template = Some(TEMPLATE.to_owned());
        })
        .await;
    for a in &job.artifacts {
        assert!(
            !a.content.contains("hunter2"),
            "{}: {}",
            a.file_name,
            a.content
        );
    }
    assert!(
        job.artifacts
            .iter()
            .any(|a| a.content.contains("secret:db"))
    );
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed, "{done:?}");
    let envs = f.world.envs.lock().unwrap().clone();
    assert_eq!(envs.len(), 1);
    assert_eq!(envs[0]["DB"], VALUE);
    assert_eq!(envs[0]["PLAIN"], "hello");
    let log = log_text(&f, done.tasks[0].id).await;
    assert!(log.contains("env PLAIN=hello"), "{log}");
    assert!(log.contains("env DB="), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
    let events = f.store.job_events(job.id, 0, 1000).await.unwrap();
    assert!(!format!("{events:?}").contains("hunter2"));
}

#[tokio::test]
async fn a_missing_secret_is_refused_at_creation_and_one_deleted_later_fails_the_task_once() {
    let (f, secrets) = fixture().await;
    let release = release_with(1, digest(1));
    f.store.put_release(&release).await.unwrap();
    let p = deploy_core::testing::approved_promotion(1, release.id);
    f.store.put_promotion(&p).await.unwrap();
    let mut request = crate::JobRequest::new(p.id, IdempotencyKey::parse("promo-1").unwrap());
    request.template = Some(TEMPLATE.replace("secret:db", "secret:other"));
    let err = f.engine.create_job(&request).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidRequest(m)
            if m.contains("variable `DB` references secret `other`, which does not exist")),
        "{err}"
    );

    let job = f
        .job(2, &release_with_component(2, digest(2), 2), |r| {
            r.template = Some(TEMPLATE.to_owned())
        })
        .await;
    secrets.0.lock().unwrap().clear();
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    assert_ne!(done.status, JobStatus::Completed);
    let task = &done.tasks[0];
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.attempt_number, 1, "not retried: {task:?}");
    assert!(
        f.world.envs.lock().unwrap().is_empty(),
        "nothing reached the executor"
    );
    let events = format!("{:?}", f.store.job_events(job.id, 0, 1000).await.unwrap());
    assert!(events.contains("secret `db`"), "{events}");
}

#[tokio::test]
async fn a_secret_outside_its_environments_is_refused_at_creation_and_at_dispatch() {
    let (f, secrets) = fixture().await;
    let env = f
        .store
        .find_environment_by_name("prod")
        .await
        .unwrap()
        .unwrap();
    let elsewhere = EnvironmentId::from_parts(deploy_core::testing::ts(9), [7; 10]).to_string();
    secrets
        .1
        .lock()
        .unwrap()
        .insert("db".to_owned(), vec![elsewhere.clone()]);
    let release = release_with(1, digest(1));
    f.store.put_release(&release).await.unwrap();
    let p = deploy_core::testing::approved_promotion(1, release.id);
    f.store.put_promotion(&p).await.unwrap();
    let mut request = crate::JobRequest::new(p.id, IdempotencyKey::parse("promo-1").unwrap());
    request.template = Some(TEMPLATE.to_owned());
    let err = f.engine.create_job(&request).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidRequest(m)
            if m.contains("service `web` variable `DB` references secret `db`, which may not be used in environment `prod`")),
        "{err}"
    );
    assert!(!err.to_string().contains("hunter2"), "{err}");

    // Allowed here: the job is created; narrowed again before dispatch: the task fails
    // once, without retry, and nothing reaches the executor.
    secrets
        .1
        .lock()
        .unwrap()
        .insert("db".to_owned(), vec![elsewhere.clone(), env.id.to_string()]);
    let job = f
        .job(2, &release_with_component(2, digest(2), 2), |r| {
            r.template = Some(TEMPLATE.to_owned())
        })
        .await;
    secrets
        .1
        .lock()
        .unwrap()
        .insert("db".to_owned(), vec![elsewhere]);
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    assert_ne!(done.status, JobStatus::Completed);
    let task = &done.tasks[0];
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.attempt_number, 1, "not retried: {task:?}");
    assert!(f.world.envs.lock().unwrap().is_empty());
    let events = format!("{:?}", f.store.job_events(job.id, 0, 1000).await.unwrap());
    assert!(
        events.contains("references secret `db`, which may not be used in environment `prod`"),
        "{events}"
    );
}

#[tokio::test]
async fn a_health_check_printing_the_secret_is_redacted_in_the_task_log_and_events() {
    let (f, _) = fixture().await;
    *f.world.check_output.lock().unwrap() = Some(format!("DB is {VALUE}\n"));
    let job = f
        .job(1, &release_with(1, digest(1)), |r| {
            r.template = Some(TEMPLATE.to_owned());
        })
        .await;
    let done = f.engine.run_to_settled(job.id).await.unwrap();
    assert_ne!(done.status, JobStatus::Completed);
    let log = log_text(&f, done.tasks[0].id).await;
    assert!(log.contains("health check failed"), "{log}");
    assert!(log.contains("DB is [REDACTED]"), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
    let events = format!("{:?}", f.store.job_events(job.id, 0, 1000).await.unwrap());
    assert!(events.contains("DB is [REDACTED]"), "{events}");
    assert!(!events.contains("hunter2"), "{events}");
    let tasks = format!("{:?}", f.store.get_job(job.id).await.unwrap());
    assert!(!tasks.contains("hunter2"), "{tasks}");
}
