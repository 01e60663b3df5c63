//! Tests of `RuntimePolicy`: its parsing (bad values named), bind prefixes, engine sockets, capabilities and union.

use super::*;

fn policy(json: &str) -> RuntimePolicy {
    serde_json::from_str(json).unwrap()
}

#[test]
fn default_refuses_everything() {
    let p = RuntimePolicy::default();
    assert!(!p.privileged && !p.devices && !p.unconfined && !p.docker_socket);
    assert!(!p.allows_capability("NET_ADMIN"));
    assert_eq!(
        p.bind_refusal("/srv/data"),
        Some(BindRefusal::OutsidePrefixes)
    );
    assert_eq!(policy("{}"), p);
}

#[test]
fn bad_policies_are_refused_naming_the_value() {
    for (json, named) in [
        (r#"{"bind_prefixes": ["srv/data"]}"#, "srv/data"),
        (r#"{"bind_prefixes": ["/srv/../etc"]}"#, "/srv/../etc"),
        (r#"{"bind_prefixes": ["/srv/./data"]}"#, "/srv/./data"),
        (r#"{"bind_prefixes": [""]}"#, "bind_prefixes"),
        (r#"{"capabilities": ["NET_ADMINN"]}"#, "NET_ADMINN"),
        (r#"{"host_namespaces": ["net"]}"#, "net"),
        (
            r#"{"privileged": true, "priviledged": true}"#,
            "priviledged",
        ),
        (r#"{"devices": "yes"}"#, "yes"),
    ] {
        let err = serde_json::from_str::<RuntimePolicy>(json)
            .expect_err(json)
            .to_string();
        assert!(err.contains(named), "{json}: {err}");
    }
}

#[test]
fn capabilities_read_as_docker_reads_them() {
    let p = policy(r#"{"capabilities": ["cap_net_admin", "SYS_TIME"]}"#);
    assert_eq!(
        serde_json::to_value(&p.capabilities).unwrap(),
        serde_json::json!(["NET_ADMIN", "SYS_TIME"])
    );
    for (cap, allowed) in [
        ("NET_ADMIN", true),
        ("net_admin", true),
        ("CAP_SYS_TIME", true),
        ("SYS_ADMIN", false),
        ("ALL", false),
        ("NOT_A_CAP", false),
    ] {
        assert_eq!(p.allows_capability(cap), allowed, "{cap}");
    }
    let all = policy(r#"{"capabilities": ["ALL"]}"#);
    assert!(all.allows_capability("SYS_ADMIN"));
    assert!(all.allows_capability("all"));
    assert!(!all.allows_capability("NOT_A_CAP"));
}

#[test]
fn binds_are_checked_segment_by_segment() {
    let p = policy(r#"{"bind_prefixes": ["/srv/data/", "//opt//app"]}"#);
    assert_eq!(
        serde_json::to_value(&p.bind_prefixes).unwrap(),
        serde_json::json!(["/opt/app", "/srv/data"])
    );
    for (source, refusal) in [
        ("/srv/data", None),
        ("/srv/data/", None),
        ("/srv/data/web/config", None),
        ("/opt/app/x", None),
        ("/srv/database", Some(BindRefusal::OutsidePrefixes)),
        ("/srv", Some(BindRefusal::OutsidePrefixes)),
        ("/etc", Some(BindRefusal::OutsidePrefixes)),
        ("/srv/data/../../etc", Some(BindRefusal::NotNormal)),
        ("/srv/data/./x", Some(BindRefusal::NotNormal)),
        ("srv/data", Some(BindRefusal::NotNormal)),
    ] {
        assert_eq!(p.bind_refusal(source), refusal, "{source}");
    }
}

#[test]
fn engine_sockets_are_refused_under_any_prefix_unless_allowed() {
    let everything = policy(r#"{"bind_prefixes": ["/"]}"#);
    for (source, socket) in [
        ("/var/run/docker.sock", "/var/run/docker.sock"),
        ("/run/docker.sock", "/run/docker.sock"),
        ("//var/run//docker.sock", "/var/run/docker.sock"),
        ("/var/run", "/var/run/docker.sock"),
        ("/var", "/var/run/docker.sock"),
        ("/run", "/run/docker.sock"),
        ("/", "/var/run/docker.sock"),
        ("/run/containerd", "/run/containerd/containerd.sock"),
        ("/var/run/podman/podman.sock", "/var/run/podman/podman.sock"),
        ("/run/podman", "/run/podman/podman.sock"),
        ("/run/crio/crio.sock", "/run/crio/crio.sock"),
        ("/var/run/crio", "/var/run/crio/crio.sock"),
        ("/run/k3s", "/run/k3s/containerd/containerd.sock"),
        (
            "/run/buildkit/buildkitd.sock",
            "/run/buildkit/buildkitd.sock",
        ),
        ("/run/user/1000/docker.sock", "/run/user/*/docker.sock"),
        ("/run/user/1000", "/run/user/*/docker.sock"),
        ("/run/user", "/run/user/*/docker.sock"),
        ("/run/user/1000/podman", "/run/user/*/podman/podman.sock"),
        ("/var/lib/docker", "/var/lib/docker"),
        ("/var/lib/docker/volumes/x/_data", "/var/lib/docker"),
        ("/var/lib", "/var/lib/docker"),
        (
            "/var/lib/containerd/io.containerd.content.v1",
            "/var/lib/containerd",
        ),
    ] {
        assert_eq!(
            everything.bind_refusal(source),
            Some(BindRefusal::EngineSocket(socket)),
            "{source}"
        );
    }
    assert_eq!(everything.bind_refusal("/var/lib/app"), None);
    assert_eq!(everything.bind_refusal("/run/app"), None);
    assert_eq!(everything.bind_refusal("/run/user/1000/app"), None);
    assert_eq!(everything.bind_refusal("/var/lib/dockerd"), None);
    let run = policy(r#"{"bind_prefixes": ["/var/run"]}"#);
    assert_eq!(
        run.bind_refusal("/var/run/docker.sock"),
        Some(BindRefusal::EngineSocket("/var/run/docker.sock"))
    );
    let socket = policy(r#"{"bind_prefixes": ["/var/run/docker.sock"], "docker_socket": true}"#);
    assert_eq!(socket.bind_refusal("/var/run/docker.sock"), None);
    // Allowing the socket does not allow what is outside the prefixes.
    assert_eq!(
        socket.bind_refusal("/run/docker.sock"),
        Some(BindRefusal::OutsidePrefixes)
    );
}

#[test]
fn union_allows_what_either_allows() {
    let a =
        policy(r#"{"privileged": true, "capabilities": ["NET_ADMIN"], "bind_prefixes": ["/a"]}"#);
    let b = policy(
        r#"{"host_namespaces": ["pid"], "capabilities": ["SYS_TIME"], "bind_prefixes": ["/b"], "docker_socket": true, "other_containers": true}"#,
    );
    let u = a.union(&b);
    assert!(u.privileged && u.docker_socket && u.other_containers && !u.devices && !u.unconfined);
    assert!(u.host_namespaces.contains(&HostNamespace::Pid));
    assert!(u.allows_capability("NET_ADMIN") && u.allows_capability("SYS_TIME"));
    assert_eq!(u.bind_refusal("/a/x"), None);
    assert_eq!(u.bind_refusal("/b/x"), None);
    assert_eq!(a.union(&RuntimePolicy::default()), a);
}

#[test]
fn round_trips_through_json() {
    let p = policy(
        r#"{"privileged": true, "host_namespaces": ["network", "cgroup"], "capabilities": ["ALL"], "devices": true, "unconfined": true, "bind_prefixes": ["/srv"], "docker_socket": true, "other_containers": true}"#,
    );
    let back: RuntimePolicy = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
    assert_eq!(back, p);
}

#[test]
fn an_environment_stored_before_policies_existed_reads_with_the_default() {
    let mut stored = serde_json::to_value(crate::testing::environment("prod")).unwrap();
    stored.as_object_mut().unwrap().remove("runtime_policy");
    let read: crate::Environment = serde_json::from_value(stored).unwrap();
    assert_eq!(read.runtime_policy, RuntimePolicy::default());
}
