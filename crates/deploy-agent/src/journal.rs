//! `Journal`: one small JSON file per task key in `<state-dir>/journal/`, written atomically, so a redelivered key is never executed twice and unacknowledged results survive a restart.
//!
//! Life of a key: `begin` writes it *started* before anything runs; `finish` adds the
//! result and the log lines not yet acknowledged; `acknowledge` marks it delivered; `prune`
//! removes delivered entries after a day. A key found started but not finished was cut
//! by an agent crash: it is answered with a retryable `interrupted` failure and never run
//! again (the host may be half-way; the server retries with a new attempt, and the
//! deploy sequence is idempotent).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deploy_api::agent::{
    AGENT_PROTOCOL_VERSION, AgentError, AgentErrorCode, AgentLogLine, TaskKey, TaskOutcome,
    TaskResultRequest,
};
use deploy_core::Name;
use serde::{Deserialize, Serialize};

use crate::errors::AgentRunError;

/// How long an acknowledged entry is kept (a redelivery after that is not expected).
pub const KEEP_ACKNOWLEDGED: Duration = Duration::from_secs(24 * 3600);

/// One key's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalEntry {
    pub key: TaskKey,
    /// The action's wire name (for messages).
    pub action: String,
    pub started_at_ms: u64,
    #[serde(default)]
    pub finished: Option<Finished>,
    /// For a docker_host deploy or rollback: what a crash halfway leaves to put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

/// The container slot a docker_host deploy or rollback works on: after an agent crash
/// in the middle (between the two renames), `<container>` may be missing and
/// `<container>-next` left over; the next start puts `-previous` back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repair {
    pub container: Name,
    pub target: Name,
}

/// What [`Journal::recover`] found at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Finished entries whose result the server has not acknowledged (to re-send).
    pub outbox: Vec<JournalEntry>,
    /// Slots of the deploys and rollbacks the crash cut, to repair on the host.
    pub repairs: Vec<(TaskKey, Repair)>,
}

/// The end of a key: its result and what of its log the server may still lack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finished {
    pub result: TaskResultRequest,
    pub finished_at_ms: u64,
    /// When the server acknowledged the result (or answered 404 for the key).
    #[serde(default)]
    pub acknowledged_at_ms: Option<u64>,
    /// Sequence number of `logs[0]`.
    #[serde(default)]
    pub logs_first_seq: u64,
    /// Log lines not acknowledged when the key finished (already redacted).
    #[serde(default)]
    pub logs: Vec<AgentLogLine>,
}

/// What `begin` found for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// New: recorded as started; execute it.
    Fresh,
    /// Already finished: send its stored result again, do not execute.
    Finished(Box<JournalEntry>),
    /// Started by an earlier run of the agent that died: now finished as `interrupted`.
    Interrupted(Box<JournalEntry>),
}

/// The journal directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

/// The retryable failure reported for a key cut by an agent crash.
pub fn interrupted(action: &str) -> TaskResultRequest {
    TaskResultRequest {
        protocol: AGENT_PROTOCOL_VERSION,
        log_lines: 0,
        outcome: TaskOutcome::Failed {
            error: AgentError {
                code: AgentErrorCode::Interrupted,
                message: format!(
                    "finish {action}: the agent stopped while it ran; it was not run again"
                ),
            },
            previous_digest: None,
        },
    }
}

/// Writes `bytes` to `path` atomically: a temp file beside it, fsync, rename, fsync of the dir.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AgentRunError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{file_name}.tmp-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(AgentRunError::io("create", &temp))?;
        f.write_all(bytes)
            .map_err(AgentRunError::io("write", &temp))?;
        f.sync_all().map_err(AgentRunError::io("fsync", &temp))?;
        fs::rename(&temp, path).map_err(AgentRunError::io("rename into place", path))?;
        // The rename itself must survive a power cut.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

impl Journal {
    /// Opens (creating, mode 0700) `<state_dir>/journal`.
    pub fn open(state_dir: &Path) -> Result<Self, AgentRunError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = state_dir.join("journal");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(AgentRunError::io("create the journal directory", &dir))?;
        Ok(Self { dir })
    }

    /// Runs `f` (journal reads and writes) on tokio's blocking pool: every write fsyncs
    /// the file and its directory, and `prune` reads every entry; on the async workers
    /// that would stall the poll loop (the heartbeat), the tasks and the flusher.
    pub async fn run_blocking<T, F>(&self, f: F) -> Result<T, AgentRunError>
    where
        T: Send + 'static,
        F: FnOnce(&Self) -> Result<T, AgentRunError> + Send + 'static,
    {
        let journal = self.clone();
        tokio::task::spawn_blocking(move || f(&journal))
            .await
            .map_err(|e| AgentRunError::Io {
                action: "run a journal operation in",
                path: self.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    fn path(&self, key: &TaskKey) -> PathBuf {
        self.dir
            .join(format!("{}-{}.json", key.task_id, key.attempt))
    }

    /// The entry of `key`, if any.
    pub fn read(&self, key: &TaskKey) -> Result<Option<JournalEntry>, AgentRunError> {
        Self::read_path(&self.path(key))
    }

    fn read_path(path: &Path) -> Result<Option<JournalEntry>, AgentRunError> {
        match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| AgentRunError::Corrupt {
                        path: path.to_owned(),
                        detail: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AgentRunError::io("read", path)(e)),
        }
    }

    fn write(&self, entry: &JournalEntry) -> Result<(), AgentRunError> {
        let path = self.path(&entry.key);
        let bytes = serde_json::to_vec(entry).map_err(|e| AgentRunError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        write_atomically(&path, &bytes, 0o600)
    }

    /// Records `key` as started, unless it is known (see [`Begin`]).
    pub fn begin(&self, key: &TaskKey, action: &str, now_ms: u64) -> Result<Begin, AgentRunError> {
        self.begin_with(key, action, None, now_ms)
    }

    /// [`Journal::begin`], keeping what a crash would leave to repair.
    pub fn begin_with(
        &self,
        key: &TaskKey,
        action: &str,
        repair: Option<Repair>,
        now_ms: u64,
    ) -> Result<Begin, AgentRunError> {
        match self.read(key)? {
            Some(entry) if entry.finished.is_some() => Ok(Begin::Finished(Box::new(entry))),
            Some(entry) => {
                let entry = self.finish_interrupted(entry, now_ms)?;
                Ok(Begin::Interrupted(Box::new(entry)))
            }
            None => {
                self.write(&JournalEntry {
                    key: *key,
                    action: action.to_owned(),
                    started_at_ms: now_ms,
                    finished: None,
                    repair,
                })?;
                Ok(Begin::Fresh)
            }
        }
    }

    fn finish_interrupted(
        &self,
        mut entry: JournalEntry,
        now_ms: u64,
    ) -> Result<JournalEntry, AgentRunError> {
        entry.finished = Some(Finished {
            result: interrupted(&entry.action),
            finished_at_ms: now_ms,
            acknowledged_at_ms: None,
            logs_first_seq: 0,
            logs: Vec::new(),
        });
        self.write(&entry)?;
        Ok(entry)
    }

    /// Records the result of `key` and its unacknowledged log lines.
    pub fn finish(
        &self,
        key: &TaskKey,
        result: TaskResultRequest,
        logs_first_seq: u64,
        logs: Vec<AgentLogLine>,
        now_ms: u64,
    ) -> Result<JournalEntry, AgentRunError> {
        let mut entry = self.read(key)?.unwrap_or_else(|| JournalEntry {
            key: *key,
            action: String::new(),
            started_at_ms: now_ms,
            finished: None,
            repair: None,
        });
        entry.finished = Some(Finished {
            result,
            finished_at_ms: now_ms,
            acknowledged_at_ms: None,
            logs_first_seq,
            logs,
        });
        self.write(&entry)?;
        Ok(entry)
    }

    /// The server has the result of `key` (or does not know the key): nothing more to send.
    pub fn acknowledge(&self, key: &TaskKey, now_ms: u64) -> Result<(), AgentRunError> {
        if let Some(mut entry) = self.read(key)?
            && let Some(f) = entry.finished.as_mut()
            && f.acknowledged_at_ms.is_none()
        {
            f.acknowledged_at_ms = Some(now_ms);
            f.logs.clear();
            self.write(&entry)?;
        }
        Ok(())
    }

    fn entries(&self) -> Result<Vec<(PathBuf, JournalEntry)>, AgentRunError> {
        let mut out = Vec::new();
        let dir = fs::read_dir(&self.dir).map_err(AgentRunError::io("list", &self.dir))?;
        for item in dir {
            let path = item.map_err(AgentRunError::io("list", &self.dir))?.path();
            let is_entry = path.extension().is_some_and(|e| e == "json")
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !is_entry {
                continue;
            }
            match Self::read_path(&path) {
                Ok(Some(entry)) => out.push((path, entry)),
                Ok(None) => {}
                // One unreadable file must not stop the agent: it is reported and skipped.
                Err(e) => tracing::warn!("skipping a journal entry: {e}"),
            }
        }
        Ok(out)
    }

    /// At start: keys left started by a crash become `interrupted`; returns every finished
    /// entry whose result the server has not acknowledged (the outbox to re-send) and the
    /// slots the crash may have left half-swapped.
    pub fn recover(&self, now_ms: u64) -> Result<Recovered, AgentRunError> {
        let mut outbox = Vec::new();
        let mut repairs = Vec::new();
        for (_, entry) in self.entries()? {
            let entry = if entry.finished.is_none() {
                tracing::info!(
                    task = %entry.key.task_id, attempt = entry.key.attempt,
                    "{} was cut by an agent stop: reporting it interrupted", entry.action
                );
                if let Some(r) = &entry.repair {
                    repairs.push((entry.key, r.clone()));
                }
                self.finish_interrupted(entry, now_ms)?
            } else {
                entry
            };
            if entry
                .finished
                .as_ref()
                .is_some_and(|f| f.acknowledged_at_ms.is_none())
            {
                outbox.push(entry);
            }
        }
        outbox.sort_by_key(|e| e.started_at_ms);
        Ok(Recovered { outbox, repairs })
    }

    /// Removes acknowledged entries older than `keep`; returns how many.
    pub fn prune(&self, now_ms: u64, keep: Duration) -> Result<usize, AgentRunError> {
        let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        let mut removed = 0;
        for (path, entry) in self.entries()? {
            let acked = entry.finished.as_ref().and_then(|f| f.acknowledged_at_ms);
            if acked.is_some_and(|at| now_ms.saturating_sub(at) > keep_ms) {
                fs::remove_file(&path).map_err(AgentRunError::io("remove", &path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_api::agent::LogStream;
    use deploy_core::testing::{digest, task_id};

    fn key(n: u64) -> TaskKey {
        TaskKey {
            task_id: task_id(n),
            attempt: 1,
        }
    }

    fn inspected(n: u64) -> TaskResultRequest {
        TaskResultRequest {
            protocol: AGENT_PROTOCOL_VERSION,
            log_lines: 2,
            outcome: TaskOutcome::Inspected {
                digest: Some(digest(n)),
                published: Vec::new(),
            },
        }
    }

    #[test]
    fn a_redelivered_finished_key_gives_the_same_result() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.begin(&key(1), "inspect", 10).unwrap(), Begin::Fresh);
        let line = AgentLogLine {
            stream: LogStream::Agent,
            text: "x".to_owned(),
        };
        j.finish(&key(1), inspected(1), 1, vec![line.clone()], 20)
            .unwrap();
        // Reopened (a restart): the key is finished, with its result and pending line.
        let j = Journal::open(dir.path()).unwrap();
        match j.begin(&key(1), "inspect", 30).unwrap() {
            Begin::Finished(e) => {
                let f = e.finished.unwrap();
                assert_eq!(f.result, inspected(1));
                assert_eq!((f.logs_first_seq, f.logs), (1, vec![line]));
            }
            other => panic!("{other:?}"),
        }
        // Another attempt of the same task is a new key.
        let other = TaskKey {
            task_id: task_id(1),
            attempt: 2,
        };
        assert_eq!(j.begin(&other, "inspect", 30).unwrap(), Begin::Fresh);
    }

    #[test]
    fn a_key_cut_by_a_crash_is_interrupted_and_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.begin(&key(2), "deploy", 10).unwrap(), Begin::Fresh);
        // The agent dies here; the server redelivers the key.
        let j = Journal::open(dir.path()).unwrap();
        let Begin::Interrupted(e) = j.begin(&key(2), "deploy", 20).unwrap() else {
            panic!("expected interrupted");
        };
        let outcome = e.finished.unwrap().result.outcome;
        match outcome {
            TaskOutcome::Failed { error, .. } => {
                assert_eq!(error.code, AgentErrorCode::Interrupted);
                assert!(error.code.is_retryable());
            }
            other => panic!("{other:?}"),
        }
        // Once more: now it is a finished key with that same answer.
        assert!(matches!(
            j.begin(&key(2), "deploy", 30).unwrap(),
            Begin::Finished(_)
        ));
    }

    #[test]
    fn recover_fills_the_outbox_and_prune_drops_old_acknowledged_entries() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let repair = Repair {
            container: deploy_core::testing::name("web"),
            target: deploy_core::testing::name("host-a"),
        };
        // Cut by a crash.
        j.begin_with(&key(1), "deploy", Some(repair.clone()), 1)
            .unwrap();
        j.begin(&key(2), "inspect", 2).unwrap();
        j.finish(&key(2), inspected(2), 0, Vec::new(), 3).unwrap(); // not acknowledged
        j.begin(&key(3), "inspect", 4).unwrap();
        j.finish(&key(3), inspected(3), 0, Vec::new(), 5).unwrap();
        j.acknowledge(&key(3), 6).unwrap();
        std::fs::write(dir.path().join("journal/garbage.json"), "{").unwrap();

        let Recovered { outbox, repairs } = j.recover(100).unwrap();
        assert_eq!(repairs, vec![(key(1), repair)]);
        // Finished now: a second start has nothing more to repair.
        assert!(j.recover(101).unwrap().repairs.is_empty());
        let keys: Vec<TaskKey> = outbox.iter().map(|e| e.key).collect();
        assert_eq!(keys, [key(1), key(2)]);
        assert_eq!(
            outbox[0].finished.as_ref().unwrap().result,
            interrupted("deploy")
        );

        let day = KEEP_ACKNOWLEDGED.as_millis() as u64;
        assert_eq!(j.prune(6 + day, KEEP_ACKNOWLEDGED).unwrap(), 0);
        assert_eq!(j.prune(7 + day, KEEP_ACKNOWLEDGED).unwrap(), 1);
        assert!(j.read(&key(3)).unwrap().is_none());
        assert!(j.read(&key(2)).unwrap().is_some());
    }

    #[test]
    fn files_are_private_and_no_temp_files_remain() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.begin(&key(1), "deploy", 1).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path().join("journal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let mode = std::fs::metadata(&names[0]).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
