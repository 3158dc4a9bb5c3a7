//! The audit log from outside: every change a caller makes is recorded with its subject, in the
//! transaction of the change; only admins read it, only their own tenant's, page by page; and
//! it is pruned with the jobs.

use std::time::Duration;

use metasync_api::auth::Role;
use metasync_shared::db::audit::AuditEvent;
use metasync_tests::webhook_receiver::create_hook;
use metasync_tests::{REDIS_URL, eventually, spawn_app, spawn_app_with, spawn_app_with_urls};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const TENANT: &str = "acme";
const PLATFORM_SECRET: &str = "platform-secret-0123456789abcdef-0123456789";
const PASSWORD: &str = "canary-password-5f0e1d";

fn resource_body(name: &str) -> Value {
    json!({
        "name": name, "kind": "postgres", "host": "127.0.0.1", "port": 5432,
        "database": "shop", "username": "reader", "password": PASSWORD
    })
}

/// `GET /v1/audit{query}` as an admin of `tenant`; expects 200.
async fn audit_page(
    app: &metasync_tests::TestApp,
    tenant: &str,
    query: &str,
) -> (Vec<AuditEvent>, Option<String>) {
    let (status, _, body) = app
        .call(tenant, Method::GET, &format!("/v1/audit{query}"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{query}: {body}");
    let items = serde_json::from_value(body["items"].clone()).unwrap();
    (items, body["next_cursor"].as_str().map(str::to_owned))
}

fn action(event: &AuditEvent) -> String {
    serde_json::to_value(event.action)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_change_is_recorded_with_who_made_it() {
    let app = spawn_app_with(REDIS_URL, |args| {
        args.internal.internal_api_keys = Some(format!("platform:{PLATFORM_SECRET}"));
    })
    .await
    .unwrap();
    let alice = app.token_for("alice", Role::Admin, TENANT);
    let olga = app.token_for("olga", Role::Operator, TENANT);
    let call = |token: &str, method: Method, path: String, body: Option<Value>| {
        let (app, token) = (&app, token.to_owned());
        async move { app.call_with(&token, method, &path, body).await.unwrap() }
    };

    let (status, _, shop) = call(
        &alice,
        Method::POST,
        "/v1/resources".into(),
        Some(resource_body("shop")),
    )
    .await;
    assert_eq!(status, 201, "{shop}");
    let shop_id = shop["id"].as_str().unwrap().to_owned();
    let (status, _, body) = call(
        &alice,
        Method::PATCH,
        format!("/v1/resources/{shop_id}"),
        Some(json!({ "name": "shop-eu", "password": "a-new-password", "port": 5432 })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, job) = call(
        &olga,
        Method::POST,
        format!("/v1/resources/{shop_id}/sync"),
        None,
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();
    // A sync that finds the active job changes nothing, and is not recorded.
    let (status, _, _) = call(
        &olga,
        Method::POST,
        format!("/v1/resources/{shop_id}/sync"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = call(
        &olga,
        Method::POST,
        format!("/v1/jobs/{job_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, retried) = call(
        &olga,
        Method::POST,
        format!("/v1/jobs/{job_id}/retry"),
        None,
    )
    .await;
    assert_eq!(status, 202, "{retried}");
    let (status, _, blog) = call(
        &alice,
        Method::POST,
        "/v1/resources".into(),
        Some(resource_body("blog")),
    )
    .await;
    assert_eq!(status, 201, "{blog}");
    let blog_id = blog["id"].as_str().unwrap().to_owned();
    // shop has an active job (the retry), so the batch holds blog's job alone.
    let (status, _, batch) = call(&olga, Method::POST, "/v1/syncs".into(), None).await;
    assert_eq!(status, 202, "{batch}");
    let (status, _, _) = call(
        &alice,
        Method::DELETE,
        format!("/v1/resources/{blog_id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, pushed) = call(
        PLATFORM_SECRET,
        Method::PUT,
        format!("/internal/v1/tenants/{TENANT}/resources/ext-1"),
        Some(resource_body("pushed")),
    )
    .await;
    assert_eq!(status, 201, "{pushed}");

    let (events, next) = audit_page(&app, TENANT, "").await;
    assert_eq!(next, None);
    let seen: Vec<(String, &str, String)> = events
        .iter()
        .rev()
        .map(|e| (action(e), e.subject.as_str(), e.object_id.to_string()))
        .collect();
    let batch_id = batch["batch_id"].as_str().unwrap().to_owned();
    let pushed_id = pushed["id"].as_str().unwrap().to_owned();
    let expected = [
        ("resource.create", "alice", &shop_id),
        ("resource.update", "alice", &shop_id),
        ("resource.sync", "olga", &shop_id),
        ("job.cancel", "olga", &job_id),
        ("job.retry", "olga", &job_id),
        ("resource.create", "alice", &blog_id),
        ("batch.create", "olga", &batch_id),
        ("resource.delete", "alice", &blog_id),
        ("resource.create", "internal-key:platform", &pushed_id),
    ];
    let expected: Vec<(String, &str, String)> = expected
        .iter()
        .map(|(a, s, o)| ((*a).to_owned(), *s, (*o).clone()))
        .collect();
    assert_eq!(seen, expected);

    // Newest first, with non-secret details.
    assert!(
        events
            .windows(2)
            .all(|w| (w[0].at, w[0].id) > (w[1].at, w[1].id))
    );
    let by_action = |name: &str| {
        events
            .iter()
            .find(|e| action(e) == name)
            .unwrap()
            .details
            .0
            .clone()
    };
    assert_eq!(by_action("resource.update").fields, ["name", "password"]);
    assert_eq!(
        by_action("resource.sync").job_id.unwrap().to_string(),
        job_id
    );
    assert_eq!(
        by_action("job.cancel").outcome.as_deref(),
        Some("cancelled")
    );
    assert_eq!(
        by_action("job.retry").job_id.unwrap().to_string(),
        retried["id"].as_str().unwrap()
    );
    assert_eq!(by_action("batch.create").jobs, Some(1));
    assert_eq!(by_action("resource.delete").name.as_deref(), Some("blog"));
    assert_eq!(events[0].details.0.external_id.as_deref(), Some("ext-1"));
    let everything = serde_json::to_string(&events).unwrap();
    assert!(!everything.contains(PASSWORD) && !everything.contains("a-new-password"));
    assert!(!everything.contains(PLATFORM_SECRET));

    // Filters, and unknown parameters ignored like on the other list routes.
    let (only, _) = audit_page(&app, TENANT, "?action=resource.update").await;
    assert_eq!(only.len(), 1);
    let (about_shop, _) = audit_page(&app, TENANT, &format!("?object_id={shop_id}")).await;
    let actions: Vec<String> = about_shop.iter().rev().map(action).collect();
    assert_eq!(
        actions,
        ["resource.create", "resource.update", "resource.sync"]
    );
    let (none, _) = audit_page(&app, TENANT, "?since=2999-01-01T00:00:00Z").await;
    assert!(none.is_empty());
    let (all, _) = audit_page(&app, TENANT, "?since=2000-01-01T00:00:00Z").await;
    assert_eq!(all.len(), events.len());
    for bad in [
        "?action=resource.explode",
        "?object_id=nope",
        "?since=yesterday",
        "?cursor=forged",
        "?limit=0",
        "?since=2000-01-01T00:00:00Z&colour=blue",
    ] {
        let (status, content_type, body) = app
            .call(TENANT, Method::GET, &format!("/v1/audit{bad}"), None)
            .await
            .unwrap();
        assert_eq!(
            (status, content_type.as_str()),
            (400, "application/problem+json"),
            "{bad}: {body}"
        );
    }
}

#[tokio::test]
async fn a_change_that_fails_leaves_no_record() {
    let app = spawn_app().await.unwrap();
    app.create_resource(TENANT, resource_body("shop"))
        .await
        .unwrap();
    let blog = app
        .create_resource(TENANT, resource_body("blog"))
        .await
        .unwrap();
    // The name is taken: the update rolls back, and its record with it.
    let (status, _, _) = app
        .call(
            TENANT,
            Method::PATCH,
            &format!("/v1/resources/{}", blog.id),
            Some(json!({ "name": "shop" })),
        )
        .await
        .unwrap();
    assert_eq!(status, 409);
    let (status, _, _) = app
        .call(
            TENANT,
            Method::POST,
            "/v1/resources",
            Some(resource_body("shop")),
        )
        .await
        .unwrap();
    assert_eq!(status, 409);
    let (events, _) = audit_page(&app, TENANT, "").await;
    let actions: Vec<String> = events.iter().map(action).collect();
    assert_eq!(actions, ["resource.create", "resource.create"]);
}

#[tokio::test]
async fn only_admins_read_the_audit_log_and_only_their_tenants() {
    let app = spawn_app().await.unwrap();
    let shop = app
        .create_resource(TENANT, resource_body("shop"))
        .await
        .unwrap();
    for role in [Role::Viewer, Role::Operator] {
        let token = app.token_for("someone", role, TENANT);
        let (status, content_type, body) = app
            .call_with(&token, Method::GET, "/v1/audit", None)
            .await
            .unwrap();
        assert_eq!(
            (status, content_type.as_str()),
            (403, "application/problem+json"),
            "{role:?}: {body}"
        );
        assert!(body["detail"].as_str().unwrap().contains("audit"), "{body}");
    }
    let fleet = app
        .jwt
        .issue("ops", Role::Fleet, None, Duration::from_secs(600))
        .unwrap();
    let (status, _, _) = app
        .call_with(&fleet, Method::GET, "/v1/audit", None)
        .await
        .unwrap();
    assert_eq!(status, 403);
    let anonymous = app.http.get(app.url("/v1/audit")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // Another tenant's admin sees none of it, even by the object's id.
    let (mine, _) = audit_page(&app, TENANT, "").await;
    assert_eq!(mine.len(), 1);
    let (theirs, _) = audit_page(&app, "globex", "").await;
    assert!(theirs.is_empty());
    let (theirs, _) = audit_page(&app, "globex", &format!("?object_id={}", shop.id)).await;
    assert!(theirs.is_empty());
    // Nor can a cursor from this tenant's pages show it.
    app.create_resource(TENANT, resource_body("blog"))
        .await
        .unwrap();
    let (_, cursor) = audit_page(&app, TENANT, "?limit=1").await;
    let (theirs, _) = audit_page(&app, "globex", &format!("?cursor={}", cursor.unwrap())).await;
    assert!(theirs.is_empty());
}

#[tokio::test]
async fn the_audit_log_pages_newest_first() {
    let app = spawn_app().await.unwrap();
    let mut created = Vec::new();
    for n in 0..7 {
        let resource = app
            .create_resource(TENANT, resource_body(&format!("r{n}")))
            .await
            .unwrap();
        created.push(resource.id.uuid());
    }
    let mut seen: Vec<Uuid> = Vec::new();
    let mut query = "?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let (items, next) = audit_page(&app, TENANT, &query).await;
        pages += 1;
        seen.extend(items.iter().map(|e| e.object_id));
        match next {
            Some(cursor) => query = format!("?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(seen, created);
    // Filters and pages together.
    let (first, next) = audit_page(&app, TENANT, "?limit=2&action=resource.create").await;
    let (second, _) = audit_page(
        &app,
        TENANT,
        &format!("?limit=2&action=resource.create&cursor={}", next.unwrap()),
    )
    .await;
    let ids: Vec<Uuid> = first.iter().chain(&second).map(|e| e.object_id).collect();
    assert_eq!(ids, created[..4]);
}

#[tokio::test]
async fn the_audit_log_is_kept_as_long_as_jobs_are() {
    let first = spawn_app().await.unwrap();
    first
        .create_resource(TENANT, resource_body("shop"))
        .await
        .unwrap();
    // An event from before the retention (30 days in the tests).
    sqlx::query(
        "insert into audit_events (id, tenant_id, subject, action, object_type, object_id, at)
         values ($1, $2, 'old', 'resource.delete', 'resource', $3, now() - interval '31 days')",
    )
    .bind(Uuid::now_v7())
    .bind(TENANT)
    .bind(Uuid::now_v7())
    .execute(&first.db)
    .await
    .unwrap();
    let database_url = first.database_url.clone();
    // The prune duty runs when a leader starts: a new API takes over from this one.
    drop(first);
    let app = spawn_app_with_urls(&database_url, REDIS_URL).await.unwrap();
    eventually(Duration::from_secs(30), "the old event pruned", || async {
        let subjects: Vec<String> =
            sqlx::query_scalar("select subject from audit_events order by at")
                .fetch_all(&app.db)
                .await?;
        Ok((subjects == ["test"]).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn webhook_changes_are_recorded_without_the_secret() {
    let app = spawn_app().await.unwrap();
    let secret = format!("whook-audit-secret-{}", Uuid::now_v7().simple());
    let url = "http://127.0.0.1:9/hooks/receiver-token-in-path";
    let hook = create_hook(&app, TENANT, url, &secret, &["job.failed"]).await;
    let id = hook["id"].as_str().unwrap().to_owned();
    let (status, _, body) = app
        .call(
            TENANT,
            Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(json!({ "enabled": false })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = app
        .call(TENANT, Method::DELETE, &format!("/v1/webhooks/{id}"), None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    // Changes that did not happen are not recorded.
    let (status, _, _) = app
        .call(TENANT, Method::DELETE, &format!("/v1/webhooks/{id}"), None)
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _, _) = app
        .call(
            TENANT,
            Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": url, "events": ["job.failed"], "secret": "short" })),
        )
        .await
        .unwrap();
    assert_eq!(status, 422);

    let (events, _) = audit_page(&app, TENANT, "").await;
    let recorded: Vec<(String, Value)> = events
        .iter()
        .map(|e| {
            assert_eq!(e.object_id.to_string(), id);
            assert_eq!(e.subject, "test");
            (action(e), serde_json::to_value(&e.details.0).unwrap())
        })
        .collect();
    assert_eq!(
        recorded,
        [
            ("webhook.delete".into(), json!({ "host": "127.0.0.1" })),
            (
                "webhook.update".into(),
                json!({ "fields": ["enabled"], "enabled": false })
            ),
            ("webhook.create".into(), json!({ "host": "127.0.0.1" })),
        ]
    );
    let (_, _, raw) = app
        .call(TENANT, Method::GET, "/v1/audit", None)
        .await
        .unwrap();
    assert_eq!(raw["items"][0]["object_type"], "webhook", "{raw}");
    let raw = raw.to_string();
    assert!(
        !raw.contains(&secret) && !raw.contains("receiver-token"),
        "{raw}"
    );
    // Filtered by the hook, as for any object.
    let (by_object, _) = audit_page(&app, TENANT, &format!("?object_id={id}")).await;
    assert_eq!(by_object.len(), 3);
}
