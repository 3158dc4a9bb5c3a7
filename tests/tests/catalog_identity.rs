//! Identity and history: a table keeps its id across resyncs and renames (PostgreSQL, by the
//! relation's oid), takes its old id back when it reappears under its old name, and never takes
//! a live table's id; on MariaDB, with no stable id, a rename stays a drop and an add.

use metasync_shared::catalog::ChangeKind;
use metasync_shared::db::catalog::{TableDetail, prune_retired_tables};
use metasync_shared::ids::{ResourceId, TableId};
use metasync_tests::assert::stats;
use metasync_tests::create_source;
use metasync_tests::fixtures::*;
use reqwest::Method;
use serde_json::{Value, json};

/// The stored id of `schema.name`.
async fn id_of(s: &Scanner, rid: ResourceId, schema: &str, name: &str) -> TableId {
    s.table(rid, schema, name).await.id
}

/// `GET /v1/tables/{id}`: the table, or `None` on a 404.
async fn table_by_id(s: &Scanner, id: TableId) -> Option<TableDetail> {
    let path = format!("/v1/tables/{id}");
    let (status, _, body) = s.app.call(TENANT, Method::GET, &path, None).await.unwrap();
    match status {
        200 => Some(serde_json::from_value(body).unwrap()),
        404 => None,
        other => panic!("GET {path}: {other} {body}"),
    }
}

#[tokio::test]
async fn postgres_renames_keep_the_table_and_its_id() {
    let s = scanner().await;
    let source = create_source(
        "create table a (id int primary key, v text);
         create table b (id int);
         create schema other;",
    )
    .await
    .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    let a = id_of(&s, rid, "public", "a").await;

    // A table renamed in place: one table_renamed, the same id.
    let job = s
        .change_pg(&source, rid, "alter table a rename to a2")
        .await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::TableRenamed, "a2", "")]
    );
    assert_eq!(
        (stats(&job).tables_changed, stats(&job).tables_added),
        (1, 0)
    );
    let change = s.change_of_kind(rid, &job, ChangeKind::TableRenamed).await;
    assert_eq!(
        change.details,
        json!({"before": {"schema": "public", "name": "a"},
               "after": {"schema": "public", "name": "a2"}})
    );
    let renamed = table_by_id(&s, a).await.expect("the old id still answers");
    assert_eq!(renamed.definition.name, "a2");
    assert_eq!(column_names(&renamed), ["id", "v"]);
    assert_eq!(id_of(&s, rid, "public", "a2").await, a);
    assert_unchanged_resync(&s, rid, 2).await;

    // A column renamed in place: column_renamed, not a removal and an addition.
    let job = s
        .change_pg(&source, rid, "alter table a2 rename column v to w")
        .await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::ColumnRenamed, "a2", "w")]
    );
    let change = s.change_of_kind(rid, &job, ChangeKind::ColumnRenamed).await;
    assert_eq!(
        change.details,
        json!({"before": {"name": "v"}, "after": {"name": "w"}})
    );

    // Renamed, one column renamed and retyped, one added: each recorded as what it is.
    let job = s
        .change_pg(
            &source,
            rid,
            "alter table a2 rename to a3;
             alter table a3 rename column w to x;
             alter table a3 alter column x type varchar(10);
             alter table a3 add column y int",
        )
        .await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [
            triple(ChangeKind::ColumnAdded, "a3", "y"),
            triple(ChangeKind::ColumnChanged, "a3", "x"),
            triple(ChangeKind::ColumnRenamed, "a3", "x"),
            triple(ChangeKind::TableRenamed, "a3", ""),
        ]
    );
    let changed = s.change_of_kind(rid, &job, ChangeKind::ColumnChanged).await;
    assert_eq!(changed.details["before"]["data_type"], "text");
    assert_eq!(
        changed.details["after"]["data_type"],
        "character varying(10)"
    );
    assert_eq!(
        column_names(&s.table(rid, "public", "a3").await),
        ["id", "x", "y"]
    );

    // A move to another schema is a rename too (same oid).
    let job = s
        .change_pg(&source, rid, "alter table a3 set schema other")
        .await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::TableRenamed, "a3", "")]
    );
    let change = s.change_of_kind(rid, &job, ChangeKind::TableRenamed).await;
    assert_eq!(change.schema, "other");
    assert_eq!(change.details["before"]["schema"], "public");
    assert_eq!(id_of(&s, rid, "other", "a3").await, a);
    assert_eq!(table_by_id(&s, a).await.unwrap().definition.schema, "other");
    assert_unchanged_resync(&s, rid, 2).await;
}

#[tokio::test]
async fn postgres_a_table_that_comes_back_gets_its_old_id_and_never_a_live_one() {
    let s = scanner().await;
    let source = create_source("create table t (id int); create table keep (id int);")
        .await
        .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    let t = id_of(&s, rid, "public", "t").await;

    // Dropped: removed, and its id answers 404.
    let job = s.change_pg(&source, rid, "drop table t").await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::TableRemoved, "t", "")]
    );
    assert!(table_by_id(&s, t).await.is_none());

    // Re-created under the same name: added, under its old id.
    let job = s
        .change_pg(&source, rid, "create table t (id int, note text)")
        .await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::TableAdded, "t", "")]
    );
    assert_eq!(id_of(&s, rid, "public", "t").await, t);
    assert_eq!(
        column_names(&table_by_id(&s, t).await.unwrap()),
        ["id", "note"]
    );
    assert_unchanged_resync(&s, rid, 2).await;

    // Renamed away, and a new table takes the name in the same interval: the renamed one
    // keeps the id, the new one gets a new id (the name's old id is live).
    let job = s
        .change_pg(
            &source,
            rid,
            "alter table t rename to u; create table t (other int)",
        )
        .await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [
            triple(ChangeKind::TableAdded, "t", ""),
            triple(ChangeKind::TableRenamed, "u", ""),
        ]
    );
    assert_eq!(id_of(&s, rid, "public", "u").await, t);
    let second = id_of(&s, rid, "public", "t").await;
    assert_ne!(second, t);
    assert_ne!(second, id_of(&s, rid, "public", "keep").await);

    // The new `t` dropped, and `u` renamed back onto the name: it keeps its own id, not the
    // one the name last retired.
    s.change_pg(&source, rid, "drop table t").await;
    let job = s.change_pg(&source, rid, "alter table u rename to t").await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::TableRenamed, "t", "")]
    );
    assert_eq!(id_of(&s, rid, "public", "t").await, t);
    assert!(table_by_id(&s, second).await.is_none());

    // A new `u`: the name never retired an id (it was a rename), so a new one.
    s.change_pg(&source, rid, "create table u (z int)").await;
    let u = id_of(&s, rid, "public", "u").await;
    assert!(
        ![t, second].contains(&u),
        "a new table never takes a live table's id"
    );

    // Dropped and re-created: the latest id to leave under the name comes back.
    s.change_pg(&source, rid, "drop table t").await;
    s.change_pg(&source, rid, "create table t (id int)").await;
    assert_eq!(id_of(&s, rid, "public", "t").await, t);
    assert_unchanged_resync(&s, rid, 3).await;
}

#[tokio::test]
async fn mariadb_renames_are_a_removal_and_an_addition() {
    let s = scanner().await;
    let db = MariaDb::create().await;
    db.run(&["create table `{db}`.t (id int primary key, v text)"])
        .await;
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    s.sync(rid).await;
    let t = id_of(&s, rid, &db.name, "t").await;

    // No stable id on MariaDB: a rename is what it looks like, a drop and an add.
    db.run(&["rename table `{db}`.t to `{db}`.u"]).await;
    let job = s.sync(rid).await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [
            triple(ChangeKind::TableAdded, "u", ""),
            triple(ChangeKind::TableRemoved, "t", ""),
        ]
    );
    assert_ne!(id_of(&s, rid, &db.name, "u").await, t);
    assert!(table_by_id(&s, t).await.is_none());

    // A column rename likewise.
    db.run(&["alter table `{db}`.u rename column v to w"]).await;
    let job = s.sync(rid).await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [
            triple(ChangeKind::ColumnAdded, "u", "w"),
            triple(ChangeKind::ColumnRemoved, "u", "v"),
        ]
    );

    // Renamed back: the name's old id comes back.
    db.run(&["rename table `{db}`.u to `{db}`.t"]).await;
    s.sync(rid).await;
    assert_eq!(id_of(&s, rid, &db.name, "t").await, t);
    db.drop().await;
}

#[tokio::test]
async fn a_table_gone_longer_than_the_retention_comes_back_with_a_new_id() {
    let s = scanner().await;
    let source = create_source("create table t (id int); create table u (id int);")
        .await
        .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    let (t, u) = (
        id_of(&s, rid, "public", "t").await,
        id_of(&s, rid, "public", "u").await,
    );
    s.change_pg(&source, rid, "drop table t; drop table u")
        .await;

    // `t` left 31 days ago, past the 30-day retention; `u` just now.
    sqlx::query(
        "update catalog_retired_tables set retired_at = now() - interval '31 days'
         where name = 't'",
    )
    .execute(&s.app.db)
    .await
    .unwrap();
    let retention = std::time::Duration::from_secs(30 * 24 * 3600);
    let forgotten = prune_retired_tables(&s.app.db, retention, 100)
        .await
        .unwrap();
    assert_eq!(forgotten, 1);

    s.change_pg(
        &source,
        rid,
        "create table t (id int); create table u (id int)",
    )
    .await;
    assert_ne!(id_of(&s, rid, "public", "t").await, t);
    assert_eq!(id_of(&s, rid, "public", "u").await, u);
}
