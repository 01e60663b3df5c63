//! Workload fidelity, end to end through the real `deployd` and `deployctl`: what runs on a target is exactly the service the release declares, checked from where a client stands.
//!
//! Four scenarios, one per (target kind, route): docker_host over SSH, docker_host
//! through the real `deploy-agent`, compose_host over SSH, compose_host through the
//! agent. Each release carries its service definition (`release create --template`):
//! a port published on a fixed loopback port, an environment holding values a naive
//! carrier loses (quotes, backslashes, ` # `, `=`, `$`, a literal `${…}`, unicode, an
//! empty value, 32 KiB), a variable taken from the environment's own values, a bind
//! mount and a named volume, a command, a restart policy, a network alias, a memory
//! limit and an init process. The health check is an http check of the new instance
//! (no fixed endpoint).
//!
//! After v1: the published port answers v1 from the host (no `docker exec`), and
//! `docker inspect` of the container matches the definition field by field. Then v2
//! (another value of one variable), the same checks. Then v3-broken with
//! `--auto-rollback`: its health check fails and v2's whole definition is back. Then
//! a manual rollback of the completed v2: v1's whole definition is back. Job statuses
//! say exactly that.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deploy_testkit::{
    ContainerCleanup, IMAGE_HTTP_PORT, Registry, SSH_TEST_USER, SshdHosts, TestImages, free_port,
    http_get, run_checked, temp_dir,
};
use serde_json::{Value, json};

use crate::agent_e2e::watch;
use crate::agent_proc::{AgentProc, wait_active};
use crate::deployd_e2e::{KEY_VAR, job_id_of};
use crate::deployd_proc::{Deployd, ctl, ok_json};

/// How the target is reached.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Ssh,
    Agent,
}

/// What the target runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    DockerHost,
    ComposeHost,
}

/// Values a carrier can lose, as the container must see them (Compose syntax writes
/// each `$` as `$$`).
fn hostile_values() -> Vec<(&'static str, String)> {
    vec![
        ("H_COMMENT", "value # not a comment".to_owned()),
        ("H_LITERAL", "${HOME}".to_owned()),
        ("H_DOLLAR", "costs $5 and $$".to_owned()),
        ("H_QUOTES", r#"it's "quoted" 'both'"#.to_owned()),
        ("H_BACKSLASH", r"C:\path\to\n and \t".to_owned()),
        ("H_EQUALS", "a=b=c".to_owned()),
        ("H_SPACES", "  leading and trailing  ".to_owned()),
        ("H_UNICODE", "grüße 日本 🚀".to_owned()),
        ("H_EMPTY", String::new()),
        (
            "H_MULTILINE",
            "-----BEGIN KEY-----\nline two\r\n-----END KEY-----\n".to_owned(),
        ),
        ("H_LONG", "x".repeat(32 * 1024)),
    ]
}

/// `value` as a YAML double-quoted string in Compose syntax (`$` written `$$`).
fn compose_string(value: &str) -> String {
    serde_json::to_string(&value.replace('$', "$$")).unwrap()
}

/// The service definition of every release of a scenario.
fn template(host_port: u16, config_dir: &str, greeting: &str) -> String {
    let mut env = String::new();
    for (k, v) in hostile_values() {
        env.push_str(&format!("      {k}: {}\n", compose_string(&v)));
    }
    format!(
        r#"services:
  web:
    componentName: web
    command: ["/bin/busybox", "httpd", "-f", "-p", "{IMAGE_HTTP_PORT}", "-h", "/www"]
    ports:
      - "127.0.0.1:{host_port}:{IMAGE_HTTP_PORT}"
    environment:
      GREETING: {greeting}
      DATABASE_URL:
{env}    volumes:
      - {config_dir}:/config:ro
      - data:/data
    restart: unless-stopped
    networks:
      backend:
        aliases: [api]
    mem_limit: 64m
    init: true
    stop_grace_period: 2s
volumes:
  data: {{}}
networks:
  backend: {{}}
"#,
        greeting = compose_string(greeting)
    )
}

/// The environment's own value of `DATABASE_URL`.
const DATABASE_URL: &str = "postgres://db.internal:5432/app?sslmode=require&x=$y";

/// What a container must look like, field by field.
struct Expected<'a> {
    digest: &'a str,
    greeting: &'a str,
    host_port: u16,
    config_dir: &'a str,
    /// Prefix of the volume and network names (`<project>_data`, `<project>_backend`).
    project: &'a str,
}

fn assert_definition(c: &Value, e: &Expected<'_>) {
    let name = c["Name"].as_str().unwrap_or("?");
    let env: Vec<&str> = c["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut wanted: Vec<(String, String)> = hostile_values()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    wanted.push(("GREETING".to_owned(), e.greeting.to_owned()));
    wanted.push(("DATABASE_URL".to_owned(), DATABASE_URL.to_owned()));
    wanted.push(("STELLA_DIGEST".to_owned(), e.digest.to_owned()));
    for (k, v) in wanted {
        let entry = format!("{k}={v}");
        assert!(
            env.contains(&entry.as_str()),
            "{name}: `{}` is not in its environment, byte for byte",
            entry.chars().take(80).collect::<String>()
        );
    }
    let bindings = &c["HostConfig"]["PortBindings"][format!("{IMAGE_HTTP_PORT}/tcp")];
    assert_eq!(
        bindings,
        &json!([{"HostIp": "127.0.0.1", "HostPort": e.host_port.to_string()}]),
        "{name}: port bindings"
    );
    let mounts = c["Mounts"].as_array().unwrap();
    let mount = |dest: &str| {
        mounts
            .iter()
            .find(|m| m["Destination"] == dest)
            .unwrap_or_else(|| panic!("{name}: no mount at {dest}: {mounts:#?}"))
    };
    let config = mount("/config");
    assert_eq!(config["Type"], "bind", "{name}");
    assert_eq!(config["Source"], e.config_dir, "{name}");
    assert_eq!(config["RW"], false, "{name}: /config is read-only");
    let data = mount("/data");
    assert_eq!(data["Type"], "volume", "{name}");
    assert_eq!(data["Name"], format!("{}_data", e.project), "{name}");
    assert_eq!(
        c["Config"]["Cmd"],
        json!([
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            IMAGE_HTTP_PORT.to_string(),
            "-h",
            "/www"
        ]),
        "{name}: command"
    );
    assert_eq!(
        c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped",
        "{name}"
    );
    assert_eq!(c["HostConfig"]["Memory"], 64 * 1024 * 1024, "{name}");
    assert_eq!(c["HostConfig"]["Init"], true, "{name}");
    let network = &c["NetworkSettings"]["Networks"][format!("{}_backend", e.project)];
    let aliases: Vec<&str> = network["Aliases"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: not on {}_backend: {network:#}", e.project))
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(aliases.contains(&"api"), "{name}: aliases {aliases:?}");
    assert!(aliases.contains(&"web"), "{name}: aliases {aliases:?}");
    assert_eq!(c["State"]["Running"], true, "{name}");
    assert_eq!(c["Config"]["Labels"]["stella.digest"], e.digest, "{name}");
}

/// What the published port answers on `path`, from the host (retried while a
/// stop-first swap or a Compose recreate is under way).
fn answers(host_port: u16, path: &str) -> String {
    let addr = format!("127.0.0.1:{host_port}");
    let started = Instant::now();
    loop {
        match http_get(&addr, path) {
            Ok((200, body)) => return body.trim().to_owned(),
            other => {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "GET http://{addr}{path}: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// `docker inspect` of the one running container of the service.
fn container(kind: Kind, prefix: &str, project: &str) -> Value {
    let filter = match kind {
        Kind::DockerHost => format!("name=^{prefix}web$"),
        Kind::ComposeHost => format!("label=com.docker.compose.project={project}"),
    };
    let ids = run_checked("docker", &["ps", "-q", "--filter", &filter]).unwrap();
    let ids: Vec<&str> = ids.split_whitespace().collect();
    assert_eq!(ids.len(), 1, "one running container for {filter}: {ids:?}");
    let out = run_checked("docker", &["inspect", ids[0]]).unwrap();
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

fn scenario(kind: Kind, route: Route) {
    let tag = match (kind, route) {
        (Kind::DockerHost, Route::Ssh) => "ds",
        (Kind::DockerHost, Route::Agent) => "da",
        (Kind::ComposeHost, Route::Ssh) => "cs",
        (Kind::ComposeHost, Route::Agent) => "ca",
    };
    let prefix = format!("fd{}{tag}-", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    let data = temp_dir("fidelity-").unwrap();
    // The work dir is made (0700) by whoever deploys: the ssh user or the agent; one
    // made here for them would be refused (not theirs, or writable by others).
    let work = std::path::PathBuf::from(format!("/tmp/{prefix}work"));
    let _ = std::fs::remove_dir_all(&work);
    // The bind source is shared with the ssh user: world-readable.
    let config_dir = format!("/tmp/{prefix}config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(format!("{config_dir}/greeting"), "hello\n").unwrap();
    run_checked("chmod", &["0777", &config_dir]).unwrap();
    let host_port = free_port().unwrap();

    let hosts = (route == Route::Ssh).then(|| SshdHosts::start(1).unwrap());
    let key = hosts
        .as_ref()
        .map(|h| std::fs::read_to_string(h.client_key()).unwrap())
        .unwrap_or_default();
    let known_hosts = match &hosts {
        Some(h) => h.known_hosts(),
        None => {
            let path = data.path().join("known_hosts");
            std::fs::write(&path, "").unwrap();
            path
        }
    };
    let server = Deployd::start(
        data.path(),
        free_port().unwrap(),
        &known_hosts,
        &[(KEY_VAR, key.as_str())],
    );
    let addr = server.addr.clone();
    let mut agent = None;
    let connection = match (&hosts, route) {
        (Some(h), Route::Ssh) => json!({
            "model": "ssh",
            "host": h.host(1),
            "port": h.port(),
            "user": SSH_TEST_USER,
            "credential_ref": format!("env:{KEY_VAR}"),
            "work_dir": work,
            "host_key": {"mode": "known_hosts"},
        }),
        _ => {
            let name = format!("{prefix}agent");
            let token = String::from_utf8(
                ctl(
                    &addr,
                    &[
                        "agent",
                        "bootstrap-token",
                        "--name",
                        &name,
                        "--label",
                        "scenario=agent",
                    ],
                )
                .stdout,
            )
            .unwrap()
            .trim()
            .to_owned();
            let mut a = AgentProc::start(&addr, &name, &data.path().join("agent"), Some(&token));
            let id = wait_active(&addr, &name, &mut a);
            agent = Some(a);
            json!({"model": "agent", "agent_id": id, "work_dir": work})
        }
    };

    // The environment, with its own value of DATABASE_URL, and its one target.
    let env_name = format!("{prefix}env");
    let env_id = ok_json(
        &addr,
        &[
            "env",
            "create",
            &env_name,
            "--var",
            &format!("DATABASE_URL={DATABASE_URL}"),
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target_type = match kind {
        Kind::DockerHost => "docker_host",
        Kind::ComposeHost => "compose_host",
    };
    let target_file = data.path().join("target.json");
    std::fs::write(
        &target_file,
        json!({
            "name": "host-1",
            "target_type": target_type,
            "connection": connection,
            "health_check": {
                "check": {"type": "http", "path": "/health", "port": IMAGE_HTTP_PORT},
                "retries": 4,
                "interval_ms": 300,
                "timeout_ms": 2_000,
            },
            "labels": {"deploy.container-prefix": prefix},
        })
        .to_string(),
    )
    .unwrap();
    ok_json(
        &addr,
        &[
            "target",
            "add",
            "--env",
            &env_id,
            "--file",
            target_file.to_str().unwrap(),
        ],
    );
    // The definition binds the config directory: the environment's runtime policy
    // must allow that directory (and nothing else), or the release is refused.
    let policy = ok_json(
        &addr,
        &[
            "env",
            "policy",
            "set",
            &env_id,
            "--bind-prefix",
            &config_dir,
        ],
    );
    assert_eq!(policy["bind_prefixes"], json!([config_dir]), "{policy}");
    // docker_host names volumes and networks after the environment, behind the
    // container prefix; Compose after its project, the environment.
    let project = match kind {
        Kind::DockerHost => format!("{prefix}{env_name}"),
        Kind::ComposeHost => env_name.clone(),
    };

    // Three releases, each with its service definition; v2 changes one value.
    let mut releases = BTreeMap::new();
    for (name, image, greeting) in [
        ("v1", &images.v1, "hello v1"),
        ("v2", &images.v2, "hello v2 # changed"),
        ("v3-broken", &images.v3_broken, "hello v3"),
    ] {
        let file = data.path().join(format!("{name}.yml"));
        std::fs::write(&file, template(host_port, &config_dir, greeting)).unwrap();
        let release = ok_json(
            &addr,
            &[
                "release",
                "create",
                name,
                "--component",
                &format!("web={image}"),
                "--template",
                file.to_str().unwrap(),
            ],
        );
        assert_eq!(
            release["template"]["content"],
            json!(std::fs::read_to_string(&file).unwrap()),
            "the release stores its definition as given"
        );
        releases.insert(name, release["id"].as_str().unwrap().to_owned());
    }
    let digest = |image: &str| image.rsplit_once('@').unwrap().1.to_owned();
    let deploy = |release: &str, extra: &[&str]| {
        let args = [
            &["deploy", "--release", &releases[release], "--env", &env_id][..],
            extra,
        ]
        .concat();
        let out = ctl(&addr, &args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };
    let agent_log =
        |agent: &Option<AgentProc>| agent.as_ref().map(AgentProc::stderr).unwrap_or_default();
    let check = |version: &str, image: &str, greeting: &str| {
        assert_eq!(answers(host_port, "/version"), version, "from the host");
        let c = container(kind, &prefix, &project);
        assert_definition(
            &c,
            &Expected {
                digest: &digest(image),
                greeting,
                host_port,
                config_dir: &config_dir,
                project: &project,
            },
        );
    };

    // v1, then v2: each runs exactly its definition.
    let (code, stdout, stderr) = deploy("v1", &["--follow", "--logs"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}\n{}", agent_log(&agent));
    assert!(stdout.contains("healthy after"), "{stdout}");
    check("v1", &images.v1, "hello v1");
    let v1_job = job_id_of(&stdout);
    let (code, stdout, stderr) = deploy("v2", &["--follow"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}\n{}", agent_log(&agent));
    let v2_job = job_id_of(&stdout);
    check("v2", &images.v2, "hello v2 # changed");
    let job = ok_json(&addr, &["jobs", "show", &v2_job]);
    let task = &job["tasks"][0];
    assert!(task["error"].is_null(), "{task:#}");
    assert!(
        task["logs"].as_str().unwrap().contains("healthy after"),
        "the task keeps its log tail: {task:#}"
    );
    if route == Route::Agent {
        assert!(task["agent_id"].is_string(), "{task:#}");
    }

    // v3-broken fails its instance health check; the automatic rollback puts v2's whole
    // definition back.
    let (code, stdout, stderr) = deploy("v3-broken", &["--follow", "--auto-rollback"]);
    assert_eq!(code, Some(3), "{stdout}\n{stderr}\n{}", agent_log(&agent));
    let v3_job = job_id_of(&stdout);
    assert!(stdout.contains("health check failed"), "{stdout}");
    assert!(stdout.contains("answered 404; expected 200"), "{stdout}");
    check("v2", &images.v2, "hello v2 # changed");
    let v3 = ok_json(&addr, &["jobs", "show", &v3_job]);
    assert_eq!(v3["status"], "rolled_back");

    // A manual rollback of the completed v2 job: v1's whole definition is back.
    let rollback = ok_json(&addr, &["rollback", &v2_job, "--reason", "fidelity check"]);
    let rollback_id = rollback["id"].as_str().unwrap().to_owned();
    let (code, events) = watch(&addr, &rollback_id);
    assert_eq!(code, Some(0), "{events:#?}\n{}", agent_log(&agent));
    let done = ok_json(&addr, &["jobs", "show", &rollback_id]);
    assert_eq!(done["status"], "completed", "{done:#}");
    assert!(
        done["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "compose-lock"),
        "the rollback re-deploys the restored job's rendered definition: {done:#}"
    );
    check("v1", &images.v1, "hello v1");
    assert_eq!(
        ok_json(&addr, &["jobs", "show", &v2_job])["status"],
        "completed"
    );
    assert_eq!(
        ok_json(&addr, &["jobs", "show", &v1_job])["status"],
        "completed"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&config_dir);
}

#[test]
fn docker_host_over_ssh_runs_exactly_the_declared_service() {
    scenario(Kind::DockerHost, Route::Ssh);
}

#[test]
fn docker_host_through_the_agent_runs_exactly_the_declared_service() {
    scenario(Kind::DockerHost, Route::Agent);
}

#[test]
fn compose_host_over_ssh_runs_exactly_the_declared_service() {
    scenario(Kind::ComposeHost, Route::Ssh);
}

#[test]
fn compose_host_through_the_agent_runs_exactly_the_declared_service() {
    scenario(Kind::ComposeHost, Route::Agent);
}
