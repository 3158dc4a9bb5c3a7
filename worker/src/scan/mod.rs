//! Scanning a source's catalog. Each engine reads a whole database in a small, fixed number of
//! set-based statements (never one per table) on a READ ONLY session (PostgreSQL: one statement,
//! hence one snapshot; MySQL/MariaDB: one READ ONLY transaction), on a connection
//! with connect and statement timeouts that lives at most seconds past its job ([`reuse`]).

pub mod mysql;
pub mod postgres;
pub mod reuse;

use std::time::Duration;

use metasync_shared::catalog::Snapshot;
use metasync_shared::db::resources::Resource;
use metasync_shared::domain::ResourceKind;

use crate::error::JobError;
use reuse::{Parking, SourceConnections, SourceKey, Taken};

/// Where and how to scan. Holds the decrypted password, so it is deliberately not `Debug`.
pub struct ScanTarget<'a> {
    pub resource: &'a Resource,
    pub password: &'a str,
}

/// Time limits for talking to a source.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

/// Reads the source's catalog, as the resource's `options` ask (databases, filters, depth).
/// Options are read fresh from the resource on every attempt, like the rest of it.
pub async fn scan(
    target: &ScanTarget<'_>,
    limits: ScanLimits,
    sources: &SourceConnections,
) -> Result<Snapshot, JobError> {
    let options = &target.resource.options.0;
    let result = match target.resource.kind {
        ResourceKind::Postgres => postgres::scan(target, options, limits, sources).await,
        ResourceKind::Mysql => mysql::scan(target, options, limits, sources).await,
    };
    result.map_err(|e| e.guarded(target.password))
}

/// Opens a source connection within the connect timeout. A timeout is transient; a refusal is
/// classified by the driver's error (e.g. bad credentials are permanent).
async fn connect<C>(options: &C, limits: ScanLimits) -> Result<C::Connection, JobError>
where
    C: sqlx::ConnectOptions,
    C::Connection: Sized,
{
    match tokio::time::timeout(limits.connect_timeout, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(JobError::from_source("connecting to the source", &e)),
        Err(_) => Err(JobError::transient(format!(
            "connecting to the source: timed out after {:?}",
            limits.connect_timeout
        ))),
    }
}

/// A parked connection for `key` if one is alive, else a new one.
async fn open<C>(
    parking: &Parking<C::Connection>,
    key: &SourceKey,
    options: impl FnOnce() -> C,
    limits: ScanLimits,
) -> Result<Taken<C::Connection>, JobError>
where
    C: sqlx::ConnectOptions,
    C::Connection: Sized + 'static,
{
    let taken = match parking.take(key, limits.connect_timeout).await {
        Some(taken) => taken,
        None => Taken::fresh(connect(&options(), limits).await?),
    };
    metrics::counter!("metasync_source_connections_total", "reused" => if taken.reused { "true" } else { "false" })
        .increment(1);
    Ok(taken)
}
