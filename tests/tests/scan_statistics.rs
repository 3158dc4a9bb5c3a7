//! Statistics (row estimates, estimated sizes) are refreshed on every sync, on PostgreSQL and
//! MariaDB, without counting as a change of a table's definition: no change history, the
//! definition and `last_changed_at` untouched, and a resync where nothing moved writes nothing.

use metasync_shared::catalog::TableInfo;
use metasync_shared::db::catalog::TableDetail;
use metasync_shared::ids::ResourceId;
use metasync_tests::assert::stats;
use metasync_tests::create_source;
use metasync_tests::fixtures::*;
use serde_json::Value;

/// A table's definition without its statistics: what a statistics refresh must leave alone.
fn definition(table: &TableDetail) -> TableInfo {
    TableInfo {
        row_estimate: None,
        estimated_bytes: None,
        ..table.definition.clone()
    }
}

/// Syncs after the source's statistics moved for table `a` only, and checks that the job
/// refreshed them as statistics: returns `a` as stored after.
async fn resync_refreshes_statistics_only(
    s: &Scanner,
    rid: ResourceId,
    schema: &str,
    tables: u64,
) -> TableDetail {
    let before = s.table(rid, schema, "a").await;
    let others_before = s.tables(rid).await;
    let changes_before = s.change_count(rid).await;

    let job = s.sync(rid).await;
    let refreshed = stats(&job);
    assert_eq!(refreshed.tables_unchanged, tables, "{refreshed:?}");
    assert_eq!(
        refreshed.tables_changed, 0,
        "statistics are not a change: {refreshed:?}"
    );
    assert_eq!(refreshed.tables_statistics_updated, 1, "{refreshed:?}");
    assert!(s.changes_by(rid, &job).await.is_empty());
    assert_eq!(s.change_count(rid).await, changes_before);

    let after = s.table(rid, schema, "a").await;
    assert_eq!(after.id, before.id);
    assert_eq!(after.last_changed_at, before.last_changed_at);
    assert_eq!(definition(&after), definition(&before));
    let others_after = s.tables(rid).await;
    for (old, new) in others_before.iter().zip(&others_after) {
        assert_eq!(
            (old.id, old.last_changed_at),
            (new.id, new.last_changed_at),
            "{new:?}"
        );
        if new.name != "a" {
            assert_eq!(
                (old.row_estimate, old.estimated_bytes),
                (new.row_estimate, new.estimated_bytes),
                "only a's statistics moved: {new:?}"
            );
        }
    }

    // Nothing moved since: the next resync writes no statistics either.
    let job = s.sync(rid).await;
    assert_eq!(stats(&job).tables_statistics_updated, 0, "{job:?}");
    assert_unchanged_resync(s, rid, tables).await;
    after
}

#[tokio::test]
async fn postgres_statistics_are_refreshed_on_every_sync_without_a_change() {
    let s = scanner().await;
    let source = create_source(
        "create table a (id int primary key, v text);
         create table b (id int);
         create view c as select id from b;",
    )
    .await
    .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    let a = s.table(rid, "public", "a").await;
    assert_eq!(a.definition.row_estimate, None, "never analyzed: {a:?}");
    assert_unchanged_resync(&s, rid, 3).await;

    run_pg(
        &source,
        "insert into a select n, 'row ' || n from generate_series(1, 2000) n; analyze a;",
    )
    .await;
    let a = resync_refreshes_statistics_only(&s, rid, "public", 3).await;
    assert_eq!(a.definition.row_estimate, Some(2000), "{a:?}");
    let bytes = a.definition.estimated_bytes.unwrap();
    assert!(bytes >= 8192 * 5, "2,000 rows take pages: {bytes}");
    let view = s.table(rid, "public", "c").await;
    assert_eq!(
        (
            view.definition.row_estimate,
            view.definition.estimated_bytes
        ),
        (None, None),
        "a view has no statistics"
    );
}

#[tokio::test]
async fn mariadb_statistics_are_refreshed_on_every_sync_without_a_change() {
    let s = scanner().await;
    let db = MariaDb::create().await;
    db.run(&[
        "create table `{db}`.a (id int primary key, v text) engine = InnoDB",
        "create table `{db}`.b (id int) engine = InnoDB",
        "create view `{db}`.c as select id from `{db}`.b",
    ])
    .await;
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    s.sync(rid).await;
    assert_unchanged_resync(&s, rid, 3).await;

    db.run(&[
        "insert into `{db}`.a select seq, concat('row ', seq) from seq_1_to_2000",
        "analyze table `{db}`.a",
    ])
    .await;
    let a = resync_refreshes_statistics_only(&s, rid, &db.name, 3).await;
    // InnoDB's TABLE_ROWS is an estimate from sampled pages, close to the count after ANALYZE.
    let rows = a.definition.row_estimate.unwrap();
    assert!((1000..=4000).contains(&rows), "{a:?}");
    assert!(a.definition.estimated_bytes.unwrap() > 16384, "{a:?}");
    db.drop().await;
}
