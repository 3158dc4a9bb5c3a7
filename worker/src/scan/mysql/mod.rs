//! MySQL/MariaDB scanner: reads `information_schema`, one statement per object family for the
//! whole server (MySQL's schemas are its databases) ([`sql`]), inside a READ ONLY transaction
//! with a statement timeout ([`connection`]): at most 9 statements whatever the table count.
//! The rows then become the engine-independent catalog model ([`assembly`]).

mod assembly;
mod connection;
mod sql;

use metasync_shared::catalog::{DatabaseSnapshot, Snapshot};
use metasync_shared::scan_options::{Depth, Filters, ScanOptions};
use sqlx::MySqlConnection;

use super::reuse::SourceConnections;
use super::{ScanError, ScanLimits, ScanTarget};
use crate::error::JobError;
use assembly::Rows;

/// Reads the databases the options select, all on the resource's connection.
pub async fn scan(
    target: &ScanTarget<'_>,
    options: &ScanOptions,
    limits: ScanLimits,
    sources: &SourceConnections,
) -> Result<Snapshot, ScanError> {
    let resource = target.resource;
    let (key, mut taken) = connection::open(target, limits, sources).await?;
    let mut statements = 0;
    let result = read_server(
        &mut taken.conn,
        &resource.database,
        options,
        target.filters,
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

/// Runs the catalog statements of one read, binding the selected databases' names, each
/// within the read timeout, and counts them.
struct Reader<'a> {
    limits: ScanLimits,
    names: Option<&'a [String]>,
    statements: &'a mut u64,
}

impl Reader<'_> {
    /// Runs one statement; `what` names it in errors.
    async fn fetch<T>(
        &mut self,
        conn: &mut MySqlConnection,
        what: &'static str,
        sql: String,
    ) -> Result<Vec<T>, JobError>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow>,
    {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for name in self.names.unwrap_or_default() {
            query = query.bind(name);
        }
        let rows = super::answered(self.limits, what, async {
            query
                .fetch_all(conn)
                .await
                .map_err(|e| JobError::from_source(what, &e))
        })
        .await?;
        *self.statements += 1;
        Ok(rows)
    }
}

/// At most 9 statements, whatever the table count: the timeout, begin, one per object
/// family, commit. Shallower depths skip the families they do not need.
async fn read_server(
    conn: &mut MySqlConnection,
    database: &str,
    options: &ScanOptions,
    filters: &Filters,
    limits: ScanLimits,
    statements: &mut u64,
) -> Result<DatabaseSnapshot, JobError> {
    let names = options.database_names(database);
    let names = names.as_deref();
    let mut tx = connection::begin_read_only(conn, limits, statements).await?;
    let mut read = Reader {
        limits,
        names,
        statements,
    };

    let mut rows = Rows {
        schemas: read
            .fetch(&mut tx, "reading schemas", sql::schemas(names))
            .await?,
        ..Rows::default()
    };
    if options.depth >= Depth::Tables {
        rows.tables = read
            .fetch(&mut tx, "reading tables and views", sql::tables(names))
            .await?;
    }
    if options.depth == Depth::Everything {
        rows.columns = read
            .fetch(&mut tx, "reading columns", sql::columns(names))
            .await?;
        rows.key_columns = read
            .fetch(&mut tx, "reading constraints", sql::key_columns(names))
            .await?;
        rows.checks = read
            .fetch(&mut tx, "reading check constraints", sql::checks(names))
            .await?;
        rows.index_columns = read
            .fetch(&mut tx, "reading indexes", sql::index_columns(names))
            .await?;
    }

    let what = "ending the read-only transaction";
    super::answered(limits, what, async {
        tx.commit()
            .await
            .map_err(|e| JobError::from_source(what, &e))
    })
    .await?;
    *statements += 1;

    Ok(assembly::assemble(database, filters, rows))
}
