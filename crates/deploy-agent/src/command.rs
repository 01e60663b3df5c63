//! health_command: runs an argv on the host (no shell) and reports its exit status and the head of its stdout.

use std::path::Path;
use std::process::Stdio;

use deploy_api::agent::LogStream;
use deploy_core::CommandSpec;
use tokio::io::AsyncReadExt;

use crate::errors::TaskError;
use crate::tasklog::TaskLog;

/// Most stdout bytes reported (the rest is read and dropped so the child never blocks).
pub const STDOUT_LIMIT: usize = 64 * 1024;

/// The exit status reported for a child killed by a signal: 128 + signal, as shells do.
fn exit_status(status: std::process::ExitStatus) -> u32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u32::try_from(code).unwrap_or(255),
        (None, Some(sig)) => 128 + u32::try_from(sig).unwrap_or(0),
        (None, None) => 255,
    }
}

/// The first [`STDOUT_LIMIT`] bytes of `reader`; the rest is read and dropped, so the
/// child never blocks on a full pipe.
async fn read_head<R: tokio::io::AsyncRead + Unpin>(reader: Option<&mut R>) -> Vec<u8> {
    let mut head = Vec::new();
    if let Some(r) = reader {
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = STDOUT_LIMIT.saturating_sub(head.len());
                    head.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
    }
    head
}

/// Runs `command` in `dir` (the target's `work_dir`: the health command runs in the
/// target's context, like the SSH executor's `cd` into it); stdout (head,
/// [`STDOUT_LIMIT`] bytes, redacted) is returned, stderr goes to the task log. The child
/// is killed when the task is dropped (timeout, cancel). A missing `dir` is a host error:
/// running elsewhere would give a verdict about another directory.
pub async fn run(
    command: &CommandSpec,
    dir: &Path,
    log: &TaskLog,
) -> Result<(u32, String), TaskError> {
    let argv = command.argv();
    let Some((program, args)) = argv.split_first() else {
        return Err(TaskError::invalid("run an empty command"));
    };
    if !tokio::fs::metadata(dir).await.is_ok_and(|m| m.is_dir()) {
        return Err(TaskError::host(
            "run the health command",
            format!(
                "the target's work_dir `{}` does not exist on this host (or is not a directory)",
                dir.display()
            ),
        ));
    }
    log.agent(&format!("running {} in {}", argv.join(" "), dir.display()));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| TaskError::host(&format!("start `{program}`"), e))?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (head, err) = tokio::join!(read_head(stdout.as_mut()), read_head(stderr.as_mut()));
    let status = child
        .wait()
        .await
        .map_err(|e| TaskError::host(&format!("wait for `{program}`"), e))?;
    log.line(LogStream::Stderr, &String::from_utf8_lossy(&err));
    let stdout = log.redactor().apply(&String::from_utf8_lossy(&head));
    let code = exit_status(status);
    log.agent(&format!("`{program}` exited with {code}"));
    Ok((code, stdout))
}
