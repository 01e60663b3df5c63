//! `SshSession`: one authenticated russh connection; streaming exec with cancel/timeout that kills the remote process group, and SFTP uploads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::errors::ExecError;
use crate::executor::ExecContext;
use crate::logs::Stream;
use crate::quote::sh_quote;
use crate::secrets::Secret;
use crate::ssh::config::SshExecutorConfig;
use crate::ssh::host_key::HostKeyCheck;

/// First stdout line of every remote command: the PID of its shell, which sshd made a
/// session (and process-group) leader, so cancel can kill the whole group.
const PID_MARKER: &str = "__deploy_exec_pid=";

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum SshAuth {
    /// An OpenSSH private key (ed25519, RSA, ECDSA) and its optional passphrase.
    Key {
        key: Secret,
        passphrase: Option<Secret>,
    },
    Password(Secret),
}

impl SshAuth {
    /// A secret that looks like a private key is a key; anything else is a password.
    pub fn from_secret(secret: Secret, passphrase: Option<Secret>) -> Self {
        if secret.expose().contains("PRIVATE KEY-----") {
            Self::Key {
                key: secret,
                passphrase,
            }
        } else {
            Self::Password(secret)
        }
    }

    fn method(&self) -> &'static str {
        match self {
            Self::Key { .. } => "public key",
            Self::Password(_) => "password",
        }
    }
}

struct Client {
    check: HostKeyCheck,
    verdict: Arc<Mutex<Option<ExecError>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Certificates are never advertised, so a bare key is what a server presents.
        let PublicKeyOrCertificate::PublicKey { key, .. } = presented else {
            return Ok(false);
        };
        match self.check.verify(key) {
            Ok(()) => Ok(true),
            Err(e) => {
                if let Ok(mut v) = self.verdict.lock() {
                    *v = Some(e);
                }
                Ok(false)
            }
        }
    }
}

/// What a remote command left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOutput {
    pub exit_status: u32,
    /// The head of stdout, at most the executor's `stdout_cap` bytes.
    pub stdout: String,
    /// The last 2 KiB of stderr (for error messages).
    pub stderr_tail: String,
}

/// One authenticated connection to a target; channels are opened per command.
pub struct SshSession {
    handle: Handle<Client>,
    host: String,
    port: u16,
    stdout_cap: usize,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SshSession({}:{})", self.host, self.port)
    }
}

fn connect_error(host: &str, port: u16, e: &russh::Error) -> ExecError {
    let detail = match e {
        russh::Error::IO(io) => io.to_string(),
        other => other.to_string(),
    };
    ExecError::Connect {
        host: host.to_owned(),
        port,
        detail: detail.to_lowercase(),
    }
}

impl SshSession {
    /// Connects, verifies the host key and authenticates, all within `deadline`.
    pub async fn connect(
        check: HostKeyCheck,
        user: &str,
        auth: &SshAuth,
        config: &SshExecutorConfig,
        deadline: Instant,
    ) -> Result<Self, ExecError> {
        let host = check.host.clone();
        let port = check.port;
        let limit = deadline.min(Instant::now() + config.connect_timeout);
        let seconds = config.connect_timeout.as_secs();
        let fut = Self::connect_inner(check, user, auth, config);
        match tokio::time::timeout_at(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(ExecError::ConnectTimeout {
                host,
                port,
                seconds,
            }),
        }
    }

    async fn connect_inner(
        check: HostKeyCheck,
        user: &str,
        auth: &SshAuth,
        config: &SshExecutorConfig,
    ) -> Result<Self, ExecError> {
        let host = check.host.clone();
        let port = check.port;
        let ssh_config = client::Config {
            keepalive_interval: Some(config.keepalive_interval),
            keepalive_max: config.keepalive_max,
            nodelay: true,
            ..Default::default()
        };
        let verdict = Arc::new(Mutex::new(None));
        let handler = Client {
            check,
            verdict: verdict.clone(),
        };
        let connected = client::connect(Arc::new(ssh_config), (host.as_str(), port), handler).await;
        let mut handle = match connected {
            Ok(h) => h,
            Err(e) => {
                if let Some(v) = verdict.lock().ok().and_then(|mut v| v.take()) {
                    return Err(v);
                }
                return Err(connect_error(&host, port, &e));
            }
        };
        let auth_error = || ExecError::Authentication {
            host: host.clone(),
            port,
            user: user.to_owned(),
            method: auth.method(),
        };
        let result = match auth {
            SshAuth::Key { key, passphrase } => {
                let private = russh::keys::decode_secret_key(
                    key.expose(),
                    passphrase.as_ref().map(Secret::expose),
                )
                .map_err(|e| ExecError::Secret {
                    reference: format!("private key for {user}@{host}"),
                    detail: format!("not a usable OpenSSH private key: {e}"),
                })?;
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| connect_error(&host, port, &e))?
                    .flatten();
                handle
                    .authenticate_publickey(
                        user,
                        PrivateKeyWithHashAlg::new(Arc::new(private), hash),
                    )
                    .await
            }
            SshAuth::Password(p) => handle.authenticate_password(user, p.expose()).await,
        };
        match result {
            Ok(r) if r.success() => Ok(Self {
                handle,
                host,
                port,
                stdout_cap: config.stdout_cap,
            }),
            Ok(_) => Err(auth_error()),
            Err(e) => Err(connect_error(&host, port, &e)),
        }
    }

    /// The host this session is connected to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// False once the transport is gone (the pool then reconnects).
    pub fn is_alive(&self) -> bool {
        !self.handle.is_closed()
    }

    fn lost(&self, e: &russh::Error) -> ExecError {
        ExecError::ConnectionLost {
            host: self.host.clone(),
            port: self.port,
            detail: e.to_string().to_lowercase(),
        }
    }

    /// Runs `script` (already quoted) under the user's `/bin/sh`, streaming its output to
    /// `ctx.log`. On cancel or at `deadline` the remote process group is killed and the
    /// channel closed. A non-zero exit is returned, not an error.
    pub async fn exec(
        &self,
        script: &str,
        what: &str,
        ctx: &ExecContext,
        deadline: Instant,
    ) -> Result<RemoteOutput, ExecError> {
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.lost(&e))?;
        let wrapped = format!("echo {PID_MARKER}$$; {script}");
        channel
            .exec(true, wrapped.as_bytes())
            .await
            .map_err(|e| self.lost(&e))?;
        let mut pid: Option<u32> = None;
        let mut head = Vec::new();
        let mut seen_marker = false;
        let mut stdout = Vec::new();
        let mut stderr_tail: Vec<u8> = Vec::new();
        let mut status = None;
        let stop = loop {
            tokio::select! {
                biased;
                () = ctx.cancel.cancelled() => break Some(false),
                () = tokio::time::sleep_until(deadline) => break Some(true),
                msg = channel.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        let mut data: &[u8] = &data;
                        if !seen_marker {
                            head.extend_from_slice(data);
                            let Some(nl) = head.iter().position(|&b| b == b'\n') else { continue };
                            let first = String::from_utf8_lossy(&head[..nl]).into_owned();
                            pid = first.strip_prefix(PID_MARKER).and_then(|p| p.trim().parse().ok());
                            seen_marker = true;
                            let rest = head.split_off(nl + 1);
                            head = rest;
                            data = &head;
                        }
                        ctx.log.bytes(Stream::Stdout, data);
                        let room = self.stdout_cap.saturating_sub(stdout.len());
                        stdout.extend_from_slice(&data[..data.len().min(room)]);
                        head.clear();
                    }
                    Some(ChannelMsg::ExtendedData { data, .. }) => {
                        ctx.log.bytes(Stream::Stderr, &data);
                        stderr_tail.extend_from_slice(&data);
                        if stderr_tail.len() > 2048 {
                            stderr_tail.drain(..stderr_tail.len() - 2048);
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { .. }) => status = Some(255),
                    Some(_) => {}
                    None => break None,
                }
            }
        };
        ctx.log.flush();
        if let Some(timed_out) = stop {
            self.kill(pid).await;
            let _ = channel.close().await;
            return Err(if timed_out {
                ExecError::Timeout {
                    host: self.host.clone(),
                    what: what.to_owned(),
                    seconds: ctx.timeout.as_secs(),
                }
            } else {
                ExecError::Cancelled {
                    host: self.host.clone(),
                    what: what.to_owned(),
                }
            });
        }
        let Some(exit_status) = status else {
            return Err(ExecError::ConnectionLost {
                host: self.host.clone(),
                port: self.port,
                detail: format!("`{what}` ended without an exit status"),
            });
        };
        Ok(RemoteOutput {
            exit_status,
            stdout: ctx.log.redact(&String::from_utf8_lossy(&stdout)),
            stderr_tail: ctx.log.redact(String::from_utf8_lossy(&stderr_tail).trim()),
        })
    }

    /// Kills the remote process group of a cancelled command (bounded: 3 s).
    async fn kill(&self, pid: Option<u32>) {
        let Some(pid) = pid else { return };
        let script = format!("kill -KILL -{pid} 2>/dev/null; kill -KILL {pid} 2>/dev/null; true");
        let attempt = async {
            let channel = self.handle.channel_open_session().await.ok()?;
            channel.exec(true, script.as_bytes()).await.ok()?;
            let mut channel = channel;
            while channel.wait().await.is_some() {}
            Some(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), attempt).await;
    }

    /// Uploads `files` into `dir` over SFTP, each to a temporary name; returns the temp paths
    /// in order. The caller renames them into place (`mv -f`, atomic) in its next command.
    pub async fn upload(
        &self,
        dir: &str,
        files: &[(&str, &[u8])],
        ctx: &ExecContext,
        deadline: Instant,
    ) -> Result<Vec<String>, ExecError> {
        let upload = async {
            let channel = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.lost(&e))?;
            channel
                .request_subsystem(true, "sftp")
                .await
                .map_err(|e| self.lost(&e))?;
            let sftp = russh_sftp::client::SftpSession::new(channel.into_stream())
                .await
                .map_err(|e| self.upload_error("(sftp session)", dir, &e.to_string()))?;
            let mut temps = Vec::with_capacity(files.len());
            for (name, content) in files {
                let temp = format!("{dir}/.{name}.uploading-{}", std::process::id());
                let mut file = sftp
                    .create(temp.clone())
                    .await
                    .map_err(|e| self.upload_error(name, &temp, &e.to_string()))?;
                file.write_all(content)
                    .await
                    .map_err(|e| self.upload_error(name, &temp, &e.to_string()))?;
                file.shutdown()
                    .await
                    .map_err(|e| self.upload_error(name, &temp, &e.to_string()))?;
                temps.push(temp);
            }
            let _ = sftp.close().await;
            Ok(temps)
        };
        match tokio::time::timeout_at(deadline, upload).await {
            Ok(r) => r,
            Err(_) => Err(ExecError::Timeout {
                host: self.host.clone(),
                what: "sftp upload".to_owned(),
                seconds: ctx.timeout.as_secs(),
            }),
        }
    }

    fn upload_error(&self, file: &str, path: &str, detail: &str) -> ExecError {
        ExecError::Upload {
            host: self.host.clone(),
            file: file.to_owned(),
            path: path.to_owned(),
            detail: detail.to_lowercase(),
        }
    }

    /// Closes the connection politely.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// `mv -f` of each uploaded temp file onto its final name, as one shell fragment.
pub fn rename_into_place(dir: &str, temps: &[String], names: &[&str]) -> String {
    temps
        .iter()
        .zip(names)
        .map(|(t, n)| {
            format!(
                "mv -f -- {} {}",
                sh_quote(t),
                sh_quote(&format!("{dir}/{n}"))
            )
        })
        .collect::<Vec<_>>()
        .join(" && ")
}
