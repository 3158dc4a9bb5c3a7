//! The scanner, end to end: real PostgreSQL and MariaDB sources, the API on port 0 and a
//! worker in-process. Covers every metadata item, the constant statement count, filters and
//! depths, incremental sync with its change history, hostile identifiers, pagination, search
//! and conditional reads. Each test has its own catalog and its own source databases.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metasync_tests::{TestApp, TestWorker, create_database, create_source, pg_url, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::{MySqlPool, PgPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TENANT: &str = "acme";
const MARIADB_ADMIN: &str = "mysql://root@127.0.0.1:3306/test";

/// An app, a worker, and typed helpers for the scanner's story.
struct Scanner {
    app: TestApp,
    _worker: TestWorker,
}

async fn scanner() -> Scanner {
    let app = spawn_app().await.expect("spawning the app");
    let worker = app.spawn_worker();
    Scanner {
        app,
        _worker: worker,
    }
}

impl Scanner {
    async fn get(&self, path: &str) -> Value {
        let (status, _, body) = self
            .app
            .call(TENANT, Method::GET, path, None)
            .await
            .unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Registers a source and returns its id; `options` may be `Value::Null`.
    async fn register(&self, kind: &str, database: &str, port: u16, options: Value) -> String {
        let (status, _, body) = self.try_register(kind, database, port, options).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn try_register(
        &self,
        kind: &str,
        database: &str,
        port: u16,
        options: Value,
    ) -> (u16, String, Value) {
        let name = format!("src-{}", uuid::Uuid::now_v7().simple());
        let password = if kind == "mysql" { "" } else { "unused" };
        self.app
            .call(
                TENANT,
                Method::POST,
                "/v1/resources",
                Some(json!({
                    "name": name, "kind": kind, "host": "127.0.0.1", "port": port,
                    "database": database, "username": "root", "password": password,
                    "options": options,
                })),
            )
            .await
            .unwrap()
    }

    async fn set_options(&self, rid: &str, options: Value) {
        let (status, _, body) = self
            .app
            .call(
                TENANT,
                Method::PATCH,
                &format!("/v1/resources/{rid}"),
                Some(json!({ "options": options })),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }

    /// Runs `sql` in a PostgreSQL source, then syncs and returns the succeeded job.
    async fn change_pg(&self, source: &str, rid: &str, sql: &str) -> Value {
        run_pg(source, sql).await;
        self.sync(rid).await
    }

    /// Syncs and returns the succeeded job.
    async fn sync(&self, rid: &str) -> Value {
        let job = self.app.sync(TENANT, rid).await.unwrap();
        let job = self
            .app
            .wait_for_job(
                TENANT,
                job["id"].as_str().unwrap(),
                Duration::from_secs(120),
            )
            .await
            .unwrap();
        assert_eq!(job["state"], "succeeded", "{job}");
        job
    }

    /// Every item of a paginated listing, following `next_cursor`.
    async fn all_pages(&self, path: &str, limit: usize) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{path}{sep}limit={limit}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&url).await;
            let got = page["items"].as_array().unwrap();
            assert!(got.len() <= limit);
            items.extend(got.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
    }

    async fn tables(&self, rid: &str) -> Vec<Value> {
        self.all_pages(&format!("/v1/resources/{rid}/tables"), 1000)
            .await
    }

    /// Two fields of every stored table, e.g. `("schema", "name")`.
    async fn table_pairs(&self, rid: &str, a: &str, b: &str) -> BTreeSet<(String, String)> {
        let field = |t: &Value, k: &str| t[k].as_str().unwrap().to_owned();
        self.tables(rid)
            .await
            .iter()
            .map(|t| (field(t, a), field(t, b)))
            .collect()
    }

    /// The stored tables as `schema.name`.
    async fn qualified_names(&self, rid: &str) -> BTreeSet<String> {
        self.table_pairs(rid, "schema", "name")
            .await
            .into_iter()
            .map(|(schema, name)| format!("{schema}.{name}"))
            .collect()
    }

    async fn table(&self, rid: &str, schema: &str, name: &str) -> Value {
        let tables = self.tables(rid).await;
        let found = tables
            .iter()
            .find(|t| t["schema"] == schema && t["name"] == name)
            .unwrap_or_else(|| panic!("{schema}.{name} missing from {tables:?}"));
        self.get(&format!("/v1/tables/{}", found["id"].as_str().unwrap()))
            .await
    }

    /// The change history a job recorded, as `(kind, table, object)` triples, sorted.
    async fn changes_of(&self, rid: &str, job: &Value) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = self
            .all_pages(&format!("/v1/resources/{rid}/changes"), 1000)
            .await
            .into_iter()
            .filter(|c| c["job_id"] == job["id"])
            .map(|c| {
                (
                    c["kind"].as_str().unwrap().to_owned(),
                    c["table"].as_str().unwrap_or_default().to_owned(),
                    c["object_name"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }

    async fn change_count(&self, rid: &str) -> usize {
        self.all_pages(&format!("/v1/resources/{rid}/changes"), 1000)
            .await
            .len()
    }
}

fn triple(kind: &str, table: &str, object: &str) -> (String, String, String) {
    (kind.to_owned(), table.to_owned(), object.to_owned())
}

fn names(items: &[Value], key: &str) -> Vec<String> {
    items
        .iter()
        .map(|v| v[key].as_str().unwrap().to_owned())
        .collect()
}

fn column_names(table: &Value) -> Vec<String> {
    names(table["columns"].as_array().unwrap(), "name")
}

fn column<'a>(table: &'a Value, name: &str) -> &'a Value {
    table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("column {name} missing from {table}"))
}

fn named<'a>(table: &'a Value, family: &str, name: &str) -> &'a Value {
    table[family]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{family} {name} missing from {table}"))
}

async fn run_pg(database: &str, sql: &str) {
    let pool = PgPool::connect(&pg_url(database)).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// A MariaDB database named `mstest_…`, so `deploy/local/test.sh` cleans it up if a test dies.
struct MariaDb {
    name: String,
    admin: MySqlPool,
}

impl MariaDb {
    async fn create() -> Self {
        let admin = MySqlPool::connect(MARIADB_ADMIN).await.unwrap();
        let name = format!("mstest_{}", uuid::Uuid::now_v7().simple());
        let db = Self { name, admin };
        db.run(&[&format!("create database `{}`", db.name)]).await;
        db
    }

    /// Runs statements one by one; `{db}` is replaced by the database name.
    async fn run(&self, statements: &[&str]) {
        for sql in statements {
            let sql = sql.replace("{db}", &self.name);
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&self.admin)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    async fn drop(self) {
        self.run(&["drop database `{db}`"]).await;
        self.admin.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Every metadata item

const PG_FIXTURE: &str = r#"
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
"#;

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
    let stats = &job["stats"];
    assert_eq!(stats["databases"], 1, "{stats}");
    assert_eq!(stats["schemas"], 2, "public and shop: {stats}");
    let expected_tables = if fdw { 7 } else { 6 };
    assert_eq!(stats["tables"], expected_tables, "{stats}");
    assert_eq!(stats["tables_added"], expected_tables, "{stats}");
    assert_eq!(stats["source_statements"], 1, "{stats}");

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
    assert_eq!(job["stats"]["tables"], 3, "{job}");
    assert_eq!(
        job["stats"]["schemas"], 1,
        "only the resource's database: {job}"
    );
    assert_eq!(job["stats"]["source_statements"], 9, "{job}");

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

// ---------------------------------------------------------------------------------------------
// A constant number of statements

/// A TCP proxy in front of a real server that counts the statements clients send: PostgreSQL
/// `Query` and `Execute` messages, or MySQL `COM_QUERY` and `COM_STMT_EXECUTE` packets. An
/// independent check of the scanner's own `source_statements`.
struct CountingProxy {
    port: u16,
    statements: Arc<AtomicU64>,
}

impl CountingProxy {
    async fn start(upstream: u16, mysql: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let server = TcpStream::connect(("127.0.0.1", upstream)).await?;
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::spawn(async move {
                        tokio::io::copy(&mut server_read, &mut client_write).await
                    });
                    if mysql {
                        count_mysql(&mut client_read, &mut server_write, &counter).await
                    } else {
                        count_postgres(&mut client_read, &mut server_write, &counter).await
                    }
                });
            }
        });
        Self { port, statements }
    }

    fn take(&self) -> u64 {
        self.statements.swap(0, Ordering::SeqCst)
    }
}

async fn forward(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    len: usize,
    head: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut body = vec![0; len];
    from.read_exact(&mut body).await?;
    to.write_all(head).await?;
    to.write_all(&body).await?;
    Ok(body)
}

async fn count_postgres(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    counter: &AtomicU64,
) -> std::io::Result<()> {
    // The startup message has no type byte.
    let mut len = [0; 4];
    from.read_exact(&mut len).await?;
    forward(from, to, u32::from_be_bytes(len) as usize - 4, &len).await?;
    loop {
        let mut head = [0; 5];
        from.read_exact(&mut head).await?;
        if matches!(head[0], b'Q' | b'E') {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        forward(from, to, len - 4, &head).await?;
    }
}

async fn count_mysql(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    counter: &AtomicU64,
) -> std::io::Result<()> {
    let mut packets = 0u64;
    loop {
        let mut head = [0; 4];
        from.read_exact(&mut head).await?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        let body = forward(from, to, len, &head).await?;
        packets += 1;
        // The first packet is the handshake response; commands start a sequence at 0.
        if packets > 1 && head[3] == 0 && matches!(body.first(), Some(0x03 | 0x17)) {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// `n` tables of 24 columns: at 500 tables the 12,000 columns are written with COPY (the
/// writer's path for large writes) and read back by the test.
fn many_pg_tables(n: usize) -> String {
    let wide: String = (0..21).map(|i| format!(", w{i} int")).collect();
    let mut sql = String::from("create schema bulk;\n");
    for i in 0..n {
        sql.push_str(&format!(
            "create table bulk.t{i} (id int primary key, a text, b int references bulk.t0 (id) \
             {fk}{wide}); create index t{i}_a on bulk.t{i} (a); \
             comment on table bulk.t{i} is 'n{i}';\n",
            fk = if i == 0 { "deferrable" } else { "" }
        ));
    }
    sql
}

#[tokio::test]
async fn statements_per_database_do_not_grow_with_the_table_count() {
    let s = scanner().await;
    let pg_proxy = CountingProxy::start(5432, false).await;
    let mut pg_counts = Vec::new();
    for n in [10, 500] {
        let source = create_source(&many_pg_tables(n)).await.unwrap();
        let rid = s
            .register("postgres", &source, pg_proxy.port, Value::Null)
            .await;
        pg_proxy.take();
        let job = s.sync(&rid).await;
        assert_eq!(job["stats"]["tables"], n, "{job}");
        assert_eq!(job["stats"]["columns"], n * 24, "{job}");
        let last = s.table(&rid, "bulk", &format!("t{}", n - 1)).await;
        assert_eq!(column_names(&last).len(), 24);
        assert_eq!(last["comment"], format!("n{}", n - 1));
        let seen = pg_proxy.take();
        pg_counts.push((job["stats"]["source_statements"].as_u64().unwrap(), seen));
    }
    assert_eq!(
        pg_counts,
        [(1, 1), (1, 1)],
        "(reported, counted on the wire)"
    );

    let my_proxy = CountingProxy::start(3306, true).await;
    let mut my_counts = Vec::new();
    let mut dbs = Vec::new();
    for n in [10usize, 500] {
        let db = MariaDb::create().await;
        let statements: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "create table `{{db}}`.t{i} (id int primary key, a varchar(20), \
                     key t{i}_a (a)) comment 'n{i}'"
                )
            })
            .collect();
        db.run(&statements.iter().map(String::as_str).collect::<Vec<_>>())
            .await;
        let rid = s
            .register("mysql", &db.name, my_proxy.port, Value::Null)
            .await;
        my_proxy.take();
        let job = s.sync(&rid).await;
        assert_eq!(job["stats"]["tables"], n, "{job}");
        let seen = my_proxy.take();
        my_counts.push((job["stats"]["source_statements"].as_u64().unwrap(), seen));
        dbs.push(db);
    }
    // The driver adds one statement of its own when it connects (sql_mode, time zone, names).
    assert_eq!(
        my_counts,
        [(9, 10), (9, 10)],
        "(reported, counted on the wire)"
    );
    for db in dbs {
        db.drop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Options: filters, depths, databases

const FILTER_FIXTURE: &str = r#"
create schema sales; create schema sales_archive; create schema hr;
create table sales.orders (id int); create table sales.tmp_orders (id int);
create table sales_archive.orders (id int);
create table hr.people (id int, name text);
create view hr.people_view as select id from hr.people;
"#;

#[tokio::test]
async fn filters_and_depths_shape_what_is_stored() {
    let s = scanner().await;
    let source = create_source(FILTER_FIXTURE).await.unwrap();
    let rid = s
        .register(
            "postgres",
            &source,
            5432,
            json!({
                "include_schemas": ["sales.*", "hr"],
                "exclude_schemas": [".*_archive"],
                "exclude_tables": ["tmp_.*"],
            }),
        )
        .await;
    s.sync(&rid).await;
    let tables = s.qualified_names(&rid).await;
    assert_eq!(
        tables,
        ["hr.people", "hr.people_view", "sales.orders"]
            .map(String::from)
            .into()
    );
    let schemas = s.get(&format!("/v1/resources/{rid}/schemas")).await;
    assert_eq!(
        names(schemas["items"].as_array().unwrap(), "name"),
        ["hr", "sales"]
    );

    // Depth 2: tables without columns; fewer statements.
    s.set_options(&rid, json!({"depth": 2, "include_tables": ["people"]}))
        .await;
    let job = s.sync(&rid).await;
    assert_eq!(job["stats"]["source_statements"], 1, "{job}");
    assert_eq!(job["stats"]["tables"], 1, "{job}");
    assert_eq!(job["stats"]["tables_removed"], 2, "{job}");
    let people = s.table(&rid, "hr", "people").await;
    assert_eq!(people["columns"], json!([]));
    let schemas = s.get(&format!("/v1/resources/{rid}/schemas")).await;
    assert_eq!(
        names(schemas["items"].as_array().unwrap(), "name"),
        ["hr", "public", "sales", "sales_archive"]
    );

    // Depth 1: schemas only.
    s.set_options(&rid, json!({"depth": 1})).await;
    let job = s.sync(&rid).await;
    assert_eq!(job["stats"]["source_statements"], 1, "{job}");
    assert_eq!(job["stats"]["tables"], 0, "{job}");
    assert!(s.tables(&rid).await.is_empty());
    assert_eq!(job["stats"]["schemas"], 4, "{job}");

    // Depth 3 again: everything, with columns.
    s.set_options(&rid, json!({"depth": 3})).await;
    let job = s.sync(&rid).await;
    assert_eq!(job["stats"]["tables"], 5, "{job}");
    let people = s.table(&rid, "hr", "people").await;
    assert_eq!(column_names(&people), ["id", "name"]);
}

#[tokio::test]
async fn a_list_of_databases_is_scanned_one_by_one() {
    let s = scanner().await;
    let first = create_source("create table one (id int);").await.unwrap();
    let second = create_source("create schema s; create table s.two (id int);")
        .await
        .unwrap();
    let rid = s
        .register(
            "postgres",
            &first,
            5432,
            json!({"databases": [first, second]}),
        )
        .await;
    let job = s.sync(&rid).await;
    assert_eq!(job["stats"]["databases"], 2, "{job}");
    assert_eq!(
        job["stats"]["source_statements"], 2,
        "1 per database: {job}"
    );
    let tables = s.table_pairs(&rid, "database", "name").await;
    assert_eq!(
        tables,
        [
            (first.clone(), "one".to_owned()),
            (second.clone(), "two".to_owned())
        ]
        .into()
    );

    // MariaDB: the listed databases, filtered by table name.
    let a = MariaDb::create().await;
    let b = MariaDb::create().await;
    a.run(&[
        "create table `{db}`.keep (id int)",
        "create table `{db}`.tmp_x (id int)",
    ])
    .await;
    b.run(&["create table `{db}`.other (id int)"]).await;
    let rid = s
        .register(
            "mysql",
            &a.name,
            3306,
            json!({"databases": [a.name, b.name], "exclude_tables": ["tmp_.*"]}),
        )
        .await;
    s.sync(&rid).await;
    let tables = s.qualified_names(&rid).await;
    assert_eq!(
        tables,
        [format!("{}.keep", a.name), format!("{}.other", b.name)].into()
    );
    a.drop().await;
    b.drop().await;
}

#[tokio::test]
async fn bad_options_are_refused_with_a_clear_message() {
    let s = scanner().await;
    for (options, needle) in [
        (json!({"depth": 0}), "`options.depth` must be 1, 2 or 3"),
        (json!({"databases": "everything"}), "`options.databases`"),
        (
            json!({"include_schemas": ["("]}),
            "not a valid regular expression",
        ),
        (
            json!({"exclude_tables": "tmp"}),
            "`options.exclude_tables` must be a list",
        ),
        (
            json!({"include_schema": []}),
            "`options.include_schema` is not a scan option",
        ),
        (json!([]), "`options` must be a JSON object"),
    ] {
        let (status, content_type, body) = s
            .try_register("postgres", "postgres", 5432, options.clone())
            .await;
        assert_eq!(status, 422, "{options}: {body}");
        assert_eq!(content_type, "application/problem+json");
        assert!(
            body["detail"].as_str().unwrap().contains(needle),
            "{options}: {body}"
        );
    }
    let rid = s.register("postgres", "postgres", 5432, json!({})).await;
    let (status, _, body) = s
        .app
        .call(
            TENANT,
            Method::PATCH,
            &format!("/v1/resources/{rid}"),
            Some(json!({"options": {"depth": "deep"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
}

// ---------------------------------------------------------------------------------------------
// Incremental sync and change history

/// Asserts an unchanged resync: every table unchanged, no change recorded, no row rewritten.
async fn assert_unchanged_resync(s: &Scanner, rid: &str, tables: u64) {
    let before = s.change_count(rid).await;
    let stamps: Vec<(String, String)> = s
        .tables(rid)
        .await
        .iter()
        .map(|t| (t["id"].to_string(), t["last_changed_at"].to_string()))
        .collect();
    let job = s.sync(rid).await;
    let stats = &job["stats"];
    assert_eq!(stats["tables_unchanged"], tables, "{stats}");
    assert_eq!(stats["tables_added"], 0, "{stats}");
    assert_eq!(stats["tables_changed"], 0, "{stats}");
    assert_eq!(stats["tables_removed"], 0, "{stats}");
    assert_eq!(s.change_count(rid).await, before);
    let after: Vec<(String, String)> = s
        .tables(rid)
        .await
        .iter()
        .map(|t| (t["id"].to_string(), t["last_changed_at"].to_string()))
        .collect();
    assert_eq!(stamps, after, "an unchanged resync rewrote a table");
}

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
    assert_eq!(job["stats"]["tables_added"], 1, "{job}");
    assert_eq!(job["stats"]["tables_unchanged"], 2, "{job}");
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
    assert_eq!(job["stats"]["tables_removed"], 1, "{job}");
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
    assert_eq!(job["stats"]["tables_changed"], 1, "{job}");
    assert_eq!(job["stats"]["tables_unchanged"], 1, "{job}");
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
    let change = all.iter().find(|c| c["job_id"] == job["id"]).unwrap();
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
    assert_eq!(job["stats"]["tables_changed"], 2, "{job}");
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
        .find(|c| c["job_id"] == job["id"] && c["kind"] == "comment_changed")
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

// ---------------------------------------------------------------------------------------------
// Hostile identifiers

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
    assert_eq!(stored, tables.iter().map(|t| t.to_string()).collect());
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
    assert_eq!(stored, my_tables.iter().map(|t| t.to_string()).collect());
    for t in &my_tables {
        let detail = s.table(&rid, &db.name, t).await;
        assert_eq!(column_names(&detail), [*t, "from"]);
    }
    db.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Reads: pagination, search, conditional requests, tenancy

#[tokio::test]
async fn cursor_pagination_never_skips_or_repeats() {
    let s = scanner().await;
    let mut sql = String::from("create schema z; create schema \"A\";");
    for i in 0..250 {
        let schema = if i % 3 == 0 { "\"A\"" } else { "z" };
        // Names that sort differently byte-wise, case-wise and numerically.
        sql.push_str(&format!(
            "create table {schema}.\"T_{i}\" (c{i} int, shared_col int);"
        ));
    }
    let source = create_source(&sql).await.unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(&rid).await;

    let pages = s.all_pages(&format!("/v1/resources/{rid}/tables"), 7).await;
    let ids: Vec<String> = names(&pages, "id");
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 250, "every table once");
    assert_eq!(unique.len(), 250, "no table twice");
    let whole = s.tables(&rid).await;
    assert_eq!(
        names(&whole, "id"),
        ids,
        "pages concatenate to the whole, in order"
    );

    let filtered = s
        .all_pages(&format!("/v1/resources/{rid}/tables?schema=A"), 7)
        .await;
    assert_eq!(filtered.len(), 84);

    let changes = s
        .all_pages(&format!("/v1/resources/{rid}/changes"), 7)
        .await;
    let change_ids: BTreeSet<String> = names(&changes, "id").into_iter().collect();
    assert_eq!(changes.len(), 253, "250 tables and 3 schemas");
    assert_eq!(change_ids.len(), 253);

    let hits = s.all_pages("/v1/search?q=shared_col", 7).await;
    let hit_tables: BTreeSet<String> = names(&hits, "table_id").into_iter().collect();
    assert_eq!(hits.len(), 250);
    assert_eq!(hit_tables.len(), 250);
}

#[tokio::test]
async fn search_finds_tables_and_columns_in_the_callers_tenant_only() {
    let s = scanner().await;
    let source = create_source(
        "create table invoices (id int, invoice_total numeric);
         create table people (id int, \"Invoice_Ref\" int);
         create table other (id int);",
    )
    .await
    .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(&rid).await;
    let hits = s.get("/v1/search?q=INVOICE").await;
    let found: Vec<(String, String, String)> = hits["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap().to_owned(),
                h["table"].as_str().unwrap().to_owned(),
                h["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let found: BTreeSet<_> = found.into_iter().collect();
    assert_eq!(
        found,
        [
            ("table".into(), "invoices".into(), "invoices".into()),
            ("column".into(), "invoices".into(), "invoice_total".into()),
            ("column".into(), "people".into(), "Invoice_Ref".into()),
        ]
        .into()
    );
    let hit = &hits["items"][0];
    assert_eq!(hit["resource_id"], rid.as_str());
    assert_eq!(hit["database"], source.as_str());
    // Wildcards are literal.
    assert_eq!(s.get("/v1/search?q=%25%25%25").await["items"], json!([]));
    // Another tenant sees nothing.
    let (status, _, other) = s
        .app
        .call("globex", Method::GET, "/v1/search?q=invoice", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(other["items"], json!([]));
    // Too short to use the trigram index.
    let (status, _, _) = s
        .app
        .call(TENANT, Method::GET, "/v1/search?q=in", None)
        .await
        .unwrap();
    assert_eq!(status, 400);

    // The search predicate can use the trigram indexes (forced, since the test tables are
    // tiny; catalog_columns has no other index on its name or tenant, so at scale it is the
    // trigram index or a scan of every column).
    let mut conn = s.app.db.acquire().await.unwrap();
    sqlx::query("set enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    for (table, index) in [
        ("catalog_tables", "catalog_tables_name_trgm"),
        ("catalog_columns", "catalog_columns_name_trgm"),
    ] {
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "explain select * from {table} where name ilike '%invoice%'"
        )))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        assert!(plan.join("\n").contains(index), "{plan:?}");
    }
    sqlx::query("reset enable_seqscan")
        .execute(&mut *conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unchanged_catalog_answers_304() {
    let s = scanner().await;
    let source = create_source("create table a (id int); create table b (id int);")
        .await
        .unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(&rid).await;
    let table_id = s.tables(&rid).await[0]["id"].as_str().unwrap().to_owned();
    let paths = [
        format!("/v1/resources/{rid}/tables"),
        format!("/v1/resources/{rid}/schemas"),
        format!("/v1/resources/{rid}/changes"),
        format!("/v1/tables/{table_id}"),
        "/v1/search?q=ids_none".to_owned(),
    ];
    let get = |path: String, etag: Option<String>| {
        let mut request = s
            .app
            .http
            .get(s.app.url(&path))
            .bearer_auth(s.app.token(TENANT));
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let etag = response
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.text().await.unwrap();
            (status, etag, body)
        }
    };
    let mut etags = Vec::new();
    for path in &paths {
        let (status, etag, _) = get(path.clone(), None).await;
        assert_eq!(status, 200, "{path}");
        let etag = etag.unwrap_or_else(|| panic!("{path} sent no ETag"));
        let (status, again, body) = get(path.clone(), Some(etag.clone())).await;
        assert_eq!(status, 304, "{path}");
        assert_eq!(again.as_deref(), Some(etag.as_str()));
        assert!(body.is_empty());
        let (status, _, _) = get(path.clone(), Some("\"something-else\"".into())).await;
        assert_eq!(status, 200, "{path}");
        etags.push(etag);
    }

    // An unchanged resync keeps every tag.
    s.sync(&rid).await;
    for (path, etag) in paths.iter().zip(&etags) {
        let (status, _, _) = get(path.clone(), Some(etag.clone())).await;
        assert_eq!(status, 304, "{path} after an unchanged resync");
    }

    // A change moves the listing's tag.
    run_pg(&source, "create table c (id int)").await;
    s.sync(&rid).await;
    let (status, etag, _) = get(paths[0].clone(), Some(etags[0].clone())).await;
    assert_eq!(status, 200);
    assert_ne!(etag.unwrap(), etags[0]);
}

#[tokio::test]
async fn another_tenants_catalog_is_not_found() {
    let s = scanner().await;
    let source = create_source("create table a (id int);").await.unwrap();
    let rid = s.register("postgres", &source, 5432, Value::Null).await;
    s.sync(&rid).await;
    let table_id = s.tables(&rid).await[0]["id"].as_str().unwrap().to_owned();
    for path in [
        format!("/v1/resources/{rid}/tables"),
        format!("/v1/resources/{rid}/schemas"),
        format!("/v1/resources/{rid}/changes"),
        format!("/v1/tables/{table_id}"),
    ] {
        let (status, content_type, _) = s
            .app
            .call("globex", Method::GET, &path, None)
            .await
            .unwrap();
        assert_eq!(status, 404, "{path}");
        assert_eq!(content_type, "application/problem+json");
    }
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
    assert_eq!(job["stats"]["tables_added"], 1, "{job}");
    assert_eq!(job["stats"]["tables_removed"], 1, "{job}");
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
    assert_eq!(job["stats"]["tables_added"], 1, "{job}");
    assert_eq!(job["stats"]["tables_removed"], 1, "{job}");
    assert_eq!(names(&s.tables(&rid).await, "name"), ["three"]);
    maria.drop().await;
}
