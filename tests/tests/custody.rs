//! Password custody from outside: a stored password is sealed for its connection target and
//! TLS settings, so it is never sent anywhere else or under laxer TLS (not after a `PATCH`
//! without the password, not after the row is changed in the database), and `metasync-worker
//! rotate-master-key` re-seals every password, earlier-scheme and earlier-format ones included,
//! and every webhook secret under a new master key.

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use metasync_shared::crypto::SecretBox;
use metasync_shared::custody::{self, ConnectionTarget, LEGACY_KEY_ID, RecordFormat, SealingKey};
use metasync_shared::db::jobs::Job;
use metasync_shared::domain::ResourceKind;
use metasync_shared::ids::TenantId;
use metasync_shared::tls::SourceTls;
use metasync_tests::assert::assert_job;
use metasync_tests::webhook_receiver::{Mode, create_hook, expected_signature, receiver};
use metasync_tests::{
    FINGERPRINT_KEY, TestApp, binary, counting_listener, create_source, eventually, spawn_app,
    test_master_key,
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
        json!({ "tls": { "mode": "disable" } }),
        json!({ "tls": { "mode": "require" } }),
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
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("password") && detail.contains("`tls`"),
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
    let job = synced(&app, rid).await;
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
    assert_job(&synced(&app, rid).await).succeeded();
    assert_eq!(offered.load(Ordering::SeqCst), 0);
}

/// Syncs the resource and waits for the job to finish.
async fn synced(app: &TestApp, id: impl std::fmt::Display) -> Job {
    let job = app.sync(TENANT, id).await.unwrap();
    app.wait_for_job(TENANT, job.id, WAIT).await.unwrap()
}

/// Runs `metasync-worker rotate-master-key --to KEY` and returns its stdout.
async fn rotate(database_url: &str, to: &str, opening_keys: &str, legacy: Option<&str>) -> String {
    let mut command = tokio::process::Command::new(binary("metasync-worker").unwrap());
    command.env_clear();
    if let Some(legacy) = legacy {
        command.env("METASYNC_SECRET_KEY", legacy);
    }
    let output = command
        .args(["rotate-master-key", "--to", to])
        .env("DATABASE_URL", database_url)
        .env("METASYNC_OPENING_KEYS", opening_keys)
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
                                password_sealed, password_key_id, password_format)
         values ($1, $2, 'legacy', 'postgres', '127.0.0.1', 5432, $3, 'root', $4, $5, 1)",
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

    // A webhook, its secret sealed under the current key like the passwords.
    let (url, got) = receiver(Mode::Accept).await;
    let secret = format!("whook-rotated-{}", Uuid::now_v7().simple());
    create_hook(&app, TENANT, &url, &secret, &["job.succeeded"]).await;

    let (new_opening, _) = custody::generate("k2").unwrap();
    let both = format!("{},{new_opening}", test_master_key().0);
    let legacy = STANDARD.encode(legacy_key);
    let out = rotate(&app.database_url, "k2", &both, Some(&legacy)).await;
    assert!(
        out.contains("passwords: 4 re-sealed") && out.contains("webhook secrets: 1 re-sealed"),
        "{out}"
    );
    let rows: Vec<(String, Option<Vec<u8>>, i16)> = sqlx::query_as(
        "select password_key_id, password_fingerprint, password_format from resources order by id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter()
            .all(|(key, fp, format)| key == "k2" && fp.is_some() && *format == 2),
        "{rows:?}"
    );
    let hook_keys: Vec<String> = sqlx::query_scalar("select secret_key_id from webhooks")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(hook_keys, ["k2"]);
    // Idempotent: a second run has nothing left to do.
    let out = rotate(&app.database_url, "k2", &both, Some(&legacy)).await;
    assert!(
        out.contains("passwords: 0 re-sealed") && out.contains("webhook secrets: 0 re-sealed"),
        "{out}"
    );

    // Workers holding only the new key sync every resource, the migrated one included, and
    // sign each job.succeeded with the hook's secret.
    let mut args = app.worker_args();
    args.opening.opening_keys = new_opening;
    let _worker = app.spawn_worker_with(args).await;
    for id in &ids {
        assert_job(&synced(&app, id).await).succeeded();
    }
    let delivered = eventually(WAIT, "a delivery per job", || async {
        let got = got.lock().unwrap().clone();
        Ok((got.len() >= ids.len()).then_some(got))
    })
    .await
    .unwrap();
    for request in &delivered {
        let expected = expected_signature(&secret, &request.id, &request.timestamp, &request.body);
        assert_eq!(request.signature, expected, "signature of {}", request.id);
    }
}

/// The catalog row's password format and TLS setting.
async fn stored_format(app: &TestApp, id: Uuid) -> (i16, serde_json::Value) {
    sqlx::query_as("select password_format, tls from resources where id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_password_is_never_sent_under_tls_weakened_in_the_database() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let source = create_source("create table t (id int);").await.unwrap();
    // The local server has ssl = on: `require` connects over TLS.
    let resource = app
        .register_via(
            TENANT,
            "strict",
            &source,
            5432,
            json!({ "tls": { "mode": "require" } }),
        )
        .await
        .unwrap();
    let rid = resource.id;
    assert_eq!(stored_format(&app, rid.uuid()).await.0, 2);
    assert_job(&synced(&app, rid).await).succeeded();

    // Someone with write access to the catalog database turns TLS off for the row: the
    // password does not open under those settings, and the job says so in our words alone.
    for tampered in [json!({ "mode": "disable" }), json!({ "mode": "prefer" })] {
        sqlx::query("update resources set tls = $1 where id = $2")
            .bind(&tampered)
            .bind(rid)
            .execute(&app.db)
            .await
            .unwrap();
        let job = synced(&app, rid).await;
        assert_job(&job)
            .failed_permanently()
            .attempts(1)
            .error_contains("cannot be opened")
            .error_contains("TLS settings");
        let error = job.error.as_deref().unwrap_or_default();
        assert!(!error.contains("unused-by-trust-auth"), "{error}");
    }
}

#[tokio::test]
async fn records_of_the_earlier_format_open_until_the_migration_reseals_them() {
    let app = spawn_app().await.unwrap();
    let _worker = app.spawn_worker().await;
    let source = create_source("create table t (id int);").await.unwrap();
    // A resource as stored before the TLS settings were bound: format 1, under the current key.
    let id = Uuid::now_v7();
    let tenant = TenantId::new(TENANT);
    let tls = SourceTls::default();
    let target = ConnectionTarget {
        tenant: &tenant,
        resource: id.into(),
        kind: ResourceKind::Postgres,
        host: "127.0.0.1",
        port: 5432,
        username: "root",
        database: &source,
        tls: &tls,
    };
    let sealing = SealingKey::parse(&test_master_key().1).unwrap();
    let old = sealing.seal_in_format("old-format-pw", &target, RecordFormat::Target);
    sqlx::query(
        "insert into resources (id, tenant_id, name, kind, host, port, database, username,
                                password_sealed, password_key_id, password_format)
         values ($1, $2, 'old-format', 'postgres', '127.0.0.1', 5432, $3, 'root', $4, $5, 1)",
    )
    .bind(id)
    .bind(TENANT)
    .bind(&source)
    .bind(&old.record)
    .bind(&old.key_id)
    .execute(&app.db)
    .await
    .unwrap();
    // It keeps syncing as it did.
    assert_job(&synced(&app, id).await).succeeded();

    // The migration: rotate to the key it is already under re-seals it in the current format.
    let key = test_master_key();
    let key_id = sealing.id().to_owned();
    let out = rotate(&app.database_url, &key_id, &key.0, None).await;
    assert!(out.contains("passwords: 1 re-sealed"), "{out}");
    let (format, stored_tls) = stored_format(&app, id).await;
    assert_eq!((format, stored_tls), (2, json!({ "mode": "prefer" })));
    let out = rotate(&app.database_url, &key_id, &key.0, None).await;
    assert!(out.contains("passwords: 0 re-sealed"), "{out}");
    assert_job(&synced(&app, id).await).succeeded();

    // From now on its TLS settings are bound too.
    sqlx::query("update resources set tls = '{\"mode\": \"disable\"}' where id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    assert_job(&synced(&app, id).await)
        .failed_permanently()
        .error_contains("cannot be opened");
}
