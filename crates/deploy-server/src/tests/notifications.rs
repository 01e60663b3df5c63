//! Webhook subscriptions through the routes (admin only; bad URLs and events refused naming the value; the signing key generated, shown once, rotated; the delivery log for deployers) and the dispatcher in process: a request waiting for someone else's approval becomes a signed `approval.requested` delivery (a self-approvable one none), a refusal is retried later, a body is kept whole across a failed key step, a removed subscription is never posted to, and a receiver that hangs holds up nobody else.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use deploy_api::Role;
use deploy_engine::SystemClock;
use deploy_testkit::{HttpRequest, http_response, read_request};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;

use super::Fixture;
use crate::{Notifier, NotifierConfig, RetrySchedule};

/// Environment `prod`, whose policy wants an approver other than the requester, and
/// `dev` (no policy: a requester approves their own). Returns their ids.
async fn setup(f: &Fixture) -> (String, String) {
    let prod = f
        .ok(
            "POST",
            "/api/v1/environments",
            Role::Admin,
            Some(json!({"name": "prod", "approval": {"allow_self_approval": false}})),
        )
        .await;
    let dev = f
        .ok(
            "POST",
            "/api/v1/environments",
            Role::Admin,
            Some(json!({"name": "dev"})),
        )
        .await;
    (
        prod["id"].as_str().unwrap().to_owned(),
        dev["id"].as_str().unwrap().to_owned(),
    )
}

fn body(env: &str, url: &str, events: Value) -> Option<Value> {
    Some(json!({"environment": env, "url": url, "events": events}))
}

/// Subscribes `url` to `approval.requested` of `env`; the signing key it was given.
async fn subscribe(f: &Fixture, env: &str, url: &str) -> (String, String) {
    let created = f
        .ok(
            "POST",
            "/api/v1/notifications",
            Role::Admin,
            body(env, url, json!(["approval.requested"])),
        )
        .await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["signing_secret"].as_str().unwrap().to_owned(),
    )
}

async fn deliveries(f: &Fixture, query: &str) -> Vec<Value> {
    let log = f
        .ok(
            "GET",
            &format!("/api/v1/notifications/deliveries{query}"),
            Role::Deployer,
            None,
        )
        .await;
    log["deliveries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn subscriptions_are_admin_only_and_their_key_is_shown_once() {
    let f = Fixture::new().await;
    setup(&f).await;
    let good = body(
        "prod",
        "https://hooks.example.com/deploy",
        json!(["job.failed"]),
    );
    for role in [Role::Viewer, Role::Deployer] {
        for (method, path, b) in [
            ("POST", "/api/v1/notifications", good.clone()),
            ("GET", "/api/v1/notifications", None),
            (
                "POST",
                "/api/v1/notifications/0190d6a0-0000-7000-8000-000000000001/rotate-key",
                None,
            ),
        ] {
            let (status, answer) = f.call(method, path, Some(f.token(role)), b).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{role:?} {method}: {answer}");
        }
    }
    let (status, _) = f
        .call(
            "GET",
            "/api/v1/notifications/deliveries",
            Some(f.token(Role::Viewer)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    for (b, wanted) in [
        (
            body("prod", "ftp://h/x", json!(["job.failed"])),
            "http:// or https://",
        ),
        (
            body("prod", "https://u:pw@h/x", json!(["job.failed"])),
            "no user or password",
        ),
        (
            body(
                "prod",
                &format!("https://h/{}", "a".repeat(2100)),
                json!(["job.failed"]),
            ),
            "at most 2048 bytes",
        ),
        (
            body("prod", "https:///x", json!(["job.failed"])),
            "with a host",
        ),
        (body("prod", "https://h/x", json!([])), "events is empty"),
        (
            body("prod", "https://h/x", json!(["job.finished"])),
            "job.finished",
        ),
        (
            Some(json!({"environment": "prod", "url": "https://h/x",
                "events": ["job.failed"], "secret": "secret:k"})),
            "secret",
        ),
    ] {
        let (status, answer) = f
            .call(
                "POST",
                "/api/v1/notifications",
                Some(f.token(Role::Admin)),
                b.clone(),
            )
            .await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{b:?}: {status} {answer}"
        );
        assert!(answer.to_string().contains(wanted), "{b:?}: {answer}");
    }

    let created = f
        .ok(
            "POST",
            "/api/v1/notifications",
            Role::Admin,
            body(
                "prod",
                "https://hooks.example.com/deploy",
                json!(["job.failed", "job.started", "job.failed"]),
            ),
        )
        .await;
    assert_eq!(created["events"], json!(["job.started", "job.failed"]));
    assert_eq!(created["environment"], "prod");
    let key = created["signing_secret"].as_str().unwrap().to_owned();
    assert!(
        key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()),
        "{key}"
    );
    // Never shown again: not listed, not in the audit log, not in the database's clear.
    let list = f
        .ok(
            "GET",
            "/api/v1/notifications?environment=prod",
            Role::Admin,
            None,
        )
        .await;
    assert_eq!(list["subscriptions"][0]["id"], created["id"], "{list}");
    assert!(
        list["subscriptions"][0].get("signing_secret").is_none(),
        "{list}"
    );
    let audit = f
        .ok("GET", "/api/v1/audit?limit=100", Role::Admin, None)
        .await;
    assert!(!audit.to_string().contains(&key), "{audit}");
    let id = created["id"].as_str().unwrap();
    let stored = f
        .store
        .get_notification_subscription(deploy_core::SubscriptionId::parse(id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.sealed_key.contains(&key), "{stored:?}");

    // A rotation gives a new key, once.
    let path = format!("/api/v1/notifications/{id}");
    let rotated = f
        .ok("POST", &format!("{path}/rotate-key"), Role::Admin, None)
        .await;
    let new_key = rotated["signing_secret"].as_str().unwrap();
    assert_ne!(new_key, key);
    assert_eq!(rotated["id"], created["id"]);

    let (status, _) = f
        .call("DELETE", &path, Some(f.token(Role::Admin)), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (method, p) in [
        ("DELETE", path.clone()),
        ("POST", format!("{path}/rotate-key")),
    ] {
        let (status, answer) = f.call(method, &p, Some(f.token(Role::Admin)), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {p}: {answer}");
    }
}

/// A loopback receiver on a task: answers `statuses` in turn (the last one from then
/// on), or, with none, accepts and never answers. Keeps what it read.
struct Receiver {
    url: String,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    accepted: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start(statuses: &[u16]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(0));
        let (seen, count, statuses) = (requests.clone(), accepted.clone(), statuses.to_vec());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                *count.lock().unwrap() += 1;
                if statuses.is_empty() {
                    held.push(stream);
                    continue;
                }
                let mut buf = Vec::new();
                let Ok(Some(request)) = read_request(&mut stream, &mut buf).await else {
                    continue;
                };
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(request);
                    seen.len()
                };
                let status = statuses[(n - 1).min(statuses.len() - 1)];
                let _ = stream
                    .write_all(http_response(status, "text/plain", "").as_bytes())
                    .await;
            }
        });
        Self {
            url,
            requests,
            accepted,
        }
    }

    fn received(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }

    fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }
}

fn notifier(
    f: &Fixture,
    keys: Arc<crate::SecretKeys>,
    configure: impl FnOnce(&mut NotifierConfig),
) -> Notifier {
    let mut config = NotifierConfig::new("test");
    configure(&mut config);
    Notifier::new(f.store.clone(), keys, Arc::new(SystemClock), config).unwrap()
}

fn fixture_keys(f: &Fixture) -> Arc<crate::SecretKeys> {
    Arc::new(crate::SecretKeys::load_or_create(&f._dir.path().join("secrets.key")).unwrap())
}

/// A retry ten minutes on: never due again within a test.
fn slow_retry(c: &mut NotifierConfig) {
    c.retry = RetrySchedule {
        initial: Duration::from_secs(600),
        ..RetrySchedule::default()
    };
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Whether `r` carries a valid signature of its delivery id, event and body under `key`.
fn signed(r: &HttpRequest, key: &str) -> bool {
    crate::verify(
        key.as_bytes(),
        r.header("x-deploy-signature"),
        (r.header("x-deploy-delivery"), r.header("x-deploy-event")),
        &r.body,
        (now_secs(), 300),
    )
}

#[tokio::test]
async fn a_request_awaiting_approval_is_delivered_signed_and_a_refusal_is_retried_later() {
    let f = Fixture::new().await;
    let (prod, dev) = setup(&f).await;
    let receiver = Receiver::start(&[503]).await;
    let (_, key) = subscribe(&f, "prod", &receiver.url).await;
    subscribe(&f, "dev", &receiver.url).await;

    // In dev the requester may approve alone (`deployctl deploy` does at once): no one
    // is asked, no delivery.
    f.promote_release(&dev, "r0").await;
    assert!(deliveries(&f, "?environment=dev").await.is_empty());

    let promotion = f.promote_release(&prod, "r1").await;
    let log = deliveries(&f, "").await;
    let delivery = &log[0];
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(delivery["event"], "approval.requested", "{log:?}");
    assert_eq!(delivery["promotion_id"], promotion["id"], "{log:?}");
    assert_eq!(delivery["status"], "pending", "{log:?}");

    let notifier = notifier(&f, fixture_keys(&f), slow_retry);
    assert_eq!(notifier.run_once().await, 1);
    let got = receiver.received();
    let sent = &got[0];
    assert_eq!(sent.header("x-deploy-event"), "approval.requested");
    assert_eq!(
        sent.header("x-deploy-delivery"),
        delivery["id"].as_str().unwrap()
    );
    assert!(signed(sent, &key), "{sent:?}");
    // The id and the event are signed: changing either breaks the signature.
    let mut relabelled = sent.clone();
    relabelled
        .headers
        .insert("x-deploy-event".to_owned(), "job.failed".to_owned());
    assert!(!signed(&relabelled, &key));
    let payload = sent_json(sent);
    assert_eq!(payload["promotion"]["release"], "r1", "{payload}");
    assert_eq!(payload["environment"]["name"], "prod", "{payload}");
    assert_eq!(payload["id"], delivery["id"], "{payload}");

    // Refused: logged with its status, pending again ten minutes on (not due now).
    let id = delivery["id"].as_str().unwrap();
    let detail = f
        .ok(
            "GET",
            &format!("/api/v1/notifications/deliveries/{id}"),
            Role::Deployer,
            None,
        )
        .await;
    assert_eq!(detail["delivery"]["status"], "pending", "{detail}");
    assert_eq!(detail["attempts"][0]["http_status"], 503, "{detail}");
    assert!(
        detail["delivery"]["last_error"]
            .as_str()
            .unwrap()
            .contains("HTTP 503"),
        "{detail}"
    );
    assert_eq!(notifier.run_once().await, 0);
}

fn sent_json(r: &HttpRequest) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {:?}", r.text()))
}

#[tokio::test]
async fn a_failed_key_step_keeps_no_body_and_the_next_attempt_sends_it_whole() {
    let f = Fixture::new().await;
    let (prod, _) = setup(&f).await;
    let receiver = Receiver::start(&[204]).await;
    let (_, key) = subscribe(&f, "prod", &receiver.url).await;
    f.promote_release(&prod, "r1").await;

    // A dispatcher whose key file lacks the key that sealed the signing key.
    let foreign =
        Arc::new(crate::SecretKeys::load_or_create(&f._dir.path().join("other.key")).unwrap());
    let fast = |c: &mut NotifierConfig| {
        c.retry = RetrySchedule {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
            ..RetrySchedule::default()
        };
    };
    assert_eq!(notifier(&f, foreign, fast).run_once().await, 1);
    let log = deliveries(&f, "").await;
    assert_eq!(log[0]["attempts"], 1, "{log:?}");
    assert!(
        log[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("cannot open the signing key"),
        "{log:?}"
    );
    assert_eq!(receiver.accepted(), 0);

    // The right keys: the whole body goes, signed.
    let right = notifier(&f, fixture_keys(&f), fast);
    let deadline = Instant::now() + Duration::from_secs(60);
    while right.run_once().await == 0 {
        assert!(Instant::now() < deadline, "the retry never came due");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert!(signed(&got[0], &key));
    let payload = sent_json(&got[0]);
    assert_eq!(payload["promotion"]["release"], "r1", "{payload}");
    assert_eq!(deliveries(&f, "").await[0]["status"], "delivered");
}

#[tokio::test]
async fn a_removed_subscription_is_never_posted_to() {
    let f = Fixture::new().await;
    let (prod, _) = setup(&f).await;
    let receiver = Receiver::start(&[204]).await;
    let (sub, _) = subscribe(&f, "prod", &receiver.url).await;
    f.promote_release(&prod, "r1").await;
    // Claimed, then removed before its send (the removal raced the claim).
    let claimed = f
        .store
        .claim_notification_deliveries(
            "test",
            deploy_engine::Clock::now(&SystemClock),
            Duration::from_secs(60),
            10,
            10,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let (status, _) = f
        .call(
            "DELETE",
            &format!("/api/v1/notifications/{sub}"),
            Some(f.token(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    notifier(&f, fixture_keys(&f), slow_retry)
        .attempt(&claimed[0])
        .await;
    assert_eq!(receiver.accepted(), 0, "{:?}", receiver.received());
    let log = deliveries(&f, "").await;
    assert_eq!(
        (log[0]["status"].as_str(), log[0]["last_error"].as_str()),
        (Some("failed"), Some("the subscription was removed")),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_holds_up_no_other_subscription() {
    let f = Fixture::new().await;
    let (prod, _) = setup(&f).await;
    let silent = Receiver::start(&[]).await;
    let healthy = Receiver::start(&[204]).await;
    let (silent_sub, _) = subscribe(&f, "prod", &silent.url).await;
    let (healthy_sub, _) = subscribe(&f, "prod", &healthy.url).await;
    let stop = CancellationToken::new();
    let running = tokio::spawn(
        notifier(&f, fixture_keys(&f), |c| {
            // Far longer than this test waits: the silent receiver's first attempt stays
            // in flight throughout.
            c.timeout = Duration::from_secs(600);
            c.poll_interval = Duration::from_millis(20);
        })
        .run(stop.clone()),
    );
    let of = |sub: &str| format!("?subscription={sub}");
    let wait = |what: &'static str, sub: String, n: usize| {
        let f = &f;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let log = deliveries(f, &sub).await;
                if log.len() >= n && log.iter().all(|d| d["status"] == "delivered") {
                    return;
                }
                assert!(Instant::now() < deadline, "{what}: {log:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // The first request: the silent receiver holds its delivery, the healthy one is served.
    f.promote_release(&prod, "r1").await;
    wait("first delivery", of(&healthy_sub), 1).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while silent.accepted() == 0 {
        assert!(
            Instant::now() < deadline,
            "the silent receiver got no connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Later requests reach the healthy receiver while the silent one's first attempt
    // is still in flight.
    for n in 2..=3 {
        f.promote_release(&prod, &format!("r{n}")).await;
        wait("a later delivery", of(&healthy_sub), n).await;
    }
    let held = deliveries(&f, &of(&silent_sub)).await;
    assert!(
        held.iter()
            .all(|d| d["status"] == "pending" && d["attempts"] == 0),
        "{held:?}"
    );
    assert_eq!(healthy.received().len(), 3);
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn a_restarted_dispatcher_resends_what_its_last_run_held_at_once() {
    let f = Fixture::new().await;
    let (prod, _) = setup(&f).await;
    let receiver = Receiver::start(&[204]).await;
    subscribe(&f, "prod", &receiver.url).await;
    f.promote_release(&prod, "r1").await;
    // The last run of owner "test" claimed it for ten minutes and was cut mid-send.
    let claimed = f
        .store
        .claim_notification_deliveries(
            "test",
            deploy_engine::Clock::now(&SystemClock),
            Duration::from_secs(600),
            10,
            10,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let stop = CancellationToken::new();
    let running = tokio::spawn(
        notifier(&f, fixture_keys(&f), |c| {
            c.poll_interval = Duration::from_millis(20);
        })
        .run(stop.clone()),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while deliveries(&f, "").await[0]["status"] != "delivered" {
        assert!(
            Instant::now() < deadline,
            "the held delivery was not sent again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.received().len(), 1);
    stop.cancel();
    running.await.unwrap();
}
