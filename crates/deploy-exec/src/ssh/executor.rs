//! `SshExecutor`: the `Executor` over SSH, with one reused connection per target; docker_host through the shared sequence (deploy-docker) on the Engine API forwarded over the connection, compose_host through the Compose CLI.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use deploy_core::{
    ArtifactKind, CommandSpec, Connection, Digest, ExecutionModel, InstanceProbe, Name,
    ProbeOutcome, PublishedPort, SshConnection, Target, TargetType,
};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::errors::ExecError;
use crate::executor::{
    CommandOutput, ComponentSpec, DeployFailure, DeployOutcome, DeployRequest, Deployed,
    ExecContext, Executor, Published, TrafficSwitch,
};
use crate::quote::{sh_join, sh_quote};
use crate::secrets::SecretsProvider;
use crate::ssh::compose_host::{self, ComposeFiles};
use crate::ssh::config::SshExecutorConfig;
use crate::ssh::docker_api::{SshDockerApi, docker_over_ssh};
use crate::ssh::files::FILE_MODE;
use crate::ssh::host_key::HostKeyCheck;
use crate::ssh::session::{RemoteOutput, SshAuth, SshSession, rename_into_place};
use deploy_docker::{BollardApi, DockerHost, SequenceConfig};

type Slot = Arc<Mutex<Option<Connected>>>;

#[derive(Clone)]
struct Connected {
    session: Arc<SshSession>,
    secrets: Vec<String>,
    /// The Docker Engine API over this connection, negotiated on first use.
    docker: Arc<tokio::sync::OnceCell<bollard::Docker>>,
}

/// Deploys to docker_host and compose_host targets over SSH.
pub struct SshExecutor {
    config: SshExecutorConfig,
    secrets: Arc<dyn SecretsProvider>,
    sessions: std::sync::Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for SshExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshExecutor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn ssh_of(target: &Target) -> Result<&SshConnection, ExecError> {
    match &target.connection {
        Connection::Ssh(ssh) => Ok(ssh),
        _ => Err(ExecError::wrong_connection(target, ExecutionModel::Ssh)),
    }
}

impl SshExecutor {
    /// An executor resolving credentials through `secrets`.
    pub fn new(config: SshExecutorConfig, secrets: Arc<dyn SecretsProvider>) -> Self {
        Self {
            config,
            secrets,
            sessions: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Closes every pooled connection (end of a job).
    pub async fn close_all(&self) {
        let slots: Vec<Slot> = match self.sessions.lock() {
            Ok(mut map) => map.drain().map(|(_, v)| v).collect(),
            Err(_) => return,
        };
        for slot in slots {
            if let Some(c) = slot.lock().await.take() {
                c.session.close().await;
            }
        }
    }

    /// Number of live pooled connections.
    pub fn pooled(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// The pooled connection to `ssh`, connecting (once, even under concurrency) when needed.
    async fn connect(
        &self,
        ssh: &SshConnection,
        deadline: Instant,
    ) -> Result<Connected, ExecError> {
        let key = format!(
            "{}|{}|{}|{}|{:?}",
            ssh.host, ssh.port, ssh.user, ssh.credential_ref, ssh.host_key
        );
        let slot = {
            let mut map = self
                .sessions
                .lock()
                .map_err(|_| ExecError::ConnectionLost {
                    host: ssh.host.to_string(),
                    port: ssh.port,
                    detail: "connection pool lock poisoned".to_owned(),
                })?;
            map.entry(key).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref()
            && c.session.is_alive()
        {
            return Ok(c.clone());
        }
        *guard = None;
        let secret = self.secrets.resolve(&ssh.credential_ref).await?;
        let passphrase = self.secrets.passphrase(&ssh.credential_ref).await?;
        let mut secrets = vec![secret.expose().to_owned()];
        secrets.extend(passphrase.as_ref().map(|p| p.expose().to_owned()));
        let auth = SshAuth::from_secret(secret, passphrase);
        let check = HostKeyCheck::new(
            ssh.host.as_str(),
            ssh.port,
            &ssh.host_key,
            &self.config.known_hosts,
        );
        let session =
            SshSession::connect(check, ssh.user.as_str(), &auth, &self.config, deadline).await?;
        let connected = Connected {
            session: Arc::new(session),
            secrets,
            docker: Arc::default(),
        };
        *guard = Some(connected.clone());
        Ok(connected)
    }

    /// A context whose log also redacts this connection's secrets.
    fn redacting(ctx: &ExecContext, c: &Connected) -> ExecContext {
        let mut ctx = ctx.clone();
        for s in &c.secrets {
            ctx.log = ctx.log.with_secret(s);
        }
        ctx
    }

    async fn run(
        session: &SshSession,
        script: &str,
        what: &str,
        ctx: &ExecContext,
        deadline: Instant,
    ) -> Result<RemoteOutput, ExecError> {
        session.exec(script, what, ctx, deadline).await
    }

    fn failed(session: &SshSession, what: &str, out: &RemoteOutput) -> ExecError {
        ExecError::CommandFailed {
            host: session.host().to_owned(),
            what: what.to_owned(),
            status: out.exit_status,
            stderr_tail: out.stderr_tail.clone(),
        }
    }

    /// The docker_host steps over `c`'s connection (the Engine API forwarded to the
    /// target's Docker socket), the API version negotiated once per connection.
    async fn docker_api(&self, c: &Connected, deadline: Instant) -> Result<BollardApi, ExecError> {
        let negotiate = c
            .docker
            .get_or_try_init(|| docker_over_ssh(c.session.clone()));
        let docker = match tokio::time::timeout_at(deadline, negotiate).await {
            Ok(d) => d?.clone(),
            Err(_) => {
                return Err(ExecError::Timeout {
                    host: c.session.host().to_owned(),
                    what: "reach the Docker Engine over ssh".to_owned(),
                    seconds: self.config.connect_timeout.as_secs(),
                });
            }
        };
        Ok(BollardApi::new(docker))
    }

    fn sequence_config(&self) -> SequenceConfig {
        SequenceConfig {
            settle: self.config.settle,
            settle_known: self.config.settle_known,
            ..SequenceConfig::default()
        }
    }

    /// Runs `step` within `deadline` and `ctx`'s cancellation; `what` names it in errors.
    async fn bounded<T>(
        host: &str,
        what: &str,
        ctx: &ExecContext,
        deadline: Instant,
        step: impl std::future::Future<Output = Result<T, ExecError>>,
    ) -> Result<T, ExecError> {
        tokio::select! {
            r = step => r,
            () = ctx.cancel.cancelled() => Err(ExecError::Cancelled { host: host.to_owned(), what: what.to_owned() }),
            () = tokio::time::sleep_until(deadline) => Err(ExecError::Timeout { host: host.to_owned(), what: what.to_owned(), seconds: ctx.timeout.as_secs() }),
        }
    }

    async fn deploy_docker(
        &self,
        request: &DeployRequest,
        component: &ComponentSpec,
        connected: &Connected,
        ctx: &ExecContext,
        deadline: Instant,
    ) -> DeployOutcome {
        let host = connected.session.host().to_owned();
        let api = match self.docker_api(connected, deadline).await {
            Ok(api) => SshDockerApi {
                api,
                session: &connected.session,
                ctx,
                deadline,
            },
            Err(e) => return Err(e.into()),
        };
        let sequence = DockerHost {
            api: &api,
            config: self.sequence_config(),
        };
        let task = request.task.id.to_string();
        let spec = component.deploy_spec(&request.target.name, &task);
        let deploy = async {
            sequence.deploy(&spec, &ctx.log).await.map_err(|f| {
                (
                    ExecError::docker(&host, component.name.as_str(), f.error),
                    f.previous,
                )
            })
        };
        let outcome = tokio::select! {
            r = deploy => r,
            () = ctx.cancel.cancelled() => Err((ExecError::Cancelled { host: host.clone(), what: "docker_host deploy".to_owned() }, None)),
            () = tokio::time::sleep_until(deadline) => Err((ExecError::Timeout { host: host.clone(), what: "docker_host deploy".to_owned(), seconds: ctx.timeout.as_secs() }, None)),
        };
        match outcome {
            Ok(done) => Ok(Deployed::container(&component.name, done)),
            Err((error, previous)) => {
                if matches!(
                    error,
                    ExecError::Cancelled { .. } | ExecError::Timeout { .. }
                ) {
                    // Cut halfway: no `-next` left, the old container back under the name.
                    sequence.recover_cut(&spec, &ctx.log).await;
                }
                Err(DeployFailure::new(error, previous))
            }
        }
    }

    async fn compose_status(
        session: &SshSession,
        dir: &str,
        project: &Name,
        ctx: &ExecContext,
        deadline: Instant,
    ) -> Result<compose_host::ComposeStatus, ExecError> {
        let what = "compose status";
        let script = compose_host::status_script(dir, project);
        let out = Self::run(session, &script, what, ctx, deadline).await?;
        if out.exit_status != 0 {
            return Err(Self::failed(session, what, &out));
        }
        Ok(compose_host::parse_status(&out.stdout))
    }

    async fn deploy_compose(
        &self,
        request: &DeployRequest,
        ssh: &SshConnection,
        session: &SshSession,
        ctx: &ExecContext,
        deadline: Instant,
    ) -> DeployOutcome {
        let Some(lock) = request
            .artifacts
            .iter()
            .find(|a| a.kind == ArtifactKind::ComposeLock)
        else {
            return Err(DeployFailure::from(ExecError::invalid(
                "artifacts",
                format!("{} files", request.artifacts.len()),
                "a compose-lock artifact for a compose_host deploy",
            )));
        };
        let project = &request.project;
        // Created 0700 (or checked) before anything is written; from here on its canonical path.
        let checked = match session
            .prepare_work_dir(ssh.work_dir.as_ref(), &request.target.name, ctx, deadline)
            .await
        {
            Ok(c) => c,
            Err(e) => return Err(e.into()),
        };
        let dir = checked.path.as_str();
        let before = match Self::compose_status(session, dir, project, ctx, deadline).await {
            Ok(s) => s,
            Err(e) => return Err(e.into()),
        };
        let previous = before.healthy_lock();
        let fail = |e| DeployFailure::new(e, previous.clone());
        if previous.as_ref() == Some(&lock.sha256) {
            ctx.log.line(&format!(
                "project {project} already runs lock {}: nothing to do",
                lock.sha256
            ));
            return Ok(Deployed {
                deployed_digest: lock.sha256.clone(),
                previous_digest: previous.clone(),
                changed: false,
                running: before.running,
                published: before.published,
                agent: None,
            });
        }
        let prepare = compose_host::detect_script();
        let tool = match Self::run(session, &prepare, "detect compose", ctx, deadline).await {
            Ok(out) if out.exit_status == 0 => compose_host::parse_tool(&out.stdout),
            Ok(out) => return Err(fail(Self::failed(session, "detect compose", &out))),
            Err(e) => return Err(fail(e)),
        };
        let Some(tool) = tool else {
            return Err(fail(ExecError::invalid(
                "compose tool",
                session.host(),
                "`docker compose` or `docker-compose` on the host",
            )));
        };
        let files: Vec<(&str, &[u8])> = request
            .artifacts
            .iter()
            .map(|a| (a.file_name.as_str(), a.content.as_bytes()))
            .collect();
        ctx.log
            .line(&format!("uploading {} files to {dir}", files.len()));
        let temps = match session
            .upload(dir, &files, FILE_MODE, Some(&checked), ctx, deadline)
            .await
        {
            Ok(t) => t,
            Err(e) => return Err(fail(e)),
        };
        // The lock is moved into place only after a successful pull; the rest at once.
        let lock_name = lock.file_name.as_str();
        let (mut staged_lock, mut others, mut other_names) =
            (String::new(), Vec::new(), Vec::new());
        for (temp, (name, _)) in temps.iter().zip(&files) {
            if *name == lock_name {
                staged_lock = temp.clone();
            } else {
                others.push(temp.clone());
                other_names.push(*name);
            }
        }
        let rename_others = if others.is_empty() {
            "true".to_owned()
        } else {
            rename_into_place(dir, &others, &other_names)
        };
        let rename_lock = rename_into_place(dir, std::slice::from_ref(&staged_lock), &[lock_name]);
        let override_name = compose_host::secrets_override_name(project);
        let secrets_override = files
            .iter()
            .any(|(name, _)| *name == override_name)
            .then_some(override_name.as_str());
        let up = compose_host::up_script(
            tool,
            &ComposeFiles {
                dir,
                lock: lock_name,
                staged_lock: &staged_lock,
                project,
                lock_digest: &lock.sha256,
                secrets_override,
            },
            &rename_others,
            &rename_lock,
        );
        ctx.log
            .line(&format!("compose pull and up for project {project}"));
        match Self::run(session, &up, "compose pull and up", ctx, deadline).await {
            Ok(out) if out.exit_status == 0 => {}
            Ok(out) => return Err(fail(Self::failed(session, "compose pull and up", &out))),
            Err(e) => return Err(fail(e)),
        }
        let after = match Self::compose_status(session, dir, project, ctx, deadline).await {
            Ok(s) => s,
            Err(e) => return Err(fail(e)),
        };
        if after.healthy_lock().as_ref() != Some(&lock.sha256) {
            return Err(fail(ExecError::NotRunning {
                host: session.host().to_owned(),
                container: format!("project {project}"),
                detail: format!("services not running: {}", after.not_running.join(", ")),
            }));
        }
        for (service, digest) in &after.running {
            ctx.log.line(&format!("{service} runs {digest}"));
        }
        Ok(Deployed {
            deployed_digest: lock.sha256.clone(),
            previous_digest: previous.clone(),
            changed: true,
            running: after.running,
            published: after.published,
            agent: None,
        })
    }
}

#[async_trait]
impl Executor for SshExecutor {
    async fn deploy(&self, request: &DeployRequest, ctx: &ExecContext) -> DeployOutcome {
        let deadline = Instant::now() + ctx.timeout;
        let ssh = match ssh_of(&request.target) {
            Ok(s) => s,
            Err(e) => return Err(e.into()),
        };
        let connected = match self.connect(ssh, deadline).await {
            Ok(c) => c,
            Err(e) => return Err(e.into()),
        };
        let ctx = Self::redacting(ctx, &connected);
        let session = connected.session.as_ref();
        match (request.target.target_type, &request.component) {
            (TargetType::DockerHost, Some(component)) => {
                self.deploy_docker(request, component, &connected, &ctx, deadline)
                    .await
            }
            (TargetType::DockerHost, None) => Err(DeployFailure::from(ExecError::invalid(
                "component",
                "(none)",
                "a component for a docker_host deploy",
            ))),
            (TargetType::ComposeHost, _) => {
                self.deploy_compose(request, ssh, session, &ctx, deadline)
                    .await
            }
            (other, _) => Err(DeployFailure::from(ExecError::Unsupported {
                model: "ssh".to_owned(),
                target_type: other.as_str().to_owned(),
            })),
        }
    }

    async fn inspect(
        &self,
        target: &Target,
        component: &Name,
        ctx: &ExecContext,
    ) -> Result<Option<Digest>, ExecError> {
        let deadline = Instant::now() + ctx.timeout;
        let ssh = ssh_of(target)?;
        let connected = self.connect(ssh, deadline).await?;
        let ctx = Self::redacting(ctx, &connected);
        let session = connected.session.as_ref();
        match target.target_type {
            TargetType::DockerHost => {
                let api = self.docker_api(&connected, deadline).await?;
                let sequence = DockerHost {
                    api: &api,
                    config: self.sequence_config(),
                };
                let running =
                    Self::bounded(session.host(), "docker inspect", &ctx, deadline, async {
                        sequence
                            .running(component, &target.name)
                            .await
                            .map_err(|e| ExecError::docker(session.host(), component.as_str(), e))
                    })
                    .await?;
                Ok(running.map(|r| r.digest))
            }
            TargetType::ComposeHost => {
                let dir = session
                    .work_dir_path(ssh.work_dir.as_ref(), &target.name, &ctx, deadline)
                    .await?;
                Ok(
                    Self::compose_status(session, &dir, component, &ctx, deadline)
                        .await?
                        .healthy_lock(),
                )
            }
            other => Err(ExecError::Unsupported {
                model: "ssh".to_owned(),
                target_type: other.as_str().to_owned(),
            }),
        }
    }

    async fn run_command(
        &self,
        target: &Target,
        command: &CommandSpec,
        ctx: &ExecContext,
    ) -> Result<CommandOutput, ExecError> {
        let deadline = Instant::now() + ctx.timeout;
        let ssh = ssh_of(target)?;
        let connected = self.connect(ssh, deadline).await?;
        let ctx = Self::redacting(ctx, &connected);
        let what = command.argv().first().map_or("", String::as_str);
        let script = format!("exec {}", sh_join(command.argv()));
        let out = Self::run(&connected.session, &script, what, &ctx, deadline).await?;
        Ok(CommandOutput {
            exit_status: out.exit_status,
            stdout: out.stdout,
        })
    }

    async fn instance(
        &self,
        target: &Target,
        slot: &Name,
        ctx: &ExecContext,
    ) -> Result<Vec<PublishedPort>, ExecError> {
        let deadline = Instant::now() + ctx.timeout;
        let ssh = ssh_of(target)?;
        let connected = self.connect(ssh, deadline).await?;
        let ctx = Self::redacting(ctx, &connected);
        let host = connected.session.host().to_owned();
        match target.target_type {
            TargetType::DockerHost => {
                let api = self.docker_api(&connected, deadline).await?;
                let sequence = DockerHost {
                    api: &api,
                    config: self.sequence_config(),
                };
                Self::bounded(&host, "docker inspect", &ctx, deadline, async {
                    let c = sequence
                        .inspect_owned(slot.as_str(), &target.name)
                        .await
                        .map_err(|e| ExecError::docker(&host, slot.as_str(), e))?;
                    Ok(c.filter(|c| c.running)
                        .map(|c| c.published)
                        .unwrap_or_default())
                })
                .await
            }
            TargetType::ComposeHost => {
                let session = &connected.session;
                let dir = session
                    .work_dir_path(ssh.work_dir.as_ref(), &target.name, &ctx, deadline)
                    .await?;
                Ok(Self::compose_status(session, &dir, slot, &ctx, deadline)
                    .await?
                    .published)
            }
            other => Err(ExecError::Unsupported {
                model: "ssh".to_owned(),
                target_type: other.as_str().to_owned(),
            }),
        }
    }

    /// From the target's side: a `direct-tcpip` channel through the connection to where
    /// the instance publishes the port (its loopback for a port on every address).
    async fn probe(
        &self,
        target: &Target,
        probe: &InstanceProbe,
        ctx: &ExecContext,
    ) -> Result<ProbeOutcome, ExecError> {
        let deadline = Instant::now() + ctx.timeout;
        let ssh = ssh_of(target)?;
        let connected = self.connect(ssh, deadline).await?;
        let local = deploy_health::local_socket(&probe.address);
        let address = local.to_string();
        let timeout = std::time::Duration::from_millis(probe.timeout_ms);
        let ip = local.ip().to_string();
        let forward = connected.session.tcp_stream(&ip, local.port());
        match tokio::time::timeout(timeout, forward).await {
            Ok(Ok(stream)) => Ok(deploy_health::probe_stream(stream, &address, probe).await),
            // The connection itself is gone: nothing was learnt about the instance.
            Ok(Err(e)) if !connected.session.is_alive() => Err(e),
            // The target refused the forward: nothing listens there (the instance is down).
            Ok(Err(e)) => Ok(ProbeOutcome {
                healthy: false,
                message: format!(
                    "tcp {address} (on {}) refused: {e}",
                    connected.session.host()
                ),
                status_code: None,
            }),
            Err(_) => Ok(ProbeOutcome {
                healthy: false,
                message: format!(
                    "tcp {address} (on {}) timed out after {} ms",
                    connected.session.host(),
                    probe.timeout_ms
                ),
                status_code: None,
            }),
        }
    }

    async fn published(
        &self,
        target: &Target,
        component: &Name,
        port: u16,
        ctx: &ExecContext,
    ) -> Result<Published, ExecError> {
        let deadline = Instant::now() + ctx.timeout;
        let ssh = ssh_of(target)?;
        let connected = self.connect(ssh, deadline).await?;
        let host = connected.session.host().to_owned();
        let api = self.docker_api(&connected, deadline).await?;
        let sequence = DockerHost {
            api: &api,
            config: self.sequence_config(),
        };
        let (current, previous) = Self::bounded(&host, "docker port", ctx, deadline, async {
            sequence
                .published(component, port)
                .await
                .map_err(|e| ExecError::docker(&host, component.as_str(), e))
        })
        .await?;
        let address = |p: deploy_core::PublishedPort| {
            std::net::SocketAddr::new(p.host_ip, p.host_port).to_string()
        };
        Ok(Published {
            current: current.map(address),
            previous: previous.map(address),
        })
    }

    async fn switch_traffic(
        &self,
        target: &Target,
        switch: &TrafficSwitch,
        ctx: &ExecContext,
    ) -> Result<(), ExecError> {
        let deadline = Instant::now() + ctx.timeout;
        let ssh = ssh_of(target)?;
        let path = switch.path.as_str();
        let (dir, file) = match path.rsplit_once('/') {
            Some((dir, file)) if !file.is_empty() => (if dir.is_empty() { "/" } else { dir }, file),
            _ => {
                return Err(ExecError::invalid(
                    "traffic switch path",
                    path,
                    "an absolute file path such as /etc/nginx/conf.d/stella.conf",
                ));
            }
        };
        let connected = self.connect(ssh, deadline).await?;
        let ctx = Self::redacting(ctx, &connected);
        let session = connected.session.as_ref();
        ctx.log
            .line(&format!("uploading the proxy config to {path}"));
        // Not the work dir: the proxy's own directory, whose owner and mode are the
        // operator's; the temp name is still created exclusively. 0644: nginx workers
        // may read included files, and the config holds no secret.
        let temps = session
            .upload(
                dir,
                &[(file, switch.content.as_bytes())],
                PROXY_CONFIG_MODE,
                None,
                &ctx,
                deadline,
            )
            .await?;
        let temp = temps.first().cloned().unwrap_or_default();
        let script = switch_script(path, &temp, switch);
        let what = "nginx -t and reload";
        let out = Self::run(session, &script, what, &ctx, deadline).await?;
        if out.exit_status != 0 {
            return Err(Self::failed(session, what, &out));
        }
        ctx.log.line(&format!(
            "proxy reloaded with the new {path} ({})",
            switch.reload.argv().join(" ")
        ));
        Ok(())
    }

    async fn retire_previous(
        &self,
        target: &Target,
        component: &Name,
        ctx: &ExecContext,
    ) -> Result<(), ExecError> {
        let deadline = Instant::now() + ctx.timeout;
        let ssh = ssh_of(target)?;
        let connected = self.connect(ssh, deadline).await?;
        let host = connected.session.host().to_owned();
        let api = self.docker_api(&connected, deadline).await?;
        let sequence = DockerHost {
            api: &api,
            config: self.sequence_config(),
        };
        Self::bounded(
            &host,
            "docker stop of the kept previous",
            ctx,
            deadline,
            async {
                sequence
                    .retire_previous(component, self.config.stop_timeout)
                    .await
                    .map_err(|e| ExecError::docker(&host, component.as_str(), e))
            },
        )
        .await
    }
}

/// Moves the uploaded `temp` to `path` (the old file kept aside), runs the test and the
/// reload; on a failure puts the old file back (or removes the new one) and reloads that.
/// `nginx -s reload` only signals the master: the script then waits (3 s at most) until
/// the reload is applied, read from the process table: a master that has new worker
/// processes and none of its old ones still active (each old one is gone or titled
/// "worker process is shutting down", which nginx sets as it closes its listening
/// sockets), so that new connections reach only the new config.
fn switch_script(path: &str, temp: &str, switch: &TrafficSwitch) -> String {
    let q_path = sh_quote(path);
    let q_temp = sh_quote(temp);
    let q_backup = sh_quote(&format!("{path}.stella-previous"));
    let test = sh_join(switch.test.argv());
    let reload = sh_join(switch.reload.argv());
    format!(
        "if [ -e {q_path} ]; then cp -p -- {q_path} {q_backup} || {{ rm -f -- {q_temp}; exit 1; }}; had=1; else had=0; fi\n\
         mv -f -- {q_temp} {q_path} || exit 1\n\
         workers() {{ ps -eo pid=,ppid=,args= 2>/dev/null | awk '$3 == \"nginx:\" && $4 == \"worker\" {{ print $1, $2, ($7 == \"shutting\" ? \"q\" : \"a\") }}'; }}\n\
         before=\"$(workers)\"\n\
         if {test} >&2 && {reload} >&2; then\n\
         \x20 rm -f -- {q_backup}\n\
         \x20 i=0; while [ $i -lt 60 ]; do\n\
         \x20   applied=$(printf '%s\\n--\\n%s\\n' \"$before\" \"$(workers)\" | awk '\n\
         \x20     $0 == \"--\" {{ now = 1; next }}\n\
         \x20     !now {{ if (NF) old[$1] = 1; next }}\n\
         \x20     !($1 in old) {{ reloaded[$2] = 1; next }}\n\
         \x20     $3 == \"a\" {{ active[$2] = 1 }}\n\
         \x20     END {{ n = 0; for (m in reloaded) {{ n++; if (m in active) {{ print \"no\"; exit }} }} print (n ? \"yes\" : \"no\") }}')\n\
         \x20   [ \"$applied\" = yes ] && exit 0\n\
         \x20   sleep 0.05; i=$((i+1))\n\
         \x20 done\n\
         \x20 echo 'nginx did not show the reload applied within 3 s (new workers, old ones shutting down)' >&2; exit 0\n\
         fi\n\
         echo 'the proxy refused the new config; the previous one is put back' >&2\n\
         if [ $had = 1 ]; then mv -f -- {q_backup} {q_path}; else rm -f -- {q_path}; fi\n\
         {test} >/dev/null 2>&1 && {reload} >/dev/null 2>&1\n\
         exit {EXIT_SWITCH_REFUSED}\n"
    )
}

/// Mode of an uploaded proxy config.
const PROXY_CONFIG_MODE: u32 = 0o644;

/// Exit status of the switch script when the proxy refused the new config (the old one is back).
const EXIT_SWITCH_REFUSED: u32 = 6;
