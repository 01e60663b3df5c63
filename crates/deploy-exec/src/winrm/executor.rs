//! `WinrmExecutor`: the `Executor` over WinRM; PowerShell via -EncodedCommand, docker_host deploys with the Docker CLI on Windows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deploy_core::{CommandSpec, Connection, Digest, Name, Target, TargetType, WinrmConnection};
use tokio::time::Instant;

use crate::errors::ExecError;
use crate::executor::{
    CommandOutput, ComponentSpec, DeployRequest, ExecContext, ExecutionResult, Executor, labels,
};
use crate::secrets::SecretsProvider;
use crate::ssh::docker_host::{RunSpec, run_argv};
use crate::winrm::client::{RunOutput, WinrmClient, WinrmClientConfig, split_credential};
use crate::winrm::powershell::{call_script, powershell_args, ps_quote};

/// Exit status of the swap script when the new container did not stay running.
pub const EXIT_NOT_RUNNING: i64 = 3;
/// Exit status of the swap script when the old container could not be moved aside.
pub const EXIT_SWAP_FAILED: i64 = 4;

/// Deploys to Windows docker_host targets over WinRM (Basic or NTLMv2 auth).
///
/// The credential the target's `credential_ref` names is `user:password`; `ca_ref`, when
/// set, names a PEM CA bundle trusted for the endpoint's certificate.
pub struct WinrmExecutor {
    config: WinrmClientConfig,
    secrets: Arc<dyn SecretsProvider>,
    /// How long a new container must keep running before the old one is stopped.
    pub settle: Duration,
    /// `docker stop --time` for the old container.
    pub stop_timeout: Duration,
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
        other => Err(ExecError::invalid(
            format!("target `{}`.connection.model", target.name),
            other.model().as_str(),
            "winrm for the winrm executor",
        )),
    }
}

/// A client with one open shell: every step of a call runs in it (one Create and one
/// Delete per call, not per step).
struct Session {
    client: WinrmClient,
    shell: String,
    password: String,
}

impl Session {
    /// `text` without the password (short passwords are left alone, as [`crate::TaskLog`] does).
    fn redact(&self, text: &str) -> String {
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
            stop_timeout: Duration::from_secs(10),
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
    async fn powershell(
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

    fn failed(s: &Session, what: &str, out: &RunOutput) -> ExecError {
        ExecError::CommandFailed {
            host: s.client.endpoint().to_owned(),
            what: what.to_owned(),
            status: exit_status(out.exit_code),
            stderr_tail: s
                .redact(&String::from_utf8_lossy(&out.stderr_tail))
                .trim()
                .to_owned(),
        }
    }

    async fn inspect_with(
        &self,
        s: &Session,
        component: &Name,
        ctx: &ExecContext,
        deadline: Instant,
    ) -> Result<Option<Digest>, ExecError> {
        let what = "docker inspect";
        let out = self
            .powershell(s, &inspect_script(component), what, ctx, deadline)
            .await?;
        if out.exit_code != 0 {
            return Err(Self::failed(s, what, &out));
        }
        Ok(parse_inspect(&String::from_utf8_lossy(&out.stdout)))
    }

    async fn deploy_docker(
        &self,
        s: &Session,
        request: &DeployRequest,
        component: &ComponentSpec,
        ctx: &ExecContext,
        deadline: Instant,
    ) -> ExecutionResult {
        let previous = match self.inspect_with(s, &component.name, ctx, deadline).await {
            Ok(d) => d,
            Err(e) => return ExecutionResult::failed(e, None),
        };
        let digest = component.image.digest().clone();
        let mut running = BTreeMap::new();
        if previous.as_ref() == Some(&digest) {
            ctx.log.line(&format!(
                "{} already runs {digest}: nothing to do",
                component.name
            ));
            running.insert(component.name.to_string(), digest.clone());
            return ExecutionResult {
                success: true,
                deployed_digest: Some(digest),
                previous_digest: previous,
                changed: false,
                running,
                error: None,
            };
        }
        if let Some(bad) = component.args.iter().find(|a| a.contains('"')) {
            return ExecutionResult::failed(
                ExecError::invalid(
                    format!("component `{}` args", component.name),
                    bad,
                    "no double quote (Windows PowerShell 5.1 mangles them in native arguments)",
                ),
                previous,
            );
        }
        ctx.log.line(&format!(
            "pulling {} on {}",
            component.image,
            s.client.endpoint()
        ));
        let pull = pull_script(&component.image.to_string());
        match self
            .powershell(s, &pull, "docker pull", ctx, deadline)
            .await
        {
            Ok(out) if out.exit_code == 0 => {}
            Ok(out) => {
                return ExecutionResult::failed(Self::failed(s, "docker pull", &out), previous);
            }
            Err(e) => return ExecutionResult::failed(e, previous),
        }
        ctx.log.line(&format!(
            "starting {}-next, then swapping it in for {}",
            component.name, component.name
        ));
        let task = request.task.id.to_string();
        let swap = swap_script(&RunSpec {
            name: &component.name,
            image: &component.image,
            target: &request.target.name,
            task: &task,
            publish: &component.publish,
            args: &component.args,
            settle: self.settle,
            stop_timeout: self.stop_timeout,
        });
        let what = "docker start-first swap";
        match self.powershell(s, &swap, what, ctx, deadline).await {
            Ok(out) if out.exit_code == 0 => {}
            Ok(out) if out.exit_code == EXIT_NOT_RUNNING => {
                let err = ExecError::NotRunning {
                    host: s.client.endpoint().to_owned(),
                    container: component.name.to_string(),
                    detail: String::from_utf8_lossy(&out.stderr_tail).trim().to_owned(),
                };
                return ExecutionResult::failed(err, previous);
            }
            Ok(out) => return ExecutionResult::failed(Self::failed(s, what, &out), previous),
            Err(e) => return ExecutionResult::failed(e, previous),
        }
        match self.inspect_with(s, &component.name, ctx, deadline).await {
            Ok(Some(now)) if now == digest => {
                ctx.log.line(&format!(
                    "{} runs {digest}; previous kept as {}-previous",
                    component.name, component.name
                ));
                running.insert(component.name.to_string(), now);
                ExecutionResult {
                    success: true,
                    deployed_digest: Some(digest),
                    previous_digest: previous,
                    changed: true,
                    running,
                    error: None,
                }
            }
            Ok(other) => ExecutionResult::failed(
                ExecError::NotRunning {
                    host: s.client.endpoint().to_owned(),
                    container: component.name.to_string(),
                    detail: format!(
                        "after the swap the container runs {}, expected {digest}",
                        other.map_or_else(|| "nothing".to_owned(), |d| d.to_string())
                    ),
                },
                previous,
            ),
            Err(e) => ExecutionResult::failed(e, previous),
        }
    }
}

/// A Windows exit code as u32 (negative NTSTATUS-style codes wrap like on Windows).
fn exit_status(code: i64) -> u32 {
    u32::try_from(code.rem_euclid(1 << 32)).unwrap_or(u32::MAX)
}

/// Prints the digest label of container `name` when it runs; nothing otherwise.
pub fn inspect_script(name: &Name) -> String {
    format!(
        "$ErrorActionPreference = 'Continue'\n\
         $raw = docker inspect --type container {name} 2>$null\n\
         if ($LASTEXITCODE -ne 0) {{ exit 0 }}\n\
         $c = ($raw | Out-String | ConvertFrom-Json)[0]\n\
         if ($c.State.Running) {{ Write-Output $c.Config.Labels.{label} }}\n\
         exit 0\n",
        name = ps_quote(name.as_str()),
        label = ps_quote(labels::DIGEST),
    )
}

/// Parses the output of [`inspect_script`].
pub fn parse_inspect(stdout: &str) -> Option<Digest> {
    Digest::parse(stdout.trim()).ok()
}

/// Pulls `image` unless the engine already has it.
pub fn pull_script(image: &str) -> String {
    let image = ps_quote(image);
    format!(
        "$ErrorActionPreference = 'Continue'\n\
         docker image inspect {image} *> $null\n\
         if ($LASTEXITCODE -eq 0) {{ exit 0 }}\n\
         docker pull {image}\n\
         exit $LASTEXITCODE\n"
    )
}

/// The start-first swap of the SSH docker_host sequence, in PowerShell: start `<name>-next`,
/// check it keeps running for `settle`, stop the old one and keep it as `<name>-previous`,
/// rename the new one in. Exits [`EXIT_NOT_RUNNING`] leaving the old one serving.
pub fn swap_script(spec: &RunSpec<'_>) -> String {
    let name = spec.name.as_str();
    let run = run_argv(spec)
        .iter()
        .map(|a| ps_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "$ErrorActionPreference = 'Continue'\n\
         $name = {q_name}\n\
         $next = {q_next}\n\
         $prev = {q_prev}\n\
         function Test-Next {{\n\
         \x20 $s = docker inspect --type container --format '{{{{.State.Running}}}}/{{{{.State.Restarting}}}}/{{{{.RestartCount}}}}' $next 2>$null\n\
         \x20 return ($LASTEXITCODE -eq 0 -and \"$s\".Trim() -eq 'true/false/0')\n\
         }}\n\
         docker rm -f $next *> $null\n\
         & {run} | Out-Null\n\
         if ($LASTEXITCODE -ne 0) {{ exit 1 }}\n\
         $ok = Test-Next\n\
         if ($ok) {{ Start-Sleep -Milliseconds {settle_ms}; $ok = Test-Next }}\n\
         if (-not $ok) {{\n\
         \x20 [Console]::Error.WriteLine('new container exited:'); docker logs --tail 20 $next 2>&1 | ForEach-Object {{ [Console]::Error.WriteLine(\"$_\") }}\n\
         \x20 docker rm -f $next *> $null; exit {not_running}\n\
         }}\n\
         docker inspect --type container $name *> $null\n\
         if ($LASTEXITCODE -eq 0) {{\n\
         \x20 docker rm -f $prev *> $null\n\
         \x20 docker stop --time {stop} $name | Out-Null\n\
         \x20 if ($LASTEXITCODE -eq 0) {{ docker rename $name $prev }}\n\
         \x20 if ($LASTEXITCODE -ne 0) {{ docker start $name *> $null; docker rm -f $next *> $null; exit {swap_failed} }}\n\
         }}\n\
         docker rename $next $name\n\
         if ($LASTEXITCODE -eq 0) {{ exit 0 }}\n\
         docker rename $prev $name *> $null\n\
         if ($LASTEXITCODE -eq 0) {{ docker start $name *> $null }}\n\
         docker rm -f $next *> $null; exit {swap_failed}\n",
        q_name = ps_quote(name),
        q_next = ps_quote(&format!("{name}-next")),
        q_prev = ps_quote(&format!("{name}-previous")),
        settle_ms = spec.settle.as_millis(),
        not_running = EXIT_NOT_RUNNING,
        stop = spec.stop_timeout.as_secs(),
        swap_failed = EXIT_SWAP_FAILED,
    )
}

#[async_trait]
impl Executor for WinrmExecutor {
    async fn deploy(&self, request: &DeployRequest, ctx: &ExecContext) -> ExecutionResult {
        let deadline = Instant::now() + ctx.timeout;
        let component = match (request.target.target_type, &request.component) {
            (TargetType::DockerHost, Some(c)) => c,
            (TargetType::DockerHost, None) => {
                return ExecutionResult::failed(
                    ExecError::invalid(
                        format!("deploy request for target `{}`", request.target.name),
                        "no component",
                        "a component (container name and image) for a docker_host target",
                    ),
                    None,
                );
            }
            (other, _) => {
                return ExecutionResult::failed(
                    ExecError::invalid(
                        format!("target `{}`.type", request.target.name),
                        other.as_str(),
                        "docker_host (windows_service deploys over winrm are not supported yet)",
                    ),
                    None,
                );
            }
        };
        let s = match self.session(&request.target, ctx, deadline).await {
            Ok(s) => s,
            Err(e) => return ExecutionResult::failed(e, None),
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
        let result = self.inspect_with(&s, component, ctx, deadline).await;
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
