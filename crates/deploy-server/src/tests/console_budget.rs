//! Console tests: every list page renders with 1,000 jobs and the job page with a 1,000-task job, showing one page of rows (the release render-time figures come from `benches/console.rs`).

use std::time::Instant;

use axum::http::StatusCode;
use deploy_api::Role;

use super::Fixture;
use super::console::{send, sign_in};

#[path = "../../benches/console_world.rs"]
mod console_world;

/// Median wall-clock ms of `samples` GETs of `path` (cookie or bearer).
async fn median_ms(f: &Fixture, path: &str, cookie: Option<&str>, samples: usize) -> f64 {
    let mut ms = Vec::new();
    for _ in 0..samples {
        let start = Instant::now();
        let answer = match cookie {
            Some(c) => send(f, "GET", path, Some(c), None, &[]).await,
            None => {
                let (status, _, body) = f
                    .raw("GET", path, Some(f.token(Role::Viewer)), None, &[])
                    .await;
                assert_eq!(status, StatusCode::OK, "{path}");
                std::hint::black_box(body);
                ms.push(start.elapsed().as_secs_f64() * 1000.0);
                continue;
            }
        };
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

#[tokio::test]
#[expect(
    clippy::print_stdout,
    reason = "reports the medians beside their JSON baselines"
)]
async fn pages_render_a_thousand_jobs_and_a_thousand_task_job_one_page_at_a_time() {
    let f = Fixture::new().await;
    let big = console_world::seed(f.store.as_ref()).await;
    let signed = sign_in(&f, Role::Viewer).await;

    // What each page shows: the list is paged, the job page shows 100 tasks of 1,000.
    let job_page = signed.get(&format!("/ui/jobs/{big}")).await;
    assert_eq!(job_page.status, StatusCode::OK);
    assert_eq!(job_page.body.matches(r#"<tr class="task""#).count(), 100);
    let jobs = signed.get("/ui/jobs").await;
    assert_eq!(jobs.body.matches(r#"<tr class="job""#).count(), 50);
    let overview = signed.get("/ui/").await;
    assert_eq!(
        overview
            .body
            .matches(r#"<section class="environment""#)
            .count(),
        console_world::ENVIRONMENTS as usize
    );

    // The time goal (≤ 2x the JSON calls, < 50 ms) is measured in release by
    // `benches/console.rs`; tests assert no wall time. Here the medians are only
    // reported, beside their baselines, for the reader of the test output.
    let samples = 5;
    for (page, json) in [
        (format!("/ui/jobs/{big}"), format!("/api/v1/jobs/{big}")),
        ("/ui/jobs".to_owned(), "/api/v1/jobs?limit=50".to_owned()),
    ] {
        let page_ms = median_ms(&f, &page, Some(&signed.cookie), samples).await;
        let json_ms = median_ms(&f, &json, None, samples).await;
        println!("{page}: {page_ms:.1} ms (debug build); {json}: {json_ms:.1} ms");
    }
}
