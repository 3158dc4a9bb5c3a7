//! Fixtures for the scanner's stories (`tests/scan_*.rs`, `tests/catalog_api.rs`): an app with
//! an in-process worker, helpers that read the catalog API as the API's own types (`Page<T>`,
//! `TableSummary`, `TableDetail`, `StoredChange`, …), source databases on the local PostgreSQL
//! and MariaDB, and small accessors into a table's definition.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use metasync_api::pagination::Page;
use metasync_shared::catalog::{ChangeKind, ColumnInfo, ConstraintInfo, IndexInfo};
use metasync_shared::db::catalog::{SchemaSummary, StoredChange, TableDetail, TableSummary};
use metasync_shared::db::jobs::Job;
use metasync_shared::db::resources::Resource;
use metasync_shared::ids::{ResourceId, TableId};
use reqwest::Method;
use serde::de::DeserializeOwned;
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

/// A change-history entry as `(kind, table, object)`; `""` where the entry has no table or
/// no object.
pub type ChangeTriple = (ChangeKind, String, String);

impl Scanner {
    /// Sends a request as `tenant`, expects `200`, and decodes the answer as the route's own
    /// type.
    pub async fn request<T: DeserializeOwned>(
        &self,
        tenant: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> T {
        let (status, _, body) = self
            .app
            .call(tenant, method.clone(), path, body)
            .await
            .unwrap();
        assert_eq!(status, 200, "{method} {path}: {body}");
        serde_json::from_value(body.clone())
            .unwrap_or_else(|e| panic!("decoding {method} {path}: {e}: {body}"))
    }

    /// `GET path` as `tenant`, expecting `200`.
    pub async fn get_as<T: DeserializeOwned>(&self, tenant: &str, path: &str) -> T {
        self.request(tenant, Method::GET, path, None).await
    }

    /// `GET path` as [`TENANT`], decoded as the route's own type.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        self.get_as(TENANT, path).await
    }

    /// Registers a source and returns its id; `options` may be `Value::Null`.
    pub async fn register(
        &self,
        kind: &str,
        database: &str,
        port: u16,
        options: Value,
    ) -> ResourceId {
        created(self.try_register(kind, database, port, options).await)
    }

    /// Registers a source with `tls: disable`, for a proxy that reads the protocol on the wire
    /// (under the default `prefer`, the client and the server would talk TLS through it).
    pub async fn register_in_clear(&self, kind: &str, database: &str, port: u16) -> ResourceId {
        created(
            self.register_body(
                kind,
                database,
                port,
                Value::Null,
                json!({ "mode": "disable" }),
            )
            .await,
        )
    }

    /// Registers a source and returns the raw answer, for the tests of refused options
    /// (their problem+json bodies are what they check).
    pub async fn try_register(
        &self,
        kind: &str,
        database: &str,
        port: u16,
        options: Value,
    ) -> (u16, String, Value) {
        self.register_body(kind, database, port, options, Value::Null)
            .await
    }

    /// Registers a source read as `username` with `password` (e.g. a test's own user with
    /// chosen grants) and returns its id.
    pub async fn register_as(
        &self,
        kind: &str,
        database: &str,
        port: u16,
        (username, password): (&str, &str),
        options: Value,
    ) -> ResourceId {
        created(
            self.register_with(
                kind,
                database,
                port,
                (username, password),
                options,
                Value::Null,
            )
            .await,
        )
    }

    async fn register_body(
        &self,
        kind: &str,
        database: &str,
        port: u16,
        options: Value,
        tls: Value,
    ) -> (u16, String, Value) {
        let password = if kind == "mysql" { "" } else { "unused" };
        self.register_with(kind, database, port, ("root", password), options, tls)
            .await
    }

    async fn register_with(
        &self,
        kind: &str,
        database: &str,
        port: u16,
        (username, password): (&str, &str),
        options: Value,
        tls: Value,
    ) -> (u16, String, Value) {
        let name = format!("src-{}", uuid::Uuid::now_v7().simple());
        self.app
            .call(
                TENANT,
                Method::POST,
                "/v1/resources",
                Some(json!({
                    "name": name, "kind": kind, "host": "127.0.0.1", "port": port,
                    "database": database, "username": username, "password": password,
                    "options": options, "tls": tls,
                })),
            )
            .await
            .unwrap()
    }

    /// `PATCH /v1/resources/{rid}` with `body`, expecting `200`; returns the resource.
    pub async fn patch(&self, rid: ResourceId, body: Value) -> Resource {
        self.request(
            TENANT,
            Method::PATCH,
            &format!("/v1/resources/{rid}"),
            Some(body),
        )
        .await
    }

    /// Replaces the resource's options whole: a `PATCH` merges them key by key, so every key
    /// left out of `options` is given its default.
    pub async fn set_options(&self, rid: ResourceId, options: Value) {
        let mut whole = json!({
            "databases": "resource", "depth": 3,
            "include_schemas": [], "exclude_schemas": [],
            "include_tables": [], "exclude_tables": [],
        });
        if let (Some(whole), Some(given)) = (whole.as_object_mut(), options.as_object()) {
            whole.extend(given.clone());
        }
        self.patch(rid, json!({ "options": whole })).await;
    }

    /// Runs `sql` in a PostgreSQL source, then syncs and returns the succeeded job.
    pub async fn change_pg(&self, source: &str, rid: ResourceId, sql: &str) -> Job {
        run_pg(source, sql).await;
        self.sync(rid).await
    }

    /// Syncs and returns the succeeded job.
    pub async fn sync(&self, rid: ResourceId) -> Job {
        let job = self.sync_to_the_end(rid).await;
        assert_job(&job).succeeded();
        job
    }

    /// The job's warnings, as `GET /v1/jobs/{id}` sends them.
    pub async fn warnings(&self, job: &Job) -> Vec<metasync_shared::domain::JobWarning> {
        let raw: Value = self.get(&format!("/v1/jobs/{}", job.id)).await;
        serde_json::from_value(raw["warnings"].clone()).unwrap_or_else(|e| panic!("{e}: {raw}"))
    }

    /// Syncs and returns the job once it finished, however it ended.
    pub async fn sync_to_the_end(&self, rid: ResourceId) -> Job {
        let job = self.app.sync(TENANT, rid).await.unwrap();
        self.app
            .wait_for_job(TENANT, job.id, Duration::from_secs(120))
            .await
            .unwrap()
    }

    /// Every item of a paginated listing, following `next_cursor`.
    pub async fn all_pages<T: DeserializeOwned>(&self, path: &str, limit: usize) -> Vec<T> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor = None;
        loop {
            let mut url = format!("{path}{sep}limit={limit}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Page<T> = self.get(&url).await;
            assert!(page.items.len() <= limit);
            items.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c.as_str().to_owned()),
                None => return items,
            }
        }
    }

    pub async fn tables(&self, rid: ResourceId) -> Vec<TableSummary> {
        self.all_pages(&format!("/v1/resources/{rid}/tables"), 1000)
            .await
    }

    pub async fn schemas(&self, rid: ResourceId) -> Vec<SchemaSummary> {
        self.all_pages(&format!("/v1/resources/{rid}/schemas"), 1000)
            .await
    }

    /// The whole change history of a resource, oldest first.
    pub async fn changes(&self, rid: ResourceId) -> Vec<StoredChange> {
        self.all_pages(&format!("/v1/resources/{rid}/changes"), 1000)
            .await
    }

    /// Two facts of every stored table, e.g. `|t| (t.name, t.kind)`.
    pub async fn table_pairs(
        &self,
        rid: ResourceId,
        pair: impl Fn(TableSummary) -> (String, String),
    ) -> BTreeSet<(String, String)> {
        self.tables(rid).await.into_iter().map(pair).collect()
    }

    /// The stored tables as `schema.name`.
    pub async fn qualified_names(&self, rid: ResourceId) -> BTreeSet<String> {
        self.tables(rid)
            .await
            .iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect()
    }

    pub async fn table(&self, rid: ResourceId, schema: &str, name: &str) -> TableDetail {
        let tables = self.tables(rid).await;
        let found = tables
            .iter()
            .find(|t| t.schema == schema && t.name == name)
            .unwrap_or_else(|| panic!("{schema}.{name} missing from {tables:?}"));
        self.get(&format!("/v1/tables/{}", found.id)).await
    }

    /// The changes a job recorded (`?job_id=`).
    pub async fn changes_by(&self, rid: ResourceId, job: &Job) -> Vec<StoredChange> {
        let path = format!("/v1/resources/{rid}/changes?job_id={}", job.id);
        let changes: Vec<StoredChange> = self.all_pages(&path, 1000).await;
        assert!(changes.iter().all(|c| c.job_id == Some(job.id)));
        changes
    }

    /// The change history a job recorded, as `(kind, table, object)` triples, sorted by the
    /// kind's wire name, then table and object.
    pub async fn changes_of(&self, rid: ResourceId, job: &Job) -> Vec<ChangeTriple> {
        let mut out: Vec<ChangeTriple> = self
            .changes_by(rid, job)
            .await
            .into_iter()
            .map(|c| {
                (
                    c.kind,
                    c.table.unwrap_or_default(),
                    c.object_name.unwrap_or_default(),
                )
            })
            .collect();
        out.sort_by(|a, b| (a.0.as_str(), &a.1, &a.2).cmp(&(b.0.as_str(), &b.1, &b.2)));
        out
    }

    /// The one change a job recorded, which must be `expected`.
    pub async fn only_change(
        &self,
        rid: ResourceId,
        job: &Job,
        expected: ChangeTriple,
    ) -> StoredChange {
        let mut changes = self.changes_by(rid, job).await;
        assert_eq!(changes.len(), 1, "{changes:?}");
        let change = changes.remove(0);
        let (kind, table, object) = expected;
        assert_eq!(
            (
                change.kind,
                change.table.as_deref().unwrap_or_default(),
                change.object_name.as_deref().unwrap_or_default()
            ),
            (kind, table.as_str(), object.as_str()),
            "{change:?}"
        );
        change
    }

    /// The one change of `kind` a job recorded, with its details.
    pub async fn change_of_kind(
        &self,
        rid: ResourceId,
        job: &Job,
        kind: ChangeKind,
    ) -> StoredChange {
        let mut found: Vec<StoredChange> = self
            .changes_by(rid, job)
            .await
            .into_iter()
            .filter(|c| c.kind == kind)
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        found.remove(0)
    }

    pub async fn change_count(&self, rid: ResourceId) -> usize {
        self.changes(rid).await.len()
    }
}

/// The id of the resource a registration created, which must have answered `201`.
#[track_caller]
fn created((status, _, body): (u16, String, Value)) -> ResourceId {
    assert_eq!(status, 201, "{body}");
    let resource: Resource = serde_json::from_value(body).unwrap();
    resource.id
}

pub fn triple(kind: ChangeKind, table: &str, object: &str) -> ChangeTriple {
    (kind, table.to_owned(), object.to_owned())
}

/// The tables' names, in listing order.
pub fn table_names(tables: &[TableSummary]) -> Vec<String> {
    tables.iter().map(|t| t.name.clone()).collect()
}

/// The table's column names, in ordinal order.
pub fn column_names(table: &TableDetail) -> Vec<String> {
    table
        .definition
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect()
}

/// The item of `family` (columns, constraints, indexes) named `name`.
#[track_caller]
fn named<'a, T: std::fmt::Debug>(
    items: &'a [T],
    family: &str,
    name: &str,
    name_of: impl Fn(&T) -> &str,
) -> &'a T {
    items
        .iter()
        .find(|item| name_of(item) == name)
        .unwrap_or_else(|| panic!("{family} {name} missing from {items:#?}"))
}

#[track_caller]
pub fn column<'a>(table: &'a TableDetail, name: &str) -> &'a ColumnInfo {
    named(&table.definition.columns, "column", name, |c| &c.name)
}

#[track_caller]
pub fn constraint<'a>(table: &'a TableDetail, name: &str) -> &'a ConstraintInfo {
    named(&table.definition.constraints, "constraint", name, |c| {
        &c.name
    })
}

#[track_caller]
pub fn index<'a>(table: &'a TableDetail, name: &str) -> &'a IndexInfo {
    named(&table.definition.indexes, "index", name, |i| &i.name)
}

/// `strings` as owned strings, for comparing with typed lists such as constraint columns.
pub fn strings(strings: &[&str]) -> Vec<String> {
    strings.iter().map(ToString::to_string).collect()
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

    /// Runs a script of statements separated by `;` at line ends, `--` comment lines
    /// dropped (the golden fixture's format).
    pub async fn run_script(&self, sql: &str) {
        let statements: Vec<String> = sql
            .split(";\n")
            .map(|statement| {
                statement
                    .lines()
                    .filter(|line| !line.trim_start().starts_with("--"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .filter(|statement| !statement.trim().is_empty())
            .collect();
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        self.run(&statements).await;
    }

    pub async fn drop(self) {
        self.run(&["drop database `{db}`"]).await;
        self.admin.close().await;
    }
}

/// Each stored table's id and when a sync last changed it.
async fn change_stamps(s: &Scanner, rid: ResourceId) -> Vec<(TableId, DateTime<Utc>)> {
    s.tables(rid)
        .await
        .iter()
        .map(|t| (t.id, t.last_changed_at))
        .collect()
}

/// Asserts an unchanged resync: every table unchanged, no change recorded, no row rewritten.
pub async fn assert_unchanged_resync(s: &Scanner, rid: ResourceId, tables: u64) {
    let before = s.change_count(rid).await;
    let stamps = change_stamps(s, rid).await;
    let job = s.sync(rid).await;
    let stats = assert_job(&job).stats();
    assert_eq!(stats.tables_unchanged, tables, "{stats:?}");
    assert_eq!(stats.tables_added, 0, "{stats:?}");
    assert_eq!(stats.tables_changed, 0, "{stats:?}");
    assert_eq!(stats.tables_removed, 0, "{stats:?}");
    assert_eq!(s.change_count(rid).await, before);
    let after = change_stamps(s, rid).await;
    assert_eq!(stamps, after, "an unchanged resync rewrote a table");
}

/// A file of `tests/fixtures/catalog/`: the golden fixtures and their expected catalogs.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/catalog")
        .join(name)
}

/// Schemas, then every table with its definition, as the API sends them.
pub async fn whole_catalog(s: &Scanner, rid: ResourceId) -> Value {
    let schemas: Vec<Value> = s
        .all_pages(&format!("/v1/resources/{rid}/schemas"), 1000)
        .await;
    let summaries: Vec<Value> = s
        .all_pages(&format!("/v1/resources/{rid}/tables"), 1000)
        .await;
    let mut tables = Vec::new();
    for summary in &summaries {
        let id = summary["id"].as_str().unwrap();
        tables.push(s.get::<Value>(&format!("/v1/tables/{id}")).await);
    }
    json!({ "schemas": schemas, "tables": tables })
}

/// Replaces what differs from run to run: ids, times, statistics, the database name.
pub fn normalize(value: &mut Value, database: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let placeholder = match key.as_str() {
                    "id" | "resource_id" => Some("<id>"),
                    "last_changed_at" | "created_at" | "updated_at" => Some("<time>"),
                    "estimated_bytes" => Some("<statistic>"),
                    _ => None,
                };
                match placeholder {
                    Some(p) if !v.is_null() => *v = json!(p),
                    // PostgreSQL has none (null) until a table is first vacuumed or analyzed.
                    _ if key == "row_estimate" => *v = json!("<statistic>"),
                    _ => normalize(v, database),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| normalize(v, database)),
        Value::String(s) if s.contains(database) => *s = s.replace(database, "<database>"),
        _ => {}
    }
}
