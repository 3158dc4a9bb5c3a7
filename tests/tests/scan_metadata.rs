//! Every metadata item the scanner reads, on PostgreSQL and MariaDB, and identifiers hostile
//! enough to break naive quoting, stored exactly.

use std::collections::BTreeSet;

use chrono::Utc;
use metasync_shared::catalog::{
    ConstraintKind, ForeignKeyAction, ForeignKeyMatch, ForeignKeyTarget, IndexKey, NullsOrder,
    SortOrder,
};
use metasync_tests::assert::{assert_job, stats};
use metasync_tests::fixtures::*;
use metasync_tests::{create_source, pg_url};
use serde_json::Value;
use sqlx::PgPool;

const PG_FIXTURE: &str = r"
create schema shop;
comment on schema shop is 'The shop';
create table shop.customers (
    id bigint generated always as identity primary key,
    email text not null,
    name varchar(100) default 'anonymous',
    email_lower text generated always as (lower(email)) stored,
    constraint customers_email_key unique (email)
);
comment on table shop.customers is 'People who pay';
comment on column shop.customers.email is 'Login address';
create table shop.orders (
    id bigint primary key,
    customer_id bigint not null,
    amount numeric(12, 2) not null default 0,
    tags text[],
    constraint orders_customer_fk foreign key (customer_id) references shop.customers (id),
    constraint orders_amount_check check (amount >= 0)
);
create index orders_by_customer on shop.orders (customer_id, amount);
create index orders_by_tag on shop.orders using gin (tags);
create index orders_lower on shop.orders ((amount * 2));
create table shop.events (id bigint, at date not null) partition by range (at);
create table shop.events_2026 partition of shop.events
    for values from ('2026-01-01') to ('2027-01-01');
create view shop.big_orders as select id, amount from shop.orders where amount > 1000;
create materialized view shop.order_totals as
    select customer_id, sum(amount) as total from shop.orders group by customer_id;
";

#[tokio::test]
async fn a_postgres_scan_reads_every_metadata_item() {
    let s = scanner().await;
    let source = create_source(PG_FIXTURE).await.unwrap();
    // A foreign table when postgres_fdw is installed (it is optional on a test machine).
    let fdw = {
        let pool = PgPool::connect(&pg_url(&source)).await.unwrap();
        let ok = sqlx::raw_sql(
            "create extension postgres_fdw;
             create server other foreign data wrapper postgres_fdw options (dbname 'postgres');
             create foreign table shop.remote (id int, label text) server other;",
        )
        .execute(&pool)
        .await
        .is_ok();
        pool.close().await;
        ok
    };
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    let job = s.sync(rid).await;
    let stats = assert_job(&job).stats();
    assert_eq!(stats.databases, 1, "{stats:?}");
    assert_eq!(stats.schemas, 2, "public and shop: {stats:?}");
    let expected_tables = if fdw { 7 } else { 6 };
    assert_eq!(stats.tables, expected_tables, "{stats:?}");
    assert_eq!(stats.tables_added, expected_tables, "{stats:?}");
    assert_eq!(stats.source_statements, 1, "{stats:?}");

    let schemas = s.schemas(rid).await;
    let shop = schemas.iter().find(|x| x.name == "shop").unwrap();
    assert_eq!(shop.comment.as_deref(), Some("The shop"));
    assert_eq!(shop.owner.as_deref(), Some("root"));
    assert_eq!(shop.database, source);
    assert_eq!(shop.tables, expected_tables as i64);

    let kinds = s.table_pairs(rid, |t| (t.name, t.kind)).await;
    let mut expected: BTreeSet<(String, String)> = [
        ("customers", "table"),
        ("orders", "table"),
        ("events", "partitioned_table"),
        ("events_2026", "table"),
        ("big_orders", "view"),
        ("order_totals", "materialized_view"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    if fdw {
        expected.insert(("remote".into(), "foreign_table".into()));
    }
    assert_eq!(kinds, expected);

    let customers = s.table(rid, "shop", "customers").await;
    assert_eq!(
        customers.definition.comment.as_deref(),
        Some("People who pay")
    );
    assert_eq!(customers.definition.owner.as_deref(), Some("root"));
    assert!(
        customers.definition.estimated_bytes.unwrap() > 0,
        "{customers:?}"
    );
    // The wire shape: `row_estimate` is sent even when the engine has no estimate (as `null`),
    // which the typed `Option` cannot tell from an absent field.
    let raw: Value = s.get(&format!("/v1/tables/{}", customers.id)).await;
    assert!(raw.get("row_estimate").is_some(), "{raw}");
    assert!(customers.last_changed_at <= Utc::now());
    let cols = column_names(&customers);
    assert_eq!(cols, ["id", "email", "name", "email_lower"]);
    let id = column(&customers, "id");
    assert_eq!(id.position, 1);
    assert_eq!(id.data_type, "bigint");
    assert!(!id.nullable);
    assert_eq!(id.details["identity"], "always");
    let email = column(&customers, "email");
    assert_eq!(email.comment.as_deref(), Some("Login address"));
    assert!(!email.nullable);
    let name = column(&customers, "name");
    assert_eq!(name.data_type, "character varying(100)");
    assert!(name.nullable);
    assert_eq!(
        name.default_value.as_deref(),
        Some("'anonymous'::character varying")
    );
    let generated = column(&customers, "email_lower");
    assert_eq!(generated.details["generated"], "lower(email)");
    assert_eq!(generated.default_value, None);
    let pk = constraint(&customers, "customers_pkey");
    assert_eq!(pk.kind, ConstraintKind::PrimaryKey);
    assert_eq!(pk.columns, ["id"]);
    let unique = constraint(&customers, "customers_email_key");
    assert_eq!(unique.kind, ConstraintKind::Unique);
    assert_eq!(unique.columns, ["email"]);
    let pk_index = index(&customers, "customers_pkey");
    assert!(pk_index.primary);
    assert!(pk_index.unique);
    assert_eq!(pk_index.method, "btree");

    let orders = s.table(rid, "shop", "orders").await;
    assert_eq!(column(&orders, "amount").data_type, "numeric(12,2)");
    assert_eq!(column(&orders, "tags").data_type, "text[]");
    let fk = constraint(&orders, "orders_customer_fk");
    assert_eq!(fk.kind, ConstraintKind::ForeignKey);
    assert_eq!(fk.columns, ["customer_id"]);
    assert_eq!(
        fk.references,
        Some(ForeignKeyTarget {
            schema: "shop".into(),
            table: "customers".into(),
            columns: strings(&["id"]),
        })
    );
    let check = constraint(&orders, "orders_amount_check");
    assert_eq!(check.kind, ConstraintKind::Check);
    assert_eq!(
        check.definition.as_deref(),
        Some("CHECK ((amount >= (0)::numeric))")
    );
    let by_customer = index(&orders, "orders_by_customer");
    assert_eq!(by_customer.columns, ["customer_id", "amount"]);
    assert!(!by_customer.unique);
    assert_eq!(index(&orders, "orders_by_tag").method, "gin");
    let expression = index(&orders, "orders_lower");
    assert_eq!(
        expression.expression.as_deref(),
        Some("(amount * (2)::numeric)")
    );

    let partition = s.table(rid, "shop", "events_2026").await;
    assert_eq!(partition.definition.details["partition_of"], "shop.events");
    let view = s.table(rid, "shop", "big_orders").await;
    assert!(
        view.definition
            .view_definition
            .as_deref()
            .unwrap()
            .contains("amount > (1000)::numeric"),
        "{view:?}"
    );
    assert_eq!(column_names(&view), ["id", "amount"]);
    let matview = s.table(rid, "shop", "order_totals").await;
    assert!(
        matview
            .definition
            .view_definition
            .as_deref()
            .unwrap()
            .contains("sum(")
    );
    assert_eq!(column_names(&matview), ["customer_id", "total"]);
    if fdw {
        let remote = s.table(rid, "shop", "remote").await;
        assert_eq!(column_names(&remote), ["id", "label"]);
    }
}

#[tokio::test]
async fn a_mariadb_scan_reads_every_metadata_item() {
    let s = scanner().await;
    let db = MariaDb::create().await;
    db.run(&[
        "create table `{db}`.customers (
             id int auto_increment primary key,
             email varchar(200) not null comment 'Login address',
             name varchar(100) default 'anonymous',
             unique key customers_email (email)
         ) engine=InnoDB comment 'People who pay'",
        "create table `{db}`.orders (
             id bigint primary key,
             customer_id int not null,
             amount decimal(12,2) not null default 0,
             constraint orders_customer_fk foreign key (customer_id) references `{db}`.customers (id),
             constraint orders_amount_check check (amount >= 0),
             key orders_by_customer (customer_id, amount)
         )",
        "create view `{db}`.big_orders as select id, amount from `{db}`.orders where amount > 1000",
    ])
    .await;
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    let job = s.sync(rid).await;
    assert_eq!(stats(&job).tables, 3, "{job:?}");
    assert_eq!(
        stats(&job).schemas,
        1,
        "only the resource's database: {job:?}"
    );
    assert_eq!(stats(&job).source_statements, 9, "{job:?}");

    let customers = s.table(rid, &db.name, "customers").await;
    assert_eq!(customers.definition.kind, "table");
    assert_eq!(
        customers.definition.comment.as_deref(),
        Some("People who pay")
    );
    assert_eq!(customers.definition.details["engine"], "InnoDB");
    assert!(customers.definition.details["created_at"].is_string());
    assert!(customers.definition.estimated_bytes.unwrap() > 0);
    let id = column(&customers, "id");
    assert_eq!(id.data_type, "int(11)");
    assert_eq!(id.details["extra"], "auto_increment");
    assert!(!id.nullable);
    let email = column(&customers, "email");
    assert_eq!(email.comment.as_deref(), Some("Login address"));
    assert_eq!(
        column(&customers, "name").default_value.as_deref(),
        Some("'anonymous'")
    );
    assert_eq!(
        constraint(&customers, "PRIMARY").kind,
        ConstraintKind::PrimaryKey
    );
    let unique = constraint(&customers, "customers_email");
    assert_eq!(unique.kind, ConstraintKind::Unique);
    assert_eq!(unique.columns, ["email"]);
    let pk_index = index(&customers, "PRIMARY");
    assert!(pk_index.primary);
    assert_eq!(pk_index.method, "btree");

    let orders = s.table(rid, &db.name, "orders").await;
    assert_eq!(column(&orders, "amount").data_type, "decimal(12,2)");
    let fk = constraint(&orders, "orders_customer_fk");
    assert_eq!(fk.kind, ConstraintKind::ForeignKey);
    assert_eq!(
        fk.references,
        Some(ForeignKeyTarget {
            schema: db.name.clone(),
            table: "customers".into(),
            columns: strings(&["id"]),
        })
    );
    let check = constraint(&orders, "orders_amount_check");
    assert_eq!(check.kind, ConstraintKind::Check);
    assert_eq!(check.definition.as_deref(), Some("`amount` >= 0"));
    let by_customer = index(&orders, "orders_by_customer");
    assert_eq!(by_customer.columns, ["customer_id", "amount"]);
    assert!(!by_customer.unique);

    let view = s.table(rid, &db.name, "big_orders").await;
    assert_eq!(view.definition.kind, "view");
    assert_eq!(view.definition.comment, None);
    assert!(
        view.definition
            .view_definition
            .as_deref()
            .unwrap()
            .contains("1000")
    );
    assert_eq!(column_names(&view), ["id", "amount"]);
    db.drop().await;
}

#[tokio::test]
async fn hostile_identifiers_round_trip_exactly() {
    let s = scanner().await;
    let long63 = format!("l{}", "o".repeat(61) + "g");
    assert_eq!(long63.len(), 63);
    // 63 bytes of Unicode: 21 three-byte characters.
    let long_unicode = "表".repeat(21);
    assert_eq!(long_unicode.len(), 63);
    let schema = "we\"ird.sch ema";
    let tables = [
        "with \"quotes\"",
        "with space",
        "dot.ted",
        "Ünïcödé_表",
        "select",
        "MiXeD",
        "'single'",
        long63.as_str(),
        long_unicode.as_str(),
    ];
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut sql = format!("create schema {};\n", quote(schema));
    for t in &tables {
        sql.push_str(&format!(
            "create table {}.{} ({} int, {} text);\n",
            quote(schema),
            quote(t),
            quote(t),
            quote("from")
        ));
    }
    // Comments with what COPY's text format must escape: tab, newline, CR, backslash, `\N`.
    let tricky = "tab\there\nnew line\r\\back\\slash \\N '\"";
    sql.push_str(&format!(
        "comment on column {}.{}.{} is '{}';\n",
        quote(schema),
        quote(tables[0]),
        quote("from"),
        tricky.replace('\'', "''")
    ));
    let source = create_source(&sql).await.unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    let first = s.table(rid, schema, tables[0]).await;
    assert_eq!(column(&first, "from").comment.as_deref(), Some(tricky));
    let stored: BTreeSet<String> = s
        .tables(rid)
        .await
        .into_iter()
        .inspect(|t| assert_eq!(t.schema, schema))
        .map(|t| t.name)
        .collect();
    assert_eq!(stored, tables.iter().map(ToString::to_string).collect());
    for t in &tables {
        let detail = s.table(rid, schema, t).await;
        assert_eq!(column_names(&detail), [*t, "from"]);
    }
    assert_unchanged_resync(&s, rid, tables.len() as u64).await;

    // MariaDB: 64-character names.
    let db = MariaDb::create().await;
    let long64 = "x".repeat(64);
    let long64_unicode = "é".repeat(64);
    let my_tables = [
        "with `backticks`",
        "with space",
        "dot.ted",
        "Ünïcödé_表",
        "select",
        long64.as_str(),
        long64_unicode.as_str(),
    ];
    let bt = |s: &str| format!("`{}`", s.replace('`', "``"));
    for t in &my_tables {
        db.run(&[&format!(
            "create table `{{db}}`.{} ({} int, `from` text)",
            bt(t),
            bt(t)
        )])
        .await;
    }
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    s.sync(rid).await;
    let stored: BTreeSet<String> = table_names(&s.tables(rid).await).into_iter().collect();
    assert_eq!(stored, my_tables.iter().map(ToString::to_string).collect());
    for t in &my_tables {
        let detail = s.table(rid, &db.name, t).await;
        assert_eq!(column_names(&detail), [*t, "from"]);
    }
    db.drop().await;
}

#[tokio::test]
async fn postgres_indexes_and_foreign_keys_are_described_in_full() {
    let s = scanner().await;
    let source = create_source(
        r#"create table parent (id int primary key, code text,
               constraint parent_code_key unique (code) deferrable initially deferred);
           create table child (
               id int, a text, b int, c int, pid int,
               constraint child_parent_fk foreign key (pid) references parent (id)
                   match full on delete cascade on update set null deferrable
           );
           create index child_partial on child (a desc nulls last, b nulls first)
               include (c) where b > 0;
           create index child_ops on child (lower(a) text_pattern_ops, a collate "C");
           create index child_hash on child using hash (b);
           create schema "We ird";
           create table "We ird"."T" ("select" text, "Mixed""q" int, x int);
           create index "Odd Index" on "We ird"."T" ("select" collate "POSIX" desc,
               ("Mixed""q" + x) nulls first, x int4_ops)
               include ("Mixed""q") where "select" <> 'x';
           create unique index plain on "We ird"."T" (x) where x > 0;"#,
    )
    .await
    .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(rid).await;
    let child = s.table(rid, "public", "child").await;

    let partial = index(&child, "child_partial");
    assert_eq!(partial.columns, ["a", "b"], "INCLUDE columns are not keys");
    assert_eq!(partial.include, ["c"]);
    assert_eq!(partial.predicate.as_deref(), Some("(b > 0)"));
    assert_eq!(
        partial.definition.as_deref(),
        Some(
            "CREATE INDEX child_partial ON public.child USING btree \
             (a DESC NULLS LAST, b NULLS FIRST) INCLUDE (c) WHERE (b > 0)"
        )
    );
    assert_eq!(
        partial.keys,
        [
            key("a", SortOrder::Desc, NullsOrder::Last),
            key("b", SortOrder::Asc, NullsOrder::First),
        ]
    );

    let ops = index(&child, "child_ops");
    assert_eq!(ops.columns, ["a"]);
    assert_eq!(
        ops.keys[0],
        IndexKey {
            column: None,
            expression: Some("lower(a)".into()),
            opclass: Some("text_pattern_ops".into()),
            ..key("", SortOrder::Asc, NullsOrder::Last)
        }
    );
    assert_eq!(
        ops.keys[1],
        IndexKey {
            collation: Some("C".into()),
            ..key("a", SortOrder::Asc, NullsOrder::Last)
        }
    );
    let hash = index(&child, "child_hash");
    assert_eq!(hash.method, "hash");
    assert_eq!(hash.keys[0].order, None, "a hash index keeps no order");
    assert_eq!(hash.keys[0].nulls, None);

    let fk = constraint(&child, "child_parent_fk");
    assert_eq!(fk.on_delete, Some(ForeignKeyAction::Cascade));
    assert_eq!(fk.on_update, Some(ForeignKeyAction::SetNull));
    assert_eq!(fk.match_type, Some(ForeignKeyMatch::Full));
    assert_eq!(fk.deferrable, Some(true));
    assert_eq!(fk.initially_deferred, Some(false));
    let parent = s.table(rid, "public", "parent").await;
    let unique = constraint(&parent, "parent_code_key");
    assert_eq!(unique.deferrable, Some(true));
    assert_eq!(unique.initially_deferred, Some(true));
    assert_eq!(unique.on_delete, None, "only a foreign key has actions");
    let pk = constraint(&parent, "parent_pkey");
    assert_eq!(pk.deferrable, Some(false));

    // The wire shape: snake_case names, absent where they do not apply.
    let raw: Value = s.get(&format!("/v1/tables/{}", child.id)).await;
    let fk_raw = raw["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "child_parent_fk")
        .unwrap();
    assert_eq!(fk_raw["on_delete"], "cascade", "{raw}");
    assert_eq!(fk_raw["on_update"], "set_null", "{raw}");
    assert_eq!(fk_raw["match_type"], "full", "{raw}");
    // The definition is composed by the worker from the parts; it is what the server prints.
    let pool = PgPool::connect(&pg_url(&source)).await.unwrap();
    let odd = s.table(rid, "We ird", "T").await;
    for name in ["Odd Index", "plain"] {
        let (server,): (String,) =
            sqlx::query_as("select pg_get_indexdef(c.oid) from pg_class c where c.relname = $1")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            index(&odd, name).definition.as_deref(),
            Some(server.as_str())
        );
    }
    pool.close().await;
    assert_unchanged_resync(&s, rid, 3).await;
}

fn key(column: &str, order: SortOrder, nulls: NullsOrder) -> IndexKey {
    IndexKey {
        column: Some(column.to_owned()).filter(|c| !c.is_empty()),
        expression: None,
        order: Some(order),
        nulls: Some(nulls),
        opclass: None,
        collation: None,
        prefix_length: None,
    }
}

#[tokio::test]
async fn mariadb_indexes_foreign_keys_and_columns_are_described_in_full() {
    let s = scanner().await;
    let db = MariaDb::create().await;
    db.run(&[
        "create table `{db}`.parent (id int primary key, code varchar(20) unique)",
        "create table `{db}`.child (
             id int primary key,
             a varchar(100) default 'NULL',
             b varchar(100),
             c int not null default 0,
             doc json,
             twice int as (c * 2) virtual,
             plus int as (c + 1) stored,
             pid int,
             key child_ab (a(10), b desc),
             fulltext key child_ft (b),
             constraint child_parent_fk foreign key (pid) references `{db}`.parent (id)
                 on delete cascade on update set null,
             constraint child_check check (c > 0 and `a` <> 'x`y'),
             constraint child_c_small check (c < 1000)
         )",
        "create view `{db}`.child_view as select id, c from `{db}`.child",
    ])
    .await;
    let rid = s.register("mysql", &db.name, 3306, Value::Null).await;
    let job = s.sync(rid).await;
    assert_eq!(stats(&job).source_statements, 9, "{job:?}");
    let child = s.table(rid, &db.name, "child").await;

    let ab = index(&child, "child_ab");
    assert_eq!(ab.columns, ["a", "b"]);
    assert_eq!(ab.keys[0].prefix_length, Some(10));
    assert_eq!(ab.keys[0].order, Some(SortOrder::Asc));
    assert_eq!(ab.keys[1].order, Some(SortOrder::Desc));
    assert_eq!(ab.keys[1].prefix_length, None);
    assert_eq!(
        ab.definition.as_deref(),
        Some("KEY `child_ab` (`a`(10),`b` DESC)")
    );
    let ft = index(&child, "child_ft");
    assert_eq!(ft.method, "fulltext");
    assert_eq!(ft.keys[0].order, None);
    assert_eq!(
        ft.definition.as_deref(),
        Some("FULLTEXT KEY `child_ft` (`b`)")
    );
    assert_eq!(
        index(&child, "PRIMARY").definition.as_deref(),
        Some("PRIMARY KEY (`id`)")
    );

    let fk = constraint(&child, "child_parent_fk");
    assert_eq!(fk.on_delete, Some(ForeignKeyAction::Cascade));
    assert_eq!(fk.on_update, Some(ForeignKeyAction::SetNull));
    assert_eq!(fk.match_type, Some(ForeignKeyMatch::Simple));
    assert_eq!(fk.deferrable, Some(false));

    let check = constraint(&child, "child_check");
    assert_eq!(check.columns, ["c", "a"], "{check:?}");
    assert_eq!(constraint(&child, "child_c_small").columns, ["c"]);

    // JSON is reported as such, and its json_valid check is not a constraint of its own.
    assert_eq!(column(&child, "doc").data_type, "json");
    assert!(
        child.definition.constraints.iter().all(|c| c.name != "doc"),
        "{:?}",
        child.definition.constraints
    );
    // SQL NULL (no default) and the string 'NULL' are told apart.
    assert_eq!(column(&child, "b").default_value, None);
    assert_eq!(column(&child, "a").default_value.as_deref(), Some("'NULL'"));
    assert_eq!(column(&child, "c").default_value.as_deref(), Some("0"));
    let twice = column(&child, "twice");
    assert_eq!(twice.details["generated"], "`c` * 2");
    assert_eq!(twice.details["extra"], "VIRTUAL GENERATED");
    assert_eq!(twice.default_value, None);
    assert_eq!(column(&child, "plus").details["generated"], "`c` + 1");

    let view = s.table(rid, &db.name, "child_view").await;
    assert_eq!(
        column(&view, "c").default_value,
        None,
        "a view has no defaults"
    );
    assert_unchanged_resync(&s, rid, 3).await;
    db.drop().await;
}
