//! Password custody from outside: a stored password is sealed for its connection target, so it
//! is never sent anywhere else (not after a `PATCH` without the password, not after the row is
//! changed in the database), and `metasync-worker rotate-master-key` re-seals every password,
//! earlier-scheme ones included, under a new master key.

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use metasync_shared::crypto::SecretBox;
use metasync_shared::custody::{self, LEGACY_KEY_ID};
use metasync_tests::assert::assert_job;
use metasync_tests::{
    FINGERPRINT_KEY, binary, counting_listener, create_source, spawn_app, test_master_key,
};
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

const TENANT: &str = "acme";
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_stored_password_is_never_sent_to_a_new_target() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.register(TENANT, "shop", &source).await.unwrap();
    let rid = resource.id;
    let (trap_port, offered) = counting_listener().await;

    // A new port (or host, user, database, engine) without the password is refused.
    for change in [
        json!({ "port": trap_port }),
        json!({ "host": "localhost" }),
        json!({ "username": "postgres" }),
        json!({ "database": "postgres" }),
        json!({ "kind": "mysql" }),
        json!({ "port": trap_port, "name": "renamed" }),
    ] {
        let (status, content_type, problem) = app
            .call(
                TENANT,
                Method::PATCH,
                &format!("/v1/resources/{rid}"),
                Some(change.clone()),
            )
            .await
            .unwrap();
        assert_eq!(status, 422, "{change}: {problem}");
        assert_eq!(content_type, "application/problem+json");
        assert!(
            problem["detail"].as_str().unwrap().contains("password"),
            "{problem}"
        );
    }
    // Nothing changed; a change that keeps the target needs no password.
    let (status, _, body) = app
        .call(
            TENANT,
            Method::PATCH,
            &format!("/v1/resources/{rid}"),
            Some(json!({ "name": "renamed", "port": 5432 })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["port"].as_i64()),
        (Some("renamed"), Some(5432))
    );

    // Someone with write access to the catalog database points the row at the trap: the
    // password does not open for that target, so the worker never dials it.
    sqlx::query("update resources set port = $1 where id = $2")
        .bind(i32::from(trap_port))
        .bind(rid)
        .execute(&app.db)
        .await
        .unwrap();
    let job = app.sync(TENANT, rid).await.unwrap();
    let job = app.wait_for_job(TENANT, job.id, WAIT).await.unwrap();
    assert_job(&job)
        .failed_permanently()
        .attempts(1)
        .error_contains("cannot be opened");
    assert_eq!(offered.load(Ordering::SeqCst), 0, "the trap was dialled");

    // Giving the password again with the target is how a target changes.
    let (status, _, body) = app
        .call(
            TENANT,
            Method::PATCH,
            &format!("/v1/resources/{rid}"),
            Some(json!({ "port": 5432, "password": "again" })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let job = app.sync(TENANT, rid).await.unwrap();
    assert_job(&app.wait_for_job(TENANT, job.id, WAIT).await.unwrap()).succeeded();
    assert_eq!(offered.load(Ordering::SeqCst), 0);
}

/// Runs `metasync-worker rotate-master-key --to KEY` and returns its stdout.
async fn rotate(database_url: &str, to: &str, opening_keys: &str, legacy: &str) -> String {
    let output = tokio::process::Command::new(binary("metasync-worker").unwrap())
        .args(["rotate-master-key", "--to", to])
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("METASYNC_OPENING_KEYS", opening_keys)
        .env("METASYNC_SECRET_KEY", legacy)
        .env(
            "METASYNC_PASSWORD_FINGERPRINT_KEY",
            STANDARD.encode(FINGERPRINT_KEY),
        )
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn rotate_master_key_reseals_every_password_and_old_keys_can_go() {
    let app = spawn_app().await.unwrap();
    let source = create_source("create table t (id int);").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.register(TENANT, &format!("src-{i}"), &source)
                .await
                .unwrap()
                .id
                .uuid(),
        );
    }
    // A row sealed by the earlier AES scheme (resource id as associated data, no fingerprint).
    let legacy_key = [7u8; 32];
    let legacy_id = Uuid::now_v7();
    sqlx::query(
        "insert into resources (id, tenant_id, name, kind, host, port, database, username,
                                password_sealed, password_key_id)
         values ($1, $2, 'legacy', 'postgres', '127.0.0.1', 5432, $3, 'root', $4, $5)",
    )
    .bind(legacy_id)
    .bind(TENANT)
    .bind(&source)
    .bind(SecretBox::new(&legacy_key).seal("legacy-pw", legacy_id.as_bytes()))
    .bind(LEGACY_KEY_ID)
    .execute(&app.db)
    .await
    .unwrap();
    ids.push(legacy_id);

    let (new_opening, _) = custody::generate("k2").unwrap();
    let both = format!("{},{new_opening}", test_master_key().0);
    let legacy = STANDARD.encode(legacy_key);
    let out = rotate(&app.database_url, "k2", &both, &legacy).await;
    assert!(out.contains("4 re-sealed"), "{out}");
    let rows: Vec<(String, Option<Vec<u8>>)> =
        sqlx::query_as("select password_key_id, password_fingerprint from resources order by id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter().all(|(key, fp)| key == "k2" && fp.is_some()),
        "{rows:?}"
    );
    // Idempotent: a second run has nothing left to do.
    let out = rotate(&app.database_url, "k2", &both, &legacy).await;
    assert!(out.contains("0 re-sealed"), "{out}");

    // Workers holding only the new key sync every resource, the migrated one included.
    let mut args = app.worker_args();
    args.opening.opening_keys = new_opening;
    let _worker = app.spawn_worker_with(args).await;
    for id in ids {
        let job = app.sync(TENANT, id).await.unwrap();
        assert_job(&app.wait_for_job(TENANT, job.id, WAIT).await.unwrap()).succeeded();
    }
}
