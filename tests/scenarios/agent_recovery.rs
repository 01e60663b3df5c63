//! The real `deploy-agent` recovers on its own from answers lost on the way back: registration and credential rotation through a proxy that drops deployd's first answer to each, with a dead server listed first.
//!
//! deployd acts on the request and its answer never reaches the agent (the proxy
//! closes the connection instead), which is what a network cut or a crash of a
//! load balancer after the server answered looks like. The agent must end up
//! registered (once), then rotated (the old credential refused), and polling, without
//! anyone touching it. The first server it knows is a closed port: every request
//! starts there or fails over to it, so the failover between servers is exercised too.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deploy_testkit::{free_port, read_request_blocking, temp_dir};
use serde_json::{Value, json};

use crate::agent_proc::{AgentProc, agents, bootstrap_token, wait_active};
use crate::deployd_proc::{ADMIN_TOKEN, Deployd, api_post_as};

/// deployd's heartbeat timeout here: short, so a stopped agent is soon inactive.
const HEARTBEAT_MS: &str = "3000";
const REGISTER: &str = "/api/v1/agent/register";
const ROTATE: &str = "/api/v1/agent/credential/rotate";
const POLL: &str = "/api/v1/agent/poll";

/// One request that went through the proxy.
#[derive(Debug, Clone)]
struct Passed {
    path: String,
    bearer: String,
    body: String,
    /// Its answer was dropped.
    cut: bool,
}

/// A loopback HTTP/1.1 proxy to `upstream`: each request goes upstream on a connection
/// of its own (`Connection: close`) and its whole answer comes back, except the first
/// answer to each path in `cut`, read from upstream and then dropped with the client's
/// connection. Stops accepting when dropped.
struct CuttingProxy {
    addr: String,
    passed: Arc<Mutex<Vec<Passed>>>,
    stop: Arc<AtomicBool>,
}

impl CuttingProxy {
    fn start(upstream: &str, cut: &[&'static str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let passed: Arc<Mutex<Vec<Passed>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let to_cut: Arc<Mutex<Vec<&'static str>>> = Arc::new(Mutex::new(cut.to_vec()));
        let (log, flag, upstream) = (passed.clone(), stop.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (log, to_cut, upstream) = (log.clone(), to_cut.clone(), upstream.clone());
                std::thread::spawn(move || forward(client, &upstream, &log, &to_cut));
            }
        });
        Self { addr, passed, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What went through for `path`, in order.
    fn passed(&self, path: &str) -> Vec<Passed> {
        self.passed
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Serves one client connection: every request on it forwarded, answers passed back
/// (or cut), until the client closes it.
fn forward(
    mut client: TcpStream,
    upstream: &str,
    log: &Mutex<Vec<Passed>>,
    to_cut: &Mutex<Vec<&'static str>>,
) {
    let mut buf = Vec::new();
    while let Ok(Some(received)) = read_request_blocking(&mut client, &mut buf) {
        let (path, bearer, body) = (
            received.path.clone(),
            received.bearer().to_owned(),
            received.body.clone(),
        );
        // Upstream on a connection of its own, closed after the answer: the answer is
        // whatever comes until the end, whatever its framing.
        let mut request = format!("{} {path} HTTP/1.1\r\n", received.method);
        for (name, value) in &received.headers {
            if name != "connection" {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        request.push_str("Connection: close\r\n\r\n");
        let Ok(mut server) = TcpStream::connect(upstream) else {
            return;
        };
        server
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        if server.write_all(request.as_bytes()).is_err() || server.write_all(&body).is_err() {
            return;
        }
        let mut answer = Vec::new();
        let _ = server.read_to_end(&mut answer);
        let cut = {
            let mut to_cut = to_cut.lock().unwrap();
            match to_cut.iter().position(|p| *p == path) {
                Some(i) => {
                    to_cut.remove(i);
                    true
                }
                None => false,
            }
        };
        log.lock().unwrap().push(Passed {
            path,
            bearer,
            body: String::from_utf8_lossy(&body).into_owned(),
            cut,
        });
        if cut {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        if client.write_all(&answer).is_err() {
            return;
        }
    }
}

/// The agent's stored credential (`credentials.json`), checked private.
fn stored_credential(state: &std::path::Path) -> String {
    let path = state.join("credentials.json");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credentials.json mode");
    let stored: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    stored["credential"].as_str().unwrap().to_owned()
}

/// A poll as the agent would send it, with `credential`: its status.
fn poll_status(addr: &str, credential: &str) -> u16 {
    api_post_as(
        addr,
        POLL,
        credential,
        &json!({"protocol": 1, "running": [], "wait_ms": 0}),
    )
    .0
}

/// Waits (bounded) until agent `name` is listed inactive.
fn wait_inactive(addr: &str, name: &str) {
    let started = Instant::now();
    while agents(addr)
        .iter()
        .any(|a| a["name"] == name && a["active"] == true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "agent {name} still active 30 s after it stopped"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn agent_recovery_from_lost_register_and_rotate_answers() {
    let data = temp_dir("agent-recovery-").unwrap();
    let known_hosts = data.path().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let server = Deployd::start(
        data.path(),
        free_port().unwrap(),
        &known_hosts,
        &[("DEPLOYD_AGENT_HEARTBEAT_TIMEOUT_MS", HEARTBEAT_MS)],
    );
    let addr = server.addr.clone();
    let bootstrap = bootstrap_token(&addr, "recovery-agent");
    let proxy = CuttingProxy::start(&addr, &[REGISTER, ROTATE]);
    let dead = format!("http://127.0.0.1:{}", free_port().unwrap());
    let servers = format!("{dead},{}", proxy.url());
    let state = data.path().join("agent-state");
    let name = "recovery-agent";

    // Registration: the first answer is lost; the agent retries and is registered once.
    let mut agent = AgentProc::start_with(&servers, name, &state, Some(&bootstrap), &[]);
    let id = wait_active(&addr, name, &mut agent);
    let registers = proxy.passed(REGISTER);
    assert!(registers.len() >= 2, "{registers:#?}\n{}", agent.stderr());
    assert!(registers[0].cut && !registers[1].cut, "{registers:#?}");
    assert!(
        registers
            .iter()
            .all(|r| r.body == registers[0].body && r.bearer == bootstrap),
        "every retry is the same request: same token, same proposed credential"
    );
    let named: Vec<Value> = agents(&addr)
        .into_iter()
        .filter(|a| a["name"] == name)
        .collect();
    assert_eq!(named.len(), 1, "{named:#?}");
    let first = stored_credential(&state);
    assert!(
        registers[0].body.contains(&first),
        "the proposed credential is the stored one"
    );
    assert!(!state.join("pending-credential.json").exists());
    assert!(
        server.stderr().contains("agent registration repeated"),
        "deployd answered the retry as the first time: {}",
        server.stderr()
    );

    // Rotation at the next start: the first answer is lost again.
    agent.kill();
    wait_inactive(&addr, name);
    let mut agent = AgentProc::start_with(&servers, name, &state, None, &["--rotate-credential"]);
    assert_eq!(wait_active(&addr, name, &mut agent), id, "the same agent");
    let second = stored_credential(&state);
    assert_ne!(second, first, "rotated");
    assert!(!state.join("pending-credential.json").exists());
    let bearers: Vec<(String, bool)> = proxy
        .passed(ROTATE)
        .into_iter()
        .map(|r| (r.bearer, r.cut))
        .collect();
    // Cut; the old credential refused (the rotation happened); the new one answered.
    assert_eq!(
        bearers,
        [
            (first.clone(), true),
            (first.clone(), false),
            (second.clone(), false)
        ],
        "{}",
        agent.stderr()
    );
    assert_eq!(
        poll_status(&addr, &first),
        401,
        "the old credential is refused"
    );
    assert_eq!(poll_status(&addr, &second), 200);
    // And the agent itself polls with the new one, through the server that answers.
    let started = Instant::now();
    while !proxy
        .passed(POLL)
        .iter()
        .rev()
        .take(1)
        .any(|p| p.bearer == second)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no poll with the new credential"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.running(), "{}", agent.stderr());

    // No secret in any log.
    let logs = format!("{}\n{}", server.stderr(), agent.stderr());
    for (what, secret) in [
        ("bootstrap token", bootstrap.as_str()),
        ("first credential", first.as_str()),
        ("second credential", second.as_str()),
        ("admin token", ADMIN_TOKEN),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in a log");
    }
}
