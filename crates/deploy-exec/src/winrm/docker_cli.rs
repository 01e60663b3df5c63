//! `CliApi`: the docker_host steps (deploy-docker's `DockerApi`) as Docker CLI commands in PowerShell over one WinRM shell, so a Windows host runs the same sequence as the agent and SSH.
//!
//! WinRM cannot forward the engine's named pipe, so each step is one command. Values
//! reach `docker` as PowerShell single-quoted literals; Windows PowerShell 5.1 mangles
//! double quotes inside native arguments, so a word holding one is refused (the
//! environment is not on the command line: it goes through an env-file written from
//! base64, which carries any value an env-file line can hold).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use deploy_core::{ContainerSpec, ImageRef, NetworkAttachment};
use deploy_docker::{
    Container, DockerApi, DockerError, DockerErrorKind, PullAuth, StepLog, container_of,
    create_argv, env_file, extra_networks, pull_error,
};
use tokio::time::Instant;

use crate::executor::ExecContext;
use crate::logs::{NullSink, TaskLog};
use crate::winrm::client::RunOutput;
use crate::winrm::executor::{Session, WinrmExecutor};
use crate::winrm::powershell::ps_quote;

/// Exit status of a script when the object it looked for does not exist.
const EXIT_MISSING: i64 = 3;

/// Bytes of env-file per command: base64 and UTF-16 (`-EncodedCommand`) grow it about
/// 2.7 times, and a command line holds at most 8191 characters.
const ENV_PIECE_BYTES: usize = 1500;

/// The steps over one open WinRM shell.
pub(crate) struct CliApi<'a> {
    pub executor: &'a WinrmExecutor,
    pub session: &'a Session,
    pub ctx: &'a ExecContext,
    pub deadline: Instant,
}

/// Why Windows PowerShell 5.1 cannot hand `word` to a native program unchanged: it
/// mangles double quotes and drops empty arguments.
fn unpassable(word: &str) -> Option<&'static str> {
    if word.is_empty() {
        Some("a non-empty word (Windows PowerShell 5.1 drops empty native arguments)")
    } else if word.contains('"') {
        Some(
            "a value without `\"` (Windows PowerShell 5.1 mangles double quotes in native arguments)",
        )
    } else {
        None
    }
}

/// `docker` with `args`, each a single-quoted literal; refused when a word cannot pass
/// (see [`unpassable`]).
fn docker_call(args: &[String]) -> Result<String, DockerError> {
    if let Some((bad, why)) = args.iter().find_map(|a| unpassable(a).map(|why| (a, why))) {
        return Err(DockerError::invalid(format!(
            "pass `{bad}` to docker on a Windows host; expected {why}"
        )));
    }
    let words: Vec<String> = args.iter().map(|a| ps_quote(a)).collect();
    Ok(format!("& docker {}", words.join(" ")))
}

/// Checks, when a job is created, that a Windows host can run `spec` of `service`
/// through the Docker CLI: every word passes PowerShell (see [`unpassable`]), values
/// fit the env-file (no line break), and a healthcheck is in shell form (the CLI
/// takes a shell command only, and a Windows container's shell is not `/bin/sh`, so
/// exec-form words would be re-quoted for the wrong shell).
pub fn check_windows_spec(service: &str, spec: &ContainerSpec) -> Result<(), String> {
    let field = |rest: &str| format!("services.{service}.{rest}");
    for (k, v) in &spec.env {
        if v.contains(['\n', '\r']) {
            return Err(format!(
                "{} holds a line break; expected a value without one on a Windows (WinRM) target: its environment travels in an env-file, one variable per line",
                field(&format!("environment.{k}"))
            ));
        }
    }
    if spec
        .healthcheck
        .as_ref()
        .is_some_and(|h| h.test.first().is_some_and(|w| w == "CMD"))
    {
        return Err(format!(
            "{} is in exec form (`CMD`); expected `CMD-SHELL` on a Windows (WinRM) target: the Docker CLI takes a shell command only",
            field("healthcheck.test")
        ));
    }
    let argv = create_argv("check", spec, &BTreeMap::new(), "check.env");
    if let Some((bad, why)) = argv.iter().find_map(|a| unpassable(a).map(|why| (a, why))) {
        return Err(format!(
            "service `{service}` needs the docker argument `{bad}` on a Windows (WinRM) target; expected {why}"
        ));
    }
    Ok(())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

impl CliApi<'_> {
    /// Runs `script`; `quiet` keeps its stdout (data, not news) out of the task log.
    async fn run(&self, script: &str, what: &str, quiet: bool) -> Result<RunOutput, DockerError> {
        let silent;
        let ctx = if quiet {
            silent = ExecContext {
                log: TaskLog::new(std::sync::Arc::new(NullSink), 0),
                cancel: self.ctx.cancel.clone(),
                timeout: self.ctx.timeout,
            };
            &silent
        } else {
            self.ctx
        };
        let script = format!("$ErrorActionPreference = 'Continue'\n{script}");
        self.executor
            .powershell(self.session, &script, what, ctx, self.deadline)
            .await
            .map_err(|e| {
                let kind = if e.is_retryable() {
                    DockerErrorKind::Unavailable
                } else {
                    DockerErrorKind::Invalid
                };
                DockerError::new(kind, format!("{what}: {e}"))
            })
    }

    /// Runs `docker args…`; a non-zero exit is an error of `kind` with stderr's tail.
    async fn docker(
        &self,
        args: &[String],
        what: &str,
        kind: DockerErrorKind,
    ) -> Result<RunOutput, DockerError> {
        let script = format!("{}\nexit $LASTEXITCODE", docker_call(args)?);
        let out = self.run(&script, what, false).await?;
        if out.exit_code == 0 {
            Ok(out)
        } else {
            Err(DockerError::new(
                kind,
                format!(
                    "{what}: exit status {}: {}",
                    out.exit_code,
                    self.session.redact(&text(&out.stderr_tail))
                ),
            ))
        }
    }
}

fn words(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[async_trait]
impl DockerApi for CliApi<'_> {
    async fn inspect(&self, name: &str) -> Result<Option<Container>, DockerError> {
        let call = docker_call(&words(&["inspect", "--type", "container", name]))?;
        let script = format!(
            "$raw = {call} 2>$null\nif ($LASTEXITCODE -ne 0) {{ exit {EXIT_MISSING} }}\n$raw | Out-String\nexit 0"
        );
        let what = format!("docker inspect {name}");
        let out = self.run(&script, &what, true).await?;
        if out.exit_code == EXIT_MISSING {
            return Ok(None);
        }
        let parsed: Vec<bollard::models::ContainerInspectResponse> =
            serde_json::from_slice(&out.stdout)
                .map_err(|e| DockerError::unavailable(&what, format!("unreadable answer ({e})")))?;
        Ok(parsed.into_iter().next().map(container_of))
    }

    async fn image_present(&self, image: &ImageRef) -> Result<bool, DockerError> {
        let call = docker_call(&words(&["image", "inspect", &image.to_string()]))?;
        let script = format!("{call} *> $null\nexit $LASTEXITCODE");
        Ok(self
            .run(&script, "docker image inspect", true)
            .await?
            .exit_code
            == 0)
    }

    async fn pull(
        &self,
        image: &ImageRef,
        auth: Option<&PullAuth>,
        log: &dyn StepLog,
    ) -> Result<(), DockerError> {
        if auth.is_some() {
            return Err(DockerError::invalid(
                "pull with registry credentials on a Windows host: log the host in to the registry (`docker login`) instead",
            ));
        }
        let shown = image.to_string();
        log.step(&format!("pulling {shown}"));
        let script = format!(
            "{}\nexit $LASTEXITCODE",
            docker_call(&words(&["pull", &shown]))?
        );
        let out = self.run(&script, "docker pull", false).await?;
        if out.exit_code == 0 {
            Ok(())
        } else {
            Err(pull_error(
                &shown,
                &self.session.redact(&text(&out.stderr_tail)),
            ))
        }
    }

    async fn ensure_network(&self, net: &NetworkAttachment) -> Result<(), DockerError> {
        let inspect = docker_call(&words(&["network", "inspect", &net.name]))?;
        let mut create = words(&["network", "create"]);
        if let Some(d) = &net.driver {
            create.extend(["--driver".to_owned(), d.clone()]);
        }
        for (k, v) in &net.driver_opts {
            create.extend(["--opt".to_owned(), format!("{k}={v}")]);
        }
        create.push(net.name.clone());
        let create = docker_call(&create)?;
        let missing = if net.external {
            format!("exit {EXIT_MISSING}")
        } else {
            format!("{create} | Out-Null\nexit $LASTEXITCODE")
        };
        let script =
            format!("{inspect} *> $null\nif ($LASTEXITCODE -eq 0) {{ exit 0 }}\n{missing}");
        match self.run(&script, "docker network create", false).await? {
            out if out.exit_code == 0 => Ok(()),
            out if out.exit_code == EXIT_MISSING => Err(DockerError::invalid(format!(
                "find external network {}: it does not exist on this host",
                net.name
            ))),
            out => Err(DockerError::unavailable(
                &format!("create network {}", net.name),
                self.session.redact(&text(&out.stderr_tail)),
            )),
        }
    }

    async fn ensure_volume(
        &self,
        name: &str,
        driver: Option<&str>,
        driver_opts: &BTreeMap<String, String>,
        external: bool,
    ) -> Result<(), DockerError> {
        let inspect = docker_call(&words(&["volume", "inspect", name]))?;
        let mut create = words(&["volume", "create"]);
        if let Some(d) = driver {
            create.extend(["--driver".to_owned(), d.to_owned()]);
        }
        for (k, v) in driver_opts {
            create.extend(["--opt".to_owned(), format!("{k}={v}")]);
        }
        create.push(name.to_owned());
        let create = docker_call(&create)?;
        let missing = if external {
            format!("exit {EXIT_MISSING}")
        } else {
            format!("{create} | Out-Null\nexit $LASTEXITCODE")
        };
        let script =
            format!("{inspect} *> $null\nif ($LASTEXITCODE -eq 0) {{ exit 0 }}\n{missing}");
        match self.run(&script, "docker volume create", false).await? {
            out if out.exit_code == 0 => Ok(()),
            out if out.exit_code == EXIT_MISSING => Err(DockerError::invalid(format!(
                "find external volume {name}: it does not exist on this host"
            ))),
            out => Err(DockerError::unavailable(
                &format!("create volume {name}"),
                self.session.redact(&text(&out.stderr_tail)),
            )),
        }
    }

    async fn create(
        &self,
        name: &str,
        spec: &ContainerSpec,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DockerError> {
        // Checked when the job was created; again here for a job created before.
        check_windows_spec(name, spec).map_err(DockerError::invalid)?;
        // The environment travels as an env-file, written in base64 pieces (a command
        // line holds at most 8191 characters) and removed again whatever happens:
        // never on a command line.
        let out = self
            .run("[IO.Path]::GetTempFileName()", "create an env-file", true)
            .await?;
        let path = text(&out.stdout);
        if out.exit_code != 0 || path.is_empty() {
            return Err(DockerError::unavailable(
                "create an env-file",
                self.session.redact(&text(&out.stderr_tail)),
            ));
        }
        let q_path = ps_quote(&path);
        for piece in env_file(spec).as_bytes().chunks(ENV_PIECE_BYTES) {
            let script = format!(
                "$b = [Convert]::FromBase64String('{}')
$f = [IO.File]::Open({q_path}, 'Append')
$f.Write($b, 0, $b.Length)
$f.Close()
exit 0",
                BASE64.encode(piece)
            );
            self.run(&script, "write the env-file", true).await?;
        }
        let create = docker_call(&create_argv(name, spec, labels, &path))?;
        let mut connect = String::new();
        for (network, aliases) in extra_networks(spec) {
            let mut args = words(&["network", "connect"]);
            for a in aliases {
                args.extend(["--alias".to_owned(), a]);
            }
            args.extend([network, name.to_owned()]);
            connect.push_str(&format!(
                "if ($code -eq 0) {{ {} | Out-Null; $code = $LASTEXITCODE }}
",
                docker_call(&args)?
            ));
        }
        let script = format!(
            "{create} | Out-Null
$code = $LASTEXITCODE
Remove-Item -Force {q_path}
{connect}exit $code"
        );
        let out = self.run(&script, "docker create", false).await;
        if out.is_err() {
            let _ = self
                .run(
                    &format!(
                        "Remove-Item -Force {q_path}
exit 0"
                    ),
                    "remove the env-file",
                    true,
                )
                .await;
        }
        let out = out?;
        if out.exit_code == 0 {
            Ok(())
        } else {
            Err(DockerError::unavailable(
                &format!("create container {name}"),
                self.session.redact(&text(&out.stderr_tail)),
            ))
        }
    }

    async fn start(&self, name: &str) -> Result<(), DockerError> {
        self.docker(
            &words(&["start", name]),
            &format!("start container {name}"),
            DockerErrorKind::NotRunning,
        )
        .await
        .map(|_| ())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), DockerError> {
        self.docker(
            &words(&["rename", from, to]),
            &format!("rename container {from} to {to}"),
            DockerErrorKind::Unavailable,
        )
        .await
        .map(|_| ())
    }

    async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let call = docker_call(&words(&["rm", "--force", name]))?;
        let script = format!("{call} *> $null\nexit 0");
        self.run(&script, "docker rm", true).await.map(|_| ())
    }

    async fn stop(&self, name: &str, grace: Duration) -> Result<(), DockerError> {
        let call = docker_call(&words(&[
            "stop",
            "--time",
            &grace.as_secs().to_string(),
            name,
        ]))?;
        let script = format!("{call} | Out-Null\nexit 0");
        self.run(&script, "docker stop", false).await.map(|_| ())
    }

    async fn stop_in_background(&self, id: &str, grace: Duration) {
        // A process the WinRM shell starts is ended with the shell; one created through
        // WMI is not, so the stop outlives this call.
        let line = format!("docker stop --time {} {id}", grace.as_secs());
        let script = format!(
            "Invoke-CimMethod -ClassName Win32_Process -MethodName Create -Arguments @{{CommandLine = {}}} | Out-Null\nexit 0",
            ps_quote(&line)
        );
        if let Err(e) = self.run(&script, "background docker stop", true).await {
            tracing::warn!(container = %id, "background stop of the previous container: {e}");
        }
    }

    async fn kill(&self, name: &str) -> Result<(), DockerError> {
        let call = docker_call(&words(&["kill", name]))?;
        let script = format!("{call} *> $null\nexit 0");
        self.run(&script, "docker kill", true).await.map(|_| ())
    }

    async fn logs_tail(&self, name: &str, lines: usize) -> Result<String, DockerError> {
        let call = docker_call(&words(&["logs", "--tail", &lines.to_string(), name]))?;
        let script = format!("{call} 2>&1 | Out-String\nexit 0");
        let out = self.run(&script, "docker logs", true).await?;
        Ok(self.session.redact(&String::from_utf8_lossy(&out.stdout)))
    }
}
