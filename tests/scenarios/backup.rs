//! `deployd backup` while a 1,000-task job runs on a real deployd, and `deployd restore` of that backup: the restored database passes `PRAGMA integrity_check` and holds every event up to the backup point; restore refuses a running deployd's data dir and a file that is no database, backup an existing target.
//!
//! The job runs on simulated agents (`agent_load`'s, in this process), 100 tasks at a
//! time, each deploy holding for `HOLD` while it sends log lines, so events and log
//! chunks commit throughout the backup. The job's events are followed through the
//! API (`GET /api/v1/jobs/{id}/events`); the highest `seq` read just before the
//! backup starts is the backup point: those events were committed before it began.
//! The restored file is checked with the `sqlite3` CLI (from `sqlite3`, Debian
//! package `sqlite3`), then a deployd is started on it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deploy_testkit::{free_port, temp_dir};
use serde_json::Value;

use crate::agent_load::{Work, environment, register, run_agent};
use crate::deployd_proc::{ADMIN_TOKEN, Deployd, api_get, deployd_path, ok_json};

const TASKS: usize = 1_000;
const PARALLELISM: &str = "100";
const HOLD: Duration = Duration::from_millis(300);
/// Events the follower must have read before the backup: the job is well under way.
const EVENTS_BEFORE_BACKUP: usize = 1_500;

/// `deployd <args…>` (a subcommand), its environment cleared of deployd's settings.
pub(crate) fn deployd(args: &[&str], data_dir: &Path) -> Output {
    Command::new(deployd_path())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DEPLOYD_CONFIG")
        .env_remove("DEPLOYD_DATABASE_URL")
        .env_remove("DEPLOYD_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("deployd runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `sqlite3 -readonly file sql`: its stdout; panics naming the CLI when it is missing.
pub(crate) fn sqlite3(file: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg("-readonly")
        .arg(file)
        .arg(sql)
        .output()
        .unwrap_or_else(|e| {
            panic!("the `sqlite3` CLI (Debian package sqlite3) is needed to read a database: {e}")
        });
    assert!(out.status.success(), "sqlite3 {sql}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// One job event as compared: seq, event, task id (empty for the job), to status.
type Row = (u64, String, String, String);

/// Follows the job's events stream to its end, pushing each event into `seen`.
async fn follow(client: reqwest::Client, base: String, job: String, seen: Arc<Mutex<Vec<Row>>>) {
    let mut response = client
        .get(format!("{base}/api/v1/jobs/{job}/events"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut buffer = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            let Some(data) = message.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            if !message.lines().any(|l| l == "event: transition") {
                continue;
            }
            let e: Value = serde_json::from_str(data.trim()).unwrap();
            seen.lock().unwrap().push((
                e["seq"].as_u64().unwrap(),
                e["event"].as_str().unwrap().to_owned(),
                e["task_id"].as_str().unwrap_or("").to_owned(),
                e["to_status"].as_str().unwrap().to_owned(),
            ));
        }
    }
}

/// The job's events in the database file, oldest first.
fn stored_events(file: &Path, job: &str) -> Vec<Row> {
    sqlite3(
        file,
        &format!(
            "SELECT seq, event, COALESCE(task_id, ''), to_status FROM job_events \
             WHERE job_id = '{job}' ORDER BY seq"
        ),
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (f[0].parse().unwrap(), f[1].into(), f[2].into(), f[3].into())
    })
    .collect()
}

#[test]
#[expect(
    clippy::print_stdout,
    reason = "the test reports the backup's size and time (nextest --no-capture shows them)"
)]
fn backup_while_a_thousand_task_job_runs_and_restore_it() {
    let dir = temp_dir("backup-").unwrap();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let server = Deployd::start(dir.path(), free_port().unwrap(), &known_hosts, &[]);
    let (addr, data_dir) = (server.addr.clone(), dir.path().join("db"));
    let base = format!("http://{addr}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (env, release) = runtime.block_on(async {
        let agents = register(&client, &base, TASKS, "bk").await;
        let env = environment(&client, &base, &agents, "fleet").await;
        for agent in agents {
            let work = Work {
                hold: HOLD,
                lines: 3,
                ..Work::default()
            };
            let (client, base, stop) = (client.clone(), base.clone(), stop.clone());
            runtime.spawn(run_agent(client, base, agent, stop, work));
        }
        env
    });
    let job = ok_json(
        &addr,
        &[
            "deploy",
            "--release",
            &release,
            "--env",
            &env,
            "--parallelism",
            PARALLELISM,
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let follower = runtime.spawn(follow(
        client.clone(),
        base.clone(),
        job.clone(),
        seen.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.lock().unwrap().len() < EVENTS_BEFORE_BACKUP {
        assert!(Instant::now() < deadline, "the job's events did not come");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The backup point: every event read through the API so far was committed.
    let noted = seen.lock().unwrap().iter().map(|r| r.0).max().unwrap();
    let live_bytes = std::fs::metadata(data_dir.join("deployd.sqlite"))
        .unwrap()
        .len();
    let out_dir = temp_dir("backup-out-").unwrap();
    let backup = out_dir.path().join("deployd.sqlite.bak");
    let backup_arg = backup.to_str().unwrap();
    let started = Instant::now();
    let out = deployd(&["backup", "--to", backup_arg], &data_dir);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    let bytes = std::fs::metadata(&backup).unwrap().len();
    assert!(report.contains(&format!("{bytes} bytes")), "{report}");
    assert!(report.contains("schema version "), "{report}");
    let (status, running) = api_get(&addr, &format!("/api/v1/jobs/{job}"));
    assert_eq!(status, 200, "{running}");
    assert_eq!(
        running["status"], "running",
        "the job still runs after the backup"
    );

    // An existing target is refused (and left alone) without --force.
    let out = deployd(&["backup", "--to", backup_arg], &data_dir);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::metadata(&backup).unwrap().len(), bytes);
    // A restore over the running deployd's data dir is refused by its lock.
    let out = deployd(&["restore", "--from", backup_arg], &data_dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let refusal = text(&out.stderr);
    assert!(
        refusal.contains(&format!("another deployd (pid {})", server.pid())),
        "{refusal}"
    );
    assert!(
        std::fs::read_dir(&data_dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("before-restore")),
        "nothing was moved"
    );

    // The job ends; its full event log is what the backup's must be a prefix of.
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(180), follower)
            .await
            .expect("the job ends within 3 minutes")
            .unwrap();
    });
    stop.store(true, Ordering::Relaxed);
    let all = seen.lock().unwrap().clone();
    let (_, done) = api_get(&addr, &format!("/api/v1/jobs/{job}"));
    assert_eq!(done["status"], "completed", "{done}");

    // Restore into a fresh data dir; a file that is no database is refused first.
    let fresh = temp_dir("backup-restored-").unwrap();
    let fresh_data = fresh.path().join("db");
    let stderr_file = dir.path().join("deployd-stderr.txt");
    let out = deployd(
        &["restore", "--from", stderr_file.to_str().unwrap()],
        &fresh_data,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("it is not a readable SQLite database"),
        "{}",
        text(&out.stderr)
    );
    assert!(!fresh_data.join("deployd.sqlite").exists());
    let out = deployd(&["restore", "--from", backup_arg], &fresh_data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!(
            "there was no database at `{}` before",
            fresh_data.join("deployd.sqlite").display()
        )),
        "{}",
        text(&out.stdout)
    );
    let restored = fresh_data.join("deployd.sqlite");
    assert_eq!(sqlite3(&restored, "PRAGMA integrity_check").trim(), "ok");
    let events = stored_events(&restored, &job);
    let last = events.last().unwrap().0;
    assert!(
        last >= noted,
        "the backup ends at seq {last}, before {noted}"
    );
    // Every event up to the backup point, and no gap: exactly the log's first events.
    let expected: Vec<Row> = all.iter().filter(|r| r.0 <= last).cloned().collect();
    assert_eq!(events, expected);
    assert!(
        events.len() < all.len(),
        "the backup was taken mid-job: {} of {} events",
        events.len(),
        all.len()
    );

    // A deployd starts on it (with the secrets key file, kept apart from backups).
    std::fs::copy(data_dir.join("secrets.key"), fresh_data.join("secrets.key")).unwrap();
    let second = Deployd::start(fresh.path(), free_port().unwrap(), &known_hosts, &[]);
    let (status, job_there) = api_get(&second.addr, &format!("/api/v1/jobs/{job}"));
    assert_eq!(status, 200, "{job_there}");
    assert_eq!(job_there["status"], "running", "as it was at the backup");
    second.terminate();
    assert_eq!(sqlite3(&restored, "PRAGMA integrity_check").trim(), "ok");
    server.terminate();
    runtime.shutdown_timeout(Duration::from_secs(7));
    println!(
        "backup of a {TASKS}-task job mid-run: {bytes} bytes (live database file {live_bytes} \
         bytes) in {} ms (the `deployd backup` process, start to exit); {} of the job's {} \
         events in it, {} read through the API before it began",
        took.as_millis(),
        events.len(),
        all.len(),
        all.iter().filter(|r| r.0 <= noted).count()
    );
}
