//! Tests of `target add`'s document: flags to the API's JSON, `--file`, and errors that name the bad value.

use clap::Parser;
use deploy_core::HealthCheck;
use serde_json::json;

use super::{AddArgs, request};

const ENV: &str = "019abcde-0000-7000-8000-000000000001";

#[derive(Debug, Parser)]
struct Wrap {
    #[command(flatten)]
    add: AddArgs,
}

fn parse(extra: &[&str]) -> Result<AddArgs, clap::Error> {
    let base = ["add", "--env", ENV];
    Wrap::try_parse_from(base.iter().chain(extra)).map(|w| w.add)
}

const SSH: &[&str] = &[
    "host-1",
    "--host",
    "127.0.0.1",
    "--port",
    "2222",
    "--user",
    "deploytest",
    "--key-ref",
    "env:KEY",
];

fn with_ssh(extra: &[&str]) -> AddArgs {
    parse(&[SSH, extra].concat()).unwrap()
}

/// The error message of a refused document.
fn refused(args: &AddArgs) -> String {
    let e = request(args).unwrap_err();
    assert_eq!(e.code, crate::exit::USAGE, "{}", e.message);
    e.message
}

#[test]
fn plain_ssh_target_has_no_check_and_no_labels() {
    let r = request(&with_ssh(&[])).unwrap();
    assert_eq!(r.name.as_str(), "host-1");
    assert!(r.health_check.is_none());
    assert_eq!(serde_json::to_value(&r.labels).unwrap(), json!({}));
    let doc = serde_json::to_value(&r).unwrap();
    assert_eq!(doc["connection"]["port"], 2222);
    assert_eq!(
        doc["connection"]["host_key"],
        json!({"mode": "known_hosts"})
    );
}

#[test]
fn the_work_dir_is_the_default_unless_given() {
    // No `/tmp` default: without the flag the document has no work_dir, and the
    // executor uses `~/.local/share/deploy/<target>` of the login user.
    let doc = serde_json::to_value(request(&with_ssh(&[])).unwrap()).unwrap();
    assert_eq!(doc["connection"].get("work_dir"), None, "{doc}");
    let doc =
        serde_json::to_value(request(&with_ssh(&["--work-dir", "/srv/app"])).unwrap()).unwrap();
    assert_eq!(doc["connection"]["work_dir"], "/srv/app");
    let msg = refused(&with_ssh(&["--work-dir", "relative/dir"]));
    assert!(msg.contains("relative/dir"), "{msg}");
}

#[test]
fn command_check_with_timing_and_labels() {
    let r = request(&with_ssh(&[
        "--health-check",
        "command",
        "--health-command",
        "docker exec prod-web /bin/busybox wget -q -O- http://127.0.0.1:8080/health",
        "--health-retries",
        "3",
        "--health-interval",
        "500ms",
        "--health-timeout",
        "5s",
        "--health-min-healthy",
        "1m",
        "--label",
        "deploy.container-prefix=prod-",
        "--label",
        "team=web",
    ]))
    .unwrap();
    let check = r.health_check.unwrap();
    let HealthCheck::Command { command, .. } = &check.check else {
        panic!("{check:?}");
    };
    let argv: Vec<String> = command.clone().into();
    assert_eq!(argv[..3], ["docker", "exec", "prod-web"]);
    assert_eq!(argv.len(), 8);
    assert_eq!(
        (
            check.retries,
            check.interval_ms,
            check.timeout_ms,
            check.min_healthy_time_ms
        ),
        (3, 500, 5_000, 60_000)
    );
    let labels = serde_json::to_value(&r.labels).unwrap();
    assert_eq!(
        labels,
        json!({"deploy.container-prefix": "prod-", "team": "web"})
    );
}

#[test]
fn command_as_json_array_keeps_spaces() {
    let r = request(&with_ssh(&[
        "--health-check",
        "command",
        "--health-command",
        r#"["sh", "-c", "test -f /a b"]"#,
    ]))
    .unwrap();
    let HealthCheck::Command { command, .. } = r.health_check.unwrap().check else {
        panic!("not a command check");
    };
    assert_eq!(Vec::<String>::from(command), ["sh", "-c", "test -f /a b"]);
}

#[test]
fn http_and_tcp_checks() {
    let r = request(&with_ssh(&[
        "--health-check",
        "http",
        "--health-endpoint",
        "http://127.0.0.1:8080",
        "--health-path",
        "/ready",
        "--health-status",
        "204",
    ]))
    .unwrap();
    assert_eq!(
        r.health_check.unwrap().check,
        HealthCheck::Http {
            path: "/ready".into(),
            expected_status: 204,
            expected_body: None,
            port: None,
        }
    );
    assert_eq!(
        r.health_endpoint.unwrap().to_string(),
        "http://127.0.0.1:8080"
    );
    let r = request(&with_ssh(&[
        "--health-check",
        "tcp",
        "--health-port",
        "5432",
    ]))
    .unwrap();
    assert_eq!(
        r.health_check.unwrap().check,
        HealthCheck::Tcp { port: 5432 }
    );
}

#[test]
fn bad_values_are_named() {
    let check = |extra: &[&str], needle: &str| {
        let message = refused(&with_ssh(extra));
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    };
    check(&["--label", "noequals"], "--label `noequals`");
    check(&["--label", "Bad Key=x"], "Bad Key");
    check(
        &["--label", "a=1", "--label", "a=2"],
        "--label `a` is given twice",
    );
    check(
        &["--health-check", "tcp", "--health-port", "0"],
        "health_check.port is `0`",
    );
    check(&["--health-check", "tcp"], "needs --health-port");
    // Without an endpoint an http check aims at the deployed instance: it is accepted.
    assert!(
        request(&with_ssh(&[
            "--health-check",
            "http",
            "--health-port",
            "8080"
        ]))
        .is_ok()
    );
    check(
        &["--health-check", "http", "--health-port", "0"],
        "health_check.port is `0`",
    );
    check(
        &[
            "--health-check",
            "http",
            "--health-endpoint",
            "ftp://x",
            "--health-path",
            "/h",
        ],
        "ftp://x",
    );
    check(
        &["--health-check", "command", "--health-command", "[1, 2]"],
        "--health-command `[1, 2]`",
    );
    check(
        &[
            "--health-check",
            "command",
            "--health-command",
            "true",
            "--health-interval",
            "5x",
        ],
        "--health-interval `5x` is not a duration",
    );
    check(
        &[
            "--health-check",
            "command",
            "--health-command",
            "true",
            "--health-retries",
            "0",
        ],
        "health_check.retries is `0`",
    );
    check(
        &[
            "--health-check",
            "tcp",
            "--health-port",
            "1",
            "--health-path",
            "/x",
        ],
        "--health-path applies to --health-check http, not tcp",
    );
    check(&["--host-key", "whatever"], "--host-key `whatever`");
    let message =
        refused(&parse(&["host 1", "--host", "h", "--user", "u", "--key-ref", "env:K"]).unwrap());
    assert!(message.contains("`name`"), "{message}");
}

#[test]
fn unknown_health_type_and_flag_mixes_are_usage_errors() {
    assert!(parse(&[SSH, &["--health-check", "grpc"]].concat()).is_err());
    assert!(parse(&[SSH, &["--health-retries", "2"]].concat()).is_err());
    assert!(parse(&["--file", "t.json", "host-1"]).is_err());
    assert!(parse(&[]).is_err());
}

#[test]
fn file_holds_the_api_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("target.json");
    let doc = json!({
        "name": "host-9", "target_type": "docker_host",
        "connection": {"model": "ssh", "host": "10.0.0.9", "user": "deploy",
                       "credential_ref": "env:KEY", "work_dir": "/srv"},
        "labels": {"zone": "a"},
        "health_check": {"check": {"type": "tcp", "port": 80}, "retries": 2},
    });
    std::fs::write(&path, doc.to_string()).unwrap();
    let file = path.to_str().unwrap();
    let r = request(&parse(&["--file", file]).unwrap()).unwrap();
    assert_eq!(r.name.as_str(), "host-9");
    assert_eq!(r.health_check.unwrap().retries, 2);

    // A typo, a bad value and a missing endpoint are named with their place.
    let mut typo = doc.clone();
    typo["health_check"]["retry"] = json!(2);
    std::fs::write(&path, typo.to_string()).unwrap();
    let message = refused(&parse(&["--file", file]).unwrap());
    assert!(
        message.contains("at `health_check.retry`: unknown field"),
        "{message}"
    );
    let mut bad = doc.clone();
    bad["connection"]["host"] = json!("bad host!");
    std::fs::write(&path, bad.to_string()).unwrap();
    let message = refused(&parse(&["--file", file]).unwrap());
    assert!(
        message.contains("at `connection`: host is `bad host!`"),
        "{message}"
    );
    let mut http = doc.clone();
    http["health_check"]["check"] = json!({"type": "http", "port": 0});
    std::fs::write(&path, http.to_string()).unwrap();
    let message = refused(&parse(&["--file", file]).unwrap());
    assert!(message.contains("health_check.port is `0`"), "{message}");
    std::fs::write(&path, "{not json").unwrap();
    let message = refused(&parse(&["--file", file]).unwrap());
    assert!(message.contains("is not a JSON document"), "{message}");
    let missing = dir.path().join("missing.json");
    let message = refused(&parse(&["--file", missing.to_str().unwrap()]).unwrap());
    assert!(message.contains("cannot read"), "{message}");
}

#[test]
fn the_environment_may_be_named() {
    let message = refused(
        &Wrap::try_parse_from(["add", "--env", "staging", "--file", "x"])
            .map(|w| w.add)
            .unwrap(),
    );
    assert!(message.contains("cannot read"), "{message}");
    // A name is no error here: the server resolves it (and names a miss).
    let mut args = with_ssh(&[]);
    args.env = "staging".into();
    assert_eq!(request(&args).unwrap().name.as_str(), "host-1");
}
