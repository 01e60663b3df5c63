//! Blue-green with the fake executor: green beside blue, cut-over only after every green is verified, post-deploy hooks after the switch, cut back on a later failure, blue retired after completion.

use std::collections::BTreeMap;
use std::sync::Arc;

use deploy_core::testing::{digest, environment};
use deploy_core::*;

use super::fake::{FakeWorld, Fixture, fake_addr, release_with};
use crate::{
    EngineError, NGINX_COMMAND_LABEL, NGINX_INCLUDE_LABEL, NGINX_LISTEN_LABEL,
    NGINX_UPSTREAM_PORT_LABEL,
};

fn proxy_labels(t: &mut Target) {
    t.labels = Labels::new(BTreeMap::from([
        (
            NGINX_INCLUDE_LABEL.to_owned(),
            "/etc/nginx/conf.d/stella.conf".to_owned(),
        ),
        (NGINX_UPSTREAM_PORT_LABEL.to_owned(), "8080".to_owned()),
        (NGINX_LISTEN_LABEL.to_owned(), "8081".to_owned()),
        (
            NGINX_COMMAND_LABEL.to_owned(),
            "/usr/sbin/nginx -p /srv/nginx/".to_owned(),
        ),
    ]))
    .unwrap();
}

/// Two blue-green targets behind a (fake) nginx, with a post-deploy `smoke` hook.
async fn fixture() -> Fixture {
    let mut env = environment("prod");
    env.hooks.post_deploy = Some(CommandSpec::new(vec!["smoke".into()]).unwrap());
    let dir = deploy_testkit::temp_dir("engine-bg-").unwrap();
    Fixture::open_with(
        2,
        dir,
        Arc::new(FakeWorld::default()),
        true,
        env,
        proxy_labels,
    )
    .await
}

async fn blue_green(f: &Fixture, n: u64, d: Digest, auto_rollback: bool) -> DeploymentJob {
    let job = f
        .job(n, &release_with(n, d), |r| {
            r.strategy = Strategy::BlueGreen;
            r.failure_policy.auto_rollback = auto_rollback;
        })
        .await;
    f.engine.run_to_settled(job.id).await.unwrap()
}

fn ops(f: &Fixture) -> Vec<String> {
    std::mem::take(&mut *f.world.ops.lock().unwrap())
}

#[tokio::test]
async fn green_starts_beside_blue_traffic_is_cut_over_after_verification_and_blue_is_retired() {
    let f = fixture().await;
    let v1 = blue_green(&f, 1, digest(1), false).await;
    assert_eq!(v1.status, JobStatus::Completed, "{:?}", v1.failure_reason);
    // A first deploy: no blue; green alone is switched in.
    assert_eq!(
        ops(&f),
        [
            "deploy host-1 sha256:0000000000000000000000000000000000000000000000000000000000000001 keep=true",
            "deploy host-2 sha256:0000000000000000000000000000000000000000000000000000000000000001 keep=true",
            "switch host-1 green blue_running=false",
            "switch host-2 green blue_running=false",
            "command host-1 smoke",
            "command host-2 smoke",
            "retire host-1",
            "retire host-2",
        ]
    );

    let v2 = blue_green(&f, 2, digest(2), false).await;
    assert_eq!(v2.status, JobStatus::Completed, "{:?}", v2.failure_reason);
    let ops = ops(&f);
    let d2 = digest(2);
    // Every green deployed (blue kept running) and verified before any switch; the
    // hooks after the switches; blue retired last, after the job completed.
    assert_eq!(
        ops,
        [
            format!("deploy host-1 {d2} keep=true"),
            format!("deploy host-2 {d2} keep=true"),
            "switch host-1 green blue_running=true".to_owned(),
            "switch host-2 green blue_running=true".to_owned(),
            "command host-1 smoke".to_owned(),
            "command host-2 smoke".to_owned(),
            "retire host-1".to_owned(),
            "retire host-2".to_owned(),
        ]
    );
    let include = f.world.proxy.lock().unwrap()[&f.target(0)].clone();
    assert!(
        include.contains(&format!("server {} weight=100; # green", fake_addr(&d2))),
        "{include}"
    );
    assert!(!include.contains(&fake_addr(&digest(1))), "{include}");
    assert!(include.contains("listen 8081;"), "{include}");
    // The switch and the hook output are in the target's task log.
    let log = f.store.read_log(v2.tasks[0].id, 0, 100).await.unwrap();
    let text: String = log.iter().map(|c| c.content.clone() + "\n").collect();
    assert!(text.contains("cut over: host-1 serves green"), "{text}");
    assert!(text.contains("smoke ran"), "{text}");
    assert!(text.contains("blue (web-previous) stopped"), "{text}");
    let events = f.store.job_events(v2.id, 0, 1000).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.cause == "traffic cut over to green; every target healthy"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_failure_after_the_cut_over_cuts_back_to_blue_and_rolls_back_to_the_running_blue() {
    let f = fixture().await;
    let v1 = blue_green(&f, 1, digest(1), false).await;
    assert_eq!(v1.status, JobStatus::Completed, "{:?}", v1.failure_reason);
    ops(&f);
    f.world.failing_hooks.lock().unwrap().insert(digest(2));
    let v2 = blue_green(&f, 2, digest(2), true).await;
    assert_eq!(v2.status, JobStatus::RolledBack, "{:?}", v2.failure_reason);
    let ops = ops(&f);
    let (d1, d2) = (digest(1), digest(2));
    assert_eq!(
        ops,
        [
            format!("deploy host-1 {d2} keep=true"),
            format!("deploy host-2 {d2} keep=true"),
            "switch host-1 green blue_running=true".to_owned(),
            "switch host-2 green blue_running=true".to_owned(),
            // The smoke test fails on the first target: both are cut back to blue,
            // which never stopped.
            "command host-1 smoke".to_owned(),
            "switch host-1 blue blue_running=true".to_owned(),
            "switch host-2 blue blue_running=true".to_owned(),
            // The rollback job puts blue's digest back under the container's name
            // (the SSH executor starts the kept, still running, blue: no new
            // container), keeping green running until the proxy points at blue...
            format!("deploy host-1 {d1} keep=true"),
            format!("deploy host-2 {d1} keep=true"),
            // ...switches to what it deployed (blue's address again), runs the hooks,
            // and retires the failed green.
            "switch host-1 green blue_running=true".to_owned(),
            "switch host-2 green blue_running=true".to_owned(),
            "command host-1 smoke".to_owned(),
            "command host-2 smoke".to_owned(),
            "retire host-1".to_owned(),
            "retire host-2".to_owned(),
        ]
    );
    let include = f.world.proxy.lock().unwrap()[&f.target(1)].clone();
    assert!(
        include.contains(&format!("server {} weight=100;", fake_addr(&d1))),
        "{include}"
    );
    assert!(!include.contains(&fake_addr(&d2)), "{include}");
    let failed = f.store.job_events(v2.id, 0, 1000).await.unwrap();
    assert!(
        failed.iter().any(|e| e.event == "fail"
            && e.cause
                .contains("post-deploy hook exited 1 after the cut-over")),
        "{failed:#?}"
    );
    for i in 0..2 {
        assert_eq!(f.world.digest_on(f.target(i), "web"), Some(d1.clone()));
    }
}

#[tokio::test]
async fn a_green_that_fails_verification_is_never_given_traffic() {
    let f = fixture().await;
    let v1 = blue_green(&f, 1, digest(1), false).await;
    assert_eq!(v1.status, JobStatus::Completed);
    ops(&f);
    f.world.broken.lock().unwrap().insert(digest(3));
    let v3 = blue_green(&f, 3, digest(3), false).await;
    assert_eq!(v3.status, JobStatus::Failed);
    let ops = ops(&f);
    assert!(ops.iter().all(|o| !o.starts_with("switch")), "{ops:?}");
    // Blue (v1) still runs, and the proxy still routes to it (job 1's include).
    let include = f.world.proxy.lock().unwrap()[&f.target(0)].clone();
    assert!(include.contains(&fake_addr(&digest(1))), "{include}");
    assert!(
        f.world
            .previous
            .lock()
            .unwrap()
            .values()
            .all(|(d, running)| *d == digest(1) && *running)
    );
}

#[tokio::test]
async fn a_blue_green_job_needs_a_proxy_on_every_target() {
    let f = Fixture::new(2).await;
    f.store
        .put_release(&release_with(1, digest(1)))
        .await
        .unwrap();
    let p = deploy_core::testing::approved_promotion(1, deploy_core::testing::release_id(1));
    f.store.put_promotion(&p).await.unwrap();
    let mut request = crate::JobRequest::new(p.id, IdempotencyKey::parse("bg-1").unwrap());
    request.strategy = Strategy::BlueGreen;
    let err = f.engine.create_job(&request).await.unwrap_err();
    assert!(matches!(err, EngineError::InvalidRequest(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("target `host-1` has no label `deploy.nginx.include`"),
        "{text}"
    );
}

#[tokio::test]
async fn a_manual_rollback_of_a_completed_blue_green_job_keeps_serving_until_the_proxy_moved() {
    let f = fixture().await;
    let v1 = blue_green(&f, 1, digest(1), false).await;
    assert_eq!(v1.status, JobStatus::Completed, "{:?}", v1.failure_reason);
    let v2 = blue_green(&f, 2, digest(2), false).await;
    assert_eq!(v2.status, JobStatus::Completed, "{:?}", v2.failure_reason);
    ops(&f);
    let rollback = f.engine.rollback(v2.id, "operator asked").await.unwrap();
    let done = f.engine.run_to_settled(rollback.id).await.unwrap();
    assert_eq!(
        done.status,
        JobStatus::Completed,
        "{:?}",
        done.failure_reason
    );
    let d1 = digest(1);
    // v1 comes back beside the serving v2, the proxy moves to v1, then v2 is stopped.
    assert_eq!(
        ops(&f),
        [
            format!("deploy host-1 {d1} keep=true"),
            format!("deploy host-2 {d1} keep=true"),
            "switch host-1 green blue_running=true".to_owned(),
            "switch host-2 green blue_running=true".to_owned(),
            "command host-1 smoke".to_owned(),
            "command host-2 smoke".to_owned(),
            "retire host-1".to_owned(),
            "retire host-2".to_owned(),
        ]
    );
    let include = f.world.proxy.lock().unwrap()[&f.target(0)].clone();
    assert!(
        include.contains(&format!("server {} weight=100; # green", fake_addr(&d1))),
        "{include}"
    );
}
