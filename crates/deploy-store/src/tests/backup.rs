//! Backup and restore of the SQLite file: a copy taken while transitions commit is one consistent commit's state, it round-trips, it is never readable by others; a restore checks before it moves anything, keeps a whole database at the path when it fails, refuses a database another connection has open, and keeps every database it replaces.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use deploy_core::testing::*;
use deploy_core::{DeploymentJob, JobEvent, TaskStatus};

use super::harness::{LIFECYCLE, new_job, seed_env, seed_release, sqlite};
use crate::{JobEventRecord, SqliteConfig, SqliteStore, Store, StoreError};

const TASKS: u64 = 400;

async fn events(store: &dyn Store, job: &DeploymentJob) -> Vec<JobEventRecord> {
    store.job_events(job.id, 0, 100_000).await.unwrap()
}

async fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(&SqliteConfig::new(path)).await.unwrap()
}

#[tokio::test]
async fn a_backup_taken_while_transitions_commit_is_consistent_and_round_trips() {
    let t = sqlite().await;
    let s = &*t.store;
    let (env, targets) = seed_env(s, 1, TASKS).await;
    let rel = seed_release(s, 1).await;
    let job = s
        .create_job(&new_job(s, 1, env, rel, &targets, 1).await)
        .await
        .unwrap()
        .value;
    let job = s
        .apply_job_event(job.id, job.version, JobEvent::Start, ts(1), "test")
        .await
        .unwrap();
    let source = t.locator().strip_prefix("sqlite:").unwrap().to_owned();
    let source = Path::new(&source);
    let out = deploy_testkit::temp_dir("deploy-store-backup-").unwrap();
    let mid = out.path().join("mid.sqlite");

    // Every task walks its lifecycle, concurrently, while the backup is taken.
    let writers: Vec<_> = job
        .tasks
        .iter()
        .map(|task| {
            let (store, id, version) = (t.store.clone(), task.id, task.version);
            tokio::spawn(async move {
                let mut v = version;
                for e in LIFECYCLE {
                    v = store
                        .apply_task_event(id, v, e, ts(2), "test")
                        .await
                        .unwrap()
                        .version;
                }
            })
        })
        .collect();
    while events(s, &job).await.len() < 300 {
        tokio::task::yield_now().await;
    }
    let info = SqliteStore::backup(source, &mid, false).await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(info.bytes, std::fs::metadata(&mid).unwrap().len());
    assert_eq!(info.schema_version, info.supported_version);
    assert_eq!(SqliteStore::check_file(&mid).await.unwrap(), info);

    // The copy mid-way: a prefix of the event log, and every task row as its last
    // event in the copy left it (rows and events of one commit).
    let all = events(s, &job).await;
    let copy = open(&mid).await;
    let copied = events(&copy, &job).await;
    assert!(
        copied.len() >= 300 && copied.len() < all.len(),
        "{} of {}",
        copied.len(),
        all.len()
    );
    assert_eq!(copied[..], all[..copied.len()]);
    let restored = copy.get_job(job.id).await.unwrap();
    for task in &restored.tasks {
        let last = copied
            .iter()
            .rev()
            .find(|e| e.task_id == Some(task.id))
            .map_or(TaskStatus::Pending.as_str(), |e| e.to_status.as_str());
        assert_eq!(task.status.as_str(), last, "task {}", task.id);
    }
    copy.close().await;

    // Once the writers are done, a backup holds exactly what the store holds.
    let end = out.path().join("end.sqlite");
    SqliteStore::backup(source, &end, false).await.unwrap();
    let copy = open(&end).await;
    assert_eq!(events(&copy, &job).await, all);
    assert_eq!(
        copy.get_job(job.id).await.unwrap(),
        s.get_job(job.id).await.unwrap()
    );
    copy.close().await;

    // An existing target stays as it was unless replacing is asked for.
    let before = std::fs::read(&mid).unwrap();
    let err = SqliteStore::backup(source, &mid, false).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::File { source, .. }
        if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{err}"
    );
    assert_eq!(std::fs::read(&mid).unwrap(), before);
    SqliteStore::backup(source, &mid, true).await.unwrap();
    assert_ne!(std::fs::read(&mid).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "no temporary file is left: {names:?}"
    );
}

#[tokio::test]
async fn a_restore_checks_the_backup_then_moves_the_database_aside() {
    let t = sqlite().await;
    let (env, targets) = seed_env(&*t.store, 1, 3).await;
    let rel = seed_release(&*t.store, 1).await;
    let job = t
        .store
        .create_job(&new_job(&*t.store, 1, env, rel, &targets, 1).await)
        .await
        .unwrap()
        .value;
    let source = t.locator().strip_prefix("sqlite:").unwrap().to_owned();
    let dir = deploy_testkit::temp_dir("deploy-store-restore-").unwrap();
    let backup = dir.path().join("backup.sqlite");
    SqliteStore::backup(Path::new(&source), &backup, false)
        .await
        .unwrap();

    // Not a database, not ours: refused, and nothing is moved.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let database = data.join("deployd.sqlite");
    let current = open(&database).await;
    current.close().await;
    std::fs::write(data.join("deployd.sqlite-wal"), b"old wal").unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "not a database, though long enough to look like one ".repeat(100),
    )
    .unwrap();
    let foreign = dir.path().join("foreign.sqlite");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}?mode=rwc", foreign.display()))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (x)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    for (file, expected) in [
        (&text, "it is not a readable SQLite database"),
        (&foreign, "no `_sqlx_migrations` table"),
    ] {
        let err = SqliteStore::restore(file, &database, "s", false)
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StoreError::NotABackup { .. }), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(message.contains(&file.display().to_string()), "{message}");
    }
    // A backup with commits still in its WAL: the file alone would lose them.
    let live_wal = dir.path().join("backup.sqlite-wal");
    std::fs::write(&live_wal, b"commits").unwrap();
    let err = SqliteStore::restore(&backup, &database, "s", false)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("backup.sqlite-wal` beside it"),
        "{err}"
    );
    std::fs::remove_file(&live_wal).unwrap();
    // (A `-shm` may or may not be left by the closed store: SQLite's to decide.)
    let mut names: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.ends_with("-shm"))
        .collect();
    names.sort();
    assert_eq!(names, ["deployd.sqlite", "deployd.sqlite-wal"]);

    let restored = SqliteStore::restore(&backup, &database, "20261206T110000Z", false)
        .await
        .unwrap();
    let aside = data.join("deployd.sqlite.before-restore-20261206T110000Z");
    assert_eq!(restored.moved_aside.as_deref(), Some(aside.as_path()));
    assert!(aside.is_file());
    // The old database was checkpointed out of WAL (the bytes above are no valid WAL,
    // so SQLite ignored them): no -wal is left to be replayed into the new file.
    assert!(!data.join("deployd.sqlite-wal").exists());
    assert!(
        !data
            .join("deployd.sqlite.before-restore-20261206T110000Z-wal")
            .exists()
    );
    SqliteStore::check_file(&aside).await.unwrap();
    let store = open(&database).await;
    assert_eq!(
        store.get_job(job.id).await.unwrap(),
        t.store.get_job(job.id).await.unwrap()
    );
    store.close().await;
}

/// The file names in `dir`, sorted, without SQLite's `-shm` index (whether a closed
/// connection leaves one behind is SQLite's business, not the code under test).
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.ends_with("-shm"))
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A store's database (one job in it) and a backup of it, in a new directory.
struct Fixture {
    dir: tempfile::TempDir,
    backup: PathBuf,
    job: deploy_core::JobId,
}

async fn fixture() -> Fixture {
    let t = sqlite().await;
    let (env, targets) = seed_env(&*t.store, 1, 2).await;
    let rel = seed_release(&*t.store, 1).await;
    let job = t
        .store
        .create_job(&new_job(&*t.store, 1, env, rel, &targets, 1).await)
        .await
        .unwrap()
        .value;
    let source = t.locator().strip_prefix("sqlite:").unwrap().to_owned();
    let dir = deploy_testkit::temp_dir("deploy-store-restore-").unwrap();
    let backup = dir.path().join("backup.sqlite");
    SqliteStore::backup(Path::new(&source), &backup, false)
        .await
        .unwrap();
    Fixture {
        dir,
        backup,
        job: job.id,
    }
}

#[tokio::test]
async fn a_backup_is_private_from_its_first_byte_and_leaves_nothing_when_it_fails() {
    let f = fixture().await;
    // VACUUM INTO wrote into the empty 0600 file created first.
    assert_eq!(mode(&f.backup), 0o600);
    assert_eq!(names(f.dir.path()), ["backup.sqlite"]);
    let copy = f.dir.path().join("copy.sqlite");
    SqliteStore::backup(&f.backup, &copy, false).await.unwrap();
    assert_eq!(mode(&copy), 0o600);
    let copy = open(&copy).await;
    assert!(copy.get_job(f.job).await.is_ok());
    copy.close().await;

    // A source that is no database: the copy fails, and its temporary file goes.
    let text = f.dir.path().join("notes.txt");
    std::fs::write(&text, "not a database ".repeat(100)).unwrap();
    let out = f.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    SqliteStore::backup(&text, &out.join("b.sqlite"), false)
        .await
        .unwrap_err();
    assert!(names(&out).is_empty(), "{:?}", names(&out));
}

#[tokio::test]
async fn a_restore_that_fails_at_its_last_step_leaves_the_database_in_place() {
    let f = fixture().await;
    let database = f.dir.path().join("deployd.sqlite");
    let current = open(&database).await;
    current.close().await;
    let err = SqliteStore::restore_failing(&f.backup, &database, "s", false, true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("failure injected"), "{err}");
    assert_eq!(
        names(f.dir.path()),
        ["backup.sqlite", "deployd.sqlite"],
        "no temporary file, no link aside is left"
    );
    let store = open(&database).await;
    assert!(
        store.get_job(f.job).await.is_err(),
        "still the old database"
    );
    store.close().await;
}

#[tokio::test]
async fn a_restore_refuses_a_database_that_another_connection_has_open() {
    let f = fixture().await;
    let database = f.dir.path().join("deployd.sqlite");
    let live = open(&database).await;
    let err = SqliteStore::restore(&f.backup, &database, "s", false)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DatabaseBusy { .. }), "{err}");
    assert!(
        err.to_string().contains("a deployd may be running"),
        "{err}"
    );
    assert!(
        err.to_string().contains(&database.display().to_string()),
        "{err}"
    );
    assert!(live.get_job(f.job).await.is_err(), "it still works");
    live.close().await;
    assert!(
        !names(f.dir.path())
            .iter()
            .any(|n| n.contains("before-restore"))
    );
}

/// A store closed right after a read used to keep that read's connection open (sqlx
/// puts a connection on its way back in the idle queue of a pool closed meanwhile):
/// its database must be free the moment `close` returns, with no retry.
#[tokio::test]
async fn a_store_closed_right_after_a_read_leaves_its_database_free_at_once() {
    let f = fixture().await;
    let database = f.dir.path().join("deployd.sqlite");
    for round in 0..20 {
        let store = open(&database).await;
        assert!(store.get_job(f.job).await.is_err(), "an empty database");
        store.close().await;
        if let Err(e) = crate::sqlite_file::quiesce(&database).await {
            panic!("round {round}: the closed store still holds the database: {e}");
        }
    }
}

#[tokio::test]
async fn restores_in_the_same_second_keep_every_database_they_replace() {
    let f = fixture().await;
    let database = f.dir.path().join("deployd.sqlite");
    let empty = open(&database).await;
    empty.close().await;
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o640)).unwrap();
    let stamp = "20261206T110000Z";
    let one = SqliteStore::restore(&f.backup, &database, stamp, false)
        .await
        .unwrap();
    assert_eq!(one.owner_not_set, None);
    assert_eq!(mode(&database), 0o640, "the mode of the file it replaced");
    let two = SqliteStore::restore(&f.backup, &database, stamp, false)
        .await
        .unwrap();
    let aside = f
        .dir
        .path()
        .join(format!("deployd.sqlite.before-restore-{stamp}"));
    let aside_2 = f
        .dir
        .path()
        .join(format!("deployd.sqlite.before-restore-{stamp}-2"));
    assert_eq!(one.moved_aside.as_deref(), Some(aside.as_path()));
    assert_eq!(two.moved_aside.as_deref(), Some(aside_2.as_path()));
    let store = open(&aside).await;
    assert!(store.get_job(f.job).await.is_err(), "the empty database");
    store.close().await;
    let store = open(&aside_2).await;
    assert!(
        store.get_job(f.job).await.is_ok(),
        "the first restore's database"
    );
    store.close().await;
}

#[tokio::test]
async fn a_corrupt_database_is_replaced_only_with_force() {
    let f = fixture().await;
    let database = f.dir.path().join("deployd.sqlite");
    let garbage = "not a database at all ".repeat(200);
    std::fs::write(&database, &garbage).unwrap();
    std::fs::write(f.dir.path().join("deployd.sqlite-wal"), [7u8; 4096]).unwrap();
    let err = SqliteStore::restore(&f.backup, &database, "s", false)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::CurrentUnreadable { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&database).unwrap(), garbage);

    let restored = SqliteStore::restore(&f.backup, &database, "s", true)
        .await
        .unwrap();
    let aside = restored.moved_aside.unwrap();
    assert_eq!(std::fs::read_to_string(&aside).unwrap(), garbage);
    assert_eq!(
        std::fs::read(f.dir.path().join("deployd.sqlite.before-restore-s-wal")).unwrap(),
        [7u8; 4096]
    );
    assert!(!f.dir.path().join("deployd.sqlite-wal").exists());
    let store = open(&database).await;
    assert!(store.get_job(f.job).await.is_ok());
    store.close().await;
}
