//! Injection attempts through every target and request field: each is rejected by validation or reaches the host inert.

use deploy_core::{
    CommandSpec, CredentialRef, Host, ImageRef, Name, TargetType, UnixPath, Username,
};
use deploy_exec::Executor;
use deploy_testkit::SshdHosts;

use crate::common::*;

fn payloads(marker: &str) -> Vec<String> {
    vec![
        format!("x; touch {marker}"),
        format!("$(touch {marker})"),
        format!("`touch {marker}`"),
        format!("'; touch {marker}; '"),
        format!("\"; touch {marker}; \""),
        format!("x\ntouch {marker}"),
        format!("x && touch {marker} #"),
    ]
}

#[tokio::test]
async fn every_field_rejects_or_neutralises_shell_syntax() {
    let marker = format!("/tmp/dx-pwned-{}", std::process::id());
    let _ = std::fs::remove_file(&marker);
    for p in payloads(&marker) {
        assert!(Name::parse(&p).is_err(), "name accepted {p:?}");
        assert!(Host::parse(&p).is_err(), "host accepted {p:?}");
        assert!(Username::parse(&p).is_err(), "user accepted {p:?}");
        assert!(
            UnixPath::parse(&format!("/srv/{p}")).is_err(),
            "path accepted {p:?}"
        );
        assert!(
            CredentialRef::parse(&format!("file:{p}")).is_err(),
            "ref accepted {p:?}"
        );
        assert!(
            ImageRef::parse(&format!("r/app{p}@sha256:{}", "a".repeat(64))).is_err(),
            "image accepted {p:?}"
        );
        assert!(
            deploy_core::Labels::new([(p.clone(), "v".into())].into()).is_err(),
            "label key accepted {p:?}"
        );
    }

    // Command arguments are free text: they must arrive as literal argv, never run.
    let hosts = SshdHosts::start(1).unwrap();
    let exec = executor(&hosts);
    let t = target(&hosts, 1, TargetType::DockerHost, "/tmp");
    let (_, c) = ctx(20);
    for p in payloads(&marker) {
        let argv = vec!["printf".to_owned(), "%s".to_owned(), p.clone()];
        let out = exec
            .run_command(&t, &CommandSpec::new(argv).unwrap(), &c)
            .await
            .unwrap();
        assert_eq!(out.stdout, p);
        // And as the program name itself: no such program, nothing run.
        let as_program = CommandSpec::new(vec![p.clone()]).unwrap();
        let out = exec.run_command(&t, &as_program, &c).await.unwrap();
        assert_eq!(out.exit_status, 127, "{p:?}");
    }
    assert!(
        !std::path::Path::new(&marker).exists(),
        "a payload was executed"
    );
}

/// Container arguments are free text too: they reach the engine as a JSON list, never a shell.
#[tokio::test]
async fn container_args_reach_docker_as_inert_argv() {
    let s = Scene::start("inject", TargetType::DockerHost);
    let marker = format!("/tmp/dx-pwned-args-{}", std::process::id());
    let _ = std::fs::remove_file(&marker);
    let (_, c) = ctx(60);
    let mut request = docker_request(&s.target, &s.web, &s.peers.images.v1, 1);
    if let Some(component) = request.component.as_mut() {
        component.container.command = Some(payloads(&marker));
    }
    let r = s.exec.deploy(&request, &c).await;
    // The first payload is taken as the program name inside the container: no such file.
    assert!(r.is_err(), "{r:?}");
    assert!(
        !std::path::Path::new(&marker).exists(),
        "a payload was executed"
    );
}
