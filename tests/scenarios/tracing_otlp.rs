//! OpenTelemetry traces of a real deploy: `deployd --otlp-endpoint` exporting to a loopback OTLP/HTTP collector (a fake: a real HTTP server decoding the protobuf bodies with the OTLP types), over the shared `SshWorld`.
//!
//! The deploy is started by an approve request carrying a W3C `traceparent`; the
//! spans that arrive must chain request -> job -> wave -> task -> executor call in
//! the caller's trace, with the parent ids and the attributes a reader needs. A
//! collector that hangs, then one that is down, must hold no deploy up, nor the
//! SIGTERM drain beyond its bound.

use std::collections::BTreeMap;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deploy_testkit::ContainerCleanup;
use deploy_testkit::{http_response, read_request_blocking};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{Value, json};

use crate::deployd_e2e::{SshWorld, serves, target_add_args};
use crate::deployd_proc::{
    ADMIN_TOKEN, Deployd, api_post, create_release, deploy_and_follow, ok_json, wait_settled,
};

/// How long a deployed container must stay healthy before its task succeeds.
const SOAK_MS: u64 = 500;

/// What the collector has received, shared with its connection threads.
#[derive(Default)]
struct Received {
    /// Each span with the `service.name` of the resource it came with.
    spans: Mutex<Vec<(String, Span)>>,
    /// Every export body as sent (protobuf), for byte searches.
    bodies: Mutex<Vec<Vec<u8>>>,
    /// Protocol errors (a wrong path, an undecodable body): the tests assert none, so
    /// a broken exchange fails with its reason rather than as a timeout.
    errors: Mutex<Vec<String>>,
    /// Export requests read (answered or not).
    requests: AtomicUsize,
    hang: AtomicBool,
    /// Connections whose request is never answered (while hanging).
    held: Mutex<Vec<TcpStream>>,
}

/// A loopback OTLP/HTTP traces receiver: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, answered 200 (or never, while it hangs).
struct Collector {
    addr: String,
    received: Arc<Received>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let received = Arc::new(Received::default());
        let stop = Arc::new(AtomicBool::new(false));
        let accept = std::thread::spawn({
            let (received, stop) = (received.clone(), stop.clone());
            move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let received = received.clone();
                    std::thread::spawn(move || serve(stream, &received));
                }
            }
        });
        Self {
            addr,
            received,
            stop,
            accept: Some(accept),
        }
    }

    /// From now on, requests are read and never answered.
    fn hang(&self) {
        self.received.hang.store(true, Ordering::SeqCst);
    }

    /// Stops listening and closes the held connections: the collector is down.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which sees `stop` and drops the listener.
        let _ = TcpStream::connect(&self.addr);
        if let Some(accept) = self.accept.take() {
            accept.join().unwrap();
        }
        for stream in self.received.held.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn requests(&self) -> usize {
        self.received.requests.load(Ordering::SeqCst)
    }

    fn held(&self) -> usize {
        self.received.held.lock().unwrap().len()
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.received.spans.lock().unwrap().clone()
    }

    /// Fails with the collector's protocol errors, if any.
    fn assert_no_errors(&self) {
        let errors = self.received.errors.lock().unwrap();
        assert!(errors.is_empty(), "the collector saw: {errors:#?}");
    }

    /// Waits (bounded, 90 s) until `done` holds for the spans received; returns them.
    fn wait_for(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            self.assert_no_errors();
            let spans: Vec<Span> = self.spans().into_iter().map(|(_, s)| s).collect();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} among the {} spans received in 90 s: {:#?}",
                spans.len(),
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves one connection: reads each request whole, records its body and spans and
/// answers 200 with an empty `ExportTraceServiceResponse`, unless hanging. What goes
/// wrong is recorded, never a panic (which this thread would swallow).
fn serve(mut stream: TcpStream, received: &Received) {
    let mut buf = Vec::new();
    loop {
        let request = match read_request_blocking(&mut stream, &mut buf) {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => return,
        };
        if request.method != "POST" || request.path != "/v1/traces" {
            let seen = format!("{} {}", request.method, request.path);
            received
                .errors
                .lock()
                .unwrap()
                .push(format!("unexpected request {seen}"));
            return;
        }
        received.requests.fetch_add(1, Ordering::SeqCst);
        if received.hang.load(Ordering::SeqCst) {
            received.held.lock().unwrap().push(stream);
            return;
        }
        received.bodies.lock().unwrap().push(request.body.clone());
        let export = match ExportTraceServiceRequest::decode(request.body.as_slice()) {
            Ok(export) => export,
            Err(e) => {
                received
                    .errors
                    .lock()
                    .unwrap()
                    .push(format!("undecodable body: {e}"));
                return;
            }
        };
        let mut spans = received.spans.lock().unwrap();
        for resource in export.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| string_of(a.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        drop(spans);
        let answer = http_response(200, "application/x-protobuf", "");
        if std::io::Write::write_all(&mut stream, answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn string_of(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A span's attributes as strings.
fn attributes(span: &Span) -> BTreeMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|a| Some((a.key.clone(), string_of(a.value.as_ref()?.value.as_ref()?)?)))
        .collect()
}

use deploy_core::hex::lower_hex as hex;

/// `POST path` with the admin token and a `traceparent` header: status and JSON answer.
fn post_traced(addr: &str, path: &str, body: &Value, traceparent: &str) -> (u16, Value) {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         traceparent: {traceparent}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = deploy_testkit::http_exchange(addr, &request, Duration::from_secs(30)).unwrap();
    (response.status, response.json())
}

/// An environment with sshd host 1 as its target; its id.
fn environment(world: &SshWorld, prefix: &str) -> String {
    let env = ok_json(&world.addr, &["env", "create", "traced"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let add = target_add_args(&env, &world.hosts, 1, prefix, SOAK_MS);
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    ok_json(&world.addr, &add);
    env
}

/// The one span named `name` whose parent is `parent` in `trace`.
fn child<'a>(spans: &'a [Span], trace: &[u8], parent: &[u8], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == trace && s.parent_span_id == parent && s.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "spans `{name}` under {} in trace {}: {found:#?}\nall: {:#?}",
        hex(parent),
        hex(trace),
        spans
            .iter()
            .map(|s| (&s.name, hex(&s.parent_span_id), hex(&s.span_id)))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// Release `name` of `image` whose template reads `DB_PASSWORD` from application
/// secret `db`; its id.
fn secret_release(addr: &str, name: &str, image: &str) -> String {
    let template = "services:\n  web:\n    componentName: web\n    environment:\n      DB_PASSWORD: secret:db\n";
    let (status, release) = api_post(
        addr,
        "/api/v1/releases",
        &json!({"name": name, "components": [{"name": "web", "image": image}], "template": template}),
    );
    assert_eq!(status, 201, "{release}");
    release["id"].as_str().unwrap().to_owned()
}

/// Approves a promotion of `release` to `env` with `traceparent`; the job's id.
fn approve_traced(addr: &str, release: &str, env: &str, traceparent: &str) -> String {
    let (status, promotion) = api_post(
        addr,
        "/api/v1/promotions",
        &json!({"release": release, "environment": env}),
    );
    assert_eq!(status, 201, "{promotion}");
    let promotion = promotion["id"].as_str().unwrap();
    let (status, approved) = post_traced(
        addr,
        &format!("/api/v1/promotions/{promotion}/approve"),
        &json!({"max_attempts": 1}),
        traceparent,
    );
    assert_eq!(status, 201, "{approved}");
    approved["job"]["id"].as_str().unwrap().to_owned()
}

/// A trace id of this run (32 hex digits), `salt` making several differ.
fn trace_id_hex(salt: u128) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:032x}",
        nanos ^ (u128::from(std::process::id()) << 64) ^ (salt << 100)
    )
}

fn bytes_of(hex_text: &str) -> Vec<u8> {
    (0..hex_text.len() / 2)
        .map(|i| u8::from_str_radix(&hex_text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn a_deploy_is_traced_from_the_request_to_the_executor_call() {
    let prefix = format!("ot{}-", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let collector = Collector::start();
    let endpoint = format!("http://{}", collector.addr);
    let world = SshWorld::start_with(
        &prefix,
        "deployd-otlp-",
        &[
            ("DEPLOYD_OTLP_ENDPOINT", endpoint.as_str()),
            ("DEPLOYD_OTLP_SERVICE_NAME", "deployd-scenario"),
            (
                "DEPLOYD_OTLP_RESOURCE_ATTRIBUTES",
                "deployment.environment=test",
            ),
            // Export every 200 ms rather than every 5 s: the test waits less.
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    let addr = world.addr.as_str();
    let env = environment(&world, &prefix);
    // A real application secret the deploy resolves: its value must reach no export.
    let secret = format!("Tr{}-otlp-secret-value", std::process::id());
    let value_file = world.data.path().join("otlp-secret.txt");
    std::fs::write(&value_file, &secret).unwrap();
    ok_json(
        addr,
        &[
            "secrets",
            "set",
            "db",
            "--from-file",
            value_file.to_str().unwrap(),
        ],
    );
    let release = secret_release(addr, "v1", &world.images.v1);

    // The operator's own trace: its id and the span the request is made under.
    let trace_hex = trace_id_hex(1);
    let caller_hex = "0123456789abcdef";
    let traceparent = format!("00-{trace_hex}-{caller_hex}-01");
    let job_id = approve_traced(addr, &release, &env, &traceparent);
    let job = wait_settled(addr, &job_id, &world.server, Duration::from_secs(300));
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(serves(&format!("{prefix}web"), "/version"), "v1");
    let task = &job["tasks"][0];
    let task_id = task["id"].as_str().unwrap();

    let trace = bytes_of(&trace_hex);
    let caller = bytes_of(caller_hex);
    // The job's span ends when its runner returns, after every task's.
    let spans = collector.wait_for("job span", |spans| {
        spans
            .iter()
            .any(|s| s.name == "deploy.job" && attributes(s).get("job.id") == Some(&job_id))
    });

    assert!(
        collector
            .spans()
            .iter()
            .all(|(service, _)| service == "deployd-scenario"),
        "every span comes with service.name deployd-scenario"
    );
    // deployd was polled on /healthz until it answered: probes start no trace.
    assert!(!spans.iter().any(|s| s.name == "GET /healthz"));
    let request = child(
        &spans,
        &trace,
        &caller,
        "POST /api/v1/promotions/{id}/approve",
    );
    let request_attrs = attributes(request);
    assert_eq!(
        request_attrs["http.response.status_code"], "201",
        "{request_attrs:?}"
    );
    assert_eq!(request.kind, 2, "a server span");

    let job_span = child(&spans, &trace, &request.span_id, "deploy.job");
    let job_attrs = attributes(job_span);
    assert_eq!(job_attrs["job.id"], job_id);
    assert_eq!(job_attrs["job.status"], "completed");

    let wave = child(&spans, &trace, &job_span.span_id, "deploy.wave");
    assert_eq!(attributes(wave)["wave"], "0");

    let task_span = child(&spans, &trace, &wave.span_id, "deploy.task");
    let task_attrs = attributes(task_span);
    assert_eq!(task_attrs["task.id"], task_id, "{task_attrs:?}");
    assert_eq!(task_attrs["job.id"], job_id);
    assert_eq!(task_attrs["target.name"], "host-1");
    assert_eq!(task_attrs["target.id"], task["target_id"].as_str().unwrap());
    assert_eq!(task_attrs["digest"], task["digest"].as_str().unwrap());
    assert_eq!(task_attrs["task.attempt"], "1");
    assert_eq!(task_attrs["task.status"], "succeeded");

    let deploy = child(&spans, &trace, &task_span.span_id, "executor.deploy");
    let deploy_attrs = attributes(deploy);
    assert_eq!(deploy_attrs["target.name"], "host-1");
    assert_eq!(deploy_attrs["outcome"], "ok");
    // The health check (with its soak): one span, however many probes it took.
    let verify = child(&spans, &trace, &task_span.span_id, "health.verify");
    let verify_attrs = attributes(verify);
    assert_eq!(
        verify_attrs["health.verdict"], "healthy",
        "{verify_attrs:?}"
    );
    assert!(verify_attrs["health.probes"].parse::<u32>().unwrap() >= 1);
    assert!(
        !spans.iter().any(|s| s.parent_span_id == verify.span_id),
        "passing probes leave no span"
    );
    // Spans start no earlier than their parents.
    for (parent, kid) in [
        (request, job_span),
        (job_span, wave),
        (wave, task_span),
        (task_span, deploy),
        (task_span, verify),
    ] {
        assert!(
            kid.start_time_unix_nano >= parent.start_time_unix_nano,
            "{} before {}",
            kid.name,
            parent.name
        );
    }

    // A caller that did not record its part (sampled flag off): its request and the
    // job it creates export nothing. One whose traceparent is invalid: a trace of its
    // own. The marker request, made after both, is exported after anything they sent.
    let created_env = |s: &Span| s.name == "POST /api/v1/environments";
    let earlier: Vec<Vec<u8>> = spans
        .iter()
        .filter(|s| created_env(s))
        .map(|s| s.span_id.clone())
        .collect();
    let unsampled_hex = trace_id_hex(2);
    let unsampled_job = approve_traced(
        addr,
        &release,
        &env,
        &format!("00-{unsampled_hex}-{caller_hex}-00"),
    );
    let settled = wait_settled(
        addr,
        &unsampled_job,
        &world.server,
        Duration::from_secs(300),
    );
    assert_eq!(settled["status"], "completed", "{settled:#}");
    let invalid_hex = trace_id_hex(3);
    let (status, _) = post_traced(
        addr,
        "/api/v1/environments",
        &json!({"name": "invalid-parent"}),
        &format!("00-{}-{caller_hex}-01", invalid_hex.to_uppercase()),
    );
    assert_eq!(status, 201);
    let marker_hex = trace_id_hex(4);
    let (status, _) = post_traced(
        addr,
        "/api/v1/environments",
        &json!({"name": "marker"}),
        &format!("00-{marker_hex}-{caller_hex}-01"),
    );
    assert_eq!(status, 201);
    let marker = bytes_of(&marker_hex);
    let spans = collector.wait_for("marker request", |spans| {
        spans.iter().any(|s| s.trace_id == marker)
    });
    let unsampled = bytes_of(&unsampled_hex);
    assert!(
        !spans.iter().any(|s| s.trace_id == unsampled
            || attributes(s).get("job.id") == Some(&unsampled_job)),
        "nothing of an unsampled caller's trace is exported"
    );
    let invalid = bytes_of(&invalid_hex);
    let own: Vec<&Span> = spans
        .iter()
        .filter(|s| created_env(s) && s.trace_id != marker && !earlier.contains(&s.span_id))
        .collect();
    assert_eq!(
        own.len(),
        1,
        "the request with an invalid traceparent: {own:#?}"
    );
    assert!(own[0].trace_id != invalid && own[0].parent_span_id.is_empty());
    collector.assert_no_errors();

    // Nothing secret in any export, byte for byte: not the application secret the
    // deploy resolved, not the SSH key deployd holds, not the token.
    let key = std::fs::read_to_string(world.hosts.client_key()).unwrap();
    let key_line = key.lines().nth(1).unwrap();
    let bodies = collector.received.bodies.lock().unwrap().clone();
    assert!(!bodies.is_empty());
    for needle in [secret.as_str(), ADMIN_TOKEN, key_line] {
        assert!(
            !bodies
                .iter()
                .any(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())),
            "an export holds {needle:?}"
        );
    }
    // The log output carries no trace span: no prefix, no otel field.
    let log = world.server.stderr();
    for marker in ["deploy.job", "otel.name", "job{", "task{"] {
        assert!(!log.contains(marker), "deployd's log shows `{marker}`");
    }
}

#[test]
fn a_collector_that_hangs_or_is_down_holds_no_deploy_up() {
    let prefix = format!("oh{}-", std::process::id());
    let _cleanup = ContainerCleanup::new(&prefix);
    let mut collector = Collector::start();
    collector.hang();
    let endpoint = format!("http://{}", collector.addr);
    let world = SshWorld::start_with(
        &prefix,
        "deployd-otlp-hang-",
        &[
            ("DEPLOYD_OTLP_ENDPOINT", endpoint.as_str()),
            ("DEPLOYD_OTLP_SERVICE_NAME", "deployd-scenario"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let addr = world.addr.clone();
    let env = environment(&world, &prefix);
    let deploy = |name: &str, image: &str| {
        let release = create_release(&addr, name, image);
        let (stdout, _) = deploy_and_follow(&addr, &release, &env);
        assert!(stdout.trim_end().ends_with("ended completed"), "{stdout}");
    };

    // The collector takes export requests and never answers.
    deploy("v1", &world.images.v1);
    assert_eq!(serves(&format!("{prefix}web"), "/version"), "v1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while collector.requests() == 0 {
        assert!(Instant::now() < deadline, "deployd never tried to export");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The collector is down: connections are refused.
    collector.stop();
    deploy("v2", &world.images.v2);
    assert_eq!(serves(&format!("{prefix}web"), "/version"), "v2");
    collector.assert_no_errors();
    world.server.terminate();
}

/// A deployd with a loopback collector and no export on schedule (only the drain
/// sends), which has answered one request (its span queued); its data directory too.
fn queued_span(collector: &Collector, name: &str) -> (Deployd, tempfile::TempDir) {
    let endpoint = format!("http://{}", collector.addr);
    let data = deploy_testkit::temp_dir(name).unwrap();
    let server = Deployd::start(
        data.path(),
        deploy_testkit::free_port().unwrap(),
        &data.path().join("known_hosts"),
        &[
            ("DEPLOYD_OTLP_ENDPOINT", endpoint.as_str()),
            ("DEPLOYD_OTLP_SERVICE_NAME", "deployd-scenario"),
            ("OTEL_BSP_SCHEDULE_DELAY", "3600000"),
        ],
    );
    let (status, _) = api_post(
        &server.addr,
        "/api/v1/environments",
        &json!({"name": "flushed"}),
    );
    assert_eq!(status, 201);
    assert_eq!(
        collector.requests(),
        0,
        "nothing is exported before the drain"
    );
    (server, data)
}

#[test]
fn spans_still_queued_are_flushed_on_sigterm() {
    let collector = Collector::start();
    let (server, _data) = queued_span(&collector, "deployd-otlp-flush-");
    server.terminate();
    // Sent during the drain, before deployd exited.
    let spans: Vec<Span> = collector.spans().into_iter().map(|(_, s)| s).collect();
    assert!(
        spans.iter().any(|s| s.name == "POST /api/v1/environments"
            && attributes(s)
                .get("http.response.status_code")
                .map(String::as_str)
                == Some("201")),
        "{:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    collector.assert_no_errors();
}

#[test]
fn a_collector_hanging_at_sigterm_does_not_hold_the_exit() {
    let collector = Collector::start();
    collector.hang();
    let (server, data) = queued_span(&collector, "deployd-otlp-hung-flush-");
    // `terminate` requires a successful exit (within its own generous bound).
    server.terminate();
    // The flush was cut by its own bound, not ended by the export's timeout (later).
    let log = std::fs::read_to_string(data.path().join("deployd-stderr.txt")).unwrap();
    assert!(log.contains("traces not all flushed"), "{log}");
    // deployd sent its queued spans during the drain and exited while the collector
    // still held that request unanswered: the flush gave up on it, by its bound.
    assert_eq!(collector.requests(), 1);
    assert_eq!(collector.held(), 1, "the export request is still held open");
    assert!(collector.spans().is_empty());
    collector.assert_no_errors();
}
