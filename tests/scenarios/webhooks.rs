//! Webhook notifications end to end: a real deployd deploys over SSH while loopback receivers listen; one fails the first two deliveries and holds the third until the job's `job.completed` is written (the third arrives, signed, and only then the job's next event), one accepts connections and never answers (the deploy completes while its deliveries are still pending). The first runs on SQLite and again on PostgreSQL.
//!
//! The signature is recomputed here with the hmac crate from the key `deployctl
//! notifications add` printed, not with deployd's own code.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deploy_testkit::{HttpRequest, http_response, read_request_blocking};
use hmac::{KeyInit as _, Mac as _};
use serde_json::Value;

use crate::deployd_e2e::{SshWorld, job_id_of, target_add_args};
use crate::deployd_proc::{create_release, deploy_and_follow, ok_json};

/// One request a receiver read, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    request: HttpRequest,
    answered: u16,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.request.header(&name.to_ascii_lowercase())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.request.body).unwrap()
    }
}

/// A loopback HTTP receiver on a thread (it lives as long as the test process).
struct Receiver {
    url: String,
    requests: Arc<Mutex<Vec<Received>>>,
    accepted: Arc<AtomicUsize>,
    /// Set by the test: `job.started` may be accepted now.
    released: Arc<AtomicBool>,
}

impl Receiver {
    /// Answers 500 to the first two `job.started` requests, holds the next ones
    /// unanswered until [`Self::release`] (or 50 s: then 500), then answers 204.
    fn flaky() -> Self {
        Self::start(true)
    }

    /// Accepts every connection and never answers (the connections are kept open).
    fn silent() -> Self {
        Self::start(false)
    }

    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }

    fn start(answers: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/deploy", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let released = Arc::new(AtomicBool::new(false));
        let (seen, count, free) = (requests.clone(), accepted.clone(), released.clone());
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                if !answers {
                    held.push(stream);
                    continue;
                }
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let Ok(Some(request)) = read_request_blocking(&mut stream, &mut Vec::new()) else {
                    continue;
                };
                let started = request.header("x-deploy-event") == "job.started";
                let refused_before = seen
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|r: &&Received| r.answered == 500)
                    .count();
                let answered = if started && refused_before < 2 {
                    500
                } else if started {
                    // Held until the test saw job.completed waiting behind it.
                    let deadline = Instant::now() + Duration::from_secs(50);
                    while !free.load(Ordering::SeqCst) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    if free.load(Ordering::SeqCst) {
                        204
                    } else {
                        500
                    }
                } else {
                    204
                };
                seen.lock().unwrap().push(Received { request, answered });
                let _ = std::io::Write::write_all(
                    &mut stream,
                    http_response(answered, "text/plain", "").as_bytes(),
                );
            }
        });
        Self {
            url,
            requests,
            accepted,
            released,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

/// What a receiver does with `X-Deploy-Signature`: `t=<secs>,v1=<hex>`, the HMAC-SHA256
/// of `"<t>.<X-Deploy-Delivery>.<X-Deploy-Event>.<body>"` under the key, and `t` within
/// the 5-minute replay window.
fn signature_verifies(key: &str, r: &Received) -> bool {
    let header = r.header("X-Deploy-Signature");
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_owned()),
            Some(("v1", value)) => v1 = Some(value.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let Ok(secs) = t.parse::<u64>() else {
        return false;
    };
    if now.abs_diff(secs) > 300 {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    for part in [
        t.as_str(),
        r.header("X-Deploy-Delivery"),
        r.header("X-Deploy-Event"),
    ] {
        mac.update(part.as_bytes());
        mac.update(b".");
    }
    mac.update(&r.request.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

/// An environment `name` with the world's host (containers `<prefix>web`); its id.
fn environment(world: &SshWorld, name: &str, prefix: &str) -> String {
    let env = ok_json(&world.addr, &["env", "create", name])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let add = target_add_args(&env, &world.hosts, 1, prefix, 500);
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    ok_json(&world.addr, &add);
    env
}

fn subscribe(addr: &str, env: &str, url: &str, events: &[&str]) -> Value {
    let mut args = vec!["notifications", "add", "--env", env, "--url", url];
    for e in events {
        args.extend(["--event", e]);
    }
    ok_json(addr, &args)
}

/// `deployctl deploy --follow`: the job id, once it ended (exit 0: completed), and how
/// long the command took.
fn deploy(addr: &str, release: &str, env: &str) -> (String, Duration) {
    let (stdout, took) = deploy_and_follow(addr, release, env);
    (job_id_of(&stdout), took)
}

/// The delivery log of `job`, oldest first.
fn deliveries_of(addr: &str, job: &str) -> Vec<Value> {
    let mut list = ok_json(addr, &["notifications", "deliveries", "--job", job])["deliveries"]
        .as_array()
        .unwrap()
        .clone();
    list.reverse();
    list
}

/// Polls `done` every 200 ms until it holds, or panics after `within` with `what`.
fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_flaky_receiver_gets_every_event_signed_and_in_order() {
    flaky_receiver_gets_every_event("wh", &[]);
}

/// The same on PostgreSQL: its delivery claim (`FOR UPDATE SKIP LOCKED`, leases) and
/// the deliveries written in the transition's transaction, end to end.
#[test]
fn a_flaky_receiver_gets_every_event_signed_and_in_order_on_postgres() {
    let pg = deploy_testkit::Postgres::start()
        .unwrap_or_else(|e| panic!("PostgreSQL for the webhook test: {e}"));
    let url = pg.create_database("webhooks").unwrap();
    flaky_receiver_gets_every_event("wp", &[("DEPLOYD_DATABASE_URL", url.as_str())]);
    // It ran on this database: both deliveries are there, delivered.
    let delivered = pg
        .query_in(
            "webhooks",
            "SELECT event FROM notification_deliveries WHERE status = 'delivered' ORDER BY event",
        )
        .unwrap();
    assert_eq!(
        delivered.lines().collect::<Vec<_>>(),
        ["job.completed", "job.started"]
    );
}

/// A receiver refuses the first deliveries of `job.started` and holds the next until
/// `job.completed` is written; deployd runs with `database` in its environment.
fn flaky_receiver_gets_every_event(prefix: &str, database: &[(&str, &str)]) {
    let prefix = format!("{prefix}{}-", std::process::id());
    let mut env = vec![
        ("DEPLOYD_NOTIFY_BACKOFF_INITIAL_MS", "100"),
        ("DEPLOYD_NOTIFY_BACKOFF_MAX_MS", "400"),
        ("DEPLOYD_NOTIFY_TIMEOUT_MS", "60000"),
    ];
    env.extend_from_slice(database);
    let world = SshWorld::start_with(&prefix, "deployd-webhooks-", &env);
    let addr = world.addr.clone();
    let receiver = Receiver::flaky();
    let env = environment(&world, "hooked", &prefix);
    let sub = subscribe(
        &addr,
        &env,
        &receiver.url,
        &["job.started", "job.completed", "job.failed"],
    );
    // The key deployd generated, shown this once.
    let key = sub["signing_secret"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 64, "{sub}");
    let listed = ok_json(&addr, &["notifications", "list", "--env", "hooked"]);
    assert!(!listed.to_string().contains(&key), "{listed}");
    let release = create_release(&addr, "v1", &world.images.v1);
    let (job, _) = deploy(&addr, &release, &env);

    // job.completed is written while job.started is still refused or held: it waits.
    wait_until(
        Duration::from_secs(120),
        "job.completed pending behind job.started",
        || {
            let log = deliveries_of(&addr, &job);
            log.len() == 2
                && log[0]["event"] == "job.started"
                && log[0]["status"] == "pending"
                && log[1]["event"] == "job.completed"
                && log[1]["status"] == "pending"
                && log[1]["attempts"] == 0
        },
    );
    receiver.release();
    wait_until(
        Duration::from_secs(120),
        "both deliveries delivered",
        || {
            let log = deliveries_of(&addr, &job);
            log.len() == 2 && log.iter().all(|d| d["status"] == "delivered")
        },
    );
    let log = deliveries_of(&addr, &job);
    let events: Vec<&str> = log.iter().map(|d| d["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["job.started", "job.completed"]);

    // Refusals, then job.started accepted; only then the job's next event.
    let got = receiver.received();
    let seen: Vec<(&str, u16)> = got
        .iter()
        .map(|r| (r.header("X-Deploy-Event"), r.answered))
        .collect();
    let last = seen.len() - 1;
    assert_eq!(seen[last], ("job.completed", 204), "{seen:?}");
    assert_eq!(seen[last - 1], ("job.started", 204), "{seen:?}");
    assert!(
        seen[..last - 1].iter().all(|s| *s == ("job.started", 500)),
        "{seen:?}"
    );
    assert!(last > 2, "{seen:?}");
    for r in &got {
        assert!(
            signature_verifies(&key, r),
            "signature {:?} of {}",
            r.header("X-Deploy-Signature"),
            r.request.text()
        );
        assert_eq!(r.header("Content-Type"), "application/json");
    }
    // A retry is the same delivery, byte for byte: the receiver dedups by its id.
    let started_id = log[0]["id"].as_str().unwrap();
    for r in &got[..last] {
        assert_eq!(r.header("X-Deploy-Delivery"), started_id);
        assert_eq!(r.request.body, got[0].request.body);
    }
    assert_eq!(
        got[last].header("X-Deploy-Delivery"),
        log[1]["id"].as_str().unwrap()
    );
    let body = got[last].json();
    assert_eq!(body["event"], "job.completed", "{body}");
    assert_eq!(body["id"], log[1]["id"], "{body}");
    assert_eq!(body["job"]["id"], job.as_str(), "{body}");
    assert_eq!(body["environment"]["name"], "hooked", "{body}");
    assert_eq!(body["job"]["release"], "v1", "{body}");

    // The log keeps every attempt with its status.
    let detail = ok_json(&addr, &["notifications", "deliveries", started_id]);
    let statuses: Vec<u64> = detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["http_status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses.last(), Some(&204), "{detail}");
    assert_eq!(statuses.len(), last, "{detail}");
    // The key is never logged.
    assert!(!world.server.stderr().contains(&key));
}

#[test]
fn a_receiver_that_never_answers_does_not_hold_up_a_deploy() {
    let prefix = format!("wq{}-", std::process::id());
    // A minute per POST: every delivery of the deploy stays in flight while it runs.
    let world = SshWorld::start_with(
        &prefix,
        "deployd-webhooks-silent-",
        &[("DEPLOYD_NOTIFY_TIMEOUT_MS", "60000")],
    );
    let addr = world.addr.clone();
    let receiver = Receiver::silent();
    let release = create_release(&addr, "v1", &world.images.v1);

    // The baseline: the same deploy without a subscription.
    let plain = environment(&world, "plain", &prefix);
    let (_, baseline) = deploy(&addr, &release, &plain);

    let hooked_prefix = format!("{prefix}b-");
    let hooked = environment(&world, "hooked", &hooked_prefix);
    subscribe(
        &addr,
        &hooked,
        &receiver.url,
        &["job.started", "job.completed"],
    );
    let (job, took) = deploy(&addr, &release, &hooked);
    eprintln!(
        "deploy without a receiver: {} ms; with a receiver that never answers: {} ms",
        baseline.as_millis(),
        took.as_millis()
    );

    // The job completed (exit 0) while its first delivery still waits for an answer and
    // the second waits behind it.
    let status = ok_json(&addr, &["jobs", "show", &job]);
    assert_eq!(status["status"], "completed", "{status}");
    let log = deliveries_of(&addr, &job);
    let states: Vec<(&str, &str)> = log
        .iter()
        .map(|d| (d["event"].as_str().unwrap(), d["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("job.started", "pending"), ("job.completed", "pending")]
    );
    assert_eq!(log[1]["attempts"], 0, "{log:?}");
    wait_until(
        Duration::from_secs(30),
        "the receiver got a connection",
        || receiver.accepted.load(Ordering::SeqCst) >= 1,
    );
}
