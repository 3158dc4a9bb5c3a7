//! Webhooks against a real HTTP receiver on loopback: deliveries are signed (the test
//! recomputes the signature), retried until the receiver takes them, a 410 Gone turns the hook
//! off, a refused host is refused at registration, and the secret appears in no log, Redis
//! command or response.

use std::collections::HashMap;
use std::time::Duration;

use metasync_shared::domain::JobState;
use metasync_tests::webhook_receiver::{Mode, create_hook, expected_signature, receiver};
use metasync_tests::{TestApp, create_source, eventually};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const T: &str = "hooks";

fn secret() -> String {
    format!("whook-secret-{}", Uuid::now_v7().simple())
}

/// Syncs a fresh source to success.
async fn sync_once(app: &TestApp) {
    let source = create_source("create table t (id int primary key);")
        .await
        .unwrap();
    let resource = app.register(T, &source, &source).await.unwrap();
    let job = app.sync(T, resource.id).await.unwrap();
    let job = app
        .wait_for_job(T, job.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
}

async fn deliveries(app: &TestApp, hook: &str) -> Vec<Value> {
    let (status, _, page) = app
        .call(
            T,
            Method::GET,
            &format!("/v1/webhooks/{hook}/deliveries"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_and_retried_until_the_receiver_takes_them() {
    let app = metasync_tests::spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let (url, got) = receiver(Mode::FailTwice).await;
    let secret = secret();
    let hook = create_hook(
        &app,
        T,
        &url,
        &secret,
        &["job.succeeded", "catalog.changed", "job.failed"],
    )
    .await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    sync_once(&app).await;

    let done = eventually(Duration::from_secs(30), "both deliveries", || async {
        let items = deliveries(&app, &hook_id).await;
        Ok((items.len() == 2 && items.iter().all(|d| d["state"] == "succeeded")).then_some(items))
    })
    .await
    .unwrap();
    let mut events: Vec<&str> = done.iter().map(|d| d["event"].as_str().unwrap()).collect();
    events.sort_unstable();
    assert_eq!(events, ["catalog.changed", "job.succeeded"]);
    for delivery in &done {
        assert_eq!(delivery["attempts"], 3, "{delivery}");
        let codes: Vec<&Value> = delivery["attempt_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["status_code"])
            .collect();
        assert_eq!(codes, [&json!(500), &json!(500), &json!(200)], "{delivery}");
    }
    let changed = done
        .iter()
        .find(|d| d["event"] == "catalog.changed")
        .unwrap();
    assert_eq!(
        changed["payload"]["data"]["changes"]["table_added"], 1,
        "{changed}"
    );

    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 6, "{got:?}");
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for request in &got {
        *per_id.entry(&request.id).or_default() += 1;
        let expected = expected_signature(&secret, &request.id, &request.timestamp, &request.body);
        assert_eq!(request.signature, expected, "signature of {}", request.id);
        let sent: i64 = request.timestamp.parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - sent).abs() < 300);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert!(
            body["type"].is_string() && body["data"].is_object(),
            "{body}"
        );
    }
    assert!(per_id.values().all(|n| *n == 3), "{per_id:?}");
    assert_eq!(got.iter().filter(|r| r.status == 200).count(), 2);
    // A job event's body is built from the finished job when it is read: every attempt sends
    // the same bytes, and the API lists that body.
    for delivery in &done {
        let id = delivery["id"].as_str().unwrap();
        let bodies: Vec<&[u8]> = got
            .iter()
            .filter(|r| r.id == id)
            .map(|r| r.body.as_slice())
            .collect();
        assert!(
            bodies.windows(2).all(|b| b[0] == b[1]),
            "bodies of {id} differ"
        );
        let sent: Value = serde_json::from_slice(bodies[0]).unwrap();
        assert_eq!(sent, delivery["payload"], "{id}");
    }
    let succeeded = done.iter().find(|d| d["event"] == "job.succeeded").unwrap();
    let data = &succeeded["payload"]["data"];
    assert_eq!(data["state"], "succeeded", "{data}");
    assert_eq!(data["attempts"], 1, "{data}");
    assert!(data["stats"]["tables"].is_number(), "{data}");
    let summary = &changed["payload"]["data"];
    let counted: i64 = summary["changes"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_i64().unwrap())
        .sum();
    assert_eq!(summary["total"], counted, "{summary}");
    assert_eq!(summary["job_id"], data["job_id"], "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_gone_turns_the_hook_off_until_it_is_turned_on() {
    let app = metasync_tests::spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let (url, got) = receiver(Mode::Gone).await;
    let hook = create_hook(&app, T, &url, &secret(), &["job.succeeded", "job.failed"]).await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    sync_once(&app).await;

    let path = format!("/v1/webhooks/{hook_id}");
    let off = eventually(Duration::from_secs(30), "the hook turned off", || async {
        let (_, _, hook) = app.call(T, Method::GET, &path, None).await?;
        Ok((hook["enabled"] == false).then_some(hook))
    })
    .await
    .unwrap();
    assert!(
        off["disabled_reason"].as_str().unwrap().contains("410"),
        "{off}"
    );
    let items = deliveries(&app, &hook_id).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["state"], "dropped");
    assert_eq!(items[0]["attempts"], 1);
    assert_eq!(got.lock().unwrap().len(), 1);

    // Off: a later job makes no delivery.
    sync_once(&app).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(deliveries(&app, &hook_id).await.len(), 1);

    let (status, _, on) = app
        .call(T, Method::PATCH, &path, Some(json!({ "enabled": true })))
        .await
        .unwrap();
    assert_eq!((status, &on["enabled"]), (200, &json!(true)), "{on}");
    assert!(on["disabled_reason"].is_null(), "{on}");
    let (status, _, _) = app.call(T, Method::DELETE, &path, None).await.unwrap();
    assert_eq!(status, 204);
    let (status, _, _) = app.call(T, Method::GET, &path, None).await.unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn refused_targets_and_bad_definitions_are_a_422() {
    let app = metasync_tests::spawn_app().await.unwrap();
    let secret = secret();
    for (url, events, secret) in [
        // Link-local (cloud metadata), private, metadata names: refused by the policy.
        (
            "http://169.254.169.254/latest",
            json!(["job.failed"]),
            secret.as_str(),
        ),
        ("https://10.1.2.3/hook", json!(["job.failed"]), &secret),
        (
            "http://metadata.google.internal/",
            json!(["job.failed"]),
            &secret,
        ),
        (
            "http://[::ffff:169.254.169.254]/",
            json!(["job.failed"]),
            &secret,
        ),
        // Not an http(s) URL, or with credentials.
        ("ftp://example.com/hook", json!(["job.failed"]), &secret),
        (
            "http://user:pw@example.com/hook",
            json!(["job.failed"]),
            &secret,
        ),
        ("/relative", json!(["job.failed"]), &secret),
        // Bad events or secret.
        ("https://example.com/hook", json!([]), &secret),
        ("https://example.com/hook", json!(["job.exploded"]), &secret),
        ("https://example.com/hook", json!(["job.failed"]), "short"),
    ] {
        let body = json!({ "url": url, "events": events, "secret": secret });
        let (status, content_type, problem) = app
            .call(T, Method::POST, "/v1/webhooks", Some(body))
            .await
            .unwrap();
        assert_eq!(status, 422, "{url} {events}: {problem}");
        assert_eq!(content_type, "application/problem+json");
        assert!(!problem.to_string().contains(secret));
    }
    let (status, _, page) = app
        .call(T, Method::GET, "/v1/webhooks", None)
        .await
        .unwrap();
    assert_eq!((status, page["items"].as_array().unwrap().len()), (200, 0));
    // Strict query parameters, as every list.
    let (status, _, _) = app
        .call(T, Method::GET, "/v1/webhooks?state=x", None)
        .await
        .unwrap();
    assert_eq!(status, 400);
}

/// Real API and worker processes at trace level: the secret is in no log line, no Redis
/// command and no response, while deliveries are signed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_reaches_no_log_redis_command_or_response() {
    let app = metasync_tests::spawn_app_without_maintenance()
        .await
        .unwrap();
    let recorded = app
        .spawn_recorded("hooks", &[("RUST_LOG", "trace")])
        .await
        .unwrap();
    let (url, got) = receiver(Mode::FailTwice).await;
    let secret = secret();
    let http = reqwest::Client::new();
    let token = app.token(T);
    let mut seen = Vec::new();
    let response = http
        .post(format!("{}/v1/webhooks", recorded.base))
        .bearer_auth(&token)
        .json(&json!({ "url": url, "events": ["job.succeeded"], "secret": secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    seen.push(format!("{:?}", response.headers()));
    let hook: Value = response.json().await.unwrap();
    seen.push(hook.to_string());
    for path in [
        "/v1/webhooks".to_owned(),
        format!("/v1/webhooks/{}", hook["id"].as_str().unwrap()),
    ] {
        let text = http
            .get(format!("{}{path}", recorded.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        seen.push(text);
    }
    sync_once(&app).await;
    eventually(Duration::from_secs(30), "the delivery", || async {
        Ok(got
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.status == 200)
            .then_some(()))
    })
    .await
    .unwrap();
    let (logs, commands) = recorded.finish().await.unwrap();
    assert!(
        logs.len() > 50,
        "trace logging is on, yet {} lines",
        logs.len()
    );
    for (what, lines) in [
        ("log", &logs),
        ("redis command", &commands),
        ("response", &seen),
    ] {
        if let Some(line) = lines.iter().find(|l| l.contains(&secret)) {
            panic!("the secret is in a {what}: {line}");
        }
    }
}

/// A resource whose schedule stopped succeeding goes stale once: one `resource.stale` per last
/// success, found by the fleet duty (this app's API holds the maintenance lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_resource_is_announced_once() {
    let app = metasync_tests::spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let (url, got) = receiver(Mode::FailTwice).await;
    let hook = create_hook(&app, T, &url, &secret(), &["resource.stale"]).await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.register(T, "aging", &source).await.unwrap();
    // A daily schedule whose last success was three days ago, its next tick far ahead: stale by
    // its last success alone.
    sqlx::query(
        "update resources set sync_interval_seconds = 86400,
                last_succeeded_at = now() - interval '3 days',
                next_sync_at = now() + interval '1 day'
         where id = $1",
    )
    .bind(resource.id.uuid())
    .execute(&app.db)
    .await
    .unwrap();

    let delivered = eventually(
        Duration::from_secs(60),
        "a resource.stale delivery",
        || async {
            let items = deliveries(&app, &hook_id).await;
            Ok((items.len() == 1 && items[0]["state"] == "succeeded").then_some(items))
        },
    )
    .await
    .unwrap();
    let data = &delivered[0]["payload"]["data"];
    assert_eq!(delivered[0]["event"], "resource.stale");
    assert_eq!(data["resource_id"], resource.id.to_string(), "{data}");
    assert_eq!(data["name"], "aging", "{data}");

    // Later runs of the duty find it stale again, and notify nobody again.
    let notified: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select stale_notified_for from resources where id = $1")
            .bind(resource.id.uuid())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(notified.is_some());
    assert_eq!(
        metasync_shared::db::webhooks::record_stale(&app.db)
            .await
            .unwrap(),
        0
    );
    assert_eq!(deliveries(&app, &hook_id).await.len(), 1);
    assert_eq!(
        got.lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == 200)
            .count(),
        1
    );
}

/// Inserts a delivery of `hook` in `state`, made and (unless pending) finished `age` ago.
async fn old_delivery(app: &TestApp, hook: &str, id: Uuid, state: &str, age: &str) {
    sqlx::query(
        "insert into webhook_deliveries
             (id, tenant_id, webhook_id, event, payload, state, attempts, created_at, finished_at)
         values ($1, $2, $3::uuid, 'job.failed', '{}', $4, 1, now() - $5::interval,
                 case when $4 = 'pending' then null else now() - $5::interval end)",
    )
    .bind(id)
    .bind(T)
    .bind(hook)
    .bind(state)
    .bind(age)
    .execute(&app.db)
    .await
    .unwrap();
}

#[tokio::test]
async fn finished_deliveries_past_the_retention_are_pruned_but_each_hook_keeps_its_latest() {
    let first = metasync_tests::spawn_app().await.unwrap();
    let busy = create_hook(
        &first,
        T,
        "http://127.0.0.1:9/busy",
        &secret(),
        &["job.failed"],
    )
    .await;
    let quiet = create_hook(
        &first,
        T,
        "http://127.0.0.1:9/quiet",
        &secret(),
        &["job.failed"],
    )
    .await;
    let (busy, quiet) = (busy["id"].as_str().unwrap(), quiet["id"].as_str().unwrap());
    // In id order (newest last): an old pending delivery, 105 old finished ones, a recent one.
    let mut ids: Vec<Uuid> = (0..107).map(|_| Uuid::now_v7()).collect();
    ids.sort();
    old_delivery(&first, busy, ids[0], "pending", "2 days").await;
    for (i, id) in ids[1..106].iter().enumerate() {
        let state = ["succeeded", "failed", "dropped"][i % 3];
        old_delivery(&first, busy, *id, state, "2 days").await;
    }
    old_delivery(&first, busy, ids[106], "succeeded", "1 minute").await;
    // A quiet hook's few old deliveries are all among its latest.
    for _ in 0..3 {
        old_delivery(&first, quiet, Uuid::now_v7(), "failed", "2 days").await;
    }

    // The prune duty runs when a leader starts: a new API, with a one-day retention, takes
    // over from this one.
    let database_url = first.database_url.clone();
    drop(first);
    let app = metasync_tests::spawn_app_at(&database_url, metasync_tests::REDIS_URL, |args| {
        args.maintenance.webhook_delivery_retention = Duration::from_secs(86_400);
    })
    .await
    .unwrap();
    let left = eventually(Duration::from_secs(30), "old deliveries pruned", || async {
        let left: Vec<Uuid> = sqlx::query_scalar(
            "select id from webhook_deliveries where webhook_id = $1::uuid order by id",
        )
        .bind(busy)
        .fetch_all(&app.db)
        .await?;
        Ok((left.len() < 107).then_some(left))
    })
    .await
    .unwrap();
    // The busy hook keeps its latest 100 and its pending one; the six finished ones beyond
    // them are gone.
    let mut kept = vec![ids[0]];
    kept.extend_from_slice(&ids[7..]);
    assert_eq!(left, kept);
    let quiet_left: i64 =
        sqlx::query_scalar("select count(*) from webhook_deliveries where webhook_id = $1::uuid")
            .bind(quiet)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(quiet_left, 3);
}
