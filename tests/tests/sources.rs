//! What a resource says about its syncs (freshness, kept on the resource by the job's
//! outcome), and honest answers to a source registered wrongly: the other engine's port, a
//! port inside `host`, `mariadb` as the kind.

use std::time::Duration;

use metasync_shared::db::resources::Resource;
use metasync_shared::domain::{JobState, ResourceKind};
use metasync_tests::{TestApp, assert_job, create_source, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

const TENANT: &str = "acme";

async fn resource(app: &TestApp, id: impl std::fmt::Display) -> Resource {
    app.call_typed(TENANT, Method::GET, &format!("/v1/resources/{id}"), None)
        .await
        .unwrap()
}

async fn synced(app: &TestApp, id: impl std::fmt::Display) -> metasync_shared::db::jobs::Job {
    let job = app.sync(TENANT, id).await.unwrap();
    app.wait_for_job(TENANT, job.id, Duration::from_secs(60))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_resource_shows_its_last_sync_its_last_success_and_its_last_error() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let database = create_source("create table t (id int primary key);")
        .await
        .unwrap();
    let once = json!({ "retry_policy": { "max_attempts": 1 } });
    let registered = app
        .register_via(TENANT, "shop", &database, 5432, once)
        .await
        .unwrap();
    assert!(registered.last_sync.is_none(), "{registered:?}");
    assert!(registered.last_succeeded_at.is_none());
    assert!(registered.last_error.is_none());

    let ok = synced(&app, registered.id).await;
    assert_job(&ok).succeeded();
    let shown = resource(&app, registered.id).await;
    let last = shown.last_sync.as_ref().expect("a last sync").0.clone();
    assert_eq!(
        (last.job_id, last.state, Some(last.finished_at)),
        (ok.id, JobState::Succeeded, ok.finished_at)
    );
    assert_eq!(shown.last_succeeded_at, ok.finished_at);
    assert_eq!(shown.last_error, None);

    // Pointed at a database that does not exist (the password again: the target changed).
    let (status, _, body) = app
        .call(
            TENANT,
            Method::PATCH,
            &format!("/v1/resources/{}", registered.id),
            Some(json!({ "database": "no_such_database", "password": "unused-by-trust-auth" })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let failed = synced(&app, registered.id).await;
    assert_job(&failed).failed_permanently();
    let shown = resource(&app, registered.id).await;
    let last = shown.last_sync.as_ref().unwrap().0.clone();
    assert_eq!((last.job_id, last.state), (failed.id, JobState::Failed));
    assert_eq!(
        shown.last_succeeded_at, ok.finished_at,
        "a failure keeps the last success"
    );
    assert_eq!(shown.last_error, failed.error);
    assert!(
        shown
            .last_error
            .as_deref()
            .unwrap()
            .contains("no_such_database")
    );

    // The list shows the same columns.
    let (_, _, page) = app
        .call(TENANT, Method::GET, "/v1/resources", None)
        .await
        .unwrap();
    assert_eq!(page["items"][0]["last_sync"]["state"], "failed", "{page}");
    assert_eq!(page["items"][0]["last_sync"]["job_id"], json!(failed.id));

    // Fixed: the next success clears the error.
    let (status, _, _) = app
        .call(
            TENANT,
            Method::PATCH,
            &format!("/v1/resources/{}", registered.id),
            Some(json!({ "database": database, "password": "unused-by-trust-auth" })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let again = synced(&app, registered.id).await;
    assert_job(&again).succeeded();
    let shown = resource(&app, registered.id).await;
    assert_eq!(shown.last_sync.as_ref().unwrap().0.job_id, again.id);
    assert_eq!(shown.last_succeeded_at, again.finished_at);
    assert_eq!(shown.last_error, None);
}

#[tokio::test]
async fn a_cancelled_sync_is_the_last_sync_and_keeps_the_last_error() {
    // No worker: the job stays queued until it is cancelled.
    let app = spawn_app().await.unwrap();
    let registered = app.register(TENANT, "idle", "test").await.unwrap();
    let job = app.sync(TENANT, registered.id).await.unwrap();
    let (status, _, body) = app
        .call(
            TENANT,
            Method::POST,
            &format!("/v1/jobs/{}/cancel", job.id),
            None,
        )
        .await
        .unwrap();
    assert!((200..300).contains(&status), "{status} {body}");
    let shown = resource(&app, registered.id).await;
    let last = shown.last_sync.as_ref().expect("a last sync").0.clone();
    assert_eq!((last.job_id, last.state), (job.id, JobState::Cancelled));
    assert_eq!(shown.last_succeeded_at, None);
}

#[tokio::test]
async fn mariadb_is_accepted_as_the_kind_and_answered_as_mysql() {
    let app = spawn_app().await.unwrap();
    let created = app
        .create_resource(
            TENANT,
            json!({
                "name": "maria", "kind": "mariadb", "host": "127.0.0.1", "port": 3306,
                "database": "test", "username": "root", "password": "unused"
            }),
        )
        .await
        .unwrap();
    assert_eq!(created.kind, ResourceKind::Mysql);
    let (status, _, body) = app
        .call(
            TENANT,
            Method::POST,
            "/v1/resources",
            Some(json!({
                "name": "other", "kind": "oracle", "host": "127.0.0.1", "port": 1521,
                "database": "x", "username": "u", "password": "p"
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn a_port_inside_host_is_refused_saying_where_the_port_goes() {
    let app = spawn_app().await.unwrap();
    for host in ["127.0.0.1:5432", "db.example:5432", "[::1]:5432"] {
        let (status, content_type, body) = app
            .call(
                TENANT,
                Method::POST,
                "/v1/resources",
                Some(json!({
                    "name": "p", "kind": "postgres", "host": host, "port": 5432,
                    "database": "x", "username": "u", "password": "p"
                })),
            )
            .await
            .unwrap();
        assert_eq!(status, 422, "{host}: {body}");
        assert_eq!(content_type, "application/problem+json");
        assert!(body.to_string().contains("in `port`"), "{host}: {body}");
    }
}

/// A MySQL client on a PostgreSQL port waits for a greeting that never comes; a PostgreSQL
/// client on a MySQL port cannot read the greeting. Either way the job fails at its first
/// attempt, permanently, saying which kind to register. (The MySQL side is a fake server that
/// greets: a PostgreSQL client is never aimed at the shared MariaDB.)
#[tokio::test]
async fn a_server_of_the_other_engine_fails_at_once_and_names_the_kind() {
    let app = spawn_app().await.unwrap();
    let mut args = app.worker_args();
    args.connect_timeout = Duration::from_secs(2);
    let _worker = app.spawn_worker_with(args).await;

    let greeter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let greeter_port = greeter.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut socket, _)) = greeter.accept().await {
            tokio::spawn(async move {
                let _ = socket.write_all(&mysql_greeting()).await;
                let mut sink = [0u8; 256];
                while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });

    let cases: [(&str, &str, u16, &str); 2] = [
        (
            "mysql-on-postgres",
            "mysql",
            5432,
            "register it with kind postgres",
        ),
        (
            "postgres-on-mysql",
            "postgres",
            greeter_port,
            "register it with kind mysql",
        ),
    ];
    for (name, kind, port, says) in cases {
        let created: Value = app
            .call(
                TENANT,
                Method::POST,
                "/v1/resources",
                Some(json!({
                    "name": name, "kind": kind, "host": "127.0.0.1", "port": port,
                    "database": "test", "username": "root", "password": "S3cret-kind",
                    "tls": { "mode": "disable" }
                })),
            )
            .await
            .unwrap()
            .2;
        let job = synced(&app, created["id"].as_str().unwrap()).await;
        assert_job(&job)
            .failed_permanently()
            .attempts(1)
            .error_contains(&format!("connecting to 127.0.0.1:{port}: "))
            .error_contains(says)
            .never_mentions("S3cret-kind");
    }
}

/// A HandshakeV10 packet as MariaDB 10.11 opens with (sequence 0).
fn mysql_greeting() -> Vec<u8> {
    let mut payload = vec![0x0a];
    payload.extend_from_slice(b"5.5.5-10.11.6-MariaDB\0");
    payload.extend_from_slice(&7u32.to_le_bytes()); // connection id
    payload.extend_from_slice(b"abcdefgh\0"); // first part of the scramble
    payload.extend_from_slice(&[0xfe, 0xf7, 0x2d, 0x02, 0x00, 0xff, 0x81, 0x15]);
    payload.extend_from_slice(&[0; 6]);
    payload.extend_from_slice(&[0x1d, 0, 0, 0]);
    payload.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    let len = payload.len() as u32;
    let mut packet = len.to_le_bytes()[..3].to_vec();
    packet.push(0);
    packet.extend(payload);
    packet
}
