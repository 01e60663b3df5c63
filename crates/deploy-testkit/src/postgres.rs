//! A throwaway PostgreSQL cluster: `initdb` + `pg_ctl` on a free loopback port in a temp dir, as a non-root user, stopped on drop.

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::errors::TestkitError;
use crate::process::{free_port, require_program, temp_dir};

/// The system user the cluster runs as when the tests run as root (PostgreSQL refuses root).
pub const POSTGRES_TEST_USER: &str = "deploytest";

const HINT: &str = "`apt-get install postgresql` (scripts/peers/store.sh does)";

/// A running PostgreSQL cluster with one database, `deploy`, reachable on 127.0.0.1.
///
/// The superuser is `postgres`, authentication is `trust` (loopback only).
/// The cluster is stopped (`pg_ctl stop -m immediate`) and its files removed on drop.
#[derive(Debug)]
pub struct Postgres {
    dir: TempDir,
    port: u16,
    pg_ctl: PathBuf,
    run_as: Option<String>,
    /// The server options (`pg_ctl -o`), the same on every start.
    settings: String,
}

impl Postgres {
    /// A cluster tuned for tests: `fsync=off`, `synchronous_commit=off` (a crash of
    /// the server may lose data; a crash of a client never does).
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(false, None)
    }

    /// A cluster with PostgreSQL's durable defaults (`fsync=on`, `synchronous_commit=on`), for benchmarks.
    pub fn start_durable() -> Result<Self, TestkitError> {
        Self::start_with(true, None)
    }

    /// Like [`Postgres::start`], with `ssl = on` serving `cert` and `key` (PEM; copied
    /// into the cluster's directory, the key with mode 0600 as PostgreSQL demands).
    /// Plain connections are still accepted, so a client's `sslmode` decides.
    pub fn start_tls(cert: &Path, key: &Path) -> Result<Self, TestkitError> {
        Self::start_with(false, Some((cert, key)))
    }

    fn start_with(durable: bool, tls: Option<(&Path, &Path)>) -> Result<Self, TestkitError> {
        let bin_dirs = postgres_bin_dirs();
        let bin_dirs: Vec<&str> = bin_dirs.iter().map(String::as_str).collect();
        let initdb = require_program("initdb", &bin_dirs, HINT)?;
        let pg_ctl = require_program("pg_ctl", &bin_dirs, HINT)?;
        // Resolve symlinks (e.g. /usr/local/bin/pg_ctl): createdb and psql sit beside the real one.
        let pg_ctl = std::fs::canonicalize(&pg_ctl)
            .map_err(TestkitError::io(format!("resolve {}", pg_ctl.display())))?;
        let run_as = if is_root()? {
            ensure_test_user()?;
            Some(POSTGRES_TEST_USER.to_owned())
        } else {
            None
        };
        let dir = temp_dir("deploy-pg-")?;
        if run_as.is_some() {
            let (uid, gid) = user_ids(POSTGRES_TEST_USER)?;
            chown(dir.path(), Some(uid), Some(gid))
                .map_err(TestkitError::io(format!("chown {}", dir.path().display())))?;
        }
        let data = dir.path().join("data");
        let mut init = command(run_as.as_deref(), &initdb);
        init.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
        ]);
        checked(init, "initdb")?;
        let tls_settings = match tls {
            Some((cert, key)) => install_tls_files(dir.path(), cert, key, run_as.is_some())?,
            None => String::new(),
        };
        let mut last_error = None;
        // The free port may be taken between the probe and the bind: try a few.
        for _ in 0..3 {
            let port = free_port()?;
            let mut settings = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                dir.path().display()
            );
            if !durable {
                settings
                    .push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
            }
            settings.push_str(&tls_settings);
            let mut start = command(run_as.as_deref(), &pg_ctl);
            start
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("server.log"))
                .args(["-w", "-t", "30", "-o", &settings, "start"]);
            match checked(start, "pg_ctl start") {
                Ok(_) => {
                    let pg = Self {
                        dir,
                        port,
                        pg_ctl,
                        run_as,
                        settings,
                    };
                    pg.create_database("deploy")?;
                    return Ok(pg);
                }
                Err(e) => last_error = Some(e),
            }
        }
        let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
        Err(TestkitError::NotReady {
            what: "PostgreSQL".to_owned(),
            seconds: 30,
            detail: format!(
                "{}; server log: {}",
                last_error.map(|e| e.to_string()).unwrap_or_default(),
                log.trim()
            ),
        })
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The url of the `deploy` database.
    pub fn url(&self) -> String {
        self.database_url("deploy")
    }

    /// The url of database `name` on this cluster.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` and returns its url.
    pub fn create_database(&self, name: &str) -> Result<String, TestkitError> {
        let createdb = self.pg_ctl.with_file_name("createdb");
        let mut create = Command::new(&createdb);
        create
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(name);
        checked(create, "createdb")?;
        Ok(self.database_url(name))
    }

    /// The cluster's directory (data, socket and server log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server with `pg_ctl stop -m fast` and waits until it is gone: every
    /// client connection is terminated (clients see the connection drop, as in a
    /// database restart or failover), open transactions are rolled back, and the port
    /// refuses connections until [`Postgres::start_again`].
    ///
    /// Fast, not immediate: immediate skips the shutdown checkpoint and makes the next
    /// start run crash recovery; with this cluster's `fsync=off` that recovery is the
    /// one case where committed data may be lost, which would make a "no corruption"
    /// check test PostgreSQL's settings instead of the client. Fast shutdown is what an
    /// operator's `systemctl restart postgresql` does.
    pub fn stop(&self) -> Result<(), TestkitError> {
        let mut stop = command(self.run_as.as_deref(), &self.pg_ctl);
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "-t", "30", "stop"]);
        checked(stop, "pg_ctl stop").map(|_| ())
    }

    /// Starts the stopped server again on the same data directory and port (and
    /// the same settings); waits until it accepts connections.
    pub fn start_again(&self) -> Result<(), TestkitError> {
        let mut start = command(self.run_as.as_deref(), &self.pg_ctl);
        start
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "30", "-o", &self.settings, "start"]);
        checked(start, "pg_ctl start")
            .map(|_| ())
            .map_err(|e| TestkitError::NotReady {
                what: format!("PostgreSQL on port {} (restart)", self.port),
                seconds: 30,
                detail: format!(
                    "{e}; server log: {}",
                    std::fs::read_to_string(self.dir.path().join("server.log"))
                        .unwrap_or_default()
                        .trim()
                ),
            })
    }

    /// [`Postgres::stop`], `down` of downtime, then [`Postgres::start_again`].
    pub fn restart(&self, down: std::time::Duration) -> Result<(), TestkitError> {
        self.stop()?;
        std::thread::sleep(down);
        self.start_again()
    }

    /// Runs one SQL statement with `psql` on the `deploy` database and returns its
    /// rows, unaligned, `|`-separated (`psql -At`).
    pub fn query(&self, sql: &str) -> Result<String, TestkitError> {
        self.query_in("deploy", sql)
    }

    /// [`Postgres::query`] on database `name`.
    pub fn query_in(&self, name: &str, sql: &str) -> Result<String, TestkitError> {
        self.psql(name, &["-At", "-c", sql])
    }

    /// Runs the SQL file `file` (a plain `pg_dump`, with psql's meta-commands) on
    /// database `name`, stopping at the first error.
    pub fn run_file(&self, name: &str, file: &Path) -> Result<(), TestkitError> {
        self.psql(name, &["-q", "-f", &file.display().to_string()])
            .map(drop)
    }

    /// `psql -X -v ON_ERROR_STOP=1 ARGS… URL` with this cluster's own psql: its stdout.
    fn psql(&self, name: &str, args: &[&str]) -> Result<String, TestkitError> {
        let mut psql = Command::new(self.pg_ctl.with_file_name("psql"));
        psql.args(["-X", "-v", "ON_ERROR_STOP=1"])
            .args(args)
            .arg(self.database_url(name));
        checked(psql, "psql").map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut stop = command(self.run_as.as_deref(), &self.pg_ctl);
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        // Nothing to report to in a destructor; the temp dir is removed either way.
        let _ = stop.output();
    }
}

/// `/usr/lib/postgresql/<version>/bin`, newest version first (Debian keeps the server there).
fn postgres_bin_dirs() -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin").display().to_string())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort_by(|a, b| b.cmp(a));
    dirs
}

/// Copies the server certificate and key into `dir` (owned by the test user when the
/// cluster runs as it) and returns the server options that serve them.
fn install_tls_files(
    dir: &Path,
    cert: &Path,
    key: &Path,
    as_test_user: bool,
) -> Result<String, TestkitError> {
    use std::os::unix::fs::PermissionsExt as _;
    let (cert_to, key_to) = (dir.join("server.crt"), dir.join("server.key"));
    for (from, to, mode) in [(cert, &cert_to, 0o644), (key, &key_to, 0o600)] {
        std::fs::copy(from, to).map_err(TestkitError::io(format!("copy {}", from.display())))?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
            .map_err(TestkitError::io(format!("chmod {}", to.display())))?;
        if as_test_user {
            let (uid, gid) = user_ids(POSTGRES_TEST_USER)?;
            chown(to, Some(uid), Some(gid))
                .map_err(TestkitError::io(format!("chown {}", to.display())))?;
        }
    }
    Ok(format!(
        " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        cert_to.display(),
        key_to.display()
    ))
}

fn command(run_as: Option<&str>, program: &Path) -> Command {
    match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn checked(mut command: Command, what: &str) -> Result<Output, TestkitError> {
    let output = command
        .output()
        .map_err(TestkitError::io(format!("run {what}")))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(TestkitError::Io {
            action: format!("run {what} ({})", output.status),
            source: std::io::Error::other(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        })
    }
}

fn id_output(args: &[&str]) -> Result<Option<u32>, TestkitError> {
    let output = Command::new("id")
        .args(args)
        .output()
        .map_err(TestkitError::io("run id"))?;
    if !output.status.success() {
        return Ok(None);
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse().ok())
}

fn is_root() -> Result<bool, TestkitError> {
    Ok(id_output(&["-u"])? == Some(0))
}

fn user_ids(user: &str) -> Result<(u32, u32), TestkitError> {
    let missing = || TestkitError::MissingProgram {
        program: format!("user {user}"),
        hint: "`useradd --system deploytest` (scripts/peers/store.sh does)".to_owned(),
    };
    let uid = id_output(&["-u", user])?.ok_or_else(missing)?;
    let gid = id_output(&["-g", user])?.ok_or_else(missing)?;
    Ok((uid, gid))
}

/// Creates the test user if absent (scripts/peers/store.sh normally has).
fn ensure_test_user() -> Result<(), TestkitError> {
    if id_output(&["-u", POSTGRES_TEST_USER])?.is_some() {
        return Ok(());
    }
    // Parallel tests may race here; whoever loses finds the user afterwards.
    let _ = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .arg(POSTGRES_TEST_USER)
        .output();
    user_ids(POSTGRES_TEST_USER).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_accepts_connections_and_stops_on_drop() {
        let pg = Postgres::start().unwrap();
        let psql = pg.pg_ctl.with_file_name("psql");
        let out = Command::new(&psql)
            .args(["-At", "-c", "SELECT current_database()", &pg.url()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "deploy");
        // Stopped: the port refuses; started again: same port, same data.
        pg.query("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
            .unwrap();
        pg.stop().unwrap();
        assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_err());
        assert!(pg.query("SELECT 1").is_err());
        pg.start_again().unwrap();
        assert_eq!(pg.query("SELECT v FROM kept").unwrap().trim(), "7");
        pg.restart(std::time::Duration::from_millis(100)).unwrap();
        assert_eq!(pg.query("SELECT v FROM kept").unwrap().trim(), "7");
        let dir = pg.dir().to_path_buf();
        let port = pg.port();
        drop(pg);
        assert!(!dir.exists(), "the cluster's files are removed");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the server is stopped"
        );
    }
}
