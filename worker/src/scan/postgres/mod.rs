//! PostgreSQL scanner: reads `pg_catalog` (not the slow `information_schema` views), one
//! database at a time, in ONE statement per database: a `union all` with a branch per object
//! family ([`sql`]), on a READ ONLY session with a statement timeout ([`connection`]), so each
//! database costs one round trip and is read from one snapshot. Its rows stream into the
//! engine-independent catalog model as they arrive ([`assembly`]).

mod assembly;
mod connection;
mod sql;

use futures::TryStreamExt as _;
use metasync_shared::catalog::{DatabaseSnapshot, Snapshot};
use metasync_shared::scan_options::{Filters, ScanOptions};
use sqlx::PgConnection;

use metasync_shared::connection_test::{FailureCode, MissingGrant};

use super::reuse::SourceConnections;
use super::{Probe, ScanError, ScanLimits, ScanTarget};
use crate::error::JobError;
use assembly::Assembly;
use sql::CatalogRow;

/// Reads the databases the options select; for `"all"`, one more statement lists them first.
pub async fn scan(
    target: &ScanTarget<'_>,
    options: &ScanOptions,
    limits: ScanLimits,
    sources: &SourceConnections,
) -> Result<Snapshot, ScanError> {
    let resource = target.resource;
    let mut statements = 0;
    let names = match options.database_names(&resource.database) {
        Some(names) => names,
        None => {
            let (key, mut taken) =
                connection::open(target, &resource.database, limits, sources, true).await?;
            let names = super::answered(limits, "listing databases", async {
                sqlx::query_scalar(sql::DATABASES)
                    .fetch_all(&mut taken.conn)
                    .await
                    .map_err(|e| JobError::from_source("listing databases", &e))
            })
            .await;
            statements += 1;
            sources
                .postgres
                .give_back(key, taken, names.is_ok(), limits.connect_timeout)
                .await;
            names?
        }
    };
    // One database at a time: a server with many databases never holds more than one
    // connection or one snapshot transaction open for this job.
    let mut databases = Vec::with_capacity(names.len());
    let mut missing = Vec::new();
    for name in &names {
        let (key, mut taken) = match connection::open(target, name, limits, sources, true).await {
            Ok(opened) => opened,
            Err(ScanError::Failed(e)) if e.failure == Some(FailureCode::UnknownDatabase) => {
                missing.push(name.clone());
                continue;
            }
            Err(e) => return Err(e),
        };
        let result = super::answered(
            limits,
            "reading the catalog",
            read_database(
                &mut taken.conn,
                name,
                options,
                target.filters,
                &mut statements,
            ),
        )
        .await;
        sources
            .postgres
            .give_back(key, taken, result.is_ok(), limits.connect_timeout)
            .await;
        databases.push(result?);
    }
    let warnings =
        super::databases_not_found(&target.server_name(), &missing, databases.len(), "")?;
    Ok(Snapshot {
        databases,
        statements,
        warnings,
    })
}

/// Test-connection: a new connection to the resource's database, [`sql::PROBE`] on it, closed.
pub async fn probe(
    target: &ScanTarget<'_>,
    limits: ScanLimits,
    sources: &SourceConnections,
) -> Result<Probe, ScanError> {
    let what = "checking the session";
    let (key, mut taken) =
        connection::open(target, &target.resource.database, limits, sources, false).await?;
    let row = super::answered(limits, what, async {
        sqlx::query_as::<_, sql::ProbeRow>(sql::PROBE)
            .bind(&sql::CATALOGS_READ[..])
            .fetch_one(&mut taken.conn)
            .await
            .map_err(|e| JobError::from_source(what, &e))
    })
    .await;
    // Never parked: the next test connects anew, and a sync does not inherit a test's session.
    sources
        .postgres
        .give_back(key, taken, false, limits.connect_timeout)
        .await;
    let row = row?;
    Ok(Probe {
        engine: "postgresql",
        version: row.version,
        tls: row.tls,
        missing_grants: row
            .unreadable
            .into_iter()
            .map(|catalog| MissingGrant {
                privilege: "SELECT".to_owned(),
                on: catalog,
                effect: "the scan reads this catalog: every sync would fail".to_owned(),
            })
            .collect(),
    })
}

/// Reads one database with the catalog statement ([`sql::catalog_statement`]).
async fn read_database(
    conn: &mut PgConnection,
    name: &str,
    options: &ScanOptions,
    filters: &Filters,
    statements: &mut u64,
) -> Result<DatabaseSnapshot, JobError> {
    let sql = sql::catalog_statement(options.depth);
    let mut assembly = Assembly::new(filters);
    let mut rows = sqlx::query_as::<_, CatalogRow>(sql).fetch(&mut *conn);
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| JobError::from_source("reading the catalog", &e))?
    {
        assembly.add(row);
    }
    drop(rows);
    *statements += 1;
    Ok(assembly.finish(name))
}
