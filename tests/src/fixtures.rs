//! Fixtures for the scanner's stories (`tests/scan_*.rs`, `tests/catalog_api.rs`): an app with
//! an in-process worker, helpers that read the catalog API, source databases on the local
//! PostgreSQL and MariaDB, and small accessors for the JSON the catalog routes return.

use std::collections::BTreeSet;
use std::time::Duration;

use metasync_shared::db::jobs::Job;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::{MySqlPool, PgPool};

use crate::assert::assert_job;
use crate::{TestApp, TestWorker, pg_url, spawn_app};

pub const TENANT: &str = "acme";
pub const MARIADB_ADMIN: &str = "mysql://root@127.0.0.1:3306/test";

/// An app, a worker, and typed helpers for the scanner's story.
pub struct Scanner {
    pub app: TestApp,
    _worker: TestWorker,
}

pub async fn scanner() -> Scanner {
    let app = spawn_app().await.expect("spawning the app");
    let worker = app.spawn_worker().await;
    Scanner {
        app,
        _worker: worker,
    }
}

impl Scanner {
    pub async fn get(&self, path: &str) -> Value {
        let (status, _, body) = self
            .app
            .call(TENANT, Method::GET, path, None)
            .await
            .unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Registers a source and returns its id; `options` may be `Value::Null`.
    pub async fn register(&self, kind: &str, database: &str, port: u16, options: Value) -> String {
        let (status, _, body) = self.try_register(kind, database, port, options).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn try_register(
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

    pub async fn set_options(&self, rid: &str, options: Value) {
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
    pub async fn change_pg(&self, source: &str, rid: &str, sql: &str) -> Job {
        run_pg(source, sql).await;
        self.sync(rid).await
    }

    /// Syncs and returns the succeeded job.
    pub async fn sync(&self, rid: &str) -> Job {
        let job = self.app.sync(TENANT, rid).await.unwrap();
        let job = self
            .app
            .wait_for_job(TENANT, job.id, Duration::from_secs(120))
            .await
            .unwrap();
        assert_job(&job).succeeded();
        job
    }

    /// Every item of a paginated listing, following `next_cursor`.
    pub async fn all_pages(&self, path: &str, limit: usize) -> Vec<Value> {
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

    pub async fn tables(&self, rid: &str) -> Vec<Value> {
        self.all_pages(&format!("/v1/resources/{rid}/tables"), 1000)
            .await
    }

    /// Two fields of every stored table, e.g. `("schema", "name")`.
    pub async fn table_pairs(&self, rid: &str, a: &str, b: &str) -> BTreeSet<(String, String)> {
        let field = |t: &Value, k: &str| t[k].as_str().unwrap().to_owned();
        self.tables(rid)
            .await
            .iter()
            .map(|t| (field(t, a), field(t, b)))
            .collect()
    }

    /// The stored tables as `schema.name`.
    pub async fn qualified_names(&self, rid: &str) -> BTreeSet<String> {
        self.table_pairs(rid, "schema", "name")
            .await
            .into_iter()
            .map(|(schema, name)| format!("{schema}.{name}"))
            .collect()
    }

    pub async fn table(&self, rid: &str, schema: &str, name: &str) -> Value {
        let tables = self.tables(rid).await;
        let found = tables
            .iter()
            .find(|t| t["schema"] == schema && t["name"] == name)
            .unwrap_or_else(|| panic!("{schema}.{name} missing from {tables:?}"));
        self.get(&format!("/v1/tables/{}", found["id"].as_str().unwrap()))
            .await
    }

    /// The change history a job recorded, as `(kind, table, object)` triples, sorted.
    pub async fn changes_of(&self, rid: &str, job: &Job) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = self
            .all_pages(&format!("/v1/resources/{rid}/changes"), 1000)
            .await
            .into_iter()
            .filter(|c| c["job_id"] == job.id.to_string())
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

    pub async fn change_count(&self, rid: &str) -> usize {
        self.all_pages(&format!("/v1/resources/{rid}/changes"), 1000)
            .await
            .len()
    }
}

pub fn triple(kind: &str, table: &str, object: &str) -> (String, String, String) {
    (kind.to_owned(), table.to_owned(), object.to_owned())
}

pub fn names(items: &[Value], key: &str) -> Vec<String> {
    items
        .iter()
        .map(|v| v[key].as_str().unwrap().to_owned())
        .collect()
}

pub fn column_names(table: &Value) -> Vec<String> {
    names(table["columns"].as_array().unwrap(), "name")
}

pub fn column<'a>(table: &'a Value, name: &str) -> &'a Value {
    table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("column {name} missing from {table}"))
}

pub fn named<'a>(table: &'a Value, family: &str, name: &str) -> &'a Value {
    table[family]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{family} {name} missing from {table}"))
}

pub async fn run_pg(database: &str, sql: &str) {
    let pool = PgPool::connect(&pg_url(database)).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// A MariaDB database named `mstest_…`, so `deploy/local/test.sh` cleans it up if a test dies.
pub struct MariaDb {
    pub name: String,
    admin: MySqlPool,
}

impl MariaDb {
    pub async fn create() -> Self {
        let admin = MySqlPool::connect(MARIADB_ADMIN).await.unwrap();
        let name = crate::unique_name("mstest", '_');
        let db = Self { name, admin };
        db.run(&[&format!("create database `{}`", db.name)]).await;
        db
    }

    /// Runs statements one by one; `{db}` is replaced by the database name.
    pub async fn run(&self, statements: &[&str]) {
        for sql in statements {
            let sql = sql.replace("{db}", &self.name);
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&self.admin)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    pub async fn drop(self) {
        self.run(&["drop database `{db}`"]).await;
        self.admin.close().await;
    }
}

/// Asserts an unchanged resync: every table unchanged, no change recorded, no row rewritten.
pub async fn assert_unchanged_resync(s: &Scanner, rid: &str, tables: u64) {
    let before = s.change_count(rid).await;
    let stamps: Vec<(String, String)> = s
        .tables(rid)
        .await
        .iter()
        .map(|t| (t["id"].to_string(), t["last_changed_at"].to_string()))
        .collect();
    let job = s.sync(rid).await;
    let stats = assert_job(&job).stats();
    assert_eq!(stats.tables_unchanged, tables, "{stats:?}");
    assert_eq!(stats.tables_added, 0, "{stats:?}");
    assert_eq!(stats.tables_changed, 0, "{stats:?}");
    assert_eq!(stats.tables_removed, 0, "{stats:?}");
    assert_eq!(s.change_count(rid).await, before);
    let after: Vec<(String, String)> = s
        .tables(rid)
        .await
        .iter()
        .map(|t| (t["id"].to_string(), t["last_changed_at"].to_string()))
        .collect();
    assert_eq!(stamps, after, "an unchanged resync rewrote a table");
}
