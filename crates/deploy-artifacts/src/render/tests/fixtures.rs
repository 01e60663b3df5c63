//! Deterministic inputs shared by the render tests: templates, a release that has their components, and the render input.

use std::collections::BTreeMap;

use deploy_core::testing::{job_id, name, promotion_id, release, ssh_target, ts};
use deploy_core::{Name, Percent, Release, Target, UnixPath};

use crate::{
    Bundle, Colour, ComposeTemplate, ContainerRuntime, RenderInput, Traffic, parse_template, render,
};

/// A template using most Compose keys, routing, and env values that need care.
pub const SMALL: &str = r#"
version: "3.8"
x-defaults: &defaults
  restart: unless-stopped
  logging:
    driver: json-file
    options:
      max-size: "10m"
services:
  web:
    <<: *defaults
    componentName: web
    command: ["serve", "--port", "8080", "--greeting", "hello world", "--price", "$$5"]
    environment:
      PORT: 8080
      GREETING: "it's a \"quoted\" value"
      PRICE: "costs $$5"
      PATTERN: "a#b c%d"
      EMPTY: ""
      UNICODE: "grüße 日本"
    ports:
      - "127.0.0.1:18080:8080"
      - target: 9090
        published: 19090
        protocol: tcp
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://localhost:8080/health"]
      interval: 10s
      retries: 3
    depends_on: [worker]
    labels:
      com.example.team: payments
    stop_grace_period: 1m30s
    volumes:
      - data:/var/lib/web
  worker:
    componentName: worker
    command: worker --queue 'jobs high' --verbose
    environment:
      - QUEUE=jobs
      - "ON=yes"
      - OCTAL=0755
    restart: "on-failure:3"
volumes:
  data: {}
http:
  listen: 8080
  serverName: app.example.com
  routes:
    - path: /
      service: web
      blue: 127.0.0.1:18080
      green: 127.0.0.1:28080
    - path: /api/
      service: web
      blue: 127.0.0.1:18080
      green: 127.0.0.1:28080
    - path: /jobs
      service: worker
      blue: "[::1]:18081"
      green: "[::1]:28081"
"#;

/// One service, nothing else.
pub const MINIMAL: &str = "services:\n  app:\n    componentName: web\n";

/// `n` services `svc-000`… each running one of 5 components, with a few Compose keys each.
pub fn many(n: usize) -> String {
    let mut t = String::from("version: \"3.8\"\nservices:\n");
    for i in 0..n {
        t.push_str(&format!(
            "  svc-{i:04}:\n    componentName: comp-{c}\n    restart: always\n    environment:\n      INDEX: \"{i}\"\n      ROLE: \"svc {i} of {n}\"\n      DSN: \"postgres://db:5432/app_{i}?sslmode=disable\"\n    ports:\n      - \"{port}:8080\"\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 30s\n    labels:\n      com.example.index: \"{i}\"\n",
            c = i % 5,
            port = 20000 + i
        ));
    }
    t.push_str("http:\n  routes:\n    - path: /\n      service: svc-0000\n      blue: 127.0.0.1:20000\n      green: 127.0.0.1:30000\n");
    t
}

/// Release `r1` with the components the templates use.
pub fn fixture_release() -> Release {
    release(&[
        "web", "worker", "comp-0", "comp-1", "comp-2", "comp-3", "comp-4",
    ])
}

/// Owned pieces of a [`RenderInput`].
pub struct Inputs {
    pub release: Release,
    pub target: Target,
    pub environment: Name,
    pub template: ComposeTemplate,
    pub work_dir: UnixPath,
    pub traffic: Traffic,
    pub runtime: ContainerRuntime,
    pub variables: BTreeMap<String, String>,
}

impl Inputs {
    pub fn new(template: &str) -> Self {
        Self {
            release: fixture_release(),
            target: ssh_target(1),
            environment: name("prod"),
            template: parse_template(template.as_bytes()).unwrap(),
            work_dir: UnixPath::parse("/srv/deploy").unwrap(),
            traffic: Traffic {
                live: Colour::Blue,
                canary: Some(Percent::new(10).unwrap()),
            },
            runtime: ContainerRuntime::Docker,
            variables: BTreeMap::new(),
        }
    }

    pub fn input(&self) -> RenderInput<'_> {
        RenderInput {
            release: &self.release,
            target: &self.target,
            environment: &self.environment,
            promotion_id: promotion_id(7),
            job_id: job_id(3),
            timestamp: ts(86_400_123),
            template: &self.template,
            traffic: self.traffic,
            runtime: self.runtime,
            work_dir: &self.work_dir,
            variables: &self.variables,
        }
    }

    pub fn render(&self) -> Bundle {
        render(&self.input()).unwrap()
    }
}

/// The representative templates of the golden files, by snapshot name.
pub fn templates() -> Vec<(&'static str, String)> {
    vec![
        ("small", SMALL.to_owned()),
        ("minimal", MINIMAL.to_owned()),
        ("fifty", many(50)),
    ]
}
