//! The catalog PostgreSQL: pool set-up, migrations and one module per table family. Queries
//! are runtime-checked (`sqlx::query_as`) so the workspace builds without a live database.

pub mod audit;
pub mod batches;
pub mod catalog;
pub mod connection_tests;
pub mod job_reads;
pub mod jobs;
pub mod resources;
pub mod schedules;
pub mod webhooks;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseArgs;

/// The migrations in `migrations/`, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How long a worker's duty or job waits for a catalog connection before giving up.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects the catalog pool. Fails fast when the database does not answer.
pub async fn connect(args: &DatabaseArgs) -> Result<PgPool, sqlx::Error> {
    connect_with_acquire_timeout(args, DEFAULT_ACQUIRE_TIMEOUT).await
}

/// Like [`connect`], with callers waiting at most `acquire_timeout` for a connection (the
/// API's requests wait briefly, so that an outage answers 503 at once, not after a hang).
/// While the database is down, an acquire keeps trying to connect until this timeout.
pub async fn connect_with_acquire_timeout(
    args: &DatabaseArgs,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(args.db_max_connections)
        .acquire_timeout(acquire_timeout)
        .connect(&args.database_url)
        .await?;
    crate::telemetry::watch_pool(&pool);
    Ok(pool)
}

/// Applies pending migrations under sqlx's advisory migration lock, so concurrent API
/// replicas starting together apply each migration once.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// A page cursor: the last id of the previous page.
pub type Cursor = uuid::Uuid;

/// Whether PostgreSQL aborted the transaction to break a deadlock (40P01) or a serialization
/// conflict (40001): running the same transaction again is the remedy.
pub fn is_transient_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}
