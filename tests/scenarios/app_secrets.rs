//! Application secrets end to end: a real deployd deploys a `secret:NAME` env value over SSH and through a real deploy-agent to a Docker host, where `docker inspect` shows it intact, while deployd's SQLite files, its API answers (artifacts, job, events, task logs, audit), deployctl's output, deployd's and the agent's stderr and the agent's state dir hold no byte of it.
//!
//! The value carries what breaks naive transports: `$`, `${…}`, `#`, both quotes, a
//! backslash and a line break. The secret is set with `deployctl secrets set --from-file`,
//! a deploy before it exists is refused naming it, and a second value set from stdin
//! reaches the container on the next deploy of the same release (the container's
//! identity covers the resolved environment).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use deploy_testkit::{ContainerCleanup, Registry, TestImages, free_port, temp_dir};
use serde_json::{Value, json};

use crate::deployd_e2e::{KEY_VAR, SshWorld, job_id_of, target_add_args};
use crate::deployd_proc::{ADMIN_TOKEN, Deployd, api_post, ctl, ctl_command, ok_json};

const TEMPLATE: &str = "services:\n  web:\n    componentName: web\n    environment:\n      DB_PASSWORD: secret:db\n      PLAIN: visible\n";

/// `GET path` with the admin token over HTTP/1.0 (no chunking; an SSE stream of a
/// finished job ends): the status and the body as text.
fn get_text(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The pieces of `value` a leak would show: the whole, each line, and its JSON escape.
fn needles(value: &str) -> Vec<String> {
    let escaped = serde_json::to_string(value).unwrap();
    let mut out = vec![value.to_owned(), escaped.trim_matches('"').to_owned()];
    out.extend(value.lines().filter(|l| l.len() >= 8).map(str::to_owned));
    out
}

fn assert_holds_none(haystack: &[u8], values: &[&str], what: &str) {
    for value in values {
        for needle in needles(value) {
            assert!(
                !haystack
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes()),
                "{what} holds (part of) a secret value: {needle:?}"
            );
        }
    }
}

/// Every file under `dir` (the SQLite database, its -wal and -shm, the key file…).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn container_env(container: &str) -> Vec<String> {
    let out = deploy_testkit::run_checked(
        "docker",
        &["inspect", "--format", "{{json .Config.Env}}", container],
    )
    .unwrap();
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn a_secret_env_value_reaches_the_container_and_nothing_else() {
    let prefix = format!("sec{}-", std::process::id());
    let container = format!("{prefix}web");
    let world = SshWorld::start(&prefix, "deployd-secrets-");
    let (hosts, images, data) = (&world.hosts, &world.images, &world.data);
    let server = &world.server;
    let addr = world.addr.clone();
    let first = format!(
        "Zq{}-p@ss $HOME ${{X}} #not-a-comment 'single' \"double\" back\\slash\nsecond line = yes",
        std::process::id()
    );
    let second = format!("Yw{}-rotated $$ value #2", std::process::id());

    // The key file was created private, beside the database.
    let key_file = data.path().join("db").join("secrets.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", key_file.display());

    let env_id = ok_json(&addr, &["env", "create", "secrets"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let add = target_add_args(&env_id, hosts, 1, &prefix, 500);
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    ok_json(&addr, &add);
    let (status, release) = api_post(
        &addr,
        "/api/v1/releases",
        &json!({"name": "v1", "components": [{"name": "web", "image": images.v1}], "template": TEMPLATE}),
    );
    assert_eq!(status, 201, "{release}");
    let release = release["id"].as_str().unwrap().to_owned();
    let deploy = || {
        let out = ctl(
            &addr,
            &[
                "deploy",
                "--release",
                &release,
                "--env",
                &env_id,
                "--follow",
                "--logs",
            ],
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Before the secret exists: refused at job creation, naming it.
    let (code, stdout, stderr) = deploy();
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("references secret `db`, which does not exist"),
        "{stderr}"
    );

    // Set from a file, never from an argument.
    let value_file = data.path().join("value.txt");
    std::fs::write(&value_file, &first).unwrap();
    // Limited to another environment first: refused here, naming the environment.
    ok_json(&addr, &["env", "create", "elsewhere"]);
    let set = ok_json(
        &addr,
        &[
            "secrets",
            "set",
            "db",
            "--from-file",
            value_file.to_str().unwrap(),
            "--env",
            "elsewhere",
        ],
    );
    assert_eq!(set["version"], 1, "{set}");
    assert_eq!(set["environments"], json!(["elsewhere"]), "{set}");
    let (code, stdout, stderr) = deploy();
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "variable `DB_PASSWORD` references secret `db`, which may not be used in environment `secrets`"
        ),
        "{stderr}"
    );
    let set = ok_json(
        &addr,
        &[
            "secrets",
            "set",
            "db",
            "--from-file",
            value_file.to_str().unwrap(),
            "--env",
            "secrets",
            "--env",
            "elsewhere",
        ],
    );
    assert_eq!(set["version"], 2, "{set}");

    let (code, stdout, stderr) = deploy();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let job1 = job_id_of(&stdout);
    let env = container_env(&container);
    assert!(
        env.contains(&format!("DB_PASSWORD={first}")),
        "the value arrives intact: {env:?}"
    );
    assert!(env.contains(&"PLAIN=visible".to_owned()), "{env:?}");
    let mut cli_output = stdout + &stderr;

    // A new value, from stdin; the same release deployed again takes it.
    let mut child = ctl_command(
        &addr,
        &["secrets", "set", "db", "--from-stdin", "--output", "json"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(second.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let set: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(set["version"], 3, "{set}");
    // A new value keeps the environments it was limited to.
    assert_eq!(
        set["environments"],
        json!(["secrets", "elsewhere"]),
        "{set}"
    );
    let (code, stdout, stderr) = deploy();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let job2 = job_id_of(&stdout);
    assert!(
        container_env(&container).contains(&format!("DB_PASSWORD={second}")),
        "the second value replaced the first"
    );
    cli_output += &stdout;
    cli_output += &stderr;
    let listed = ctl(&addr, &["secrets", "list"]);
    cli_output += &String::from_utf8_lossy(&listed.stdout);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("db"));

    // compose_host: the lock drops the variable and a compose override file written at
    // dispatch sets it (`$` written `$$`), so `$`, `${X}`, `#`, quotes, backslashes and
    // line breaks all arrive (docker-compose v1 here; the plugin reads it the same).
    let third = format!(
        "Xc{}-compose $HOME $$ #hash 'single' \"double\" back\\slash\nline two",
        std::process::id()
    );
    let fourth = format!(
        "Vb{}-brace ${{NOT_EXPANDED}} $HOME 'q' \"dq\" b\\s\n#hash ${{X:-y}} tail",
        std::process::id()
    );
    for (name, value) in [("cdb", &third), ("cbad", &fourth)] {
        std::fs::write(&value_file, value).unwrap();
        ok_json(
            &addr,
            &[
                "secrets",
                "set",
                name,
                "--from-file",
                value_file.to_str().unwrap(),
            ],
        );
    }
    std::fs::remove_file(&value_file).unwrap();
    let project = format!("{prefix}compose");
    ok_json(&addr, &["env", "create", &project]);
    let work = format!("/tmp/{prefix}work");
    let (status, target) = api_post(
        &addr,
        &format!("/api/v1/environments/{project}/targets"),
        &json!({
            "name": "compose-1",
            "target_type": "compose_host",
            "connection": {
                "model": "ssh",
                "host": hosts.host(1),
                "port": hosts.port(),
                "user": deploy_testkit::SSH_TEST_USER,
                "credential_ref": format!("env:{KEY_VAR}"),
                "work_dir": work,
                "host_key": {"mode": "known_hosts"},
            },
        }),
    );
    assert_eq!(status, 201, "{target}");
    let compose_release = |name: &str, secret: &str| {
        let (status, release) = api_post(
            &addr,
            "/api/v1/releases",
            &json!({"name": name, "components": [{"name": "web", "image": images.v1}],
                    "template": TEMPLATE.replace("secret:db", &format!("secret:{secret}"))}),
        );
        assert_eq!(status, 201, "{release}");
        release["id"].as_str().unwrap().to_owned()
    };
    let good = compose_release("c1", "cdb");
    let bad = compose_release("c2", "cbad");
    let deploy_compose = |release: &str| {
        let out = ctl(
            &addr,
            &[
                "deploy",
                "--release",
                release,
                "--env",
                &project,
                "--follow",
                "--logs",
            ],
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let compose_ids = || {
        let ids = deploy_testkit::run_checked(
            "docker",
            &[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.compose.project={project}"),
            ],
        )
        .unwrap();
        ids.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (code, output) = deploy_compose(&bad);
    assert_eq!(code, Some(0), "{output}");
    cli_output += &output;
    let ids = compose_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let env = container_env(&ids[0]);
    assert!(
        env.contains(&format!("DB_PASSWORD={fourth}")),
        "a value with `${{` arrives intact through compose: {env:?}"
    );
    let (code, output) = deploy_compose(&good);
    assert_eq!(code, Some(0), "{output}");
    cli_output += &output;
    let ids = compose_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let env = container_env(&ids[0]);
    assert!(
        env.contains(&format!("DB_PASSWORD={third}")),
        "the value arrives intact through compose: {env:?}"
    );
    assert!(env.contains(&"PLAIN=visible".to_owned()), "{env:?}");
    // The stored lock still holds the reference, never the value.
    let (_, lock) = get_text(
        &addr,
        &format!("/api/v1/jobs/{}/artifacts/compose-lock", job_id_of(&output)),
    );
    assert!(lock.contains("secret:cdb"), "{lock}");

    // Nothing else holds any value.
    let values = [
        first.as_str(),
        second.as_str(),
        third.as_str(),
        fourth.as_str(),
    ];
    assert_holds_none(cli_output.as_bytes(), &values, "deployctl's output");
    let mut answers = String::new();
    let compose_jobs: Vec<String> = {
        let (status, text) = get_text(&addr, &format!("/api/v1/jobs?environment={project}"));
        assert_eq!(status, 200, "{text}");
        answers += &text;
        let list: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        let ids: Vec<String> = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 2, "{list}");
        ids
    };
    for job in [&job1, &job2].into_iter().chain(compose_jobs.iter()) {
        let (status, text) = get_text(&addr, &format!("/api/v1/jobs/{job}"));
        assert_eq!(status, 200, "{text}");
        let doc: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        answers += &text;
        for kind in ["compose-file", "compose-lock", "env-file", "manifest"] {
            let (_, text) = get_text(&addr, &format!("/api/v1/jobs/{job}/artifacts/{kind}"));
            answers += &text;
        }
        let (status, text) = get_text(&addr, &format!("/api/v1/jobs/{job}/artifacts/compose-lock"));
        assert_eq!(status, 200, "{text}");
        assert!(
            text.contains("DB_PASSWORD: \"secret:"),
            "the lock keeps the reference: {text}"
        );
        let (status, text) = get_text(&addr, &format!("/api/v1/jobs/{job}/events"));
        assert_eq!(status, 200, "{text}");
        answers += &text;
        for task in doc["tasks"].as_array().unwrap() {
            let task = task["id"].as_str().unwrap();
            let (status, text) = get_text(&addr, &format!("/api/v1/tasks/{task}/logs"));
            assert_eq!(status, 200, "{text}");
            answers += &text;
        }
    }
    for path in ["/api/v1/secrets", "/api/v1/audit?limit=200"] {
        let (status, text) = get_text(&addr, path);
        assert_eq!(status, 200, "{text}");
        answers += &text;
    }
    assert!(answers.contains("DB_PASSWORD"), "the answers were read");
    assert_holds_none(answers.as_bytes(), &values, "the API's answers");
    // deployd's own log, then its files once it stopped (the WAL checkpointed or not).
    let stderr_log = server.stderr();
    assert!(
        stderr_log.contains("application secrets key loaded"),
        "{stderr_log}"
    );
    world.server.terminate();
    let db_files = files_under(&data.path().join("db"));
    assert!(
        db_files
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".sqlite")),
        "{db_files:?}"
    );
    for file in db_files {
        let bytes = std::fs::read(&file).unwrap();
        assert_holds_none(&bytes, &values, &file.display().to_string());
    }
    assert_holds_none(
        std::fs::read(data.path().join("deployd-stderr.txt"))
            .unwrap()
            .as_slice(),
        &values,
        "deployd's stderr",
    );
}

/// API answers about `jobs`: each job, its events, its artifacts and its tasks' logs.
fn job_answers(addr: &str, jobs: &[&str]) -> String {
    let mut answers = String::new();
    for job in jobs {
        let (status, text) = get_text(addr, &format!("/api/v1/jobs/{job}"));
        assert_eq!(status, 200, "{text}");
        let doc: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        answers += &text;
        for kind in ["compose-file", "compose-lock", "env-file", "manifest"] {
            answers += &get_text(addr, &format!("/api/v1/jobs/{job}/artifacts/{kind}")).1;
        }
        let (status, text) = get_text(addr, &format!("/api/v1/jobs/{job}/events"));
        assert_eq!(status, 200, "{text}");
        answers += &text;
        for task in doc["tasks"].as_array().unwrap() {
            let task = task["id"].as_str().unwrap();
            let (status, text) = get_text(addr, &format!("/api/v1/tasks/{task}/logs"));
            assert_eq!(status, 200, "{text}");
            answers += &text;
        }
    }
    answers
}

/// A real deploy-agent serving a docker_host target: the value reaches the container
/// intact, while the database (its -wal included, read while deployd runs and after),
/// deployd's and the agent's stderr, the agent's state dir and the API's answers hold
/// no byte of it; the same through the agent's Compose CLI (compose_host), whose secrets
/// env file lands 0600 in the work dir.
#[test]
fn a_secret_env_value_reaches_a_container_through_a_real_agent_and_nothing_else() {
    use crate::agent_proc::{AgentProc, wait_active};
    let prefix = format!("sga{}-", std::process::id());
    let container = format!("{prefix}web");
    let _cleanup = ContainerCleanup::new(&prefix);
    let registry = Registry::start().unwrap();
    let images = TestImages::build(&registry, &format!("{prefix}app")).unwrap();
    let data = temp_dir("deployd-agent-secrets-").unwrap();
    let known_hosts = data.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let server = Deployd::start(data.path(), free_port().unwrap(), &known_hosts, &[]);
    let addr = server.addr.clone();
    let value = format!(
        "Ag{}-p@ss $HOME ${{X}} #not-a-comment 'single' \"double\" back\\slash\nsecond agent line",
        std::process::id()
    );

    let out = ctl(
        &addr,
        &[
            "agent",
            "bootstrap-token",
            "--name",
            "secrets-agent",
            "--label",
            "scenario=agent",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let bootstrap = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let state = data.path().join("agent-state");
    let mut agent = AgentProc::start(&addr, "secrets-agent", &state, Some(&bootstrap));
    let agent_id = wait_active(&addr, "secrets-agent", &mut agent);

    let env_id = ok_json(&addr, &["env", "create", "agent-secrets"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The health command runs in the work dir, which only a deploy's files create.
    let work_dir = data.path().join("agent-work");
    std::fs::create_dir_all(&work_dir).unwrap();
    let (status, target) = api_post(
        &addr,
        &format!("/api/v1/environments/{env_id}/targets"),
        &crate::agent_e2e::target_body(&agent_id, &prefix, work_dir.to_str().unwrap()),
    );
    assert_eq!(status, 201, "{target}");
    let value_file = data.path().join("value.txt");
    std::fs::write(&value_file, &value).unwrap();
    ok_json(
        &addr,
        &[
            "secrets",
            "set",
            "db",
            "--from-file",
            value_file.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(&value_file).unwrap();
    let (status, release) = api_post(
        &addr,
        "/api/v1/releases",
        &json!({"name": "v1", "components": [{"name": "web", "image": images.v1}], "template": TEMPLATE}),
    );
    assert_eq!(status, 201, "{release}");
    let release = release["id"].as_str().unwrap().to_owned();
    let deploy = |env: &str| {
        let out = ctl(
            &addr,
            &[
                "deploy",
                "--release",
                &release,
                "--env",
                env,
                "--follow",
                "--logs",
            ],
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, mut cli_output) = deploy(&env_id);
    assert_eq!(code, Some(0), "{cli_output}\n{}", agent.stderr());
    let job = job_id_of(&cli_output);
    let env = container_env(&container);
    assert!(
        env.contains(&format!("DB_PASSWORD={value}")),
        "the value arrives intact through the agent: {env:?}"
    );
    assert!(env.contains(&"PLAIN=visible".to_owned()), "{env:?}");

    // compose_host through the agent: it gets the stored lock (its digest checks out)
    // and the secrets override file, rewrites the lock on its host and writes the
    // override 0600, passing it after the lock.
    let compose_value = format!(
        "Cv{}-agent $HOME $$ ${{X}} #hash 'single' \"double\" back\\slash\nline two",
        std::process::id()
    );
    std::fs::write(&value_file, &compose_value).unwrap();
    ok_json(
        &addr,
        &[
            "secrets",
            "set",
            "cdb",
            "--from-file",
            value_file.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(&value_file).unwrap();
    let project = format!("{prefix}acompose");
    ok_json(&addr, &["env", "create", &project]);
    let compose_work = data.path().join("agent-compose-work");
    let (status, target) = api_post(
        &addr,
        &format!("/api/v1/environments/{project}/targets"),
        &json!({"name": "compose-agent", "target_type": "compose_host",
                "connection": {"model": "agent", "agent_id": agent_id,
                               "work_dir": compose_work.to_str().unwrap()}}),
    );
    assert_eq!(status, 201, "{target}");
    let (status, compose_release) = api_post(
        &addr,
        "/api/v1/releases",
        &json!({"name": "c1", "components": [{"name": "web", "image": images.v1}],
                "template": TEMPLATE.replace("secret:db", "secret:cdb")}),
    );
    assert_eq!(status, 201, "{compose_release}");
    let compose_release = compose_release["id"].as_str().unwrap().to_owned();
    let out = ctl(
        &addr,
        &[
            "deploy",
            "--release",
            &compose_release,
            "--env",
            &project,
            "--follow",
            "--logs",
        ],
    );
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{output}\n{}", agent.stderr());
    let compose_job = job_id_of(&output);
    cli_output += &output;
    let ids = deploy_testkit::run_checked(
        "docker",
        &[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ],
    )
    .unwrap();
    let ids: Vec<&str> = ids.split_whitespace().collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let env = container_env(ids[0]);
    assert!(
        env.contains(&format!("DB_PASSWORD={compose_value}")),
        "the value arrives intact through the agent's compose: {env:?}"
    );
    let env_file = compose_work.join(format!("{project}.secrets.yml"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&env_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", env_file.display());
    let lock = std::fs::read_to_string(compose_work.join("docker-compose.lock.yml")).unwrap();
    assert!(
        !lock.contains("secret:cdb") && !lock.contains("env_file"),
        "the lock on the host drops the reference: {lock}"
    );

    let values = [value.as_str(), compose_value.as_str()];
    assert_holds_none(cli_output.as_bytes(), &values, "deployctl's output");
    let answers = job_answers(&addr, &[&job, &compose_job]);
    assert!(answers.contains("DB_PASSWORD"), "the answers were read");
    assert!(answers.contains("dispatching deploy"), "{answers}");
    assert_holds_none(answers.as_bytes(), &values, "the API's answers");
    // The database while deployd runs (the WAL not checkpointed), then once it stopped.
    let db_files = files_under(&data.path().join("db"));
    assert!(
        db_files
            .iter()
            .any(|p| p.to_string_lossy().ends_with("-wal")),
        "{db_files:?}"
    );
    for file in &db_files {
        let bytes = std::fs::read(file).unwrap();
        assert_holds_none(&bytes, &values, &file.display().to_string());
    }
    let stderr_log = server.stderr();
    assert!(stderr_log.contains("agent"), "{stderr_log}");
    server.terminate();
    for file in files_under(&data.path().join("db")) {
        let bytes = std::fs::read(&file).unwrap();
        assert_holds_none(&bytes, &values, &file.display().to_string());
    }
    assert_holds_none(
        std::fs::read(data.path().join("deployd-stderr.txt"))
            .unwrap()
            .as_slice(),
        &values,
        "deployd's stderr",
    );
    // The agent: its stderr (its task lines included) and every file of its state dir
    // (credentials, journal entries with results and unacknowledged lines).
    let agent_log = agent.stderr();
    assert!(agent_log.contains("starting deploy"), "{agent_log}");
    agent.kill();
    assert_holds_none(agent_log.as_bytes(), &values, "the agent's stderr");
    let state_files = files_under(&state);
    assert!(
        state_files
            .iter()
            .any(|p| p.to_string_lossy().contains("journal")),
        "{state_files:?}"
    );
    for file in state_files {
        let bytes = std::fs::read(&file).unwrap();
        assert_holds_none(&bytes, &values, &file.display().to_string());
    }
}
