//! MySQL/MariaDB scanner: reads `information_schema`, one statement per object family for the
//! whole server (MySQL's schemas are its databases) ([`sql`]), inside a READ ONLY transaction
//! with a statement timeout ([`connection`]): at most 9 statements whatever the table count.
//! The rows then become the engine-independent catalog model ([`assembly`]).

mod assembly;
mod connection;
mod sql;

use metasync_shared::catalog::{DatabaseSnapshot, Snapshot};
use metasync_shared::scan_options::{Depth, ScanOptions};
use sqlx::MySqlConnection;

use super::reuse::SourceConnections;
use super::{ScanLimits, ScanTarget};
use crate::error::JobError;
use assembly::Rows;

/// Reads the databases the options select, all on the resource's connection.
pub async fn scan(
    target: &ScanTarget<'_>,
    options: &ScanOptions,
    limits: ScanLimits,
    sources: &SourceConnections,
) -> Result<Snapshot, JobError> {
    let resource = target.resource;
    let (key, mut taken) = connection::open(target, limits, sources).await?;
    let mut statements = 0;
    let result = read_server(
        &mut taken.conn,
        &resource.database,
        options,
        limits,
        &mut statements,
    )
    .await;
    sources
        .mysql
        .give_back(key, taken, result.is_ok(), limits.connect_timeout)
        .await;
    Ok(Snapshot {
        databases: vec![result?],
        statements,
    })
}

/// Runs one catalog statement, binding the selected databases' names.
async fn fetch<T>(
    conn: &mut MySqlConnection,
    sql: String,
    names: Option<&[String]>,
) -> Result<Vec<T>, sqlx::Error>
where
    T: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow>,
{
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    for name in names.unwrap_or_default() {
        query = query.bind(name);
    }
    query.fetch_all(conn).await
}

/// At most 9 statements, whatever the table count: the timeout, begin, one per object
/// family, commit. Shallower depths skip the families they do not need.
async fn read_server(
    conn: &mut MySqlConnection,
    database: &str,
    options: &ScanOptions,
    limits: ScanLimits,
    statements: &mut u64,
) -> Result<DatabaseSnapshot, JobError> {
    let names = options.database_names(database);
    let names = names.as_deref();
    let fail = |what: &'static str| move |e: sqlx::Error| JobError::from_source(what, &e);
    let mut tx = connection::begin_read_only(conn, limits, statements).await?;

    let mut rows = Rows {
        schemas: fetch(&mut tx, sql::schemas(names), names)
            .await
            .map_err(fail("reading schemas"))?,
        ..Rows::default()
    };
    *statements += 1;
    if options.depth >= Depth::Tables {
        rows.tables = fetch(&mut tx, sql::tables(names), names)
            .await
            .map_err(fail("reading tables and views"))?;
        *statements += 1;
    }
    if options.depth == Depth::Everything {
        rows.columns = fetch(&mut tx, sql::columns(names), names)
            .await
            .map_err(fail("reading columns"))?;
        *statements += 1;
        rows.key_columns = fetch(&mut tx, sql::key_columns(names), names)
            .await
            .map_err(fail("reading constraints"))?;
        *statements += 1;
        rows.checks = fetch(&mut tx, sql::checks(names), names)
            .await
            .map_err(fail("reading check constraints"))?;
        *statements += 1;
        rows.index_columns = fetch(&mut tx, sql::index_columns(names), names)
            .await
            .map_err(fail("reading indexes"))?;
        *statements += 1;
    }

    tx.commit()
        .await
        .map_err(fail("ending the read-only transaction"))?;
    *statements += 1;

    Ok(assembly::assemble(database, options, rows))
}
