//! The connection a scan reads one database on: a parked one for the same credentials if it
//! is alive, else a new one whose session is set up at connect time (in the startup packet,
//! so no extra statement): READ ONLY by default and a statement timeout.

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions as _, PgConnection};

use crate::scan::reuse::{SourceConnections, SourceKey, Taken};
use crate::scan::{self, ScanError, ScanLimits, ScanTarget};

/// A connection to `database`, with the key to give it back under.
pub(super) async fn open(
    target: &ScanTarget<'_>,
    database: &str,
    limits: ScanLimits,
    sources: &SourceConnections,
) -> Result<(SourceKey, Taken<PgConnection>), ScanError> {
    let resource = target.resource;
    let key = sources.key(
        &target.address.to_string(),
        resource.port as u16,
        database,
        &resource.username,
        target.password,
    );
    let taken = scan::open(
        target,
        sources,
        &sources.postgres,
        &key,
        || connect_options(target, database, limits),
        limits,
    )
    .await?;
    Ok((key, taken))
}

fn connect_options(
    target: &ScanTarget<'_>,
    database: &str,
    limits: ScanLimits,
) -> PgConnectOptions {
    let resource = target.resource;
    PgConnectOptions::new()
        .host(&target.address.to_string())
        .port(resource.port as u16)
        .database(database)
        .username(&resource.username)
        .password(target.password)
        .application_name("metasync")
        .ssl_mode(PgSslMode::Disable)
        .options([
            (
                "statement_timeout",
                format!("{}ms", limits.statement_timeout.as_millis()),
            ),
            ("default_transaction_read_only", "on".to_owned()),
        ])
        .disable_statement_logging()
}
