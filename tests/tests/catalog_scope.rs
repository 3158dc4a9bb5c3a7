//! Scope changes: a resource's filters, depth or databases changed are recorded once as
//! `scope_changed` (before and after), and what left or entered the scope because of it is not
//! reported as removed or added, while real drops and additions in the same sync still are.

use metasync_shared::catalog::ChangeKind;
use metasync_tests::create_source;
use metasync_tests::fixtures::*;
use serde_json::{Value, json};

#[tokio::test]
async fn changed_filters_are_one_scope_change_and_real_drops_still_count() {
    let s = scanner().await;
    let source = create_source(
        "create schema sales;
         create table sales.orders (id int);
         create table a (id int);
         create table b (id int);
         create table tmp_x (id int);",
    )
    .await
    .unwrap();
    let rid = s
        .register(
            "postgres",
            &source,
            5432,
            json!({"exclude_tables": ["tmp_.*"]}),
        )
        .await;
    // The first sync records no scope change.
    let job = s.sync(rid).await;
    assert!(
        !s.changes_of(rid, &job)
            .await
            .iter()
            .any(|c| c.0 == ChangeKind::ScopeChanged)
    );
    let orders = s.table(rid, "sales", "orders").await.id;

    // `sales` leaves the scope and `tmp_x` enters it, while `b` is really dropped.
    s.set_options(rid, json!({"exclude_schemas": ["sales"]}))
        .await;
    let job = s.change_pg(&source, rid, "drop table b").await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [
            triple(ChangeKind::ScopeChanged, "", ""),
            triple(ChangeKind::TableRemoved, "b", ""),
        ]
    );
    let change = s.change_of_kind(rid, &job, ChangeKind::ScopeChanged).await;
    assert_eq!(
        change.details,
        json!({"before": {"exclude_tables": ["tmp_.*"]},
               "after": {"exclude_schemas": ["sales"]}})
    );
    assert_eq!((change.database.as_str(), change.schema.as_str()), ("", ""));
    assert_eq!(
        s.qualified_names(rid).await.into_iter().collect::<Vec<_>>(),
        ["public.a", "public.tmp_x"],
        "the catalog follows the scope"
    );
    assert!(
        s.schemas(rid)
            .await
            .iter()
            .all(|schema| schema.name != "sales")
    );
    assert_unchanged_resync(&s, rid, 2).await;

    // Back to the first filters, with a real addition: `sales.orders` comes back under its
    // id, `tmp_x` leaves, `c` is added.
    s.set_options(rid, json!({"exclude_tables": ["tmp_.*"]}))
        .await;
    let job = s.change_pg(&source, rid, "create table c (id int)").await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [
            triple(ChangeKind::ScopeChanged, "", ""),
            triple(ChangeKind::TableAdded, "c", ""),
        ]
    );
    assert_eq!(s.table(rid, "sales", "orders").await.id, orders);
    assert_eq!(
        s.qualified_names(rid).await.into_iter().collect::<Vec<_>>(),
        ["public.a", "public.c", "sales.orders"]
    );
    assert_unchanged_resync(&s, rid, 3).await;
}

#[tokio::test]
async fn changed_depth_is_one_scope_change() {
    let s = scanner().await;
    let source = create_source(
        "create type mood as enum ('ok', 'meh');
         create table a (id int primary key, v text, m mood);
         create index a_v on a (v);
         create table b (id int);",
    )
    .await
    .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    let a = s.table(rid, "public", "a").await.id;

    // Depth 2: the columns, constraints, indexes and types leave the scope, silently; a
    // table really dropped is still removed (depth 2 sees tables).
    s.set_options(rid, json!({"depth": 2})).await;
    let job = s.change_pg(&source, rid, "drop table b").await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [
            triple(ChangeKind::ScopeChanged, "", ""),
            triple(ChangeKind::TableRemoved, "b", ""),
        ]
    );
    let change = s.change_of_kind(rid, &job, ChangeKind::ScopeChanged).await;
    assert_eq!(change.details, json!({"before": {}, "after": {"depth": 2}}));
    assert!(column_names(&s.table(rid, "public", "a").await).is_empty());

    // Depth 1: the tables leave too.
    s.set_options(rid, json!({"depth": 1})).await;
    let job = s.sync(rid).await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::ScopeChanged, "", "")]
    );
    assert!(s.tables(rid).await.is_empty());

    // Depth 3 again: `a` is back under its id with its columns. A table created meanwhile
    // cannot be told from one that entered the scope (depth 1 saw no tables): not an addition.
    s.set_options(rid, json!({"depth": 3})).await;
    let job = s.change_pg(&source, rid, "create table d (id int)").await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::ScopeChanged, "", "")]
    );
    let back = s.table(rid, "public", "a").await;
    assert_eq!(back.id, a);
    assert_eq!(column_names(&back), ["id", "v", "m"]);
    assert_unchanged_resync(&s, rid, 2).await;
}

#[tokio::test]
async fn changed_filters_on_mariadb_are_one_scope_change() {
    let s = scanner().await;
    let db = MariaDb::create().await;
    db.run(&[
        "create table `{db}`.a (id int)",
        "create table `{db}`.b (id int)",
        "create table `{db}`.tmp_x (id int)",
    ])
    .await;
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    s.sync(rid).await;

    // `tmp_x` leaves the scope, `b` is really dropped.
    s.set_options(rid, json!({"exclude_tables": ["tmp_.*"]}))
        .await;
    db.run(&["drop table `{db}`.b"]).await;
    let job = s.sync(rid).await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [
            triple(ChangeKind::ScopeChanged, "", ""),
            triple(ChangeKind::TableRemoved, "b", ""),
        ]
    );
    assert_eq!(table_names(&s.tables(rid).await), ["a"]);

    // Another database (a schema, on MariaDB) enters the scope, then leaves it: silently.
    let other = MariaDb::create().await;
    other.run(&["create table `{db}`.z (id int)"]).await;
    s.set_options(
        rid,
        json!({"exclude_tables": ["tmp_.*"], "databases": [db.name, other.name]}),
    )
    .await;
    let job = s.sync(rid).await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::ScopeChanged, "", "")]
    );
    assert!(
        s.qualified_names(rid)
            .await
            .contains(&format!("{}.z", other.name))
    );
    s.set_options(rid, json!({"exclude_tables": ["tmp_.*"]}))
        .await;
    let job = s.sync(rid).await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::ScopeChanged, "", "")]
    );
    assert_eq!(table_names(&s.tables(rid).await), ["a"]);
    other.drop().await;
    db.drop().await;
}
