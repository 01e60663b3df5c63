//! Console tests: the audit page (admin only, newest first, paged by sequence number, filtered, bodies escaped inside `<details>`).

use axum::http::StatusCode;
use deploy_api::Role;
use serde_json::json;

use super::Fixture;
use super::console::sign_in;

/// The sequence numbers of a page's rows, in order.
fn seqs(html: &str) -> Vec<u64> {
    html.split(r#"<tr class="audit" data-seq=""#)
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
        .collect()
}

/// The `href` of the page's "Older" link, unescaped.
fn older_link(html: &str) -> Option<String> {
    let start = html.find(r#"<a rel="next" href=""#)? + r#"<a rel="next" href=""#.len();
    let end = html[start..].find('"')?;
    Some(
        html[start..start + end]
            .replace("&#38;", "&")
            .replace("&amp;", "&"),
    )
}

#[tokio::test]
async fn only_an_admin_sees_the_audit_log() {
    let f = Fixture::new().await;
    f.env_named("dev", json!({})).await;
    for role in [Role::Viewer, Role::Deployer] {
        let signed = sign_in(&f, role).await;
        let page = signed.get("/ui/audit").await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        assert!(!page.body.contains(r#"class="audit""#));
        let overview = signed.get("/ui/").await;
        assert!(!overview.body.contains("nav-audit"));
    }
    let admin = sign_in(&f, Role::Admin).await;
    let page = admin.get("/ui/audit").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"id="nav-audit""#));
    assert!(page.body.contains("/api/v1/environments"), "{}", page.body);
}

#[tokio::test]
async fn the_audit_log_pages_newest_first_and_filters() {
    let f = Fixture::new().await;
    let mut ids = Vec::new();
    for i in 0..55 {
        let env = f.env_named(&format!("env-{i:02}"), json!({})).await;
        ids.push(env["id"].as_str().unwrap().to_owned());
    }
    let admin = sign_in(&f, Role::Admin).await;
    let first = admin.get("/ui/audit").await;
    assert_eq!(first.status, StatusCode::OK);
    let page1 = seqs(&first.body);
    assert_eq!(page1.len(), 50, "{}", first.body);
    assert!(
        page1.windows(2).all(|w| w[0] > w[1]),
        "newest first: {page1:?}"
    );
    let next = older_link(&first.body).expect("an older page");
    assert_eq!(next, format!("/ui/audit?before={}", page1[49]));
    let second = admin.get(&next).await;
    let page2 = seqs(&second.body);
    assert!(page2.len() >= 5, "{page2:?}");
    assert!(page2.iter().all(|s| *s < page1[49]), "{page2:?}");
    assert!(older_link(&second.body).is_none());

    // By entity: the one write that created env-07; the filter stays in the form.
    let filtered = admin.get(&format!("/ui/audit?entity={}", ids[7])).await;
    assert_eq!(seqs(&filtered.body).len(), 1, "{}", filtered.body);
    assert!(filtered.body.contains(&format!(r#"value="{}""#, ids[7])));
    // By actor, paged with the filter kept.
    let by_admin = admin.get("/ui/audit?actor=bootstrap-admin&entity=").await;
    assert_eq!(by_admin.status, StatusCode::OK);
    let next = older_link(&by_admin.body).expect("an older page of admin's writes");
    assert!(
        next.starts_with("/ui/audit?actor=bootstrap-admin&before="),
        "{next}"
    );
    let nobody = admin.get("/ui/audit?actor=nobody").await;
    assert!(seqs(&nobody.body).is_empty());
    assert_eq!(
        admin.get("/ui/audit?before=x").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn audit_bodies_are_escaped_and_folded() {
    let f = Fixture::new().await;
    let env = f.env_named("dev", json!({})).await;
    let env_id = env["id"].as_str().unwrap();
    let mut body = super::target_body("host-1");
    body["labels"] = json!({"note": "<b>x</b>"});
    let target = f
        .ok(
            "POST",
            &format!("/api/v1/environments/{env_id}/targets"),
            Role::Admin,
            Some(body),
        )
        .await;
    let admin = sign_in(&f, Role::Admin).await;
    let page = admin
        .get(&format!(
            "/ui/audit?entity={}",
            target["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(seqs(&page.body).len(), 1, "{}", page.body);
    assert!(page.body.contains("<details>"), "{}", page.body);
    assert!(
        page.body.contains("&#60;b&#62;x&#60;/b&#62;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<b>x</b>"));
}
