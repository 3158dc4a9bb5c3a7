//! Job warnings: what a succeeded sync could not read is on the job (`warnings`, each with a
//! stable `code`), and a database in `options.databases` that does not exist follows one rule on
//! both engines: a warning when another database was read, a permanent failure when none was.

use metasync_shared::domain::WarningCode;
use metasync_shared::ids::ResourceId;
use metasync_tests::assert::assert_job;
use metasync_tests::create_source;
use metasync_tests::fixtures::*;
use serde_json::{Value, json};

/// A database name no server here has.
fn missing_database() -> String {
    format!("mstest_missing_{}", uuid::Uuid::now_v7().simple())
}

/// With `existing` and a missing database listed, the sync succeeds with one
/// `database_not_found` warning; with only missing ones, it fails at once, for good.
async fn missing_databases_warn_or_fail(
    s: &Scanner,
    rid: ResourceId,
    existing: &str,
    read_table: (&str, &str),
) {
    let missing = missing_database();
    s.set_options(rid, json!({ "databases": [existing, missing] }))
        .await;
    let job = s.sync(rid).await;
    assert_eq!(
        assert_job(&job).stats().databases,
        1,
        "only the existing one: {job:?}"
    );
    let warnings = s.warnings(&job).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].code, WarningCode::DatabaseNotFound);
    assert_eq!(warnings[0].database.as_deref(), Some(missing.as_str()));
    assert!(warnings[0].message.contains(&missing), "{warnings:?}");
    s.table(rid, read_table.0, read_table.1).await;

    let other = missing_database();
    s.set_options(rid, json!({ "databases": [missing, other] }))
        .await;
    let job = s.sync_to_the_end(rid).await;
    assert_job(&job)
        .failed_permanently()
        .attempts(1)
        .error_contains("none of the databases to scan exists")
        .error_contains(&missing);
    assert!(s.warnings(&job).await.is_empty());

    // A sync that reads everything has no warnings.
    s.set_options(rid, json!({ "databases": [existing] })).await;
    let job = s.sync(rid).await;
    assert!(s.warnings(&job).await.is_empty());
}

#[tokio::test]
async fn postgres_a_missing_database_is_a_warning_unless_none_was_read() {
    let s = scanner().await;
    let source = create_source("create table a (id int)").await.unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    let job = s.sync(rid).await;
    assert!(s.warnings(&job).await.is_empty());
    missing_databases_warn_or_fail(&s, rid, &source, ("public", "a")).await;

    // The resource's own database gone (no list): as before, a permanent failure naming it.
    s.set_options(rid, json!({})).await;
    let gone = missing_database();
    s.patch(rid, json!({ "database": gone, "password": "unused" }))
        .await;
    let job = s.sync_to_the_end(rid).await;
    assert_job(&job)
        .failed_permanently()
        .error_contains("does not exist");
}

#[tokio::test]
async fn mariadb_a_missing_database_is_a_warning_unless_none_was_read() {
    let s = scanner().await;
    let db = MariaDb::create().await;
    db.run(&["create table `{db}`.a (id int)"]).await;
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    let job = s.sync(rid).await;
    assert!(s.warnings(&job).await.is_empty());
    missing_databases_warn_or_fail(&s, rid, &db.name, (&db.name, "a")).await;
    db.drop().await;
}

#[tokio::test]
async fn mariadb_a_view_whose_columns_cannot_be_read_is_a_warning() {
    let s = scanner().await;
    let db = MariaDb::create().await;
    db.run(&[
        "create table `{db}`.t (id int)",
        "create view `{db}`.v as select id from `{db}`.t",
        "create view `{db}`.fine as select 1 as one",
        "drop table `{db}`.t",
    ])
    .await;
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    let job = s.sync(rid).await;
    let warnings = s.warnings(&job).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].code, WarningCode::ViewColumnsUnreadable);
    assert_eq!(warnings[0].objects, [format!("{}.v", db.name)]);
    assert!(
        s.table(rid, &db.name, "v")
            .await
            .definition
            .columns
            .is_empty()
    );
    assert_eq!(column_names(&s.table(rid, &db.name, "fine").await), ["one"]);
    db.drop().await;
}
