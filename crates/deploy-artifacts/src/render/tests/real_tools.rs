//! Every generated file checked by the real tool that reads it: `docker-compose config` (and `docker compose` where present), `nginx -t`, `systemd-analyze verify`, and `docker create --env-file`.
//!
//! The programs are installed by `scripts/peers/artifacts.sh`; a missing one
//! fails the test with its name. Each check also has a negative case, so a
//! harness that accepted everything would fail.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use deploy_core::Percent;
use deploy_testkit::{require_program, temp_dir};
use serde_yaml::Value;

use super::fixtures::{Inputs, SMALL, templates};
use crate::{Bundle, Colour, Traffic};

const HINT: &str = "scripts/peers/artifacts.sh installs it";

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_bundle(dir: &Path, bundle: &Bundle) {
    for a in &bundle.artifacts {
        std::fs::write(dir.join(a.file_name.as_str()), &a.content).unwrap();
    }
}

/// The compose CLIs on this machine: `docker-compose` (v1) and/or `docker compose` (v2).
fn compose_clis() -> Vec<Vec<&'static str>> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut clis = Vec::new();
    if works("docker-compose", &["version"]) {
        clis.push(vec!["docker-compose"]);
    }
    if works("docker", &["compose", "version"]) {
        clis.push(vec!["docker", "compose"]);
    }
    assert!(
        !clis.is_empty(),
        "neither `docker-compose` nor `docker compose` is installed; {HINT}"
    );
    clis
}

fn compose_config(cli: &[&str], dir: &Path, file: &str) -> Result<Value, String> {
    let out = run(Command::new(cli[0])
        .args(&cli[1..])
        .arg("-f")
        .arg(dir.join(file))
        .arg("config")
        .current_dir(dir));
    if !out.status.success() {
        return Err(format!(
            "{cli:?} -f {file} config failed:\n{}",
            text(&out.stderr)
        ));
    }
    Ok(yaml11_to_value(&out.stdout))
}

/// Reads `config` output as Compose v1 itself reads YAML (PyYAML, YAML 1.1): `1e3` is a
/// string there, a float for a YAML 1.2 reader. PyYAML ships with docker-compose.
fn yaml11_to_value(yaml: &[u8]) -> Value {
    let python = require_program("python3", &["/usr/bin"], "docker-compose v1 runs on it").unwrap();
    let mut child = Command::new(python)
        .args([
            "-c",
            "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyYAML could not read the config output: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `config` prints values with `$` escaped as `$$` (v1); v2 prints them as they are.
fn same_value(printed: &Value, expected: &str) -> bool {
    let printed = match printed {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("unexpected value {other:?}"),
    };
    printed == expected || printed == expected.replace('$', "$$")
}

fn assert_service_matches(config: &Value, bundle_inputs: &Inputs, file: &str, cli: &[&str]) {
    let bundle = bundle_inputs.render();
    let lock = crate::verify_lock(
        bundle
            .get(crate::LOCK_FILE_NAME)
            .unwrap()
            .content
            .as_bytes(),
    )
    .unwrap();
    let services = config["services"].as_mapping().unwrap();
    assert_eq!(
        services.len(),
        bundle_inputs.template.services.len(),
        "{cli:?} {file}"
    );
    for t in &bundle_inputs.template.services {
        let s = &config["services"][t.name.as_str()];
        let component = bundle_inputs
            .release
            .component(t.component.as_str())
            .unwrap();
        let image = format!("{}@{}", component.image.repository(), component.digest());
        assert_eq!(
            s["image"].as_str(),
            Some(image.as_str()),
            "{cli:?} {file} {}",
            t.name
        );
        assert!(
            lock.services
                .iter()
                .any(|(n, i)| n == t.name.as_str() && i == &component.image)
        );

        let mut expected_env: BTreeMap<&str, &str> = t
            .environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref().unwrap_or_default()))
            .collect();
        let release_id = bundle_inputs.release.id.to_string();
        expected_env.insert("STELLA_RELEASE_ID", &release_id);
        expected_env.insert("STELLA_DIGEST", component.digest().as_str());
        let env = s["environment"].as_mapping().unwrap();
        assert_eq!(
            env.len(),
            expected_env.len(),
            "{cli:?} {file} {}: {env:?}",
            t.name
        );
        for (k, v) in &expected_env {
            assert!(
                same_value(&s["environment"][*k], v),
                "{cli:?} {file} {} {k}: {:?} != {v:?}",
                t.name,
                s["environment"][*k]
            );
        }
        for (k, v) in &t.labels {
            assert!(
                same_value(&s["labels"][k.as_str()], v),
                "{cli:?} {file} label {k}"
            );
        }
        assert!(same_value(
            &s["labels"]["stella.digest"],
            component.digest().as_str()
        ));
        assert!(same_value(
            &s["labels"]["stella.deployed.at"],
            "2026-01-02T00:00:00.123Z"
        ));
    }
}

#[test]
fn compose_accepts_every_compose_file_and_lock_and_reads_back_the_values() {
    for cli in compose_clis() {
        for (name, template) in templates() {
            let inputs = Inputs::new(&template);
            let dir = temp_dir("stella-compose-").unwrap();
            write_bundle(dir.path(), &inputs.render());
            for file in [crate::COMPOSE_FILE_NAME, crate::LOCK_FILE_NAME] {
                let config = compose_config(&cli, dir.path(), file)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_service_matches(&config, &inputs, file, &cli);
            }
        }
    }
}

#[test]
fn compose_keeps_the_carried_keys() {
    let inputs = Inputs::new(SMALL);
    let dir = temp_dir("stella-compose-").unwrap();
    write_bundle(dir.path(), &inputs.render());
    for cli in compose_clis() {
        let config = compose_config(&cli, dir.path(), crate::COMPOSE_FILE_NAME).unwrap();
        let web = &config["services"]["web"];
        assert_eq!(
            web["command"][6].as_str().map(|s| s.replace("$$", "$")),
            Some("$5".to_owned())
        );
        assert_eq!(web["healthcheck"]["retries"].as_u64(), Some(3));
        assert_eq!(web["logging"]["options"]["max-size"].as_str(), Some("10m"));
        assert_eq!(web["restart"].as_str(), Some("unless-stopped"));
        // v1 keeps a string command as written; v2 splits it into words.
        let worker = &config["services"]["worker"]["command"];
        assert!(
            worker.as_str() == Some("worker --queue 'jobs high' --verbose")
                || worker[2].as_str() == Some("jobs high"),
            "{worker:?}"
        );
    }
}

#[test]
fn the_spec_generated_key_is_what_compose_refuses() {
    // Why the record lives under `x-generated`: the spec's top-level `generated` is rejected.
    let inputs = Inputs::new(SMALL);
    let dir = temp_dir("stella-compose-").unwrap();
    let bundle = inputs.render();
    let lock = &bundle.get(crate::LOCK_FILE_NAME).unwrap().content;
    std::fs::write(
        dir.path().join("spec.yml"),
        lock.replace("\nx-generated:\n", "\ngenerated:\n"),
    )
    .unwrap();
    for cli in compose_clis() {
        let err = compose_config(&cli, dir.path(), "spec.yml").unwrap_err();
        assert!(err.contains("generated"), "{err}");
    }
}

fn nginx_t(site: &str) -> Result<(), String> {
    let nginx = require_program("nginx", &["/usr/sbin"], HINT).unwrap();
    let dir = temp_dir("stella-nginx-").unwrap();
    let d = dir.path().display();
    std::fs::write(dir.path().join("site.conf"), site).unwrap();
    let wrapper = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n    include {d}/site.conf;\n}}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), wrapper).unwrap();
    let out = run(Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(dir.path().join("nginx.conf")));
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out.stderr))
    }
}

#[test]
fn nginx_accepts_every_config_and_traffic_split() {
    let splits = [
        Traffic::all_to(Colour::Blue),
        Traffic::all_to(Colour::Green),
        Traffic {
            live: Colour::Blue,
            canary: Some(Percent::new(1).unwrap()),
        },
        Traffic {
            live: Colour::Green,
            canary: Some(Percent::new(50).unwrap()),
        },
        Traffic {
            live: Colour::Blue,
            canary: Some(Percent::new(100).unwrap()),
        },
    ];
    for (name, template) in templates() {
        for traffic in splits {
            let mut inputs = Inputs::new(&template);
            inputs.traffic = traffic;
            let bundle = inputs.render();
            let conf = &bundle.get(crate::NGINX_FILE_NAME).unwrap().content;
            nginx_t(conf)
                .unwrap_or_else(|e| panic!("{name} {traffic:?}: nginx -t failed:\n{e}\n{conf}"));
        }
    }
    let err = nginx_t("upstream x { server 127.0.0.1:1 weight=0; }\n").unwrap_err();
    assert!(err.contains("weight"), "{err}");
}

/// `systemd-analyze verify` over several units at once (one process: it takes about 0.2 s to start).
fn systemd_verify(units: &[(&str, &str)]) -> Result<(), String> {
    let analyze = require_program("systemd-analyze", &[], HINT).unwrap();
    let dir = temp_dir("stella-systemd-").unwrap();
    let mut cmd = Command::new(analyze);
    cmd.arg("verify");
    for (name, content) in units {
        let path: PathBuf = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        cmd.arg(path);
    }
    let out = run(&mut cmd);
    let stderr = text(&out.stderr);
    if out.status.success() && !units.iter().any(|(name, _)| stderr.contains(name)) {
        Ok(())
    } else {
        Err(format!("exit {:?}\n{stderr}", out.status.code()))
    }
}

#[test]
fn systemd_accepts_every_unit() {
    require_program(
        "docker",
        &["/usr/bin"],
        "the units run /usr/bin/docker; it must exist for verify",
    )
    .unwrap();
    for (name, template) in templates() {
        let bundle = Inputs::new(&template).render();
        let units: Vec<(&str, &str)> = bundle
            .artifacts
            .iter()
            .filter(|a| a.kind == deploy_core::ArtifactKind::SystemdUnit)
            .map(|a| (a.file_name.as_str(), a.content.as_str()))
            .collect();
        assert!(!units.is_empty());
        systemd_verify(&units).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let broken = "[Service]\nExecStart=/nonexistent/stella-binary\n";
    assert!(systemd_verify(&[("stella-broken.service", broken)]).is_err());
    let bad_syntax = "[Service]\nExecStart=/usr/bin/docker run \"unterminated\n";
    assert!(systemd_verify(&[("stella-bad.service", bad_syntax)]).is_err());
}

const ENV_TEST_IMAGE: &str = "stella-artifacts-envtest:1";

/// The docker CLI, with an image of an empty filesystem present, enough for `docker create` (nothing is started).
fn docker_with_env_test_image() -> PathBuf {
    let docker = require_program(
        "docker",
        &["/usr/bin"],
        "Docker Engine runs on these machines",
    )
    .unwrap();
    ensure_env_test_image(&docker);
    docker
}

fn ensure_env_test_image(docker: &Path) {
    let exists = run(Command::new(docker).args(["image", "inspect", ENV_TEST_IMAGE]))
        .status
        .success();
    if exists {
        return;
    }
    let mut child = Command::new(docker)
        .args(["import", "-", ENV_TEST_IMAGE])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // An empty tar archive is two 512-byte zero blocks.
    child.stdin.take().unwrap().write_all(&[0u8; 1024]).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "docker import of the empty test image failed"
    );
}

/// The environment Docker gives a container created with `--env-file file` (created, inspected, removed; never started).
fn docker_env(docker: &Path, file: &Path) -> Vec<String> {
    let out = run(Command::new(docker)
        .arg("create")
        .arg("--env-file")
        .arg(file)
        .args([ENV_TEST_IMAGE, "/none"]));
    assert!(
        out.status.success(),
        "docker create failed: {}",
        text(&out.stderr)
    );
    let id = text(&out.stdout).trim().to_owned();
    let inspect =
        run(Command::new(docker).args(["inspect", "--format", "{{json .Config.Env}}", &id]));
    run(Command::new(docker).args(["rm", &id]));
    serde_json::from_slice(&inspect.stdout).unwrap()
}

#[test]
fn docker_run_env_file_reads_the_same_values() {
    let docker = docker_with_env_test_image();
    let inputs = Inputs::new(SMALL);
    let bundle = inputs.render();
    let dir = temp_dir("stella-envfile-").unwrap();
    write_bundle(dir.path(), &bundle);
    for t in &inputs.template.services {
        let file = dir.path().join(crate::env_file_name(&t.name));
        let env = docker_env(&docker, &file);
        for (k, v) in &t.environment {
            let line = format!("{k}={}", v.as_deref().unwrap_or_default());
            assert!(env.contains(&line), "{line:?} not in {env:?}");
        }
        assert!(env.iter().any(|l| l.starts_with("STELLA_DIGEST=sha256:")));
    }
}

/// Values that YAML 1.1 readers, Compose interpolation or the env-file readers could change.
const TRICKY_VALUES: &[&str] = &[
    "yes",
    "No",
    "on",
    "OFF",
    "~",
    "null",
    "0755",
    "0x1F",
    "12:30",
    "1e3",
    "1_000",
    ".inf",
    "-",
    "- dash",
    "a: b",
    "[x]",
    "{y}",
    "*star",
    "&amp",
    "!bang",
    "%s",
    "@at",
    "`tick`",
    "|pipe",
    ">fold",
    "back\\slash",
    "$",
    "$$",
    "a$b",
    "$HOME",
    "=x",
    "x=",
    "é",
    "日本語",
    "tab\there",
    "trailing\\",
    "it's",
    "say \"hi\"",
    "value # not a comment",
    "${HOME}",
    "${HOME:-x}",
    " leading",
    "trailing ",
    "'quoted'",
    "\"double\"",
    "#start",
    "",
];

#[test]
fn tricky_values_read_back_exactly_through_compose_and_docker() {
    let mut template = String::from(
        "services:\n  tricky:\n    componentName: web\n    command: [\"echo\", \";\", \"50%\", \"$$HOME\", \"a b\", \"\"]\n    environment:\n",
    );
    for (i, v) in TRICKY_VALUES.iter().enumerate() {
        let mut q = String::new();
        crate::yaml_out::quoted(&mut q, &v.replace('$', "$$"));
        template.push_str(&format!("      V{i}: {q}\n"));
    }
    template.push_str("    labels:\n");
    for (i, v) in TRICKY_VALUES.iter().enumerate() {
        let mut q = String::new();
        crate::yaml_out::quoted(&mut q, &v.replace('$', "$$"));
        template.push_str(&format!("      l{i}: {q}\n"));
    }
    let inputs = Inputs::new(&template);
    let t = &inputs.template.services[0];
    for (i, v) in TRICKY_VALUES.iter().enumerate() {
        assert_eq!(
            t.environment[&format!("V{i}")].as_deref(),
            Some(*v),
            "the template parser reads Compose syntax"
        );
    }
    let dir = temp_dir("stella-tricky-").unwrap();
    let bundle = inputs.render();
    write_bundle(dir.path(), &bundle);
    let unit = bundle.get("stella-tricky.service").unwrap();
    assert!(
        unit.content
            .contains(" echo \\; \"50%%\" \"$$HOME\" \"a b\" \"\"\n"),
        "{}",
        unit.content
    );
    systemd_verify(&[(unit.file_name.as_str(), unit.content.as_str())])
        .unwrap_or_else(|e| panic!("{e}\n{}", unit.content));
    let nginx = bundle.get(crate::NGINX_FILE_NAME).unwrap();
    nginx_t(&nginx.content).unwrap();
    for cli in compose_clis() {
        for file in [crate::COMPOSE_FILE_NAME, crate::LOCK_FILE_NAME] {
            let config = compose_config(&cli, dir.path(), file).unwrap();
            assert_service_matches(&config, &inputs, file, &cli);
        }
    }
    let docker = docker_with_env_test_image();
    let env = docker_env(&docker, &dir.path().join("tricky.env"));
    for (i, v) in TRICKY_VALUES.iter().enumerate() {
        let line = format!("V{i}={v}");
        assert!(env.contains(&line), "{line:?} not in {env:?}");
    }
}

/// A template using the keys docker_host applies and a few only Compose applies.
const ROUND_TRIP: &str = r#"
services:
  web:
    componentName: web
    command: ["serve", "--port", "8080", "--price", "$$5"]
    entrypoint: ["/bin/tini", "--"]
    ports: ["127.0.0.1:18080:8080", "9090"]
    expose: ["7000"]
    environment:
      GREETING: "value # not a comment"
      LITERAL: "$${HOME}"
    volumes:
      - /srv/web/config:/config:ro
      - data:/data
    tmpfs: /run
    read_only: true
    working_dir: /www
    user: "1000"
    init: true
    restart: unless-stopped
    networks:
      backend:
        aliases: [api]
    mem_limit: 64m
    cpus: 0.5
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/health"]
      interval: 10s
      retries: 3
    stop_signal: SIGINT
    stop_grace_period: 30s
    extra_hosts: ["db.internal:10.0.0.5"]
    logging:
      driver: json-file
      options: {max-size: 10m}
    labels:
      team: payments
    depends_on: [worker]
  worker:
    componentName: worker
    cap_add: [NET_ADMIN]
    ulimits:
      nofile: {soft: 1024, hard: 2048}
volumes:
  data: {}
networks:
  backend: {}
"#;

/// The user's template as Compose would take it with the images pinned: `componentName`
/// replaced by the component's `image` (repository@digest).
fn pinned_template(template: &str, inputs: &Inputs) -> String {
    let mut doc: Value = serde_yaml::from_str(template).unwrap();
    let services = doc["services"].as_mapping_mut().unwrap();
    for (_, service) in services.iter_mut() {
        let service = service.as_mapping_mut().unwrap();
        let component = service
            .remove("componentName")
            .and_then(|c| c.as_str().map(str::to_owned))
            .unwrap();
        let c = inputs.release.component(&component).unwrap();
        service.insert(
            "image".into(),
            format!("{}@{}", c.image.repository(), c.digest()).into(),
        );
    }
    serde_yaml::to_string(&doc).unwrap()
}

/// Our own labels and variables, which the deployed file adds to the user's.
fn without_ours(mut config: Value) -> Value {
    if let Some(services) = config["services"].as_mapping_mut() {
        for (_, service) in services.iter_mut() {
            let Some(service) = service.as_mapping_mut() else {
                continue;
            };
            for (key, prefix) in [("labels", "stella."), ("environment", "STELLA_")] {
                if let Some(map) = service.get_mut(key).and_then(Value::as_mapping_mut) {
                    map.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with(prefix)));
                    if map.is_empty() {
                        service.remove(key);
                    }
                }
            }
        }
    }
    config
}

#[test]
fn the_deployed_file_is_the_template_with_its_images_pinned() {
    let inputs = Inputs::new(ROUND_TRIP);
    let bundle = inputs.render();
    let dir = temp_dir("stella-round-trip-").unwrap();
    write_bundle(dir.path(), &bundle);
    std::fs::write(
        dir.path().join("pinned.yml"),
        pinned_template(ROUND_TRIP, &inputs),
    )
    .unwrap();
    for cli in compose_clis() {
        let expected = compose_config(&cli, dir.path(), "pinned.yml").unwrap();
        for file in [crate::COMPOSE_FILE_NAME, crate::LOCK_FILE_NAME] {
            let deployed = without_ours(compose_config(&cli, dir.path(), file).unwrap());
            assert_eq!(
                deployed["services"], expected["services"],
                "{cli:?}: `config` of {file} differs from the pinned template's"
            );
            for section in ["volumes", "networks"] {
                assert_eq!(
                    deployed[section], expected[section],
                    "{cli:?} {file} {section}"
                );
            }
        }
    }
    // A change anywhere in the definition changes the lock: the lock is the record.
    let other = Inputs::new(&ROUND_TRIP.replace("mem_limit: 64m", "mem_limit: 65m"));
    assert_ne!(
        other.render().get(crate::LOCK_FILE_NAME).unwrap().sha256,
        bundle.get(crate::LOCK_FILE_NAME).unwrap().sha256
    );
}

#[test]
fn a_multi_line_value_travels_in_the_compose_file_and_gets_no_env_file() {
    let value = "-----BEGIN KEY-----\nline two\r\nend\n";
    let mut q = String::new();
    crate::yaml_out::quoted(&mut q, value);
    let template = format!(
        "services:\n  keyed:\n    componentName: web\n    environment:\n      KEY: {q}\n  plain:\n    componentName: worker\n    environment:\n      A: b\n"
    );
    let inputs = Inputs::new(&template);
    let bundle = inputs.render();
    let names: Vec<&str> = bundle
        .artifacts
        .iter()
        .map(|a| a.file_name.as_str())
        .collect();
    // The env-file cannot hold the value, so the service has neither it nor the unit
    // that reads it; the other service keeps both.
    assert_eq!(
        names,
        [
            "docker-compose.yml",
            "docker-compose.lock.yml",
            "plain.env",
            "stella-plain.service",
            "nginx.conf",
            "manifest.json"
        ]
    );
    let dir = temp_dir("stella-multiline-").unwrap();
    write_bundle(dir.path(), &bundle);
    for cli in compose_clis() {
        for file in [crate::COMPOSE_FILE_NAME, crate::LOCK_FILE_NAME] {
            let config = compose_config(&cli, dir.path(), file).unwrap();
            assert!(
                same_value(&config["services"]["keyed"]["environment"]["KEY"], value),
                "{cli:?} {file}: {:?}",
                config["services"]["keyed"]["environment"]["KEY"]
            );
            assert_service_matches(&config, &inputs, file, &cli);
        }
    }
}
