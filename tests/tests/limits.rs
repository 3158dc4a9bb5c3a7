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
        let (status, _, body) = send(
            &app,
            "acme",
            Method::POST,
            &format!("/v1/resources/{id}/sync"),
            None,
        )
        .await;
        assert_eq!(status, 202, "{body}");
        jobs.push(body["id"].as_str().unwrap().to_owned());
    }
    let (status, retry_after, body) = send(
        &app,
        "acme",
        Method::POST,
        &format!("/v1/resources/{}/sync", ids[2]),
        None,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some());
    // A batch counts every job it would create.
    let (status, _, body) = send(
        &app,
        "acme",
        Method::POST,
        "/v1/syncs",
        Some(json!({ "resource_ids": [ids[2]] })),
    )
    .await;
    assert_eq!(status, 429, "{body}");
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
    let (status, _, body) = send(
        &app,
        "acme",
        Method::POST,
        &format!("/v1/resources/{}/sync", ids[2]),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
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
    let (_, _, job) = send(
        &app,
        "acme",
        Method::POST,
        &format!("/v1/resources/{rid}/sync"),
        None,
    )
    .await;
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
