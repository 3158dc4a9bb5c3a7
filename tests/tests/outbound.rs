//! The outbound host policy from outside: a tenant cannot point a resource at loopback (in any
//! spelling), private or link-local addresses, metadata services, a Unix socket or a list of
//! hosts, neither when registering nor by changing the row behind the API's back, and a worker
//! refuses before it dials. Every host here is a literal or a name this machine answers itself
//! (`localhost`, metadata names refused before resolving), so no DNS query leaves the machine.

use std::sync::atomic::Ordering;
use std::time::Duration;

use metasync_tests::assert::assert_job;
use metasync_tests::{REDIS_URL, counting_listener, create_source, spawn_app_with};
use reqwest::Method;
use serde_json::json;

const TENANT: &str = "acme";

#[tokio::test]
async fn registration_refuses_every_spelling_of_a_denied_host() {
    // The production default: nothing but the public internet.
    let app = spawn_app_with(REDIS_URL, |args| {
        args.outbound.outbound_allow = String::new();
    })
    .await
    .unwrap();
    let refused = [
        "127.0.0.1",
        "localhost",
        "0.0.0.0",
        "::1",
        "[::1]",
        "::ffff:127.0.0.1",
        "2130706433",
        "0x7f000001",
        "127.1",
        "169.254.169.254",
        "10.0.0.1",
        "192.168.1.10",
        "100.64.0.1",
        "fd00:ec2::254",
        "metadata.google.internal",
        "/var/run/postgresql",
        "db1,db2",
        "db:5432",
        "[::1]:5432",
    ];
    for (i, host) in refused.iter().enumerate() {
        let body = json!({
            "name": format!("r{i}"), "kind": "postgres", "host": host, "port": 5432,
            "database": "x", "username": "u", "password": "p",
        });
        let (status, content_type, problem) = app
            .call(TENANT, Method::POST, "/v1/resources", Some(body))
            .await
            .unwrap();
        assert_eq!(status, 422, "{host}: {problem}");
        assert_eq!(content_type, "application/problem+json");
        // One message per class, whatever the host: nothing about what is behind it.
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("outbound policy")
                || detail.contains("one host name")
                || detail.contains("the port in `port`"),
            "{host}: {detail}"
        );
    }
    // A public address registers (it is never dialled here: no worker runs).
    let body = json!({
        "name": "public", "kind": "postgres", "host": "93.184.215.14", "port": 5432,
        "database": "x", "username": "u", "password": "p",
    });
    let (status, _, problem) = app
        .call(TENANT, Method::POST, "/v1/resources", Some(body))
        .await
        .unwrap();
    assert_eq!(status, 201, "{problem}");
}

#[tokio::test]
async fn a_worker_refuses_a_denied_host_before_it_dials() {
    // The API allows loopback (to register), the worker does not: as if the row had been
    // changed, or the policy tightened, after registration.
    let app = spawn_app_with(REDIS_URL, |_| {}).await.unwrap();
    let (port, offered) = counting_listener().await;
    let source = create_source("").await.unwrap();
    let resource = app
        .register_via(TENANT, "trap", &source, port, json!({}))
        .await
        .unwrap();
    let mut args = app.worker_args();
    args.outbound.outbound_allow = String::new();
    let _worker = app.spawn_worker_with(args).await;
    let job = app.sync(TENANT, resource.id).await.unwrap();
    let job = app
        .wait_for_job(TENANT, job.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_job(&job)
        .failed_permanently()
        .attempts(1)
        .error_contains("refused by the outbound policy");
    assert_eq!(
        offered.load(Ordering::SeqCst),
        0,
        "the worker dialled a denied host"
    );
}

/// A port that answers with something other than the engine's protocol, and one that refuses:
/// the job's error is one generic message per class that names the server as registered, with
/// nothing of what answered (no banner, no markup, no driver detail).
#[tokio::test]
async fn connect_failures_are_generic_and_carry_no_banner() {
    let app = spawn_app_with(REDIS_URL, |_| {}).await.unwrap();
    let banner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let banner_port = banner.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut socket, _)) = banner.accept().await {
            let mut startup = [0u8; 512];
            let _ = socket.read(&mut startup).await;
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\nServer: <script>alert(1)</script>\r\n\r\n")
                .await;
        }
    });
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let once = json!({ "retry_policy": { "max_attempts": 1 } });
    let _worker = app.spawn_worker().await;
    for (name, port, says) in [
        // Read as a message header and then cut off, or as an unknown message: either way a
        // generic sentence.
        ("banner", banner_port, "PostgreSQL server"),
        ("closed", closed_port, "the connection was refused"),
    ] {
        let resource = app
            .register_via(TENANT, name, "x", port, once.clone())
            .await
            .unwrap();
        let job = app.sync(TENANT, resource.id).await.unwrap();
        let job = app
            .wait_for_job(TENANT, job.id, Duration::from_secs(60))
            .await
            .unwrap();
        let error = job.error.clone().unwrap_or_default();
        assert_job(&job)
            .failed()
            .error_contains(&format!("connecting to 127.0.0.1:{port}: "))
            .error_contains(says);
        for leaked in ["script", "HTTP", "400", "os error", "Connection refused"] {
            assert!(!error.contains(leaked), "{name}: {error}");
        }
    }
}
