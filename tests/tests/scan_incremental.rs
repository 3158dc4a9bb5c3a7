//! Incremental sync: a resync writes only what changed and records exactly that in the change
//! history, on PostgreSQL and MariaDB, including a renamed or repointed resource.

use chrono::SecondsFormat;
use metasync_shared::catalog::ChangeKind;
use metasync_shared::db::catalog::StoredChange;
use metasync_shared::db::resources::Resource;
use metasync_shared::domain::ResourceKind;
use metasync_tests::assert::stats;
use metasync_tests::fixtures::*;
use metasync_tests::{create_database, create_source};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn incremental_sync_records_exactly_what_changed_in_postgres() {
    let s = scanner().await;
    let source = create_source(
        "create table a (id int primary key, v text);
         create table b (id int);
         comment on table a is 'first';",
    )
    .await
    .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    let job = s.sync(rid).await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [
            triple(ChangeKind::SchemaAdded, "", ""),
            triple(ChangeKind::TableAdded, "a", ""),
            triple(ChangeKind::TableAdded, "b", ""),
        ]
    );
    assert_unchanged_resync(&s, rid, 2).await;

    // Add a table.
    let job = s
        .change_pg(&source, rid, "create table c (id int, note text)")
        .await;
    assert_eq!(stats(&job).tables_added, 1, "{job:?}");
    assert_eq!(stats(&job).tables_unchanged, 2, "{job:?}");
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::TableAdded, "c", "")]
    );
    assert_eq!(
        column_names(&s.table(rid, "public", "c").await),
        ["id", "note"]
    );
    assert_unchanged_resync(&s, rid, 3).await;

    // Drop a table.
    let job = s.change_pg(&source, rid, "drop table b").await;
    assert_eq!(stats(&job).tables_removed, 1, "{job:?}");
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::TableRemoved, "b", "")]
    );
    assert_eq!(
        table_names(&s.tables(rid).await),
        ["a", "c"],
        "b left the catalog"
    );

    // Add a column.
    let job = s
        .change_pg(
            &source,
            rid,
            "alter table a add column added_at timestamptz default now()",
        )
        .await;
    assert_eq!(stats(&job).tables_changed, 1, "{job:?}");
    assert_eq!(stats(&job).tables_unchanged, 1, "{job:?}");
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::ColumnAdded, "a", "added_at")]
    );
    let a = s.table(rid, "public", "a").await;
    assert_eq!(column(&a, "added_at").data_type, "timestamp with time zone");
    assert_eq!(
        column(&a, "added_at").default_value.as_deref(),
        Some("now()")
    );

    // Change a type.
    let job = s
        .change_pg(
            &source,
            rid,
            "alter table a alter column v type varchar(20)",
        )
        .await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::ColumnChanged, "a", "v")]
    );
    let all: Vec<StoredChange> = s
        .all_pages(&format!("/v1/resources/{rid}/changes"), 100)
        .await;
    let change = all.iter().find(|c| c.job_id == Some(job.id)).unwrap();
    assert_eq!(change.details["before"]["data_type"], "text");
    assert_eq!(
        change.details["after"]["data_type"],
        "character varying(20)"
    );
    assert_eq!(
        column(&s.table(rid, "public", "a").await, "v").data_type,
        "character varying(20)"
    );

    // Change comments: the table's and a column's.
    let job = s
        .change_pg(
            &source,
            rid,
            "comment on table a is 'second'; comment on column c.note is 'why'",
        )
        .await;
    assert_eq!(stats(&job).tables_changed, 2, "{job:?}");
    assert_eq!(
        s.changes_of(rid, &job).await,
        [
            triple(ChangeKind::ColumnChanged, "c", "note"),
            triple(ChangeKind::CommentChanged, "a", "")
        ]
    );
    let all: Vec<StoredChange> = s
        .all_pages(&format!("/v1/resources/{rid}/changes"), 100)
        .await;
    let comment = all
        .iter()
        .find(|c| c.job_id == Some(job.id) && c.kind == ChangeKind::CommentChanged)
        .unwrap();
    assert_eq!(
        comment.details,
        json!({"before": "first", "after": "second"})
    );
    assert_eq!(
        s.table(rid, "public", "a")
            .await
            .definition
            .comment
            .as_deref(),
        Some("second")
    );

    // Constraints and indexes.
    let job = s
        .change_pg(
            &source,
            rid,
            "create index c_note on c (note); alter table c add constraint c_pk primary key (id);
         alter table a drop constraint a_pkey",
        )
        .await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [
            triple(ChangeKind::ColumnChanged, "c", "id"),
            triple(ChangeKind::ConstraintAdded, "c", "c_pk"),
            triple(ChangeKind::ConstraintRemoved, "a", "a_pkey"),
            triple(ChangeKind::IndexAdded, "c", "c_note"),
            triple(ChangeKind::IndexAdded, "c", "c_pk"),
            triple(ChangeKind::IndexRemoved, "a", "a_pkey"),
        ],
        "the primary key also made c.id not null"
    );
    assert_unchanged_resync(&s, rid, 2).await;

    // `since` narrows the history to what came after.
    let all: Vec<StoredChange> = s
        .all_pages(&format!("/v1/resources/{rid}/changes"), 100)
        .await;
    // Every digit the API keeps (microseconds), so `since` is exactly the last entry's time.
    let last_at = all
        .last()
        .unwrap()
        .created_at
        .to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let since: Vec<StoredChange> = s
        .all_pages(
            &format!("/v1/resources/{rid}/changes?since={}", urlencode(&last_at)),
            100,
        )
        .await;
    assert_eq!(since.len(), 6, "{since:?}");
    let (status, _, body) = s
        .app
        .call(
            TENANT,
            Method::GET,
            &format!("/v1/resources/{rid}/changes?since=yesterday"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn incremental_sync_records_exactly_what_changed_in_mariadb() {
    let s = scanner().await;
    let db = MariaDb::create().await;
    db.run(&[
        "create table `{db}`.a (id int primary key, v text) comment 'first'",
        "create table `{db}`.b (id int)",
    ])
    .await;
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    s.sync(rid).await;
    // Writing rows moves UPDATE_TIME but not the definition.
    db.run(&["insert into `{db}`.a values (1, 'x')"]).await;
    assert_unchanged_resync(&s, rid, 2).await;

    for (sql, expected) in [
        (
            "create table `{db}`.c (id int)",
            triple(ChangeKind::TableAdded, "c", ""),
        ),
        (
            "drop table `{db}`.b",
            triple(ChangeKind::TableRemoved, "b", ""),
        ),
        (
            "alter table `{db}`.a add column n int not null default 3",
            triple(ChangeKind::ColumnAdded, "a", "n"),
        ),
        (
            "alter table `{db}`.a modify v varchar(30)",
            triple(ChangeKind::ColumnChanged, "a", "v"),
        ),
        (
            "alter table `{db}`.a comment 'second'",
            triple(ChangeKind::CommentChanged, "a", ""),
        ),
    ] {
        db.run(&[sql]).await;
        let job = s.sync(rid).await;
        assert_eq!(s.changes_of(rid, &job).await, [expected], "{sql}");
    }
    assert_eq!(
        column(&s.table(rid, &db.name, "a").await, "v").data_type,
        "varchar(30)"
    );
    assert_eq!(
        s.table(rid, &db.name, "a")
            .await
            .definition
            .comment
            .as_deref(),
        Some("second")
    );
    assert_unchanged_resync(&s, rid, 2).await;
    db.drop().await;
}

#[tokio::test]
async fn a_renamed_or_repointed_resource_is_reflected_on_the_next_sync() {
    let s = scanner().await;
    let first = create_source("create table one (id int);").await.unwrap();
    let second = create_database("mstest_src").await.unwrap();
    run_pg(&second, "create table two (id int)").await;
    let rid = s.register("postgres", &first, 5432, Value::Null).await;
    s.sync(rid).await;
    s.patch(
        rid,
        // A new target takes the password again: it is sealed for the old one.
        json!({"name": "renamed", "database": second, "password": "unused"}),
    )
    .await;
    let job = s.sync(rid).await;
    assert_eq!(stats(&job).tables_added, 1, "{job:?}");
    assert_eq!(stats(&job).tables_removed, 1, "{job:?}");
    assert_eq!(table_names(&s.tables(rid).await), ["two"]);
    let resource: Resource = s.get(&format!("/v1/resources/{rid}")).await;
    assert_eq!(resource.name, "renamed");

    // Retyped: the same resource now points at a MariaDB database.
    let maria = MariaDb::create().await;
    maria.run(&["create table `{db}`.three (id int)"]).await;
    let resource = s
        .patch(
            rid,
            json!({"kind": "mysql", "port": 3306, "database": maria.name, "password": ""}),
        )
        .await;
    assert_eq!(resource.kind, ResourceKind::Mysql);
    let job = s.sync(rid).await;
    assert_eq!(stats(&job).tables_added, 1, "{job:?}");
    assert_eq!(stats(&job).tables_removed, 1, "{job:?}");
    assert_eq!(table_names(&s.tables(rid).await), ["three"]);
    maria.drop().await;
}
