//! Benchmark: renders the full artifact set (compose file, lock, 1,000 env files, 1,000 units, nginx config, manifest) for a 1,000-service template; also parsing and lock verification.
//!
//! Run: `cargo bench -p deploy-artifacts --bench render`. Goal: render under 20 ms.

#![expect(
    clippy::unwrap_used,
    reason = "benchmark setup over fixed, valid inputs"
)]

use deploy_artifacts::{
    Colour, ComposeTemplate, ContainerRuntime, RenderInput, Traffic, parse_template, render,
    verify_lock,
};
use deploy_core::testing::{job_id, name, promotion_id, release, ssh_target, ts};
use deploy_core::{Name, Percent, Release, Target, UnixPath};

const SERVICES: usize = 1000;

fn main() {
    divan::main();
}

/// `n` services over 10 components, each with environment, ports, healthcheck, labels and a command.
fn template_text(n: usize) -> String {
    let mut t = String::from("version: \"3.8\"\nservices:\n");
    for i in 0..n {
        t.push_str(&format!(
            "  svc-{i:04}:\n    componentName: comp-{c}\n    restart: always\n    command: [\"serve\", \"--index\", \"{i}\"]\n    environment:\n      INDEX: \"{i}\"\n      ROLE: \"svc {i} of {n}\"\n      DSN: \"postgres://db:5432/app_{i}?sslmode=disable\"\n    ports:\n      - \"{port}:8080\"\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 30s\n    labels:\n      com.example.index: \"{i}\"\n    stop_grace_period: 30s\n",
            c = i % 10,
            port = 20000 + i
        ));
    }
    t.push_str("http:\n  routes:\n");
    for i in 0..20 {
        t.push_str(&format!(
            "    - path: /s{i}\n      service: svc-{i:04}\n      blue: 127.0.0.1:{}\n      green: 127.0.0.1:{}\n",
            20000 + i,
            30000 + i
        ));
    }
    t
}

struct Fixture {
    release: Release,
    target: Target,
    environment: Name,
    template: ComposeTemplate,
    work_dir: UnixPath,
}

impl Fixture {
    fn new() -> Self {
        let components: Vec<String> = (0..10).map(|c| format!("comp-{c}")).collect();
        let refs: Vec<&str> = components.iter().map(String::as_str).collect();
        Self {
            release: release(&refs),
            target: ssh_target(1),
            environment: name("prod"),
            template: parse_template(template_text(SERVICES).as_bytes()).unwrap(),
            work_dir: UnixPath::parse("/srv/deploy").unwrap(),
        }
    }

    fn input(&self) -> RenderInput<'_> {
        RenderInput {
            release: &self.release,
            target: &self.target,
            environment: &self.environment,
            promotion_id: promotion_id(1),
            job_id: job_id(1),
            timestamp: ts(1),
            template: &self.template,
            traffic: Traffic {
                live: Colour::Blue,
                canary: Some(Percent::new(10).unwrap()),
            },
            runtime: ContainerRuntime::Docker,
            work_dir: &self.work_dir,
        }
    }
}

/// The full artifact set from a parsed template (the goal: < 20 ms).
#[divan::bench(sample_count = 100)]
fn render_1000_services(bencher: divan::Bencher) {
    let fixture = Fixture::new();
    let input = fixture.input();
    bencher.bench(|| render(divan::black_box(&input)).unwrap());
}

/// Parsing and validating the 1,000-service template (two passes: node count, then typed).
#[divan::bench(sample_count = 50)]
fn parse_1000_services(bencher: divan::Bencher) {
    let text = template_text(SERVICES);
    bencher.bench(|| parse_template(divan::black_box(text.as_bytes())).unwrap());
}

/// Verifying the lock of the 1,000-service bundle.
#[divan::bench(sample_count = 50)]
fn verify_lock_1000_services(bencher: divan::Bencher) {
    let fixture = Fixture::new();
    let bundle = render(&fixture.input()).unwrap();
    let lock = bundle
        .get(deploy_artifacts::LOCK_FILE_NAME)
        .unwrap()
        .content
        .clone();
    bencher.bench(|| verify_lock(divan::black_box(lock.as_bytes())).unwrap());
}
