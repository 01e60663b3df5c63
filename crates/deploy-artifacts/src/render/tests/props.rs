//! Property tests: random valid templates and releases always render, deterministically, and `verify_lock` accepts every rendered lock and rejects any single-byte change.

use std::collections::{BTreeMap, BTreeSet};

use deploy_core::testing::{
    component_id, digest, job_id, name, promotion_id, release_id, ssh_target, ts,
};
use deploy_core::{Component, ImageRef, Percent, Release, UnixPath};
use proptest::prelude::*;

use super::fixtures::{Inputs, SMALL};
use crate::yaml_out::quoted;
use crate::{
    Colour, ContainerRuntime, RenderInput, Traffic, env_file, parse_template, render, verify_lock,
};

fn release_strategy() -> impl Strategy<Value = Release> {
    (
        prop::collection::btree_set("[a-z][a-z0-9-]{0,8}", 1..5),
        any::<u64>(),
    )
        .prop_map(|(names, seed)| {
            let components = names
                .iter()
                .zip(1u64..)
                .map(|(n, i)| Component {
                    id: component_id(i),
                    name: name(n),
                    image: ImageRef::from_parts(
                        &format!("registry.example:5000/team/image-{i}"),
                        &digest(seed.wrapping_add(i)),
                    )
                    .unwrap(),
                })
                .collect();
            Release::new(release_id(1), name("r1"), components, ts(0)).unwrap()
        })
}

fn env_value() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _./:@%+=,$#'\"{}\\\\-]{0,16}".prop_filter("both env-file readers agree", |v| {
        env_file::check_value("s", "K", v).is_ok()
    })
}

#[derive(Debug, Clone)]
struct ServiceSpec {
    component: usize,
    env: BTreeMap<String, String>,
    command: Vec<String>,
    restart: &'static str,
    extra_port: Option<u16>,
}

fn service_strategy() -> impl Strategy<Value = ServiceSpec> {
    (
        any::<usize>(),
        prop::collection::btree_map("[A-Z_][A-Z0-9_]{0,10}", env_value(), 0..6),
        prop::collection::vec("[a-z0-9 $%\"'\\\\-]{0,8}", 0..4),
        prop::sample::select(vec!["no", "always", "on-failure", "unless-stopped"]),
        prop::option::of(1u16..),
    )
        .prop_map(
            |(component, env, command, restart, extra_port)| ServiceSpec {
                component,
                env: env
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with("STELLA_"))
                    .collect(),
                command,
                restart,
                extra_port,
            },
        )
}

/// Writes a template in Compose syntax: strings double-quoted, `$` written as `$$`.
fn template_text(release: &Release, services: &BTreeMap<String, ServiceSpec>) -> String {
    let q = |s: &str| {
        let mut out = String::new();
        quoted(&mut out, &s.replace('$', "$$"));
        out
    };
    let mut t = String::from("services:\n");
    for (svc, spec) in services {
        let component = &release.components[spec.component % release.components.len()];
        t.push_str(&format!(
            "  {svc}:\n    componentName: {}\n    restart: {}\n",
            component.name, spec.restart
        ));
        if !spec.env.is_empty() {
            t.push_str("    environment:\n");
            for (k, v) in &spec.env {
                t.push_str(&format!("      {k}: {}\n", q(v)));
            }
        }
        if !spec.command.is_empty() {
            let words: Vec<_> = spec.command.iter().map(|w| q(w)).collect();
            t.push_str(&format!("    command: [{}]\n", words.join(", ")));
        }
        if let Some(port) = spec.extra_port {
            t.push_str(&format!("    ports: [\"{port}\"]\n"));
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_templates_render_and_their_locks_verify(
        release in release_strategy(),
        services in prop::collection::btree_map("[a-z0-9][a-z0-9_.-]{0,20}", service_strategy(), 1..6),
        live_green in any::<bool>(),
        canary in prop::option::of(1u8..=100),
        podman in any::<bool>(),
        position in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let text = template_text(&release, &services);
        let template = parse_template(text.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let target = ssh_target(1);
        let environment = name("prod");
        let work_dir = UnixPath::parse("/srv/deploy").unwrap();
        let input = RenderInput {
            release: &release,
            target: &target,
            environment: &environment,
            promotion_id: promotion_id(1),
            job_id: job_id(1),
            timestamp: ts(1),
            template: &template,
            traffic: Traffic {
                live: if live_green { Colour::Green } else { Colour::Blue },
                canary: canary.map(|c| Percent::new(c).unwrap()),
            },
            runtime: if podman { ContainerRuntime::Podman } else { ContainerRuntime::Docker },
            work_dir: &work_dir,
            variables: &std::collections::BTreeMap::new(),
        };
        let bundle = render(&input).unwrap_or_else(|e| panic!("{e}\n{text}"));
        prop_assert_eq!(&bundle, &render(&input).unwrap());

        // The env files read back (as Docker reads them: raw after the first `=`) to the template's values.
        for (svc, spec) in &services {
            let file = bundle.get(&format!("{svc}.env")).unwrap();
            let read: BTreeMap<&str, &str> = file
                .content
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .collect();
            for (k, v) in &spec.env {
                prop_assert_eq!(read.get(k.as_str()).copied(), Some(v.as_str()));
            }
        }

        let lock = bundle.get(crate::LOCK_FILE_NAME).unwrap().content.as_bytes();
        let info = verify_lock(lock).unwrap();
        prop_assert_eq!(&info.digest, &bundle.lock_digest);
        prop_assert_eq!(info.services.len(), services.len());
        let names: BTreeSet<&str> = info.services.iter().map(|(n, _)| n.as_str()).collect();
        prop_assert_eq!(names, services.keys().map(String::as_str).collect::<BTreeSet<_>>());

        let mut changed = lock.to_vec();
        let at = position.index(changed.len());
        changed[at] = if replacement == changed[at] { replacement.wrapping_add(1) } else { replacement };
        prop_assert!(verify_lock(&changed).is_err(), "byte {} changed and still verified", at);
    }
}

#[test]
fn every_single_byte_change_of_a_lock_is_rejected() {
    let bundle = Inputs::new(SMALL).render();
    let lock = bundle
        .get(crate::LOCK_FILE_NAME)
        .unwrap()
        .content
        .as_bytes();
    assert!(verify_lock(lock).is_ok());
    for at in 0..lock.len() {
        for change in [0x01u8, 0x20] {
            let mut changed = lock.to_vec();
            changed[at] ^= change;
            assert!(
                verify_lock(&changed).is_err(),
                "byte {at} ^ {change:#x} still verified"
            );
        }
    }
    // Removing or adding a byte is a change too.
    assert!(verify_lock(&lock[..lock.len() - 1]).is_err());
    let mut longer = lock.to_vec();
    longer.push(b'\n');
    assert!(verify_lock(&longer).is_err());
}

#[test]
fn a_mismatch_reports_both_digests() {
    let bundle = Inputs::new(SMALL).render();
    let lock = &bundle.get(crate::LOCK_FILE_NAME).unwrap().content;
    let tampered = lock.replace("PORT: \"8080\"", "PORT: \"8081\"");
    let e = verify_lock(tampered.as_bytes()).unwrap_err();
    let crate::ArtifactError::LockDigestMismatch { recorded, actual } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(recorded, &bundle.lock_digest);
    assert_ne!(actual, recorded);
    assert!(e.to_string().starts_with("compose lock digest is `"), "{e}");
}
