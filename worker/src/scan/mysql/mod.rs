//! MySQL/MariaDB scanner: reads `information_schema`, one statement per object family for the
//! whole server (MySQL's schemas are its databases) ([`sql`]), inside a READ ONLY transaction
//! with a statement timeout ([`connection`]): at most 11 statements whatever the table count.
//! The rows then become the engine-independent catalog model ([`assembly`]).

mod assembly;
mod connection;
mod sql;

use futures::TryStreamExt as _;

use metasync_shared::catalog::{DatabaseSnapshot, Snapshot};
use metasync_shared::scan_options::{Depth, Filters, ScanOptions};
use sqlx::MySqlConnection;

use metasync_shared::connection_test::MissingGrant;
use metasync_shared::domain::{JobWarning, WarningCode};

use super::reuse::SourceConnections;
use super::{Probe, ScanError, ScanLimits, ScanTarget};
use crate::error::JobError;
use assembly::{Assembly, Rows};

/// Reads the databases the options select, all on the resource's connection.
pub async fn scan(
    target: &ScanTarget<'_>,
    options: &ScanOptions,
    limits: ScanLimits,
    sources: &SourceConnections,
) -> Result<Snapshot, ScanError> {
    let resource = target.resource;
    let (key, mut taken) = connection::open(target, limits, sources, true).await?;
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
    let Read {
        database,
        databases_read,
        missing,
        hidden_views,
        unreadable_views,
    } = result?;
    let mut warnings = super::databases_not_found(
        &target.server_name(),
        &missing,
        databases_read,
        " (or the user holds no privilege in it, which hides it)",
    )?;
    if !hidden_views.is_empty() {
        warnings.push(JobWarning::about(
            WarningCode::ViewDefinitionHidden,
            format!(
                "the definitions of {} view(s) are hidden from the user (it lacks the SHOW VIEW \
                 privilege): those views are stored with view_definition null",
                hidden_views.len()
            ),
            Some(database.name.clone()),
            hidden_views,
        ));
    }
    if !unreadable_views.is_empty() {
        warnings.push(JobWarning::about(
            WarningCode::ViewColumnsUnreadable,
            format!(
                "the columns of {} view(s) could not be read: each refers to a table, column or \
                 function that no longer exists, or its definer or invoker lacks the rights to \
                 use them; those views are stored without columns",
                unreadable_views.len()
            ),
            Some(database.name.clone()),
            unreadable_views,
        ));
    }
    Ok(Snapshot {
        databases: vec![database],
        statements,
        warnings,
    })
}

/// Test-connection: a new connection to the resource's server, two statements
/// ([`sql::SSL_CIPHER`], [`sql::PROBE`]), closed.
pub async fn probe(
    target: &ScanTarget<'_>,
    limits: ScanLimits,
    sources: &SourceConnections,
) -> Result<Probe, ScanError> {
    let what = "checking the session";
    let database = &target.resource.database;
    let (key, mut taken) = connection::open(target, limits, sources, false).await?;
    let answers = super::answered(limits, what, async {
        let conn = &mut taken.conn;
        let cipher: Option<(String, String)> = sqlx::query_as(sql::SSL_CIPHER)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| JobError::from_source(what, &e))?;
        let row: sql::ProbeRow = sqlx::query_as(sql::PROBE)
            .bind(database)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| JobError::from_source(what, &e))?;
        Ok((cipher, row))
    })
    .await;
    // Never parked: the next test connects anew, and a sync does not inherit a test's session.
    sources
        .mysql
        .give_back(key, taken, false, limits.connect_timeout)
        .await;
    let (cipher, row) = answers?;
    let held: Vec<&str> = row.held.as_deref().unwrap_or_default().split(',').collect();
    let all = held.contains(&"ALL PRIVILEGES");
    Ok(Probe {
        engine: if row.version.to_ascii_lowercase().contains("mariadb") {
            "mariadb"
        } else {
            "mysql"
        },
        version: row.version,
        tls: cipher.is_some_and(|(_, cipher)| !cipher.is_empty()),
        missing_grants: sql::NEEDED
            .iter()
            .filter(|(privilege, _)| !all && !held.contains(privilege))
            .map(|(privilege, effect)| MissingGrant {
                privilege: (*privilege).to_owned(),
                on: format!("the database {database}"),
                effect: (*effect).to_owned(),
            })
            .collect(),
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
        self.fetch_binding(conn, what, sql, 1).await
    }

    /// Runs one statement whose text holds the databases' condition `conditions` times.
    async fn fetch_binding<T>(
        &mut self,
        conn: &mut MySqlConnection,
        what: &'static str,
        sql: String,
        conditions: usize,
    ) -> Result<Vec<T>, JobError>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow>,
    {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for _ in 0..conditions {
            for name in self.names.unwrap_or_default() {
                query = query.bind(name);
            }
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

    /// Runs one statement and hands each row to `each` as it arrives, holding none.
    async fn for_each<T>(
        &mut self,
        conn: &mut MySqlConnection,
        what: &'static str,
        sql: String,
        mut each: impl FnMut(T) + Send,
    ) -> Result<(), JobError>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow>,
    {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for name in self.names.unwrap_or_default() {
            query = query.bind(name);
        }
        super::answered(self.limits, what, async {
            let mut rows = query.fetch(conn);
            while let Some(row) = rows
                .try_next()
                .await
                .map_err(|e| JobError::from_source(what, &e))?
            {
                each(row);
            }
            Ok(())
        })
        .await?;
        *self.statements += 1;
        Ok(())
    }
}

/// What [`read_server`] read, and what it could not.
struct Read {
    database: DatabaseSnapshot,
    /// Databases (MySQL's schemas) read.
    databases_read: usize,
    /// Databases of `options.databases` the server did not show.
    missing: Vec<String>,
    /// Views (`schema.name`) whose definition the server hid (no `SHOW VIEW`).
    hidden_views: Vec<String>,
    /// Views (`schema.name`) the server listed no column of: it could not resolve them.
    unreadable_views: Vec<String>,
}

/// At most 11 statements, whatever the table count: the timeout, begin, one per object
/// family (partitions only when a table is partitioned, sequences only when there is one),
/// commit. Shallower depths skip the
/// families they do not need.
async fn read_server(
    conn: &mut MySqlConnection,
    database: &str,
    options: &ScanOptions,
    filters: &Filters,
    limits: ScanLimits,
    statements: &mut u64,
) -> Result<Read, JobError> {
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
    // information_schema compares names without case, as the server does where it folds it.
    let missing: Vec<String> = names
        .unwrap_or_default()
        .iter()
        .filter(|name| {
            !rows
                .schemas
                .iter()
                .any(|row| row.schema_name.eq_ignore_ascii_case(name))
        })
        .cloned()
        .collect();
    let mut hidden_views = Vec::new();
    let mut unreadable_views = Vec::new();
    if options.depth >= Depth::Tables {
        rows.tables = read
            .fetch(&mut tx, "reading tables and views", sql::tables(names))
            .await?;
        // Without SHOW VIEW, the server answers an empty definition: none is known.
        for view in rows.tables.iter_mut().filter(|t| {
            t.table_type.eq_ignore_ascii_case("VIEW")
                && t.view_definition.as_deref() == Some("")
                && filters.table_included(&t.table_schema, &t.table_name)
        }) {
            view.view_definition = None;
            hidden_views.push(format!("{}.{}", view.table_schema, view.table_name));
        }
        let partitioned = rows.tables.iter().any(|t| {
            t.create_options
                .as_deref()
                .is_some_and(|o| o.contains("partitioned"))
        });
        if partitioned {
            rows.partitions = read
                .fetch(&mut tx, "reading partitions", sql::partitions(names))
                .await?;
        }
    }
    if options.depth == Depth::Everything {
        let sequences: Vec<(&str, &str)> = rows
            .tables
            .iter()
            .filter(|t| t.table_type == "SEQUENCE")
            .filter(|t| filters.table_included(&t.table_schema, &t.table_name))
            .map(|t| (t.table_schema.as_str(), t.table_name.as_str()))
            .collect();
        if let Some(sql) = sql::sequences(&sequences) {
            let names: Vec<(String, String)> = sequences
                .iter()
                .map(|(s, n)| (s.to_string(), n.to_string()))
                .collect();
            let found = read
                .fetch_binding(&mut tx, "reading sequences", sql, 0)
                .await?;
            rows.sequences = (names, found);
        }
        rows.constraints = read
            .fetch_binding(
                &mut tx,
                "reading check constraints and foreign key rules",
                sql::constraints(names),
                2,
            )
            .await?;
    }
    let mut assembly = Assembly::new(filters, &mut rows);
    if options.depth == Depth::Everything {
        // Last, and streamed: the most numerous rows join the tables already assembled.
        read.for_each(
            &mut tx,
            "reading constraints",
            sql::key_columns(names),
            |row| {
                assembly.add_key_column(row);
            },
        )
        .await?;
        read.for_each(
            &mut tx,
            "reading indexes",
            sql::index_columns(names),
            |row| {
                assembly.add_index_column(row);
            },
        )
        .await?;
        read.for_each(&mut tx, "reading columns", sql::columns(names), |row| {
            assembly.add_column(row);
        })
        .await?;
        // A view always has a column; the server lists none of an invalid one (a warning
        // 1356 on the statement, which the driver drops).
        unreadable_views = assembly.views_without_columns();
    }

    let what = "ending the read-only transaction";
    super::answered(limits, what, async {
        tx.commit()
            .await
            .map_err(|e| JobError::from_source(what, &e))
    })
    .await?;
    *statements += 1;

    let databases_read = rows.schemas.len();
    Ok(Read {
        database: assembly.finish(database, filters, rows),
        databases_read,
        missing,
        hidden_views,
        unreadable_views,
    })
}
