//! The fast paths of docker_host: the instant revert to the kept `-previous`, blue kept running beside green, published addresses, and the nginx traffic switch.

use std::time::{Duration, Instant};

use deploy_core::{CommandSpec, TargetType, UnixPath};
use deploy_exec::{Executor, TrafficSwitch};
use deploy_testkit::{IMAGE_HTTP_PORT, Nginx, SSH_TEST_USER};

use crate::common::*;

/// `docker inspect --format <format> <container>`, trimmed.
fn inspect(container: &str, format: &str) -> String {
    deploy_testkit::run_checked("docker", &["inspect", "--format", format, container])
        .unwrap()
        .trim()
        .to_owned()
}

fn running(container: &str) -> bool {
    inspect(container, "{{.State.Running}}") == "true"
}

/// GET `path` from `addr`.
fn get(addr: &str, path: &str) -> (u16, String) {
    let (status, body) = deploy_testkit::http_get(addr, path).unwrap();
    (status, body.trim().to_owned())
}

/// Waits (5 s at most) until nginx answers `version` on 10 requests in a row.
async fn settles_on(nginx: &Nginx, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut in_a_row = 0;
    let mut last = (0, String::new());
    while in_a_row < 10 && Instant::now() < deadline {
        last = get(&nginx.address(), "/version");
        in_a_row = if last == (200, version.to_owned()) {
            in_a_row + 1
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(in_a_row, 10, "last answer {last:?}\n{}", nginx.error_log());
}

#[tokio::test]
async fn a_rollback_to_the_kept_previous_starts_it_again_instead_of_a_new_container() {
    let s = Scene::start("revert", TargetType::DockerHost);
    let (exec, target, web, peers) = (&s.exec, &s.target, &s.web, &s.peers);
    let (logs, c) = ctx(60);
    s.deploy_web(&peers.images.v1, 1, &c, &logs).await;
    let v1_id = inspect(web.as_str(), "{{.Id}}");
    s.deploy_web(&peers.images.v2, 2, &c, &logs).await;
    let previous = format!("{web}-previous");
    assert_eq!(inspect(&previous, "{{.Id}}"), v1_id);

    // At once, while the background stop of v1 (1 s grace, ignored SIGTERM) is pending.
    let r = exec
        .deploy(&docker_request(target, web, &peers.images.v1, 3), &c)
        .await;
    let r = r.unwrap_or_else(|e| panic!("{e:?}\n{:#?}", logs.lines()));
    assert!(r.changed);
    assert_eq!(r.previous_digest, Some(digest_of(&peers.images.v2)));
    // The very container that ran v1 before: started again, no `docker run`.
    assert_eq!(inspect(web.as_str(), "{{.Id}}"), v1_id);
    assert_eq!(version_of(web.as_str()), "v1");
    let lines = logs.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("started again and swapped in")),
        "{lines:#?}"
    );
    // The pending stop of v1 does not take the revived container down afterwards...
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(running(web.as_str()), "v1 was stopped after its revert");
    assert_eq!(version_of(web.as_str()), "v1");
    // ...and v2, now the kept previous, is stopped in the background.
    assert_eq!(
        label(&previous, "stella.digest"),
        digest_of(&peers.images.v2).as_str()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(&previous) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!running(&previous), "{previous} still runs");

    // A stopped kept previous is started again too (v2 back), and a digest that is not
    // the kept one still gets a new container.
    let r = exec
        .deploy(&docker_request(target, web, &peers.images.v2, 4), &c)
        .await;
    assert!(r.is_ok(), "{r:?}\n{:#?}", logs.lines());
    assert_eq!(version_of(web.as_str()), "v2");
    let v2_id = inspect(web.as_str(), "{{.Id}}");
    let r = exec
        .deploy(&docker_request(target, web, &peers.images.v3_broken, 5), &c)
        .await;
    assert!(r.is_ok(), "{r:?}\n{:#?}", logs.lines());
    assert_ne!(inspect(web.as_str(), "{{.Id}}"), v2_id);
    assert_ne!(inspect(web.as_str(), "{{.Id}}"), v1_id);
    // The kept v2 does not have the definition the request asks for (one more port): a new container.
    assert_eq!(inspect(&previous, "{{.Id}}"), v2_id);
    let mut more_ports = docker_request(target, web, &peers.images.v2, 6);
    if let Some(c) = more_ports.component.as_mut() {
        c.container.ports.push(loopback_port(9999));
    }
    let r = exec.deploy(&more_ports, &c).await;
    assert!(r.is_ok(), "{r:?}\n{:#?}", logs.lines());
    assert_ne!(inspect(web.as_str(), "{{.Id}}"), v2_id);
    assert_eq!(version_of(web.as_str()), "v2");
    exec.close_all().await;
}

#[tokio::test]
async fn blue_keeps_running_beside_green_until_retired_and_both_addresses_are_reported() {
    let s = Scene::start("keep", TargetType::DockerHost);
    let (exec, target, web, peers) = (&s.exec, &s.target, &s.web, &s.peers);
    let (logs, c) = ctx(60);
    s.deploy_web(&peers.images.v1, 1, &c, &logs).await;
    let only = exec
        .published(target, web, IMAGE_HTTP_PORT, &c)
        .await
        .unwrap();
    assert!(
        only.current.is_some() && only.previous.is_none(),
        "{only:?}"
    );

    let mut green = docker_request(target, web, &peers.images.v2, 2);
    if let Some(c) = green.component.as_mut() {
        c.keep_previous_running = true;
    }
    let r = exec.deploy(&green, &c).await;
    assert!(r.is_ok(), "{r:?}\n{:#?}", logs.lines());
    let previous = format!("{web}-previous");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(running(&previous), "blue was stopped");
    let both = exec
        .published(target, web, IMAGE_HTTP_PORT, &c)
        .await
        .unwrap();
    let (green_addr, blue_addr) = (both.current.unwrap(), both.previous.unwrap());
    assert_eq!(get(&green_addr, "/version"), (200, "v2".to_owned()));
    assert_eq!(get(&blue_addr, "/version"), (200, "v1".to_owned()));

    exec.retire_previous(target, web, &c).await.unwrap();
    assert!(!running(&previous), "blue still runs after retire");
    assert!(running(web.as_str()));
    let after = exec
        .published(target, web, IMAGE_HTTP_PORT, &c)
        .await
        .unwrap();
    assert_eq!(after.previous, None);
}

#[tokio::test]
async fn the_traffic_switch_reloads_nginx_and_puts_the_old_config_back_when_refused() {
    let s = Scene::start("switch", TargetType::DockerHost);
    let (exec, target, web, peers) = (&s.exec, &s.target, &s.web, &s.peers);
    let (logs, c) = ctx(60);
    let nginx = Nginx::start(SSH_TEST_USER).unwrap();
    s.deploy_web(&peers.images.v1, 1, &c, &logs).await;
    let addr = deploy_testkit::published_addr(web.as_str(), IMAGE_HTTP_PORT).unwrap();
    let argv = |v: Vec<String>| CommandSpec::new(v).unwrap();
    let include = UnixPath::parse(&nginx.include_path().display().to_string()).unwrap();
    let good = TrafficSwitch {
        path: include.clone(),
        content: format!(
            "upstream app {{ server {addr}; }}\nserver {{\n    listen {};\n    location / {{ proxy_pass http://app; }}\n}}\n",
            nginx.port()
        ),
        test: argv(nginx.test_argv()),
        reload: argv(nginx.reload_argv()),
    };
    assert_eq!(get(&nginx.address(), "/version").0, 503);
    exec.switch_traffic(target, &good, &c)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{:#?}\n{}", logs.lines(), nginx.error_log()));
    // A reload is asynchronous: new workers serve the new config at once, old ones
    // until they have taken in the master's quit.
    settles_on(&nginx, "v1").await;

    // A config nginx refuses: the switch fails naming `nginx -t`, the old file is back.
    let bad = TrafficSwitch {
        content: "upstream app { server 127.0.0.1:1; }\nserver { listen 1; no_such_directive; }\n"
            .to_owned(),
        ..good.clone()
    };
    let err = exec.switch_traffic(target, &bad, &c).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("nginx -t and reload"), "{text}");
    assert!(text.contains("no_such_directive"), "{text}");
    assert_eq!(
        std::fs::read_to_string(nginx.include_path()).unwrap(),
        good.content
    );
    settles_on(&nginx, "v1").await;
}
