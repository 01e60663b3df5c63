//! `SshSession`: one authenticated russh connection; streaming exec with cancel/timeout that kills the remote process group, and SFTP (work dir, uploads).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy_core::{Name, UnixPath};
use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use tokio::time::Instant;

use crate::errors::ExecError;
use crate::executor::ExecContext;
use crate::logs::Stream;
use crate::quote::sh_quote;
use crate::secrets::Secret;
use crate::ssh::config::SshExecutorConfig;
use crate::ssh::files::{CheckedDir, RemoteFiles};
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
            // A password file usually ends with a newline that is not part of the password.
            Self::Password(Secret::new(secret.expose().trim_end_matches(['\r', '\n'])))
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
    /// The server refused a `direct-streamlocal` channel once: the Docker socket is
    /// reached through `docker system dial-stdio` from then on.
    no_streamlocal: std::sync::atomic::AtomicBool,
}

/// A byte stream through the connection (a forwarded socket, or a command's stdio).
pub type ChannelStream = russh::ChannelStream<client::Msg>;

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
        let now = Instant::now();
        let limit = deadline.min(now + config.connect_timeout);
        let seconds = limit.saturating_duration_since(now).as_secs_f64().ceil() as u64;
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
        tracing::debug!(%host, port, user, method = auth.method(), "ssh authentication");
        match result {
            Ok(r) if r.success() => Ok(Self {
                handle,
                host,
                port,
                stdout_cap: config.stdout_cap,
                no_streamlocal: std::sync::atomic::AtomicBool::new(false),
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
        tracing::debug!(host = %self.host, what, "remote command");
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
                            // Anything before the marker (a chatty shell rc) is output too.
                            let consumed = match first.strip_prefix(PID_MARKER) {
                                Some(p) => {
                                    pid = p.trim().parse().ok();
                                    nl + 1
                                }
                                None => 0,
                            };
                            seen_marker = true;
                            let rest = head.split_off(consumed);
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
            tracing::info!(host = %self.host, what, ?pid, timed_out, "stopping remote command");
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

    /// A stream to the Docker Engine's socket on the target: a `direct-streamlocal`
    /// channel to `socket` (what `ssh -L` does for a unix socket; no process is started
    /// on the host), or, where the server refuses socket forwarding
    /// (`AllowStreamLocalForwarding no`), a channel running `docker system dial-stdio`
    /// (what `docker -H ssh://` does), which finds the engine as the login's `docker`
    /// CLI would.
    pub async fn docker_stream(&self, socket: &str) -> Result<ChannelStream, std::io::Error> {
        use std::sync::atomic::Ordering;
        let lost = |e: russh::Error| std::io::Error::other(format!("{}: {e}", self.host));
        if !self.no_streamlocal.load(Ordering::Relaxed) {
            match self.handle.channel_open_direct_streamlocal(socket).await {
                Ok(channel) => return Ok(channel.into_stream()),
                Err(russh::Error::ChannelOpenFailure(reason)) => {
                    tracing::info!(host = %self.host, ?reason, "socket forwarding refused: reaching the Docker Engine through `docker system dial-stdio`");
                    self.no_streamlocal.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(lost(e)),
            }
        }
        let channel = self.handle.channel_open_session().await.map_err(lost)?;
        channel
            .exec(true, "docker system dial-stdio")
            .await
            .map_err(lost)?;
        Ok(channel.into_stream())
    }

    /// A TCP stream to `host:port` as seen from the target (`direct-tcpip`, what `ssh -L`
    /// does): a health check reaches a port the new container publishes on the
    /// target's loopback.
    pub async fn tcp_stream(&self, host: &str, port: u16) -> Result<ChannelStream, ExecError> {
        let channel = self
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| ExecError::Connect {
                host: format!("{host} (through {})", self.host),
                port,
                detail: e.to_string().to_lowercase(),
            })?;
        Ok(channel.into_stream())
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

    /// An SFTP session on this connection.
    pub async fn files(&self) -> Result<RemoteFiles, ExecError> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.lost(&e))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| self.lost(&e))?;
        let raw = russh_sftp::client::RawSftpSession::new(channel.into_stream());
        RemoteFiles::start(raw, &self.host).await
    }

    /// Uploads `files` into `dir` over SFTP, each to a new temporary name created with
    /// `mode` (see [`RemoteFiles::upload`]); returns the temp paths in order. The caller
    /// renames them into place (`mv -f`, atomic) in its next command. With `owned`, the
    /// work dir's owner is checked first.
    pub async fn upload(
        &self,
        dir: &str,
        files: &[(&str, &[u8])],
        mode: u32,
        owned: Option<&CheckedDir>,
        ctx: &ExecContext,
        deadline: Instant,
    ) -> Result<Vec<String>, ExecError> {
        let upload = async {
            let sftp = self.files().await?;
            let temps = sftp.upload(dir, files, mode, owned).await;
            sftp.close();
            temps
        };
        self.within(deadline, ctx, "sftp upload", upload).await
    }

    /// The checked work dir of a target: `explicit`, or the default under the login
    /// user's home; created (0700) when missing.
    pub async fn prepare_work_dir(
        &self,
        explicit: Option<&UnixPath>,
        target: &Name,
        ctx: &ExecContext,
        deadline: Instant,
    ) -> Result<CheckedDir, ExecError> {
        let prepare = async {
            let sftp = self.files().await?;
            let checked = async {
                let path = sftp.work_dir_path(explicit, target).await?;
                sftp.prepare_work_dir(&path).await
            }
            .await;
            sftp.close();
            checked
        };
        self.within(deadline, ctx, "prepare the work dir", prepare)
            .await
    }

    /// The path of a target's work dir (`explicit`, or the default under the login
    /// user's home), without creating or checking it.
    pub async fn work_dir_path(
        &self,
        explicit: Option<&UnixPath>,
        target: &Name,
        ctx: &ExecContext,
        deadline: Instant,
    ) -> Result<String, ExecError> {
        if let Some(dir) = explicit {
            return Ok(dir.as_str().to_owned());
        }
        let resolve = async {
            let sftp = self.files().await?;
            let path = sftp.work_dir_path(None, target).await;
            sftp.close();
            path
        };
        self.within(deadline, ctx, "resolve the work dir", resolve)
            .await
    }

    async fn within<T>(
        &self,
        deadline: Instant,
        ctx: &ExecContext,
        what: &str,
        step: impl std::future::Future<Output = Result<T, ExecError>>,
    ) -> Result<T, ExecError> {
        match tokio::time::timeout_at(deadline, step).await {
            Ok(r) => r,
            Err(_) => Err(ExecError::Timeout {
                host: self.host.clone(),
                what: what.to_owned(),
                seconds: ctx.timeout.as_secs(),
            }),
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
