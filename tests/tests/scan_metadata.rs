//! Every metadata item the scanner reads, on PostgreSQL and MariaDB, and identifiers hostile
//! enough to break naive quoting, stored exactly.

use std::collections::BTreeSet;

use metasync_tests::assert::{assert_job, stats};
use metasync_tests::fixtures::*;
use metasync_tests::{create_source, pg_url};
use serde_json::{Value, json};
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
    let job = s.sync(&rid).await;
    let stats = assert_job(&job).stats();
    assert_eq!(stats.databases, 1, "{stats:?}");
    assert_eq!(stats.schemas, 2, "public and shop: {stats:?}");
    let expected_tables = if fdw { 7 } else { 6 };
    assert_eq!(stats.tables, expected_tables, "{stats:?}");
    assert_eq!(stats.tables_added, expected_tables, "{stats:?}");
    assert_eq!(stats.source_statements, 1, "{stats:?}");

    let schemas = s.get(&format!("/v1/resources/{rid}/schemas")).await;
    let shop = schemas["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "shop")
        .unwrap();
    assert_eq!(shop["comment"], "The shop");
    assert_eq!(shop["owner"], "root");
    assert_eq!(shop["database"], source.as_str());
    assert_eq!(shop["tables"], expected_tables);

    let kinds = s.table_pairs(&rid, "name", "kind").await;
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

    let customers = s.table(&rid, "shop", "customers").await;
    assert_eq!(customers["comment"], "People who pay");
    assert_eq!(customers["owner"], "root");
    assert!(
        customers["total_bytes"].as_i64().unwrap() > 0,
        "{customers}"
    );
    assert!(customers.get("row_estimate").is_some());
    assert!(customers["last_changed_at"].is_string());
    let cols = column_names(&customers);
    assert_eq!(cols, ["id", "email", "name", "email_lower"]);
    let id = column(&customers, "id");
    assert_eq!(id["position"], 1);
    assert_eq!(id["data_type"], "bigint");
    assert_eq!(id["nullable"], false);
    assert_eq!(id["details"]["identity"], "always");
    let email = column(&customers, "email");
    assert_eq!(email["comment"], "Login address");
    assert_eq!(email["nullable"], false);
    let name = column(&customers, "name");
    assert_eq!(name["data_type"], "character varying(100)");
    assert_eq!(name["nullable"], true);
    assert_eq!(name["default_value"], "'anonymous'::character varying");
    let generated = column(&customers, "email_lower");
    assert_eq!(generated["details"]["generated"], "lower(email)");
    assert!(generated["default_value"].is_null());
    let pk = named(&customers, "constraints", "customers_pkey");
    assert_eq!(pk["kind"], "primary_key");
    assert_eq!(pk["columns"], json!(["id"]));
    let unique = named(&customers, "constraints", "customers_email_key");
    assert_eq!(unique["kind"], "unique");
    assert_eq!(unique["columns"], json!(["email"]));
    let pk_index = named(&customers, "indexes", "customers_pkey");
    assert_eq!(pk_index["primary"], true);
    assert_eq!(pk_index["unique"], true);
    assert_eq!(pk_index["method"], "btree");

    let orders = s.table(&rid, "shop", "orders").await;
    assert_eq!(column(&orders, "amount")["data_type"], "numeric(12,2)");
    assert_eq!(column(&orders, "tags")["data_type"], "text[]");
    let fk = named(&orders, "constraints", "orders_customer_fk");
    assert_eq!(fk["kind"], "foreign_key");
    assert_eq!(fk["columns"], json!(["customer_id"]));
    assert_eq!(
        fk["references"],
        json!({"schema": "shop", "table": "customers", "columns": ["id"]})
    );
    let check = named(&orders, "constraints", "orders_amount_check");
    assert_eq!(check["kind"], "check");
    assert_eq!(check["definition"], "CHECK ((amount >= (0)::numeric))");
    let by_customer = named(&orders, "indexes", "orders_by_customer");
    assert_eq!(by_customer["columns"], json!(["customer_id", "amount"]));
    assert_eq!(by_customer["unique"], false);
    assert_eq!(named(&orders, "indexes", "orders_by_tag")["method"], "gin");
    let expression = named(&orders, "indexes", "orders_lower");
    assert_eq!(expression["expression"], "(amount * (2)::numeric)");

    let partition = s.table(&rid, "shop", "events_2026").await;
    assert_eq!(partition["details"]["partition_of"], "shop.events");
    let view = s.table(&rid, "shop", "big_orders").await;
    assert!(
        view["view_definition"]
            .as_str()
            .unwrap()
            .contains("amount > (1000)::numeric"),
        "{view}"
    );
    assert_eq!(column_names(&view), ["id", "amount"]);
    let matview = s.table(&rid, "shop", "order_totals").await;
    assert!(
        matview["view_definition"]
            .as_str()
            .unwrap()
            .contains("sum(")
    );
    assert_eq!(column_names(&matview), ["customer_id", "total"]);
    if fdw {
        let remote = s.table(&rid, "shop", "remote").await;
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
    let job = s.sync(&rid).await;
    assert_eq!(stats(&job).tables, 3, "{job:?}");
    assert_eq!(
        stats(&job).schemas,
        1,
        "only the resource's database: {job:?}"
    );
    assert_eq!(stats(&job).source_statements, 9, "{job:?}");

    let customers = s.table(&rid, &db.name, "customers").await;
    assert_eq!(customers["kind"], "table");
    assert_eq!(customers["comment"], "People who pay");
    assert_eq!(customers["details"]["engine"], "InnoDB");
    assert!(customers["details"]["created_at"].is_string());
    assert!(customers["total_bytes"].as_i64().unwrap() > 0);
    let id = column(&customers, "id");
    assert_eq!(id["data_type"], "int(11)");
    assert_eq!(id["details"]["extra"], "auto_increment");
    assert_eq!(id["nullable"], false);
    let email = column(&customers, "email");
    assert_eq!(email["comment"], "Login address");
    assert_eq!(column(&customers, "name")["default_value"], "'anonymous'");
    assert_eq!(
        named(&customers, "constraints", "PRIMARY")["kind"],
        "primary_key"
    );
    let unique = named(&customers, "constraints", "customers_email");
    assert_eq!(unique["kind"], "unique");
    assert_eq!(unique["columns"], json!(["email"]));
    let pk_index = named(&customers, "indexes", "PRIMARY");
    assert_eq!(pk_index["primary"], true);
    assert_eq!(pk_index["method"], "btree");

    let orders = s.table(&rid, &db.name, "orders").await;
    assert_eq!(column(&orders, "amount")["data_type"], "decimal(12,2)");
    let fk = named(&orders, "constraints", "orders_customer_fk");
    assert_eq!(fk["kind"], "foreign_key");
    assert_eq!(
        fk["references"],
        json!({"schema": db.name, "table": "customers", "columns": ["id"]})
    );
    let check = named(&orders, "constraints", "orders_amount_check");
    assert_eq!(check["kind"], "check");
    assert_eq!(check["definition"], "`amount` >= 0");
    let index = named(&orders, "indexes", "orders_by_customer");
    assert_eq!(index["columns"], json!(["customer_id", "amount"]));
    assert_eq!(index["unique"], false);

    let view = s.table(&rid, &db.name, "big_orders").await;
    assert_eq!(view["kind"], "view");
    assert!(view["comment"].is_null());
    assert!(view["view_definition"].as_str().unwrap().contains("1000"));
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
    s.sync(&rid).await;
    let first = s.table(&rid, schema, tables[0]).await;
    assert_eq!(column(&first, "from")["comment"], tricky);
    let stored: BTreeSet<String> = s
        .tables(&rid)
        .await
        .iter()
        .inspect(|t| assert_eq!(t["schema"], schema))
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, tables.iter().map(ToString::to_string).collect());
    for t in &tables {
        let detail = s.table(&rid, schema, t).await;
        assert_eq!(column_names(&detail), [*t, "from"]);
    }
    assert_unchanged_resync(&s, &rid, tables.len() as u64).await;

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
    s.sync(&rid).await;
    let stored: BTreeSet<String> = names(&s.tables(&rid).await, "name").into_iter().collect();
    assert_eq!(stored, my_tables.iter().map(ToString::to_string).collect());
    for t in &my_tables {
        let detail = s.table(&rid, &db.name, t).await;
        assert_eq!(column_names(&detail), [*t, "from"]);
    }
    db.drop().await;
}
