//! Console tests: the jobs list, a job page (waves, tasks, live fragment, event stream), cancel and rollback, a task page and its log.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use deploy_api::Role;
use deploy_core::{
    DeploymentJob, DeploymentTask, Digest, IdempotencyKey, JobId, JobStatus, NewTask, TargetId,
    TaskId, TaskStatus, Timestamp,
};
use deploy_testkit::exec::{Behaviour, FakeExecutor};
use serde_json::json;

use super::console::{api_job, deploy, fake_fixture, send, sign_in, wait_for};
use super::{Fixture, World};

/// A pending job of world `w` (approved, nothing runs it); its id and first task's id.
async fn pending_job(f: &Fixture, w: &World) -> (String, String) {
    let approved = f
        .ok(
            "POST",
            &format!("/api/v1/promotions/{}/approve", w.promotion_id),
            Role::Deployer,
            None,
        )
        .await;
    let job = &approved["job"];
    (
        job["id"].as_str().unwrap().to_owned(),
        job["tasks"][0]["id"].as_str().unwrap().to_owned(),
    )
}

/// A job stored directly (no engine): [`job_copy`], stored.
async fn stored_job(
    f: &Fixture,
    template: &DeploymentJob,
    n: u64,
    status: JobStatus,
    targets: &[TargetId],
    tasks: usize,
    failure_reason: Option<&str>,
) -> DeploymentJob {
    let job = job_copy(template, n, status, targets, tasks, failure_reason);
    f.store.create_job(&job).await.unwrap().value
}

/// A copy of `template` numbered `n`, in `status`, with `tasks` pending tasks over
/// `targets` in waves of 100; ids after every earlier `n`.
fn job_copy(
    template: &DeploymentJob,
    n: u64,
    status: JobStatus,
    targets: &[TargetId],
    tasks: usize,
    failure_reason: Option<&str>,
) -> DeploymentJob {
    let at = Timestamp::from_unix_millis(template.created_at.unix_millis() + n).unwrap();
    let id = JobId::from_parts(at, [n as u8; 10]);
    let mut job = template.clone();
    job.id = id;
    job.status = status;
    job.winding_down = false;
    job.idempotency_key = IdempotencyKey::parse(&format!("console-{n}")).unwrap();
    job.failure_reason = failure_reason.map(str::to_owned);
    job.created_at = at;
    job.completed_at = (!status.is_active()).then_some(at);
    job.tasks = (0..tasks)
        .map(|i| {
            let mut random = [0u8; 10];
            random[..8].copy_from_slice(&(i as u64).to_be_bytes());
            random[8] = n as u8;
            DeploymentTask::pending(
                NewTask {
                    id: TaskId::from_parts(at, random),
                    job_id: id,
                    target_id: targets[i % targets.len()],
                    component_id: template.tasks[0].component_id,
                    digest: template.tasks[0].digest.clone(),
                    max_attempts: 3,
                    wave: (i / 100) as u32,
                },
                at,
            )
        })
        .collect();
    job
}

/// `raw` as the pages escape it.
fn escaped(raw: &str) -> String {
    raw.replace('<', "&#60;").replace('>', "&#62;")
}

/// A world whose pending job is cancelled (settled, nothing runs), plus targets
/// `extra`; the template job and every target id.
async fn settled_world(f: &Fixture, name: &str, extra: &[&str]) -> (DeploymentJob, Vec<TargetId>) {
    let w = f.world(name).await;
    let (job_id, _) = pending_job(f, &w).await;
    f.ok(
        "POST",
        &format!("/api/v1/jobs/{job_id}/cancel"),
        Role::Deployer,
        None,
    )
    .await;
    for t in extra {
        f.add_target(&w.env_id, t).await;
    }
    let env = deploy_core::EnvironmentId::parse(&w.env_id).unwrap();
    let targets = f.store.list_targets(env).await.unwrap();
    let template = f
        .store
        .get_job(JobId::parse(&job_id).unwrap())
        .await
        .unwrap();
    (template, targets.into_iter().map(|t| t.id).collect())
}

#[tokio::test]
async fn the_console_jobs_list_pages_newest_first_and_filters() {
    let f = Fixture::new().await;
    let (template, targets) = settled_world(&f, "listed", &[]).await;
    let mut ids = Vec::new();
    for n in 1..=55 {
        let status = if n % 2 == 0 {
            JobStatus::Completed
        } else {
            JobStatus::Failed
        };
        ids.push(
            stored_job(&f, &template, n, status, &targets, 1, None)
                .await
                .id,
        );
    }
    let signed = sign_in(&f, Role::Viewer).await;
    let first = signed.get("/ui/jobs").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body.matches(r#"<tr class="job""#).count(), 50);
    // Newest first: the last stored job leads.
    let newest = format!(r#"data-job-id="{}""#, ids[54]);
    assert!(
        first.body.find(&newest).unwrap()
            < first
                .body
                .find(&format!(r#"data-job-id="{}""#, ids[10]))
                .unwrap()
    );
    assert!(first.body.contains(r#"class="job-link""#));
    assert!(first.body.contains(r#"<label for="filter-status">"#));
    let older = format!("before={}", ids[5]);
    assert!(
        first.body.contains(&older),
        "the pager continues after the 50th"
    );
    let second = signed.get(&format!("/ui/jobs?{older}")).await;
    // 5 stored ones older than ids[5], plus the API's cancelled job.
    assert_eq!(second.body.matches(r#"<tr class="job""#).count(), 6);
    assert!(!second.body.contains(r#"id="older""#));

    let completed = signed.get("/ui/jobs?status=completed&environment=").await;
    assert_eq!(completed.body.matches(r#"<tr class="job""#).count(), 27);
    assert!(
        !completed
            .body
            .contains(r#"<span class="badge status-failed">"#)
    );
    assert!(
        completed
            .body
            .contains(r#"<option value="completed" selected>"#)
    );
    let bad = signed.get("/ui/jobs?status=nope").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_console_jobs_list_shows_each_jobs_task_counts() {
    let f = Fixture::new().await;
    let (template, targets) = settled_world(&f, "counted", &["host-2", "host-3", "host-4"]).await;
    let mut mixed = job_copy(
        &template,
        1,
        JobStatus::Failed,
        &targets,
        4,
        Some("one failed"),
    );
    for (task, status) in mixed.tasks.iter_mut().zip([
        TaskStatus::Succeeded,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Pending,
    ]) {
        task.status = status;
        if status != TaskStatus::Pending {
            task.attempt_number = 1;
        }
    }
    let mixed = f.store.create_job(&mixed).await.unwrap().value;
    let mut clean = job_copy(&template, 2, JobStatus::Completed, &targets, 3, None);
    for task in &mut clean.tasks {
        task.status = TaskStatus::Succeeded;
        task.attempt_number = 1;
    }
    let clean = f.store.create_job(&clean).await.unwrap().value;

    let signed = sign_in(&f, Role::Viewer).await;
    let page = signed.get("/ui/jobs").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(r#"<th scope="col">Tasks</th>"#));
    // The row of each job holds its counts: succeeded/total, failed ones when any.
    let row = |id: JobId| {
        let start = page.body.find(&format!(r#"data-job-id="{id}""#)).unwrap();
        let end = start + page.body[start..].find("</tr>").unwrap();
        page.body[start..end].to_owned()
    };
    let mixed_row = row(mixed.id);
    assert!(
        mixed_row
            .contains(r#">2/4 <span class="tasks-failed status-failed">(1 failed)</span></td>"#),
        "{mixed_row}"
    );
    let clean_row = row(clean.id);
    assert!(clean_row.contains(">3/3</td>"), "{clean_row}");
    assert!(!clean_row.contains("failed)"), "{clean_row}");
    // The API's cancelled job: its one task never ran.
    assert!(page.body.contains(">0/1</td>"), "{}", page.body);
}

#[tokio::test]
async fn a_release_page_pages_all_its_jobs_with_before() {
    let f = Fixture::new().await;
    // 55 stored jobs of this release, interleaved with 55 of another one in the same
    // environment, plus the API's cancelled job: far more than any per-environment scan.
    let (template, targets) = settled_world(&f, "paged-release", &[]).await;
    let other = f
        .ok(
            "POST",
            "/api/v1/releases",
            Role::Deployer,
            Some(super::release_body("other")),
        )
        .await;
    let other = deploy_core::ReleaseId::parse(other["id"].as_str().unwrap()).unwrap();
    let mut ours = vec![template.id];
    let mut theirs = Vec::new();
    for n in 1..=110 {
        let mut job = job_copy(&template, n, JobStatus::Completed, &targets, 1, None);
        if n % 2 == 0 {
            job.release_id = other;
            theirs.push(f.store.create_job(&job).await.unwrap().value.id);
        } else {
            ours.push(f.store.create_job(&job).await.unwrap().value.id);
        }
    }
    ours.reverse(); // newest first, as the page lists them

    let signed = sign_in(&f, Role::Viewer).await;
    let path = format!("/ui/releases/{}", template.release_id);
    let first = signed.get(&path).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(!first.body.contains("among the newest"), "{}", first.body);
    let listed = |body: &str| -> Vec<JobId> {
        body.match_indices(r#"<tr class="run" data-job-id=""#)
            .map(|(i, m)| {
                let start = i + m.len();
                JobId::parse(&body[start..start + body[start..].find('"').unwrap()]).unwrap()
            })
            .collect()
    };
    assert_eq!(listed(&first.body), ours[..50]);
    assert!(!first.body.contains(r#"id="runs-newest""#));
    let older = format!(
        r#"<a id="runs-older" href="{path}?before={}">Older jobs →</a>"#,
        ours[49]
    );
    assert!(first.body.contains(&older), "{}", first.body);

    let second = signed.get(&format!("{path}?before={}", ours[49])).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    // The last 6: the oldest stored ones and the API's job, none of the other release.
    assert_eq!(listed(&second.body), ours[50..]);
    assert!(!second.body.contains(r#"id="runs-older""#));
    assert!(second.body.contains(r#"id="runs-newest""#));
    for id in &theirs {
        assert!(!first.body.contains(&id.to_string()));
        assert!(!second.body.contains(&id.to_string()));
    }
    // Its completed jobs: it completed in the environment.
    assert!(
        first.body.contains(r#"environment">paged-release</span>"#),
        "{}",
        first.body
    );

    let bad = signed.get(&format!("{path}?before=nope")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_job_page_shows_waves_tasks_and_only_the_buttons_a_role_may_use() {
    let f = Fixture::new().await;
    let w = f.world("paged").await;
    let (job_id, task_id) = pending_job(&f, &w).await;
    let deployer = sign_in(&f, Role::Deployer).await;
    let viewer = sign_in(&f, Role::Viewer).await;

    let page = deployer.get(&format!("/ui/jobs/{job_id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body
            .contains(r#"<span id="job-status" class="badge status-pending">pending</span>"#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"<section class="wave" data-wave="0""#));
    assert!(page.body.contains(&format!(
        r#"<tr class="task" data-task-id="{task_id}" data-status="pending">"#
    )));
    assert!(page.body.contains(r#"<td class="target">host-1</td>"#));
    assert!(page.body.contains(&format!(
        r#"<a class="task-log" href="/ui/tasks/{task_id}">"#
    )));
    // The live region follows the job's events after the last one the page shows.
    let last = f
        .engine
        .store()
        .last_job_event_seq(JobId::parse(&job_id).unwrap())
        .await
        .unwrap();
    assert!(last > 0);
    assert!(page.body.contains(&format!(r#"data-live-src="/ui/jobs/{job_id}/live?page=1" data-live-events="/ui/jobs/{job_id}/events?after={last}""#)), "{}", page.body);
    assert!(page.body.contains(r#"id="cancel-form""#) && page.body.contains(r#"id="cancel""#));
    assert!(
        !page.body.contains(r#"id="rollback""#),
        "a pending job cannot be rolled back"
    );

    let seen = viewer.get(&format!("/ui/jobs/{job_id}")).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(!seen.body.contains(r#"id="cancel""#) && !seen.body.contains(r#"id="rollback""#));
    let refused = viewer.post(&format!("/ui/jobs/{job_id}/cancel"), &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = viewer
        .post(&format!("/ui/jobs/{job_id}/rollback"), &[("reason", "no")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(api_job(&f, &job_id).await["status"], "pending");

    // The live fragment alone: no layout, not settled yet.
    let live = viewer.get(&format!("/ui/jobs/{job_id}/live?page=1")).await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(
        live.body
            .trim_start()
            .starts_with(r#"<div class="job-live" data-settled="false">"#),
        "{}",
        live.body
    );
    assert!(!live.body.contains("<html"));

    // Cancel through the console: the job fails at once (it had not started).
    let cancelled = deployer
        .post(&format!("/ui/jobs/{job_id}/cancel"), &[])
        .await;
    assert_eq!(
        cancelled.status,
        StatusCode::SEE_OTHER,
        "{}",
        cancelled.body
    );
    assert_eq!(cancelled.location(), format!("/ui/jobs/{job_id}"));
    assert_eq!(api_job(&f, &job_id).await["status"], "failed");
    let live = viewer.get(&format!("/ui/jobs/{job_id}/live")).await;
    assert!(
        live.body.contains(r#"data-settled="true""#),
        "{}",
        live.body
    );
    assert!(
        live.body
            .contains(r#"<span id="job-status" class="badge status-failed">failed</span>"#)
    );
    assert!(
        live.body.contains(r#"id="failure-reason""#) && live.body.contains("cancelled by deployer")
    );
    // Cancelled before it started, it has nothing a rollback could restore: the
    // button shows (a settled failure), and the engine's refusal is the error page.
    let page = deployer.get(&format!("/ui/jobs/{job_id}")).await;
    assert!(!page.body.contains(r#"id="cancel""#) && page.body.contains(r#"id="rollback""#));
    let refused = deployer
        .post(&format!("/ui/jobs/{job_id}/rollback"), &[("reason", "try")])
        .await;
    assert!(refused.status.is_client_error(), "{}", refused.status);
    assert!(refused.body.contains(r#"id="error-detail""#));
}

#[tokio::test]
async fn the_job_event_stream_needs_the_session_and_resumes() {
    let f = Fixture::new().await;
    let w = f.world("streamed").await;
    let (job_id, _) = pending_job(&f, &w).await;
    f.ok(
        "POST",
        &format!("/api/v1/jobs/{job_id}/cancel"),
        Role::Deployer,
        None,
    )
    .await;
    let signed = sign_in(&f, Role::Viewer).await;
    let path = format!("/ui/jobs/{job_id}/events");
    let stream = signed.get(&path).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert!(
        stream.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(
        stream.body.contains("event: transition") && stream.body.contains("event: end"),
        "{}",
        stream.body
    );
    let ids: Vec<&str> = stream
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert!(ids.len() >= 2, "{}", stream.body);
    // Resumed after the first event: not sent again.
    let resumed = send(
        &f,
        "GET",
        &path,
        Some(&signed.cookie),
        None,
        &[("last-event-id", ids[0])],
    )
    .await;
    let again: Vec<&str> = resumed
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert_eq!(again, ids[1..]);
    let anonymous = send(&f, "GET", &path, None, None, &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let live = send(
        &f,
        "GET",
        &format!("/ui/jobs/{job_id}/live"),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(live.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_thousand_task_job_renders_one_page_of_tasks_and_every_wave() {
    let f = Fixture::new().await;
    let (template, targets) = settled_world(&f, "big", &["web-2", "web-3"]).await;
    let reason = "<script>alert(1)</script> broke";
    let job = stored_job(
        &f,
        &template,
        1,
        JobStatus::Failed,
        &targets,
        1_000,
        Some(reason),
    )
    .await;
    let signed = sign_in(&f, Role::Deployer).await;
    let started = std::time::Instant::now();
    let page = signed.get(&format!("/ui/jobs/{}", job.id)).await;
    let took = started.elapsed();
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.body.matches(r#"<tr class="task""#).count(), 100);
    assert_eq!(page.body.matches(r#"<section class="wave""#).count(), 10);
    assert!(
        page.body.contains("100 tasks:"),
        "every wave counts its tasks"
    );
    assert!(page.body.contains(r#"id="tasks-next" href="/ui/jobs/"#));
    // Markup in a failure reason shows as text (names cannot hold any).
    assert!(page.body.contains(&escaped(reason)));
    assert!(page.body.contains(r#"<td class="target">web-3</td>"#));
    assert!(!page.body.contains("<script>alert"));
    assert!(took < Duration::from_secs(5), "{took:?}");

    let last = signed.get(&format!("/ui/jobs/{}?page=10", job.id)).await;
    assert_eq!(last.body.matches(r#"<tr class="task""#).count(), 100);
    assert!(last.body.contains(r#"<section class="wave" data-wave="9""#));
    assert!(last.body.contains("Tasks page 10 of 10") && !last.body.contains(r#"id="tasks-next""#));
    let live = signed
        .get(&format!("/ui/jobs/{}/live?page=3", job.id))
        .await;
    assert_eq!(live.body.matches(r#"<tr class="task""#).count(), 100);
    assert!(live.body.contains("Tasks page 3 of 10"));
}

#[tokio::test]
async fn a_task_page_shows_its_log_and_follows_after_it() {
    let f = Fixture::new().await;
    let w = f.world("logged").await;
    let (job_id, task_id) = pending_job(&f, &w).await;
    let task = TaskId::parse(&task_id).unwrap();
    let now = Timestamp::from_unix_millis(1_800_000_000_000).unwrap();
    f.store
        .append_log(task, now, "pulling <b>web</b>\n")
        .await
        .unwrap();
    let second = f.store.append_log(task, now, "started\n").await.unwrap();
    f.ok(
        "POST",
        &format!("/api/v1/jobs/{job_id}/cancel"),
        Role::Deployer,
        None,
    )
    .await;
    let signed = sign_in(&f, Role::Viewer).await;
    let page = signed.get(&format!("/ui/tasks/{task_id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(r#"id="task-status""#));
    assert!(page.body.contains(&format!(r#"href="/ui/jobs/{job_id}""#)));
    assert!(page.body.contains(r#"<dd id="task-target">host-1</dd>"#));
    assert!(
        page.body
            .contains(&format!("pulling {}\nstarted\n", escaped("<b>web</b>"))),
        "{}",
        page.body
    );
    let follow = format!("/ui/tasks/{task_id}/log/events?after={second}");
    assert!(
        page.body.contains(&format!(
            r#"<pre id="task-log" data-log-events="{follow}">"#
        )),
        "{}",
        page.body
    );

    f.store.append_log(task, now, "more\n").await.unwrap();
    let stream = signed.get(&follow).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert!(
        stream.body.contains("more") && !stream.body.contains("pulling"),
        "{}",
        stream.body
    );
    assert!(stream.body.contains("event: end"));
    let anonymous = send(&f, "GET", &follow, None, None, &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        signed.get("/ui/tasks/nope").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_rolled_back_from_the_console_becomes_rolled_back() {
    let fake = Arc::new(FakeExecutor::default());
    let f = fake_fixture(&fake).await;
    let env = f.env_named("rollback", json!({})).await;
    let env_id = env["id"].as_str().unwrap();
    let target = f.add_target(env_id, "host-1").await;
    let target = TargetId::parse(target["id"].as_str().unwrap()).unwrap();
    let (shutdown, serve) = f.serve_engine();
    let good = deploy(&f, env_id, "good", 'a').await;
    wait_for(&f, &good, "completed").await;
    let bad_digest = Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap();
    fake.on(target, &bad_digest, Behaviour::FailPermanent, 10);
    let bad = deploy(&f, env_id, "bad", 'b').await;
    wait_for(&f, &bad, "failed").await;

    let deployer = sign_in(&f, Role::Deployer).await;
    let page = deployer.get(&format!("/ui/jobs/{bad}")).await;
    assert!(
        page.body.contains(r#"id="rollback-form""#)
            && page.body.contains(r#"<label for="rollback-reason">"#)
    );
    assert!(
        page.body.contains(r#"id="failure-reason""#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"data-settled="true""#));
    let rolled = deployer
        .post(
            &format!("/ui/jobs/{bad}/rollback"),
            &[("reason", "<b>bad</b> release")],
        )
        .await;
    assert_eq!(rolled.status, StatusCode::SEE_OTHER, "{}", rolled.body);
    assert_eq!(rolled.location(), format!("/ui/jobs/{bad}"));
    let done = wait_for(&f, &bad, "rolled_back").await;
    assert_eq!(done["status"], "rolled_back");
    let page = deployer.get(&format!("/ui/jobs/{bad}")).await;
    assert!(
        page.body.contains(
            r#"<span id="job-status" class="badge status-rolled_back">rolled_back</span>"#
        ),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains(r#"id="rollback""#),
        "a rolled back job is not rolled back twice"
    );
    // The console's rollback is the API's: audited as the signed-in token.
    let audit = f.ok("GET", "/api/v1/audit", Role::Admin, None).await;
    let rows = audit.as_array().or_else(|| audit["entries"].as_array());
    assert!(
        rows.unwrap_or_else(|| panic!("{audit}"))
            .iter()
            .any(|r| r["route"] == "/ui/jobs/{id}/rollback"),
        "{audit}"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), serve)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_rollback_reason_past_its_limit_is_refused_naming_the_limit() {
    let f = Fixture::new().await;
    let long = "x".repeat(1_001);
    let path = "/api/v1/jobs/01a24aec-f024-7597-bb32-1bfd42aaa008/rollback";
    let (status, problem) = f
        .call(
            "POST",
            path,
            Some(f.token(Role::Deployer)),
            Some(json!({"reason": long})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("1001 characters") && detail.contains("1000"),
        "{detail}"
    );
    assert_eq!(problem["field"], "reason");
}
