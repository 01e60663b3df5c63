//! deployd's configuration: TOML file, then environment and flags (clap; flags win over env), validated at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use deploy_store::{PgConfig, SqliteConfig, StoreConfig};
use serde::Deserialize;

/// deployd: the deployment server (HTTP API under /api/v1 and the job engine).
///
/// With no configuration it keeps its SQLite database under ./deployd-data/ and
/// listens on 127.0.0.1:8080. On the first start with an empty database it
/// writes an admin API token to <data dir>/admin-token (mode 0600; only the path
/// is logged), or stores the one in DEPLOYD_ADMIN_TOKEN. Every admin token lost:
/// `deployd admin-token --help` creates one directly in the database.
/// `deployd backup --help` and `deployd restore --help`: a consistent copy of the
/// SQLite database while deployd runs, and putting one back. The web console is
/// under /ui/.
///
/// Examples:
///   deployd
///   deployd --listen 0.0.0.0:8080 --log-format json
///   deployd --database-url postgres://deploy@127.0.0.1:5432/deploy
///   deployd --database-url 'postgres://deploy@db.internal/deploy?sslmode=verify-full&sslrootcert=/etc/deployd/db-ca.pem'
///   deployd --config /etc/deployd.toml
#[derive(Debug, Parser)]
#[command(
    name = "deployd",
    version = env!("DEPLOY_BUILD_VERSION"),
    verbatim_doc_comment
)]
pub struct Args {
    /// TOML configuration file (keys: listen, database_url, data_dir, log_format, owner, known_hosts, max_body_bytes, secret_env_prefix, secrets_dir, secrets_key_file, agent_heartbeat_timeout_ms, job_lease_ms, tls_cert, tls_key, otlp_endpoint, otlp_service_name, otlp_resource_attributes, notify_timeout_ms, notify_backoff_initial_ms, notify_backoff_max_ms, notify_max_attempts, notify_max_age_ms).
    #[arg(long, env = "DEPLOYD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "DEPLOYD_LISTEN")]
    pub listen: Option<String>,
    /// `sqlite:PATH` or `postgres://user@host:port/db`; default: SQLite under the data dir.
    /// PostgreSQL over TLS: `?sslmode=verify-full&sslrootcert=/path/ca.pem` (sslmode:
    /// disable, prefer (default), require, verify-ca, verify-full; `require` with a CA
    /// verifies the chain). A bad sslmode or an unreadable CA file stops the start, named.
    #[arg(long, env = "DEPLOYD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory of the embedded database, the lease owner and the lock that keeps a
    /// second deployd off it (default ./deployd-data).
    #[arg(long, env = "DEPLOYD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "DEPLOYD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Name of this replica in job leases; must be unique among live replicas (a restart
    /// under the same owner resumes its jobs at once). Default: generated once and kept
    /// in the data dir's `owner` file.
    #[arg(long, env = "DEPLOYD_OWNER")]
    pub owner: Option<String>,
    /// known_hosts file for SSH targets (default ~/.ssh/known_hosts).
    #[arg(long, env = "DEPLOYD_KNOWN_HOSTS")]
    pub known_hosts: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, env = "DEPLOYD_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Targets' `env:NAME` credentials may only name variables starting with this
    /// prefix (default DEPLOY_), so an API caller cannot make deployd send any of its
    /// environment to a host.
    #[arg(long, env = "DEPLOYD_SECRET_ENV_PREFIX")]
    pub secret_env_prefix: Option<String>,
    /// Targets' `file:/path` credentials must lie in this directory (default
    /// <data dir>/secrets).
    #[arg(long, env = "DEPLOYD_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// The key file application secrets (`secret:NAME` env values) are sealed with,
    /// kept outside the database (default <data dir>/secrets.key, created 0600 when
    /// missing; refused when group or others may read it).
    #[arg(long, env = "DEPLOYD_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// PEM certificate chain (leaf first): serve HTTPS instead of HTTP. Needs --tls-key.
    #[arg(long, env = "DEPLOYD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "DEPLOYD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// An agent that has not polled for this long (milliseconds) is inactive and its
    /// in-flight tasks fail as retryable (default 15000; 1000 to 600000).
    #[arg(long, env = "DEPLOYD_AGENT_HEARTBEAT_TIMEOUT_MS")]
    pub agent_heartbeat_timeout_ms: Option<u64>,
    /// How long a job claimed by this replica stays its own without renewal
    /// (milliseconds; renewed every third of it). When a replica dies, another one
    /// takes its jobs over after at most this long (default 30000; 1000 to 600000).
    /// Shorter means faster takeover but more renewal writes and less tolerance of a
    /// slow database.
    #[arg(long, env = "DEPLOYD_JOB_LEASE_MS")]
    pub job_lease_ms: Option<u64>,
    /// Export traces (OpenTelemetry, OTLP over HTTP, protobuf) to the collector at this
    /// base URL, such as http://127.0.0.1:4318 (`/v1/traces` is appended). Default: off.
    #[arg(long, env = "DEPLOYD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported traces (default deployd).
    #[arg(long, env = "DEPLOYD_OTLP_SERVICE_NAME")]
    pub otlp_service_name: Option<String>,
    /// More resource attributes of the exported traces: key=value,key=value (in the
    /// file: a table).
    #[arg(long, env = "DEPLOYD_OTLP_RESOURCE_ATTRIBUTES")]
    pub otlp_resource_attributes: Option<String>,
    /// Bound of one webhook POST, connection included (milliseconds; default 10000;
    /// 100 to 60000).
    #[arg(long, env = "DEPLOYD_NOTIFY_TIMEOUT_MS")]
    pub notify_timeout_ms: Option<u64>,
    /// Delay before a failed webhook delivery is retried, doubled after each failure
    /// (milliseconds, with jitter; default 10000; 10 to 3600000).
    #[arg(long, env = "DEPLOYD_NOTIFY_BACKOFF_INITIAL_MS")]
    pub notify_backoff_initial_ms: Option<u64>,
    /// Longest delay between webhook attempts (milliseconds; default 900000).
    #[arg(long, env = "DEPLOYD_NOTIFY_BACKOFF_MAX_MS")]
    pub notify_backoff_max_ms: Option<u64>,
    /// Attempts after which a webhook delivery is marked failed (default 12; 1 to 100).
    #[arg(long, env = "DEPLOYD_NOTIFY_MAX_ATTEMPTS")]
    pub notify_max_attempts: Option<u32>,
    /// Age after which a webhook delivery is marked failed (milliseconds; default
    /// 86400000; 1000 to 604800000).
    #[arg(long, env = "DEPLOYD_NOTIFY_MAX_AGE_MS")]
    pub notify_max_age_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// The file's keys; every one optional, unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    owner: Option<String>,
    known_hosts: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    secret_env_prefix: Option<String>,
    secrets_dir: Option<PathBuf>,
    secrets_key_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    agent_heartbeat_timeout_ms: Option<u64>,
    job_lease_ms: Option<u64>,
    otlp_endpoint: Option<String>,
    otlp_service_name: Option<String>,
    otlp_resource_attributes: Option<std::collections::BTreeMap<String, String>>,
    notify_timeout_ms: Option<u64>,
    notify_backoff_initial_ms: Option<u64>,
    notify_backoff_max_ms: Option<u64>,
    notify_max_attempts: Option<u32>,
    notify_max_age_ms: Option<u64>,
}

/// The PEM files deployd serves HTTPS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub store: StoreConfig,
    /// Where the database is, for the start-up line (no password).
    pub database_display: String,
    pub log_format: LogFormat,
    /// The lease owner given by flag, env or file; else the one kept in the data dir (`identity::owner`).
    pub owner: Option<String>,
    /// Holds the lock file and the persisted owner (and the SQLite database by default).
    pub data_dir: PathBuf,
    pub known_hosts: PathBuf,
    pub max_body_bytes: usize,
    /// `env:` credentials must start with it.
    pub secret_env_prefix: String,
    /// `file:` credentials must lie inside it.
    pub secrets_dir: PathBuf,
    pub secrets_key_file: PathBuf,
    /// Agents polling less often than this are inactive.
    pub agent_heartbeat_timeout: std::time::Duration,
    /// The engine's job lease (`EngineConfig::lease`).
    pub job_lease: std::time::Duration,
    /// Serve HTTPS with this certificate chain and key (PEM) instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Trace export; `None`: off.
    pub otlp: Option<crate::otlp_config::OtlpConfig>,
    /// Webhook timeout and retry schedule.
    pub notify: crate::notify_config::NotifyConfig,
}

impl Config {
    /// Merges file < env < flags (clap already put env under flags) and validates.
    pub fn load(args: Args, home: Option<&Path>) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file `{}`", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config file `{}`", path.display()))?
            }
            None => FileConfig::default(),
        };
        let listen_text = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen: SocketAddr = listen_text.parse().with_context(|| {
            format!(
                "listen address `{listen_text}` is invalid; expected IP:PORT such as 127.0.0.1:8080"
            )
        })?;
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("deployd-data"));
        let (store, database_display) = match args.database_url.or(file.database_url) {
            None => {
                let path = data_dir.join("deployd.sqlite");
                let shown = format!("sqlite:{}", path.display());
                (StoreConfig::Sqlite(SqliteConfig::new(path)), shown)
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let shown = redact(&url);
                (StoreConfig::Postgres(PgConfig::new(url)), shown)
            }
            Some(url) => match url.strip_prefix("sqlite:") {
                Some(path) if !path.is_empty() => {
                    let path = path.strip_prefix("//").unwrap_or(path);
                    (
                        StoreConfig::Sqlite(SqliteConfig::new(path)),
                        format!("sqlite:{path}"),
                    )
                }
                _ => bail!(
                    "database url `{}` is not supported; expected `sqlite:PATH` or `postgres://user@host:port/db`",
                    redact(&url)
                ),
            },
        };
        let max_body_bytes = args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(1024 * 1024);
        if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
            bail!("max_body_bytes is {max_body_bytes}; expected 1024 to 67108864");
        }
        let owner = args.owner.or(file.owner);
        if let Some(owner) = &owner {
            crate::identity::validate(owner)?;
        }
        let known_hosts = match args.known_hosts.or(file.known_hosts) {
            Some(p) => p,
            None => home
                .map(|h| h.join(".ssh/known_hosts"))
                .unwrap_or_else(|| PathBuf::from("known_hosts")),
        };
        let secret_env_prefix = args
            .secret_env_prefix
            .or(file.secret_env_prefix)
            .unwrap_or_else(|| "DEPLOY_".to_owned());
        if secret_env_prefix.is_empty()
            || !secret_env_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            bail!(
                "secret_env_prefix `{secret_env_prefix}` is invalid; expected a non-empty prefix of A-Z a-z 0-9 _ such as DEPLOY_"
            );
        }
        let secrets_key_file = args
            .secrets_key_file
            .or(file.secrets_key_file)
            .unwrap_or_else(|| data_dir.join("secrets.key"));
        let secrets_dir = args
            .secrets_dir
            .or(file.secrets_dir)
            .unwrap_or_else(|| data_dir.join("secrets"));
        let heartbeat_ms = args
            .agent_heartbeat_timeout_ms
            .or(file.agent_heartbeat_timeout_ms)
            .unwrap_or(15_000);
        if !(1_000..=600_000).contains(&heartbeat_ms) {
            bail!("agent_heartbeat_timeout_ms is {heartbeat_ms}; expected 1000 to 600000");
        }
        let job_lease_ms = args
            .job_lease_ms
            .or(file.job_lease_ms)
            .unwrap_or(JOB_LEASE_MS_DEFAULT);
        if !JOB_LEASE_MS_RANGE.contains(&job_lease_ms) {
            bail!(
                "job_lease_ms is {job_lease_ms}; expected {} to {}",
                JOB_LEASE_MS_RANGE.start(),
                JOB_LEASE_MS_RANGE.end()
            );
        }
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(cert), None) => bail!(
                "tls_cert `{}` is set without tls_key; expected both (HTTPS) or neither (HTTP)",
                cert.display()
            ),
            (None, Some(key)) => bail!(
                "tls_key `{}` is set without tls_cert; expected both (HTTPS) or neither (HTTP)",
                key.display()
            ),
        };
        let otlp_attributes = match &args.otlp_resource_attributes {
            Some(list) => crate::otlp_config::parse_attribute_list(list)?,
            None => file.otlp_resource_attributes.unwrap_or_default(),
        };
        let otlp = crate::otlp_config::OtlpConfig::from_settings(
            args.otlp_endpoint.or(file.otlp_endpoint),
            args.otlp_service_name.or(file.otlp_service_name),
            otlp_attributes,
        )?;
        let notify = crate::notify_config::NotifyConfig::from_settings(
            crate::notify_config::NotifySettings {
                timeout_ms: args.notify_timeout_ms.or(file.notify_timeout_ms),
                backoff_initial_ms: args
                    .notify_backoff_initial_ms
                    .or(file.notify_backoff_initial_ms),
                backoff_max_ms: args.notify_backoff_max_ms.or(file.notify_backoff_max_ms),
                max_attempts: args.notify_max_attempts.or(file.notify_max_attempts),
                max_age_ms: args.notify_max_age_ms.or(file.notify_max_age_ms),
            },
        )?;
        Ok(Self {
            otlp,
            notify,
            listen,
            store,
            database_display,
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Human),
            owner,
            data_dir,
            known_hosts,
            max_body_bytes,
            secret_env_prefix,
            secrets_dir,
            secrets_key_file,
            agent_heartbeat_timeout: std::time::Duration::from_millis(heartbeat_ms),
            job_lease: std::time::Duration::from_millis(job_lease_ms),
            tls,
        })
    }
}

/// The engine's default job lease, in ms (`EngineConfig::new`'s 30 s).
const JOB_LEASE_MS_DEFAULT: u64 = 30_000;

/// Accepted job leases, in ms: below 1 s a renewal (every third of the lease) is a
/// write every few hundred ms per job and one slow query loses the lease; above
/// 10 minutes a dead replica's jobs wait too long for a takeover.
const JOB_LEASE_MS_RANGE: std::ops::RangeInclusive<u64> = 1_000..=600_000;

/// The URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(argv: &[&str], file: Option<&str>) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let mut argv: Vec<String> = std::iter::once("deployd")
            .chain(argv.iter().copied())
            .map(str::to_owned)
            .collect();
        if let Some(text) = file {
            let path = dir.path().join("deployd.toml");
            std::fs::write(&path, text).unwrap();
            argv.push("--config".to_owned());
            argv.push(path.display().to_string());
        }
        Config::load(Args::try_parse_from(argv)?, Some(Path::new("/home/u")))
    }

    #[test]
    fn zero_config_defaults() {
        let c = load(&[], None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_display, "sqlite:deployd-data/deployd.sqlite");
        assert_eq!(c.log_format, LogFormat::Human);
        assert_eq!(c.known_hosts, PathBuf::from("/home/u/.ssh/known_hosts"));
        assert_eq!(c.secret_env_prefix, "DEPLOY_");
        assert_eq!(c.secrets_dir, PathBuf::from("deployd-data/secrets"));
        assert_eq!(
            c.secrets_key_file,
            PathBuf::from("deployd-data/secrets.key")
        );
        assert_eq!(
            c.agent_heartbeat_timeout,
            std::time::Duration::from_secs(15)
        );
        assert_eq!(c.job_lease, std::time::Duration::from_secs(30));
    }

    #[test]
    fn the_job_lease_is_bounded_and_read_from_file_and_flag() {
        let c = load(&[], Some("job_lease_ms = 3000\n")).unwrap();
        assert_eq!(c.job_lease, std::time::Duration::from_millis(3000));
        let c = load(&["--job-lease-ms", "1000"], Some("job_lease_ms = 3000\n")).unwrap();
        assert_eq!(c.job_lease, std::time::Duration::from_millis(1000));
        let c = load(&["--job-lease-ms", "600000"], None).unwrap();
        assert_eq!(c.job_lease, std::time::Duration::from_secs(600));
        for bad in ["0", "999", "600001"] {
            let err = format!("{:#}", load(&["--job-lease-ms", bad], None).unwrap_err());
            assert!(
                err.contains(&format!("job_lease_ms is {bad}; expected 1000 to 600000")),
                "{err}"
            );
        }
        let err = format!("{:#}", load(&[], Some("job_lease_ms = 100\n")).unwrap_err());
        assert!(
            err.contains("job_lease_ms is 100; expected 1000 to 600000"),
            "{err}"
        );
        // Not a number: clap names the flag and the value.
        let err = Args::try_parse_from(["deployd", "--job-lease-ms", "3s"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--job-lease-ms") && err.contains("3s"),
            "{err}"
        );
    }

    #[test]
    fn the_agent_heartbeat_timeout_is_bounded_and_read_from_file_and_flag() {
        let c = load(&[], Some("agent_heartbeat_timeout_ms = 2000\n")).unwrap();
        assert_eq!(c.agent_heartbeat_timeout.as_millis(), 2000);
        let c = load(
            &["--agent-heartbeat-timeout-ms", "3000"],
            Some("agent_heartbeat_timeout_ms = 2000\n"),
        )
        .unwrap();
        assert_eq!(c.agent_heartbeat_timeout.as_millis(), 3000);
        for bad in ["999", "600001"] {
            let err = format!(
                "{:#}",
                load(&["--agent-heartbeat-timeout-ms", bad], None).unwrap_err()
            );
            assert!(
                err.contains(&format!(
                    "agent_heartbeat_timeout_ms is {bad}; expected 1000 to 600000"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn tls_needs_both_files_from_flags_or_file() {
        let c = load(&["--tls-cert", "c.pem", "--tls-key", "k.pem"], None).unwrap();
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: PathBuf::from("c.pem"),
                key: PathBuf::from("k.pem")
            })
        );
        assert_eq!(load(&[], None).unwrap().tls, None);
        let err = format!(
            "{:#}",
            load(&[], Some("tls_cert = \"c.pem\"\n")).unwrap_err()
        );
        assert!(
            err.contains("tls_cert `c.pem` is set without tls_key"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            load(&[], Some("tls_key = \"k.pem\"\n")).unwrap_err()
        );
        assert!(
            err.contains("tls_key `k.pem` is set without tls_cert"),
            "{err}"
        );
        // clap refuses one flag without the other before any of this runs.
        assert!(Args::try_parse_from(["deployd", "--tls-cert", "c.pem"]).is_err());
    }

    #[test]
    fn a_bad_secret_env_prefix_is_refused_by_name() {
        for bad in ["", "DEPLOY-", "A B"] {
            let err = format!(
                "{:#}",
                load(&["--secret-env-prefix", bad], None).unwrap_err()
            );
            assert!(
                err.contains(&format!("secret_env_prefix `{bad}` is invalid")),
                "{err}"
            );
        }
        let c = load(
            &[],
            Some("secret_env_prefix = \"APP_\"\nsecrets_dir = \"/run/s\"\n"),
        )
        .unwrap();
        assert_eq!(c.secret_env_prefix, "APP_");
        assert_eq!(c.secrets_dir, PathBuf::from("/run/s"));
    }

    #[test]
    fn otlp_settings_come_from_the_file_or_the_flags() {
        assert_eq!(load(&[], None).unwrap().otlp, None);
        let file = "otlp_endpoint = \"http://127.0.0.1:4318\"\n\
                    [otlp_resource_attributes]\n\
                    \"deployment.environment\" = \"prod\"\n";
        let c = load(&[], Some(file)).unwrap().otlp.unwrap();
        assert_eq!(c.traces_url.as_str(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(c.service_name, "deployd");
        assert_eq!(c.resource_attributes["deployment.environment"], "prod");
        let c = load(
            &[
                "--otlp-endpoint",
                "https://otel.example",
                "--otlp-service-name",
                "deployd-eu",
                "--otlp-resource-attributes",
                "deployment.environment=staging",
            ],
            Some(file),
        )
        .unwrap()
        .otlp
        .unwrap();
        assert_eq!(c.traces_url.as_str(), "https://otel.example/v1/traces");
        assert_eq!(c.service_name, "deployd-eu");
        assert_eq!(c.resource_attributes["deployment.environment"], "staging");
        let e = load(&["--otlp-endpoint", "ftp://x"], None).unwrap_err();
        assert!(format!("{e:#}").contains("`ftp://x`"), "{e:#}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let c = load(
            &["--listen", "127.0.0.1:9000"],
            Some("listen = \"127.0.0.1:7000\"\nlog_format = \"json\"\n"),
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn postgres_url_switches_the_store_and_hides_the_password() {
        let c = load(
            &[
                "--database-url",
                "postgres://deploy:secret@127.0.0.1:5432/d",
            ],
            None,
        )
        .unwrap();
        assert!(matches!(c.store, StoreConfig::Postgres(_)));
        assert_eq!(c.database_display, "postgres://deploy:***@127.0.0.1:5432/d");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let cases: [(&[&str], Option<&str>, &str); 4] = [
            (
                &["--listen", "localhost"],
                None,
                "listen address `localhost` is invalid; expected IP:PORT",
            ),
            (
                &["--database-url", "mysql://x@y/z"],
                None,
                "database url `mysql://x:***@y/z` is not supported",
            ),
            (
                &["--max-body-bytes", "10"],
                None,
                "max_body_bytes is 10; expected 1024 to 67108864",
            ),
            (&[], Some("lisen = \"x\"\n"), "invalid config file"),
        ];
        for (argv, file, expected) in cases {
            let err = format!("{:#}", load(argv, file).unwrap_err());
            assert!(err.contains(expected), "{argv:?}: {err}");
        }
    }
}
