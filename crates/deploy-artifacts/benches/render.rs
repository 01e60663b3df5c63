//! Benchmark: renders the full artifact set (compose file, lock, 1,000 env files, 1,000 units, nginx config, manifest) for a 1,000-service template; also parsing and lock verification.
//!
//! Run: `cargo bench -p deploy-artifacts --bench render`. Goal: render under 20 ms.
//! With `BENCH_REPORT_FILE` set (by `cargo xtask bench`), a measured mode replaces
//! divan: `BENCH_SAMPLES` timed samples of each (default 100), the render's on-CPU
//! time beside its wall time, and, interleaved with the renders as their same-run
//! baseline, sha256 over the rendered bytes (a floor every render pays); the figures
//! go to that file as JSON lines (deploy_testkit::bench_report).

#![expect(
    clippy::unwrap_used,
    reason = "benchmark setup over fixed, valid inputs"
)]

use deploy_artifacts::{
    Colour, ComposeTemplate, ContainerRuntime, RenderInput, Traffic, parse_template, render,
    verify_lock,
};
use deploy_core::testing::{job_id, name, promotion_id, release, ssh_target, ts};
use deploy_core::{Name, Percent, Release, Target, UnixPath, sha256_of};
use deploy_testkit::bench_report::{self, Better, Figure, Goal};
use std::time::Instant;

const SERVICES: usize = 1000;
const SECTION: &str = "artifacts";

fn main() {
    if bench_report::enabled() {
        measured();
    } else {
        divan::main();
    }
}

/// This thread's on-CPU time in ns (`/proc/thread-self/schedstat`, first field).
fn thread_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// Wall-clock ms of `f`, and on-CPU ms.
fn timed<T>(f: impl FnOnce() -> T) -> (f64, f64) {
    let (cpu, wall) = (thread_cpu_ns(), Instant::now());
    divan::black_box(f());
    let wall = wall.elapsed().as_secs_f64() * 1000.0;
    (wall, (thread_cpu_ns() - cpu) as f64 / 1e6)
}

/// The figures for `cargo xtask bench`: several timed samples of each, one JSON line per figure.
fn measured() {
    let samples: usize = std::env::var("BENCH_SAMPLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100)
        .max(1);
    let fixture = Fixture::new();
    let input = fixture.input();
    let rendered = render(&input).unwrap();
    let bytes: Vec<&[u8]> = rendered
        .artifacts
        .iter()
        .map(|a| a.content.as_bytes())
        .collect();
    let total: usize = bytes.iter().map(|b| b.len()).sum();
    // Warm-up, not recorded.
    for _ in 0..3 {
        divan::black_box(render(&input).unwrap());
    }
    let (mut wall, mut cpu, mut hash) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..samples {
        let (w, c) = timed(|| render(divan::black_box(&input)).unwrap());
        wall.push(w);
        cpu.push(c);
        hash.push(timed(|| bytes.iter().map(|b| sha256_of(b)).collect::<Vec<_>>()).0);
    }
    let text = template_text(SERVICES);
    let parse: Vec<f64> = (0..samples.div_ceil(2))
        .map(|_| timed(|| parse_template(divan::black_box(text.as_bytes())).unwrap()).0)
        .collect();
    let lock = rendered
        .get(deploy_artifacts::LOCK_FILE_NAME)
        .unwrap()
        .content
        .clone();
    let verify: Vec<f64> = (0..samples.div_ceil(2))
        .map(|_| timed(|| verify_lock(divan::black_box(lock.as_bytes())).unwrap()).0)
        .collect();
    let baseline = format!("sha256 of the rendered {:.1} MB", total as f64 / 1e6);
    let figures = [
        Figure::new(SECTION, "render, 1,000 services (wall clock)", "ms", Better::Lower, wall)
            .baseline(&baseline, hash.clone())
            .goal(Goal::median_below(20.0))
            .notes("compose file, lock, 1,000 env files, 1,000 units, nginx config, manifest; each sample one render"),
        Figure::new(SECTION, "render, 1,000 services (on-CPU time)", "ms", Better::Lower, cpu)
            .baseline(&baseline, hash)
            .goal(Goal::median_below(20.0))
            .notes("the render thread's on-CPU time (/proc/thread-self/schedstat): what the machine's load does not inflate"),
        Figure::new(SECTION, "parse the 1,000-service template", "ms", Better::Lower, parse)
            .notes("two passes (node count, typed); no goal"),
        Figure::new(SECTION, "verify the lock of 1,000 services", "ms", Better::Lower, verify)
            .notes("no goal"),
    ];
    for figure in figures {
        figure.emit().unwrap();
    }
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
    variables: std::collections::BTreeMap<String, String>,
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
            variables: std::collections::BTreeMap::new(),
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
            variables: &self.variables,
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
