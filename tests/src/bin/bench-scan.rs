//! Scanner benchmark: synthetic PostgreSQL and MariaDB schemas, synced end to end by the real
//! `metasync-worker` binary.
//!
//! ```sh
//! cargo build --release --bins
//! "$CARGO_TARGET_DIR"/release/bench-scan [--runs 5] [--scales 1,10] [--mariadb-scales 1]
//! ```
//!
//! Scale 1 is 20 schemas × 100 tables × 15 columns, 100 views, a primary key on every table,
//! a foreign key on half, a unique and a check constraint on a tenth, two indexes per table,
//! comments on every table and one column per table: 2,000 tables. Scale 10 has 1,000 tables
//! per schema (20,000). MariaDB gets the same shape, one database per schema.
//!
//! For each source it starts a fresh worker process and reports the median over the runs of:
//! the first sync (enqueue → `succeeded`, from the job row's own timestamps), an unchanged
//! resync (checking that it wrote no catalog row and no change), a resync after one table is
//! altered, the statements issued against the source, the scanner alone (connect, catalog
//! queries and assembly, in-process: the floor), and the worker's peak RSS (`VmHWM`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use metasync_shared::db::resources;
use metasync_shared::domain::ResourceKind;
use metasync_shared::ids::TenantId;
use metasync_tests::{TestApp, create_database, pg_url, spawn_app};
use metasync_worker::scan::reuse::SourceConnections;
use metasync_worker::scan::{self, ScanLimits, ScanTarget};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::{MySqlPool, PgPool};

const TENANT: &str = "bench";
const SCHEMAS: usize = 20;
const COLUMNS: usize = 15;
const VIEWS_PER_SCHEMA: usize = 5;

struct Args {
    runs: usize,
    scales: Vec<usize>,
    mariadb_scales: Vec<usize>,
}

fn args() -> anyhow::Result<Args> {
    let mut parsed = Args {
        runs: 5,
        scales: vec![1, 10],
        mariadb_scales: vec![1],
    };
    let mut it = std::env::args().skip(1);
    let list = |s: Option<String>| -> anyhow::Result<Vec<usize>> {
        let s = s.context("a list of scales")?;
        if s.is_empty() || s == "none" {
            return Ok(vec![]);
        }
        s.split(',')
            .map(|x| x.parse().context("a scale is a number"))
            .collect()
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => parsed.runs = it.next().context("--runs N")?.parse()?,
            "--scales" => parsed.scales = list(it.next())?,
            "--mariadb-scales" => parsed.mariadb_scales = list(it.next())?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(parsed)
}

/// The columns of table `t`: `id` then 14 more of mixed types; `ref_id` on odd tables (the
/// foreign key's column).
fn column_types(mysql: bool) -> [&'static str; COLUMNS - 1] {
    if mysql {
        [
            "int not null",
            "varchar(100)",
            "varchar(200)",
            "decimal(12,2)",
            "datetime",
            "tinyint(1)",
            "text",
            "date",
            "bigint",
            "varchar(36)",
            "double",
            "smallint",
            "varchar(20) default 'new'",
            "bigint",
        ]
    } else {
        [
            "integer not null",
            "text",
            "varchar(200)",
            "numeric(12,2)",
            "timestamptz default now()",
            "boolean",
            "jsonb",
            "date",
            "bigint",
            "uuid",
            "double precision",
            "smallint",
            "text default 'new'",
            "bigint",
        ]
    }
}

fn table_sql(schema: &str, t: usize, mysql: bool) -> String {
    let q = |name: &str| {
        if mysql {
            format!("`{name}`")
        } else {
            format!("\"{name}\"")
        }
    };
    let table = format!("{}.{}", q(schema), q(&format!("t{t}")));
    let mut columns = vec!["id bigint primary key".to_owned()];
    for (i, ty) in column_types(mysql).iter().enumerate() {
        let name = if i == COLUMNS - 2 && t % 2 == 1 {
            "ref_id".to_owned()
        } else {
            format!("c{}", i + 1)
        };
        columns.push(format!("{name} {ty}"));
    }
    if t % 2 == 1 {
        columns.push(format!(
            "constraint t{t}_ref_fk foreign key (ref_id) references {}.{} (id)",
            q(schema),
            q(&format!("t{}", t - 1))
        ));
    }
    if t.is_multiple_of(10) {
        columns.push(format!("constraint t{t}_c2_key unique (c3)"));
        columns.push(format!("constraint t{t}_c1_check check (c1 >= 0)"));
    }
    if mysql {
        columns.push(format!("key t{t}_c1 (c1)"));
        columns.push(format!("key t{t}_c2_c4 (c2, c4)"));
        columns[1] = format!("{} comment 'the first column'", columns[1]);
        format!(
            "create table {table} ({}) comment 'table {t}';\n",
            columns.join(", ")
        )
    } else {
        format!(
            "create table {table} ({});
             create index t{t}_c1 on {table} (c1);
             create index t{t}_c2_c4 on {table} (c2, c4);
             comment on table {table} is 'table {t}';
             comment on column {table}.c1 is 'the first column';\n",
            columns.join(", ")
        )
    }
}

fn views_sql(schema: &str, mysql: bool) -> String {
    (0..VIEWS_PER_SCHEMA)
        .map(|v| {
            if mysql {
                format!("create view `{schema}`.v{v} as select id, c1, c2 from `{schema}`.t{v};\n")
            } else {
                format!("create view {schema}.v{v} as select id, c1, c2 from {schema}.t{v};\n")
            }
        })
        .collect()
}

/// A PostgreSQL source of `scale` × 2,000 tables; returns its database name.
async fn generate_postgres(scale: usize) -> anyhow::Result<String> {
    let name = create_database("mstest_bench").await?;
    let pool = PgPool::connect(&pg_url(&name)).await?;
    for s in 0..SCHEMAS {
        let schema = format!("s{s}");
        let mut sql =
            format!("create schema {schema}; comment on schema {schema} is 'schema {s}';\n");
        for t in 0..100 * scale {
            sql.push_str(&table_sql(&schema, t, false));
        }
        sql.push_str(&views_sql(&schema, false));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await?;
    }
    sqlx::raw_sql("analyze").execute(&pool).await?;
    pool.close().await;
    Ok(name)
}

/// A MariaDB source of `scale` × 2,000 tables, one database per schema; returns the names.
async fn generate_mariadb(admin: &MySqlPool, scale: usize) -> anyhow::Result<Vec<String>> {
    let prefix = format!(
        "mstest_bench_{}",
        &uuid::Uuid::now_v7().simple().to_string()[16..]
    );
    let mut names = Vec::new();
    for s in 0..SCHEMAS {
        let schema = format!("{prefix}_s{s}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database `{schema}`")))
            .execute(admin)
            .await?;
        for t in 0..100 * scale {
            sqlx::raw_sql(sqlx::AssertSqlSafe(table_sql(&schema, t, true)))
                .execute(admin)
                .await?;
        }
        for view in views_sql(&schema, true).lines() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(view.to_owned()))
                .execute(admin)
                .await?;
        }
        names.push(schema);
    }
    Ok(names)
}

struct Source {
    label: String,
    kind: ResourceKind,
    port: u16,
    database: String,
    options: Value,
    /// Alters one table so the next sync has exactly one change; `n` makes each call new.
    alter: Box<dyn Fn(usize) -> String>,
    tables: u64,
}

#[derive(Default)]
struct Samples {
    first: Vec<f64>,
    unchanged: Vec<f64>,
    one_altered: Vec<f64>,
    floor: Vec<f64>,
    statements: Vec<u64>,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Syncs and returns `(seconds from the enqueue request to seeing the job succeeded, job)`.
/// Polls the job row every 5 ms (the job's own `finished_at` is `now()` of the transaction that
/// writes the catalog, so it would leave the write itself out).
async fn timed_sync(app: &TestApp, rid: &str) -> anyhow::Result<(f64, Value)> {
    let started = Instant::now();
    let job = app.sync(TENANT, rid).await?;
    let id = job.id;
    let deadline = started + Duration::from_secs(600);
    loop {
        let (state, stats): (String, Option<Value>) =
            sqlx::query_as("select state, stats from jobs where id = $1")
                .bind(id)
                .fetch_one(&app.db)
                .await?;
        match state.as_str() {
            "succeeded" => {
                let seconds = started.elapsed().as_secs_f64();
                return Ok((seconds, json!({ "id": id, "stats": stats })));
            }
            "failed" | "cancelled" => {
                let job = app.wait_for_job(TENANT, id, Duration::from_secs(1)).await?;
                anyhow::bail!("job did not succeed: {job:?}");
            }
            _ => {}
        }
        anyhow::ensure!(Instant::now() < deadline, "job {id} did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Catalog rows a job wrote: tables it (re)wrote and changes it recorded.
async fn rows_written_by(app: &TestApp, job_id: &str) -> anyhow::Result<i64> {
    let id: uuid::Uuid = job_id.parse()?;
    let (n,): (i64,) = sqlx::query_as(
        "select (select count(*) from catalog_tables where last_job_id = $1)
              + (select count(*) from catalog_changes where job_id = $1)",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await?;
    Ok(n)
}

async fn register(app: &TestApp, source: &Source, run: usize) -> anyhow::Result<String> {
    let (status, _, body) = app
        .call(
            TENANT,
            Method::POST,
            "/v1/resources",
            Some(json!({
                "name": format!("{}-{run}", source.label), "kind": source.kind.as_str(),
                "host": "127.0.0.1", "port": source.port, "database": source.database,
                "username": "root",
                "password": if source.kind == ResourceKind::Mysql { "" } else { "unused" },
                "options": source.options,
            })),
        )
        .await?;
    anyhow::ensure!(status == 201, "register answered {status}: {body}");
    Ok(body["id"].as_str().context("resource id")?.to_owned())
}

/// The scanner alone, in-process, on a registered resource: connect, catalog queries and
/// assembly; no queue, no catalog write.
async fn floor(app: &TestApp, source: &Source, rid: &str) -> anyhow::Result<f64> {
    let resource = resources::get(&app.db, &TenantId::new(TENANT), rid.parse()?)
        .await?
        .context("the resource")?;
    let password = if source.kind == ResourceKind::Mysql {
        ""
    } else {
        "unused"
    };
    let filters = resource
        .options
        .0
        .compile()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let target = ScanTarget {
        resource: &resource,
        filters: &filters,
        // Every benchmark source is on this machine.
        address: resource.host.parse()?,
        password,
    };
    let limits = ScanLimits {
        connect_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(300),
    };
    let started = Instant::now();
    // A fresh connection each time, as a first sync of a source would see.
    let snapshot = scan::scan(&target, limits, &SourceConnections::disabled())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let tables: usize = snapshot.databases.iter().map(|d| d.tables.len()).sum();
    anyhow::ensure!(
        tables as u64 == source.tables,
        "floor scan saw {tables} tables"
    );
    Ok(seconds)
}

fn peak_rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

async fn bench(app: &TestApp, source: &Source, runs: usize) -> anyhow::Result<()> {
    // BENCH_WORKER_LOG=sqlx::query=debug shows each catalog statement with its time.
    let log = std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into());
    let mut worker =
        app.spawn_worker_process(&format!("bench-{}", source.label), &[("RUST_LOG", &log)])?;
    let pid = worker.id().context("worker pid")?;
    let mut samples = Samples::default();
    // One warm-up sync, so the first measured run does not pay for cold caches.
    let warm = register(app, source, 0).await?;
    timed_sync(app, &warm).await?;
    delete(app, &warm).await?;
    for run in 1..=runs {
        let rid = register(app, source, run).await?;
        samples.floor.push(floor(app, source, &rid).await?);
        let (seconds, job) = timed_sync(app, &rid).await?;
        anyhow::ensure!(job["stats"]["tables"] == source.tables, "{job}");
        samples.first.push(seconds);
        samples.statements.push(
            job["stats"]["source_statements"]
                .as_u64()
                .unwrap_or_default(),
        );

        let (seconds, job) = timed_sync(app, &rid).await?;
        anyhow::ensure!(job["stats"]["tables_unchanged"] == source.tables, "{job}");
        let written = rows_written_by(app, job["id"].as_str().unwrap_or_default()).await?;
        anyhow::ensure!(written == 0, "an unchanged resync wrote {written} rows");
        samples.unchanged.push(seconds);

        alter(source, run).await?;
        let (seconds, job) = timed_sync(app, &rid).await?;
        anyhow::ensure!(job["stats"]["tables_changed"] == 1, "{job}");
        samples.one_altered.push(seconds);
        delete(app, &rid).await?;
    }
    let rss = peak_rss_mb(pid)?;
    worker.kill().await?;
    let floor = median(&samples.floor);
    let row = |what: &str, values: &[f64]| {
        let m = median(values);
        println!(
            "  {what:<28} {:>9.3} s   {:>5.2}× floor   (runs: {})",
            m,
            m / floor,
            values
                .iter()
                .map(|v| format!("{v:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    };
    println!("{} ({} tables, {} runs)", source.label, source.tables, runs);
    row("first sync", &samples.first);
    row("unchanged resync", &samples.unchanged);
    row("resync, one table altered", &samples.one_altered);
    row("floor: scanner alone", &samples.floor);
    println!(
        "  {:<28} {:>9}",
        "source statements",
        samples.statements.first().copied().unwrap_or_default()
    );
    println!("  {:<28} {:>9.1} MB", "worker peak RSS (VmHWM)", rss);
    Ok(())
}

async fn alter(source: &Source, run: usize) -> anyhow::Result<()> {
    let sql = (source.alter)(run);
    match source.kind {
        ResourceKind::Postgres => {
            let pool = PgPool::connect(&pg_url(&source.database)).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await?;
            pool.close().await;
        }
        ResourceKind::Mysql => {
            let pool = MySqlPool::connect(MARIADB_ADMIN).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await?;
            pool.close().await;
        }
    }
    Ok(())
}

async fn delete(app: &TestApp, rid: &str) -> anyhow::Result<()> {
    let (status, _, body) = app
        .call(
            TENANT,
            Method::DELETE,
            &format!("/v1/resources/{rid}"),
            None,
        )
        .await?;
    anyhow::ensure!(status == 204, "delete answered {status}: {body}");
    Ok(())
}

const MARIADB_ADMIN: &str = "mysql://root@127.0.0.1:3306/test";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let app = spawn_app().await?;
    for &scale in &args.scales {
        let started = Instant::now();
        let database = generate_postgres(scale).await?;
        eprintln!(
            "generated PostgreSQL scale {scale} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let source = Source {
            label: format!("postgres-x{scale}"),
            kind: ResourceKind::Postgres,
            port: 5432,
            database: database.clone(),
            options: json!({}),
            alter: Box::new(|n| format!("alter table s7.t42 add column bench_{n} integer")),
            tables: (SCHEMAS * (100 * scale + VIEWS_PER_SCHEMA)) as u64,
        };
        let result = bench(&app, &source, args.runs).await;
        metasync_tests::drop_database(&database).await?;
        result?;
    }
    for &scale in &args.mariadb_scales {
        let admin = MySqlPool::connect(MARIADB_ADMIN).await?;
        let started = Instant::now();
        let names = generate_mariadb(&admin, scale).await?;
        eprintln!(
            "generated MariaDB scale {scale} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let altered = names[7].clone();
        let source = Source {
            label: format!("mariadb-x{scale}"),
            kind: ResourceKind::Mysql,
            port: 3306,
            database: names[0].clone(),
            options: json!({ "databases": names }),
            alter: Box::new(move |n| {
                format!("alter table `{altered}`.t42 add column bench_{n} integer")
            }),
            tables: (SCHEMAS * (100 * scale + VIEWS_PER_SCHEMA)) as u64,
        };
        let result = bench(&app, &source, args.runs).await;
        for name in &names {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop database `{name}`")))
                .execute(&admin)
                .await?;
        }
        result?;
    }
    Ok(())
}
