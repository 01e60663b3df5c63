//! The bad input suite: a corpus of malformed and hostile requests against a live `deployd`, and bad flags to `deployctl`.
//!
//! deployd runs on its temp SQLite database (no target host is needed: the one
//! SSH target points at a closed port). A little valid state comes first: an
//! environment with that target, a release, a failed job (its only attempt is
//! refused a connection), a rejected and a pending promotion, viewer and deployer
//! tokens, a registered agent and a spare bootstrap token. Then every case of the
//! corpus goes over raw HTTP/1.1 (method, path, headers, content type and body as
//! written, JSON or not) and must get its documented status with an
//! `application/problem+json` body whose `detail` is not empty and, where the case
//! says so, names the bad field or value (in `detail` or `field`). Mismatches are
//! collected; the test fails once, listing all of them.
//!
//! Between groups `/healthz` must answer 200. The database must be unchanged by the
//! whole corpus: before and after, the SQLite file (with its WAL) is copied, the
//! two columns that legitimately change on reads are cleared in the copy
//! (`api_tokens.last_used_at`, written when a token is used, and
//! `agents.last_seen_at`, the agent heartbeat) and `sqlite3 .dump` of the copies
//! must be equal: every table, every row, except the audit log's record of the
//! refusals (a write it records as accepted still shows as a difference).
//!
//! The CLI part: `deployctl` with a bad digest, bad names, a bad `--strategy`,
//! `--max-failure-ratio`, `--expires-in-secs` or `target add --work-dir`, or a plain
//! `http://` server off loopback, exits 2 naming the bad value, and the dump is unchanged.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use deploy_testkit::{free_port, temp_dir};
use serde_json::{Value, json};

use crate::deployd_proc::{ADMIN_TOKEN, Deployd, api_post, api_post_as, ctl};

/// The body limit deployd runs with here (`DEPLOYD_MAX_BODY_BYTES`).
const MAX_BODY: usize = 256 * 1024;

/// An id of the right form (UUID v7) that names nothing.
const NO_SUCH_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// An HTTP answer: status, `Content-Type` and body.
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// Sends one request exactly as given (plus `Host`, `Content-Length` when there is
/// a body, and `Connection: close`) and reads the whole answer. Write errors are
/// ignored: the server may answer (413) and close before the body is sent.
fn send(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let _ = stream.write_all(&request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut body = response.get(split + 4..).unwrap_or_default().to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    if header("transfer-encoding").eq_ignore_ascii_case("chunked") {
        body = dechunk(&body);
    }
    Answer {
        status,
        content_type: header("content-type"),
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || raw.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[(eol + 4 + size).min(raw.len())..];
    }
    out
}

/// One request of the corpus and the answer it must get.
struct Case {
    group: &'static str,
    what: String,
    method: &'static str,
    path: String,
    /// The bearer token; `None` sends no `Authorization` header.
    token: Option<String>,
    /// `None` sends no `Content-Type` header.
    content_type: Option<String>,
    body: Vec<u8>,
    status: u16,
    /// Text (case-insensitive) the problem's `detail` or `field` must contain.
    mention: Option<String>,
}

/// Builds the corpus, one group at a time.
struct Corpus {
    cases: Vec<Case>,
    group: &'static str,
}

impl Corpus {
    fn group(&mut self, group: &'static str) {
        self.group = group;
    }

    /// A case with the admin token and a JSON body (`body` is sent as is).
    #[expect(clippy::too_many_arguments, reason = "a table row")]
    fn raw(
        &mut self,
        what: impl Into<String>,
        method: &'static str,
        path: impl Into<String>,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Vec<u8>>,
        status: u16,
        mention: Option<&str>,
    ) {
        self.cases.push(Case {
            group: self.group,
            what: what.into(),
            method,
            path: path.into(),
            token: token.map(str::to_owned),
            content_type: content_type.map(str::to_owned),
            body: body.into(),
            status,
            mention: mention.map(str::to_owned),
        });
    }

    /// `POST path` with a JSON body and `token`.
    fn post(
        &mut self,
        what: impl Into<String>,
        path: impl Into<String>,
        token: &str,
        body: &Value,
        status: u16,
        mention: Option<&str>,
    ) {
        self.raw(
            what,
            "POST",
            path,
            Some(token),
            Some("application/json"),
            body.to_string(),
            status,
            mention,
        );
    }

    /// `POST path` with a non-JSON (or hand-written) body as application/json, admin token.
    fn post_text(
        &mut self,
        what: impl Into<String>,
        path: impl Into<String>,
        body: impl Into<Vec<u8>>,
        status: u16,
        mention: Option<&str>,
    ) {
        self.raw(
            what,
            "POST",
            path,
            Some(ADMIN_TOKEN),
            Some("application/json"),
            body,
            status,
            mention,
        );
    }

    /// `GET path` with `token`.
    fn get(
        &mut self,
        what: impl Into<String>,
        path: impl Into<String>,
        token: Option<&str>,
        status: u16,
        mention: Option<&str>,
    ) {
        self.raw(what, "GET", path, token, None, Vec::new(), status, mention);
    }
}

/// What is wrong with `answer` for `case`, if anything.
fn check(case: &Case, answer: &Answer) -> Option<String> {
    let body = String::from_utf8_lossy(&answer.body);
    let short: String = body.chars().take(300).collect();
    if answer.status != case.status {
        return Some(format!(
            "status {} (expected {}): {short}",
            answer.status, case.status
        ));
    }
    if case.status < 400 {
        return None;
    }
    if !answer
        .content_type
        .starts_with(deploy_api_problem_media_type())
    {
        return Some(format!(
            "content type `{}`, not problem+json: {short}",
            answer.content_type
        ));
    }
    let Ok(problem) = serde_json::from_slice::<Value>(&answer.body) else {
        return Some(format!("body is not JSON: {short}"));
    };
    let detail = problem["detail"].as_str().unwrap_or_default();
    if detail.trim().is_empty() {
        return Some(format!("no detail: {short}"));
    }
    if problem["status"].as_u64() != Some(u64::from(case.status)) {
        return Some(format!("problem status differs: {short}"));
    }
    if let Some(mention) = &case.mention {
        let field = problem["field"].as_str().unwrap_or_default();
        let m = mention.to_lowercase();
        if !detail.to_lowercase().contains(&m) && !field.to_lowercase().contains(&m) {
            return Some(format!("detail/field do not mention `{mention}`: {short}"));
        }
    }
    None
}

fn deploy_api_problem_media_type() -> &'static str {
    "application/problem+json"
}

/// The database as text: a copy of the SQLite file and its WAL, with the columns
/// written on reads cleared, dumped by `sqlite3`.
fn dump(data: &Path) -> String {
    let db = data.join("db").join("deployd.sqlite");
    let copy = temp_dir("bad-input-dump-").unwrap();
    let to = copy.path().join("copy.sqlite");
    std::fs::copy(&db, &to).unwrap();
    let wal = data.join("db").join("deployd.sqlite-wal");
    if wal.exists() {
        std::fs::copy(&wal, copy.path().join("copy.sqlite-wal")).unwrap();
    }
    // The audit log records every refused write (that is its job): its rows are left
    // out of the dump, but a write it recorded as accepted (status < 400) shows up.
    let accepted = deploy_testkit::run_checked(
        "sqlite3",
        &[
            to.to_str().unwrap(),
            "SELECT method, path, status FROM audit_log WHERE status < 400 ORDER BY seq;",
        ],
    )
    .unwrap();
    deploy_testkit::run_checked(
        "sqlite3",
        &[
            to.to_str().unwrap(),
            "UPDATE api_tokens SET last_used_at = NULL; UPDATE agents SET last_seen_at = NULL;
             DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log;
             DELETE FROM sqlite_sequence WHERE name = 'audit_log';",
        ],
    )
    .unwrap();
    let dump = deploy_testkit::run_checked("sqlite3", &[to.to_str().unwrap(), ".dump"]).unwrap();
    let accepted: String = accepted
        .lines()
        .map(|l| format!("-- audited accepted write: {l}\n"))
        .collect();
    format!("{dump}{accepted}")
}

fn diff(before: &str, after: &str) -> String {
    let b: std::collections::BTreeSet<&str> = before.lines().collect();
    let a: std::collections::BTreeSet<&str> = after.lines().collect();
    let mut out = String::new();
    for l in b.difference(&a) {
        out.push_str(&format!("- {}\n", l.chars().take(400).collect::<String>()));
    }
    for l in a.difference(&b) {
        out.push_str(&format!("+ {}\n", l.chars().take(400).collect::<String>()));
    }
    out
}

fn created(addr: &str, path: &str, token: &str, body: &Value) -> Value {
    let (status, v) = api_post_as(addr, path, token, body);
    assert!(status == 201 || status == 200, "{path}: {status} {v:#}");
    v
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// Waits (bounded) until job `job` has completed.
fn wait_settled(addr: &str, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let answer = send(
            addr,
            "GET",
            &format!("/api/v1/jobs/{job}"),
            &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            b"",
        );
        let v: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        if !v["completed_at"].is_null() {
            return v;
        }
        assert!(Instant::now() < deadline, "job {job} did not settle: {v:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn healthy(addr: &str) -> bool {
    send(addr, "GET", "/healthz", &[], b"").status == 200
}

/// Ids and secrets of the valid state the corpus aims at.
struct Fixture {
    env: String,
    release: String,
    failed_job: String,
    rejected: String,
    pending: String,
    viewer: String,
    deployer: String,
    agent: String,
    bootstrap: String,
    /// A requested promotion of a release whose definition a docker_host cannot apply.
    privileged: String,
    /// A requested promotion of a service that publishes no port to an environment whose
    /// target checks the new instance (http without a health_endpoint).
    portless: String,
}

fn setup(addr: &str) -> Fixture {
    let env = id(&created(
        addr,
        "/api/v1/environments",
        ADMIN_TOKEN,
        &json!({"name": "bad-env"}),
    ));
    created(
        addr,
        &format!("/api/v1/environments/{env}/targets"),
        ADMIN_TOKEN,
        &ssh_target("host-1", "/tmp"),
    );
    let release = id(&created(
        addr,
        "/api/v1/releases",
        ADMIN_TOKEN,
        &release_body("r1", "web", &format!("registry.example/app@{DIGEST}")),
    ));
    let promotion = |()| {
        id(&created(
            addr,
            "/api/v1/promotions",
            ADMIN_TOKEN,
            &json!({"release_id": release, "environment_id": env}),
        ))
    };
    let p1 = promotion(());
    let approved = created(
        addr,
        &format!("/api/v1/promotions/{p1}/approve"),
        ADMIN_TOKEN,
        &json!({"max_attempts": 1}),
    );
    let failed_job = id(&approved["job"]);
    let job = wait_settled(addr, &failed_job);
    assert_eq!(job["status"], "failed", "{job:#}");
    let rejected = promotion(());
    created(
        addr,
        &format!("/api/v1/promotions/{rejected}/reject"),
        ADMIN_TOKEN,
        &json!({}),
    );
    let pending = promotion(());
    let token = |name: &str, role: &str| {
        created(
            addr,
            "/api/v1/tokens",
            ADMIN_TOKEN,
            &json!({"name": name, "role": role}),
        )["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let viewer = token("viewer-1", "viewer");
    let deployer = token("deployer-1", "deployer");
    // Bootstrap tokens are bound to an agent name and labels.
    let bootstrap_for = |name: &str| {
        created(
            addr,
            "/api/v1/agents/bootstrap-tokens",
            ADMIN_TOKEN,
            &json!({"name": name, "labels": {"env": "staging"}}),
        )["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = bootstrap_for("bad-agent");
    let agent = created(
        addr,
        "/api/v1/agent/register",
        &first,
        &json!({"protocol": 1, "name": "bad-agent", "capabilities": ["docker"]}),
    )["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let bootstrap = bootstrap_for("x1");
    // The environment's runtime policy allows `privileged`, so that the release exists
    // and its approval is refused by what a docker_host target can apply.
    let policy = send(
        addr,
        "PUT",
        &format!("/api/v1/environments/{env}/runtime-policy"),
        &[
            ("Authorization", &format!("Bearer {ADMIN_TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        br#"{"privileged": true}"#,
    );
    assert_eq!(
        policy.status,
        200,
        "{}",
        String::from_utf8_lossy(&policy.body)
    );
    let mut body = release_body("r-priv", "web", &format!("registry.example/app@{DIGEST}"));
    body["template"] = json!("services:\n  web:\n    componentName: web\n    privileged: true\n");
    let privileged_release = id(&created(addr, "/api/v1/releases", ADMIN_TOKEN, &body));
    let privileged = id(&created(
        addr,
        "/api/v1/promotions",
        ADMIN_TOKEN,
        &json!({"release_id": privileged_release, "environment_id": env}),
    ));
    // A target that checks the new instance, a definition that publishes no port.
    let probe_env = id(&created(
        addr,
        "/api/v1/environments",
        ADMIN_TOKEN,
        &json!({"name": "probe-env"}),
    ));
    let mut probing = ssh_target("probing-1", "/tmp");
    probing["health_check"] = json!({"check": {"type": "http", "path": "/health"}});
    created(
        addr,
        &format!("/api/v1/environments/{probe_env}/targets"),
        ADMIN_TOKEN,
        &probing,
    );
    let mut portless = release_body(
        "r-portless",
        "web",
        &format!("registry.example/app@{DIGEST}"),
    );
    portless["template"] = json!("services:\n  web:\n    componentName: web\n");
    let portless = id(&created(addr, "/api/v1/releases", ADMIN_TOKEN, &portless));
    let portless_promotion = id(&created(
        addr,
        "/api/v1/promotions",
        ADMIN_TOKEN,
        &json!({"release_id": portless, "environment_id": probe_env}),
    ));
    Fixture {
        env,
        release,
        failed_job,
        rejected,
        pending,
        viewer,
        deployer,
        agent,
        bootstrap,
        privileged,
        portless: portless_promotion,
    }
}

fn ssh_target(name: &str, work_dir: &str) -> Value {
    json!({
        "name": name,
        "target_type": "docker_host",
        "connection": {
            "model": "ssh",
            "host": "127.0.0.1",
            "port": 1,
            "user": "deploy",
            "credential_ref": "env:BAD_INPUT_NO_KEY",
            "work_dir": work_dir,
            "host_key": {"mode": "known_hosts"},
        },
    })
}

fn release_body(name: &str, component: &str, image: &str) -> Value {
    json!({"name": name, "components": [{"name": component, "image": image}]})
}

/// Hostile names: shell metacharacters, traversal, control characters, lookalikes, length.
fn hostile_names() -> Vec<(&'static str, String)> {
    vec![
        ("shell ;", "a;rm -rf /".to_owned()),
        ("traversal", "../../etc".to_owned()),
        ("dot-dot inside", "a/../../etc".to_owned()),
        ("command substitution", "$(id)".to_owned()),
        ("backticks", "a`id`".to_owned()),
        ("NUL", "a\u{0}b".to_owned()),
        ("newline", "a\nb".to_owned()),
        ("cyrillic lookalike", "\u{0430}dmin".to_owned()),
        ("upper case", "Admin".to_owned()),
        ("64 chars", "a".repeat(64)),
        ("empty", String::new()),
        ("pipe", "a|b".to_owned()),
    ]
}

fn corpus(f: &Fixture) -> Corpus {
    let mut c = Corpus {
        cases: Vec::new(),
        group: "",
    };
    let env = &f.env;
    let targets = format!("/api/v1/environments/{env}/targets");
    let good_image = format!("registry.example/app@{DIGEST}");

    c.group("auth");
    c.get("no token", "/api/v1/environments", None, 401, None);
    c.get(
        "unknown token",
        "/api/v1/environments",
        Some("dpl_not-a-token-0123456789abcdef"),
        401,
        None,
    );
    c.get("empty bearer", "/api/v1/jobs", Some(""), 401, None);
    c.raw(
        "basic auth",
        "GET",
        "/api/v1/jobs",
        None,
        None,
        Vec::new(),
        401,
        None,
    );
    c.post(
        "no token on create",
        "/api/v1/environments",
        "",
        &json!({"name": "x1"}),
        401,
        None,
    );
    c.post(
        "viewer creates an environment",
        "/api/v1/environments",
        &f.viewer,
        &json!({"name": "x1"}),
        403,
        Some("viewer"),
    );
    c.post(
        "deployer creates an environment",
        "/api/v1/environments",
        &f.deployer,
        &json!({"name": "x1"}),
        403,
        Some("deployer"),
    );
    c.post(
        "viewer creates a target",
        &targets,
        &f.viewer,
        &ssh_target("x1", "/tmp"),
        403,
        Some("admin"),
    );
    c.post(
        "deployer creates a target",
        &targets,
        &f.deployer,
        &ssh_target("x1", "/tmp"),
        403,
        Some("admin"),
    );
    c.post(
        "viewer creates a token",
        "/api/v1/tokens",
        &f.viewer,
        &json!({"name": "x1", "role": "admin"}),
        403,
        Some("admin"),
    );
    c.post(
        "deployer creates an admin token",
        "/api/v1/tokens",
        &f.deployer,
        &json!({"name": "x1", "role": "admin"}),
        403,
        Some("admin"),
    );
    c.post(
        "viewer creates a release",
        "/api/v1/releases",
        &f.viewer,
        &release_body("x1", "web", &good_image),
        403,
        Some("deployer"),
    );
    c.post(
        "viewer requests a promotion",
        "/api/v1/promotions",
        &f.viewer,
        &json!({"release_id": f.release, "environment_id": env}),
        403,
        None,
    );
    c.post(
        "viewer approves",
        format!("/api/v1/promotions/{}/approve", f.pending),
        &f.viewer,
        &json!({}),
        403,
        None,
    );
    c.post(
        "viewer cancels",
        format!("/api/v1/jobs/{}/cancel", f.failed_job),
        &f.viewer,
        &json!({}),
        403,
        None,
    );
    c.post(
        "deployer creates a bootstrap token",
        "/api/v1/agents/bootstrap-tokens",
        &f.deployer,
        &json!({"name": "x1"}),
        403,
        None,
    );
    c.get(
        "viewer lists tokens",
        "/api/v1/tokens",
        Some(&f.viewer),
        403,
        None,
    );
    c.post(
        "agent credential creates an environment",
        "/api/v1/environments",
        &f.agent,
        &json!({"name": "x1"}),
        401,
        None,
    );
    c.get(
        "agent credential lists jobs",
        "/api/v1/jobs",
        Some(&f.agent),
        401,
        None,
    );
    c.get(
        "bootstrap token lists jobs",
        "/api/v1/jobs",
        Some(&f.bootstrap),
        401,
        None,
    );
    c.post(
        "admin token polls as an agent",
        "/api/v1/agent/poll",
        ADMIN_TOKEN,
        &json!({"protocol": 1, "wait_ms": 0}),
        401,
        None,
    );
    c.post(
        "admin token registers an agent",
        "/api/v1/agent/register",
        ADMIN_TOKEN,
        &json!({"protocol": 1, "name": "x1", "capabilities": ["docker"]}),
        401,
        None,
    );
    c.post(
        "agent credential registers again",
        "/api/v1/agent/register",
        &f.agent,
        &json!({"protocol": 1, "name": "x1", "capabilities": ["docker"]}),
        401,
        None,
    );
    c.post(
        "admin token rotates an agent credential",
        "/api/v1/agent/credential/rotate",
        ADMIN_TOKEN,
        &json!({"protocol": 1}),
        401,
        None,
    );
    c.post(
        "unauthenticated poll",
        "/api/v1/agent/poll",
        "",
        &json!({"protocol": 1, "wait_ms": 0}),
        401,
        None,
    );

    c.group("routes and ids");
    c.get(
        "unknown route",
        "/api/v1/nope",
        Some(ADMIN_TOKEN),
        404,
        None,
    );
    c.get(
        "unknown version",
        "/api/v2/environments",
        Some(ADMIN_TOKEN),
        404,
        None,
    );
    for (what, bad) in [
        ("not a uuid", "not-a-uuid"),
        ("uuid v4", "6f1c2a8e-3b1d-4c8e-9f2a-1b2c3d4e5f60"),
        ("sql", "1%27%3BDROP%20TABLE%20jobs%3B--"),
        ("command substitution", "%24(id)"),
        ("NUL", "abc%00def"),
        ("encoded traversal", "..%2F..%2Fetc%2Fpasswd"),
    ] {
        c.get(
            format!("job id {what}"),
            format!("/api/v1/jobs/{bad}"),
            Some(ADMIN_TOKEN),
            400,
            Some("id"),
        );
    }
    c.get(
        "environment neither an id nor a name",
        "/api/v1/environments/Prod!",
        Some(ADMIN_TOKEN),
        400,
        Some("Prod!"),
    );
    c.get(
        "no environment of that name (close matches are named)",
        "/api/v1/environments/prod",
        Some(ADMIN_TOKEN),
        404,
        Some("no environment named `prod`"),
    );
    c.get(
        "release id too long",
        format!("/api/v1/releases/{}", "0".repeat(300)),
        Some(ADMIN_TOKEN),
        400,
        Some("id"),
    );
    c.get(
        "promotion id not a uuid",
        "/api/v1/promotions/..",
        Some(ADMIN_TOKEN),
        400,
        None,
    );
    c.get(
        "no such job",
        format!("/api/v1/jobs/{NO_SUCH_ID}"),
        Some(ADMIN_TOKEN),
        404,
        None,
    );
    c.get(
        "no such environment",
        format!("/api/v1/environments/{NO_SUCH_ID}"),
        Some(ADMIN_TOKEN),
        404,
        None,
    );
    c.post(
        "targets of no such environment",
        format!("/api/v1/environments/{NO_SUCH_ID}/targets"),
        ADMIN_TOKEN,
        &ssh_target("x1", "/tmp"),
        404,
        None,
    );
    c.get(
        "task id not a uuid",
        "/api/v1/tasks/%0Aid/logs",
        Some(ADMIN_TOKEN),
        400,
        Some("id"),
    );
    c.get(
        "artifact kind unknown",
        format!("/api/v1/jobs/{}/artifacts/..%2F..%2Fetc", f.failed_job),
        Some(ADMIN_TOKEN),
        400,
        None,
    );
    c.get(
        "jobs filter: bad status",
        "/api/v1/jobs?status=exploded",
        Some(ADMIN_TOKEN),
        400,
        Some("exploded"),
    );
    c.get(
        "jobs filter: bad environment",
        "/api/v1/jobs?environment=..%2Fetc",
        Some(ADMIN_TOKEN),
        400,
        Some("environment"),
    );
    c.get(
        "jobs filter: unknown parameter",
        "/api/v1/jobs?colour=red",
        Some(ADMIN_TOKEN),
        400,
        Some("colour"),
    );
    c.get(
        "jobs filter: limit not a number",
        "/api/v1/jobs?limit=lots",
        Some(ADMIN_TOKEN),
        400,
        Some("limit"),
    );
    c.raw(
        "DELETE a release (releases are archived, not deleted)",
        "DELETE",
        format!("/api/v1/releases/{}", f.release),
        Some(ADMIN_TOKEN),
        None,
        Vec::new(),
        405,
        None,
    );
    c.raw(
        "PUT the jobs list",
        "PUT",
        "/api/v1/jobs",
        Some(ADMIN_TOKEN),
        Some("application/json"),
        "{}",
        405,
        None,
    );
    c.raw(
        "GET a cancel",
        "GET",
        format!("/api/v1/jobs/{}/cancel", f.failed_job),
        Some(ADMIN_TOKEN),
        None,
        Vec::new(),
        405,
        None,
    );

    c.group("bodies");
    let envs = "/api/v1/environments";
    c.post_text("not JSON", envs, "name=x1", 400, None);
    c.post_text("empty body", envs, "", 400, None);
    c.post_text("truncated JSON", envs, "{\"name\": \"x1\"", 400, None);
    // Was a finding: serde read `["x1"]` as `{"name": "x1"}` and created it.
    c.post_text("JSON array", envs, "[\"x1\"]", 400, Some("JSON object"));
    c.post_text("JSON null", envs, "null", 400, None);
    c.post_text(
        "invalid UTF-8",
        envs,
        b"{\"name\": \"\xff\xfe\"}".to_vec(),
        400,
        None,
    );
    c.post_text(
        "duplicate key",
        envs,
        "{\"name\": \"x1\", \"name\": \"x2\"}",
        400,
        Some("name"),
    );
    c.post_text(
        "deeply nested JSON (10,000 levels)",
        envs,
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        400,
        None,
    );
    c.post_text(
        "deeply nested JSON in a field",
        envs,
        format!(
            "{{\"name\": \"x1\", \"hooks\": {}{}}}",
            "{\"a\":".repeat(10_000),
            "}".repeat(10_000)
        ),
        400,
        None,
    );
    c.post_text(
        "oversized body",
        envs,
        format!("{{\"name\": \"{}\"}}", "a".repeat(MAX_BODY + 1024)),
        413,
        Some(&MAX_BODY.to_string()),
    );
    c.post_text(
        "oversized release",
        "/api/v1/releases",
        json!({"name": "x1", "components": vec![json!({"name": "web", "image": good_image}); 3_000]})
            .to_string(),
        413,
        None,
    );
    c.post(
        "missing field",
        envs,
        ADMIN_TOKEN,
        &json!({}),
        400,
        Some("name"),
    );
    c.post(
        "unknown field",
        envs,
        ADMIN_TOKEN,
        &json!({"name": "x1", "admin": true}),
        400,
        Some("admin"),
    );
    c.post(
        "name a number",
        envs,
        ADMIN_TOKEN,
        &json!({"name": 7}),
        400,
        Some("name"),
    );
    c.post(
        "name an object",
        envs,
        ADMIN_TOKEN,
        &json!({"name": {"$ne": ""}}),
        400,
        Some("name"),
    );
    c.post(
        "release components not a list",
        "/api/v1/releases",
        ADMIN_TOKEN,
        &json!({"name": "x1", "components": "web"}),
        400,
        Some("components"),
    );
    c.post(
        "target port a string",
        &targets,
        ADMIN_TOKEN,
        &json!({"name": "x1", "target_type": "docker_host", "connection": {"model": "ssh", "host": "127.0.0.1", "port": "22", "user": "deploy", "credential_ref": "env:K", "work_dir": "/tmp"}}),
        400,
        // FINDING (see work_dir): `field` is `connection`, the detail names the value.
        Some("connection"),
    );
    c.post(
        "target port out of range",
        &targets,
        ADMIN_TOKEN,
        &json!({"name": "x1", "target_type": "docker_host", "connection": {"model": "ssh", "host": "127.0.0.1", "port": 70000, "user": "deploy", "credential_ref": "env:K", "work_dir": "/tmp"}}),
        400,
        // FINDING (see work_dir): `field` is `connection`, the detail names the value.
        Some("connection"),
    );
    c.post(
        "target unknown connection model",
        &targets,
        ADMIN_TOKEN,
        &json!({"name": "x1", "target_type": "docker_host", "connection": {"model": "telnet", "host": "h"}}),
        400,
        Some("connection"),
    );
    c.post(
        "target unknown target type",
        &targets,
        ADMIN_TOKEN,
        &json!({"name": "x1", "target_type": "mainframe", "connection": ssh_target("x", "/tmp")["connection"]}),
        400,
        Some("target_type"),
    );
    c.post(
        "target host with shell",
        &targets,
        ADMIN_TOKEN,
        &json!({"name": "x1", "target_type": "docker_host", "connection": {"model": "ssh", "host": "h; touch /tmp/pwned", "user": "deploy", "credential_ref": "env:K", "work_dir": "/tmp"}}),
        400,
        Some("host"),
    );
    c.post(
        "target inline private key",
        &targets,
        ADMIN_TOKEN,
        &json!({"name": "x1", "target_type": "docker_host", "connection": {"model": "ssh", "host": "h", "user": "deploy", "credential_ref": "-----BEGIN OPENSSH PRIVATE KEY-----", "work_dir": "/tmp"}}),
        400,
        Some("credential_ref"),
    );
    c.post(
        "target user with shell",
        &targets,
        ADMIN_TOKEN,
        &json!({"name": "x1", "target_type": "docker_host", "connection": {"model": "ssh", "host": "h", "user": "root$(id)", "credential_ref": "env:K", "work_dir": "/tmp"}}),
        400,
        Some("user"),
    );
    c.post(
        "token role unknown",
        "/api/v1/tokens",
        ADMIN_TOKEN,
        &json!({"name": "x1", "role": "root"}),
        400,
        Some("role"),
    );
    c.post(
        "token name too long",
        "/api/v1/tokens",
        ADMIN_TOKEN,
        &json!({"name": "t".repeat(101), "role": "viewer"}),
        400,
        Some("name"),
    );
    c.post(
        "token name blank",
        "/api/v1/tokens",
        ADMIN_TOKEN,
        &json!({"name": "   ", "role": "viewer"}),
        400,
        Some("name"),
    );
    c.post(
        "token name with NUL",
        "/api/v1/tokens",
        ADMIN_TOKEN,
        &json!({"name": "a\u{0}b", "role": "viewer"}),
        400,
        Some("name"),
    );
    c.post(
        "token name with newline (log injection)",
        "/api/v1/tokens",
        ADMIN_TOKEN,
        &json!({"name": "ok\nERROR forged log line", "role": "viewer"}),
        400,
        Some("name"),
    );
    // Token expiry: `expires_in_secs`, 60 to ten years; a past time cannot be said
    // (a negative count is a wrong type), too short or too long is 422, a wrong type 400.
    for (what, secs, status) in [
        ("token expiry zero", json!(0), 422),
        ("token expiry under a minute", json!(59), 422),
        ("token expiry past ten years", json!(315_360_001_u64), 422),
        ("token expiry u64 max", json!(u64::MAX), 422),
        ("token expiry negative (in the past)", json!(-3600), 400),
        ("token expiry 2^64 as float", json!(1.8e19), 400),
        ("token expiry fraction", json!(90.5), 400),
        ("token expiry as text", json!("1d"), 400),
        ("token expiry as a date", json!("2020-01-01T00:00:00Z"), 400),
        ("token expiry as bool", json!(true), 400),
        ("token expiry as object", json!({"secs": 60}), 400),
    ] {
        c.post(
            what,
            "/api/v1/tokens",
            ADMIN_TOKEN,
            &json!({"name": "x-expiry", "role": "viewer", "expires_in_secs": secs}),
            status,
            Some("expires_in_secs"),
        );
    }
    c.post_text(
        "token expiry past u64",
        "/api/v1/tokens",
        r#"{"name": "x-expiry", "role": "viewer", "expires_in_secs": 18446744073709551616}"#,
        400,
        Some("expires_in_secs"),
    );
    c.post(
        "token expires_at is not a field (expires_in_secs is)",
        "/api/v1/tokens",
        ADMIN_TOKEN,
        &json!({"name": "x-expiry", "role": "viewer", "expires_at": "2030-01-01T00:00:00Z"}),
        400,
        Some("expires_at"),
    );
    c.post(
        "bootstrap token name with escape",
        "/api/v1/agents/bootstrap-tokens",
        ADMIN_TOKEN,
        &json!({"name": "a\u{1b}[31mred"}),
        400,
        Some("name"),
    );
    c.post(
        "bootstrap token unknown field",
        "/api/v1/agents/bootstrap-tokens",
        ADMIN_TOKEN,
        &json!({"name": "x1", "uses": 1000}),
        400,
        Some("uses"),
    );
    c.post(
        "rollback without reason",
        format!("/api/v1/jobs/{}/rollback", f.failed_job),
        ADMIN_TOKEN,
        &json!({}),
        400,
        Some("reason"),
    );

    c.group("content types");
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonx",
    ] {
        c.raw(
            format!("valid environment as {ct}"),
            "POST",
            envs,
            Some(ADMIN_TOKEN),
            Some(ct),
            json!({"name": "ct-env"}).to_string(),
            415,
            Some(ct.split(';').next().unwrap()),
        );
    }

    c.group("names");
    for (what, name) in hostile_names() {
        c.post(
            format!("environment name {what}"),
            envs,
            ADMIN_TOKEN,
            &json!({"name": name}),
            400,
            Some("name"),
        );
        c.post(
            format!("target name {what}"),
            &targets,
            ADMIN_TOKEN,
            &ssh_target(&name, "/tmp"),
            400,
            Some("name"),
        );
        c.post(
            format!("release name {what}"),
            "/api/v1/releases",
            ADMIN_TOKEN,
            &release_body(&name, "web", &good_image),
            400,
            Some("name"),
        );
        c.post(
            format!("component name {what}"),
            "/api/v1/releases",
            ADMIN_TOKEN,
            &release_body("x1", &name, &good_image),
            400,
            Some("components[0].name"),
        );
    }
    for (what, dir) in [
        ("relative", "tmp/app"),
        ("traversal", "/srv/../../etc"),
        ("dot", "/srv/./app"),
        ("shell ;", "/srv/app;rm -rf /"),
        ("command substitution", "/srv/$(id)"),
        ("backticks", "/srv/`id`"),
        ("space", "/srv/my app"),
        ("newline", "/srv/app\n/etc"),
        ("NUL", "/srv/app\u{0}"),
        ("double slash", "//srv"),
        ("trailing slash", "/srv/"),
        ("too long", &format!("/{}", "a/".repeat(600))),
        ("empty", ""),
    ] {
        c.post(
            format!("work_dir {what}"),
            &targets,
            ADMIN_TOKEN,
            &ssh_target("x1", dir),
            400,
            // FINDING (not fixed): the `field` of a bad work_dir (and port, host,
            // user) is `connection`, not `connection.work_dir`: serde_path_to_error
            // cannot see into the internally tagged `Connection`. The detail
            // names the bad value and what a path must be, so it stays useful.
            Some("connection"),
        );
    }
    c.post(
        "agent register name with shell",
        "/api/v1/agent/register",
        &f.bootstrap,
        &json!({"protocol": 1, "name": "a;reboot", "capabilities": ["docker"]}),
        400,
        Some("name"),
    );
    c.post(
        "agent register unknown capability",
        "/api/v1/agent/register",
        &f.bootstrap,
        &json!({"protocol": 1, "name": "x1", "capabilities": ["root"]}),
        400,
        Some("capabilities"),
    );

    c.group("images and components");
    for (what, image) in [
        ("tag, no digest", "registry.example/app:latest".to_owned()),
        ("short digest", "registry.example/app@sha256:abc".to_owned()),
        (
            "upper-case digest",
            format!("registry.example/app@sha256:{}", "A".repeat(64)),
        ),
        (
            "unknown algorithm",
            format!("registry.example/app@md5:{}", "0".repeat(32)),
        ),
        (
            "non-hex digest",
            format!("registry.example/app@sha256:{}", "g".repeat(64)),
        ),
        ("empty image", String::new()),
        ("shell in image", format!("app;rm -rf /@{DIGEST}")),
        ("traversal in image", format!("../../etc/passwd@{DIGEST}")),
        (
            "upper-case repository",
            format!("Registry.example/App@{DIGEST}"),
        ),
        (
            "space in image",
            format!("registry.example/my app@{DIGEST}"),
        ),
        ("newline in image", format!("app\n@{DIGEST}")),
        ("digest only", DIGEST.to_owned()),
    ] {
        c.post(
            format!("image {what}"),
            "/api/v1/releases",
            ADMIN_TOKEN,
            &release_body("x1", "web", &image),
            400,
            Some("image"),
        );
    }
    c.post(
        "release without components",
        "/api/v1/releases",
        ADMIN_TOKEN,
        &json!({"name": "x1", "components": []}),
        422,
        Some("components"),
    );
    c.post(
        "release with a duplicate component",
        "/api/v1/releases",
        ADMIN_TOKEN,
        &json!({"name": "x1", "components": [{"name": "web", "image": good_image}, {"name": "web", "image": good_image}]}),
        422,
        Some("web"),
    );
    c.post(
        "promotion of no such release",
        "/api/v1/promotions",
        ADMIN_TOKEN,
        &json!({"release_id": NO_SUCH_ID, "environment_id": env}),
        422,
        Some("release"),
    );
    c.post(
        "promotion to no such environment",
        "/api/v1/promotions",
        ADMIN_TOKEN,
        &json!({"release_id": f.release, "environment_id": NO_SUCH_ID}),
        422,
        Some("environment"),
    );
    c.post(
        "promotion of a release named by something no name can be",
        "/api/v1/promotions",
        ADMIN_TOKEN,
        &json!({"release": "../r1", "environment": env}),
        400,
        Some("release"),
    );
    c.post(
        "promotion of no release of that name",
        "/api/v1/promotions",
        ADMIN_TOKEN,
        &json!({"release": "no-such-release", "environment": env}),
        422,
        Some("no release named `no-such-release`"),
    );
    c.post(
        "plan of no such release",
        "/api/v1/plan",
        ADMIN_TOKEN,
        &json!({"release_id": NO_SUCH_ID, "environment_id": env}),
        422,
        Some("release"),
    );
    c.post(
        "plan with an unknown strategy",
        "/api/v1/plan",
        ADMIN_TOKEN,
        &json!({"release_id": f.release, "environment_id": env, "strategy": {"type": "yolo"}}),
        400,
        Some("strategy"),
    );
    c.post(
        "plan with parallelism 0",
        "/api/v1/plan",
        ADMIN_TOKEN,
        &json!({"release_id": f.release, "environment_id": env, "parallelism": 0}),
        400,
        Some("parallelism"),
    );
    c.get(
        "artifact of an unknown kind",
        format!("/api/v1/jobs/{}/artifacts/shellscript", f.failed_job),
        Some(ADMIN_TOKEN),
        400,
        Some("shellscript"),
    );

    c.group("templates");
    let approve = format!("/api/v1/promotions/{}/approve", f.pending);
    let bomb = {
        let mut y = String::from(
            "x-a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for name in ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] {
            y.push_str(&format!(
                "x-{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 9].join(",")
            ));
            prev = name;
        }
        y.push_str("services:\n  web:\n    image: \"${IMAGE}\"\n    labels: *i\n");
        y
    };
    for (what, template, mention) in [
        ("YAML alias bomb", bomb, None),
        (
            "deeply nested YAML",
            // Was a finding: the YAML scanner's time grows with the square of the
            // nesting (50,000 levels: 30 s of CPU per request); now refused up front.
            format!("services: {}{}", "[".repeat(50_000), "]".repeat(50_000)),
            Some("nest deeper than 128"),
        ),
        (
            "huge YAML document (200,000 keys)",
            format!(
                "services:\n  web:\n    image: x\n    environment:\n{}",
                (0..12_000)
                    .map(|i| format!("      K{i}: v\n"))
                    .collect::<String>()
            ),
            None,
        ),
        ("not YAML", "services: [unclosed".to_owned(), None),
        ("YAML, not a mapping", "- a\n- b\n".to_owned(), None),
        (
            "unknown top-level key",
            "services: {}\nexploit: true\n".to_owned(),
            Some("exploit"),
        ),
        ("empty template", String::new(), None),
        (
            "unknown YAML tag",
            "services: !!python/object:os.system [\"id\"]\n".to_owned(),
            None,
        ),
    ] {
        c.post(
            format!("approve with template: {what}"),
            &approve,
            ADMIN_TOKEN,
            &json!({"template": template}),
            422,
            mention,
        );
    }
    c.post(
        "approve with max_attempts 0",
        &approve,
        ADMIN_TOKEN,
        &json!({"max_attempts": 0}),
        422,
        Some("max_attempts"),
    );
    c.post(
        "approve with max_attempts 1000",
        &approve,
        ADMIN_TOKEN,
        &json!({"max_attempts": 1000}),
        422,
        Some("max_attempts"),
    );
    c.post(
        "approve with max_attempts negative",
        &approve,
        ADMIN_TOKEN,
        &json!({"max_attempts": -1}),
        400,
        Some("max_attempts"),
    );
    c.post(
        "approve with template a number",
        &approve,
        ADMIN_TOKEN,
        &json!({"template": 42}),
        400,
        Some("template"),
    );
    c.post(
        "approve with an unknown field",
        &approve,
        ADMIN_TOKEN,
        &json!({"force": true}),
        400,
        Some("force"),
    );
    c.post(
        "approve with a bad failure ratio",
        &approve,
        ADMIN_TOKEN,
        &json!({"failure_policy": {"max_failure_ratio": 7}}),
        400,
        Some("failure_policy"),
    );

    c.group("service definitions");
    let image = format!("registry.example/app@{DIGEST}");
    for (what, template, mention) in [
        (
            "a port out of range",
            "services:\n  web:\n    componentName: web\n    ports: [\"80:70000\"]\n",
            "template.services.web.ports[0]",
        ),
        (
            "a misspelt key",
            "services:\n  web:\n    componentName: web\n    volumnes: []\n",
            "template.services.web.volumnes",
        ),
        (
            "an image of its own",
            "services:\n  web:\n    componentName: web\n    image: nginx:latest\n",
            "the release pins the image",
        ),
        (
            "a component the release lacks",
            "services:\n  web:\n    componentName: api\n",
            "template.services.web.componentName",
        ),
        (
            "a NUL in a value",
            "services:\n  web:\n    componentName: web\n    environment:\n      A: \"a\\0b\"\n",
            "NUL",
        ),
        (
            "host interpolation",
            "services:\n  web:\n    componentName: web\n    environment:\n      A: $HOME\n",
            "`$$` for a literal `$`",
        ),
        (
            "an anonymous volume",
            "services:\n  web:\n    componentName: web\n    volumes: [\"/data\"]\n",
            "template.services.web.volumes[0]",
        ),
        (
            "an undeclared network",
            "services:\n  web:\n    componentName: web\n    networks: [nowhere]\n",
            "template.services.web.networks.nowhere",
        ),
        (
            "a memory limit in pints",
            "services:\n  web:\n    componentName: web\n    mem_limit: 2pints\n",
            "template.services.web.mem_limit",
        ),
    ] {
        let mut body = release_body("r-def", "web", &image);
        body["template"] = json!(template);
        c.post(
            format!("release with a definition: {what}"),
            "/api/v1/releases",
            ADMIN_TOKEN,
            &body,
            422,
            Some(mention),
        );
    }
    c.post(
        "approve a definition a docker_host cannot apply",
        format!("/api/v1/promotions/{}/approve", f.privileged),
        ADMIN_TOKEN,
        &json!({}),
        422,
        Some("template.services.web.privileged"),
    );
    let mut two = release_body("r-two", "web", &image);
    two["components"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "worker", "image": image}));
    two["template"] = json!("services:\n  web:\n    componentName: web\n");
    c.post(
        "release with a component no service runs",
        "/api/v1/releases",
        ADMIN_TOKEN,
        &two,
        422,
        Some("componentName: worker"),
    );
    c.post(
        "approve an instance check of a service that publishes no port",
        format!("/api/v1/promotions/{}/approve", f.portless),
        ADMIN_TOKEN,
        &json!({}),
        422,
        Some("service `web` publishes no TCP port"),
    );
    for (what, variables, mention) in [
        ("a NUL in a value", json!({"A": "x\u{0}y"}), "variables.A"),
        ("a name with a dash", json!({"A-B": "x"}), "variables"),
        (
            "a name the renderer owns",
            json!({"STELLA_DIGEST": "x"}),
            "STELLA_",
        ),
    ] {
        c.post(
            format!("environment variables: {what}"),
            "/api/v1/environments",
            ADMIN_TOKEN,
            &json!({"name": "x-vars", "variables": variables}),
            422,
            Some(mention),
        );
    }
    let k8s = |check: Value| {
        json!({
            "name": "k8s-1",
            "target_type": "k8s_deployment",
            "connection": {"model": "api", "platform": "kubernetes", "api_server": "https://k8s.example:6443",
                           "namespace": "prod", "deployment": "web", "container": "web",
                           "credential_ref": "env:DEPLOY_K8S"},
            "health_check": {"check": check},
        })
    };
    c.post(
        "a command check on a kubernetes target",
        &targets,
        ADMIN_TOKEN,
        &k8s(json!({"type": "command", "command": ["true"]})),
        422,
        Some("http or tcp on a k8s_deployment"),
    );
    c.post(
        "an instance check on a kubernetes target without an endpoint",
        &targets,
        ADMIN_TOKEN,
        &k8s(json!({"type": "http"})),
        422,
        Some("health_endpoint"),
    );
    // Kubernetes and Nomad credentials: the auth kind and the fields each one takes.
    let api_target = |target_type: &str, connection: Value| json!({"name": "api-x", "target_type": target_type, "connection": connection});
    let kube = |more: Value| {
        let mut c = json!({"model": "api", "platform": "kubernetes", "namespace": "prod",
                           "deployment": "web", "container": "web"});
        for (k, v) in more.as_object().unwrap() {
            c[k] = v.clone();
        }
        api_target("k8s_deployment", c)
    };
    for (what, more, status, mention) in [
        (
            "a kubernetes auth kind that does not exist",
            json!({"auth": {"kind": "exec"}}),
            400,
            "exec",
        ),
        (
            "a typo in kubeconfig auth",
            json!({"auth": {"kind": "kubeconfig", "path": "/etc/deploy/kubeconfig", "contxt": "prod"}}),
            400,
            "contxt",
        ),
        (
            "a relative kubeconfig path",
            json!({"auth": {"kind": "kubeconfig", "path": "etc/kubeconfig"}}),
            400,
            "etc/kubeconfig",
        ),
        (
            "a kubeconfig context with a space",
            json!({"auth": {"kind": "kubeconfig", "path": "/k", "context": "a b"}}),
            400,
            "a b",
        ),
        (
            "kubeconfig auth with an api_server too",
            json!({"auth": {"kind": "kubeconfig", "path": "/k"}, "api_server": "https://k8s.example:6443"}),
            422,
            "connection.api_server",
        ),
        (
            "in-cluster auth with a ca_ref too",
            json!({"auth": {"kind": "in_cluster"}, "ca_ref": "env:CA"}),
            422,
            "connection.ca_ref",
        ),
        (
            "token auth without a credential_ref",
            json!({"api_server": "https://k8s.example:6443"}),
            422,
            "connection.credential_ref",
        ),
        (
            "a bearer token over plain http off loopback",
            json!({"api_server": "http://k8s.example:6443", "credential_ref": "env:KUBE_TOKEN"}),
            422,
            "http://k8s.example:6443",
        ),
    ] {
        c.post(
            what,
            &targets,
            ADMIN_TOKEN,
            &kube(more),
            status,
            Some(mention),
        );
    }
    let nomad = |address: &str, more: Value| {
        let mut c = json!({"model": "api", "platform": "nomad", "address": address,
                           "job": "web", "task_group": "web", "task": "web"});
        for (k, v) in more.as_object().unwrap() {
            c[k] = v.clone();
        }
        api_target("nomad_job", c)
    };
    for (what, address, more, status, mention) in [
        (
            "a nomad client certificate without its key",
            "https://nomad.example:4646",
            json!({"client_cert_ref": "file:/etc/nomad.d/client.pem"}),
            422,
            "connection.client_key_ref",
        ),
        (
            "a nomad client certificate over plain http",
            "http://nomad.example:4646",
            json!({"client_cert_ref": "file:/c.pem", "client_key_ref": "file:/c.key"}),
            422,
            "connection.address",
        ),
        (
            "a nomad acl token over plain http off loopback",
            "http://nomad.example:4646",
            json!({"credential_ref": "env:NOMAD_TOKEN"}),
            422,
            "http://nomad.example:4646",
        ),
        (
            "a nomad ca given inline instead of by reference",
            "https://nomad.example:4646",
            json!({"ca_ref": "-----BEGIN CERTIFICATE-----"}),
            400,
            "connection",
        ),
    ] {
        c.post(
            what,
            &targets,
            ADMIN_TOKEN,
            &nomad(address, more),
            status,
            Some(mention),
        );
    }
    // ECS: no credential_ref means the AWS default chain; a profile goes only with it.
    let ecs = |more: Value| {
        let mut c = json!({"model": "api", "platform": "ecs", "region": "eu-west-1",
                           "cluster": "prod", "service": "web", "container": "web"});
        for (k, v) in more.as_object().unwrap() {
            c[k] = v.clone();
        }
        api_target("ecs_service", c)
    };
    for (what, more, status, mention) in [
        (
            "an ecs profile with static keys too",
            json!({"profile": "prod-deploy", "credential_ref": "env:AWS_KEYS"}),
            422,
            "connection.profile",
        ),
        (
            "an ecs profile name with a space",
            json!({"profile": "prod deploy"}),
            400,
            "prod deploy",
        ),
        (
            "ecs keys given inline instead of by reference",
            json!({"credential_ref": "AKIAEXAMPLE:wJalrXUtnFEMI"}),
            400,
            "connection",
        ),
        (
            "a typo in the ecs profile field",
            json!({"profle": "prod"}),
            400,
            "profle",
        ),
    ] {
        c.post(
            what,
            &targets,
            ADMIN_TOKEN,
            &ecs(more),
            status,
            Some(mention),
        );
    }
    let mut compose = ssh_target("compose-x", "/tmp");
    compose["target_type"] = json!("compose_host");
    compose["health_check"] =
        json!({"check": {"type": "command", "command": ["true"], "in_container": true}});
    c.post(
        "a command in the container on a compose_host",
        &targets,
        ADMIN_TOKEN,
        &compose,
        422,
        Some("in_container"),
    );
    let windows = json!({
        "name": "win-1",
        "target_type": "windows_service",
        "connection": {"model": "winrm", "endpoint": "https://win.example:5986/wsman",
                       "auth": "ntlm", "credential_ref": "env:DEPLOY_WIN"},
    });
    c.post(
        "a windows_service target",
        &targets,
        ADMIN_TOKEN,
        &windows,
        422,
        Some("windows_service deploys are not implemented yet"),
    );

    c.group("runtime policies");
    let policy = format!("/api/v1/environments/{env}/runtime-policy");
    for (what, body, mention) in [
        (
            "an unknown policy field",
            r#"{"privileged": true, "priviledged": true}"#,
            "priviledged",
        ),
        (
            "a relative bind prefix",
            r#"{"bind_prefixes": ["srv/app"]}"#,
            "srv/app",
        ),
        (
            "a bind prefix with `..`",
            r#"{"bind_prefixes": ["/srv/../etc"]}"#,
            "/srv/../etc",
        ),
        (
            "a bind prefix with NUL",
            r#"{"bind_prefixes": ["/srv\u0000"]}"#,
            "bind_prefixes",
        ),
        (
            "an unknown capability",
            r#"{"capabilities": ["NET_ADMINN"]}"#,
            "NET_ADMINN",
        ),
        (
            "an unknown host namespace",
            r#"{"host_namespaces": ["net"]}"#,
            "net",
        ),
        (
            "a policy flag that is not a boolean",
            r#"{"devices": "yes"}"#,
            "devices",
        ),
        ("a policy that is a list", r#"[true]"#, "object"),
    ] {
        c.raw(
            what,
            "PUT",
            &policy,
            Some(ADMIN_TOKEN),
            Some("application/json"),
            body,
            400,
            Some(mention),
        );
    }
    c.raw(
        "a runtime policy set by a deployer",
        "PUT",
        &policy,
        Some(&f.deployer),
        Some("application/json"),
        r#"{"privileged": true}"#,
        403,
        None,
    );
    c.raw(
        "a runtime policy in the ordinary environment update",
        "PUT",
        format!("/api/v1/environments/{env}"),
        Some(ADMIN_TOKEN),
        Some("application/json"),
        json!({"name": "bad-env", "version": 1, "runtime_policy": {"privileged": true}})
            .to_string(),
        400,
        Some("runtime_policy"),
    );
    c.raw(
        "a runtime policy of no environment",
        "PUT",
        format!("/api/v1/environments/{NO_SUCH_ID}/runtime-policy"),
        Some(ADMIN_TOKEN),
        Some("application/json"),
        "{}",
        404,
        None,
    );
    let mut socket = release_body("r-socket", "web", &format!("registry.example/app@{DIGEST}"));
    socket["template"] =
        json!("services:\n  web:\n    componentName: web\n    volumes: [\"/run:/host-run\"]\n");
    c.post(
        "a release binding the Docker socket's directory",
        "/api/v1/releases",
        ADMIN_TOKEN,
        &socket,
        422,
        Some("template.services.web.volumes"),
    );
    let mut pid = release_body("r-pid", "web", &format!("registry.example/app@{DIGEST}"));
    pid["template"] = json!("services:\n  web:\n    componentName: web\n    pid: host\n");
    c.post(
        "a release joining the host's pid namespace",
        "/api/v1/releases",
        ADMIN_TOKEN,
        &pid,
        422,
        Some("runtime policy"),
    );
    // Escalations that do not look like the keys above.
    for (what, rest, mention) in [
        (
            "host interpolation in network_mode",
            "    network_mode: \"${NM:-host}\"\n",
            "services.web.network_mode",
        ),
        (
            "host interpolation in volumes_from",
            "    volumes_from: [\"${V:-container:x}\"]\n",
            "services.web.volumes_from[0]",
        ),
        (
            "the host network by a network's name",
            "    networks: [hostnet]\nnetworks:\n  hostnet:\n    external: true\n    name: host\n",
            "template.services.web.networks",
        ),
        (
            "a local volume of the host's procfs",
            "    volumes: [\"p:/p\"]\nvolumes:\n  p:\n    driver_opts: {type: proc, device: proc}\n",
            "template.services.web.volumes",
        ),
        (
            "a bind of podman's socket",
            "    volumes: [\"/run/podman/podman.sock:/s\"]\n",
            "template.services.web.volumes",
        ),
    ] {
        let mut body = release_body("r-esc", "web", &format!("registry.example/app@{DIGEST}"));
        body["template"] = json!(format!("services:\n  web:\n    componentName: web\n{rest}"));
        c.post(
            format!("a release with {what}"),
            "/api/v1/releases",
            ADMIN_TOKEN,
            &body,
            422,
            Some(mention),
        );
    }

    c.group("agent identity");
    // Bootstrap token bodies: the agent name, labels and capabilities it binds.
    let tokens = "/api/v1/agents/bootstrap-tokens";
    for (what, body, mention) in [
        (
            "bootstrap token for an empty name",
            json!({"name": ""}),
            "name",
        ),
        (
            "bootstrap token for a name with shell",
            json!({"name": "a;reboot"}),
            "a;reboot",
        ),
        (
            "bootstrap token for a name with a slash",
            json!({"name": "../rack"}),
            "name",
        ),
        (
            "bootstrap token name not a string",
            json!({"name": 7}),
            "name",
        ),
        (
            "bootstrap token without a name",
            json!({"labels": {"env": "prod"}}),
            "name",
        ),
        (
            "bootstrap token label key upper-case",
            json!({"name": "x2", "labels": {"Env": "prod"}}),
            "Env",
        ),
        (
            "bootstrap token label key with space",
            json!({"name": "x2", "labels": {"e nv": "prod"}}),
            "labels",
        ),
        (
            "bootstrap token label key empty",
            json!({"name": "x2", "labels": {"": "prod"}}),
            "labels",
        ),
        (
            "bootstrap token label value with a control character",
            json!({"name": "x2", "labels": {"env": "pr\u{7}od"}}),
            "labels",
        ),
        (
            "bootstrap token label value too long",
            json!({"name": "x2", "labels": {"env": "p".repeat(257)}}),
            "labels",
        ),
        (
            "bootstrap token label value not a string",
            json!({"name": "x2", "labels": {"env": 1}}),
            "labels",
        ),
        (
            "bootstrap token labels as a list",
            json!({"name": "x2", "labels": ["env=prod"]}),
            "labels",
        ),
        (
            "bootstrap token unknown capability",
            json!({"name": "x2", "capabilities": ["root"]}),
            "root",
        ),
        (
            "bootstrap token no capability",
            json!({"name": "x2", "capabilities": []}),
            "capabilities",
        ),
        (
            "bootstrap token unknown field `agent`",
            json!({"name": "x2", "agent": "rack-1"}),
            "agent",
        ),
    ] {
        c.post(what, tokens, ADMIN_TOKEN, &body, 400, Some(mention));
    }
    c.post(
        "bootstrap token for a registered agent's name",
        tokens,
        ADMIN_TOKEN,
        &json!({"name": "bad-agent"}),
        409,
        Some("bad-agent"),
    );
    // Registrations claiming what the spare token (for `x1`, env=staging) does not allow.
    let register = "/api/v1/agent/register";
    c.post(
        "register under another name than the token's",
        register,
        &f.bootstrap,
        &json!({"protocol": 1, "name": "x2", "capabilities": ["docker"]}),
        403,
        Some("`x1`, not `x2`"),
    );
    c.post(
        "register claiming env=prod with a staging token",
        register,
        &f.bootstrap,
        &json!({"protocol": 1, "name": "x1", "capabilities": ["docker"], "labels": {"env": "prod"}}),
        403,
        Some("env=prod"),
    );
    c.post(
        "register claiming an extra label",
        register,
        &f.bootstrap,
        &json!({"protocol": 1, "name": "x1", "capabilities": ["docker"], "labels": {"env": "staging", "tier": "db"}}),
        403,
        Some("tier=db"),
    );
    // Label change bodies, on the registered agent (its labels_version is 1).
    let labels = "/api/v1/agents/bad-agent/labels";
    for (what, body, mention) in [
        (
            "labels change without a version",
            json!({"labels": {"env": "prod"}}),
            "version",
        ),
        (
            "labels change without labels",
            json!({"version": 1}),
            "labels",
        ),
        (
            "labels change version not a number",
            json!({"labels": {}, "version": "1"}),
            "version",
        ),
        (
            "labels change negative version",
            json!({"labels": {}, "version": -1}),
            "version",
        ),
        (
            "labels change label key upper-case",
            json!({"labels": {"Env": "prod"}, "version": 1}),
            "Env",
        ),
        (
            "labels change label value with a newline",
            json!({"labels": {"env": "a\nb"}, "version": 1}),
            "labels",
        ),
        (
            "labels change unknown field",
            json!({"labels": {}, "version": 1, "name": "x9"}),
            "name",
        ),
    ] {
        c.raw(
            what,
            "PUT",
            labels,
            Some(ADMIN_TOKEN),
            Some("application/json"),
            body.to_string(),
            400,
            Some(mention),
        );
    }
    c.raw(
        "labels change from a stale version",
        "PUT",
        labels,
        Some(ADMIN_TOKEN),
        Some("application/json"),
        json!({"labels": {"env": "prod"}, "version": 7}).to_string(),
        409,
        None,
    );
    c.raw(
        "labels change by a deployer",
        "PUT",
        labels,
        Some(&f.deployer),
        Some("application/json"),
        json!({"labels": {"env": "prod"}, "version": 1}).to_string(),
        403,
        None,
    );
    c.raw(
        "labels change by the agent itself",
        "PUT",
        labels,
        Some(&f.agent),
        Some("application/json"),
        json!({"labels": {"env": "prod"}, "version": 1}).to_string(),
        401,
        None,
    );
    c.raw(
        "labels change of no agent",
        "PUT",
        format!("/api/v1/agents/{NO_SUCH_ID}/labels"),
        Some(ADMIN_TOKEN),
        Some("application/json"),
        json!({"labels": {"env": "prod"}, "version": 1}).to_string(),
        404,
        None,
    );

    c.group("state transitions");
    c.post(
        "cancel a failed job",
        format!("/api/v1/jobs/{}/cancel", f.failed_job),
        ADMIN_TOKEN,
        &json!({}),
        409,
        None,
    );
    c.post(
        "roll back a job with nothing to roll back to",
        format!("/api/v1/jobs/{}/rollback", f.failed_job),
        ADMIN_TOKEN,
        &json!({"reason": "test"}),
        409,
        None,
    );
    c.post(
        "approve a rejected promotion",
        format!("/api/v1/promotions/{}/approve", f.rejected),
        ADMIN_TOKEN,
        &json!({}),
        409,
        Some("rejected"),
    );
    c.post(
        "reject a rejected promotion",
        format!("/api/v1/promotions/{}/reject", f.rejected),
        ADMIN_TOKEN,
        &json!({}),
        409,
        None,
    );
    c.post(
        "cancel no such job",
        format!("/api/v1/jobs/{NO_SUCH_ID}/cancel"),
        ADMIN_TOKEN,
        &json!({}),
        404,
        None,
    );
    c.post(
        "approve no such promotion",
        format!("/api/v1/promotions/{NO_SUCH_ID}/approve"),
        ADMIN_TOKEN,
        &json!({}),
        404,
        None,
    );
    c.post(
        "duplicate environment name",
        envs,
        ADMIN_TOKEN,
        &json!({"name": "bad-env"}),
        409,
        Some("bad-env"),
    );
    c.post(
        "duplicate target name",
        &targets,
        ADMIN_TOKEN,
        &ssh_target("host-1", "/tmp"),
        409,
        Some("host-1"),
    );
    c.post(
        "duplicate release name",
        "/api/v1/releases",
        ADMIN_TOKEN,
        &release_body("r1", "web", &good_image),
        409,
        Some("r1"),
    );
    c.post(
        "duplicate token name",
        "/api/v1/tokens",
        ADMIN_TOKEN,
        &json!({"name": "viewer-1", "role": "admin"}),
        409,
        Some("viewer-1"),
    );

    c.group("agent protocol");
    let agent = f.agent.as_str();
    c.post(
        "poll with protocol 2",
        "/api/v1/agent/poll",
        agent,
        &json!({"protocol": 2, "wait_ms": 0}),
        400,
        Some("protocol"),
    );
    c.post(
        "poll with protocol 0",
        "/api/v1/agent/poll",
        agent,
        &json!({"protocol": 0, "wait_ms": 0}),
        400,
        Some("protocol"),
    );
    c.post(
        "poll with an unknown field",
        "/api/v1/agent/poll",
        agent,
        &json!({"protocol": 1, "wait_ms": 0, "sudo": true}),
        400,
        Some("sudo"),
    );
    c.post(
        "poll wait_ms a string",
        "/api/v1/agent/poll",
        agent,
        &json!({"protocol": 1, "wait_ms": "forever"}),
        400,
        Some("wait_ms"),
    );
    c.raw(
        "poll not JSON",
        "POST",
        "/api/v1/agent/poll",
        Some(agent),
        Some("application/json"),
        "protocol=1",
        400,
        None,
    );
    c.post(
        "poll running a bad task id",
        "/api/v1/agent/poll",
        agent,
        &json!({"protocol": 1, "wait_ms": 0, "running": [{"task_id": "../x", "attempt": 1}]}),
        400,
        Some("task_id"),
    );
    c.post(
        "register with protocol 99",
        "/api/v1/agent/register",
        &f.bootstrap,
        &json!({"protocol": 99, "name": "x1", "capabilities": ["docker"]}),
        400,
        Some("protocol"),
    );
    c.post(
        "result for no such task",
        format!("/api/v1/agent/tasks/{NO_SUCH_ID}/attempts/1/result"),
        agent,
        &json!({"protocol": 1, "log_lines": 0, "outcome": {"outcome": "inspected", "digest": null}}),
        404,
        None,
    );
    c.post(
        "result with a bad attempt",
        format!("/api/v1/agent/tasks/{NO_SUCH_ID}/attempts/one/result"),
        agent,
        &json!({"protocol": 1, "log_lines": 0, "outcome": {"status": "succeeded"}}),
        400,
        Some("attempt"),
    );
    c.post(
        "logs for a bad task id",
        "/api/v1/agent/tasks/%24(id)/attempts/1/logs",
        agent,
        &json!({"protocol": 1, "first_seq": 0, "lines": []}),
        400,
        Some("id"),
    );
    c.post(
        "logs with protocol 2",
        format!("/api/v1/agent/tasks/{NO_SUCH_ID}/attempts/1/logs"),
        agent,
        &json!({"protocol": 2, "first_seq": 0, "lines": []}),
        400,
        Some("protocol"),
    );
    c.post(
        "result with an unknown outcome",
        format!("/api/v1/agent/tasks/{NO_SUCH_ID}/attempts/1/result"),
        agent,
        &json!({"protocol": 1, "log_lines": 0, "outcome": {"outcome": "pwned"}}),
        400,
        Some("pwned"),
    );
    c.post(
        "rotate with an unknown credential",
        "/api/v1/agent/credential/rotate",
        "dpa_0123456789abcdef0123456789abcdef",
        &json!({}),
        401,
        None,
    );
    secrets_cases(&mut c, f);
    c
}

/// Application secrets: admin only, names are `Name`s, bodies hold one text value
/// (no NUL, at most 64 KiB), and none is ever read back.
fn secrets_cases(c: &mut Corpus, f: &Fixture) {
    c.group("secrets");
    let json = Some("application/json");
    let put = |c: &mut Corpus, what: &str, path: &str, token: &str, body: &str, status, mention| {
        c.raw(what, "PUT", path, Some(token), json, body, status, mention);
    };
    let good = r#"{"value":"x"}"#;
    put(
        c,
        "viewer sets a secret",
        "/api/v1/secrets/db",
        &f.viewer,
        good,
        403,
        Some("admin"),
    );
    put(
        c,
        "deployer sets a secret",
        "/api/v1/secrets/db",
        &f.deployer,
        good,
        403,
        Some("admin"),
    );
    c.get(
        "deployer lists secrets",
        "/api/v1/secrets",
        Some(&f.deployer),
        403,
        Some("admin"),
    );
    c.raw(
        "deployer deletes a secret",
        "DELETE",
        "/api/v1/secrets/db",
        Some(&f.deployer),
        None,
        Vec::new(),
        403,
        Some("admin"),
    );
    for (what, name) in [
        ("upper-case name", "DB"),
        ("name with a space", "a%20b"),
        ("name with a slash", "a%2Fb"),
        ("dot-dot name", ".."),
        ("name starting with a dash", "-db"),
        ("shell in the name", "%24(id)"),
        (
            "name of 64 bytes",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
    ] {
        put(
            c,
            what,
            &format!("/api/v1/secrets/{name}"),
            ADMIN_TOKEN,
            good,
            400,
            Some("secret name"),
        );
    }
    let path = "/api/v1/secrets/db";
    put(c, "no value", path, ADMIN_TOKEN, "{}", 400, Some("value"));
    put(
        c,
        "a number",
        path,
        ADMIN_TOKEN,
        r#"{"value":5}"#,
        400,
        Some("value"),
    );
    put(
        c,
        "null",
        path,
        ADMIN_TOKEN,
        r#"{"value":null}"#,
        400,
        Some("value"),
    );
    put(
        c,
        "an unknown field",
        path,
        ADMIN_TOKEN,
        r#"{"value":"x","name":"y"}"#,
        400,
        Some("name"),
    );
    put(c, "not JSON", path, ADMIN_TOKEN, "value=x", 400, None);
    put(
        c,
        "a NUL byte",
        path,
        ADMIN_TOKEN,
        r#"{"value":"a\u0000b"}"#,
        422,
        Some("NUL"),
    );
    let big = format!(r#"{{"value":"{}"}}"#, "x".repeat(64 * 1024 + 1));
    put(
        c,
        "a value over 64 KiB",
        path,
        ADMIN_TOKEN,
        &big,
        422,
        Some("65536"),
    );
    c.raw(
        "a text/plain body",
        "PUT",
        path,
        Some(ADMIN_TOKEN),
        Some("text/plain"),
        "x",
        415,
        None,
    );
    // The environments a secret is limited to: names or ids of existing ones.
    for (what, body, status, mention) in [
        (
            "environments as a string",
            r#"{"value":"x","environments":"prod"}"#.to_owned(),
            400,
            "environments",
        ),
        (
            "an environment as a number",
            r#"{"value":"x","environments":[5]}"#.to_owned(),
            400,
            "environments",
        ),
        (
            "an environment that is no name",
            r#"{"value":"x","environments":["Bad Name"]}"#.to_owned(),
            400,
            "environments[0]",
        ),
        (
            "an unknown environment",
            r#"{"value":"x","environments":["nowhere"]}"#.to_owned(),
            422,
            "nowhere",
        ),
        (
            "101 environments",
            format!(
                r#"{{"value":"x","environments":[{}]}}"#,
                vec![r#""nowhere""#; 101].join(",")
            ),
            422,
            "at most 100",
        ),
    ] {
        put(c, what, path, ADMIN_TOKEN, &body, status, Some(mention));
    }
    c.get("read a value back", path, Some(ADMIN_TOKEN), 405, None);
    c.raw(
        "delete one that does not exist",
        "DELETE",
        "/api/v1/secrets/nope",
        Some(ADMIN_TOKEN),
        None,
        Vec::new(),
        404,
        Some("nope"),
    );
    c.raw(
        "delete a bad name",
        "DELETE",
        "/api/v1/secrets/DB",
        Some(ADMIN_TOKEN),
        None,
        Vec::new(),
        400,
        Some("secret name"),
    );
}

/// A deployctl run that must be refused with exit 2, naming `bad`.
fn ctl_refused(addr: &str, args: &[&str], bad: &str, mismatches: &mut Vec<String>) {
    let out = ctl(addr, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !stderr.contains(bad) {
        mismatches.push(format!(
            "[cli] deployctl {args:?}: exit {:?}, stderr does not name `{bad}` or exit is not 2: {stderr}",
            out.status.code()
        ));
    }
}

#[test]
#[expect(
    clippy::print_stdout,
    reason = "the test reports its case count and time (nextest --no-capture shows them)"
)]
fn malformed_and_hostile_inputs_get_documented_4xx_and_change_nothing() {
    let started = Instant::now();
    let data = temp_dir("bad-input-").unwrap();
    let known_hosts = data.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let max_body = MAX_BODY.to_string();
    let server = Deployd::start(
        data.path(),
        free_port().unwrap(),
        &known_hosts,
        &[("DEPLOYD_MAX_BODY_BYTES", max_body.as_str())],
    );
    let addr = server.addr.clone();
    let fixture = setup(&addr);
    // Let the settled job's last writes land before the first dump.
    std::thread::sleep(Duration::from_millis(500));
    let before = dump(data.path());

    let corpus = corpus(&fixture);
    let mut mismatches = Vec::new();
    let mut groups: Vec<(&str, usize)> = Vec::new();
    let mut last_group = "";
    for case in &corpus.cases {
        if case.group != last_group {
            if !last_group.is_empty() && !healthy(&addr) {
                mismatches.push(format!("[{last_group}] /healthz failed after the group"));
            }
            groups.push((case.group, 0));
            last_group = case.group;
        }
        if let Some(last) = groups.last_mut() {
            last.1 += 1;
        }
        let auth = case.token.as_ref().map(|t| format!("Bearer {t}"));
        let basic = case.what == "basic auth";
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if basic {
            headers.push(("Authorization", "Basic YWRtaW46YWRtaW4="));
        }
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        if let Some(ct) = &case.content_type {
            headers.push(("Content-Type", ct));
        }
        let sent = Instant::now();
        let answer = send(&addr, case.method, &case.path, &headers, &case.body);
        if sent.elapsed() > Duration::from_secs(1) {
            println!(
                "bad input: slow case [{}] {}: {:.1} s",
                case.group,
                case.what,
                sent.elapsed().as_secs_f64()
            );
        }
        if let Some(m) = check(case, &answer) {
            mismatches.push(format!(
                "[{}] {} ({} {}): {m}",
                case.group,
                case.what,
                case.method,
                case.path.chars().take(120).collect::<String>()
            ));
        }
    }
    if !healthy(&addr) {
        mismatches.push(format!("[{last_group}] /healthz failed after the group"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after_api = dump(data.path());
    let api_diff = diff(&before, &after_api);
    if !api_diff.is_empty() {
        mismatches.push(format!("[database] changed by the API corpus:\n{api_diff}"));
    }

    // The CLI: refused before anything is stored.
    let cli_started = Instant::now();
    let mut cli_cases = 0;
    let mut refused = |args: &[&str], bad: &str, mismatches: &mut Vec<String>| {
        cli_cases += 1;
        ctl_refused(&addr, args, bad, mismatches);
    };
    let env = fixture.env.as_str();
    let release = fixture.release.as_str();
    // Secrets: the value comes from a file or stdin, never an argument.
    let value_file = data.path().join("secret-value.txt");
    std::fs::write(&value_file, "x").unwrap();
    let value_file = value_file.to_str().unwrap();
    refused(&["secrets", "set", "db"], "--from-file", &mut mismatches);
    refused(
        &["secrets", "set", "db", "hunter2-value"],
        "unexpected argument",
        &mut mismatches,
    );
    refused(
        &[
            "secrets",
            "set",
            "db",
            "--from-file",
            value_file,
            "--from-stdin",
        ],
        "cannot be used with",
        &mut mismatches,
    );
    refused(
        &["secrets", "set", "db", "--from-file", "/nonexistent/v"],
        "/nonexistent/v",
        &mut mismatches,
    );
    refused(
        &["secrets", "set", "Bad.Name", "--from-file", value_file],
        "Bad.Name",
        &mut mismatches,
    );
    refused(
        &[
            "secrets",
            "set",
            "db",
            "--from-file",
            value_file,
            "--env",
            "prod",
            "--all-envs",
        ],
        "cannot be used with",
        &mut mismatches,
    );
    refused(&["secrets", "rm", "Bad.Name"], "Bad.Name", &mut mismatches);
    refused(
        &[
            "release",
            "create",
            "x1",
            "--component",
            "web=registry.example/app@sha256:abc",
        ],
        "sha256:abc",
        &mut mismatches,
    );
    refused(
        &[
            "release",
            "create",
            "x1",
            "--component",
            "web=registry.example/app:latest",
        ],
        "registry.example/app:latest",
        &mut mismatches,
    );
    refused(
        &[
            "release",
            "create",
            "x1",
            "--component",
            "registry.example/app",
        ],
        "registry.example/app",
        &mut mismatches,
    );
    refused(
        &[
            "release",
            "create",
            "a;rm -rf /",
            "--component",
            &format!("web=registry.example/app@{DIGEST}"),
        ],
        "a;rm -rf /",
        &mut mismatches,
    );
    refused(
        &[
            "release",
            "create",
            "x1",
            "--component",
            &format!("$(id)=registry.example/app@{DIGEST}"),
        ],
        "$(id)",
        &mut mismatches,
    );
    refused(
        &["env", "create", "../../etc"],
        "../../etc",
        &mut mismatches,
    );
    refused(&["env", "create", "Prod"], "Prod", &mut mismatches);
    refused(
        &[
            "deploy",
            "--release",
            release,
            "--env",
            env,
            "--strategy",
            "yolo",
        ],
        "yolo",
        &mut mismatches,
    );
    refused(
        &[
            "deploy",
            "--release",
            release,
            "--env",
            env,
            "--strategy",
            "rolling:0",
        ],
        "rolling:0",
        &mut mismatches,
    );
    refused(
        &[
            "deploy",
            "--release",
            release,
            "--env",
            env,
            "--max-failure-ratio",
            "1.5",
        ],
        "1.5",
        &mut mismatches,
    );
    refused(
        &[
            "deploy",
            "--release",
            release,
            "--env",
            env,
            "--max-failure-ratio",
            "lots",
        ],
        "lots",
        &mut mismatches,
    );
    refused(
        &[
            "plan",
            "--release",
            release,
            "--env",
            env,
            "--strategy",
            "canary:x:y",
        ],
        "canary:x:y",
        &mut mismatches,
    );
    for (secs, named) in [("59", "expires_in_secs 59"), ("1d", "1d")] {
        refused(
            &[
                "token",
                "create",
                "x-expiry",
                "--role",
                "viewer",
                "--expires-in-secs",
                secs,
            ],
            named,
            &mut mismatches,
        );
    }
    // `target add` has no work dir default of its own any more; a bad explicit one is
    // refused before the request, naming it.
    for dir in ["tmp/app", "/srv/$(id)"] {
        refused(
            &[
                "target",
                "add",
                "x1",
                "--env",
                env,
                "--host",
                "127.0.0.1",
                "--user",
                "deploy",
                "--key-ref",
                "env:K",
                "--work-dir",
                dir,
            ],
            dir,
            &mut mismatches,
        );
    }
    // Plain http to a non-loopback server: refused before any connection (a
    // documentation address, TEST-NET-1), naming the URL and the way out.
    for named in ["http://192.0.2.1:9", "--allow-insecure-http"] {
        refused(
            &["--server", "http://192.0.2.1:9", "env", "list"],
            named,
            &mut mismatches,
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let after_cli = dump(data.path());
    let cli_diff = diff(&after_api, &after_cli);
    if !cli_diff.is_empty() {
        mismatches.push(format!("[database] changed by the CLI cases:\n{cli_diff}"));
    }
    assert!(healthy(&addr), "deployd stopped serving");
    // Sanity: valid requests still work after the corpus.
    let (status, v) = api_post(
        &addr,
        "/api/v1/environments",
        &json!({"name": "after-corpus"}),
    );
    assert_eq!(status, 201, "{v:#}");

    let total = corpus.cases.len();
    let summary: Vec<String> = groups.iter().map(|(g, n)| format!("{g}: {n}")).collect();
    println!(
        "bad input: {total} API cases ({}), {cli_cases} CLI cases; API part {:.1} s, CLI part {:.1} s, total {:.1} s",
        summary.join(", "),
        cli_started.duration_since(started).as_secs_f64(),
        cli_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(total >= 100, "the corpus has {total} cases");
    assert!(
        mismatches.is_empty(),
        "{} of {} cases answered wrongly:\n{}\n\ndeployd log tail:\n{}",
        mismatches.len(),
        total + cli_cases,
        mismatches.join("\n"),
        server
            .stderr()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
