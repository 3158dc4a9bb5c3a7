//! Incremental sync: a resync writes only what changed and records exactly that in the change
//! history, on PostgreSQL and MariaDB, including a renamed or repointed resource.

use chrono::SecondsFormat;
use metasync_shared::catalog::{ChangeKind, ColumnRef, TypeKind};
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

#[tokio::test]
async fn index_and_foreign_key_details_are_changes_of_their_own() {
    let s = scanner().await;
    let source = create_source(
        "create table p (id int primary key);
         create table t (id int, v int, pid int,
             constraint t_p_fk foreign key (pid) references p (id));
         create index t_v on t (v) where v > 0;",
    )
    .await
    .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;

    let job = s
        .change_pg(
            &source,
            rid,
            "drop index t_v; create index t_v on t (v) where v > 10",
        )
        .await;
    let change = s
        .only_change(rid, &job, triple(ChangeKind::IndexChanged, "t", "t_v"))
        .await;
    assert_eq!(change.details["before"]["predicate"], "(v > 0)");
    assert_eq!(change.details["after"]["predicate"], "(v > 10)");

    let job = s
        .change_pg(
            &source,
            rid,
            "drop index t_v; create index t_v on t (v desc)",
        )
        .await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::IndexChanged, "t", "t_v")],
        "the order of a key part"
    );

    let job = s
        .change_pg(
            &source,
            rid,
            "alter table t drop constraint t_p_fk,
                 add constraint t_p_fk foreign key (pid) references p (id) on delete cascade",
        )
        .await;
    let change = s
        .only_change(
            rid,
            &job,
            triple(ChangeKind::ConstraintChanged, "t", "t_p_fk"),
        )
        .await;
    assert_eq!(change.details["before"]["on_delete"], "no_action");
    assert_eq!(change.details["after"]["on_delete"], "cascade");
    assert_unchanged_resync(&s, rid, 2).await;

    // MariaDB: a foreign key's action and an index's order.
    let db = MariaDb::create().await;
    db.run(&[
        "create table `{db}`.p (id int primary key)",
        "create table `{db}`.t (id int, v int, pid int, key t_v (v),
             constraint t_p_fk foreign key (pid) references `{db}`.p (id))",
    ])
    .await;
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    s.sync(rid).await;
    db.run(&[
        "alter table `{db}`.t drop foreign key t_p_fk",
        "alter table `{db}`.t add constraint t_p_fk foreign key (pid)
             references `{db}`.p (id) on update cascade",
    ])
    .await;
    let job = s.sync(rid).await;
    let change = s
        .only_change(
            rid,
            &job,
            triple(ChangeKind::ConstraintChanged, "t", "t_p_fk"),
        )
        .await;
    assert_eq!(change.details["before"]["on_update"], "restrict");
    assert_eq!(change.details["after"]["on_update"], "cascade");
    db.run(&["alter table `{db}`.t drop index t_v, add index t_v (v desc)"])
        .await;
    let job = s.sync(rid).await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::IndexChanged, "t", "t_v")]
    );
    assert_unchanged_resync(&s, rid, 2).await;
    db.drop().await;
}

#[tokio::test]
async fn enum_values_domains_and_sequences_are_read_and_their_changes_recorded() {
    let s = scanner().await;
    let source = create_source(
        "create type mood as enum ('sad', 'ok');
         comment on type mood is 'How it went';
         create domain price as numeric(10,2) not null default 1
             constraint price_positive check (value > 0);
         create table t (id serial, n bigint generated always as identity, m mood, p price);",
    )
    .await
    .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    let schemas = s.schemas(rid).await;
    let public = schemas.iter().find(|x| x.name == "public").unwrap();
    let mood = public.types.iter().find(|t| t.name == "mood").unwrap();
    assert_eq!(mood.kind, TypeKind::Enum);
    assert_eq!(mood.values, ["sad", "ok"]);
    assert_eq!(mood.comment.as_deref(), Some("How it went"));
    let price = public.types.iter().find(|t| t.name == "price").unwrap();
    assert_eq!(price.kind, TypeKind::Domain);
    assert_eq!(price.base_type.as_deref(), Some("numeric(10,2)"));
    assert_eq!(price.nullable, Some(false));
    assert_eq!(price.default_value.as_deref(), Some("1"));
    assert_eq!(price.checks[0].name, "price_positive");
    assert_eq!(
        price.checks[0].definition.as_deref(),
        Some("CHECK ((VALUE > (0)::numeric))")
    );
    let serial = public
        .sequences
        .iter()
        .find(|q| q.name == "t_id_seq")
        .unwrap();
    assert_eq!(serial.data_type, "integer");
    assert_eq!(serial.max, i64::from(i32::MAX));
    assert!(!serial.identity);
    assert_eq!(
        serial.owned_by,
        Some(ColumnRef {
            schema: "public".into(),
            table: "t".into(),
            column: "id".into()
        })
    );
    let identity = public
        .sequences
        .iter()
        .find(|q| q.name == "t_n_seq")
        .unwrap();
    assert!(identity.identity);
    assert_eq!(identity.owned_by.as_ref().unwrap().column, "n");
    assert_unchanged_resync(&s, rid, 1).await;
    // Nor does it rewrite the schemas' types and sequences.
    let xmins = || {
        sqlx::query_scalar::<_, String>(
            "select string_agg(xmin::text, ',' order by name) from catalog_schemas
             where resource_id = $1",
        )
        .bind(rid)
        .fetch_one(&s.app.db)
    };
    let before = xmins().await.unwrap();
    s.sync(rid).await;
    assert_eq!(
        xmins().await.unwrap(),
        before,
        "an unchanged resync rewrote a schema"
    );

    let job = s
        .change_pg(
            &source,
            rid,
            "alter type mood add value 'happy' before 'ok'",
        )
        .await;
    let change = s
        .only_change(rid, &job, triple(ChangeKind::TypeChanged, "", "mood"))
        .await;
    assert_eq!(change.table, None);
    assert_eq!(change.details["before"]["values"], json!(["sad", "ok"]));
    assert_eq!(
        change.details["after"]["values"],
        json!(["sad", "happy", "ok"])
    );

    let job = s
        .change_pg(
            &source,
            rid,
            "create sequence tickets increment 5 start 10;
             alter domain price drop constraint price_positive;
             alter domain price add constraint price_small check (value < 100)",
        )
        .await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [
            triple(ChangeKind::SequenceAdded, "", "tickets"),
            triple(ChangeKind::TypeChanged, "", "price"),
        ]
    );
    let job = s.change_pg(&source, rid, "drop sequence tickets").await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::SequenceRemoved, "", "tickets")]
    );
    assert_unchanged_resync(&s, rid, 1).await;
}

#[tokio::test]
async fn partitions_attached_and_detached_are_recorded() {
    let s = scanner().await;
    let source = create_source(
        "create table events (id int, at date not null) partition by range (at);
         create table events_2026 partition of events
             for values from ('2026-01-01') to ('2027-01-01');
         create unlogged table scratch (k text collate \"C\") with (fillfactor = 70);",
    )
    .await
    .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    let parent = s.table(rid, "public", "events").await;
    assert_eq!(parent.definition.details["partition_key"], "RANGE (at)");
    let partition = s.table(rid, "public", "events_2026").await;
    assert_eq!(
        partition.definition.details["partition_bound"],
        "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
    );
    let scratch = s.table(rid, "public", "scratch").await;
    assert_eq!(scratch.definition.details["persistence"], "unlogged");
    assert_eq!(
        scratch.definition.details["reloptions"],
        json!(["fillfactor=70"])
    );
    assert_eq!(column(&scratch, "k").details["collation"], "C");

    let job = s
        .change_pg(
            &source,
            rid,
            "alter table events detach partition events_2026",
        )
        .await;
    let change = s
        .only_change(
            rid,
            &job,
            triple(ChangeKind::TableChanged, "events_2026", ""),
        )
        .await;
    assert_eq!(
        change.details["before"]["details"]["partition_of"],
        "public.events"
    );
    assert_eq!(change.details["after"]["details"], json!({}));

    let job = s
        .change_pg(
            &source,
            rid,
            "alter table events attach partition events_2026
                 for values from ('2026-01-01') to ('2026-07-01')",
        )
        .await;
    let change = s
        .only_change(
            rid,
            &job,
            triple(ChangeKind::TableChanged, "events_2026", ""),
        )
        .await;
    assert_eq!(
        change.details["after"]["details"]["partition_bound"],
        "FOR VALUES FROM ('2026-01-01') TO ('2026-07-01')"
    );
    assert_unchanged_resync(&s, rid, 3).await;
}

#[tokio::test]
async fn mariadb_partitions_are_read_and_their_changes_recorded() {
    let s = scanner().await;
    let db = MariaDb::create().await;
    db.run(&["create table `{db}`.events (id int, at date not null)
             partition by range (year(at)) (
                 partition p2025 values less than (2026),
                 partition pmax values less than maxvalue)"])
        .await;
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    let job = s.sync(rid).await;
    assert_eq!(
        stats(&job).source_statements,
        10,
        "one more for the partitions: {job:?}"
    );
    let events = s.table(rid, &db.name, "events").await;
    assert_eq!(
        events.definition.details["partition_key"],
        "RANGE (year(`at`))"
    );
    assert_eq!(
        events.definition.details["partitions"],
        json!([
            {"name": "p2025", "bound": "VALUES LESS THAN (2026)"},
            {"name": "pmax", "bound": "VALUES LESS THAN MAXVALUE"},
        ])
    );
    assert_unchanged_resync(&s, rid, 1).await;

    db.run(
        &["alter table `{db}`.events reorganize partition pmax into (
                 partition p2026 values less than (2027),
                 partition pmax values less than maxvalue)"],
    )
    .await;
    let job = s.sync(rid).await;
    let change = s
        .only_change(rid, &job, triple(ChangeKind::TableChanged, "events", ""))
        .await;
    assert_eq!(
        change.details["after"]["details"]["partitions"][1]["name"],
        "p2026"
    );
    db.run(&["alter table `{db}`.events remove partitioning"])
        .await;
    let job = s.sync(rid).await;
    assert_eq!(
        s.changes_of(rid, &job).await,
        [triple(ChangeKind::TableChanged, "events", "")]
    );
    let events = s.table(rid, &db.name, "events").await;
    assert!(events.definition.details.get("partitions").is_none());
    db.drop().await;
}

#[tokio::test]
async fn mariadb_sequences_are_listed_under_their_schema_with_their_changes() {
    let s = scanner().await;
    let db = MariaDb::create().await;
    db.run(&[
        "create table `{db}`.t (id int)",
        "create sequence `{db}`.`tick``ets` start with 10 increment by 5",
    ])
    .await;
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    let job = s.sync(rid).await;
    assert_eq!(
        stats(&job).source_statements,
        10,
        "one more for the sequences: {job:?}"
    );
    assert_eq!(table_names(&s.tables(rid).await), ["t"], "not a table");
    let schemas = s.schemas(rid).await;
    let sequence = &schemas[0].sequences[0];
    assert_eq!(sequence.name, "tick`ets");
    assert_eq!((sequence.start, sequence.increment), (10, 5));
    assert!(!sequence.cycle);
    assert_unchanged_resync(&s, rid, 1).await;

    db.run(&["alter sequence `{db}`.`tick``ets` increment by 7 cycle"])
        .await;
    let job = s.sync(rid).await;
    let change = s
        .only_change(
            rid,
            &job,
            triple(ChangeKind::SequenceChanged, "", "tick`ets"),
        )
        .await;
    assert_eq!(change.details["after"]["increment"], 7);
    assert_eq!(change.details["after"]["cycle"], true);
    db.drop().await;
}
