//! Unit tests of reading Compose service keys into a `ContainerSpec`: every supported key, the Compose shorthand forms, and each refusal with its path.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use deploy_core::testing::digest;
use deploy_core::{
    ContainerHealthcheck, ContainerSpec, ExposedPort, ExtraHost, ImageRef, Logging, Mount,
    NetworkAttachment, PortMapping, Protocol, RestartPolicy, UpdateOrder,
};

use super::*;
use crate::parse_template;

fn image() -> ImageRef {
    ImageRef::from_parts("127.0.0.1:5000/web", &digest(7)).unwrap()
}

/// The first service of `template` read for a docker_host target of project `prod`.
fn spec(template: &str, applies: Applies) -> Result<ContainerSpec, String> {
    let t = parse_template(template.as_bytes()).map_err(|e| e.to_string())?;
    let svc = &t.services[0];
    let env: BTreeMap<String, String> = svc
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
        .collect();
    container_spec(
        svc.name.as_str(),
        &svc.body,
        &ServiceContext {
            image: &image(),
            project: "prod",
            env: &env,
            labels: &svc.labels,
            volumes: t.volumes.as_ref(),
            networks: t.networks.as_ref(),
        },
        applies,
    )
    .map_err(|e| e.to_string())
}

fn ok(template: &str) -> ContainerSpec {
    spec(template, Applies::DockerHost).unwrap_or_else(|e| panic!("{template}\n{e}"))
}

fn refused(template: &str, applies: Applies, expected: &str) {
    let e = spec(template, applies).expect_err(template);
    assert!(
        e.contains(expected),
        "{template}\nerror: {e}\nexpected: {expected}"
    );
}

const FULL: &str = r#"
services:
  web:
    componentName: web
    command: ["httpd", "-f", "-p", "8080"]
    entrypoint: /bin/busybox
    environment:
      GREETING: "value # not a comment"
      LITERAL: "$${HOME}"
    labels:
      team: payments
    ports:
      - "127.0.0.1:18080:8080"
      - "9090"
    expose: ["7000/udp"]
    volumes:
      - /srv/web/config:/config:ro
      - data:/data
      - type: tmpfs
        target: /cache
        tmpfs: { size: 64m }
    tmpfs: /run
    read_only: true
    working_dir: /www
    user: "1000:1000"
    hostname: web-1
    init: true
    restart: unless-stopped
    networks:
      backend:
        aliases: [api]
    mem_limit: 128m
    cpus: 0.5
    healthcheck:
      test: wget -q -O- http://127.0.0.1:8080/health
      interval: 2s
      timeout: 1s
      retries: 5
      start_period: 500ms
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    extra_hosts: ["db.internal:10.0.0.5", "v6=::1"]
    logging:
      driver: json-file
      options: { max-size: 10m }
    depends_on: [worker]
  worker:
    componentName: worker
volumes:
  data: {}
networks:
  backend: { driver: bridge }
"#;

#[test]
fn every_supported_key_reaches_the_spec() {
    let s = ok(FULL);
    assert_eq!(s.image, image());
    assert_eq!(s.command.as_deref().unwrap(), ["httpd", "-f", "-p", "8080"]);
    assert_eq!(s.entrypoint.as_deref().unwrap(), ["/bin/busybox"]);
    assert_eq!(s.env["GREETING"], "value # not a comment");
    assert_eq!(s.env["LITERAL"], "${HOME}");
    assert_eq!(s.labels["team"], "payments");
    assert_eq!(
        s.ports,
        [
            PortMapping {
                host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                host_port: Some(18080),
                container_port: 8080,
                protocol: Protocol::Tcp,
            },
            PortMapping {
                host_ip: None,
                host_port: None,
                container_port: 9090,
                protocol: Protocol::Tcp,
            },
        ]
    );
    assert_eq!(
        s.expose,
        [ExposedPort {
            port: 7000,
            protocol: Protocol::Udp
        }]
    );
    assert_eq!(
        s.mounts,
        [
            Mount::Bind {
                source: "/srv/web/config".into(),
                target: "/config".into(),
                read_only: true,
            },
            Mount::Volume {
                name: "prod_data".into(),
                target: "/data".into(),
                read_only: false,
                driver: None,
                driver_opts: BTreeMap::new(),
                external: false,
            },
            Mount::Tmpfs {
                target: "/cache".into(),
                size_bytes: Some(64 << 20),
            },
            Mount::Tmpfs {
                target: "/run".into(),
                size_bytes: None,
            },
        ]
    );
    assert!(s.read_only && s.init);
    assert_eq!(s.working_dir.as_deref(), Some("/www"));
    assert_eq!(s.user.as_deref(), Some("1000:1000"));
    assert_eq!(s.hostname.as_deref(), Some("web-1"));
    assert_eq!(s.restart, RestartPolicy::UnlessStopped);
    assert_eq!(
        s.networks,
        [NetworkAttachment {
            name: "prod_backend".into(),
            aliases: vec!["web".into(), "api".into()],
            driver: Some("bridge".into()),
            driver_opts: BTreeMap::new(),
            external: false,
        }]
    );
    assert_eq!(s.memory_bytes, Some(128 << 20));
    assert_eq!(s.nano_cpus, Some(500_000_000));
    assert_eq!(
        s.healthcheck,
        Some(ContainerHealthcheck {
            test: vec![
                "CMD-SHELL".into(),
                "wget -q -O- http://127.0.0.1:8080/health".into()
            ],
            interval_ms: Some(2000),
            timeout_ms: Some(1000),
            retries: Some(5),
            start_period_ms: Some(500),
        })
    );
    assert_eq!(s.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(s.stop_grace_secs, 90);
    assert_eq!(
        s.extra_hosts,
        [
            ExtraHost {
                host: "db.internal".into(),
                ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))
            },
            ExtraHost {
                host: "v6".into(),
                ip: IpAddr::V6(Ipv6Addr::LOCALHOST)
            },
        ]
    );
    assert_eq!(
        s.logging,
        Some(Logging {
            driver: "json-file".into(),
            options: [("max-size".to_owned(), "10m".to_owned())].into(),
        })
    );
}

fn with(service_body: &str) -> String {
    format!("services:\n  web:\n    componentName: web\n{service_body}")
}

#[test]
fn port_forms() {
    let ports = |body: &str| ok(&with(body)).ports;
    let p = ports("    ports: [\"[::1]:9000:9000/udp\", 8080, \"8000-8002:9000-9002\"]\n");
    assert_eq!(p.len(), 5);
    assert_eq!(p[0].host_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert_eq!(p[0].protocol, Protocol::Udp);
    assert_eq!((p[1].host_port, p[1].container_port), (None, 8080));
    assert_eq!((p[4].host_port, p[4].container_port), (Some(8002), 9002));
    let long = ports(
        "    ports:\n      - target: 80\n        published: \"8081\"\n        host_ip: 127.0.0.1\n        protocol: tcp\n",
    );
    assert_eq!(
        long,
        [PortMapping {
            host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            host_port: Some(8081),
            container_port: 80,
            protocol: Protocol::Tcp,
        }]
    );
    for (body, expected) in [
        (
            "    ports: [\"80:70000\"]\n",
            "services.web.ports[0] is `70000`",
        ),
        ("    ports: [\"x:1:2:3\"]\n", "services.web.ports[0]"),
        ("    ports: [\"1-3:4-5\"]\n", "a host range of 2 ports"),
        ("    ports: [\"80/icmp\"]\n", "tcp, udp or sctp"),
        (
            "    ports: [\"8080:80\", \"8080:81\"]\n",
            "each host port once",
        ),
        ("    ports:\n      - published: 80\n", "a `target` port"),
    ] {
        refused(&with(body), Applies::DockerHost, expected);
    }
}

#[test]
fn volume_forms_and_refusals() {
    let t = "services:\n  web:\n    componentName: web\n    volumes:\n      - cache:/cache\n      - shared:/shared:ro\n      - legacy:/legacy\nvolumes:\n  cache:\n    name: my-cache\n  shared:\n    external: true\n  legacy:\n    external: { name: old-volume }\n";
    let names: Vec<_> = ok(t)
        .mounts
        .iter()
        .map(|m| match m {
            Mount::Volume {
                name,
                external,
                read_only,
                ..
            } => (name.clone(), *external, *read_only),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            ("my-cache".to_owned(), false, false),
            ("shared".to_owned(), true, true),
            ("old-volume".to_owned(), true, false)
        ]
    );
    for (body, expected) in [
        (
            "    volumes: [\"/data\"]\n",
            "an anonymous volume would be lost",
        ),
        ("    volumes: [\"./conf:/conf\"]\n", "an absolute host path"),
        (
            "    volumes: [\"undeclared:/data\"]\n",
            "services.web.volumes[0] is `undeclared`; expected a volume declared under the top-level `volumes:`",
        ),
        ("    volumes: [\"/a:/b:rw,weird\"]\n", "a mode of ro, rw"),
        (
            "    volumes: [\"/a:/b\", \"/c:/b\"]\n",
            "each container path mounted once",
        ),
        ("    volumes: [\"/etc/../x:/b\"]\n", "without `..`"),
    ] {
        refused(&with(body), Applies::DockerHost, expected);
    }
}

#[test]
fn compose_only_keys_pass_a_check_but_not_a_docker_host() {
    let t = with("    privileged: true\n");
    assert!(spec(&t, Applies::Validate).is_ok());
    refused(
        &t,
        Applies::DockerHost,
        "services.web.privileged is `true`; expected no such key on a docker_host target",
    );
    refused(
        &with("    deploy:\n      replicas: 3\n"),
        Applies::DockerHost,
        "services.web.deploy.replicas",
    );
    let limits = ok(&with(
        "    deploy:\n      resources:\n        limits: { memory: 1g, cpus: \"2\" }\n",
    ));
    assert_eq!(limits.memory_bytes, Some(1 << 30));
    assert_eq!(limits.nano_cpus, Some(2_000_000_000));
    refused(
        &with(
            "    mem_limit: 64m\n    deploy:\n      resources:\n        limits: { memory: 1g }\n",
        ),
        Applies::DockerHost,
        "the same limit as `mem_limit`",
    );
}

#[test]
fn misspelt_and_release_owned_keys_are_refused_when_the_template_is_read() {
    for (body, expected) in [
        (
            "    volumnes: []\n",
            "services.web.volumnes is `[]`; expected a Compose service key (is it misspelt?)",
        ),
        ("    image: nginx\n", "the release pins the image"),
        ("    env_file: [a.env]\n", "values go in `environment:`"),
        ("    container_name: x\n", "the deployment names containers"),
        ("    mem_limit: lots\n", "services.web.mem_limit is `lots`"),
        (
            "    healthcheck: { interval: 1s }\n",
            "services.web.healthcheck is `(no test)`",
        ),
        (
            "    restart: sometimes\n",
            "services.web.restart is `sometimes`",
        ),
        (
            "    networks: [nowhere]\n",
            "services.web.networks.nowhere is `nowhere`",
        ),
        (
            "    extra_hosts: [\"db:not-an-ip\"]\n",
            "services.web.extra_hosts[0] is `not-an-ip`",
        ),
        ("    cpus: 0\n", "services.web.cpus"),
    ] {
        let e = parse_template(with(body).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(expected),
            "{body}\nerror: {e}\nexpected: {expected}"
        );
    }
}

#[test]
fn healthcheck_forms() {
    let h = |body: &str| ok(&with(body)).healthcheck.unwrap();
    assert_eq!(
        h("    healthcheck:\n      test: [\"CMD\", \"true\"]\n").test,
        ["CMD", "true"]
    );
    assert!(h("    healthcheck:\n      disable: true\n").disables());
    assert_eq!(
        h("    healthcheck:\n      test: [\"NONE\"]\n").test,
        ["NONE"]
    );
}

#[test]
fn restart_forms() {
    let r = |v: &str| ok(&with(&format!("    restart: {v}\n"))).restart;
    assert_eq!(r("\"no\""), RestartPolicy::No);
    assert_eq!(
        r("no"),
        RestartPolicy::No,
        "YAML 1.1 reads a bare no as false"
    );
    assert_eq!(r("always"), RestartPolicy::Always);
    assert_eq!(
        r("on-failure:3"),
        RestartPolicy::OnFailure {
            max_retries: Some(3)
        }
    );
    assert_eq!(
        ok(&with("")).restart,
        RestartPolicy::UnlessStopped,
        "docker_host's default"
    );
}

#[test]
fn a_service_without_networks_joins_the_projects_default_network_by_its_name() {
    let s = ok(&with(""));
    assert_eq!(
        s.networks,
        [NetworkAttachment {
            name: "prod_default".to_owned(),
            aliases: vec!["web".to_owned()],
            driver: None,
            driver_opts: BTreeMap::new(),
            external: false,
        }]
    );
    // As declared under the top-level `networks: default:` when it is.
    let declared = ok(&format!(
        "{}networks:\n  default:\n    name: shared\n    external: true\n",
        with("")
    ));
    assert_eq!(declared.networks[0].name, "shared");
    assert!(declared.networks[0].external);
    assert_eq!(declared.networks[0].aliases, ["web"]);
}

#[test]
fn settings_a_docker_host_would_drop_are_refused_there_and_pass_a_check() {
    let cases = [
        (
            "    volumes: [\"/a:/b:z\"]\n",
            "services.web.volumes[0] is `z`",
        ),
        (
            "    volumes: [\"data:/b:nocopy\"]\nvolumes:\n  data: {}\n",
            "is `nocopy`",
        ),
        (
            "    volumes:\n      - type: bind\n        source: /a\n        target: /b\n        bind: { propagation: rshared }\n",
            "services.web.volumes[0].bind",
        ),
        (
            "    volumes:\n      - type: volume\n        source: data\n        target: /b\n        volume: { subpath: x }\nvolumes:\n  data: {}\n",
            "services.web.volumes[0].volume",
        ),
        (
            "    volumes:\n      - type: tmpfs\n        target: /t\n        tmpfs: { mode: 1777 }\n",
            "services.web.volumes[0].tmpfs.mode",
        ),
        (
            "    tmpfs: [\"/t:mode=1777\"]\n",
            "services.web.tmpfs[0] is `mode=1777`",
        ),
        (
            "    networks: [back]\nnetworks:\n  back: { internal: true }\n",
            "networks.back.internal",
        ),
        (
            "    networks: [back]\nnetworks:\n  back: { labels: { a: b } }\n",
            "networks.back.labels",
        ),
        (
            "    volumes: [\"data:/d\"]\nvolumes:\n  data: { labels: { a: b } }\n",
            "volumes.data.labels",
        ),
        (
            "    healthcheck: { test: [\"CMD\", \"true\"], start_interval: 1s }\n",
            "services.web.healthcheck.start_interval",
        ),
    ];
    for (body, expected) in cases {
        let t = with(body);
        assert!(spec(&t, Applies::Validate).is_ok(), "{t}");
        refused(&t, Applies::DockerHost, expected);
        refused(&t, Applies::DockerHost, "only compose_host targets apply");
    }
}

#[test]
fn the_update_order_is_read_and_the_rest_of_update_config_is_swarms() {
    let order = |body: &str| ok(&with(body)).update_order;
    assert_eq!(order(""), None);
    assert_eq!(
        order("    deploy:\n      update_config: { order: stop-first }\n"),
        Some(UpdateOrder::StopFirst)
    );
    assert_eq!(
        order("    deploy:\n      update_config: { order: start-first }\n"),
        Some(UpdateOrder::StartFirst)
    );
    refused(
        &with("    deploy:\n      update_config: { order: sideways }\n"),
        Applies::DockerHost,
        "services.web.deploy.update_config.order is `sideways`; expected start-first or stop-first",
    );
    let parallel = with("    deploy:\n      update_config: { parallelism: 2 }\n");
    assert!(spec(&parallel, Applies::Validate).is_ok());
    refused(
        &parallel,
        Applies::DockerHost,
        "services.web.deploy.update_config",
    );
    refused(
        &with(
            "    ports: [\"8080:80\"]\n    deploy:\n      update_config: { order: start-first }\n",
        ),
        Applies::DockerHost,
        "services.web.deploy.update_config.order is `start-first`",
    );
}
