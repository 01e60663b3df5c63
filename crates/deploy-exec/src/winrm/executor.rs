//! `WinrmExecutor`: the `Executor` over WinRM; PowerShell via -EncodedCommand, docker_host deploys through the shared sequence (deploy-docker) with each step a Docker CLI command.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::{
    CommandSpec, Connection, Digest, ExecutionModel, Name, Target, TargetType, WinrmConnection,
};
use tokio::time::Instant;

use crate::errors::ExecError;
use crate::executor::{
    CommandOutput, ComponentSpec, DeployFailure, DeployOutcome, DeployRequest, Deployed,
    ExecContext, Executor,
};
use crate::secrets::SecretsProvider;
use crate::winrm::client::{RunOutput, WinrmClient, WinrmClientConfig, split_credential};
use crate::winrm::docker_cli::CliApi;
use crate::winrm::powershell::{call_script, powershell_args};
use deploy_docker::{DockerHost, RECOVER_TIMEOUT, SequenceConfig};

/// Deploys to Windows docker_host targets over WinRM (Basic or NTLMv2 auth).
///
/// The credential the target's `credential_ref` names is `user:password`; `ca_ref`, when
/// set, names a PEM CA bundle trusted for the endpoint's certificate.
pub struct WinrmExecutor {
    config: WinrmClientConfig,
    secrets: Arc<dyn SecretsProvider>,
    /// How long a new container must keep running before the names are swapped.
    pub settle: Duration,
}

impl std::fmt::Debug for WinrmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WinrmExecutor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn winrm_of(target: &Target) -> Result<&WinrmConnection, ExecError> {
    match &target.connection {
        Connection::Winrm(w) => Ok(w),
        _ => Err(ExecError::wrong_connection(target, ExecutionModel::Winrm)),
    }
}

/// A client with one open shell: every step of a call runs in it (one Create and one
/// Delete per call, not per step).
pub(crate) struct Session {
    pub(crate) client: WinrmClient,
    pub(crate) shell: String,
    password: String,
}

impl Session {
    /// `text` without the password (short passwords are left alone, as [`crate::TaskLog`] does).
    pub(crate) fn redact(&self, text: &str) -> String {
        if self.password.len() >= 4 {
            text.replace(&self.password, crate::logs::REDACTED)
        } else {
            text.to_owned()
        }
    }
}

impl WinrmExecutor {
    /// An executor resolving credentials (and CA bundles) through `secrets`.
    pub fn new(config: WinrmClientConfig, secrets: Arc<dyn SecretsProvider>) -> Self {
        Self {
            config,
            secrets,
            settle: Duration::from_secs(2),
        }
    }

    async fn session(
        &self,
        target: &Target,
        ctx: &ExecContext,
        deadline: Instant,
    ) -> Result<Session, ExecError> {
        let conn = winrm_of(target)?;
        let secret = self.secrets.resolve(&conn.credential_ref).await?;
        let (user, password) = split_credential(&secret).ok_or_else(|| ExecError::Secret {
            reference: conn.credential_ref.to_string(),
            detail: "expected `user:password` for winrm basic auth".to_owned(),
        })?;
        let ca = match &conn.ca_ref {
            Some(r) => Some(self.secrets.resolve(r).await?),
            None => None,
        };
        let shown = password.expose().to_owned();
        let client = WinrmClient::new(
            conn,
            &user,
            password,
            ca.as_ref().map(|c| c.expose()),
            self.config,
        )?;
        let shell = client
            .open_shell("create shell", &ctx.cancel, deadline)
            .await?;
        Ok(Session {
            client,
            shell,
            password: shown,
        })
    }

    /// Runs `script` with `powershell -EncodedCommand`; output goes to the (redacting) log.
    pub(crate) async fn powershell(
        &self,
        s: &Session,
        script: &str,
        what: &str,
        ctx: &ExecContext,
        deadline: Instant,
    ) -> Result<RunOutput, ExecError> {
        let log = ctx.log.clone().with_secret(&s.password);
        s.client
            .run_in(
                &s.shell,
                "powershell",
                &powershell_args(script),
                what,
                &log,
                &ctx.cancel,
                deadline,
            )
            .await
            .map_err(|e| match e {
                ExecError::Timeout { host, what, .. } => ExecError::Timeout {
                    host,
                    what,
                    seconds: ctx.timeout.as_secs(),
                },
                other => other,
            })
    }

    fn sequence_config(&self) -> SequenceConfig {
        SequenceConfig {
            settle: self.settle,
            ..SequenceConfig::default()
        }
    }

    async fn deploy_docker(
        &self,
        s: &Session,
        request: &DeployRequest,
        component: &ComponentSpec,
        ctx: &ExecContext,
        deadline: Instant,
    ) -> DeployOutcome {
        let api = CliApi {
            executor: self,
            session: s,
            ctx,
            deadline,
        };
        let sequence = DockerHost {
            api: &api,
            config: self.sequence_config(),
        };
        let task = request.task.id.to_string();
        let spec = component.deploy_spec(&request.target.name, &task);
        let host = s.client.endpoint().to_owned();
        match sequence.deploy(&spec, &ctx.log).await {
            Ok(done) => Ok(Deployed::container(&component.name, done)),
            Err(f) => {
                let error = ExecError::docker(&host, component.name.as_str(), f.error);
                if ctx.cancel.is_cancelled() || Instant::now() >= deadline {
                    // Cut halfway: put the old container back under the name. The cut
                    // call's token and deadline are spent, so recovery runs on its own
                    // (bounded), in the same shell, best effort.
                    let recovery_ctx = ExecContext {
                        log: ctx.log.clone(),
                        cancel: tokio_util::sync::CancellationToken::new(),
                        timeout: RECOVER_TIMEOUT,
                    };
                    let recovery_api = CliApi {
                        executor: self,
                        session: s,
                        ctx: &recovery_ctx,
                        deadline: Instant::now() + RECOVER_TIMEOUT,
                    };
                    let recovery = DockerHost {
                        api: &recovery_api,
                        config: self.sequence_config(),
                    };
                    recovery.recover_cut(&spec, &ctx.log).await;
                }
                Err(DeployFailure::new(error, f.previous))
            }
        }
    }
}

/// A Windows exit code as u32 (negative NTSTATUS-style codes wrap like on Windows).
fn exit_status(code: i64) -> u32 {
    u32::try_from(code.rem_euclid(1 << 32)).unwrap_or(u32::MAX)
}

#[async_trait]
impl Executor for WinrmExecutor {
    async fn deploy(&self, request: &DeployRequest, ctx: &ExecContext) -> DeployOutcome {
        let deadline = Instant::now() + ctx.timeout;
        let component = match (request.target.target_type, &request.component) {
            (TargetType::DockerHost, Some(c)) => c,
            (TargetType::DockerHost, None) => {
                return Err(DeployFailure::from(ExecError::invalid(
                    format!("deploy request for target `{}`", request.target.name),
                    "no component",
                    "a component (container name and image) for a docker_host target",
                )));
            }
            (other, _) => {
                return Err(DeployFailure::from(ExecError::invalid(
                    format!("target `{}`.type", request.target.name),
                    other.as_str(),
                    "docker_host (windows_service deploys over winrm are not supported yet)",
                )));
            }
        };
        let s = match self.session(&request.target, ctx, deadline).await {
            Ok(s) => s,
            Err(e) => return Err(e.into()),
        };
        let result = self
            .deploy_docker(&s, request, component, ctx, deadline)
            .await;
        s.client.close_shell(&s.shell).await;
        result
    }

    async fn inspect(
        &self,
        target: &Target,
        component: &Name,
        ctx: &ExecContext,
    ) -> Result<Option<Digest>, ExecError> {
        let deadline = Instant::now() + ctx.timeout;
        let s = self.session(target, ctx, deadline).await?;
        let api = CliApi {
            executor: self,
            session: &s,
            ctx,
            deadline,
        };
        let sequence = DockerHost {
            api: &api,
            config: self.sequence_config(),
        };
        let result = sequence
            .running(component, &target.name)
            .await
            .map(|r| r.map(|r| r.digest))
            .map_err(|e| ExecError::docker(s.client.endpoint(), component.as_str(), e));
        s.client.close_shell(&s.shell).await;
        result
    }

    async fn instance(
        &self,
        target: &Target,
        slot: &Name,
        ctx: &ExecContext,
    ) -> Result<Vec<deploy_core::PublishedPort>, ExecError> {
        let deadline = Instant::now() + ctx.timeout;
        let s = self.session(target, ctx, deadline).await?;
        let api = CliApi {
            executor: self,
            session: &s,
            ctx,
            deadline,
        };
        let sequence = DockerHost {
            api: &api,
            config: self.sequence_config(),
        };
        let result = sequence
            .inspect_owned(slot.as_str(), &target.name)
            .await
            .map(|c| {
                c.filter(|c| c.running)
                    .map(|c| c.published)
                    .unwrap_or_default()
            })
            .map_err(|e| ExecError::docker(s.client.endpoint(), slot.as_str(), e));
        s.client.close_shell(&s.shell).await;
        result
    }

    async fn run_command(
        &self,
        target: &Target,
        command: &CommandSpec,
        ctx: &ExecContext,
    ) -> Result<CommandOutput, ExecError> {
        let deadline = Instant::now() + ctx.timeout;
        let s = self.session(target, ctx, deadline).await?;
        let result = self
            .powershell(
                &s,
                &call_script(command.argv()),
                "run command",
                ctx,
                deadline,
            )
            .await;
        s.client.close_shell(&s.shell).await;
        let out = result?;
        Ok(CommandOutput {
            exit_status: exit_status(out.exit_code),
            stdout: ctx
                .log
                .redact(&s.redact(&String::from_utf8_lossy(&out.stdout))),
        })
    }
}
