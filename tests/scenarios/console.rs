//! The web console end to end in headless Chromium, against a real `deployd` deploying over a real sshd host from a loopback registry.
//!
//! The same world as `deployd_e2e` (one sshd host, the v1/v2/v3-broken test images,
//! a command health check): environments `staging` (one target) and `prod` (requires
//! staging, one approval). Through the browser, as a user would: a bad token is
//! refused and the admin token signs in; a deploy started by `deployctl` (queued
//! behind another) is followed on its job page from `pending` to `succeeded` without
//! a reload (a marker set in the page survives); a v3-broken deploy (queued behind
//! v2) fails: its task's page, opened before the task ran, follows the log live to the
//! health check's failure, the log page opened from the job page shows it too, and the
//! rollback button (after its confirm) turns the job `rolled_back` while v2 serves
//! again; a promotion waits for approval. Signed out and back in as a viewer: no
//! approve, reject, cancel, rollback or revoke button, and the viewer's own session
//! with its valid CSRF token still gets 403 on a rollback or approve POST; an admin
//! session's POST without its CSRF field (or with another) gets 403 while the same
//! session's sign-out with it is accepted. Every page is saved as a screenshot at
//! 1280 px, the overview also at 390x844.

use std::time::Duration;

use serde_json::{Value, json};

use crate::browser::{Browser, csrf_of, get_page, header, post_form, session_cookie};
use crate::deployd_e2e::{SshWorld, serves, target_add_args};
use crate::deployd_proc::{ADMIN_TOKEN, api_post_as, create_release, ctl, ctl_as, ok_json};

/// How long each deployed container must stay healthy: long enough for the job page
/// to show its tasks before they succeed.
const SOAK_MS: u64 = 3_000;

/// Bound of a page-level wait (a page's content, a navigation).
const PAGE: Duration = Duration::from_secs(30);

/// Bound of a wait for a job to settle.
const JOB: Duration = Duration::from_secs(180);

/// `sha256:<hex>` of an image reference `repo@sha256:<hex>`: its first 12 hex digits,
/// what any display of the digest shows.
fn short_digest(image: &str) -> String {
    let hex = image.rsplit_once("sha256:").unwrap().1;
    hex[..12].to_owned()
}

/// A task log as the page shows it: one line per log line (the engine writes lines,
/// `deployctl logs` prints them so), the pull first and the health verdict last.
fn assert_lines(log: &str) {
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("pulling ")),
        "the log starts with its pull, on a line of its own: {log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("health check failed after")),
        "the health verdict on a line of its own: {log}"
    );
}

/// Signs in with `token` on the login page and waits for the overview.
fn sign_in(browser: &Browser, token: &str) {
    browser.goto("/ui/login");
    browser.type_into("#token", token);
    browser.click("#sign-in");
    browser.wait_for_path("/ui/", PAGE);
}

/// Clicks the nav's sign-out button (accepting a confirm if it asks) and waits for the login page.
fn sign_out(browser: &Browser) {
    browser.click("#sign-out");
    let deadline = std::time::Instant::now() + PAGE;
    while browser.accept_confirm_if_any().is_none() && browser.current_path() != "/ui/login" {
        assert!(
            std::time::Instant::now() < deadline,
            "sign-out did not reach /ui/login"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.wait_for_path("/ui/login", PAGE);
}

/// Opens `path`, waits until `css` matches at least one element, and saves the screenshot `name`.
fn page_shot(browser: &Browser, path: &str, css: &str, name: &str) {
    browser.goto(path);
    browser.wait_for_texts(css, PAGE, &format!("a `{css}`"), |t| !t.is_empty());
    browser.screenshot(name);
}

/// Waits (bounded) until `jobs show` says the job is no longer winding down (its
/// attempts settled), so a rollback is accepted.
fn wait_wound_down(addr: &str, job: &str) -> Value {
    let deadline = std::time::Instant::now() + JOB;
    loop {
        let shown = ok_json(addr, &["jobs", "show", job]);
        if shown["winding_down"] == false {
            return shown;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {job} still winding down: {shown:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_console_in_a_real_browser() {
    let prefix = format!("ui{}-", std::process::id());
    let container = format!("{prefix}web");
    let world = SshWorld::start(&prefix, "console-");
    let (hosts, images) = (&world.hosts, &world.images);
    let addr = world.addr.clone();

    ok_json(&addr, &["env", "create", "staging"]);
    let add = target_add_args("staging", hosts, 1, &prefix, SOAK_MS);
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    ok_json(&addr, &add);
    ok_json(
        &addr,
        &[
            "env",
            "create",
            "prod",
            "--requires",
            "staging",
            "--approvals",
            "1",
        ],
    );
    let add = target_add_args("prod", hosts, 1, &format!("{prefix}prd-"), SOAK_MS);
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    ok_json(&addr, &add);
    let v1 = create_release(&addr, "v1", &images.v1);
    create_release(&addr, "v2", &images.v2);
    create_release(&addr, "v3-broken", &images.v3_broken);

    // The plain HTTP face: `/` sends to the console, the login page is public.
    let root = get_page(&addr, "/", None);
    assert_eq!(root.status, 303, "{}", root.head);
    assert_eq!(header(&root, "location").as_deref(), Some("/ui/"));
    let anonymous = get_page(&addr, "/ui/jobs", None);
    assert_eq!(anonymous.status, 303, "{}", anonymous.head);
    assert!(
        header(&anonymous, "location").is_some_and(|l| l.starts_with("/ui/login")),
        "{}",
        anonymous.head
    );

    let browser = Browser::start(&format!("http://{addr}"));

    // Sign-in: a wrong token is refused on the page, the admin token signs in.
    browser.goto("/ui/login");
    browser.screenshot("login");
    browser.type_into("#token", "dpl_not-a-token");
    browser.click("#sign-in");
    browser.wait_for_texts(".error", PAGE, "an error", |t| !t.is_empty());
    sign_in(&browser, ADMIN_TOKEN);
    assert_eq!(browser.attr("body", "data-role").as_deref(), Some("admin"));
    assert_eq!(
        browser.count("#nav-audit"),
        1,
        "an admin sees the audit link"
    );

    // A deploy started from the CLI, followed live on its job page: no reload. It waits
    // in line behind a v2 deploy, so the page opens while its task is still pending.
    let ahead = ctl(&addr, &["deploy", "--release", "v2", "--env", "staging"]);
    assert_eq!(ahead.status.code(), Some(0), "{ahead:?}");
    let started = ctl(
        &addr,
        &[
            "deploy",
            "--release",
            "v1",
            "--env",
            "staging",
            "--queue",
            "--output",
            "json",
        ],
    );
    assert_eq!(started.status.code(), Some(0), "{started:?}");
    let v1_job = serde_json::from_slice::<Value>(&started.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    browser.goto(&format!("/ui/jobs/{v1_job}"));
    assert_eq!(browser.execute("window.__marker = 1; return 1;"), json!(1));
    let first = browser.wait_for_texts("tr.task td.status", PAGE, "a task", |t| !t.is_empty());
    let statuses = browser.wait_for_texts("tr.task td.status", JOB, "succeeded tasks", |t| {
        !t.is_empty() && t.iter().all(|s| s == "succeeded")
    });
    eprintln!("console: task statuses seen live on job {v1_job}: {statuses:?}");
    assert_eq!(
        first.last().map(String::as_str),
        Some("pending"),
        "the page opened on the queued job's pending task: {statuses:?}"
    );
    browser.wait_for_text("#job-status", "completed", JOB);
    assert_eq!(
        browser.execute("return window.__marker === 1;"),
        json!(true),
        "the job page was reloaded while it followed the job"
    );
    assert_eq!(browser.text("tr.task td.target"), "host-1");
    assert!(
        browser
            .text("tr.task td.digest")
            .contains(&short_digest(&images.v1)),
        "{}",
        browser.text("tr.task td.digest")
    );
    assert_eq!(browser.count("#job-status"), 1);
    browser.screenshot("job");
    assert_eq!(serves(&container, "/version"), "v1");

    // A failing deploy, queued behind a v2 deploy: its task's page, opened before the
    // task runs, follows the log live up to the health check's failure.
    let ahead = ctl(&addr, &["deploy", "--release", "v2", "--env", "staging"]);
    assert_eq!(ahead.status.code(), Some(0), "{ahead:?}");
    let failed = ctl(
        &addr,
        &[
            "deploy",
            "--release",
            "v3-broken",
            "--env",
            "staging",
            "--queue",
            "--max-attempts",
            "1",
            "--output",
            "json",
        ],
    );
    assert_eq!(failed.status.code(), Some(0), "{failed:?}");
    let v3_job = serde_json::from_slice::<Value>(&failed.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let queued = ok_json(&addr, &["jobs", "show", &v3_job]);
    let task = queued["tasks"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no task in the queued job: {queued:#}"))
        .to_owned();
    browser.goto(&format!("/ui/tasks/{task}"));
    let opened_on = browser.text("#task-status");
    assert!(
        !browser.text("#task-log").contains("pulling "),
        "the task page opened before the task ran ({opened_on})"
    );
    let live = browser.wait_for_text_containing("#task-log", "health check failed after", JOB);
    eprintln!("console: task {task} page opened on {opened_on:?}, its log followed live");
    assert_lines(&live);

    // The failed job's page, and from it the failed task's log page.
    browser.goto(&format!("/ui/jobs/{v3_job}"));
    browser.wait_for_text("#job-status", "failed", JOB);
    assert!(
        !browser.text("#failure-reason").is_empty(),
        "a failed job shows its reason"
    );
    let v3 = wait_wound_down(&addr, &v3_job);
    assert_eq!(v3["status"], "failed", "{v3:#}");
    let task = v3["tasks"][0]["id"].as_str().unwrap().to_owned();
    browser.wait_for_texts(
        &format!("tr.task[data-task-id=\"{task}\"][data-status=\"failed\"] a.task-log"),
        PAGE,
        "the failed task's log link",
        |t| !t.is_empty(),
    );
    browser.click(&format!("tr.task[data-task-id=\"{task}\"] a.task-log"));
    browser.wait_for_path(&format!("/ui/tasks/{task}"), PAGE);
    let log = browser.wait_for_text_containing("#task-log", "health check failed after", PAGE);
    assert_lines(&log);
    assert_eq!(browser.text("#task-status"), "failed");
    browser.screenshot("task");

    // Rollback from the job page, after its confirm: the job ends rolled_back, and v2,
    // the last release completed before it, serves again.
    browser.goto(&format!("/ui/jobs/{v3_job}"));
    browser.wait_for_text("#job-status", "failed", PAGE);
    browser.execute("window.__before_rollback = 1; return 1;");
    browser.click("#rollback");
    let question = browser.accept_confirm();
    assert!(!question.trim().is_empty(), "the rollback asks first");
    // The form posted and a new document loaded (its 303 answer).
    browser.wait_for_texts("body", PAGE, "the page after the rollback post", |_| {
        browser.execute("return window.__before_rollback === undefined;") == json!(true)
    });
    let landed = browser.current_path();
    eprintln!("console: the rollback post landed on {landed}");
    if landed != format!("/ui/jobs/{v3_job}") {
        assert!(landed.starts_with("/ui/jobs/"), "{landed}");
        browser.goto(&format!("/ui/jobs/{v3_job}"));
    }
    let settled = browser.wait_for_text("#job-status", "rolled_back", JOB);
    eprintln!("console: job {v3_job} statuses seen after the rollback: {settled:?}");
    browser.screenshot("job-rolled-back");
    let v3 = ok_json(&addr, &["jobs", "show", &v3_job]);
    assert_eq!(v3["status"], "rolled_back", "{v3:#}");
    let jobs = ok_json(&addr, &["jobs", "list", "--env", "staging"]);
    let rollback = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["rollback_of"] == v3_job.as_str())
        .unwrap_or_else(|| panic!("no rollback job of {v3_job} in {jobs:#}"));
    assert_eq!(rollback["status"], "completed", "{rollback:#}");
    assert_eq!(serves(&container, "/version"), "v2", "v2 serves again");

    // A promotion to prod waits for an approval: requested by a deployer, not the admin.
    let alice = ok_json(&addr, &["token", "create", "alice", "--role", "deployer"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiting = ctl_as(
        &addr,
        &alice,
        &["deploy", "--release", "v1", "--env", "prod"],
    );
    assert_eq!(waiting.status.code(), Some(6), "{waiting:?}");
    let queue = ok_json(
        &addr,
        &[
            "promotions",
            "list",
            "--env",
            "prod",
            "--status",
            "requested",
        ],
    );
    let promotion = queue["promotions"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no requested promotion: {queue:#}"))
        .to_owned();

    // An agent, so the agents page has a row.
    let boot = ok_json(
        &addr,
        &[
            "agent",
            "bootstrap-token",
            "--name",
            "rack-1",
            "--label",
            "zone=a",
        ],
    );
    let (status, registered) = api_post_as(
        &addr,
        "/api/v1/agent/register",
        boot["token"].as_str().unwrap(),
        &json!({"protocol": 1, "name": "rack-1", "capabilities": ["docker"]}),
    );
    assert_eq!(status, 201, "{registered}");

    // Every page at 1280 px, as the admin (who sees the buttons the viewer must not).
    page_shot(
        &browser,
        "/ui/",
        "section.environment[data-environment=\"staging\"] tr.target[data-target=\"host-1\"]",
        "overview",
    );
    let order = browser.execute(
        "return Array.from(document.querySelectorAll('section.environment')).map(s => s.dataset.environment);",
    );
    assert_eq!(order, json!(["staging", "prod"]), "pipeline order");
    let digest = browser.text(
        "section.environment[data-environment=\"staging\"] tr.target[data-target=\"host-1\"] td.digest",
    );
    assert!(
        digest.contains(&short_digest(&images.v2)),
        "staging/host-1 runs v2 after the rollback: {digest}"
    );
    browser.set_window_size(390, 844);
    browser.goto("/ui/");
    browser.screenshot("overview-phone");
    let overflow = browser.execute(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
    );
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the overview scrolls sideways on a 390 px screen by {overflow} px"
    );
    browser.set_window_size(1280, 900);
    page_shot(
        &browser,
        "/ui/jobs",
        &format!("tr.job[data-job-id=\"{v1_job}\"] a.job-link"),
        "jobs",
    );
    assert!(
        browser.count("tr.job") >= 5,
        "v2, v1, v2, v3-broken, its rollback"
    );
    page_shot(&browser, "/ui/releases", "tr.release", "releases");
    assert_eq!(browser.count("tr.release"), 3);
    page_shot(
        &browser,
        &format!("/ui/releases/{v1}"),
        "tr.component td.digest",
        "release",
    );
    assert!(
        browser
            .text("tr.component td.digest")
            .contains(&short_digest(&images.v1))
    );
    page_shot(
        &browser,
        "/ui/promotions",
        &format!("tr.promotion[data-promotion-id=\"{promotion}\"]"),
        "promotions",
    );
    assert!(
        browser.count("button.approve") >= 1 && browser.count("button.reject") >= 1,
        "the admin can approve or reject alice's promotion"
    );
    page_shot(&browser, "/ui/agents", "tr.agent", "agents");
    assert!(browser.count("button.revoke") >= 1, "the admin can revoke");
    page_shot(&browser, "/ui/audit", "tr.audit", "audit");
    browser.goto(&format!("/ui/jobs/{v1_job}"));
    assert_eq!(
        browser.count("#rollback"),
        1,
        "the admin may roll back a completed job"
    );

    // Sign-out ends the session: its cookie no longer opens a page.
    let admin_session = browser.cookie("deployd_session");
    sign_out(&browser);
    let after = get_page(&addr, "/ui/jobs", Some(&admin_session));
    assert_eq!(after.status, 303, "{}", after.head);

    // A viewer: no button it cannot use, and the server refuses the POSTs anyway.
    let viewer = ok_json(&addr, &["token", "create", "carol", "--role", "viewer"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    sign_in(&browser, &viewer);
    assert_eq!(browser.attr("body", "data-role").as_deref(), Some("viewer"));
    assert_eq!(browser.count("#nav-audit"), 0, "no audit link for a viewer");
    page_shot(
        &browser,
        "/ui/promotions",
        &format!("tr.promotion[data-promotion-id=\"{promotion}\"]"),
        "promotions-viewer",
    );
    assert_eq!(
        browser.count("button.approve"),
        0,
        "a viewer cannot approve"
    );
    assert_eq!(browser.count("button.reject"), 0, "a viewer cannot reject");
    for job in [&v1_job, &v3_job] {
        browser.goto(&format!("/ui/jobs/{job}"));
        browser.wait_for_texts("#job-status", PAGE, "a job status", |t| !t.is_empty());
        assert_eq!(browser.count("#rollback"), 0, "no rollback for a viewer");
        assert_eq!(browser.count("#cancel"), 0, "no cancel for a viewer");
    }
    browser.screenshot("job-viewer");
    page_shot(&browser, "/ui/agents", "tr.agent", "agents-viewer");
    assert_eq!(browser.count("button.revoke"), 0, "a viewer cannot revoke");

    let session = browser.cookie("deployd_session");
    let csrf = browser
        .attr("input[name=\"csrf\"]", "value")
        .expect("the sign-out form carries the csrf token");
    let audit = get_page(&addr, "/ui/audit", Some(&session));
    assert_eq!(audit.status, 403, "the audit page is for admins");
    let forged = post_form(
        &addr,
        &format!("/ui/jobs/{v1_job}/rollback"),
        Some(&session),
        &[("csrf", &csrf), ("reason", "forged")],
    );
    assert_eq!(forged.status, 403, "{}\n{}", forged.head, forged.body);
    let forged = post_form(
        &addr,
        &format!("/ui/promotions/{promotion}/approve"),
        Some(&session),
        &[("csrf", &csrf)],
    );
    assert_eq!(forged.status, 403, "{}\n{}", forged.head, forged.body);

    // An admin session: a form without its CSRF field, or with another one, is refused;
    // the same session's sign-out with its own token is accepted.
    let login = post_form(&addr, "/ui/login", None, &[("token", ADMIN_TOKEN)]);
    assert_eq!(login.status, 303, "{}\n{}", login.head, login.body);
    let set_cookie = header(&login, "set-cookie").unwrap_or_default();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(
            set_cookie
                .to_ascii_lowercase()
                .contains(&attribute.to_ascii_lowercase()),
            "{set_cookie}"
        );
    }
    let admin = session_cookie(&login).expect("the sign-in sets deployd_session");
    let overview = get_page(&addr, "/ui/", Some(&admin));
    assert_eq!(overview.status, 200, "{}", overview.head);
    let csp = header(&overview, "content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let admin_csrf = csrf_of(&overview.body).expect("a signed-in page carries the csrf token");
    let no_csrf = post_form(
        &addr,
        &format!("/ui/jobs/{v1_job}/rollback"),
        Some(&admin),
        &[("reason", "no csrf")],
    );
    assert_eq!(no_csrf.status, 403, "{}\n{}", no_csrf.head, no_csrf.body);
    let wrong = post_form(
        &addr,
        &format!("/ui/jobs/{v1_job}/rollback"),
        Some(&admin),
        &[("csrf", &csrf), ("reason", "the viewer's token")],
    );
    assert_eq!(wrong.status, 403, "{}\n{}", wrong.head, wrong.body);
    let out = post_form(&addr, "/ui/logout", Some(&admin), &[("csrf", &admin_csrf)]);
    assert_eq!(out.status, 303, "{}\n{}", out.head, out.body);
    assert_eq!(header(&out, "location").as_deref(), Some("/ui/login"));

    // Nothing the refused POSTs asked for happened.
    let jobs = ok_json(&addr, &["jobs", "list", "--env", "staging"]);
    assert!(
        !jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["rollback_of"] == v1_job.as_str()),
        "{jobs:#}"
    );
    let still = ok_json(&addr, &["promotions", "show", &promotion]);
    assert_eq!(still["status"], "requested", "{still:#}");

    // Signed out at the end: the login page.
    sign_out(&browser);
    drop(browser);
    world.server.terminate();
}
