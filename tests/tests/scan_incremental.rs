//! Incremental sync: a resync writes only what changed and records exactly that in the change
//! history, on PostgreSQL and MariaDB, including a renamed or repointed resource.

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
    let job = s.sync(&rid).await;
    assert_eq!(
        s.changes_of(&rid, &job).await,
        [
            triple("schema_added", "", ""),
            triple("table_added", "a", ""),
            triple("table_added", "b", ""),
        ]
    );
    assert_unchanged_resync(&s, &rid, 2).await;

    // Add a table.
    let job = s
        .change_pg(&source, &rid, "create table c (id int, note text)")
        .await;
    assert_eq!(stats(&job).tables_added, 1, "{job:?}");
    assert_eq!(stats(&job).tables_unchanged, 2, "{job:?}");
    assert_eq!(
        s.changes_of(&rid, &job).await,
        [triple("table_added", "c", "")]
    );
    assert_eq!(
        names(
            s.table(&rid, "public", "c").await["columns"]
                .as_array()
                .unwrap(),
            "name"
        ),
        ["id", "note"]
    );
    assert_unchanged_resync(&s, &rid, 3).await;

    // Drop a table.
    let job = s.change_pg(&source, &rid, "drop table b").await;
    assert_eq!(stats(&job).tables_removed, 1, "{job:?}");
    assert_eq!(
        s.changes_of(&rid, &job).await,
        [triple("table_removed", "b", "")]
    );
    assert_eq!(
        names(&s.tables(&rid).await, "name"),
        ["a", "c"],
        "b left the catalog"
    );

    // Add a column.
    let job = s
        .change_pg(
            &source,
            &rid,
            "alter table a add column added_at timestamptz default now()",
        )
        .await;
    assert_eq!(stats(&job).tables_changed, 1, "{job:?}");
    assert_eq!(stats(&job).tables_unchanged, 1, "{job:?}");
    assert_eq!(
        s.changes_of(&rid, &job).await,
        [triple("column_added", "a", "added_at")]
    );
    let a = s.table(&rid, "public", "a").await;
    assert_eq!(
        column(&a, "added_at")["data_type"],
        "timestamp with time zone"
    );
    assert_eq!(column(&a, "added_at")["default_value"], "now()");

    // Change a type.
    let job = s
        .change_pg(
            &source,
            &rid,
            "alter table a alter column v type varchar(20)",
        )
        .await;
    assert_eq!(
        s.changes_of(&rid, &job).await,
        [triple("column_changed", "a", "v")]
    );
    let all = s
        .all_pages(&format!("/v1/resources/{rid}/changes"), 100)
        .await;
    let change = all
        .iter()
        .find(|c| c["job_id"] == job.id.to_string())
        .unwrap();
    assert_eq!(change["details"]["before"]["data_type"], "text");
    assert_eq!(
        change["details"]["after"]["data_type"],
        "character varying(20)"
    );
    assert_eq!(
        column(&s.table(&rid, "public", "a").await, "v")["data_type"],
        "character varying(20)"
    );

    // Change comments: the table's and a column's.
    let job = s
        .change_pg(
            &source,
            &rid,
            "comment on table a is 'second'; comment on column c.note is 'why'",
        )
        .await;
    assert_eq!(stats(&job).tables_changed, 2, "{job:?}");
    assert_eq!(
        s.changes_of(&rid, &job).await,
        [
            triple("column_changed", "c", "note"),
            triple("comment_changed", "a", "")
        ]
    );
    let all = s
        .all_pages(&format!("/v1/resources/{rid}/changes"), 100)
        .await;
    let comment = all
        .iter()
        .find(|c| c["job_id"] == job.id.to_string() && c["kind"] == "comment_changed")
        .unwrap();
    assert_eq!(
        comment["details"],
        json!({"before": "first", "after": "second"})
    );
    assert_eq!(s.table(&rid, "public", "a").await["comment"], "second");

    // Constraints and indexes.
    let job = s
        .change_pg(
            &source,
            &rid,
            "create index c_note on c (note); alter table c add constraint c_pk primary key (id);
         alter table a drop constraint a_pkey",
        )
        .await;
    assert_eq!(
        s.changes_of(&rid, &job).await,
        [
            triple("column_changed", "c", "id"),
            triple("constraint_added", "c", "c_pk"),
            triple("constraint_removed", "a", "a_pkey"),
            triple("index_added", "c", "c_note"),
            triple("index_added", "c", "c_pk"),
            triple("index_removed", "a", "a_pkey"),
        ],
        "the primary key also made c.id not null"
    );
    assert_unchanged_resync(&s, &rid, 2).await;

    // `since` narrows the history to what came after.
    let all = s
        .all_pages(&format!("/v1/resources/{rid}/changes"), 100)
        .await;
    let last_at = all.last().unwrap()["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let since = s
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
    s.sync(&rid).await;
    // Writing rows moves UPDATE_TIME but not the definition.
    db.run(&["insert into `{db}`.a values (1, 'x')"]).await;
    assert_unchanged_resync(&s, &rid, 2).await;

    for (sql, expected) in [
        (
            "create table `{db}`.c (id int)",
            triple("table_added", "c", ""),
        ),
        ("drop table `{db}`.b", triple("table_removed", "b", "")),
        (
            "alter table `{db}`.a add column n int not null default 3",
            triple("column_added", "a", "n"),
        ),
        (
            "alter table `{db}`.a modify v varchar(30)",
            triple("column_changed", "a", "v"),
        ),
        (
            "alter table `{db}`.a comment 'second'",
            triple("comment_changed", "a", ""),
        ),
    ] {
        db.run(&[sql]).await;
        let job = s.sync(&rid).await;
        assert_eq!(s.changes_of(&rid, &job).await, [expected], "{sql}");
    }
    assert_eq!(
        column(&s.table(&rid, &db.name, "a").await, "v")["data_type"],
        "varchar(30)"
    );
    assert_eq!(s.table(&rid, &db.name, "a").await["comment"], "second");
    assert_unchanged_resync(&s, &rid, 2).await;
    db.drop().await;
}

#[tokio::test]
async fn a_renamed_or_repointed_resource_is_reflected_on_the_next_sync() {
    let s = scanner().await;
    let first = create_source("create table one (id int);").await.unwrap();
    let second = create_database("mstest_src").await.unwrap();
    run_pg(&second, "create table two (id int)").await;
    let rid = s.register("postgres", &first, 5432, Value::Null).await;
    s.sync(&rid).await;
    let (status, _, body) = s
        .app
        .call(
            TENANT,
            Method::PATCH,
            &format!("/v1/resources/{rid}"),
            Some(json!({"name": "renamed", "database": second})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let job = s.sync(&rid).await;
    assert_eq!(stats(&job).tables_added, 1, "{job:?}");
    assert_eq!(stats(&job).tables_removed, 1, "{job:?}");
    assert_eq!(names(&s.tables(&rid).await, "name"), ["two"]);
    assert_eq!(
        s.get(&format!("/v1/resources/{rid}")).await["name"],
        "renamed"
    );

    // Retyped: the same resource now points at a MariaDB database.
    let maria = MariaDb::create().await;
    maria.run(&["create table `{db}`.three (id int)"]).await;
    let (status, _, body) = s
        .app
        .call(
            TENANT,
            Method::PATCH,
            &format!("/v1/resources/{rid}"),
            Some(json!({"kind": "mysql", "port": 3306, "database": maria.name, "password": ""})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "mysql");
    let job = s.sync(&rid).await;
    assert_eq!(stats(&job).tables_added, 1, "{job:?}");
    assert_eq!(stats(&job).tables_removed, 1, "{job:?}");
    assert_eq!(names(&s.tables(&rid).await, "name"), ["three"]);
    maria.drop().await;
}
