//! Creating a job from an approved promotion: plan the waves and one task per (target, component), or per target for compose hosts.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use deploy_artifacts::{
    ArtifactError, Colour, ComposeTemplate, ContainerRuntime, LOCK_FILE_NAME, PolicyScope,
    RenderInput, Traffic, check_runtime_policy, container_specs, parse_template, render,
};
use deploy_core::{
    ArtifactId, Connection, ContainerSpec, DEFAULT_MAX_ATTEMPTS, DeploymentJob, DeploymentTask,
    Environment, FailurePolicy, GeneratedArtifact, HealthCheck, IdempotencyKey, JobId, JobStatus,
    NewTask, PromotionId, PromotionStatus, Protocol, Release, RuntimePolicy, Strategy, Target,
    TargetType, TaskId, UnixPath, plan,
};
use deploy_health::NoProbePort;
use deploy_store::{Created, StoreError};

use crate::clock::random_bytes;
use crate::engine::Engine;
use crate::errors::EngineError;

/// How often a queued job request (`wait_for_environment`) tries the environment again.
pub const ENVIRONMENT_POLL: Duration = Duration::from_millis(200);

/// What a caller asks for when a promotion is approved.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub promotion_id: PromotionId,
    pub strategy: Strategy,
    pub parallelism: NonZeroU32,
    pub failure_policy: FailurePolicy,
    /// The same key returns the job created the first time.
    pub idempotency_key: IdempotencyKey,
    /// Attempts per task (at least 1).
    pub max_attempts: u32,
    /// A compose template (YAML) that replaces the release's service definition for
    /// this job only; `None`: the release's own. A rollback never needs it: it
    /// re-deploys the artifacts the restored job rendered.
    pub template: Option<String>,
    /// `None`: a busy environment refuses the job at once (`EnvironmentLocked`,
    /// naming the running job). `Some(d)`: the request queues, retrying as the
    /// environment frees up, for at most `d`, then refuses the same way.
    pub wait_for_environment: Option<Duration>,
    /// A busy environment queues the job instead of refusing it: it is created
    /// `pending` behind the last job in line and runs when its turn comes.
    pub queue: bool,
}

impl JobRequest {
    /// A request with the defaults: all-at-once, parallelism 10, any failure fails, 3 attempts.
    pub fn new(promotion_id: PromotionId, idempotency_key: IdempotencyKey) -> Self {
        Self {
            promotion_id,
            strategy: Strategy::AllAtOnce,
            parallelism: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            failure_policy: FailurePolicy::default(),
            idempotency_key,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            template: None,
            wait_for_environment: None,
            queue: false,
        }
    }

    /// Checks what can be checked without the store: the attempt count and the
    /// template's syntax. The API runs it before it approves a promotion, so a
    /// refused request leaves the promotion as it was.
    pub fn check(&self) -> Result<(), EngineError> {
        if !(1..=100).contains(&self.max_attempts) {
            return Err(EngineError::InvalidRequest(format!(
                "max_attempts is {}; expected 1 to 100",
                self.max_attempts
            )));
        }
        if let Some(template) = &self.template {
            parse_template(template.as_bytes())?;
        }
        Ok(())
    }
}

impl Engine {
    /// Creates the job of an approved promotion (idempotent by key). A second
    /// active job for the environment is refused by the store with
    /// `EnvironmentLocked`, naming the running job.
    ///
    /// With `wait_for_environment`, a busy environment queues the request: it is
    /// tried again every [`ENVIRONMENT_POLL`] until the running job ends or the wait
    /// is over. Dropping the future cancels the wait; nothing is written until the
    /// job is created.
    pub async fn create_job(
        &self,
        request: &JobRequest,
    ) -> Result<Created<DeploymentJob>, EngineError> {
        let deadline = request
            .wait_for_environment
            .map(|wait| tokio::time::Instant::now() + wait);
        if request.queue {
            // First in, first out: a job that asks to queue joins the line behind the
            // last one waiting (or the holder) rather than taking a free moment first.
            let promotion = self.inner.store.get_promotion(request.promotion_id).await?;
            if let Some(ahead) = self
                .inner
                .store
                .last_in_line(promotion.environment_id)
                .await?
            {
                return self.create_job_once(request, Some(ahead)).await;
            }
        }
        loop {
            match self.create_job_once(request, None).await {
                Err(EngineError::Store(StoreError::EnvironmentLocked { environment, .. }))
                    if request.queue =>
                {
                    // Behind the last job in line; `None`: the environment has just
                    // been freed, so the job takes it (or, lost again, is refused).
                    let ahead = self.inner.store.last_in_line(environment).await?;
                    return self.create_job_once(request, ahead).await;
                }
                Err(EngineError::Store(StoreError::EnvironmentLocked { .. }))
                    if deadline
                        .is_some_and(|d| tokio::time::Instant::now() + ENVIRONMENT_POLL <= d) =>
                {
                    tokio::time::sleep(ENVIRONMENT_POLL).await;
                }
                other => return other,
            }
        }
    }

    /// Everything `create_job` checks (the plan, the rendered artifacts, what each
    /// target can apply), without writing and whatever the promotion's status: the API
    /// runs it before it approves a promotion, so that a request the engine refuses
    /// leaves the promotion as it was.
    pub async fn check_job(&self, request: &JobRequest) -> Result<(), EngineError> {
        request.check()?;
        let promotion = self.inner.store.get_promotion(request.promotion_id).await?;
        self.build_job(request, &promotion).await.map(|_| ())
    }

    async fn create_job_once(
        &self,
        request: &JobRequest,
        queued_behind: Option<JobId>,
    ) -> Result<Created<DeploymentJob>, EngineError> {
        request.check()?;
        let store = &self.inner.store;
        let promotion = store.get_promotion(request.promotion_id).await?;
        if promotion.status != PromotionStatus::Approved {
            return Err(EngineError::PromotionNotApproved {
                promotion: promotion.id,
                status: promotion.status.as_str(),
            });
        }
        let mut job = self.build_job(request, &promotion).await?;
        job.queued_behind = queued_behind;
        // The request's trace context goes with the job: whichever replica runs it, the
        // job's span continues the request's trace.
        let traceparent = crate::trace::current_traceparent(&self.inner);
        let created = store.create_job_traced(&job, traceparent).await?;
        if created.created {
            self.inner.job_created.notify_one();
        }
        Ok(created)
    }

    /// Every `secret:NAME` of a service's environment exists and may be used in the
    /// job's `environment` (422 naming the variable, the secret and the environment
    /// otherwise, never a value). Every target type and transport takes them: values
    /// are resolved per task (the scope checked again), and an agent's stored delivery
    /// is sealed.
    async fn check_secret_refs(
        &self,
        environment: &deploy_core::Environment,
        service: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let refs = crate::app_secrets::references(env);
        let Some((key, first)) = refs.first() else {
            return Ok(());
        };
        let Some(secrets) = self.inner.app_secrets.get() else {
            return Err(EngineError::InvalidRequest(format!(
                "service `{service}` variable `{key}` references secret `{}`; expected a deployd with a secrets key configured",
                first.name()
            )));
        };
        for (key, r) in &refs {
            match secrets.environments(r.name()).await {
                Ok(Some(envs)) if crate::app_secrets::allowed_in(&envs, environment) => {}
                Ok(Some(_)) => {
                    return Err(EngineError::InvalidRequest(format!(
                        "service `{service}` {}",
                        crate::app_secrets::not_allowed(key, r.name(), environment)
                    )));
                }
                Ok(None) => {
                    return Err(EngineError::InvalidRequest(format!(
                        "service `{service}` variable `{key}` references secret `{}`, which does not exist; create it first (`deployctl secrets set {}`)",
                        r.name(),
                        r.name()
                    )));
                }
                Err(e) => return Err(EngineError::InvalidRequest(e.to_string())),
            }
        }
        Ok(())
    }

    /// The job `request` creates for `promotion`: planned, rendered and checked; not written.
    async fn build_job(
        &self,
        request: &JobRequest,
        promotion: &deploy_core::Promotion,
    ) -> Result<DeploymentJob, EngineError> {
        let store = &self.inner.store;
        let release = store.get_release(promotion.release_id).await?;
        // A disabled target gets no task (its plan lists it as skipped).
        let (disabled, targets): (Vec<_>, Vec<_>) = store
            .list_targets(promotion.environment_id)
            .await?
            .into_iter()
            .partition(|t| t.disabled);
        if targets.is_empty() && !disabled.is_empty() {
            let names: Vec<&str> = disabled.iter().map(|t| t.name.as_str()).collect();
            return Err(EngineError::InvalidRequest(format!(
                "every target of the environment is disabled ({}); enable one to deploy",
                names.join(", ")
            )));
        }
        let target_ids: Vec<_> = targets.iter().map(|t| t.id).collect();
        let rollout = plan(&request.strategy, &target_ids, request.parallelism)?;
        if crate::bluegreen::is_blue_green(&request.strategy) {
            crate::bluegreen::check_targets(&targets).map_err(EngineError::InvalidRequest)?;
        }
        let previous = store
            .previous_successful_job(promotion.environment_id, release.id)
            .await?;
        let now = self.inner.clock.now();
        let job_id = JobId::from_parts(now, random_bytes());
        let environment = store.get_environment(promotion.environment_id).await?;
        let template = match &request.template {
            Some(t) => Some(parse_template(t.as_bytes())?),
            None => release_template(&release)?,
        };
        if let Some(template) = &template {
            check_every_component_runs(&release, template)?;
            // Again for this environment: the release was checked against every
            // environment's policy, a job's own template not at all, and either may
            // have been tightened since.
            check_runtime_policy(
                template,
                &environment.runtime_policy,
                PolicyScope::Environment(environment.name.as_str()),
            )?;
        }
        let mut artifacts = Vec::new();
        let mut tasks = Vec::new();
        for target in &targets {
            let renders = matches!(
                target.target_type,
                TargetType::DockerHost | TargetType::ComposeHost
            );
            let bundle = match &template {
                Some(template) if renders => Some(render(&RenderInput {
                    release: &release,
                    target,
                    environment: &environment.name,
                    promotion_id: promotion.id,
                    job_id,
                    timestamp: now,
                    template,
                    traffic: Traffic::all_to(Colour::Blue),
                    runtime: ContainerRuntime::Docker,
                    work_dir: &work_dir(target)?,
                    variables: &environment.variables,
                })?),
                _ => None,
            };
            // Blue-green phases reuse the same task: it deploys green and verifies it;
            // the task's wave is the target's first appearance.
            let wave = rollout
                .waves
                .iter()
                .find(|w| w.targets.contains(&target.id))
                .map_or(0, |w| w.index);
            let mut push = |component_id, digest| {
                tasks.push(DeploymentTask::pending(
                    NewTask {
                        id: TaskId::from_parts(now, random_bytes()),
                        job_id,
                        target_id: target.id,
                        component_id,
                        digest,
                        max_attempts: request.max_attempts,
                        wave,
                    },
                    now,
                ));
            };
            let lock = bundle.as_ref().and_then(|b| b.get(LOCK_FILE_NAME));
            match (target.target_type, lock) {
                (TargetType::ComposeHost, Some(lock)) => {
                    if let Some(template) = &template {
                        for t in &template.services {
                            let env: BTreeMap<String, String> = t
                                .environment
                                .iter()
                                .filter_map(|(k, v)| {
                                    let v = environment.variables.get(k).or(v.as_ref())?;
                                    Some((k.clone(), v.clone()))
                                })
                                .collect();
                            self.check_secret_refs(&environment, t.name.as_str(), &env)
                                .await?;
                        }
                    }
                    // One task deploys the whole project; its digest is the compose lock's
                    // sha256, which the executor finds again on the running containers.
                    push(None, lock.sha256.clone());
                }
                (TargetType::ComposeHost, None) => {
                    return Err(EngineError::InvalidRequest(format!(
                        "target `{}` is a compose_host; expected a release with a service definition (`template`) or a template in the request",
                        target.name
                    )));
                }
                (TargetType::DockerHost, Some(lock)) => {
                    // One task per service, each running its component's container as the
                    // lock defines it; keys a docker_host cannot apply are refused here.
                    let project = crate::context::docker_project(target, &environment.name)?;
                    let services = container_specs(lock.content.as_bytes(), project.as_str())?;
                    let blue_green = crate::bluegreen::is_blue_green(&request.strategy);
                    let mut seen = std::collections::BTreeMap::new();
                    for svc in services {
                        if let Some(other) = seen.insert(svc.component.clone(), svc.service.clone())
                        {
                            return Err(EngineError::InvalidRequest(format!(
                                "services `{other}` and `{}` both run component `{}`; expected one service per component on docker_host target `{}` (it runs one container per component)",
                                svc.service, svc.component, target.name
                            )));
                        }
                        if blue_green
                            && svc.spec.update_order == Some(deploy_core::UpdateOrder::StopFirst)
                        {
                            return Err(EngineError::InvalidRequest(format!(
                                "service `{}` asks for stop-first (deploy.update_config.order); expected no stop-first for blue-green on target `{}` (blue keeps serving while green starts)",
                                svc.service, target.name
                            )));
                        }
                        if blue_green && svc.spec.has_fixed_host_ports() {
                            return Err(EngineError::InvalidRequest(format!(
                                "service `{}` publishes a fixed host port; expected none for blue-green on target `{}` (green starts beside blue, and only one of them can hold a host port: let the proxy publish it)",
                                svc.service, target.name
                            )));
                        }
                        if !blue_green {
                            check_instance_port(target, svc.service.as_str(), &svc.spec)?;
                        }
                        if matches!(target.connection, Connection::Winrm(_)) {
                            deploy_exec::winrm::check_windows_spec(svc.service.as_str(), &svc.spec)
                                .map_err(EngineError::InvalidRequest)?;
                        }
                        self.check_secret_refs(&environment, svc.service.as_str(), &svc.spec.env)
                            .await?;
                        let component = release
                            .component(svc.component.as_str())
                            .map_err(|e| EngineError::InvalidRequest(e.to_string()))?;
                        push(Some(component.id), component.digest().clone());
                    }
                }
                _ => {
                    for component in &release.components {
                        if target.target_type == TargetType::DockerHost
                            && !crate::bluegreen::is_blue_green(&request.strategy)
                        {
                            // Without a definition the container publishes nothing.
                            check_instance_port(
                                target,
                                component.name.as_str(),
                                &ContainerSpec::from_image(component.image.clone()),
                            )?;
                        }
                        push(Some(component.id), component.digest().clone());
                    }
                }
            }
            for a in bundle.into_iter().flat_map(|b| b.artifacts) {
                artifacts.push(GeneratedArtifact::new(
                    ArtifactId::from_parts(now, random_bytes()),
                    job_id,
                    Some(target.id),
                    a.kind,
                    a.file_name,
                    a.content,
                ));
            }
        }
        let job = DeploymentJob {
            id: job_id,
            promotion_id: promotion.id,
            release_id: release.id,
            environment_id: promotion.environment_id,
            strategy: request.strategy.clone(),
            parallelism: request.parallelism,
            failure_policy: request.failure_policy,
            status: JobStatus::Pending,
            started_at: None,
            completed_at: None,
            artifacts,
            rollback_of: None,
            previous_job_id: previous.map(|j| j.id),
            queued_behind: None,
            winding_down: false,
            tasks,
            idempotency_key: request.idempotency_key.clone(),
            failure_reason: None,
            version: 0,
            created_at: now,
            updated_at: now,
        };
        Ok(job)
    }
}

/// The release's own service definition, parsed (`None`: the release has none).
pub fn release_template(release: &Release) -> Result<Option<ComposeTemplate>, ArtifactError> {
    release
        .template
        .as_ref()
        .map(|t| parse_template(t.content.as_bytes()))
        .transpose()
}

/// Checks a release's service definition when the release is created: the template
/// parses (every docker_host key with its path), every service runs a component
/// the release has, and it asks the hosts for nothing that `any_environment` (the
/// union of every environment's runtime policy) refuses: a release no environment
/// could run is refused before anyone promotes it. Nothing is written.
pub fn check_release_template(
    release: &Release,
    any_environment: &RuntimePolicy,
) -> Result<(), ArtifactError> {
    let Some(template) = release_template(release)? else {
        return Ok(());
    };
    check_runtime_policy(&template, any_environment, PolicyScope::AnyEnvironment)?;
    for service in &template.services {
        release.component(service.component.as_str()).map_err(|e| {
            ArtifactError::UnknownComponent {
                service: service.name.to_string(),
                component: e.component,
                release: e.release,
                available: e.available.join(", "),
            }
        })?;
    }
    check_every_component_runs(release, &template)
}

/// Checks a release's service definition against the runtime policy of `environment`
/// (when a promotion there is requested): refused early, before anyone approves it.
pub fn check_release_for_environment(
    release: &Release,
    environment: &Environment,
) -> Result<(), ArtifactError> {
    match release_template(release)? {
        Some(template) => check_runtime_policy(
            &template,
            &environment.runtime_policy,
            PolicyScope::Environment(environment.name.as_str()),
        ),
        None => Ok(()),
    }
}

/// Every component of the release is run by a service of the definition: a component
/// without one would never be deployed while its job completed.
fn check_every_component_runs(
    release: &Release,
    template: &ComposeTemplate,
) -> Result<(), ArtifactError> {
    for component in &release.components {
        if !template
            .services
            .iter()
            .any(|s| s.component == component.name)
        {
            return Err(ArtifactError::Invalid {
                field: "services".to_owned(),
                value: format!("(no service runs component `{}`)", component.name),
                expected: format!(
                    "a service with `componentName: {}` for every component of release `{}`",
                    component.name, release.name
                ),
            });
        }
    }
    Ok(())
}

/// The container port an instance check of `target` aims at: `Some(port)` for an http
/// or tcp check without a health_endpoint (`Some(None)`: the only published TCP port).
fn instance_check_port(target: &Target) -> Option<Option<u16>> {
    if target.health_endpoint.is_some() {
        return None;
    }
    match &target.health_check.as_ref()?.check {
        HealthCheck::Http { port, .. } => Some(*port),
        HealthCheck::Tcp { port } => Some(Some(*port)),
        HealthCheck::Command { .. } => None,
    }
}

/// Refuses a docker_host service whose instance check could not find its port: the
/// check probes the port the new container publishes (blue-green publishes the proxy's
/// upstream port itself, so it is not checked here).
fn check_instance_port(
    target: &Target,
    service: &str,
    spec: &ContainerSpec,
) -> Result<(), EngineError> {
    let Some(wanted) = instance_check_port(target) else {
        return Ok(());
    };
    let tcp: Vec<u16> = spec
        .ports
        .iter()
        .filter(|p| p.protocol == Protocol::Tcp)
        .map(|p| p.container_port)
        .collect();
    let problem = match deploy_health::probe_container_port(&tcp, wanted) {
        Ok(_) => return Ok(()),
        Err(NoProbePort::NotPublished(port)) => {
            format!("does not publish container port {port}/tcp")
        }
        Err(NoProbePort::None) => "publishes no TCP port".to_owned(),
        Err(NoProbePort::Several(_)) => {
            "publishes several TCP ports; name one with `port` in the health check".to_owned()
        }
    };
    Err(EngineError::InvalidRequest(format!(
        "service `{service}` {problem}, and target `{}` checks the health of the new instance (an http or tcp check without a health_endpoint); expected the service to publish the port it probes, a health_endpoint, or a command check (`in_container`)",
        target.name
    )))
}

/// Where a target keeps its deployment files (the systemd units read env files from
/// there). Without an explicit `work_dir` the executor resolves the default on the host,
/// which deployd cannot see: the units name the conventional place (see
/// `Connection::rendered_work_dir`); a host whose home or agent state dir is elsewhere
/// needs an explicit `work_dir` for the units to find their env files.
fn work_dir(target: &Target) -> Result<UnixPath, EngineError> {
    match target.connection.rendered_work_dir(&target.name) {
        Some(dir) => dir.map_err(|e| EngineError::InvalidRequest(e.to_string())),
        None => {
            UnixPath::parse("/srv/deploy").map_err(|e| EngineError::InvalidRequest(e.to_string()))
        }
    }
}
