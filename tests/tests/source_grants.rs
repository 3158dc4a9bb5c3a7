//! `docs/source-grants.md`, tested: a source user with exactly the documented grants reads the
//! same catalog as the superuser (the golden fixtures, every object kind), and one grant fewer
//! gives what the page says (a failure or the documented warning).

use metasync_shared::db::jobs::Job;
use metasync_shared::domain::WarningCode;
use metasync_shared::ids::ResourceId;
use metasync_tests::assert::assert_job;
use metasync_tests::fixtures::*;
use metasync_tests::{create_source, unique_name};
use serde_json::Value;

const PASSWORD: &str = "reader-password-1";

/// The whole catalog of a resource after a sync, normalized as the golden test does.
async fn synced_catalog(s: &Scanner, rid: ResourceId, database: &str) -> (Job, Value) {
    let job = s.sync(rid).await;
    let mut catalog = whole_catalog(s, rid).await;
    normalize(&mut catalog, database);
    (job, catalog)
}

#[tokio::test]
async fn postgres_a_role_with_connect_alone_reads_the_whole_catalog() {
    let s = scanner().await;
    let sql = std::fs::read_to_string(fixture("postgres.sql")).unwrap();
    let source = create_source(&sql).await.unwrap();
    let role = unique_name("mstest_reader", '_');
    let short = unique_name("mstest_short", '_');
    // The documented grants, and nothing from PUBLIC: no CONNECT (revoked), no USAGE on the
    // fixture's schema (never granted), no SELECT on any table. `short` lacks CONNECT.
    run_pg(
        "postgres",
        &format!(
            "create role {role} login password '{PASSWORD}';
             create role {short} login password '{PASSWORD}';"
        ),
    )
    .await;
    run_pg(
        &source,
        &format!(
            "revoke connect on database \"{source}\" from public;
             grant connect on database \"{source}\" to {role};"
        ),
    )
    .await;

    let as_root = s.register("postgres", &source, 5432, Value::Null).await;
    let (_, expected) = synced_catalog(&s, as_root, &source).await;
    let as_reader = s
        .register_as("postgres", &source, 5432, (&role, PASSWORD), Value::Null)
        .await;
    let (job, catalog) = synced_catalog(&s, as_reader, &source).await;
    assert!(s.warnings(&job).await.is_empty());
    assert_eq!(catalog, expected, "the reader's catalog is the superuser's");

    // One grant fewer: without CONNECT, nothing can be read. (Another role: a revoke does not
    // reach the reader's parked connection, which is already past the check.)
    let as_short = s
        .register_as("postgres", &source, 5432, (&short, PASSWORD), Value::Null)
        .await;
    let job = s.sync_to_the_end(as_short).await;
    assert_job(&job)
        .failed_permanently()
        .error_contains("permission denied");

    run_pg(
        &source,
        &format!("revoke connect on database \"{source}\" from {role}"),
    )
    .await;
    run_pg("postgres", &format!("drop role {role}; drop role {short};")).await;
}

#[tokio::test]
async fn mariadb_a_user_with_select_and_show_view_reads_the_whole_catalog() {
    let s = scanner().await;
    let db = MariaDb::create().await;
    db.run_script(&std::fs::read_to_string(fixture("mariadb.sql")).unwrap())
        .await;
    let user = unique_name("mstest_reader", '_');
    let short = unique_name("mstest_short", '_');
    db.run(&[
        &format!("create user '{user}'@'%' identified by '{PASSWORD}'"),
        &format!("grant select, show view on `{{db}}`.* to '{user}'@'%'"),
        &format!("create user '{short}'@'%' identified by '{PASSWORD}'"),
        &format!("grant select on `{{db}}`.* to '{short}'@'%'"),
    ])
    .await;

    let as_root = s.register("mysql", &db.name, 3306, Value::Null).await;
    let (_, expected) = synced_catalog(&s, as_root, &db.name).await;
    let as_reader = s
        .register_as("mysql", &db.name, 3306, (&user, PASSWORD), Value::Null)
        .await;
    let (job, catalog) = synced_catalog(&s, as_reader, &db.name).await;
    assert!(s.warnings(&job).await.is_empty());
    assert_eq!(catalog, expected, "the reader's catalog is root's");

    // One grant fewer: without SHOW VIEW, views are read without their definitions, and the
    // job says so. (Another user: MariaDB applies a revoke on a database to a session at its
    // next USE, and the reader's connection is parked.)
    let as_short = s
        .register_as("mysql", &db.name, 3306, (&short, PASSWORD), Value::Null)
        .await;
    let job = s.sync(as_short).await;
    let warnings = s.warnings(&job).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let hidden = &warnings[0];
    assert_eq!(hidden.code, WarningCode::ViewDefinitionHidden);
    assert_eq!(hidden.database.as_deref(), Some(db.name.as_str()));
    assert!(hidden.message.contains("SHOW VIEW"), "{hidden:?}");
    let views: Vec<String> = s
        .tables(as_short)
        .await
        .into_iter()
        .filter(|t| t.kind == "view")
        .map(|t| format!("{}.{}", t.schema, t.name))
        .collect();
    assert!(!views.is_empty());
    assert_eq!(hidden.objects, views);
    for view in &views {
        let name = view.rsplit('.').next().unwrap();
        let table = s.table(as_short, &db.name, name).await;
        assert_eq!(table.definition.view_definition, None, "{table:?}");
    }

    db.run(&[&format!("drop user '{user}'@'%', '{short}'@'%'")])
        .await;
    db.drop().await;
}
