//! Tests of the runtime policy check: each key refused by the default policy and by a policy allowing something else, allowed where the policy says so, and escalations through allowed-looking paths.

use deploy_core::RuntimePolicy;

use super::*;
use crate::parse_template;

fn template(service_lines: &str, top: &str) -> ComposeTemplate {
    let yaml = format!("services:\n  web:\n    componentName: web\n{service_lines}{top}");
    parse_template(yaml.as_bytes()).unwrap_or_else(|e| panic!("{yaml}\n{e}"))
}

fn policy(json: &str) -> RuntimePolicy {
    serde_json::from_str(json).unwrap()
}

/// Checks `t` against `p` for environment `prod`; `Ok` or (key, message).
fn check(t: &ComposeTemplate, p: &RuntimePolicy) -> Result<(), (String, String)> {
    check_runtime_policy(t, p, PolicyScope::Environment("prod")).map_err(|e| match &e {
        ArtifactError::PolicyRefused { key, .. } => (key.clone(), e.to_string()),
        other => panic!("not a policy refusal: {other}"),
    })
}

/// (service lines, top-level lines, refused key, words of the message, a policy allowing it).
const CASES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "    privileged: true\n",
        "",
        "privileged",
        "`privileged: true`",
        r#"{"privileged": true}"#,
    ),
    (
        "    network_mode: host\n",
        "",
        "network_mode",
        "`network_mode: host`",
        r#"{"host_namespaces": ["network"]}"#,
    ),
    (
        "    pid: host\n",
        "",
        "pid",
        "`pid: host`",
        r#"{"host_namespaces": ["pid"]}"#,
    ),
    (
        "    ipc: host\n",
        "",
        "ipc",
        "`ipc: host`",
        r#"{"host_namespaces": ["ipc"]}"#,
    ),
    (
        "    uts: host\n",
        "",
        "uts",
        "`uts: host`",
        r#"{"host_namespaces": ["uts"]}"#,
    ),
    (
        "    userns_mode: host\n",
        "",
        "userns_mode",
        "`userns_mode: host`",
        r#"{"host_namespaces": ["userns"]}"#,
    ),
    (
        "    cgroup: host\n",
        "",
        "cgroup",
        "`cgroup: host`",
        r#"{"host_namespaces": ["cgroup"]}"#,
    ),
    (
        "    cap_add: [NET_ADMIN]\n",
        "",
        "cap_add",
        "`cap_add: NET_ADMIN`",
        r#"{"capabilities": ["NET_ADMIN"]}"#,
    ),
    (
        "    cap_add: [cap_sys_time]\n",
        "",
        "cap_add",
        "`cap_add: cap_sys_time`",
        r#"{"capabilities": ["SYS_TIME"]}"#,
    ),
    (
        "    cap_add: [ALL]\n",
        "",
        "cap_add",
        "`cap_add: ALL`",
        r#"{"capabilities": ["ALL"]}"#,
    ),
    (
        "    devices: [\"/dev/fuse:/dev/fuse\"]\n",
        "",
        "devices",
        "`devices: [\"/dev/fuse:/dev/fuse\"]`",
        r#"{"devices": true}"#,
    ),
    (
        "    device_cgroup_rules: [\"c 1:3 mr\"]\n",
        "",
        "device_cgroup_rules",
        "device_cgroup_rules",
        r#"{"devices": true}"#,
    ),
    (
        "    gpus: all\n",
        "",
        "gpus",
        "`gpus: all`",
        r#"{"devices": true}"#,
    ),
    (
        "    deploy:\n      resources:\n        reservations:\n          devices:\n            - capabilities: [gpu]\n",
        "",
        "deploy",
        "deploy.resources.reservations.devices",
        r#"{"devices": true}"#,
    ),
    (
        "    security_opt: [\"seccomp=unconfined\"]\n",
        "",
        "security_opt",
        "`security_opt: seccomp=unconfined`",
        r#"{"unconfined": true}"#,
    ),
    (
        "    security_opt: [\"apparmor:unconfined\"]\n",
        "",
        "security_opt",
        "apparmor:unconfined",
        r#"{"unconfined": true}"#,
    ),
    (
        "    security_opt: [\"label=disable\"]\n",
        "",
        "security_opt",
        "label=disable",
        r#"{"unconfined": true}"#,
    ),
    (
        "    security_opt: [\"label=type:spc_t\"]\n",
        "",
        "security_opt",
        "label=type:spc_t",
        r#"{"unconfined": true}"#,
    ),
    (
        "    volumes: [\"/:/host\"]\n",
        "",
        "volumes",
        "`volumes: /:/host`",
        r#"{"bind_prefixes": ["/"], "docker_socket": true}"#,
    ),
    (
        "    volumes: [\"/etc:/host-etc:ro\"]\n",
        "",
        "volumes",
        "host path `/etc` is under no allowed prefix",
        r#"{"bind_prefixes": ["/etc"]}"#,
    ),
    (
        "    volumes:\n      - type: bind\n        source: /srv/secret\n        target: /s\n",
        "",
        "volumes",
        "host path `/srv/secret` is under no allowed prefix",
        r#"{"bind_prefixes": ["/srv"]}"#,
    ),
    (
        "    network_mode: \"container:vpn\"\n",
        "",
        "network_mode",
        "`network_mode: container:vpn` (a container outside the deployment",
        r#"{"other_containers": true}"#,
    ),
    (
        "    pid: \"container:agent\"\n",
        "",
        "pid",
        "`pid: container:agent`",
        r#"{"other_containers": true}"#,
    ),
    (
        "    volumes_from: [\"container:docker-proxy:ro\"]\n",
        "",
        "volumes_from",
        "`volumes_from: container:docker-proxy:ro` (the mounts of a container",
        r#"{"other_containers": true}"#,
    ),
    (
        "    volumes: [\"data:/data\"]\n",
        "volumes:\n  data:\n    driver: local\n    driver_opts: {type: none, o: bind, device: /root}\n",
        "volumes",
        "volume `data` binds host path `/root`",
        r#"{"bind_prefixes": ["/root"]}"#,
    ),
    // Lifecycle hooks: a privileged exec in the container.
    (
        "    post_start:\n      - command: [sh, -c, id]\n        user: root\n        privileged: true\n",
        "",
        "post_start",
        "`post_start[0].privileged: true`",
        r#"{"privileged": true}"#,
    ),
    (
        "    pre_stop:\n      - command: [\"true\"]\n      - command: [sh]\n        privileged: \"yes\"\n",
        "",
        "pre_stop",
        "`pre_stop[1].privileged: yes`",
        r#"{"privileged": true}"#,
    ),
    // The host network by a network's name, not by `network_mode`.
    (
        "    networks: [hostnet]\n",
        "networks:\n  hostnet:\n    external: true\n    name: host\n",
        "networks",
        "network `hostnet` is named `host`",
        r#"{"host_namespaces": ["network"]}"#,
    ),
    (
        "    networks:\n      hostnet: {}\n",
        "networks:\n  hostnet:\n    external: {name: host}\n",
        "networks",
        "network `hostnet` is named `host`",
        r#"{"host_namespaces": ["network"]}"#,
    ),
    (
        "    networks: [host]\n",
        "networks:\n  host:\n    external: true\n",
        "networks",
        "network `host` is named `host`",
        r#"{"host_namespaces": ["network"]}"#,
    ),
    (
        "",
        "networks:\n  default:\n    external: true\n    name: host\n",
        "networks",
        "network `default` is named `host`",
        r#"{"host_namespaces": ["network"]}"#,
    ),
    // Local volumes that mount something of the host other than a checked bind.
    (
        "    volumes: [\"hostproc:/hp\"]\n",
        "volumes:\n  hostproc:\n    driver: local\n    driver_opts: {type: proc, device: proc}\n",
        "volumes",
        "volume `hostproc` mounts `proc` of type `proc`",
        r#"{"devices": true}"#,
    ),
    (
        "    volumes: [\"root:/host\"]\n",
        "volumes:\n  root:\n    driver_opts:\n      type: overlay\n      device: overlay\n      o: \"lowerdir=/,upperdir=/var/tmp/u,workdir=/var/tmp/w\"\n",
        "volumes",
        "options `lowerdir=/,upperdir=/var/tmp/u,workdir=/var/tmp/w`",
        r#"{"devices": true}"#,
    ),
    (
        "    volumes: [\"disk:/d\"]\n",
        "volumes:\n  disk:\n    driver_opts: {type: ext4, device: /dev/sda1}\n",
        "volumes",
        "mounts `/dev/sda1` of type `ext4`",
        r#"{"devices": true}"#,
    ),
    (
        "    volumes: [\"sys:/s\"]\n",
        "volumes:\n  sys:\n    driver_opts: {type: sysfs, device: sysfs}\n",
        "volumes",
        "of type `sysfs`",
        r#"{"devices": true}"#,
    ),
    (
        "    volumes: [\"share:/s\"]\n",
        "volumes:\n  share:\n    driver_opts: {type: nfs, device: \":/export\"}\n",
        "volumes",
        "of type `nfs`",
        r#"{"devices": true}"#,
    ),
    (
        "    volumes:\n      - type: volume\n        source: keep\n        target: /k\n",
        "volumes:\n  keep:\n    driver: local-persist\n    driver_opts: {mountpoint: /}\n",
        "volumes",
        "uses volume driver `local-persist`",
        r#"{"devices": true}"#,
    ),
    (
        "    volumes: [\"odd:/o\"]\n",
        "volumes:\n  odd:\n    driver_opts: {type: tmpfs, device: tmpfs, size: 1g}\n",
        "volumes",
        "has driver_opts `size`",
        r#"{"devices": true}"#,
    ),
    // Engine sockets and state beyond Docker's own.
    (
        "    volumes: [\"/run/user/1000/docker.sock:/var/run/docker.sock\"]\n",
        "",
        "volumes",
        "engine socket `/run/user/*/docker.sock`",
        r#"{"bind_prefixes": ["/run/user"], "docker_socket": true}"#,
    ),
    (
        "    volumes: [\"/var/lib/docker/volumes:/v\"]\n",
        "",
        "volumes",
        "state directory `/var/lib/docker`",
        r#"{"bind_prefixes": ["/var/lib"], "docker_socket": true}"#,
    ),
    // `$$` is a literal `$`: checked as the path Compose reads.
    (
        "    volumes: [\"/srv/a$$b:/x\"]\n",
        "",
        "volumes",
        "host path `/srv/a$b` is under no allowed prefix",
        r#"{"bind_prefixes": ["/srv/a$b"]}"#,
    ),
];

#[test]
fn each_key_is_refused_by_default_and_allowed_where_the_policy_says_so() {
    let unrelated = policy(r#"{"capabilities": ["CHOWN"], "bind_prefixes": ["/srv/web"]}"#);
    for (service, top, key, words, allowing) in CASES {
        let t = template(service, top);
        for refusing in [&RuntimePolicy::default(), &unrelated] {
            let (refused_key, message) = check(&t, refusing).expect_err(service);
            assert_eq!(&refused_key, key, "{service}");
            for part in [
                "service `web` sets ",
                words,
                "environment `prod`'s runtime policy refuses",
                "an admin can allow it with",
            ] {
                assert!(
                    message.contains(part),
                    "{service}: `{part}` not in: {message}"
                );
            }
        }
        assert_eq!(
            check(&t, &policy(allowing)),
            Ok(()),
            "{service} under {allowing}"
        );
    }
}

#[test]
fn the_message_names_what_would_allow_it() {
    let t = template("    cap_add: [CAP_NET_ADMIN]\n", "");
    let (_, message) = check(&t, &RuntimePolicy::default()).unwrap_err();
    assert_eq!(
        message,
        "service `web` sets `cap_add: CAP_NET_ADMIN`, which environment `prod`'s runtime policy refuses; an admin can allow it with `capabilities: [\"NET_ADMIN\"]` in that policy (`deployctl env policy set prod`, or PUT /api/v1/environments/prod/runtime-policy)"
    );
    let err = check_runtime_policy(&t, &RuntimePolicy::default(), PolicyScope::AnyEnvironment)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("which every environment's runtime policy refuses"),
        "{err}"
    );
}

#[test]
fn harmless_settings_need_no_policy() {
    for service in [
        "    privileged: false\n",
        "    network_mode: bridge\n",
        "    pid: \"service:db\"\n",
        "    volumes_from: [\"db:ro\"]\n",
        "    cap_drop: [ALL]\n",
        "    devices: []\n",
        "    security_opt: [\"no-new-privileges:true\"]\n",
        "    volumes: [\"data:/data\"]\n",
        "    tmpfs: [/tmp]\n",
    ] {
        let top = if service.contains("data:") {
            "volumes:\n  data: {}\n"
        } else {
            ""
        };
        assert_eq!(
            check(&template(service, top), &RuntimePolicy::default()),
            Ok(()),
            "{service}"
        );
    }
    // Local volumes that take nothing from the host: an NFS or CIFS share, a tmpfs.
    for top in [
        "volumes:\n  data:\n    driver_opts: {type: nfs, o: \"addr=10.0.0.1\", device: \":/export\"}\n",
        "volumes:\n  data:\n    driver_opts: {type: nfs4, o: \"addr=nas.lan,rw,nfsvers=4\", device: \":/export\"}\n",
        "volumes:\n  data:\n    driver_opts: {type: cifs, o: \"addr=10.0.0.2,username=u\", device: \"//10.0.0.2/share\"}\n",
        "volumes:\n  data:\n    driver_opts: {type: tmpfs, device: tmpfs, o: \"size=100m,uid=1000\"}\n",
        "volumes:\n  data:\n    driver: local\n",
        "volumes:\n  data:\n    driver_opts: {}\n",
    ] {
        let t = template("    volumes: [\"data:/data\"]\n", top);
        assert_eq!(check(&t, &RuntimePolicy::default()), Ok(()), "{top}");
    }
    // Networks by a name that is not special.
    for (service, top) in [
        (
            "    networks: [front]\n",
            "networks:\n  front:\n    external: true\n    name: proxy\n",
        ),
        ("    networks: [front]\n", "networks:\n  front: {}\n"),
        (
            "",
            "networks:\n  default:\n    name: bridge\n    external: true\n",
        ),
        (
            "    network_mode: bridge\n",
            "networks:\n  default:\n    name: host\n    external: true\n",
        ),
    ] {
        assert_eq!(
            check(&template(service, top), &RuntimePolicy::default()),
            Ok(()),
            "{service}{top}"
        );
    }
    // Hooks without privileges.
    let hook = template(
        "    post_start:\n      - command: [sh, -c, id]\n        user: root\n        privileged: false\n",
        "",
    );
    assert_eq!(check(&hook, &RuntimePolicy::default()), Ok(()));
}

#[test]
fn host_interpolation_in_a_carried_value_is_refused_when_parsed() {
    // Compose would substitute the default (`host`) after every check.
    for (service, top, named) in [
        (
            "    network_mode: \"${X:-host}\"\n",
            "",
            "services.web.network_mode",
        ),
        ("    pid: \"${P:-host}\"\n", "", "services.web.pid"),
        ("    ipc: \"${P:-host}\"\n", "", "services.web.ipc"),
        ("    uts: \"${P:-host}\"\n", "", "services.web.uts"),
        (
            "    userns_mode: \"${P:-host}\"\n",
            "",
            "services.web.userns_mode",
        ),
        ("    cgroup: \"${P:-host}\"\n", "", "services.web.cgroup"),
        ("    privileged: \"$P\"\n", "", "services.web.privileged"),
        (
            "    volumes_from: [\"${V:-container:x}\"]\n",
            "",
            "services.web.volumes_from[0]",
        ),
        (
            "    cap_add: [\"${C:-SYS_ADMIN}\"]\n",
            "",
            "services.web.cap_add[0]",
        ),
        (
            "    security_opt: [\"${S:-seccomp=unconfined}\"]\n",
            "",
            "services.web.security_opt[0]",
        ),
        ("    devices: [\"$D\"]\n", "", "services.web.devices[0]"),
        (
            "    post_start:\n      - command: [id]\n        privileged: \"${P:-true}\"\n",
            "",
            "services.web.post_start[0].privileged",
        ),
        (
            "    volumes: [\"data:/d\"]\n",
            "volumes:\n  data:\n    driver_opts: {type: \"${T:-proc}\", device: proc}\n",
            "volumes.data.driver_opts.type",
        ),
        (
            "    networks: [n]\n",
            "networks:\n  n:\n    external: true\n    name: \"${N:-host}\"\n",
            "networks.n.name",
        ),
    ] {
        let yaml = format!("services:\n  web:\n    componentName: web\n{service}{top}");
        let err = parse_template(yaml.as_bytes())
            .expect_err(&yaml)
            .to_string();
        assert!(err.contains(named), "{yaml}: {err}");
        assert!(err.contains('$'), "{yaml}: {err}");
        assert!(err.contains("`$$` for a literal `$`"), "{yaml}: {err}");
    }
    // `$$` is a literal `$`: carried as written, checked as `$`.
    let t = template("    network_mode: \"$$host\"\n", "");
    assert_eq!(check(&t, &RuntimePolicy::default()), Ok(()));
    assert_eq!(
        t.services[0].passthrough.get("network_mode"),
        Some(&Value::String("$$host".to_owned()))
    );
}

#[test]
fn the_docker_socket_is_refused_through_an_allowed_looking_path() {
    let allowed_run = policy(r#"{"bind_prefixes": ["/var/run", "/run", "/srv"]}"#);
    for (service, top) in [
        (
            "    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n",
            "",
        ),
        ("    volumes: [\"/run/docker.sock:/sock:ro\"]\n", ""),
        ("    volumes: [\"/var/run:/host-run\"]\n", ""),
        ("    volumes: [\"/run:/host-run\"]\n", ""),
        ("    volumes: [\"/var/run/podman/podman.sock:/s\"]\n", ""),
        ("    volumes: [\"/run/podman/podman.sock:/s\"]\n", ""),
        ("    volumes: [\"/run/crio/crio.sock:/s\"]\n", ""),
        ("    volumes: [\"/var/run/crio/crio.sock:/s\"]\n", ""),
        (
            "    volumes: [\"/run/k3s/containerd/containerd.sock:/s\"]\n",
            "",
        ),
        ("    volumes: [\"/run/buildkit/buildkitd.sock:/s\"]\n", ""),
        ("    volumes: [\"/run/user/1000/docker.sock:/s\"]\n", ""),
        ("    volumes: [\"/run/user:/s\"]\n", ""),
        (
            "    volumes:\n      - type: bind\n        source: /var/run/docker.sock\n        target: /s\n",
            "",
        ),
        (
            "    volumes: [\"run:/r\"]\n",
            "volumes:\n  run:\n    driver_opts: {type: none, o: bind, device: /run}\n",
        ),
    ] {
        let t = template(service, top);
        let (key, message) = check(&t, &allowed_run).expect_err(service);
        assert_eq!(key, "volumes");
        assert!(message.contains("engine socket `/"), "{message}");
        assert!(message.contains("docker_socket: true"), "{message}");
    }
    // `..` cannot walk out of an allowed prefix either: the parser refuses it in a
    // bind, and the policy in a volume bound to a host path.
    let walk = "services:\n  web:\n    componentName: web\n    volumes: [\"/srv/../var/run/docker.sock:/s\"]\n";
    assert!(parse_template(walk.as_bytes()).is_err());
    let t = template(
        "    volumes: [\"run:/r\"]\n",
        "volumes:\n  run:\n    driver_opts: {type: none, o: bind, device: /srv/../run}\n",
    );
    let (_, message) = check(&t, &allowed_run).unwrap_err();
    assert!(message.contains("`.` or `..`"), "{message}");
    // Explicitly allowed: it runs.
    let t = template(
        "    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n",
        "",
    );
    let socket = policy(r#"{"bind_prefixes": ["/var/run/docker.sock"], "docker_socket": true}"#);
    assert_eq!(check(&t, &socket), Ok(()));
}

#[test]
fn every_service_is_checked() {
    let yaml = "services:\n  api:\n    componentName: web\n  worker:\n    componentName: web\n    pid: host\n";
    let t = parse_template(yaml.as_bytes()).unwrap();
    let err = check_runtime_policy(
        &t,
        &RuntimePolicy::default(),
        PolicyScope::Environment("prod"),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ArtifactError::PolicyRefused { service, key, .. } if service == "worker" && key == "pid"),
        "{err}"
    );
}
