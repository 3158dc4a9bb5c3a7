//! Per-tenant limits and the HTTP server's timeouts, each met on purpose: a tenant that goes
//! over one gets a clear 4xx problem (with `Retry-After` where waiting helps) and loses nothing,
//! and other tenants do not notice.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use metasync_api::config::ServeArgs;
use metasync_tests::{REDIS_URL, TestApp, create_source, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn app_with(edit: impl FnOnce(&mut ServeArgs)) -> TestApp {
    spawn_app_with(REDIS_URL, edit).await.unwrap()
}

fn resource(name: &str, database: &str) -> Value {
    json!({
        "name": name, "kind": "postgres", "host": "127.0.0.1", "port": 5432,
        "database": database, "username": "root", "password": "unused"
    })
}

/// Sends a request and returns the status, the `Retry-After` header and the body.
async fn send(
    app: &TestApp,
    tenant: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut request = app
        .http
        .request(method, app.url(path))
        .bearer_auth(app.token(tenant));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{body}"
        );
    }
    (status, retry_after, body)
}

#[tokio::test]
async fn a_tenant_over_its_write_rate_gets_429_with_retry_after_and_others_do_not() {
    let app = app_with(|args| {
        args.quotas.writes_per_minute = NonZeroU32::new(8).unwrap(); // a burst of 2
    })
    .await;
    for i in 0..2 {
        let (status, _, body) = send(
            &app,
            "acme",
            Method::POST,
            "/v1/resources",
            Some(resource(&format!("r{i}"), "x")),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, retry_after, body) = send(
        &app,
        "acme",
        Method::POST,
        "/v1/resources",
        Some(resource("r2", "x")),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=8).contains(&retry_after), "{retry_after}");
    assert!(
        body["detail"].as_str().unwrap().contains("8 per minute"),
        "{body}"
    );
    // Another tenant is not affected; nothing of acme's third request was stored.
    let (status, _, _) = send(
        &app,
        "globex",
        Method::POST,
        "/v1/resources",
        Some(resource("r0", "x")),
    )
    .await;
    assert_eq!(status, 201);
    let (_, _, list) = send(&app, "acme", Method::GET, "/v1/resources", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn resources_and_unfinished_jobs_are_capped_per_tenant() {
    let app = app_with(|args| {
        args.quotas.max_resources = 3;
        args.quotas.max_active_jobs = 2;
    })
    .await;
    let source = create_source("").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, _, body) = send(
            &app,
            "acme",
            Method::POST,
            "/v1/resources",
            Some(resource(&format!("r{i}"), &source)),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let (status, _, body) = send(
        &app,
        "acme",
        Method::POST,
        "/v1/resources",
        Some(resource("r3", &source)),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("METASYNC_MAX_RESOURCES"),
        "{body}"
    );

    // No worker runs, so jobs stay unfinished: two fit, the third does not.
    let mut jobs = Vec::new();
    for id in &ids[..2] {
        let (status, _, body) = sync(&app, id).await;
        assert_eq!(status, 202, "{body}");
        jobs.push(body["id"].as_str().unwrap().to_owned());
    }
    let (status, retry_after, body) = sync(&app, &ids[2]).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some());
    // A batch counts every job it would create: nothing fits, so the id is refused (and no
    // batch is made); every resource at once is all or nothing, so a 429.
    let (status, _, body) = send(
        &app,
        "acme",
        Method::POST,
        "/v1/syncs",
        Some(json!({ "resource_ids": [ids[2]] })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["batch_id"], Value::Null, "{body}");
    assert_eq!(body["results"][0]["outcome"], "refused", "{body}");
    let (status, retry_after, body) = send(&app, "acme", Method::POST, "/v1/syncs", None).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some());
    // Cancelling one frees its place.
    let (status, _, body) = send(
        &app,
        "acme",
        Method::POST,
        &format!("/v1/jobs/{}/cancel", jobs[0]),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = sync(&app, &ids[2]).await;
    assert_eq!(status, 202, "{body}");
}

/// Asks acme for a sync of one resource.
async fn sync(app: &TestApp, id: &str) -> (u16, Option<String>, Value) {
    let path = format!("/v1/resources/{id}/sync");
    send(app, "acme", Method::POST, &path, None).await
}

/// Registers `n` resources of `tenant` and returns their ids.
async fn register_many(app: &TestApp, tenant: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let resource = app
            .register(tenant, &format!("r{i}"), "unused")
            .await
            .unwrap();
        ids.push(resource.id.to_string());
    }
    ids
}

/// The tenant's unfinished jobs, from the catalog.
async fn active_jobs(app: &TestApp, tenant: &str) -> i64 {
    sqlx::query_scalar(
        "select count(*) from jobs
         where tenant_id = $1 and state in ('queued', 'running', 'retrying')",
    )
    .bind(tenant)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_batch_over_the_active_jobs_cap_enqueues_what_fits_and_refuses_the_rest() {
    let app = app_with(|args| args.quotas.max_active_jobs = 3).await;
    let ids = register_many(&app, "acme", 5).await;
    // No worker runs, so jobs stay unfinished: one place taken, two left.
    let (status, _, kept) = sync(&app, &ids[0]).await;
    assert_eq!(status, 202, "{kept}");
    let unknown = uuid::Uuid::now_v7().to_string();
    let requested = [
        &ids[0], &ids[1], &unknown, &ids[2], &ids[3], &ids[4], &ids[1],
    ];
    let (status, _, body) = send(
        &app,
        "acme",
        Method::POST,
        "/v1/syncs",
        Some(json!({ "resource_ids": requested })),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["jobs"], 2, "{body}");
    let results = body["results"].as_array().unwrap();
    let outcomes: Vec<(&str, Option<&str>)> = results
        .iter()
        .map(|r| (r["outcome"].as_str().unwrap(), r["reason"].as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("deduplicated", None),
            ("enqueued", None),
            ("not_found", None),
            ("enqueued", None),
            ("refused", Some("active_jobs_quota")),
            ("refused", Some("active_jobs_quota")),
            ("enqueued", None),
        ],
        "{body}"
    );
    for (result, id) in results.iter().zip(requested) {
        assert_eq!(result["resource_id"].as_str(), Some(id.as_str()), "{body}");
    }
    assert_eq!(results[0]["job_id"], kept["id"]);
    assert_eq!(results[1]["job_id"], results[6]["job_id"], "{body}");
    assert!(results[4]["job_id"].is_null() && results[5]["job_id"].is_null());
    assert!(results[2].get("reason").is_none(), "{body}");
    assert_eq!(active_jobs(&app, "acme").await, 3);

    // Every resource at once is all or nothing: two more do not fit, so none is enqueued.
    let (status, retry_after, body) = send(&app, "acme", Method::POST, "/v1/syncs", None).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some());
    assert_eq!(active_jobs(&app, "acme").await, 3);
    // A place freed is taken by the next named resource that asks.
    let job = kept["id"].as_str().unwrap();
    let (status, _, body) = send(
        &app,
        "acme",
        Method::POST,
        &format!("/v1/jobs/{job}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = send(
        &app,
        "acme",
        Method::POST,
        "/v1/syncs",
        Some(json!({ "resource_ids": [&ids[3], &ids[4]] })),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["results"][0]["outcome"], "enqueued", "{body}");
    assert_eq!(body["results"][1]["outcome"], "refused", "{body}");
    assert_eq!(active_jobs(&app, "acme").await, 3);
}

#[tokio::test]
async fn concurrent_batches_never_take_a_tenant_past_the_active_jobs_cap() {
    const CAP: i64 = 10;
    let app = app_with(|args| args.quotas.max_active_jobs = CAP as u32).await;
    let ids = register_many(&app, "acme", 40).await;
    // Eight batches of five different resources at once: without the per-tenant lock each
    // counts no active job and all 40 are enqueued.
    let batches = ids.chunks(5).map(|chunk| {
        send(
            &app,
            "acme",
            Method::POST,
            "/v1/syncs",
            Some(json!({ "resource_ids": chunk })),
        )
    });
    let answers = futures::future::join_all(batches).await;
    let mut enqueued = 0;
    let mut refused = 0;
    for (status, _, body) in &answers {
        assert!([200, 202].contains(status), "{body}");
        for result in body["results"].as_array().unwrap() {
            match result["outcome"].as_str().unwrap() {
                "enqueued" => enqueued += 1,
                "refused" => refused += 1,
                other => panic!("{other}: {body}"),
            }
        }
    }
    assert_eq!((enqueued, refused), (CAP, 40 - CAP));
    assert_eq!(active_jobs(&app, "acme").await, CAP);
}

#[tokio::test]
async fn long_polls_are_capped_per_tenant() {
    let app = app_with(|args| args.quotas.max_waiters = 2).await;
    let source = create_source("").await.unwrap();
    let (_, _, body) = send(
        &app,
        "acme",
        Method::POST,
        "/v1/resources",
        Some(resource("r", &source)),
    )
    .await;
    let rid = body["id"].as_str().unwrap().to_owned();
    let (_, _, job) = sync(&app, &rid).await;
    let job_id = job["id"].as_str().unwrap().to_owned();
    // Two waiters hold the places (no worker: the job stays queued). A waiter that meets a
    // probe's momentary place asks again, so both end up holding one.
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let (http, url, token) = (
                app.http.clone(),
                app.url(&format!("/v1/jobs/{job_id}?wait=30")),
                app.token("acme"),
            );
            tokio::spawn(async move {
                loop {
                    let status = http
                        .get(&url)
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap()
                        .status();
                    if status != 429 {
                        return status.as_u16();
                    }
                }
            })
        })
        .collect();
    // So a third long-poll is refused once they are in (a probe of `wait=0` holds its place
    // only for an instant).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, retry_after, body) = send(
            &app,
            "acme",
            Method::GET,
            &format!("/v1/jobs/{job_id}?wait=0"),
            None,
        )
        .await;
        if status == 429 {
            assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(Instant::now() < deadline, "the long-poll cap never applied");
        tokio::task::yield_now().await;
    }
    // Another tenant's reads are unaffected, and a plain read needs no place.
    let (status, _, _) = send(&app, "globex", Method::GET, "/v1/resources", None).await;
    assert_eq!(status, 200);
    let (status, _, _) = send(
        &app,
        "acme",
        Method::GET,
        &format!("/v1/jobs/{job_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // The job's end wakes the waiters and gives their places back.
    send(
        &app,
        "acme",
        Method::POST,
        &format!("/v1/jobs/{job_id}/cancel"),
        None,
    )
    .await;
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap(), 200);
    }
    let (status, _, _) = send(
        &app,
        "acme",
        Method::GET,
        &format!("/v1/jobs/{job_id}?wait=1"),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn schedules_may_not_fire_more_often_than_the_minimum_interval() {
    let app = app_with(|args| args.quotas.min_schedule_interval = Duration::from_secs(300)).await;
    let cases = [
        (json!({ "interval_seconds": 1 }), 422),
        (json!({ "interval_seconds": 299 }), 422),
        (json!({ "cron": "* * * * *" }), 422),
        (json!({ "cron": "* * * * * *" }), 422),
        (json!({ "cron": "0,1 3 * * *" }), 422),
        (json!({ "interval_seconds": 300 }), 201),
        (json!({ "cron": "0 3 * * *" }), 201),
    ];
    for (i, (schedule, expected)) in cases.into_iter().enumerate() {
        let mut body = resource(&format!("r{i}"), "x");
        body["schedule"] = schedule.clone();
        let (status, _, answer) =
            send(&app, "acme", Method::POST, "/v1/resources", Some(body)).await;
        assert_eq!(status, expected, "{schedule}: {answer}");
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_after_the_header_timeout() {
    let app = app_with(|args| args.quotas.header_timeout = Duration::from_secs(1)).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let closes_within = |partial: &'static [u8]| {
        let addr = addr.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            stream.write_all(partial).await.unwrap();
            let started = Instant::now();
            let mut buf = [0u8; 1024];
            // The server either closes (0) or answers a timeout; either way within the bound.
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            assert!(read.is_ok(), "still open after 5 s");
            started.elapsed()
        }
    };
    // Connected and silent; half a header; a complete request then an idle keep-alive.
    assert!(closes_within(b"").await < Duration::from_secs(4));
    assert!(closes_within(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await < Duration::from_secs(4));
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(
        matches!(idle, Ok(Ok(0) | Err(_))),
        "the idle keep-alive connection stayed open"
    );
}
