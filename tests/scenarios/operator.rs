//! The operator workflow through the real `deployctl` and `deployd`, over a real sshd host and registry, everything by name: an environment pipeline (staging before prod), an approval policy (the requester cannot approve, a second token does and the job runs), declarative `apply` (a second run changes nothing, `--dry-run` prints the diff and writes nothing), `get env` round-tripping into `apply`, a disabled target skipped, and the audit log naming who did what.

use std::process::Output;

use deploy_testkit::{SSH_TEST_USER, SshdHosts};
use serde_json::Value;

use crate::deployd_e2e::{KEY_VAR, KillOnDrop, SshWorld, job_id_of, serves, target_add_args};
use crate::deployd_proc::{ctl, ctl_as, ctl_command, ok_json};

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The environment document of prod: its pipeline, policy, and one target on sshd
/// host 1 (containers `<prefix>prd-web`).
fn prod_document(hosts: &SshdHosts, prefix: &str, zone: &str, disabled_extra: bool) -> String {
    let mut doc = format!(
        "name: prod
variables:
  LOG_LEVEL: info
approval:
  required_approvals: 1
requires: [staging]
targets:
  - name: host-1
    target_type: docker_host
    connection:
      model: ssh
      host: {host}
      port: {port}
      user: {SSH_TEST_USER}
      credential_ref: env:{KEY_VAR}
      work_dir: /tmp
    labels:
      deploy.container-prefix: {prefix}prd-
      zone: {zone}
",
        host = hosts.host(1),
        port = hosts.port(),
    );
    if disabled_extra {
        doc.push_str(&format!(
            "  - name: host-spare
    target_type: docker_host
    connection: {{model: ssh, host: {host}, port: {port}, user: {SSH_TEST_USER}, credential_ref: 'env:{KEY_VAR}', work_dir: /tmp}}
    labels: {{deploy.container-prefix: {prefix}spare-}}
    disabled: true
",
            host = hosts.host(1),
            port = hosts.port(),
        ));
    }
    doc
}

fn audit_rows(addr: &str) -> usize {
    ok_json(addr, &["audit", "--limit", "500"])["entries"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn a_release_goes_through_staging_and_an_approval_to_prod_by_names() {
    let prefix = format!("op{}-", std::process::id());
    let world = SshWorld::start(&prefix, "operator-");
    let (hosts, images, data) = (&world.hosts, &world.images, &world.data);
    let addr = world.addr.clone();

    // staging by commands, by name.
    ok_json(&addr, &["env", "create", "staging"]);
    // A soak of 3 s keeps a staging job busy long enough for a second one to queue.
    let add = target_add_args("staging", hosts, 1, &format!("{prefix}stg-"), 3_000);
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    ok_json(&addr, &add);
    let component = format!("web={}", images.v1);
    ok_json(
        &addr,
        &["release", "create", "v1", "--component", &component],
    );
    let component = format!("web={}", images.v2);
    ok_json(
        &addr,
        &["release", "create", "v2", "--component", &component],
    );

    // prod from a file: a dry run writes nothing, the apply creates, a second apply is a no-op.
    let file = data.path().join("prod.yaml");
    std::fs::write(&file, prod_document(hosts, &prefix, "a", true)).unwrap();
    let file = file.display().to_string();
    let before = audit_rows(&addr);
    let dry = ctl(&addr, &["apply", "-f", &file, "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    let shown = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(shown.contains("+ environment prod"), "{shown}");
    assert!(
        shown.contains("+ target host-1") && shown.contains("+ target host-spare"),
        "{shown}"
    );
    assert_eq!(audit_rows(&addr), before, "a dry run writes nothing");
    assert_eq!(ctl(&addr, &["env", "show", "prod"]).status.code(), Some(2));

    let applied = ctl(&addr, &["apply", "-f", &file]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    let after_first = audit_rows(&addr);
    assert!(after_first > before);
    let again = ctl(&addr, &["apply", "-f", &file]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "environment prod unchanged"
    );
    assert_eq!(
        audit_rows(&addr),
        after_first,
        "the second apply wrote nothing"
    );

    // `get env` prints what apply reads: applying it changes nothing.
    let got = ctl(&addr, &["get", "env", "prod"]);
    assert_eq!(got.status.code(), Some(0), "{}", text(&got));
    let exported = data.path().join("exported.yaml");
    std::fs::write(&exported, &got.stdout).unwrap();
    let round = ctl(&addr, &["apply", "-f", &exported.display().to_string()]);
    assert!(
        String::from_utf8_lossy(&round.stdout).contains("environment prod unchanged"),
        "{}",
        text(&round)
    );
    // A changed label: the dry run names the field and writes nothing.
    std::fs::write(&file, prod_document(hosts, &prefix, "b", true)).unwrap();
    let dry = ctl(&addr, &["apply", "-f", &file, "--dry-run"]);
    let shown = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(shown.contains("~ target host-1"), "{shown}");
    assert!(shown.contains("labels.zone: \"a\" -> \"b\""), "{shown}");
    assert_eq!(audit_rows(&addr), after_first);

    // The pipeline: v1 has not completed in staging, prod refuses it, naming staging.
    let alice = ok_json(&addr, &["token", "create", "alice", "--role", "deployer"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob = ok_json(&addr, &["token", "create", "bob", "--role", "deployer"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = ctl_as(
        &addr,
        &alice,
        &["deploy", "--release", "v1", "--env", "prod"],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("release `v1` has not completed in `staging` yet"),
        "{}",
        text(&refused)
    );
    let typo = ctl_as(
        &addr,
        &alice,
        &["deploy", "--release", "v1", "--env", "stagin"],
    );
    assert_eq!(typo.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&typo.stderr)
            .contains("no environment named `stagin`; close matches: `staging`"),
        "{}",
        text(&typo)
    );

    // staging first (no policy there: the requester's own approval is enough); while
    // v1 soaks there, v2 waits in line with --queue and runs after it.
    let first = ctl_command(
        &addr,
        &["deploy", "--release", "v1", "--env", "staging", "--follow"],
    )
    .env("DEPLOYCTL_TOKEN", &alice)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut first = KillOnDrop(first);
    let started = std::time::Instant::now();
    while ok_json(&addr, &["jobs", "list", "--env", "staging"])["jobs"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no staging job"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let busy = ctl_as(
        &addr,
        &alice,
        &["deploy", "--release", "v2", "--env", "staging"],
    );
    assert_eq!(
        busy.status.code(),
        Some(2),
        "without --queue a busy environment refuses: {}",
        text(&busy)
    );
    let queued = ctl_as(
        &addr,
        &alice,
        &[
            "deploy",
            "--release",
            "v2",
            "--env",
            "staging",
            "--queue",
            "--follow",
        ],
    );
    assert_eq!(queued.status.code(), Some(0), "{}", text(&queued));
    let shown = String::from_utf8_lossy(&queued.stdout).into_owned();
    assert!(shown.contains("waits in line behind job"), "{shown}");
    let status = first.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the first staging deploy");
    assert_eq!(serves(&format!("{prefix}stg-web"), "/version"), "v2");
    let staging_jobs = ok_json(
        &addr,
        &["jobs", "list", "--env", "staging", "--status", "completed"],
    );
    assert_eq!(staging_jobs["jobs"].as_array().unwrap().len(), 2);

    // prod: alice requests, her own approval does not count (exit 6, it waits).
    let waiting = ctl_as(
        &addr,
        &alice,
        &["deploy", "--release", "v1", "--env", "prod"],
    );
    assert_eq!(waiting.status.code(), Some(6), "{}", text(&waiting));
    let queue = ok_json(
        &addr,
        &[
            "promotions",
            "list",
            "--env",
            "prod",
            "--status",
            "requested",
        ],
    );
    let queued = queue["promotions"].as_array().unwrap();
    assert_eq!(queued.len(), 1, "{queue}");
    assert_eq!(queued[0]["requested_by"], "alice");
    let promotion = queued[0]["id"].as_str().unwrap().to_owned();
    assert!(String::from_utf8_lossy(&waiting.stderr).contains(&promotion));
    let own = ctl_as(&addr, &alice, &["promotions", "approve", &promotion]);
    assert_ne!(own.status.code(), Some(0), "{}", text(&own));
    assert!(
        String::from_utf8_lossy(&own.stderr).contains("token `alice` requested this promotion"),
        "{}",
        text(&own)
    );
    // bob approves: the job runs to completion on host-1 only (host-spare is disabled).
    let approved = ctl_as(
        &addr,
        &bob,
        &["promotions", "approve", &promotion, "--follow"],
    );
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    let job = job_id_of(&String::from_utf8_lossy(&approved.stdout));
    let shown = ok_json(&addr, &["jobs", "show", &job]);
    assert_eq!(shown["status"], "completed");
    assert_eq!(
        shown["tasks"].as_array().unwrap().len(),
        1,
        "the disabled target got no task"
    );
    assert_eq!(serves(&format!("{prefix}prd-web"), "/version"), "v1");
    let spare = deploy_testkit::run_checked(
        "docker",
        &[
            "ps",
            "-a",
            "--filter",
            &format!("name={prefix}spare-"),
            "--format",
            "{{.Names}}",
        ],
    )
    .unwrap();
    assert!(
        spare.trim().is_empty(),
        "nothing ran on the disabled target: {spare}"
    );
    let promotion_now = ok_json(&addr, &["promotions", "show", &promotion]);
    assert_eq!(promotion_now["status"], "approved");
    assert_eq!(promotion_now["decided_by"], "bob");

    // The audit log says who did it.
    let bobs = ok_json(&addr, &["audit", "--actor", "bob"]);
    let approve = bobs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["route"] == "/api/v1/promotions/{id}/approve")
        .unwrap_or_else(|| panic!("{bobs}"));
    assert_eq!(approve["entity_id"], promotion.as_str());
    assert_eq!(approve["status"], 201);
    assert!(
        approve["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{approve}"
    );
    let alices: Vec<Value> = ok_json(&addr, &["audit", "--actor", "alice"])["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        alices
            .iter()
            .any(|e| e["route"] == "/api/v1/promotions/{id}/approve" && e["status"] == 403),
        "the refused self-approval is recorded: {alices:?}"
    );
    // A viewer does not read it.
    let viewer = ok_json(&addr, &["token", "create", "carol", "--role", "viewer"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(ctl_as(&addr, &viewer, &["audit"]).status.code(), Some(4));
}
