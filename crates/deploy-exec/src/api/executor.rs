//! `ApiExecutor`: the one executor for `ExecutionModel::Api`; resolves credentials, bounds each call, dispatches by platform.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::{ApiConnection, CommandSpec, Connection, Digest, ExecutionModel, Name, Target};

use super::aws::{AwsChains, AwsEnvironment};
use super::http::Http;
use super::kube_auth::{self, InClusterConfig, KubeAccess};
use super::{ecs, k8s, nomad};
use crate::errors::ExecError;
use crate::executor::{
    CommandOutput, DeployFailure, DeployOutcome, DeployRequest, Deployed, ExecContext, Executor,
};
use crate::logs::TaskLog;
use crate::secrets::{Secret, SecretsProvider};

/// Settings shared by the three platforms.
#[derive(Debug, Clone)]
pub struct ApiExecutorConfig {
    /// Pause between two reads of the rollout's progress.
    pub poll_interval: Duration,
    /// Upper bound of one HTTP request (connect included).
    pub request_timeout: Duration,
}

impl Default for ApiExecutorConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Deploys to ECS services, Nomad jobs and Kubernetes Deployments by changing one
/// container's image to `repository@digest` and waiting for the platform's rollout.
pub struct ApiExecutor {
    secrets: Arc<dyn SecretsProvider>,
    config: ApiExecutorConfig,
    /// The AWS default chain for ECS targets without a `credential_ref`.
    aws: Arc<AwsChains>,
    /// Where `auth.kind = in_cluster` Kubernetes targets find the service account.
    in_cluster: InClusterConfig,
}

impl std::fmt::Debug for ApiExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiExecutor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What one platform call has to work with.
pub(crate) struct Call {
    pub(crate) http: Http,
    pub(crate) secret: Option<Secret>,
    pub(crate) poll: Duration,
    /// The last rollout state seen, for the timeout error.
    pub(crate) progress: Arc<Mutex<String>>,
    /// The image found before the change, for a failed result's `previous_digest`.
    pub(crate) previous: Arc<Mutex<Option<String>>>,
    pub(crate) reference: Option<String>,
    /// A Kubernetes call's server and token source.
    pub(crate) kube: Option<KubeAccess>,
}

impl Call {
    /// The log of this call (redacting its credential).
    pub(crate) fn log(&self) -> &TaskLog {
        &self.http.log
    }

    /// Records the image the container had before this deploy.
    pub(crate) fn saw_previous(&self, image: &str) {
        if let Ok(mut p) = self.previous.lock() {
            *p = Some(image.to_owned());
        }
    }

    /// Records the rollout state seen and sleeps one poll interval (the caller's
    /// deadline ends the wait; its error quotes the state recorded here).
    pub(crate) async fn pause(&self, state: &str) {
        if let Ok(mut p) = self.progress.lock() {
            state.clone_into(&mut p);
        }
        tokio::time::sleep(self.poll).await;
    }
}

/// The outcome of one platform deploy.
pub(crate) struct Rolled {
    /// The image the container had before.
    pub(crate) previous: String,
    /// False when the container already had the image.
    pub(crate) changed: bool,
}

impl ApiExecutor {
    /// An executor taking credentials from `secrets`.
    pub fn new(secrets: Arc<dyn SecretsProvider>, config: ApiExecutorConfig) -> Self {
        let aws = Arc::new(AwsChains::new(
            AwsEnvironment::from_process(),
            config.request_timeout,
        ));
        Self {
            secrets,
            config,
            aws,
            in_cluster: InClusterConfig::default(),
        }
    }

    /// The same executor finding the in-cluster service account at `config`'s paths
    /// instead of the kubelet's (tests, embedders).
    #[must_use]
    pub fn with_in_cluster(mut self, config: InClusterConfig) -> Self {
        self.in_cluster = config;
        self
    }

    /// The same executor with the AWS default chain reading `env` instead of this
    /// process's environment (tests, embedders).
    #[must_use]
    pub fn with_aws_environment(mut self, env: AwsEnvironment) -> Self {
        self.aws = Arc::new(AwsChains::new(env, self.config.request_timeout));
        self
    }

    fn api(target: &Target) -> Result<&ApiConnection, ExecError> {
        match &target.connection {
            Connection::Api(api) => Ok(api),
            _ => Err(ExecError::wrong_connection(target, ExecutionModel::Api)),
        }
    }

    async fn call(
        &self,
        api: &ApiConnection,
        ctx: &ExecContext,
        progress: Arc<Mutex<String>>,
        previous: Arc<Mutex<Option<String>>>,
    ) -> Result<Call, ExecError> {
        let (platform, credential, ca, client) = match api {
            ApiConnection::Ecs { credential_ref, .. } => {
                ("ecs", credential_ref.as_ref(), None, None)
            }
            ApiConnection::Nomad {
                credential_ref,
                ca_ref,
                client_cert_ref,
                client_key_ref,
                ..
            } => (
                "nomad",
                credential_ref.as_ref(),
                ca_ref.as_ref(),
                client_cert_ref.as_ref().zip(client_key_ref.as_ref()),
            ),
            // Its server, CA, certificate and token come from `kube_auth::resolve`, below.
            ApiConnection::Kubernetes { .. } => ("kubernetes", None, None, None),
        };
        let secret = match credential {
            Some(r) => Some(self.secrets.resolve(r).await?),
            None => None,
        };
        let mut ca = match ca {
            Some(r) => Some(self.secrets.resolve(r).await?),
            None => None,
        };
        let mut identity = match client {
            Some((cert, key)) => {
                let cert = self.secrets.resolve(cert).await?;
                let key = self.secrets.resolve(key).await?;
                Some(Secret::new(format!(
                    "{}\n{}",
                    cert.expose().trim_end(),
                    key.expose()
                )))
            }
            None => None,
        };
        let kube = match api {
            ApiConnection::Kubernetes { .. } => {
                let mut access = kube_auth::resolve(api, &*self.secrets, &self.in_cluster).await?;
                ca = access.ca_pem.take().map(Secret::new);
                identity = access.identity_pem.take();
                Some(access)
            }
            _ => None,
        };
        let mut log = ctx.log.clone();
        if let Some(id) = &identity {
            log = log.with_secret(id.expose());
        }
        if let Some(kube_auth::KubeToken::Static(t)) = kube.as_ref().map(|k| &k.token) {
            log = log.with_secret(t.expose());
        }
        if let Some(s) = &secret {
            log = log.with_secret(s.expose());
            // A `KEY:SECRET` pair: each half is a secret on its own too.
            for part in s.expose().trim().split(':') {
                log = log.with_secret(part);
            }
        }
        let http = Http::new(
            platform,
            ca.as_ref().map(Secret::expose),
            identity.as_ref().map(Secret::expose),
            self.config.request_timeout,
            log,
        )?;
        Ok(Call {
            http,
            secret,
            poll: self.config.poll_interval,
            progress,
            previous,
            reference: credential.map(|r| r.as_str().to_owned()),
            kube,
        })
    }

    async fn deploy_inner(
        &self,
        request: &DeployRequest,
        ctx: &ExecContext,
        progress: Arc<Mutex<String>>,
        previous: Arc<Mutex<Option<String>>>,
    ) -> Result<(String, Rolled), ExecError> {
        let api = Self::api(&request.target)?;
        let spec = request.component.as_ref().ok_or_else(|| {
            ExecError::invalid(
                format!("deploy request for target `{}`", request.target.name),
                "no component",
                "the component whose image the api target runs",
            )
        })?;
        let image = format!(
            "{}@{}",
            spec.container.image.repository(),
            request.task.digest
        );
        let call = self.call(api, ctx, progress, previous).await?;
        let rolled = match api {
            ApiConnection::Ecs { .. } => ecs::deploy(&call, &self.aws, api, &image).await?,
            ApiConnection::Nomad { .. } => nomad::deploy(&call, api, &image).await?,
            ApiConnection::Kubernetes { .. } => k8s::deploy(&call, api, &image).await?,
        };
        Ok((image, rolled))
    }
}

/// `fut` bounded by the context's cancel token and timeout; a timeout quotes the last `progress`.
async fn bounded<T>(
    ctx: &ExecContext,
    resource: &str,
    what: &str,
    progress: &Mutex<String>,
    fut: impl Future<Output = Result<T, ExecError>>,
) -> Result<T, ExecError> {
    let timed_out = || {
        let last = progress.lock().map(|p| p.clone()).unwrap_or_default();
        let what = if last.is_empty() {
            what.to_owned()
        } else {
            format!("{what} (last seen: {last})")
        };
        Err(ExecError::Timeout {
            host: resource.to_owned(),
            what,
            seconds: ctx.timeout.as_secs(),
        })
    };
    tokio::select! {
        () = ctx.cancel.cancelled() => Err(ExecError::Cancelled {
            host: resource.to_owned(),
            what: what.to_owned(),
        }),
        r = tokio::time::timeout(ctx.timeout, fut) => r.unwrap_or_else(|_| timed_out()),
    }
}

/// The digest of a `repository@sha256:…` image, if it is pinned by digest.
pub(crate) fn digest_of(image: &str) -> Option<Digest> {
    image
        .rsplit_once('@')
        .and_then(|(_, d)| Digest::parse(d).ok())
}

/// The image of the container named `name` in a platform's container list; on error,
/// what was expected (the names available).
pub(crate) fn named_image(containers: &[serde_json::Value], name: &str) -> Result<String, String> {
    containers
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["image"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            let names: Vec<&str> = containers
                .iter()
                .filter_map(|c| c["name"].as_str())
                .collect();
            format!(
                "a container named `{name}` with an image; available: {}",
                names.join(", ")
            )
        })
}

/// A human name of the target's platform resource, for errors.
fn resource_name(target: &Target) -> String {
    match &target.connection {
        Connection::Api(ApiConnection::Ecs {
            cluster, service, ..
        }) => format!("ecs service `{cluster}/{service}`"),
        Connection::Api(ApiConnection::Nomad { job, .. }) => format!("nomad job `{job}`"),
        Connection::Api(ApiConnection::Kubernetes {
            namespace,
            deployment,
            ..
        }) => format!("kubernetes deployment `{namespace}/{deployment}`"),
        _ => format!("target `{}`", target.name),
    }
}

/// The container name the target's connection names.
fn container_name(api: &ApiConnection) -> String {
    match api {
        ApiConnection::Ecs { container, .. } | ApiConnection::Kubernetes { container, .. } => {
            container.to_string()
        }
        ApiConnection::Nomad { task, .. } => task.to_string(),
    }
}

#[async_trait]
impl Executor for ApiExecutor {
    async fn deploy(&self, request: &DeployRequest, ctx: &ExecContext) -> DeployOutcome {
        let resource = resource_name(&request.target);
        let progress = Arc::new(Mutex::new(String::new()));
        let previous = Arc::new(Mutex::new(None::<String>));
        let outcome = bounded(
            ctx,
            &resource,
            "the rollout",
            &progress,
            self.deploy_inner(request, ctx, progress.clone(), previous.clone()),
        )
        .await;
        match outcome {
            Ok((image, rolled)) => {
                let container = Self::api(&request.target)
                    .map(container_name)
                    .unwrap_or_default();
                let mut running = BTreeMap::new();
                running.insert(container, request.task.digest.clone());
                ctx.log.line(&format!(
                    "{resource}: `{image}` rolled out{}",
                    if rolled.changed {
                        ""
                    } else {
                        " (already running, nothing changed)"
                    }
                ));
                Ok(Deployed {
                    deployed_digest: request.task.digest.clone(),
                    previous_digest: digest_of(&rolled.previous),
                    changed: rolled.changed,
                    running,
                    published: Vec::new(),
                    agent: None,
                })
            }
            Err(e) => {
                ctx.log.line(&format!("{resource}: failed to {e}"));
                let before = previous
                    .lock()
                    .ok()
                    .and_then(|p| p.as_deref().and_then(digest_of));
                Err(DeployFailure::new(e, before))
            }
        }
    }

    async fn inspect(
        &self,
        target: &Target,
        _component: &Name,
        ctx: &ExecContext,
    ) -> Result<Option<Digest>, ExecError> {
        let resource = resource_name(target);
        bounded(ctx, &resource, "inspect", &Mutex::default(), async {
            let api = Self::api(target)?;
            let call = self.call(api, ctx, Arc::default(), Arc::default()).await?;
            let image = match api {
                ApiConnection::Ecs { .. } => ecs::current_image(&call, &self.aws, api).await?,
                ApiConnection::Nomad { .. } => nomad::current_image(&call, api).await?,
                ApiConnection::Kubernetes { .. } => k8s::current_image(&call, api).await?,
            };
            Ok(digest_of(&image))
        })
        .await
    }

    async fn run_command(
        &self,
        target: &Target,
        command: &CommandSpec,
        _ctx: &ExecContext,
    ) -> Result<CommandOutput, ExecError> {
        Err(ExecError::NotSupported {
            what: format!(
                "run command `{}`",
                command
                    .argv()
                    .first()
                    .map(String::as_str)
                    .unwrap_or_default()
            ),
            target_type: target.target_type.as_str().to_owned(),
            hint: "api targets run no commands; use an http or tcp health check".into(),
        })
    }
}
